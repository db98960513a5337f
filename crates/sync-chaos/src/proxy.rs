//! A fault-injecting TCP proxy on loopback, toxiproxy-style: it forwards, blackholes (stops
//! moving bytes without closing anything, like a cut cable) or resets (RST on every current and
//! new connection), as the test says.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Open,
    /// Accept and keep connections, move no bytes.
    Blackhole,
    /// Reset every connection, current and new.
    Reset,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" | "heal" => Ok(Mode::Open),
            "blackhole" => Ok(Mode::Blackhole),
            "reset" => Ok(Mode::Reset),
            other => Err(format!(
                "unknown proxy mode {other:?} (open, blackhole, reset)"
            )),
        }
    }
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Open);
        let rx = mode.subscribe();
        let task = tokio::spawn(accept(listener, upstream, rx));
        Ok(Proxy { addr, mode, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the mode; takes effect on every connection at once.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *mode.borrow() == Mode::Reset {
            let _ = client.set_zero_linger();
            continue;
        }
        conns.spawn(pump(client, upstream, mode.clone()));
        while conns.try_join_next().is_some() {}
    }
}

async fn pump(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut a = vec![0u8; 16 * 1024];
    let mut b = vec![0u8; 16 * 1024];
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Reset => {
                let _ = client.set_zero_linger();
                let _ = server.set_zero_linger();
                return;
            }
            Mode::Blackhole => {
                // Read nothing: bytes stay in the kernel's buffers, connections stay open.
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Mode::Open => {}
        }
        tokio::select! {
            r = client.read(&mut a) => match r {
                Ok(n) if n > 0 => {
                    if server.write_all(&a[..n]).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
            r = server.read(&mut b) => match r {
                Ok(n) if n > 0 => {
                    if client.write_all(&b[..n]).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
            _ = mode.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn forwards_blackholes_heals_and_resets() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut c, b"hello").await.unwrap(), b"hello");

        proxy.set(Mode::Blackhole);
        let stalled =
            tokio::time::timeout(Duration::from_millis(300), round_trip(&mut c, b"lost?")).await;
        assert!(stalled.is_err(), "a blackholed connection must not answer");
        proxy.set(Mode::Open);
        // The bytes sent during the cut were held, not dropped: the stream stays intact.
        let mut buf = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
            .await
            .expect("healed")
            .unwrap();
        assert_eq!(&buf, b"lost?");

        proxy.set(Mode::Reset);
        let r = tokio::time::timeout(Duration::from_secs(5), round_trip(&mut c, b"x")).await;
        assert!(matches!(r, Ok(Err(_))), "a reset connection fails: {r:?}");
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), round_trip(&mut fresh, b"y")).await;
        assert!(
            matches!(r, Ok(Err(_))),
            "new connections are reset too: {r:?}"
        );
        proxy.set(Mode::Open);
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again, b"back").await.unwrap(), b"back");
    }
}
