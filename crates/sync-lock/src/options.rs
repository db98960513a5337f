use std::time::Duration;

/// Options of [`Lock::acquire`](crate::Lock::acquire) and
/// [`Lock::try_acquire`](crate::Lock::try_acquire).
///
/// ```
/// use std::time::Duration;
/// use sync_lock::AcquireOptions;
/// let opts = AcquireOptions::new()
///     .with_ttl(Duration::from_secs(5))
///     .with_max_wait(Duration::from_secs(1));
/// assert_eq!(opts.ttl(), Some(Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcquireOptions {
    ttl: Option<Duration>,
    max_wait: Option<Duration>,
    sticky: bool,
}

impl AcquireOptions {
    /// Defaults: the backend's TTL, wait as long as it takes.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long the lock outlives a holder that stops renewing it (a crash). The etcd backend
    /// rounds it up to whole seconds, and etcd may raise it to its minimum. The in-process
    /// backend has no one to outlive and checks it only for validity.
    ///
    /// It must lie between 1 s and etcd's longest lease TTL, 9,000,000,000 s
    /// ([`sync_core::duration::validate_ttl`]); anything else (zero, sub-second,
    /// `Duration::MAX`) makes `acquire` and `try_acquire` fail at once with
    /// [`Error::InvalidOptions`](crate::Error::InvalidOptions), on every backend.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The longest `acquire` waits before failing with [`Error::Timeout`](crate::Error::Timeout).
    /// With the etcd backend it includes the round trips, so a very short wait may time out on
    /// a free lock.
    ///
    /// Zero is refused with [`Error::InvalidOptions`](crate::Error::InvalidOptions) (to take the
    /// lock only if it is free, use `try_acquire`). A wait of 100 years or more
    /// ([`sync_core::duration::UNLIMITED_WAIT`]), `Duration::MAX` included, saturates to "no
    /// limit": [`max_wait`](Self::max_wait) then returns `None`.
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        // Zero is kept, for `validate` to refuse it.
        self.max_wait = sync_core::duration::validate_max_wait(max_wait).unwrap_or(Some(max_wait));
        self
    }

    /// Keeps the lock's place after release while nobody else waits, so that this process takes
    /// it again without a round trip (off by default).
    ///
    /// With the etcd backend, releasing a sticky guard *parks* its key instead of deleting it:
    /// the key stays at the head of the queue, on its lease, and a watch on the queue looks out
    /// for contenders. A sticky acquire of the same name (with the same TTL) through the same
    /// `EtcdLock` handle (or a clone) then takes the parked key back in
    /// memory, with the same fencing token. As soon as another contender joins the queue, the
    /// parked key is deleted and the contender gets the lock (after one watch event and one
    /// delete). A parked key that is lost (its lease ends or someone deletes it) is never
    /// handed out again: the next acquire takes the normal path. Dropping the last handle of
    /// the lock deletes its parked keys.
    ///
    /// What it trades: a sticky re-acquire racing with a contender that joined a moment before
    /// (its join not seen yet) wins, although the contender queued first. Exclusion and
    /// fencing are unaffected; only first-come-first-served is given up for that race. The
    /// token of a sticky re-acquire equals the one before it (no other holder came between);
    /// see `docs/etcd.md` ("Sticky locks") for what a resource that checks tokens must do.
    ///
    /// The in-process backend has no round trip to save: its uncontended acquire is already a
    /// map lookup and a contender gets a released lock at once, so it accepts the option and
    /// behaves as without it (tokens still increase per acquire). Semaphores and read-write
    /// locks ignore it.
    ///
    /// ```
    /// use sync_lock::{AcquireOptions, Lock, LocalLock};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let locks = LocalLock::new();
    /// let sticky = AcquireOptions::new().with_sticky(true);
    /// assert!(sticky.sticky());
    /// for _ in 0..3 {
    ///     let g = locks.acquire("hot-path", sticky.clone()).await?;
    ///     // … work, passing g.fencing_token() …
    ///     g.release().await?; // etcd: parked, the next acquire is in-memory
    /// }
    /// # Ok::<(), sync_lock::Error>(()) }).unwrap();
    /// ```
    pub fn with_sticky(mut self, sticky: bool) -> Self {
        self.sticky = sticky;
        self
    }

    /// Whether the acquire is sticky (see [`with_sticky`](Self::with_sticky)).
    pub fn sticky(&self) -> bool {
        self.sticky
    }

    /// The TTL asked for, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The maximum wait, if any: `None` when unset or when it saturated to "no limit".
    pub fn max_wait(&self) -> Option<Duration> {
        self.max_wait
    }

    pub(crate) fn validate(&self, name: &str) -> crate::Result<()> {
        let invalid = |reason: String| crate::Error::InvalidOptions {
            name: sync_core::name::display_name(name),
            reason,
        };
        if let Some(ttl) = self.ttl {
            sync_core::duration::validate_ttl(ttl).map_err(invalid)?;
        }
        if let Some(max_wait) = self.max_wait {
            sync_core::duration::validate_max_wait(max_wait).map_err(|e| {
                invalid(format!(
                    "{e}, or use try_acquire to take the lock only if it is free"
                ))
            })?;
        }
        Ok(())
    }
}
