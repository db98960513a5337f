//! The settings of an etcd connection, as data: endpoints, key prefix, TLS, auth, timeouts and the
//! lease TTL, from serde or from an `etcd://` URL. They live here, beside [`crate::backend`], so
//! that choosing a backend from a URL needs no etcd client; the connection itself, the lease
//! keeper and the queue are in the `sync-etcd` crate.

mod config;

pub use config::{EtcdConfig, TlsConfig};

/// An etcd setting or URL that cannot be used. Never retryable: the setting must be fixed. The
/// message never shows a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid etcd configuration: {0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// Always `false`: a setting that cannot be used stays unusable however often it is tried.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
