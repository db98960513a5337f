use std::time::Duration;

/// Result of the etcd plumbing.
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong while talking to etcd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration (or URL) is invalid.
    #[error("invalid etcd configuration: {0}")]
    InvalidConfig(String),
    /// No connection could be made.
    #[error("cannot connect to etcd at {endpoints}: {source}; check that etcd listens there and that the TLS settings match the server")]
    Connect {
        /// The endpoints tried.
        endpoints: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The TLS handshake failed: the server's certificate is not signed by the configured CA,
    /// or the server refused our client certificate (or our lack of one). Not retried: it does
    /// not heal by itself.
    #[error("TLS with etcd at {endpoints} failed: {detail}")]
    Tls {
        /// The endpoints.
        endpoints: String,
        /// Which side refused, and what to change.
        detail: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The server rejected our credentials or permissions.
    #[error(
        "etcd at {endpoints} refused {op}: {detail}; check the user, password and role permissions"
    )]
    Auth {
        /// The endpoints.
        endpoints: String,
        /// The operation.
        op: &'static str,
        /// What the server said.
        detail: String,
    },
    /// The cluster could not be reached or had no leader, for longer than the deadline allowed.
    #[error("etcd at {endpoints} is unavailable ({op}): {source}; the operation was retried until its deadline")]
    Unavailable {
        /// The endpoints.
        endpoints: String,
        /// The operation.
        op: &'static str,
        /// The last error seen.
        #[source]
        source: BoxError,
    },
    /// The operation did not finish within its time budget.
    #[error("etcd at {endpoints} did not complete {op} within {after:?}; the cluster may be overloaded or partitioned")]
    Timeout {
        /// The endpoints.
        endpoints: String,
        /// The operation.
        op: &'static str,
        /// The time budget.
        after: Duration,
    },
    /// Any other failure reported by etcd.
    #[error("etcd at {endpoints} failed {op}: {source}")]
    Etcd {
        /// The endpoints.
        endpoints: String,
        /// The operation.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether retrying later may succeed: the cluster was unreachable (also at connect time:
    /// it may not be up yet) or slow. Configuration, TLS and credential errors are not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Timeout { .. } | Error::Connect { .. }
        )
    }

    /// Whether the server said the lease used is gone (expired or revoked).
    pub fn is_lease_not_found(&self) -> bool {
        match self {
            Error::Etcd { source, .. } => source.to_string().contains("requested lease not found"),
            _ => false,
        }
    }

    pub(crate) fn from_etcd(endpoints: &str, op: &'static str, e: etcd_client::Error) -> Self {
        match classify(&e) {
            Class::Transient => Error::Unavailable {
                endpoints: endpoints.to_owned(),
                op,
                source: Box::new(e),
            },
            Class::Tls(detail) => Error::Tls {
                endpoints: endpoints.to_owned(),
                detail,
                source: Box::new(e),
            },
            Class::Auth(detail) => Error::Auth {
                endpoints: endpoints.to_owned(),
                op,
                detail,
            },
            Class::Other => Error::Etcd {
                endpoints: endpoints.to_owned(),
                op,
                source: Box::new(e),
            },
        }
    }
}

pub(crate) enum Class {
    Transient,
    Tls(String),
    Auth(String),
    Other,
}

/// Sorts an etcd-client error into transient (retry), auth (report) and other.
pub(crate) fn classify(e: &etcd_client::Error) -> Class {
    use etcd_client::Error as E;
    if let Some(detail) = tls_problem(e) {
        return Class::Tls(detail);
    }
    match e {
        E::TransportError(_) | E::IoError(_) => Class::Transient,
        E::LeaseKeepAliveError(_) | E::WatchError(_) => Class::Transient,
        E::GRpcStatus(status) => {
            use tonic::Code;
            let msg = status.message();
            let lower = msg.to_ascii_lowercase();
            if lower.contains("invalid auth token") || lower.contains("auth token is expired") {
                // etcd-client refreshes its token on reconnect: worth another try.
                return Class::Transient;
            }
            if lower.contains("authentication failed")
                || lower.contains("user name is empty")
                || lower.contains("permission denied")
                || lower.contains("user name not found")
            {
                return Class::Auth(msg.to_owned());
            }
            match status.code() {
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::ResourceExhausted
                | Code::Cancelled => Class::Transient,
                Code::Unauthenticated | Code::PermissionDenied => Class::Auth(msg.to_owned()),
                Code::Unknown
                    if lower.contains("leader changed")
                        || lower.contains("no leader")
                        || lower.contains("timed out")
                        || lower.contains("transport")
                        || lower.contains("connection") =>
                {
                    Class::Transient
                }
                _ => Class::Other,
            }
        }
        _ => Class::Other,
    }
}

/// Recognises a failed TLS handshake anywhere in the error's chain (tonic and rustls report it
/// only as text) and says which side refused.
fn tls_problem(e: &etcd_client::Error) -> Option<String> {
    let text = format!("{e:?}");
    let lower = text.to_ascii_lowercase();
    let cause = |needle: &str| {
        let i = lower.find(needle)?;
        let rest = &text[i..];
        let end = rest.find(['"', ')', ',']).unwrap_or(rest.len());
        Some(rest[..end].to_owned())
    };
    if let Some(c) = cause("invalid peer certificate") {
        return Some(format!(
            "the server's certificate was not accepted ({c}); check that `ca` is the CA that \
             signed the servers' certificates and that the endpoint's host is in them"
        ));
    }
    for alert in [
        "received fatal alert: badcertificate",
        "received fatal alert: certificaterequired",
        "received fatal alert: unknownca",
        "received fatal alert: handshakefailure",
    ] {
        if let Some(c) = cause(alert) {
            return Some(format!(
                "the server refused our client certificate, or requires one and none was given \
                 ({c}); set `cert` and `key` to a certificate signed by the CA the servers trust"
            ));
        }
    }
    None
}

impl Error {
    /// Hands this error to a primitive's own error type: `config` gets the message of an invalid
    /// setting (never retryable: it must be fixed), `other` whether a retry may succeed and the
    /// error itself, for the primitive to name what it was doing.
    pub fn report<E>(
        self,
        config: impl FnOnce(String) -> E,
        other: impl FnOnce(bool, BoxError) -> E,
    ) -> E {
        match self {
            Error::InvalidConfig(m) => config(m),
            e => other(e.is_retryable(), Box::new(e)),
        }
    }
}

impl From<sync_core::etcd::ConfigError> for Error {
    fn from(e: sync_core::etcd::ConfigError) -> Self {
        Error::InvalidConfig(e.0)
    }
}
