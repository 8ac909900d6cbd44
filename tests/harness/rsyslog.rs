//! A real rsyslogd (Debian's), started for one test on loopback: UDP, TCP and
//! a unix socket in, one file out with each message as received.

use std::{
    fs,
    net::{TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::port::ClosedUdpPort;

#[derive(Debug)]
pub struct Rsyslog {
    child: Child,
    pub udp_port: u16,
    /// Keeps the UDP port from anyone else while rsyslogd binds it and after.
    _udp_hold: ClosedUdpPort,
    /// The port rsyslogd chose itself (port 0) and wrote to `tcp_port_file`.
    pub tcp_port: u16,
    tcp_port_file: PathBuf,
    pub socket: PathBuf,
    pub out: PathBuf,
}

impl Rsyslog {
    /// Starts rsyslogd with its files under `dir`; panics with its output if it does not come up.
    pub fn start(dir: &Path) -> Self {
        // No port number is taken and given back for rsyslogd to bind later
        // (anyone may take it meanwhile): imtcp binds port 0 and writes the
        // port it got; imudp, which cannot, binds one this keeps held for it.
        let udp_hold = ClosedUdpPort::for_a_server();
        let udp_port = udp_hold.port;
        let tcp_port_file = dir.join("rsyslog-tcp-port");
        let socket = dir.join("log.sock");
        let out = dir.join("received.log");
        let work = dir.join("rsyslog-work");
        fs::create_dir_all(&work).expect("work dir");
        let conf = dir.join("rsyslog.conf");
        fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{udp_port}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="{tcp_port_file}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}")
template(name="raw" type="string" string="%rawmsg%\n")
*.* action(type="omfile" file="{out}" template="raw")
"#,
                work = work.display(),
                tcp_port_file = tcp_port_file.display(),
                socket = socket.display(),
                out = out.display(),
            ),
        )
        .expect("write rsyslog.conf");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("rsyslogd: {e} (Debian's rsyslog; `cargo xtask test` installs it)")
            });
        let mut r = Self {
            child,
            udp_port,
            _udp_hold: udp_hold,
            tcp_port: 0,
            tcp_port_file,
            socket,
            out,
        };
        r.wait_up();
        r
    }

    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let probe = "tinyexec-rsyslog-probe";
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("rsyslogd exited ({st}): {err}");
            }
            let _ = udp.send_to(
                format!("<13>1 - - probe - - - {probe}").as_bytes(),
                ("127.0.0.1", self.udp_port),
            );
            // Written once the listener is up: read until a connect to it succeeds.
            self.tcp_port = fs::read_to_string(&self.tcp_port_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0);
            let tcp_up =
                self.tcp_port != 0 && TcpStream::connect(("127.0.0.1", self.tcp_port)).is_ok();
            if tcp_up && self.socket.exists() && self.received().contains(probe) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not come up in 20 s"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything written so far.
    pub fn received(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until `pred` holds for some line; returns all lines then.
    pub fn wait_for_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.received();
            if text.lines().any(&pred) {
                return text.lines().map(str::to_owned).collect();
            }
            assert!(
                Instant::now() < deadline,
                "rsyslog received no line with {what}; it has:\n{text}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
