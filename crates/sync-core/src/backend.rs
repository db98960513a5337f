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
    #[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
    Etcd(Box<crate::etcd::EtcdConfig>),
}

/// A backend URL that cannot be used: an unknown scheme, a backend this build lacks, or a
/// malformed `etcd://` URL. Never retryable: the URL must be fixed. The message never shows a
/// password.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    message: String,
}

impl BackendError {
    /// Always `false`: a URL that cannot be used stays unusable however often it is tried.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

impl Backend {
    /// Parses `local`, `local://` or `etcd://…`/`etcds://…` (see `EtcdConfig::from_url`, which
    /// checks every host, port, escape and duration of it). Nothing is connected to.
    pub fn from_url(url: &str) -> Result<Self, BackendError> {
        let err = |reason: String| BackendError {
            message: format!("cannot use backend URL {:?}: {reason}", redact_url(url)),
        };
        match scheme(url) {
            "local" if url == "local" || url.starts_with("local://") && !url.contains('?') => {
                Ok(Backend::Local)
            }
            "local" => Err(err(
                "the `local` backend takes no host and no parameters; use `local`".into(),
            )),
            "etcd" | "etcds" => {
                #[cfg(feature = "etcd")]
                {
                    // The etcd error names the (redacted) URL already.
                    crate::etcd::EtcdConfig::from_url(url)
                        .map(|c| Backend::Etcd(Box::new(c)))
                        .map_err(|e| BackendError {
                            message: e.to_string(),
                        })
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

/// The scheme of a backend URL, which picks the backend: what precedes the first `:`, `/` or
/// `?` (`etcd` in `etcd://h:1/p`, `local` in `local` and in `local?assumed_error=5ms`). The
/// crates whose URLs take more forms than [`Backend`] (`sync-time`'s `ntp://…`) choose with it.
///
/// ```
/// use sync_core::backend::scheme;
/// assert_eq!(scheme("etcd://127.0.0.1:2379/app"), "etcd");
/// assert_eq!(scheme("local?assumed_error=5ms"), "local");
/// assert_eq!(scheme("ntp://a,b"), "ntp");
/// assert_eq!(scheme(""), "");
/// ```
pub fn scheme(url: &str) -> &str {
    &url[..url.find([':', '/', '?']).unwrap_or(url.len())]
}

/// The URL with every password (`user:password@` and `password=`) replaced, for messages.
///
/// ```
/// use sync_core::backend::redact_url;
/// let shown = redact_url("etcd://u:s3cret@h:1/p?password=x&ttl=5s");
/// assert_eq!(shown, "etcd://u:<hidden>@h:1/p?password=<hidden>&ttl=5s");
/// ```
pub fn redact_url(url: &str) -> String {
    // Every `scheme://user:password@` (a list of server URLs has one per server).
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(scheme_end) = rest.find("://") {
        let (head, after) = rest.split_at(scheme_end + 3);
        out.push_str(head);
        let auth_end = after.find(['/', '?']).unwrap_or(after.len());
        let shown = after[..auth_end]
            .rfind('@')
            .and_then(|at| after[..at].find(':').map(|colon| (colon, at)));
        match shown {
            Some((colon, at)) => {
                out.push_str(&after[..colon]);
                out.push_str(":<hidden>");
                rest = &after[at..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    const KEY: &str = "password=";
    let mut from = 0;
    while let Some(i) = out[from..].find(KEY) {
        let start = from + i + KEY.len();
        let end = out[start..].find('&').map_or(out.len(), |j| start + j);
        out.replace_range(start..end, "<hidden>");
        from = start + "<hidden>".len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_every_password() {
        let r = redact_url("nats://u:one@h:1,nats://v:two@h:2/p");
        assert_eq!(r, "nats://u:<hidden>@h:1,nats://v:<hidden>@h:2/p");
        assert_eq!(redact_url("local"), "local");
        assert_eq!(redact_url("etcd://h:1,h:2/p"), "etcd://h:1,h:2/p");
        let r = redact_url("etcd://u:s3cret@h:1/p?password=other&x=1&password=third");
        assert!(
            !r.contains("s3cret") && !r.contains("other") && !r.contains("third"),
            "{r}"
        );
        assert!(r.contains("u:<hidden>@h:1") && r.contains("x=1"), "{r}");
        let e = Backend::from_url("nope://u:s3cret@h?password=other").unwrap_err();
        assert!(
            !e.to_string().contains("s3cret") && !e.to_string().contains("other"),
            "{e}"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn local_takes_no_parameters() {
        assert!(matches!(Backend::from_url("local"), Ok(Backend::Local)));
        assert!(matches!(Backend::from_url("local://"), Ok(Backend::Local)));
        for url in ["local?ttl=5s", "local:x", "localhost", "local://x?y=1"] {
            let e = Backend::from_url(url).unwrap_err();
            assert!(e.to_string().contains("local"), "{url}: {e}");
        }
    }
}
