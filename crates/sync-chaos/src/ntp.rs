//! An NTP server on loopback that tells the truth (the system clock) or lies in one of the ways
//! a real server can: a skewed clock, kiss-of-death, "unsynchronised", garbage, a reply to
//! someone else's request, silence.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Seconds from 1900 (NTP era 0) to 1970.
const NTP_UNIX_DELTA: u64 = 2_208_988_800;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// A valid reply whose clock is `skew` nanoseconds off the system clock (0: honest).
    Skewed(i64),
    /// Kiss-of-death (stratum 0, code `RATE`).
    KissOfDeath,
    /// Leap indicator 3: "my clock is not synchronised".
    Unsynchronized,
    /// Random bytes of random length.
    Garbage,
    /// A valid-looking reply whose origin timestamp is not our request's.
    WrongOrigin,
    /// No reply.
    Silent,
}

impl Behavior {
    /// A short name for logs.
    pub fn name(&self) -> String {
        match self {
            Behavior::Skewed(0) => "honest".into(),
            Behavior::Skewed(n) => format!("skewed {:+.3} s", *n as f64 / 1e9),
            other => format!("{other:?}"),
        }
    }
}

/// A running server; stops when dropped.
#[derive(Debug)]
pub struct NtpServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl NtpServer {
    /// Starts a server on `127.0.0.1:0` behaving as `behavior`.
    pub async fn start(behavior: Behavior) -> io::Result<NtpServer> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let task = tokio::spawn(serve(socket, behavior));
        Ok(NtpServer { addr, task })
    }

    /// `127.0.0.1:PORT`.
    pub fn server(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for NtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, behavior: Behavior) {
    let mut buf = [0u8; 512];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if len < 48 {
            continue;
        }
        let mut origin = [0u8; 8];
        origin.copy_from_slice(&buf[40..48]);
        if let Some(reply) = reply(behavior, origin) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// An NTP timestamp of the system clock + `skew_nanos`.
pub fn ntp_timestamp(skew_nanos: i64) -> u64 {
    let now = SystemTime::now();
    let t = if skew_nanos >= 0 {
        now + Duration::from_nanos(skew_nanos as u64)
    } else {
        now - Duration::from_nanos(skew_nanos.unsigned_abs())
    };
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_DELTA;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

fn reply(behavior: Behavior, mut origin: [u8; 8]) -> Option<Vec<u8>> {
    let skew = match behavior {
        Behavior::Skewed(s) => s,
        _ => 0,
    };
    let (mut leap, mut stratum, mut refid) = (0u8, 2u8, *b"LIAR");
    match behavior {
        Behavior::Skewed(_) => {}
        Behavior::KissOfDeath => {
            stratum = 0;
            leap = 3;
            refid = *b"RATE";
        }
        Behavior::Unsynchronized => leap = 3,
        Behavior::WrongOrigin => origin[7] ^= 0x55,
        Behavior::Garbage => {
            let mut rng = rand::thread_rng();
            let len = rng.gen_range(0..=96);
            return Some((0..len).map(|_| rng.gen()).collect());
        }
        Behavior::Silent => return None,
    }
    let received = ntp_timestamp(skew);
    let mut p = vec![0u8; 48];
    p[0] = (leap << 6) | (4 << 3) | 4;
    p[1] = stratum;
    p[2] = 6;
    p[3] = (-20i8) as u8;
    p[12..16].copy_from_slice(&refid);
    p[16..24].copy_from_slice(&received.saturating_sub(1 << 32).to_be_bytes());
    p[24..32].copy_from_slice(&origin);
    p[32..40].copy_from_slice(&received.to_be_bytes());
    p[40..48].copy_from_slice(&ntp_timestamp(skew).to_be_bytes());
    Some(p)
}
