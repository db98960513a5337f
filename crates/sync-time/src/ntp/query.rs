//! Querying the servers: resolve them ourselves, skip those that sent kiss-of-death and those
//! listed twice, take several samples from each with `sntpc` over a tokio UDP socket, each
//! under a timeout, and keep the minimum-delay one.
//!
//! Each server keeps its socket from one sync to the next (binding one costs as much as a
//! loopback query). A reply to an earlier, timed-out request may therefore still arrive: while
//! waiting, replies that are not answers to the current request (origin timestamp not ours, or
//! from another address) are discarded and we keep listening until the timeout, as RFC 5905
//! prescribes for bogus and duplicate packets. If nothing valid came, the rejection is reported
//! rather than a bare timeout.
//!
//! # Kiss-of-death
//!
//! RFC 5905 §7.4: after `DENY` or `RSTR` the client stops sending to that server; after `RATE`
//! it reduces its rate, and again at each `RATE`. Each server remembers its kisses across
//! syncs: `DENY`/`RSTR` for good (for the life of the handle), `RATE` as a back-off of at least
//! [`MIN_RATE_BACKOFF`] (or twice the re-sync interval), doubled at every further `RATE` up to
//! [`MAX_RATE_BACKOFF`], and forgotten after a valid reply. Explicit `sync()` calls honour it
//! too: the server is not asked, and shows as `KissedOff` in the status.
//!
//! # The anchor clock
//!
//! `sntpc` timestamps our request and the reply with an [`NtpTimestampGenerator`]. We give it
//! an *anchored* generator: a base time fixed when the sync starts, plus monotonic time elapsed
//! since. Offsets are then measured against a clock that cannot jump during the sync, and true
//! time at the anchor instant is simply `base + offset`, whatever the wall clock did meanwhile.
//! The base is the wall clock, unless that reads before [`MIN_BASE`] (a dead RTC reads 1970 or
//! earlier): then it is `MIN_BASE`, because NTP timestamps cannot be before 1900 and offsets are
//! only unambiguous within 68 years. Either way true time is `base + offset`: the wall clock is
//! only a starting guess.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use sntpc::{NtpContext, NtpTimestampGenerator};
use sntpc_net_tokio::UdpSocketWrapper;
use tokio::net::UdpSocket;

use super::selection::{best_by_delay, Sample};
use super::validation;
use crate::bounds::to_unix_nanos;
use crate::{ClockSource, Error, NtpOptions};

/// After this many timeouts in one sync a server gets no more queries: a dead server should
/// cost at most two timeouts, while one lost datagram does not disqualify a live one.
const MAX_TIMEOUTS_PER_SYNC: u32 = 2;

/// The shortest back-off after a kiss-of-death `RATE`: NTP's default minimum poll interval.
pub(crate) const MIN_RATE_BACKOFF: Duration = Duration::from_secs(64);

/// The longest back-off after repeated `RATE`s: NTP's maximum poll interval (2^17 s, 36 h).
pub(crate) const MAX_RATE_BACKOFF: Duration = Duration::from_secs(1 << 17);

/// The earliest base for the anchor clock: 2024-01-01T00:00:00Z. A wall clock before it is
/// certainly wrong, and this keeps offsets small enough for NTP's arithmetic until 2092.
const MIN_BASE: Duration = Duration::from_secs(1_704_067_200);

/// The moment a sync started, on both clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Anchor {
    pub(crate) mono: Instant,
    pub(crate) wall: SystemTime,
    /// The anchor clock's reading at `mono`, since the Unix epoch: the wall clock, or
    /// [`MIN_BASE`] if the wall clock is before it.
    base: Duration,
}

impl Anchor {
    pub(crate) fn now(clock: &dyn ClockSource) -> Self {
        let mono = clock.monotonic();
        let wall = clock.wall();
        let base = wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .max(MIN_BASE);
        Self { mono, wall, base }
    }

    /// The anchor clock's reading at `mono`, Unix nanoseconds: true time at `mono` is this plus
    /// the measured offset.
    pub(crate) fn base_unix_nanos(&self) -> i128 {
        self.base.as_nanos() as i128
    }

