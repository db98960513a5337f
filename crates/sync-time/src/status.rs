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
            sources: Vec::new(),
        }
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
}
