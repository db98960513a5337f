//! Querying one server: resolve it ourselves, take several samples with `sntpc` over a tokio
//! UDP socket, each under a timeout, and keep the minimum-delay one.
//!
//! Each server keeps its socket from one sync to the next (binding one costs as much as a
//! loopback query). A reply to an earlier, timed-out request may therefore still arrive: while
//! waiting, replies that are not answers to the current request (origin timestamp not ours, or
//! from another address) are discarded and we keep listening until the timeout, as RFC 5905
//! prescribes for bogus and duplicate packets. If nothing valid came, the rejection is reported
//! rather than a bare timeout.
//!
//! # The anchor clock
//!
//! `sntpc` timestamps our request and the reply with an [`NtpTimestampGenerator`]. We give it
//! an *anchored* generator: the wall clock read once when the sync starts, plus monotonic time
//! elapsed since. Offsets are then measured against a clock that cannot jump during the sync,
//! and true time at the anchor instant is simply `anchor wall + offset`, whatever the wall
//! clock did meanwhile.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sntpc::{NtpContext, NtpTimestampGenerator};
use sntpc_net_tokio::UdpSocketWrapper;
use tokio::net::UdpSocket;

use super::selection::{best_by_delay, Sample};
use super::validation;
use crate::{ClockSource, Error, NtpOptions};

/// After this many timeouts in one sync a server gets no more queries: a dead server should
/// cost at most two timeouts, while one lost datagram does not disqualify a live one.
const MAX_TIMEOUTS_PER_SYNC: u32 = 2;

/// The moment a sync started, on both clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Anchor {
    pub(crate) mono: Instant,
    pub(crate) wall: SystemTime,
}

impl Anchor {
    pub(crate) fn now(clock: &dyn ClockSource) -> Self {
        Self {
            mono: clock.monotonic(),
            wall: clock.wall(),
        }
    }

    fn wall_since_epoch(&self) -> Duration {
        // A clock before 1970 cannot be written as an NTP timestamp; any pivot works for the
        // offset arithmetic, so use the epoch (the offset then carries the difference).
        self.wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
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
    /// The minimum-delay sample and how many samples were valid, or why none was.
    pub(crate) result: Result<(Sample, u32), Arc<Error>>,
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

/// Resolves `name` and takes `options.samples` samples from it.
pub(crate) async fn query_server(
    name: &str,
    options: &NtpOptions,
    clock: &dyn ClockSource,
    anchor: Anchor,
    sockets: &SocketCache,
) -> ServerOutcome {
    let (address, result) = match resolve(name, options.query_timeout).await {
        Err(e) => (None, Err(e)),
        Ok(address) => {
            let result = sample(name, address, options, clock, anchor, sockets).await;
            if let Err(Error::Network { .. }) = result {
                sockets.discard();
            }
            (Some(address), result)
        }
    };
    ServerOutcome {
        name: name.to_owned(),
        address,
        result: result.map_err(Arc::new),
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

async fn sample(
    name: &str,
    address: SocketAddr,
    options: &NtpOptions,
    clock: &dyn ClockSource,
    anchor: Anchor,
    sockets: &SocketCache,
) -> Result<(Sample, u32), Error> {
    let socket = sockets.get(name, address).await?;
    let stamp = AnchoredStamp {
        clock,
        anchor_mono: anchor.mono,
        anchor_wall: anchor.wall_since_epoch(),
        current: Duration::ZERO,
    };

    let mut samples = Vec::with_capacity(options.samples as usize);
    let mut last_error = None;
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
        last_error = Some(error);
        if hopeless || timeouts >= MAX_TIMEOUTS_PER_SYNC {
            break;
        }
    }
    match (best_by_delay(&samples), last_error) {
        (Some(best), _) => Ok((best, samples.len() as u32)),
        (None, Some(error)) => Err(error),
        // `samples >= 1` is validated, so some sample either succeeded or failed.
        (None, None) => Err(Error::config("`samples` must be at least 1")),
    }
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
