//! Loopback probes: free ports, an SNTP request, the verdict of `etcdctl endpoint health`, an
//! HTTP GET (NATS monitoring).

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use crate::Result;

/// The verdict line of `etcdctl endpoint health` output (etcdctl also logs retries).
pub(super) fn health_summary(output: &str) -> &str {
    let lines = || output.lines().map(str::trim).filter(|l| !l.is_empty());
    lines()
        .find(|l| l.contains(" is healthy") || l.contains(" is unhealthy"))
        .or_else(|| lines().next_back())
        .unwrap_or("no output")
}

/// `n` distinct free loopback TCP ports (all bound at once so none repeats).
pub(super) fn free_tcp_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("cannot bind a loopback TCP port: {e}"))?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().map_err(|e| e.to_string())?.port()))
        .collect()
}

/// `n` distinct free loopback UDP ports.
pub(super) fn free_udp_ports(n: usize) -> Result<Vec<u16>> {
    let sockets = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("cannot bind a loopback UDP port: {e}"))?;
    sockets
        .iter()
        .map(|s| Ok(s.local_addr().map_err(|e| e.to_string())?.port()))
        .collect()
}

/// Sends one SNTP client request to 127.0.0.1:`port`; true on a synchronised server reply.
pub(crate) fn ntp_answers(port: u16, timeout: Duration) -> bool {
    let probe = || -> io::Result<bool> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(timeout))?;
        sock.connect(("127.0.0.1", port))?;
        let mut request = [0u8; 48];
        request[0] = 0x1b; // LI 0, version 3, mode 3 (client)
        sock.send(&request)?;
        let mut reply = [0u8; 128];
        let n = sock.recv(&mut reply)?;
        let (leap, mode, stratum) = (reply[0] >> 6, reply[0] & 0x07, reply[1]);
        Ok(n >= 48 && mode == 4 && leap != 3 && stratum != 0)
    };
    probe().unwrap_or(false)
}

/// `GET path` from 127.0.0.1:`port` over HTTP/1.0; the body of a 200 answer.
pub(super) fn http_get(port: u16, path: &str, timeout: Duration) -> io::Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        Ok(body.to_string())
    } else {
        let status = head.lines().next().unwrap_or("no answer");
        Err(io::Error::other(format!("GET {path}: {status}")))
    }
}
