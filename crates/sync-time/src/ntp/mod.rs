//! The `ntp` backend: several SNTP servers, validated, filtered, intersected, and served from
//! the monotonic clock between syncs.
//!
//! - `query`: resolve, sample with `sntpc` under a timeout, keep the minimum-delay sample;
//! - `validation`: which replies are usable, and the typed error for each one that is not;
//! - `selection`: the error formula and the intersection that rejects false tickers;
//! - `clock`: the synchronized clock between syncs.

mod clock;
mod query;
mod selection;
mod validation;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use futures::future::{join_all, BoxFuture};

use self::clock::SyncedClock;
use self::query::{query_server, Anchor, ServerOutcome, SocketCache};
use self::selection::{intersect, Interval};
use crate::bounds::{from_unix_nanos, to_unix_nanos};
use crate::{
    ClockSource, Error, NtpOptions, Result, ServerFailure, SourceStatus, SourceVerdict, Status,
    SyncState, SystemClock, Time, TimeBounds,
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
/// started), and intersects the intervals: servers outside the interval a majority agrees on
/// are false tickers and are left out. The agreed interval is the new bound.
///
/// Between syncs, [`now`](Time::now) is the synced time plus the monotonic time elapsed since,
/// with no I/O and no wall-clock read: a step of the system clock does not move it. The bounds
/// widen by φ × the time since the sync. A background task re-syncs every
/// [`resync_interval`](NtpOptions::resync_interval) and stops when the last clone of this handle
/// is dropped.
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
    synced: RwLock<Option<SyncedClock>>,
    report: Mutex<Report>,
    /// Per server, its socket, kept across syncs.
    sockets: Vec<SocketCache>,
    /// One sync at a time (background and explicit `sync()` calls).
    serial: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default, Clone)]
struct Report {
    sources: Vec<SourceStatus>,
    last_failure: Option<Arc<Error>>,
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
        let sockets = options
            .servers
            .iter()
            .map(|_| SocketCache::default())
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                clock,
                synced: RwLock::new(None),
                report: Mutex::new(Report::default()),
                sockets,
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