    /// How far the anchor clock is ahead of the wall clock, nanoseconds (zero unless the wall
    /// clock read before [`MIN_BASE`]).
    pub(crate) fn base_minus_wall(&self) -> i128 {
        self.base_unix_nanos() - to_unix_nanos(self.wall)
    }
}

/// `sntpc`'s timestamp source: anchor wall time + monotonic time since the anchor.
#[derive(Clone, Copy)]
struct AnchoredStamp<'a> {
    clock: &'a dyn ClockSource,
    anchor_mono: Instant,
    anchor_wall: Duration,
    current: Duration,
}

impl NtpTimestampGenerator for AnchoredStamp<'_> {
    fn init(&mut self) {
        let elapsed = self
            .clock
            .monotonic()
            .saturating_duration_since(self.anchor_mono);
        self.current = self.anchor_wall + elapsed;
    }

    fn timestamp_sec(&self) -> u64 {
        self.current.as_secs()
    }

    fn timestamp_subsec_micros(&self) -> u32 {
        self.current.subsec_micros()
    }
}

/// What one server gave in one sync.
#[derive(Debug)]
pub(crate) struct ServerOutcome {
    pub(crate) name: String,
    pub(crate) address: Option<SocketAddr>,
    pub(crate) answer: Answer,
}

/// One server's part in one sync.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// The minimum-delay sample and how many samples were valid.
    Sampled(Sample, u32),
    /// No valid sample, and why.
    Failed(Arc<Error>),
    /// Not asked: it sent this kiss-of-death, and asks us to wait `retry_in` (`None`: forever).
    KissedOff {
        error: Arc<Error>,
        code: String,
        retry_in: Option<Duration>,
    },
    /// Not asked: it has the same address as the named server, which was.
    Duplicate { of: String },
}

/// A configured server and what it keeps across syncs: its socket and its kisses.
pub(crate) struct Server {
    pub(crate) name: String,
    sockets: SocketCache,
    kiss: Mutex<Kiss>,
}

/// What a server's kisses-of-death ask of us.
#[derive(Debug, Default)]
struct Kiss {
    /// `DENY` or `RSTR` received: never ask again.
    refused: Option<(String, Arc<Error>)>,
    /// `RATE` received: not before this instant.
    rate_until: Option<(Instant, Arc<Error>)>,
    /// The back-off of the last `RATE` (zero: none since the last valid reply).
    backoff: Duration,
}

impl Server {
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            sockets: SocketCache::default(),
            kiss: Mutex::new(Kiss::default()),
        }
    }

    /// Why this server must not be asked at monotonic instant `m`, if it must not.
    fn kissed_off(&self, m: Instant) -> Option<Answer> {
        let kiss = self.kiss.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((code, error)) = &kiss.refused {
            return Some(Answer::KissedOff {
                error: error.clone(),
                code: code.clone(),
                retry_in: None,
            });
        }
        match &kiss.rate_until {
            Some((until, error)) if *until > m => Some(Answer::KissedOff {
                error: error.clone(),
                code: "RATE".to_owned(),
                retry_in: Some(until.saturating_duration_since(m)),
            }),
            _ => None,
        }
    }

    /// Remembers a kiss-of-death received at `m` (codes other than `RATE`, `DENY` and `RSTR`
    /// only spoil the sample).
    fn kissed(&self, error: &Arc<Error>, m: Instant, resync_interval: Duration) {
        let Error::KissOfDeath { code, .. } = &**error else {
            return;
        };
        let mut kiss = self.kiss.lock().unwrap_or_else(PoisonError::into_inner);
        match code.as_str() {
            "DENY" | "RSTR" => {
                tracing::warn!(server = %self.name, code = %code, "NTP server refuses us: not asking it again");
                kiss.refused = Some((code.clone(), error.clone()));
            }
            "RATE" => {
                let first = MIN_RATE_BACKOFF.max(resync_interval.saturating_mul(2));
                kiss.backoff = if kiss.backoff.is_zero() {
                    first
                } else {
                    kiss.backoff.saturating_mul(2)
                }
                .min(MAX_RATE_BACKOFF.max(first));
                tracing::warn!(server = %self.name, backoff = ?kiss.backoff, "NTP server asks us to poll less often (kiss-of-death RATE)");
                kiss.rate_until = m.checked_add(kiss.backoff).map(|t| (t, error.clone()));
            }
            _ => {}
        }
    }

    /// A valid reply: the `RATE` back-off starts over.
    fn answered(&self) {
        let mut kiss = self.kiss.lock().unwrap_or_else(PoisonError::into_inner);
        kiss.backoff = Duration::ZERO;
        kiss.rate_until = None;
    }
}

