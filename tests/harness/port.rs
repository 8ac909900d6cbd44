//! Ports on loopback that stay the test's own.
//!
//! A port number read from a socket bound to port 0 and then closed is free
//! only until another socket takes it: it is in the ephemeral range, where
//! every bind(0) and connect(2) on the host picks ports, and a connect to
//! 127.0.0.1:P may even get P itself as its source port (a TCP self-connect,
//! which succeeds). So the tests hold the socket for as long as they use the
//! number: a bound socket's port is given to no other bind(0) nor connect.

use std::{
    io,
    mem::size_of,
    net::{TcpListener, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// A socket of `kind` bound to 127.0.0.1:0, with `SO_REUSEADDR` when `share`.
#[expect(
    clippy::cast_possible_truncation,
    reason = "libc's own sizes and constants, which fit the types it gives them"
)]
fn bound(kind: libc::c_int, share: bool) -> (OwnedFd, u16) {
    // SAFETY: a new socket; the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    if share {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on our socket with a pointer to a local int.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_REUSEADDR: {}", io::Error::last_os_error());
    }
    // SAFETY: an all-zero sockaddr_in is valid; the fields are set below.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    // SAFETY: bind with a sockaddr_in of the size given.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "bind 127.0.0.1:0: {}", io::Error::last_os_error());
    let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `addr`.
    let r = unsafe { libc::getsockname(sock.as_raw_fd(), (&raw mut addr).cast(), &raw mut len) };
    assert_eq!(r, 0, "getsockname: {}", io::Error::last_os_error());
    (sock, u16::from_be(addr.sin_port))
}

/// A TCP port on 127.0.0.1 that is closed and stays the test's: a socket
/// bound to it that does not listen. A connect to it is refused (RST), and
/// no other socket can bind it or get it as a connect's source port.
#[derive(Debug)]
pub struct ClosedTcpPort {
    sock: OwnedFd,
    pub port: u16,
}

impl ClosedTcpPort {
    /// # Panics
    ///
    /// When the socket calls fail.
    #[must_use]
    pub fn new() -> Self {
        let (sock, port) = bound(libc::SOCK_STREAM, false);
        Self { sock, port }
    }

    /// Opens the port: listen(2) on the same socket, so no one could take
    /// the port between closed and open.
    ///
    /// # Panics
    ///
    /// When listen(2) fails.
    #[must_use]
    pub fn listen(self) -> TcpListener {
        // SAFETY: listen on our own bound socket.
        let r = unsafe { libc::listen(self.sock.as_raw_fd(), 128) };
        assert_eq!(r, 0, "listen: {}", io::Error::last_os_error());
        TcpListener::from(self.sock)
    }
}

impl Default for ClosedTcpPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A UDP port on 127.0.0.1 held by a socket connected to itself: the socket
/// takes only its own datagrams, so anyone else's sent to the port are
/// answered with ICMP port unreachable (the sender's next send fails with
/// "connection refused"), and the port stays the test's.
#[derive(Debug)]
pub struct ClosedUdpPort {
    _sock: UdpSocket,
    pub port: u16,
}

impl ClosedUdpPort {
    /// No other socket can bind the port.
    ///
    /// # Panics
    ///
    /// When the socket calls fail.
    #[must_use]
    pub fn new() -> Self {
        Self::hold(false)
    }

    /// With `SO_REUSEADDR`: a server that sets it too (rsyslog's imudp does)
    /// can bind the port and receive on it while this keeps it from anyone
    /// else's bind(0) or connect(2).
    ///
    /// # Panics
    ///
    /// When the socket calls fail.
    #[must_use]
    pub fn for_a_server() -> Self {
        Self::hold(true)
    }

    fn hold(share: bool) -> Self {
        let (sock, port) = bound(libc::SOCK_DGRAM, share);
        let sock = UdpSocket::from(sock);
        sock.connect(("127.0.0.1", port))
            .expect("connecting the UDP socket to itself");
        Self { _sock: sock, port }
    }
}

impl Default for ClosedUdpPort {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::ErrorKind,
        net::{TcpListener, TcpStream, UdpSocket},
    };

    use super::{ClosedTcpPort, ClosedUdpPort};

    #[test]
    fn a_closed_tcp_port_refuses_stays_held_and_opens_on_the_same_socket() {
        let closed = ClosedTcpPort::new();
        let err = TcpStream::connect(("127.0.0.1", closed.port)).expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        // std's bind sets SO_REUSEADDR; the held socket does not, so no one shares it.
        let err = TcpListener::bind(("127.0.0.1", closed.port)).expect_err("taken");
        assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
        let port = closed.port;
        let listener = closed.listen();
        let _conn = TcpStream::connect(("127.0.0.1", port)).expect("open now");
        listener.accept().expect("the connection");
    }

    #[test]
    fn a_closed_udp_port_refuses_datagrams_and_stays_held() {
        let closed = ClosedUdpPort::new();
        let err = UdpSocket::bind(("127.0.0.1", closed.port)).expect_err("taken");
        assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("a sender");
        sender.connect(("127.0.0.1", closed.port)).expect("connect");
        // The ICMP error of one datagram fails a later send.
        let refused = (0..100).any(|_| {
            let r = sender.send(b"x");
            std::thread::sleep(std::time::Duration::from_millis(10));
            r.is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
        });
        assert!(refused, "no datagram to the held port was refused");
    }
}
