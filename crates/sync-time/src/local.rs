//! The `local` backend: the system clock, trusted within an assumed error.

use std::sync::Arc;
use std::time::SystemTime;

use crate::{
    ClockSource, LocalOptions, Result, Status, SyncState, SystemClock, Time, TimeBounds,
    Verification,
};

/// The system clock as a [`Time`].
///
/// `now()` is [`SystemTime::now`]; `now_bounds()` is `now ± assumed_error` (default 100 ms,
/// see [`LocalOptions`]). This backend measures nothing: it trusts whatever keeps the system
/// clock in time, and a step of the system clock moves its `now()`. Use the `ntp` backend for
/// bounds that are measured.
///
/// ```
/// use sync_time::{LocalTime, Time};
///
/// let time = LocalTime::new();
/// let bounds = time.now_bounds()?;
/// assert!(bounds.contains(bounds.midpoint()));
/// # Ok::<(), sync_time::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LocalTime {
    options: LocalOptions,
    clock: Arc<dyn ClockSource>,
}

impl LocalTime {
    /// The system clock with the default assumed error.
    pub fn new() -> Self {
        Self::with_options(LocalOptions::default())
    }

    /// The system clock with these options.
    pub fn with_options(options: LocalOptions) -> Self {
        Self {
            options,
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads another clock source instead of the system clock (tests).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sync_time::{LocalTime, ManualClock};
    ///
    /// let time = LocalTime::new().with_clock(Arc::new(ManualClock::new()));
    /// # let _ = time;
    /// ```
    pub fn with_clock(mut self, clock: Arc<dyn ClockSource>) -> Self {
        self.clock = clock;
        self
    }

    /// The options in use.
    pub fn options(&self) -> &LocalOptions {
        &self.options
    }
}

impl Default for LocalTime {
    fn default() -> Self {
        Self::new()
    }
}

impl Time for LocalTime {
    fn now(&self) -> Result<SystemTime> {
        Ok(self.clock.wall())
    }

    fn now_bounds(&self) -> Result<TimeBounds> {
        Ok(TimeBounds::around(
            self.clock.wall(),
            self.options.assumed_error,
        ))
    }

    fn status(&self) -> Status {
        let mut status = Status::new("local", SyncState::SystemClock);
        status.error = Some(self.options.assumed_error);
        status.error_at_sync = Some(self.options.assumed_error);
        status.offset_nanos = Some(0);
        status.verification = Verification::Assumed;
        status
    }
}