    fn synced(&self) -> Result<SyncedClock> {
        let guard = self
            .inner
            .synced
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        (*guard).ok_or(Error::NotSynchronized { backend: "ntp" })
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
        let _one_at_a_time = self.serial.lock().await;
        let anchor = Anchor::now(&*self.clock);
        let outcomes = join_all(self.options.servers.iter().zip(&self.sockets).map(
            |(server, sockets)| query_server(server, &self.options, &*self.clock, anchor, sockets),
        ))
        .await;
        let (result, sources) = self.select(anchor, &outcomes);
        let mut report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(synced) => {
                tracing::debug!(
                    offset_ns = synced.offset_nanos,
                    error = ?synced.error,
                    "NTP sync"
                );
                *self.synced.write().unwrap_or_else(PoisonError::into_inner) = Some(synced);
                *report = Report {
                    sources,
                    last_failure: None,
                };
                Ok(())
            }
            Err(failure) => {
                *report = Report {
                    sources,
                    last_failure: Some(Arc::new(failure.to_error())),
                };
                Err(failure.to_error())
            }
        }
    }

    /// From the servers' outcomes to a new synced clock (or why not), and what each server
    /// became.
    fn select(
        &self,
        anchor: Anchor,
        outcomes: &[ServerOutcome],
    ) -> (
        std::result::Result<SyncedClock, SyncFailure>,
        Vec<SourceStatus>,
    ) {
        let ppm = self.options.max_drift_ppm;
        // (index in `outcomes`, best sample) of each server that answered.
        let answered: Vec<(usize, selection::Sample)> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.result.as_ref().ok().map(|(s, _)| (i, *s)))
            .collect();
        let intervals: Vec<Interval> = answered.iter().map(|(_, s)| s.interval(ppm)).collect();
        let agreement = intersect(&intervals);

        let mut answered_so_far = 0;
        let sources: Vec<SourceStatus> = outcomes
            .iter()
            .map(|o| SourceStatus {
                name: o.name.clone(),
                address: o.address,
                verdict: match &o.result {
                    Err(e) => SourceVerdict::Failed(e.clone()),
                    Ok((sample, count)) => {
                        let k = answered_so_far;
                        answered_so_far += 1;
                        if agreement.as_ref().is_some_and(|a| a.truechimers[k]) {
                            SourceVerdict::Selected {
                                offset_nanos: sample.offset_nanos,
                                delay: sample.delay,
                                error: sample.error(ppm),
                                samples: *count,
                            }
                        } else {
                            SourceVerdict::FalseTicker {
                                offset_nanos: sample.offset_nanos,
                                delay: sample.delay,
                                error: sample.error(ppm),
                            }
                        }
                    }
                },
            })
            .collect();

        if answered.is_empty() {
            let failures = outcomes
                .iter()
                .filter_map(|o| o.result.as_ref().err().map(|e| (o.name.clone(), e.clone())))
                .collect();
            return (Err(SyncFailure::NoServer(failures)), sources);
        }
        let Some(agreement) = agreement else {
            let servers = answered
                .iter()
                .map(|(i, s)| {
                    format!(
                        "{} ({:+.3} ms ± {:.3} ms)",
                        outcomes[*i].name,
                        s.offset_nanos as f64 / 1e6,
                        s.error(ppm).as_secs_f64() * 1e3
                    )
                })
                .collect();
            return (Err(SyncFailure::NoAgreement(servers)), sources);
        };
        for (k, chimer) in agreement.truechimers.iter().enumerate() {
            if !chimer {
                tracing::warn!(
                    server = %outcomes[answered[k].0].name,
                    offset_ns = answered[k].1.offset_nanos,
                    "NTP server rejected as a false ticker"
                );
            }
        }

        let offset = agreement.interval.midpoint();
        let synced = SyncedClock {
            mono_ref: anchor.mono,
            time_ref: from_unix_nanos(to_unix_nanos(anchor.wall) + offset),
            error: agreement.interval.half_width(),
            drift_ppm: ppm,
            offset_nanos: i64::try_from(offset).unwrap_or(if offset < 0 {
                i64::MIN
            } else {
                i64::MAX
            }),
        };
        (Ok(synced), sources)
    }
}

/// Why a sync produced no new clock. Kept apart from [`Error`] because it goes both to the
/// caller and into the status, and `Error` is not `Clone`.
enum SyncFailure {
    NoServer(Vec<(String, Arc<Error>)>),
    NoAgreement(Vec<String>),
}

impl SyncFailure {
    fn to_error(&self) -> Error {
        match self {
            SyncFailure::NoServer(failures) => Error::NoServerReachable {
                failures: failures
                    .iter()
                    .map(|(s, e)| ServerFailure::new(s.clone(), e.clone()))
                    .collect(),
            },
            SyncFailure::NoAgreement(servers) => Error::NoAgreement {
                servers: servers.clone(),
            },
        }
    }
}

impl Time for NtpTime {
    fn now(&self) -> Result<SystemTime> {
        let mono = self.inner.clock.monotonic();
        Ok(self.synced()?.now(mono))
    }

    fn now_bounds(&self) -> Result<TimeBounds> {
        let mono = self.inner.clock.monotonic();
        Ok(self.synced()?.bounds(mono))
    }

    fn status(&self) -> Status {
        let synced = self.synced().ok();
        let report = self
            .inner
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mono = self.inner.clock.monotonic();
        let state = match synced {
            None => SyncState::NeverSynced,
            Some(s) if s.age(mono) > self.inner.options.stale_after => SyncState::Stale,
            Some(_) => SyncState::Synchronized,
        };
        let mut status = Status::new("ntp", state);
        if let Some(s) = synced {
            status.since_sync = Some(s.age(mono));
            status.offset_nanos = Some(s.offset_nanos);
            status.error = Some(s.error_at(mono));
            status.error_at_sync = Some(s.error);
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
            .field("synced", &self.synced().ok())
            .field("background", &self._background.is_some())
            .finish()
    }
}
