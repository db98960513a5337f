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

#[cfg(feature = "ntp")]
#[cfg_attr(docsrs, doc(cfg(feature = "ntp")))]
mod ntp;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

pub use bounds::TimeBounds;
pub use clock::{ClockSource, ManualClock, SystemClock};
pub use error::{Error, Result, ServerFailure};
pub use hlc::{HlcTimestamp, HybridClock, DEFAULT_MAX_OFFSET};
pub use local::LocalTime;
#[cfg(feature = "ntp")]
#[cfg_attr(docsrs, doc(cfg(feature = "ntp")))]
pub use ntp::NtpTime;
pub use options::{connect, LocalOptions, NtpOptions, TimeConfig};
pub use status::{SourceStatus, SourceVerdict, Status, SyncState};

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
    /// [`after(t)`](TimeExt::after) is true. Waits about `t - earliest`, so roughly twice the
    /// error bound for a timestamp taken from [`now`](Time::now).
    ///
    /// Cancel-safe (it only sleeps). Fails if the backend cannot give bounds.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sync_time::Result<()> {
    /// use std::time::Duration;
    /// use sync_time::{LocalOptions, LocalTime, Time, TimeExt};
    ///
    /// let time = LocalTime::with_options(LocalOptions::new().with_assumed_error(Duration::from_millis(2)));
    /// let commit_ts = time.now()?;
    /// time.wait_until_after(commit_ts).await?; // ≈ 2 ms
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
                let remaining = t
                    .duration_since(bounds.earliest())
                    .unwrap_or(Duration::ZERO);
                // The earliest bound advances slightly slower than real time (drift), so a
                // second, short round may be needed; never spin.
                tokio::time::sleep(remaining.max(Duration::from_micros(100))).await;
            }
        })
    }
}

impl<T: Time + ?Sized> TimeExt for T {}
