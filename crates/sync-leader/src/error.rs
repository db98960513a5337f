use std::time::Duration;

use sync_core::name::NameError;
use sync_core::signal::LossReason;

/// Result of leader-election operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong with an election.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A group name or candidate id is not acceptable.
    #[error("invalid {kind} {name:?}: {reason}")]
    InvalidName {
        /// `"group"` or `"candidate id"`.
        kind: &'static str,
        /// The name, shortened if long.
        name: String,
        /// Why.
        #[source]
        reason: NameError,
    },
    /// The options are not acceptable (for example a zero TTL).
    #[error("invalid election options for group {group:?}: {reason}")]
    InvalidOptions {
        /// The group.
        group: String,
        /// Why.
        reason: String,
    },
    /// The candidate was not elected within the maximum wait (its candidacy was withdrawn).
    #[error("candidate {candidate:?} was not elected in group {group:?} within {waited:?}; another candidate leads (raise the maximum wait)")]
    Timeout {
        /// The group.
        group: String,
        /// The candidate.
        candidate: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The candidacy or the leadership was lost: its lease expired or could not be kept alive,
    /// or someone deleted it. Campaign again to get back in line.
    #[error("the candidacy of {candidate:?} in group {group:?} was lost: {reason}")]
    Lost {
        /// The group.
        group: String,
        /// The candidate.
        candidate: String,
        /// Why.
        reason: LossReason,
    },
    /// [`Elected::proclaim`](crate::Elected::proclaim) by a candidate that no longer leads.
    #[error("candidate {candidate:?} no longer leads group {group:?}; campaign again before proclaiming")]
    NotLeader {
        /// The group.
        group: String,
        /// The candidate.
        candidate: String,
    },
    /// The backend could not be connected to: unreachable (retryable), or TLS or credentials
    /// refused (not retryable). The message names the endpoints.
    #[error("cannot open the leader backend: {source}")]
    Connect {
        /// Whether retrying later may succeed.
        retryable: bool,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The backend could not be reached, or failed, during an operation on a group; the message
    /// names the endpoint.
    #[error("election group {group:?}: {source}")]
    Backend {
        /// The group.
        group: String,
        /// Whether retrying later may succeed.
        retryable: bool,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The backend configuration (or URL) is not acceptable: a malformed endpoint, an
    /// out-of-range duration, a missing TLS file… Never retryable: the configuration must be
    /// fixed.
    #[error("invalid leader backend configuration: {0}")]
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

    pub(crate) fn invalid_name(kind: &'static str, name: &str, reason: NameError) -> Self {
        Error::InvalidName {
            kind,
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
    pub(crate) fn backend(group: &str, e: sync_etcd::Error) -> Self {
        let group = group.to_owned();
        e.report(Error::Config, |retryable, source| Error::Backend {
            group,
            retryable,
            source,
        })
    }
}
