//! A small NTP server for the tests: tokio UDP on 127.0.0.1:0, answering with a configurable
//! skew, or with one of the ways a server can be wrong.
#![allow(dead_code)] // each test binary uses part of it

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

/// Seconds from 1900 (NTP era 0) to 1970.
const NTP_UNIX_DELTA: u64 = 2_208_988_800;

/// How the server answers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Behavior {
    /// A valid reply, `skew` off true (system) time.
    Honest,
    /// Kiss-of-death (stratum 0) with this code.
    KissOfDeath([u8; 4]),
    /// Leap indicator 3: "my clock is not synchronized".
    Unsynchronized,
    /// Stratum 16.
    Stratum16,
    /// Transmit timestamp zero.
    ZeroTransmit,
    /// Origin timestamp zero.
    ZeroOrigin,
    /// Origin timestamp that is not the request's.
    WrongOrigin,
    /// Random bytes of random length (0..=96).
    Garbage,
    /// The first 40 bytes of a valid reply.
    Truncated,
    /// No reply at all.
    Silent,
}

/// Parameters of the valid parts of a reply.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) behavior: Behavior,
    /// Server time minus system time, nanoseconds.
    pub(crate) skew_nanos: i64,
    /// Root delay and dispersion in NTP short format (16.16 seconds).
    pub(crate) root_delay: u32,
    pub(crate) root_dispersion: u32,
    pub(crate) stratum: u8,
    /// Per query (cycled): how long the "network" holds the request before the server sees it
    /// (counted in the round trip, one-way only, so it also skews the offset by half).
    pub(crate) inbound_delays: Vec<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            behavior: Behavior::Honest,
            skew_nanos: 0,
            root_delay: 0,
            root_dispersion: 0,
            stratum: 2,
            inbound_delays: Vec::new(),
        }
    }
}

pub(crate) struct FakeNtpServer {
    addr: SocketAddr,
    config: Arc<Mutex<Config>>,
    queries: Arc<AtomicUsize>,
    queried: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeNtpServer {
    pub(crate) async fn start(config: Config) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind the fake NTP server");
        let addr = socket.local_addr().unwrap();
        let config = Arc::new(Mutex::new(config));
        let queries = Arc::new(AtomicUsize::new(0));
        let queried = Arc::new(Notify::new());
        let task = tokio::spawn(serve(
            socket,
            config.clone(),
            queries.clone(),
            queried.clone(),
        ));
        Self {
            addr,
            config,
            queries,
            queried,
            task,
        }
    }

    pub(crate) async fn honest(skew_nanos: i64) -> Self {
        Self::start(Config {
            skew_nanos,
            ..Config::default()
        })
        .await
    }

    pub(crate) async fn behaving(behavior: Behavior) -> Self {
        Self::start(Config {
            behavior,
            ..Config::default()
        })
        .await
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn server(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) fn set_behavior(&self, behavior: Behavior) {
        self.config.lock().unwrap().behavior = behavior;
    }

    /// Moves the server's clock: from now on it serves system time + `skew_nanos` (tests that
    /// advance a `ManualClock` move their servers' clocks along, so that time passes for both).
    pub(crate) fn set_skew(&self, skew_nanos: i64) {
        self.config.lock().unwrap().skew_nanos = skew_nanos;
    }

    pub(crate) fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// Waits until the server has seen more than `n` queries, failing the test after `limit`.
    pub(crate) async fn wait_for_queries_above(&self, n: usize, limit: Duration) {
        tokio::time::timeout(limit, async {
            loop {
                let notified = self.queried.notified();
                if self.queries() > n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("the fake NTP server saw no more than {n} queries in {limit:?}")
        });
    }
}

impl Drop for FakeNtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    socket: UdpSocket,
    config: Arc<Mutex<Config>>,
    queries: Arc<AtomicUsize>,
    queried: Arc<Notify>,
) {
    let mut buf = [0u8; 512];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let n = queries.fetch_add(1, Ordering::SeqCst);
        queried.notify_waiters();
        if len < 48 {
            continue;
        }
        let config = config.lock().unwrap().clone();
        if let Some(d) = (!config.inbound_delays.is_empty())
            .then(|| config.inbound_delays[n % config.inbound_delays.len()])
        {
            tokio::time::sleep(d).await;
        }
        let mut origin = [0u8; 8];
        origin.copy_from_slice(&buf[40..48]);
        if let Some(reply) = reply(&config, origin) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// An NTP timestamp of system time + `skew_nanos`.
pub(crate) fn ntp_timestamp(skew_nanos: i64) -> u64 {
    let now = SystemTime::now();
    let t = if skew_nanos >= 0 {
        now + Duration::from_nanos(skew_nanos as u64)
    } else {
        now - Duration::from_nanos(skew_nanos.unsigned_abs())
    };
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    let secs = d.as_secs() + NTP_UNIX_DELTA;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

fn reply(config: &Config, origin: [u8; 8]) -> Option<Vec<u8>> {
    let received = ntp_timestamp(config.skew_nanos);
    let mut leap = 0u8;
    let mut stratum = config.stratum;
    let mut reference_id = *b"TEST";
    let mut origin = origin;
    let mut zero_transmit = false;
    match &config.behavior {
        Behavior::Honest | Behavior::Truncated => {}
        Behavior::KissOfDeath(code) => {
            stratum = 0;
            leap = 3;
            reference_id = *code;
        }
        Behavior::Unsynchronized => leap = 3,
        Behavior::Stratum16 => stratum = 16,
        Behavior::ZeroTransmit => zero_transmit = true,
        Behavior::ZeroOrigin => origin = [0; 8],
        Behavior::WrongOrigin => origin[7] ^= 0x55,
        Behavior::Garbage => {
            let mut rng = rand::thread_rng();
            let len = rng.gen_range(0..=96);
            return Some((0..len).map(|_| rng.gen()).collect());
        }
        Behavior::Silent => return None,
    }
    let mut p = vec![0u8; 48];
    p[0] = (leap << 6) | (4 << 3) | 4;
    p[1] = stratum;
    p[2] = 6;
    p[3] = (-20i8) as u8;
    p[4..8].copy_from_slice(&config.root_delay.to_be_bytes());
    p[8..12].copy_from_slice(&config.root_dispersion.to_be_bytes());
    p[12..16].copy_from_slice(&reference_id);
    let transmit = if zero_transmit {
        0
    } else {
        ntp_timestamp(config.skew_nanos)
    };
    let reference = received.saturating_sub(1 << 32); // one second before
    p[16..24].copy_from_slice(&reference.to_be_bytes());
    p[24..32].copy_from_slice(&origin);
    p[32..40].copy_from_slice(&received.to_be_bytes());
    p[40..48].copy_from_slice(&transmit.to_be_bytes());
    if config.behavior == Behavior::Truncated {
        p.truncate(40);
    }
    Some(p)
}

/// Fast options for tests: one server list, short timeout, no background re-sync.
pub(crate) fn options(servers: &[&FakeNtpServer]) -> sync_time::NtpOptions {
    sync_time::NtpOptions::new(servers.iter().map(|s| s.server()))
        .with_query_timeout(Duration::from_millis(300))
        .with_resync_interval(Duration::ZERO)
}
