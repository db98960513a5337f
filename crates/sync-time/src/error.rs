//! The crate's one error type.

use std::fmt;
use std::time::Duration;

use crate::HlcTimestamp;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `sync-time`.
///
/// Messages name the failing server and say what to do. Nothing that a server sends can cause a
/// panic: every bad reply ends up as one of these variants.
///
/// ```
/// use sync_time::Error;
///
/// let err = Error::Timeout { server: "10.0.0.1:123".into(), timeout: std::time::Duration::from_secs(1) };
/// assert!(err.is_retryable());
/// assert!(err.to_string().contains("10.0.0.1:123"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend has not synchronized successfully yet, so it cannot vouch for any time.
    #[error(
        "time is not synchronized: the {backend} backend has had no successful sync yet; \
         call `sync()` or wait for the background sync, and check `status()` for why it fails"
    )]
    NotSynchronized {
        /// The backend, e.g. `"ntp"`.
        backend: &'static str,
    },

    /// No configured server produced a valid sample.
    #[error(
        "no NTP server gave a usable time ({}); check the addresses, that UDP reaches them and \
         that they are synchronized",
        ServerFailure::list(.failures)
    )]
    NoServerReachable {
        /// Every server tried, with why it failed.
        failures: Vec<ServerFailure>,
    },

    /// Servers answered, but no majority of them agree on the time (their intervals do not
    /// overlap), so there is no way to tell the true chimers from the false tickers.
    #[error(
        "the NTP servers disagree: no majority of {} overlaps; at least one of them is wrong, \
         so fix or remove it, or add servers so that a majority can outvote it",
        .servers.join(", ")
    )]
    NoAgreement {
        /// Each server that answered, with its offset and error.
        servers: Vec<String>,
    },

    /// Too few servers gave a usable time for their agreement to be believed: an agreement
    /// needs a majority of the configured servers (or
    /// [`min_agreeing`](crate::NtpOptions::min_agreeing) of them, if set).
    #[error(
        "only {} of the {configured} configured NTP servers gave a usable time ({}), fewer \
         than the {required} that must agree before a time is believed; fix or replace the \
         failing servers, or lower `min_agreeing` to accept fewer (status() then says so)",
        .answered.len(),
        NoQuorumList(.answered, .failures)
    )]
    NoQuorum {
        /// How many servers must agree.
        required: usize,
        /// Distinct servers configured.
        configured: usize,
        /// Each server that answered, with its offset and error.
        answered: Vec<String>,
        /// Each server that did not, with why.
        failures: Vec<ServerFailure>,
    },

    /// A hybrid timestamp after this one does not exist: its wall part is at the end of the
    /// range (`u64::MAX` nanoseconds after 1970, in year 2554) and its counter too.
    #[error(
        "no hybrid timestamp exists after {after}: its wall time is the largest representable; \
         a remote timestamp this large is bogus, so reject the message that carried it"
    )]
    TimestampOverflow {
        /// The timestamp nothing can follow.
        after: HlcTimestamp,
    },

    /// A text is not a hybrid timestamp `wall_nanos.logical` (both whole numbers in range).
    #[error(
        "{input:?} is not a hybrid timestamp: expected `wall_nanos.logical`, two whole numbers \
         (as `HlcTimestamp`'s Display writes it)"
    )]
    InvalidTimestamp {
        /// The text (its first 64 characters).
        input: String,
    },

    /// A query (or a name lookup) got no answer within the timeout.
    #[error(
        "NTP server {server} did not answer within {timeout:?}; check the address and port, \
         that UDP gets through, or raise the query timeout"
    )]
    Timeout {
        /// The server as configured.
        server: String,
        /// The timeout that expired.
        timeout: Duration,
    },

    /// The server sent a kiss-of-death packet (stratum 0): it refuses to serve us (`DENY`,
    /// `RSTR`) or wants us to poll less often (`RATE`).
    #[error(
        "NTP server {server} sent kiss-of-death {code:?}: it refuses to serve this client; \
         for RATE raise the sync interval, for DENY/RSTR remove the server"
    )]
    KissOfDeath {
        /// The server as configured.
        server: String,
        /// The four-letter kiss code, e.g. `RATE`.
        code: String,
    },

    /// The server says it is not synchronized itself (leap indicator 3, stratum 16 or more, or
    /// a root distance of 16 s or more): its time is worthless.
    #[error(
        "NTP server {server} is not synchronized itself ({reason}); use another server or wait \
         until it has synchronized"
    )]
    ServerUnsynchronized {
        /// The server as configured.
        server: String,
        /// What showed it, e.g. `"leap indicator 3 (alarm)"`.
        reason: &'static str,
    },

    /// The reply's timestamps are unusable: zero or mismatched origin timestamp (not an answer
    /// to our request: stale, spoofed or garbage), zero transmit timestamp, reference time after
    /// transmit time.
    #[error(
        "NTP server {server} sent a reply with bad timestamps ({reason}); the reply was \
         discarded: if this persists the server is broken or something else answers on that port"
    )]
    BadTimestamp {
        /// The server as configured.
        server: String,
        /// What was wrong.
        reason: &'static str,
    },

    /// The reply is not a valid NTP server reply: too short, wrong mode or version, or sent
    /// from another address.
    #[error(
        "NTP server {server} sent a malformed reply ({reason}); check that the address points \
         at an NTP server"
    )]
    MalformedReply {
        /// The server as configured.
        server: String,
        /// What was wrong.
        reason: &'static str,
    },

    /// The server name could not be resolved to an address.
    #[error("cannot resolve NTP server {server}: {source}; write it as `host:port` and check DNS")]
    Resolve {
        /// The server as configured.
        server: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },

    /// Sending or receiving failed at the socket level.
    #[error("network error talking to NTP server {server}: {source}; check the network")]
    Network {
        /// The server as configured.
        server: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },

    /// The configuration cannot work (no servers, zero samples, unknown URL scheme…).
    #[error("invalid time configuration: {reason}")]
    InvalidConfig {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The backend needs a tokio runtime (for its sockets, timers and background sync) and was
    /// used outside one.
    #[error(
        "the {backend} time backend must be created inside a tokio runtime; \
         call it from async code running on tokio"
    )]
    NoRuntime {
        /// The backend, e.g. `"ntp"`.
        backend: &'static str,
    },

    /// A [`HybridClock`](crate::HybridClock) received a remote timestamp further ahead of the
    /// local clock than the allowed maximum offset.
    #[error(
        "remote timestamp {remote} is {ahead:?} ahead of the local clock, more than the allowed \
         {max_offset:?}; one of the two clocks is wrong: check the remote node's clock, or raise \
         `max_offset` if such skew is expected"
    )]
    ClockOffsetTooLarge {
        /// The rejected remote timestamp.
        remote: HlcTimestamp,
        /// How far ahead of local physical time it is.
        ahead: Duration,
        /// The configured maximum.
        max_offset: Duration,
    },

    /// The clock reads a time before 1970-01-01, which hybrid timestamps cannot represent.
    #[error("the clock reads before 1970-01-01; set the system clock (or fix the time backend)")]
    ClockBeforeEpoch,
}