/// Queries every server for one sync: kissed-off servers and servers with the address of an
/// earlier one are not asked, the others concurrently.
pub(crate) async fn query_all(
    servers: &[Server],
    options: &NtpOptions,
    clock: &dyn ClockSource,
    anchor: Anchor,
) -> Vec<ServerOutcome> {
    // Resolve each server that may be asked.
    let resolved = join_all(servers.iter().map(|server| async move {
        if let Some(kissed_off) = server.kissed_off(clock.monotonic()) {
            return Err(kissed_off);
        }
        resolve(&server.name, options.query_timeout)
            .await
            .map_err(|e| Answer::Failed(Arc::new(e)))
    }))
    .await;
    // One vote per address (an IPv4-mapped IPv6 address is its IPv4 address): the first
    // server with an address is asked, later ones are not.
    let mut first_with: HashMap<SocketAddr, &str> = HashMap::new();
    let plan: Vec<(Option<SocketAddr>, Result<SocketAddr, Answer>)> = resolved
        .into_iter()
        .zip(servers)
        .map(|(resolved, server)| match resolved {
            Err(answer) => (None, Err(answer)),
            Ok(a) => match first_with.get(&SocketAddr::new(a.ip().to_canonical(), a.port())) {
                Some(of) => (
                    Some(a),
                    Err(Answer::Duplicate {
                        of: (*of).to_owned(),
                    }),
                ),
                None => {
                    first_with.insert(
                        SocketAddr::new(a.ip().to_canonical(), a.port()),
                        &server.name,
                    );
                    (Some(a), Ok(a))
                }
            },
        })
        .collect();
    join_all(
        servers
            .iter()
            .zip(plan)
            .map(|(server, (address, ask))| async move {
                let answer = match ask {
                    Err(answer) => answer,
                    Ok(address) => {
                        let (result, kiss) = sample(server, address, options, clock, anchor).await;
                        if let Some(kiss) = &kiss {
                            server.kissed(kiss, clock.monotonic(), options.resync_interval);
                        }
                        match result {
                            Ok((best, count)) => {
                                if kiss.is_none() {
                                    server.answered();
                                }
                                Answer::Sampled(best, count)
                            }
                            Err(e) => {
                                if let Error::Network { .. } = e {
                                    server.sockets.discard();
                                }
                                Answer::Failed(Arc::new(e))
                            }
                        }
                    }
                };
                ServerOutcome {
                    name: server.name.clone(),
                    address,
                    answer,
                }
            }),
    )
    .await
}

/// One server's socket, kept across syncs (with whether it is IPv4).
#[derive(Default)]
pub(crate) struct SocketCache(Mutex<Option<(bool, Arc<UdpSocketWrapper>)>>);

