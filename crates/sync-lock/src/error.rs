use std::time::Duration;

use sync_core::name::NameError;
use sync_core::signal::LossReason;

/// Result of lock operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong with a lock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock name is not acceptable.
    #[error("invalid lock name {name:?}: {reason}")]
    InvalidName {
        /// The name, shortened if long.
        name: String,
        /// Why.
        #[source]
        reason: NameError,
    },
    /// The options are not acceptable (for example a zero TTL).
    #[error("invalid options for lock {name:?}: {reason}")]
    InvalidOptions {
        /// The lock.
        name: String,
        /// Why.
        reason: String,
    },
    /// The lock was not granted within the maximum wait.
    #[error("lock {name:?} was not granted within {waited:?}; it is held by someone else (raise the maximum wait, or use try_acquire)")]
    Timeout {
        /// The lock.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The lock (or our place in its queue) was lost: our lease expired or could not be kept
    /// alive, or someone deleted our key.
    #[error("lock {name:?} was lost: {reason}")]
    Lost {
        /// The lock.
        name: String,
        /// Why.
        reason: LossReason,
    },
    /// A semaphore was asked for with another number of permits than those holding or waiting
    /// for it use. Not retryable with the same number: use theirs, or another name.
    #[error(
        "semaphore {name:?} has {theirs} permits (fixed by those holding or waiting), not {ours}"
    )]
    PermitsMismatch {
        /// The semaphore.
        name: String,
        /// The number of permits of those already there.
        theirs: usize,
        /// The number asked for.
        ours: usize,
    },
    /// `release(name)` on a [`LockSet`](crate::LockSet) that does not hold `name`, or
    /// `acquire(name)` on one that already does.
    #[error("lock {name:?} is {state} by this lock set")]
    NotHeld {
        /// The lock.
        name: String,
        /// `"not held"` or `"already held"`.
        state: &'static str,
    },
    /// The backend could not be connected to: unreachable (retryable), or TLS or credentials
    /// refused (not retryable). The message names the endpoints.
    #[error("cannot open the lock backend: {source}")]
    Connect {
        /// Whether retrying later may succeed.
        retryable: bool,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The backend could not be reached, or failed, during an operation on a lock; the message
    /// names the endpoint.
    #[error("lock {name:?}: {source}")]
    Backend {
        /// The lock.
        name: String,
        /// Whether retrying later may succeed.
        retryable: bool,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The backend configuration (or URL) is not acceptable: a malformed endpoint, an
    /// out-of-range duration, a missing TLS file… Never retryable: the configuration must be
    /// fixed.
    #[error("invalid lock backend configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether retrying later may succeed: a timeout, a loss, or an unreachable backend. Invalid
    /// names, options and configurations never are.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Lost { .. } => true,
            Error::Backend { retryable, .. } | Error::Connect { retryable, .. } => *retryable,
            _ => false,
        }
    }

    pub(crate) fn invalid_name(name: &str, reason: NameError) -> Self {
        Error::InvalidName {
            name: sync_core::name::display_name(name),
            reason,
        }
    }

    /// An error of connecting to etcd: [`Error::Config`] for an invalid configuration,
    /// [`Error::Connect`] otherwise.
    #[cfg(feature = "etcd")]
    pub(crate) fn connect(e: sync_etcd::Error) -> Self {
        e.report(Error::Config, |retryable, source| Error::Connect {
            retryable,
            source,
        })
    }

    #[cfg(feature = "etcd")]
    pub(crate) fn backend(name: &str, e: sync_etcd::Error) -> Self {
        let name = name.to_owned();
        e.report(Error::Config, |retryable, source| Error::Backend {
            name,
            retryable,
            source,
        })
    }

    /// A failure of the etcd engine this version does not know by name: retryable.
    #[cfg(feature = "etcd")]
    pub(crate) fn backend_other(
        name: &str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Backend {
            name: name.to_owned(),
            retryable: true,
            source: Box::new(e),
        }
    }
}
