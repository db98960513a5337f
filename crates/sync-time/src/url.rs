//! A time backend from a URL: [`TimeConfig`]'s `FromStr`, [`connect`] and [`open`].
//!
//! The scheme is chosen with [`sync_core::backend::scheme`], messages hide passwords with
//! [`sync_core::backend::redact_url`] and durations are read by
//! [`sync_core::duration::parse_duration`], as for every backend URL of the `sync` crates. The
//! parameters are time's own (`local?assumed_error=…`, `ntp://a,b?samples=…`), which
//! `sync_core::backend::Backend` (`local` or `etcd://…`, no parameters for `local`) does not
//! describe.

use std::str::FromStr;
use std::sync::Arc;

use sync_core::backend::redact_url;
use sync_core::duration::parse_duration;

use crate::{Error, LocalOptions, LocalTime, NtpOptions, Result, Time, TimeConfig};

impl FromStr for TimeConfig {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        let url = url.trim();
        // Messages show the URL without its passwords, as every backend URL's do.
        let shown = redact_url(url);
        let (head, query) = match url.split_once('?') {
            Some((h, q)) => (h, q),
            None => (url, ""),
        };
        let params = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.split_once('=').ok_or_else(|| {
                    Error::config(format!("parameter {p:?} in {shown:?} has no `=value`"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let duration = |key: &str, value: &str| {
            parse_duration(value)
                .map_err(|e| Error::config(format!("parameter `{key}` in {shown:?}: {e}")))
        };
        let number = |key: &str, value: &str| {
            value.parse::<u32>().map_err(|_| {
                Error::config(format!(
                    "parameter `{key}` in {shown:?} must be a whole number, not {value:?}"
                ))
            })
        };
        let unknown = |key: &str, known: &str| {
            Error::config(format!(
                "unknown parameter `{key}` in {shown:?}; known: {known}"
            ))
        };

        let scheme = sync_core::backend::scheme(url);
        if scheme == "local" && (head == "local" || head == "local://") {
            let mut opts = LocalOptions::default();
            for (key, value) in params {
                match key {
                    "assumed_error" | "error" => opts.assumed_error = duration(key, value)?,
                    _ => return Err(unknown(key, "assumed_error")),
                }
            }
            return Ok(TimeConfig::Local(opts));
        }
        if let Some(hosts) = head.strip_prefix("ntp://").filter(|_| scheme == "ntp") {
            let servers: Vec<String> = hosts
                .trim_end_matches('/')
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let mut opts = NtpOptions::new(servers);
            for (key, value) in params {
                match key {
                    "samples" => opts.samples = number(key, value)?,
                    "timeout" | "query_timeout" => opts.query_timeout = duration(key, value)?,
                    "interval" | "resync_interval" => {
                        opts.resync_interval = duration(key, value)?;
                    }
                    "retry" | "retry_interval" => opts.retry_interval = duration(key, value)?,
                    "drift_ppm" | "max_drift_ppm" => opts.max_drift_ppm = number(key, value)?,
                    "stale_after" => opts.stale_after = duration(key, value)?,
                    "min_agreeing" => opts.min_agreeing = Some(number(key, value)?),
                    _ => {
                        return Err(unknown(
                            key,
                            "samples, timeout, interval, retry, drift_ppm, stale_after, \
                             min_agreeing",
                        ))
                    }
                }
            }
            opts.validate()?;
            return Ok(TimeConfig::Ntp(opts));
        }
        let hint = match scheme {
            "etcd" | "etcds" => " (etcd serves locks, leaders and tasks, not time)",
            _ => "",
        };
        Err(Error::config(format!(
            "unknown time backend URL {shown:?}{hint}; use `local`, `local?assumed_error=50ms` \
             or `ntp://host:port,host:port`"
        )))
    }
}

/// Builds the backend a [`TimeConfig`] describes, as `Arc<dyn Time>`.
///
/// For NTP this performs the first sync (so it fails if no server answers) and starts the
/// background re-sync. Without feature `ntp`, an NTP config is an [`Error::InvalidConfig`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> sync_time::Result<()> {
/// let time = sync_time::connect(&"local".parse()?).await?;
/// println!("{:?}", time.now_bounds()?);
/// # Ok(())
/// # }
/// ```
pub async fn connect(config: &TimeConfig) -> Result<Arc<dyn Time>> {
    match config {
        TimeConfig::Local(opts) => Ok(Arc::new(LocalTime::with_options(opts.clone()))),
        #[cfg(feature = "ntp")]
        TimeConfig::Ntp(opts) => Ok(Arc::new(crate::NtpTime::connect(opts.clone()).await?)),
        #[cfg(not(feature = "ntp"))]
        TimeConfig::Ntp(_) => Err(Error::config(
            "the ntp backend is not compiled in; enable feature `ntp` of sync-time \
             (or `ntp` of the sync facade)",
        )),
    }
}

/// Builds the backend a URL names, as `Arc<dyn Time>`, like `sync_lock::open` and
/// `sync_leader::open`: `local`, `local?assumed_error=50ms` or
/// `ntp://host:port,host:port?samples=4&timeout=1s&…` (see [`TimeConfig`]).
///
/// A URL that cannot be used is an [`Error::InvalidConfig`] (never retryable, no password in
/// its message), returned before anything is connected to. For NTP this performs the first sync
/// (so it fails if no server answers) and starts the background re-sync.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> sync_time::Result<()> {
/// let time = sync_time::open("local?assumed_error=20ms").await?;
/// assert_eq!(time.status().backend, "local");
/// assert!(sync_time::open("redis://x").await.is_err());
/// # Ok(())
/// # }
/// ```
pub async fn open(url: &str) -> Result<Arc<dyn Time>> {
    connect(&url.parse()?).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_urls() {
        let c: TimeConfig = "local".parse().unwrap();
        assert_eq!(c, TimeConfig::Local(LocalOptions::default()));
        let c: TimeConfig = "local?assumed_error=20ms".parse().unwrap();
        assert_eq!(
            c,
            TimeConfig::Local(LocalOptions::new().with_assumed_error(Duration::from_millis(20)))
        );
        let c: TimeConfig = "ntp://a:123,b,[::1]:1234?samples=2&timeout=250ms&interval=0s"
            .parse()
            .unwrap();
        let TimeConfig::Ntp(o) = c else {
            panic!("expected ntp")
        };
        assert_eq!(o.servers, ["a:123", "b", "[::1]:1234"]);
        assert_eq!(o.samples, 2);
        assert_eq!(o.query_timeout, Duration::from_millis(250));
        assert_eq!(o.resync_interval, Duration::ZERO);
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for (url, needle) in [
            ("etcd://x", "unknown time backend"),
            ("ntp://", "no NTP servers"),
            ("ntp://a?samples=0", "samples"),
            ("ntp://a?speed=9", "unknown parameter `speed`"),
            ("ntp://a?timeout=soon", "timeout"),
            ("local?x", "no `=value`"),
        ] {
            let err = url.parse::<TimeConfig>().unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{url}: {err}");
            assert!(err.to_string().contains(needle), "{url}: {err}");
        }
    }

    #[tokio::test]
    async fn open_builds_the_local_backend() {
        let time = open("local").await.unwrap();
        assert_eq!(time.status().backend, "local");
        let time = open(" local://?assumed_error=20ms ").await.unwrap();
        let b = time.now_bounds().unwrap();
        assert_eq!(b.error(), Duration::from_millis(20));
    }

    #[tokio::test]
    async fn open_refuses_bad_urls_with_a_typed_error_and_no_password() {
        for (url, needle) in [
            ("", "unknown time backend"),
            ("redis://x", "unknown time backend"),
            ("etcd://127.0.0.1:2379", "not time"),
            ("etcds://u:s3cret@h:1?password=other", "not time"),
            ("localhost", "unknown time backend"),
            ("local://somewhere", "unknown time backend"),
            ("ntpx://a", "unknown time backend"),
            ("local?assumed_error=forever", "assumed_error"),
            ("local?assumed_error=20ms&x=1", "unknown parameter `x`"),
            (
                "ntp://a?password=s3cret&speed=1",
                "unknown parameter `password`",
            ),
            ("ntp://u:s3cret@a?samples=x", "whole number"),
            ("ntp://a?retry=1000000000000000000000s", "retry"),
        ] {
            let err = open(url).await.unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{url}: {err:?}");
            assert!(!err.is_retryable(), "{url}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(needle), "{url}: {msg}");
            assert!(
                !msg.contains("s3cret") && !msg.contains("other"),
                "{url}: {msg}"
            );
        }
    }

    #[cfg(not(feature = "ntp"))]
    #[tokio::test]
    async fn open_names_the_missing_ntp_feature() {
        let err = open("ntp://127.0.0.1:1").await.unwrap_err();
        assert!(err.to_string().contains("feature `ntp`"), "{err}");
    }
}