impl SocketCache {
    /// The cached socket if it fits `address`'s family, else a freshly bound one.
    async fn get(&self, name: &str, address: SocketAddr) -> Result<Arc<UdpSocketWrapper>, Error> {
        let v4 = address.is_ipv4();
        if let Some((_, socket)) = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(cached_v4, _)| *cached_v4 == v4)
        {
            return Ok(socket.clone());
        }
        let local: SocketAddr = if v4 {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|source| Error::Network {
                server: name.to_owned(),
                source,
            })?;
        let socket = Arc::new(UdpSocketWrapper::from(socket));
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((v4, socket.clone()));
        Ok(socket)
    }

    /// Forgets the socket after a socket error, so the next sync binds a new one.
    fn discard(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// `host:port` to one socket address, with our timeout (the resolver has none we control).
pub(crate) async fn resolve(name: &str, timeout: Duration) -> Result<SocketAddr, Error> {
    // An address literal needs no resolver (nor a timer).
    if let Ok(address) = name.trim().parse::<SocketAddr>() {
        return Ok(address);
    }
    let target = NtpOptions::with_default_port(name);
    let lookup = tokio::net::lookup_host(target.as_str());
    let mut addresses = match tokio::time::timeout(timeout, lookup).await {
        Err(_) => {
            return Err(Error::Timeout {
                server: name.to_owned(),
                timeout,
            })
        }
        Ok(Err(source)) => {
            return Err(Error::Resolve {
                server: name.to_owned(),
                source,
            })
        }
        Ok(Ok(addresses)) => addresses,
    };
    addresses.next().ok_or_else(|| Error::Resolve {
        server: name.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address found"),
    })
}

/// Takes `options.samples` samples from `server` at `address`: the best one and how many were
/// valid (or why none was), and the kiss-of-death it sent, if any.
async fn sample(
    server: &Server,
    address: SocketAddr,
    options: &NtpOptions,
    clock: &dyn ClockSource,
    anchor: Anchor,
) -> (Result<(Sample, u32), Error>, Option<Arc<Error>>) {
    let name = server.name.as_str();
    let socket = match server.sockets.get(name, address).await {
        Ok(socket) => socket,
        Err(e) => return (Err(e), None),
    };
    let stamp = AnchoredStamp {
        clock,
        anchor_mono: anchor.mono,
        anchor_wall: anchor.base,
        current: Duration::ZERO,
    };

    let mut samples = Vec::with_capacity(options.samples as usize);
    let mut last_error = None;
    let mut kiss = None;
    let mut timeouts = 0;
    for _ in 0..options.samples {
        let (reply, timed_out) =
            exchange(name, address, &socket, stamp, options.query_timeout).await;
        let received = clock.monotonic();
        timeouts += u32::from(timed_out);
        let error = match reply.and_then(|r| validation::check(name, &r)) {
            Ok(c) => {
                samples.push(Sample {
                    offset_nanos: c.offset_nanos,
                    delay: c.delay,
                    root_delay: c.root_delay,
                    root_dispersion: c.root_dispersion,
                    since_anchor: received.saturating_duration_since(anchor.mono),
                });
                continue;
            }
            Err(e) => e,
        };
        tracing::debug!(server = name, error = %error, "NTP sample rejected");
        // A server that says "go away" or "I am not synchronized" will say it again: stop.
        let hopeless = matches!(
            error,
            Error::KissOfDeath { .. } | Error::ServerUnsynchronized { .. } | Error::Network { .. }
        );
        if let Error::KissOfDeath { server, code } = &error {
            kiss = Some(Arc::new(Error::KissOfDeath {
                server: server.clone(),
                code: code.clone(),
            }));
        }
        last_error = Some(error);
        if hopeless || timeouts >= MAX_TIMEOUTS_PER_SYNC {
            break;
        }
    }
    let result = match (best_by_delay(&samples), last_error) {
        (Some(best), _) => Ok((best, samples.len() as u32)),
        (None, Some(error)) => Err(error),
        // `samples >= 1` is validated, so some sample either succeeded or failed.
        (None, None) => Err(Error::config("`samples` must be at least 1")),
    };
    (result, kiss)
}

/// One request and its reply, under `timeout`. Replies that do not answer this request are
/// skipped. Returns the reply (or why there is none) and whether the timeout ran out.
async fn exchange(
    name: &str,
    address: SocketAddr,
    socket: &UdpSocketWrapper,
    stamp: AnchoredStamp<'_>,
    timeout: Duration,
) -> (Result<sntpc::NtpResult, Error>, bool) {
    let mut skipped = None;
    let wait = async {
        let context = NtpContext::new(stamp);
        let sent = sntpc::sntp_send_request(address, socket, context).await?;
        loop {
            match sntpc::sntp_process_response(address, socket, context, sent).await {
                Err(
                    e @ (sntpc::Error::IncorrectOriginTimestamp
                    | sntpc::Error::ResponseAddressMismatch),
                ) => skipped = Some(e),
                other => return other,
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(reply) => (reply.map_err(|e| validation::from_sntpc(name, e)), false),
        Err(_) => {
            let error = match skipped {
                Some(e) => validation::from_sntpc(name, e),
                None => Error::Timeout {
                    server: name.to_owned(),
                    timeout,
                },
            };
            (Err(error), true)
        }
    }
}
