//! The `ntp` backend: several SNTP servers, validated, filtered, intersected, and served from
//! the monotonic clock between syncs.
//!
//! - `query`: resolve, skip kissed-off and duplicate servers, sample with `sntpc` under a
//!   timeout, keep the minimum-delay sample;
//! - `validation`: which replies are usable, and the typed error for each one that is not;
//! - `selection`: the error formula and the intersection that rejects false tickers;
//! - `quorum`: from the servers' outcomes to the agreed interval, if enough servers agree;
//! - `clock`: the synchronized clock between syncs, and how a re-sync takes over.

mod clock;
#[cfg(test)]
mod proptests;
mod query;
mod quorum;
mod selection;
mod validation;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tracing::Instrument;

use self::clock::{Merge, Served};
use self::query::{query_all, Anchor, Server};
use self::quorum::{select, Selection};
use crate::bounds::{from_unix_nanos, to_unix_nanos};
use crate::{
    ClockSource, Error, NtpOptions, Result, SourceStatus, Status, SyncState, SystemClock, Time,
    TimeBounds, Verification,
};

/// Time from NTP servers, with bounds that are measured rather than assumed.
///
/// Each sync queries every server concurrently ([`samples`](NtpOptions::samples) queries
/// each, each under [`query_timeout`](NtpOptions::query_timeout)), validates every reply
/// (kiss-of-death, leap indicator 3, stratum 0 or ≥ 16, zero or mismatched origin timestamp,
/// zero transmit timestamp, …), keeps each server's minimum-delay sample, turns it into an
/// interval `offset ± ε` with
///
/// `ε = δ/2 + root_delay/2 + root_dispersion + φ·age + 2 µs`
///
/// (δ: round trip; φ: [`max_drift_ppm`](NtpOptions::max_drift_ppm); age: time since the sync
/// started), and intersects the intervals: servers outside the interval that a majority of
/// the *configured* servers agree on are false tickers and are left out (fewer may do if
/// [`min_agreeing`](NtpOptions::min_agreeing) says so, and
/// [`Status::verification`](crate::Status::verification) then says so too). The agreed
/// interval, intersected with the previous bound carried forward, is the new bound. A server
/// that sends kiss-of-death `RATE` is asked less often, one that sends `DENY` or `RSTR` never
/// again.
///
/// Between syncs, [`now`](Time::now) is the synced time plus the monotonic time elapsed since,
/// with no I/O and no wall-clock read: a step of the system clock does not move it. The bounds
/// widen by φ × the time since the sync. `now()` never goes backwards on one `NtpTime` (any
/// thread, across re-syncs: a re-sync that moves the midpoint back is slewed into, not stepped)
/// and always lies within the bounds read just before and just after it. A background task
/// re-syncs every [`resync_interval`](NtpOptions::resync_interval) and stops when the last
/// clone of this handle is dropped.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> sync_time::Result<()> {
/// use sync_time::{NtpOptions, NtpTime, Time};
///
/// let opts = NtpOptions::new(["0.pool.ntp.org:123", "1.pool.ntp.org:123", "2.pool.ntp.org:123"]);
/// let time = NtpTime::connect(opts).await?; // first sync; fails if no server answers
/// let bounds = time.now_bounds()?;
/// println!("now ≈ {:?} ± {:?}", time.now()?, bounds.error());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NtpTime {
    inner: Arc<Inner>,
    _background: Option<Arc<Background>>,
}

struct Inner {
    options: NtpOptions,
    clock: Arc<dyn ClockSource>,
    served: Served,
    report: Mutex<Report>,
    /// The distinct configured servers, with what each keeps across syncs.
    servers: Vec<Server>,
    /// How many of them must agree.
    required: usize,
    /// One sync at a time (background and explicit `sync()` calls).
    serial: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone)]
struct Report {
    sources: Vec<SourceStatus>,
    last_failure: Option<Arc<Error>>,
    verification: Verification,
}

/// Aborts the background re-sync task when the last handle goes.
struct Background(tokio::task::JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl NtpTime {
    /// Validates `options`, syncs once (failing with a typed error naming the servers if none
    /// gives a usable time) and starts the background re-sync.
    ///
    /// Must run inside a tokio runtime.
    pub async fn connect(options: NtpOptions) -> Result<Self> {
        Self::connect_with_clock(options, Arc::new(SystemClock)).await
    }

    /// [`connect`](Self::connect), reading the local clocks from `clock` (tests inject a
    /// [`ManualClock`](crate::ManualClock) to step the wall clock).
    pub async fn connect_with_clock(
        options: NtpOptions,
        clock: Arc<dyn ClockSource>,
    ) -> Result<Self> {
        let mut time = Self::build(options, clock)?;
        time.inner.sync().await?;
        time.start_background(time.inner.options.resync_interval)?;
        Ok(time)
    }

    /// Validates `options` and starts the background task, which syncs at once and then every
    /// [`resync_interval`](NtpOptions::resync_interval). No I/O here: until the first sync
    /// succeeds, [`status`](Time::status) is [`NeverSynced`](SyncState::NeverSynced) and
    /// `now()` fails with [`Error::NotSynchronized`].
    ///
    /// Must be called inside a tokio runtime (else [`Error::NoRuntime`]).
    pub fn new(options: NtpOptions) -> Result<Self> {
        Self::with_clock(options, Arc::new(SystemClock))
    }

    /// [`new`](Self::new), reading the local clocks from `clock`.
    pub fn with_clock(options: NtpOptions, clock: Arc<dyn ClockSource>) -> Result<Self> {
        let mut time = Self::build(options, clock)?;
        time.start_background(Duration::ZERO)?;
        Ok(time)
    }

    /// The options in use.
    pub fn options(&self) -> &NtpOptions {
        &self.inner.options
    }

    fn build(options: NtpOptions, clock: Arc<dyn ClockSource>) -> Result<Self> {
        options.validate()?;
        let servers: Vec<Server> = options
            .distinct_servers()
            .into_iter()
            .map(Server::new)
            .collect();
        if servers.len() < options.servers.len() {
            tracing::warn!(
                configured = options.servers.len(),
                distinct = servers.len(),
                "NTP servers listed more than once count once"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                required: options.required_agreeing(),
                options,
                clock,
                served: Served::default(),
                report: Mutex::new(Report {
                    sources: Vec::new(),
                    last_failure: None,
                    verification: Verification::None,
                }),
                servers,
                serial: tokio::sync::Mutex::new(()),
            }),
            _background: None,
        })
    }

    fn start_background(&mut self, first_delay: Duration) -> Result<()> {
        let interval = self.inner.options.resync_interval;
        if interval.is_zero() {
            return Ok(());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::NoRuntime { backend: "ntp" })?;
        let weak = Arc::downgrade(&self.inner);
        let task = runtime.spawn(resync_loop(weak, first_delay));
        self._background = Some(Arc::new(Background(task)));
        Ok(())
    }

    fn not_synchronized() -> Error {
        Error::NotSynchronized { backend: "ntp" }
    }
}

