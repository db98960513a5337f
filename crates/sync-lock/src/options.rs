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