impl Error {
    /// Whether retrying the same call later may succeed (timeouts, network trouble, servers not
    /// synchronized yet, rate limiting). Configuration mistakes and malformed replies are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::NotSynchronized { .. }
            | Error::NoServerReachable { .. }
            | Error::NoAgreement { .. }
            | Error::NoQuorum { .. }
            | Error::Timeout { .. }
            | Error::ServerUnsynchronized { .. }
            | Error::Resolve { .. }
            | Error::Network { .. } => true,
            Error::KissOfDeath { code, .. } => code == "RATE",
            Error::BadTimestamp { .. }
            | Error::MalformedReply { .. }
            | Error::InvalidConfig { .. }
            | Error::NoRuntime { .. }
            | Error::ClockOffsetTooLarge { .. }
            | Error::TimestampOverflow { .. }
            | Error::InvalidTimestamp { .. }
            | Error::ClockBeforeEpoch => false,
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            reason: reason.into(),
        }
    }
}

/// One server that failed during a sync, inside [`Error::NoServerReachable`].
#[derive(Debug)]
#[non_exhaustive]
pub struct ServerFailure {
    /// The server as configured.
    pub server: String,
    /// Why it failed.
    pub error: std::sync::Arc<Error>,
}

impl ServerFailure {
    #[cfg_attr(not(feature = "ntp"), allow(dead_code))] // used by the ntp backend
    pub(crate) fn new(server: impl Into<String>, error: std::sync::Arc<Error>) -> Self {
        Self {
            server: server.into(),
            error,
        }
    }

    fn list(failures: &[ServerFailure]) -> String {
        if failures.is_empty() {
            return "no servers were tried".to_owned();
        }
        failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for ServerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The inner messages already name the server.
        write!(f, "{}", short(&self.error))
    }
}

/// `a (+1.000 ms ± 0.050 ms); failed: b did not answer within 1s; …` for [`Error::NoQuorum`].
struct NoQuorumList<'a>(&'a [String], &'a [ServerFailure]);

impl fmt::Display for NoQuorumList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let answered = if self.0.is_empty() {
            "none answered".to_owned()
        } else {
            format!("answered: {}", self.0.join(", "))
        };
        if self.1.is_empty() {
            write!(f, "{answered}")
        } else {
            write!(f, "{answered}; failed: {}", ServerFailure::list(self.1))
        }
    }
}

/// The first clause of an error message: what happened, without the advice.
fn short(e: &Error) -> String {
    let s = e.to_string();
    match s.split_once("; ") {
        Some((head, _)) => head.to_owned(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn no_server_reachable_names_every_server_tried() {
        let err = Error::NoServerReachable {
            failures: vec![
                ServerFailure::new(
                    "a.example:123",
                    Arc::new(Error::Timeout {
                        server: "a.example:123".into(),
                        timeout: Duration::from_secs(1),
                    }),
                ),
                ServerFailure::new(
                    "b.example:123",
                    Arc::new(Error::KissOfDeath {
                        server: "b.example:123".into(),
                        code: "DENY".into(),
                    }),
                ),
            ],
        };
        let msg = err.to_string();
        assert!(
            msg.contains("a.example:123 did not answer within 1s"),
            "{msg}"
        );
        assert!(
            msg.contains("b.example:123 sent kiss-of-death \"DENY\""),
            "{msg}"
        );
        assert!(msg.contains("check the addresses"), "{msg}");
        assert!(err.is_retryable());
    }
}
