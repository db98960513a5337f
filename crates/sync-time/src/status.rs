//! What a backend reports about its own synchronization.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::Error;

/// Where a backend stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncState {
    /// The system clock, trusted as is: its error cannot be measured here, so the bounds use an
    /// assumed error (the `local` backend).
    SystemClock,
    /// Synchronized recently: the last successful sync is younger than the staleness limit.
    Synchronized,
    /// Synchronized once, but not within the staleness limit (servers unreachable since?). Time
    /// is still served and the bounds keep widening with age, so they stay honest.
    Stale,
    /// No successful sync yet: `now()` and `now_bounds()` fail with
    /// [`Error::NotSynchronized`].
    NeverSynced,
}

/// A snapshot of a backend's synchronization, from [`Time::status`](crate::Time::status).
///
/// ```
/// use sync_time::{LocalTime, SyncState, Time};
///
/// let status = LocalTime::new().status();
/// assert_eq!(status.state, SyncState::SystemClock);
/// assert_eq!(status.backend, "local");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Status {
    /// `"local"` or `"ntp"`.
    pub backend: &'static str,
    /// Where the backend stands.
    pub state: SyncState,
    /// Time since the last successful sync (measured on the monotonic clock), if any.
    pub since_sync: Option<Duration>,
    /// Offset found by the last successful sync, in nanoseconds: true time minus the local wall
    /// clock. Positive means the local clock is behind.
    pub offset_nanos: Option<i64>,
    /// The error bound now (the half-width of `now_bounds()`), if the backend can give bounds.
    pub error: Option<Duration>,
    /// The error bound right after the last sync, before any widening with age.
    pub error_at_sync: Option<Duration>,
    /// Why the most recent sync attempt failed, if it did (a later success clears it).
    pub last_failure: Option<Arc<Error>>,
    /// How many independent sources vouch for the bound, from the last successful sync.
    pub verification: Verification,
    /// What each source said in the last sync attempt (NTP servers; empty for `local`).
    pub sources: Vec<SourceStatus>,
}

impl Status {
    /// An empty status for `backend` in `state`; backends fill in the rest.
    pub(crate) fn new(backend: &'static str, state: SyncState) -> Self {
        Self {
            backend,
            state,
            since_sync: None,
            offset_nanos: None,
            error: None,
            error_at_sync: None,
            last_failure: None,
            verification: Verification::None,
            sources: Vec::new(),
        }
    }
}

/// How many independent sources vouch for the bound: whether anyone cross-checked it.
///
/// The `ntp` backend believes a time only when a majority of its configured servers agree on
/// it, unless [`NtpOptions::min_agreeing`](crate::NtpOptions::min_agreeing) allows fewer; this
/// says which case the current bound is in.
///
/// ```
/// use sync_time::{LocalTime, Time, Verification};
///
/// let status = LocalTime::new().status();
/// assert_eq!(status.verification, Verification::Assumed);
/// assert!(!status.verification.is_majority());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verification {
    /// Nothing is measured: the `local` backend's assumed error.
    Assumed,
    /// No successful sync yet.
    None,
    /// At least two servers agree on the bound and they are a majority of the configured
    /// servers: a minority of liars cannot move it.
    Majority {
        /// Servers whose intervals overlap the bound.
        agreeing: usize,
        /// Distinct servers configured.
        configured: usize,
    },
    /// At least two servers agree, but fewer than a majority of the configured ones (the
    /// others failed, refused or were outvoted); accepted only because
    /// [`min_agreeing`](crate::NtpOptions::min_agreeing) allows it.
    BelowMajority {
        /// Servers whose intervals overlap the bound.
        agreeing: usize,
        /// Distinct servers configured.
        configured: usize,
    },
    /// One server's word alone: nothing cross-checked it. The case with one configured server,
    /// or when `min_agreeing` of 1 lets one answer out of several do.
    Unverified {
        /// Distinct servers configured.
        configured: usize,
    },
}

impl Verification {
    /// From the number of servers whose intervals overlap the bound and the number configured.
    #[cfg_attr(not(feature = "ntp"), allow(dead_code))] // used by the ntp backend
    pub(crate) fn from_counts(agreeing: usize, configured: usize) -> Self {
        if agreeing <= 1 {
            Verification::Unverified { configured }
        } else if agreeing * 2 > configured {
            Verification::Majority {
                agreeing,
                configured,
            }
        } else {
            Verification::BelowMajority {
                agreeing,
                configured,
            }
        }
    }

    /// Whether at least two servers, a majority of those configured, agree on the bound.
    pub fn is_majority(&self) -> bool {
        matches!(self, Verification::Majority { .. })
    }
}

/// One time source (an NTP server) in the last sync attempt.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SourceStatus {
    /// The source as configured, e.g. `"pool.ntp.org:123"`.
    pub name: String,
    /// The address it resolved to, if resolution succeeded.
    pub address: Option<SocketAddr>,
    /// What became of it.
    pub verdict: SourceVerdict,
}

/// What the selection made of one source.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SourceVerdict {
    /// Its interval overlaps the agreed interval: it contributed to the bounds.
    Selected {
        /// Its offset (true time minus local clock), nanoseconds, from its best sample.
        offset_nanos: i64,
        /// Round-trip delay of its best (minimum-delay) sample.
        delay: Duration,
        /// Its own error bound: `delay/2 + root_delay/2 + root_dispersion + …`.
        error: Duration,
        /// How many of its samples were valid.
        samples: u32,
    },
    /// A false ticker: its interval does not overlap the interval most sources agree on, so it
    /// was left out.
    FalseTicker {
        /// Its offset (true time minus local clock), nanoseconds, from its best sample.
        offset_nanos: i64,
        /// Round-trip delay of its best sample.
        delay: Duration,
        /// Its own error bound.
        error: Duration,
    },
    /// No valid sample: timeout, kiss-of-death, invalid reply, resolution failure…
    Failed(Arc<Error>),
    /// Not asked in this sync because it sent a kiss-of-death: `RATE` (asked again after a
    /// back-off that doubles with every `RATE`) or `DENY`/`RSTR` (never asked again by this
    /// handle), as RFC 5905 §7.4 requires.
    KissedOff {
        /// The kiss code, e.g. `RATE`.
        code: String,
        /// When it will be asked again (`None`: never).
        retry_in: Option<Duration>,
    },
    /// It resolved to the same address as another configured server, which was asked
    /// instead: one server gets one vote however often it is listed.
    Duplicate {
        /// The server (as configured) that was asked.
        of: String,
    },
}
