//! Choosing a backend from configuration: a URL such as `local` or
//! `etcd://127.0.0.1:2379/myapp?ttl=10s`, or a serde value such as
//! `{"backend": "etcd", "endpoints": ["127.0.0.1:2379"]}`.
//!
//! ```
//! use sync_core::backend::Backend;
//! assert!(matches!(Backend::from_url("local").unwrap(), Backend::Local));
//! let b: Backend = serde_json::from_str(r#"{"backend":"local"}"#).unwrap();
//! assert!(matches!(b, Backend::Local));
//! assert!(Backend::from_url("redis://x").is_err());
//! ```

use serde::Deserialize;

/// Which backend to use, and its settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Backend {
    /// In-process: needs nothing running; coordinates the tasks of one process.
    Local,
    /// etcd (feature `etcd`).
    #[cfg(feature = "etcd")]
    Etcd(Box<crate::etcd::EtcdConfig>),
}

/// A backend URL that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot use backend URL {url:?}: {reason}")]
pub struct BackendError {
    url: String,
    reason: String,
}

impl Backend {
    /// Parses `local`, `local://` or `etcd://…`/`etcds://…` (see `EtcdConfig::from_url`).
    pub fn from_url(url: &str) -> Result<Self, BackendError> {
        let err = |reason: String| BackendError {
            url: url.split('@').next_back().unwrap_or(url).to_owned(),
            reason,
        };
        let scheme = url.split("://").next().unwrap_or(url);
        match scheme {
            "local" => Ok(Backend::Local),
            "etcd" | "etcds" => {
                #[cfg(feature = "etcd")]
                {
                    crate::etcd::EtcdConfig::from_url(url)
                        .map(|c| Backend::Etcd(Box::new(c)))
                        .map_err(|e| err(e.to_string()))
                }
                #[cfg(not(feature = "etcd"))]
                {
                    Err(err(
                        "this build has no etcd backend; enable the crate's `etcd` feature".into(),
                    ))
                }
            }
            other => Err(err(format!(
                "unknown backend {other:?}; use `local` or `etcd://host:port/prefix`"
            ))),
        }
    }

    /// The backend's name: `local` or `etcd`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local => "local",
            #[cfg(feature = "etcd")]
            Backend::Etcd(_) => "etcd",
        }
    }
}
