//! Sending CEF records to syslog: the local socket, UDP or TCP.
//!
//! Written on std sockets rather than a syslog crate: the message body is CEF
//! we escape ourselves, and the three transports are a few lines each. Runs on
//! the output's worker: a server that is down (at start or later) is
//! reconnected with backoff there, and a send that blocks blocks only this output.

use std::{
    io::{self, Write},
    net::{TcpStream, ToSocketAddrs, UdpSocket},
    os::unix::net::UnixDatagram,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    cef,
    item::Item,
    worker::{Failed, Sink, Written},
};
use crate::{exec::identity, record::Record};

/// `local4`: the facility a Sentinel data collection rule selects for tinyexec.
const FACILITY: u8 = 20;
/// Connecting, and one send: past it the record fails and the connection is renewed.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum Transport {
    /// `unix:///dev/log`: the local syslog daemon, RFC 3164 framing.
    Unix(PathBuf),
    /// `udp://host:port`, RFC 5424, one record per datagram.
    Udp(String),
    /// `tcp://host:port`, RFC 5424, newline-framed (CEF escaping leaves no newline inside).
    Tcp(String),
}

enum Socket {
    Unix(UnixDatagram),
    Udp(UdpSocket),
    Tcp(TcpStream),
}

pub struct Syslog {
    url: String,
    transport: Transport,
    socket: Option<Socket>,
    hostname: String,
    pid: u32,
}

impl Syslog {
    /// Parses `unix:///path`, `udp://host:port` or `tcp://host:port`. Nothing
    /// is connected yet: a server that is down at start is retried like one
    /// that goes down later.
    pub fn new(url: &str) -> Result<Self> {
        let transport = if let Some(path) = url.strip_prefix("unix://") {
            Transport::Unix(PathBuf::from(path))
        } else if let Some(addr) = url.strip_prefix("udp://") {
            Transport::Udp(check_addr(addr, url)?)
        } else if let Some(addr) = url.strip_prefix("tcp://") {
            Transport::Tcp(check_addr(addr, url)?)
        } else {
            bail!("syslog URL `{url}`: expected unix:///path, udp://host:port or tcp://host:port");
        };
        Ok(Self {
            url: url.to_owned(),
            transport,
            socket: None,
            hostname: identity::hostname(),
            pid: std::process::id(),
        })
    }

    fn open(&self) -> Result<Socket> {
        Ok(match &self.transport {
            Transport::Unix(path) => {
                let sock = UnixDatagram::unbound()?;
                sock.connect(path)
                    .with_context(|| format!("connecting to {}", path.display()))?;
                sock.set_write_timeout(Some(TIMEOUT))?;
                Socket::Unix(sock)
            }
            Transport::Udp(addr) => {
                let sock = UdpSocket::bind(if addr.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })?;
                sock.connect(addr.as_str())
                    .with_context(|| format!("resolving {addr}"))?;
                sock.set_write_timeout(Some(TIMEOUT))?;
                Socket::Udp(sock)
            }
            Transport::Tcp(addr) => {
                let sa = addr
                    .to_socket_addrs()
                    .with_context(|| format!("resolving {addr}"))?
                    .next()
                    .with_context(|| format!("{addr} resolves to nothing"))?;
                let stream = TcpStream::connect_timeout(&sa, TIMEOUT)?;
                stream.set_write_timeout(Some(TIMEOUT))?;
                Socket::Tcp(stream)
            }
        })
    }

    fn frame(&self, rec: &Record) -> String {
        let (_, sev) = cef::severities(rec);
        let pri = u32::from(FACILITY) * 8 + u32::from(sev);
        let body = cef::format(rec);
        match self.transport {
            // What glibc's syslog() sends: the local daemon adds the host name.
            Transport::Unix(_) => format!("<{pri}>{} tinyexec[{}]: {body}", bsd_time(), self.pid),
            Transport::Udp(_) | Transport::Tcp(_) => format!(
                "<{pri}>1 {} {} tinyexec {} - - {body}\n",
                rec.timestamp, self.hostname, self.pid
            ),
        }
    }
}

impl Sink for Syslog {
    fn connect(&mut self) -> Result<()> {
        if self.socket.is_none() {
            self.socket = Some(
                self.open()
                    .with_context(|| format!("syslog {}", self.url))?,
            );
        }
        Ok(())
    }

    fn write(&mut self, item: &Item) -> Result<Written, Failed> {
        let mut msg = self.frame(&item.record);
        let sent = match self.socket.as_mut() {
            // Datagrams carry no newline; TCP frames end with one.
            Some(Socket::Unix(s)) => s.send(msg.as_bytes()).map(drop),
            Some(Socket::Udp(s)) => {
                msg.pop();
                s.send(msg.as_bytes()).map(drop)
            }
            Some(Socket::Tcp(s)) => write_within(s, msg.as_bytes()),
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        };
        let Err(e) = sent else {
            return Ok(Written(1));
        };
        // A TCP stream or a local socket that went away is reconnected; UDP's
        // errors (a refused previous datagram) concern one datagram only.
        let disconnect = match &self.socket {
            Some(Socket::Udp(_)) => false,
            Some(Socket::Unix(_)) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::NotFound
                    | io::ErrorKind::NotConnected
            ),
            _ => true,
        };
        if disconnect {
            self.socket = None;
        }
        Err(Failed::record(
            anyhow::Error::new(e).context(format!("sending to syslog {}", self.url)),
            disconnect,
        ))
    }
}

/// `write_all` with one deadline for the whole record: a peer that takes a
/// few bytes now and then (a window that never opens) cannot hold the worker
/// longer than [`TIMEOUT`] per record, as a time-out per write(2) would.
fn write_within(s: &mut TcpStream, mut buf: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    let (mut first, mut shortened) = (true, false);
    while !buf.is_empty() {
        if !first {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the record was not taken within {TIMEOUT:?}"),
                ));
            }
            s.set_write_timeout(Some(left))?;
            shortened = true;
        }
        first = false;
        match s.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if shortened {
        s.set_write_timeout(Some(TIMEOUT))?;
    }
    Ok(())
}

fn check_addr(addr: &str, url: &str) -> Result<String> {
    let addr = addr.trim_end_matches('/');
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(addr.to_owned())
        }
        _ => bail!("syslog URL `{url}`: expected HOST:PORT after the scheme"),
    }
}

/// `Mmm dd HH:MM:SS` in local time, as RFC 3164 wants.
fn bsd_time() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // SAFETY: time(NULL) and localtime_r into a zeroed struct are always valid.
    let tm = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&raw const t, &raw mut tm);
        tm
    };
    let month = MONTHS
        .get(usize::try_from(tm.tm_mon).unwrap_or(0))
        .unwrap_or(&"Jan");
    format!(
        "{month} {:2} {:02}:{:02}:{:02}",
        tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}