/// Re-syncs every `resync_interval` (every `retry_interval` after a failure) while the handle
/// lives: it holds the state weakly and is aborted when the last handle is dropped.
async fn resync_loop(inner: Weak<Inner>, first_delay: Duration) {
    let mut delay = first_delay;
    loop {
        tokio::time::sleep(delay).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        delay = match inner.sync().await {
            Ok(()) => inner.options.resync_interval,
            Err(e) => {
                tracing::warn!(error = %e, "NTP re-sync failed; serving the last sync with widening bounds");
                inner.options.retry_interval
            }
        };
    }
}

impl Inner {
    async fn sync(&self) -> Result<()> {
        let span = tracing::info_span!("sync.time", servers = self.servers.len());
        self.sync_once().instrument(span).await
    }

    async fn sync_once(&self) -> Result<()> {
        let _one_at_a_time = self.serial.lock().await;
        let anchor = Anchor::now(&*self.clock);
        let outcomes = query_all(&self.servers, &self.options, &*self.clock, anchor).await;
        let ppm = self.options.max_drift_ppm;
        let Selection { sources, result } = select(&outcomes, ppm, self.required);
        let mut report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok((interval, agreeing)) => {
                let base = anchor.base_unix_nanos();
                let (synced, merge) = self.served.install(
                    anchor.mono,
                    (base + interval.lo, base + interval.hi),
                    ppm,
                    to_unix_nanos(anchor.wall),
                    || self.clock.monotonic(),
                );
                if merge == Merge::Contradicted {
                    tracing::warn!(
                        "the new NTP interval does not overlap the previous bound carried \
                         forward: a server lied or the local clock drifted faster than \
                         max_drift_ppm; taking the new one (now() slews, it does not step back)"
                    );
                }
                sync_core::telemetry::record::time_sync(
                    synced.offset_nanos as f64 / 1e9,
                    synced.error_at_sync(),
                );
                tracing::debug!(
                    offset_ns = synced.offset_nanos,
                    error = ?synced.error_at_sync(),
                    base_minus_wall_ns = anchor.base_minus_wall() as i64,
                    ?merge,
                    "NTP sync"
                );
                *report = Report {
                    sources,
                    last_failure: None,
                    verification: Verification::from_counts(agreeing, self.servers.len()),
                };
                Ok(())
            }
            Err(failure) => {
                report.sources = sources;
                report.last_failure = Some(Arc::new(failure.to_error()));
                Err(failure.to_error())
            }
        }
    }
}

impl Time for NtpTime {
    fn now(&self) -> Result<SystemTime> {
        let m = self.inner.clock.monotonic();
        let now = self
            .inner
            .served
            .now(m)
            .ok_or_else(Self::not_synchronized)?;
        Ok(from_unix_nanos(now))
    }

    fn now_bounds(&self) -> Result<TimeBounds> {
        let m = self.inner.clock.monotonic();
        self.inner
            .served
            .bounds(m)
            .ok_or_else(Self::not_synchronized)
    }

    fn status(&self) -> Status {
        let report = self
            .inner
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let m = self.inner.clock.monotonic();
        let synced = self.inner.served.synced();
        if let Some(s) = &synced {
            sync_core::telemetry::record::time_staleness(s.age(m));
        }
        let state = match synced {
            None => SyncState::NeverSynced,
            Some(s) if s.age(m) > self.inner.options.stale_after => SyncState::Stale,
            Some(_) => SyncState::Synchronized,
        };
        let mut status = Status::new("ntp", state);
        if let Some(s) = synced {
            status.since_sync = Some(s.age(m));
            status.offset_nanos = Some(s.offset_nanos);
            status.error = self.inner.served.bounds(m).map(|b| b.error());
            status.error_at_sync = Some(s.error_at_sync());
            status.verification = report.verification;
        }
        status.last_failure = report.last_failure;
        status.sources = report.sources;
        status
    }

    fn sync(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.inner.sync())
    }
}

impl fmt::Debug for NtpTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NtpTime")
            .field("servers", &self.inner.options.servers)
            .field("synced", &self.inner.served.synced())
            .field("background", &self._background.is_some())
            .finish()
    }
}
