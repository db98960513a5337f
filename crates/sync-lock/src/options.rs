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
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The longest `acquire` waits before failing with [`Error::Timeout`](crate::Error::Timeout).
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The TTL asked for, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The maximum wait, if any.
    pub fn max_wait(&self) -> Option<Duration> {
        self.max_wait
    }

    pub(crate) fn validate(&self, name: &str) -> crate::Result<()> {
        if let Some(ttl) = self.ttl {
            if ttl < Duration::from_secs(1) {
                return Err(crate::Error::InvalidOptions {
                    name: sync_core::name::display_name(name),
                    reason: format!("ttl {ttl:?} is below the 1 s minimum"),
                });
            }
        }
        Ok(())
    }
}
