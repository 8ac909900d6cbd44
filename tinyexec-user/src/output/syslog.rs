//! Sending CEF records to syslog: the local socket, UDP or TCP.
//!
//! Written on std sockets rather than a syslog crate: the message body is CEF
//! we escape ourselves, and the three transports are a few lines each.

use std::{
    io::Write,
    net::{TcpStream, ToSocketAddrs, UdpSocket},
    os::unix::net::UnixDatagram,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::cef;
use crate::{identity, record::Record};

/// `local4`: the facility a Sentinel data collection rule selects for tinyexec.
const FACILITY: u8 = 20;
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum Transport {
    /// `unix:///dev/log`: the local syslog daemon, RFC 3164 framing.
    Unix(PathBuf),
    /// `udp://host:port`, RFC 5424, one record per datagram.
    Udp(String),
    /// `tcp://host:port`, RFC 5424, newline-framed (CEF escaping leaves no newline inside).
    Tcp(String),
}

pub struct Syslog {
    transport: Transport,
    unix: Option<UnixDatagram>,
    udp: Option<UdpSocket>,
    tcp: Option<TcpStream>,
    hostname: String,
    pid: u32,
}

impl Syslog {
    /// Parses `unix:///path`, `udp://host:port` or `tcp://host:port`.
    pub fn open(url: &str) -> Result<Self> {
        let transport = if let Some(path) = url.strip_prefix("unix://") {
            Transport::Unix(PathBuf::from(path))
        } else if let Some(addr) = url.strip_prefix("udp://") {
            Transport::Udp(check_addr(addr, url)?)
        } else if let Some(addr) = url.strip_prefix("tcp://") {
            Transport::Tcp(check_addr(addr, url)?)
        } else {
            bail!("syslog URL `{url}`: expected unix:///path, udp://host:port or tcp://host:port");
        };
        let mut s = Self {
            transport,
            unix: None,
            udp: None,
            tcp: None,
            hostname: identity::hostname(),
            pid: std::process::id(),
        };
        // Connect now so a wrong address is reported at start; later failures retry.
        s.connect().with_context(|| format!("syslog {url}"))?;
        Ok(s)
    }

    fn connect(&mut self) -> Result<()> {
        match &self.transport {
            Transport::Unix(path) => {
                if self.unix.is_none() {
                    let sock = UnixDatagram::unbound()?;
                    sock.connect(path)
                        .with_context(|| format!("connecting to {}", path.display()))?;
                    self.unix = Some(sock);
                }
            }
            Transport::Udp(addr) => {
                if self.udp.is_none() {
                    let sock = UdpSocket::bind(if addr.starts_with('[') {
                        "[::]:0"
                    } else {
                        "0.0.0.0:0"
                    })?;
                    sock.connect(addr.as_str())?;
                    self.udp = Some(sock);
                }
            }
            Transport::Tcp(addr) => {
                if self.tcp.is_none() {
                    let sa = addr
                        .to_socket_addrs()?
                        .next()
                        .with_context(|| format!("{addr} resolves to nothing"))?;
                    let stream = TcpStream::connect_timeout(&sa, TCP_TIMEOUT)?;
                    stream.set_write_timeout(Some(TCP_TIMEOUT))?;
                    self.tcp = Some(stream);
                }
            }
        }
        Ok(())
    }

    fn frame(&self, rec: &Record) -> String {
        let (_, sev) = cef::severities(rec);
        let pri = u32::from(FACILITY) * 8 + u32::from(sev);
        let body = cef::format(rec);
        match self.transport {
            // What glibc's syslog() sends: the local daemon adds the host name.
            Transport::Unix(_) => format!("<{pri}>{} tinyexec[{}]: {body}", bsd_time(), self.pid),
            Transport::Udp(_) | Transport::Tcp(_) => format!(
                "<{pri}>1 {} {} tinyexec {} - - {body}",
                rec.timestamp, self.hostname, self.pid
            ),
        }
    }

    /// Sends one record; a broken connection is dropped and retried on the next record.
    pub fn send(&mut self, rec: &Record) -> Result<()> {
        let msg = self.frame(rec);
        self.connect()?;
        let sent = match &self.transport {
            Transport::Unix(_) => self.unix.as_ref().map(|s| s.send(msg.as_bytes()).map(drop)),
            Transport::Udp(_) => self.udp.as_ref().map(|s| s.send(msg.as_bytes()).map(drop)),
            Transport::Tcp(_) => self.tcp.as_mut().map(|s| {
                s.write_all(msg.as_bytes())?;
                s.write_all(b"\n")
            }),
        };
        match sent {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => {
                (self.unix, self.udp, self.tcp) = (None, None, None);
                Err(e.into())
            }
            None => bail!("not connected"),
        }
    }
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
        libc::localtime_r(&t, &mut tm);
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
