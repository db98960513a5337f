#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

mod bounds;
pub mod clock;
mod error;
mod hlc;
mod local;
mod options;
mod status;
mod url;

#[cfg(feature = "ntp")]
#[cfg_attr(docsrs, doc(cfg(feature = "ntp")))]
mod ntp;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

/// For the conformance macro's expansion in other crates.
#[cfg(feature = "conformance")]
#[doc(hidden)]
pub use sync_core as __core;

pub use bounds::TimeBounds;
pub use clock::{ClockSource, ManualClock, SystemClock};
pub use error::{Error, Result, ServerFailure};
pub use hlc::{lossless, HlcTimestamp, HybridClock, DEFAULT_MAX_OFFSET};
pub use local::LocalTime;
#[cfg(feature = "ntp")]
#[cfg_attr(docsrs, doc(cfg(feature = "ntp")))]
pub use ntp::NtpTime;
pub use options::{LocalOptions, NtpOptions, TimeConfig};
pub use status::{SourceStatus, SourceVerdict, Status, SyncState, Verification};
pub use url::{connect, open};

/// A source of synchronized wall-clock time with an honest error bound.
///
/// The contract, checked for every backend by the [`conformance`](crate#features) suite:
///
/// - [`now_bounds`](Time::now_bounds) returns an interval `[earliest, latest]` that contains
///   true time at some moment during the call, as long as the backend's assumptions hold (see
///   each backend and `docs/time.md`).
/// - [`now`](Time::now) is the best estimate, always inside the bounds read just before and just
///   after it.
/// - `now()` and `now_bounds()` are synchronous and do no I/O: they read a clock and a cached
///   synchronization state, so they are cheap enough for a hot path. Only
///   [`sync`](Time::sync) talks to the network.
///
/// The trait is dyn-compatible: `Arc<dyn Time>` and `impl Time` both work. Conveniences such as
/// [`after`](TimeExt::after) and the commit-wait [`wait_until_after`](TimeExt::wait_until_after)
/// live on [`TimeExt`], implemented for every `Time`.
///
/// ```
/// use std::sync::Arc;
/// use sync_time::{LocalTime, Time};
///
/// let time: Arc<dyn Time> = Arc::new(LocalTime::new());
/// let bounds = time.now_bounds()?;
/// let now = time.now()?;
/// assert!(bounds.earliest() <= now);
/// println!("now is {now:?}, within ±{:?}", bounds.error());
/// # Ok::<(), sync_time::Error>(())
/// ```
pub trait Time: Send + Sync + std::fmt::Debug {
    /// The best estimate of the current wall-clock time.
    ///
    /// No I/O: served from the local clock plus the last synchronization. Fails with
    /// [`Error::NotSynchronized`] when the backend has never synchronized.
    ///
    /// The default is the midpoint of [`now_bounds`](Time::now_bounds).
    fn now(&self) -> Result<SystemTime> {
        Ok(self.now_bounds()?.midpoint())
    }

    /// An interval that contains true time, TrueTime-style.
    ///
    /// Its half-width is the backend's error bound, which for synchronized backends widens with
    /// the time since the last synchronization at the configured drift rate.
    fn now_bounds(&self) -> Result<TimeBounds>;

    /// What the backend knows about its own synchronization: state, age, offset, error and,
    /// for NTP, what each server said.
    fn status(&self) -> Status;

    /// Synchronizes now (NTP: queries its servers) and returns when the new state is in place.
    ///
    /// Backends that need no synchronization (the system clock) return `Ok(())` at once.
    fn sync(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

impl<T: Time + ?Sized> Time for std::sync::Arc<T> {
    fn now(&self) -> Result<SystemTime> {
        (**self).now()
    }
    fn now_bounds(&self) -> Result<TimeBounds> {
        (**self).now_bounds()
    }
    fn status(&self) -> Status {
        (**self).status()
    }
    fn sync(&self) -> BoxFuture<'_, Result<()>> {
        (**self).sync()
    }
}

/// TrueTime conveniences for every [`Time`]: `after`, `before` and commit-wait.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use sync_time::{LocalTime, TimeExt};
///
/// let time = LocalTime::new();
/// let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
/// assert!(time.after(an_hour_ago)?);
/// assert!(!time.before(an_hour_ago)?);
/// # Ok::<(), sync_time::Error>(())
/// ```
pub trait TimeExt: Time {
    /// `true` when `t` has certainly passed: the earliest possible current time is after `t`.
    fn after(&self, t: SystemTime) -> Result<bool> {
        Ok(self.now_bounds()?.is_after(t))
    }

    /// `true` when `t` has certainly not arrived yet: the latest possible current time is
    /// before `t`.
    fn before(&self, t: SystemTime) -> Result<bool> {
        Ok(self.now_bounds()?.is_before(t))
    }

    /// Commit-wait: returns once `t` has certainly passed on every correct clock, i.e. once
    /// [`after(t)`](TimeExt::after) is true. Waits about `t - earliest`: for a timestamp taken
    /// from [`now`](Time::now) (the midpoint) that is about **one** error bound (Spanner, which
    /// stamps with `latest`, waits two).
    ///
    /// Not rounded up to the runtime's 1 ms timer: the last stretch (2 ms at most) is slept on
    /// tokio's blocking pool with the operating system's finer timer, so a sub-millisecond
    /// bound gives a sub-millisecond wait.
    ///
    /// Cancel-safe (it only sleeps; a dropped wait may leave a blocking thread asleep for the
    /// rest of its under-2 ms stretch). Fails if the backend cannot give bounds. Needs a tokio
    /// runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sync_time::Result<()> {
    /// use std::time::Duration;
    /// use sync_time::{LocalOptions, LocalTime, Time, TimeExt};
    ///
    /// let time = LocalTime::with_options(LocalOptions::new().with_assumed_error(Duration::from_millis(2)));
    /// let commit_ts = time.now()?;
    /// time.wait_until_after(commit_ts).await?; // ≈ 2 ms: one error bound
    /// assert!(time.after(commit_ts)?);
    /// # Ok(())
    /// # }
    /// ```
    fn wait_until_after(&self, t: SystemTime) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            loop {
                let bounds = self.now_bounds()?;
                if bounds.is_after(t) {
                    return Ok(());
                }
                // `earliest` must pass `t`: strictly, hence the nanosecond. It advances slightly
                // slower than real time (drift), so another short round may follow; never spin.
                let remaining = t
                    .duration_since(bounds.earliest())
                    .unwrap_or(Duration::ZERO)
                    + Duration::from_nanos(1);
                if remaining > FINE_WAIT {
                    // tokio's timer has 1 ms ticks and rounds up: wake at most a tick early.
                    tokio::time::sleep(remaining - FINE_WAIT / 2).await;
                } else {
                    fine_sleep(remaining).await;
                }
            }
        })
    }
}

/// Below this, [`TimeExt::wait_until_after`] sleeps on a blocking thread (the OS timer, tens of
/// microseconds of slack) rather than on tokio's timer (1 ms ticks, rounded up).
const FINE_WAIT: Duration = Duration::from_millis(2);

/// Sleeps `d` (under [`FINE_WAIT`]) with the OS timer on tokio's blocking pool, falling back to
/// tokio's timer if the pool is unavailable (runtime shutting down).
async fn fine_sleep(d: Duration) {
    if tokio::task::spawn_blocking(move || std::thread::sleep(d))
        .await
        .is_err()
    {
        tokio::time::sleep(d).await;
    }
}

impl<T: Time + ?Sized> TimeExt for T {}
