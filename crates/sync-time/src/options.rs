//! Options of each backend, and the configuration that picks one (its URL form is in `url.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Options of the `local` backend ([`LocalTime`](crate::LocalTime)).
///
/// ```
/// use std::time::Duration;
/// use sync_time::{LocalOptions, LocalTime};
///
/// let time = LocalTime::with_options(LocalOptions::new().with_assumed_error(Duration::from_millis(20)));
/// # let _ = time;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LocalOptions {
    /// How far the system clock is assumed to be from true time at most (default 100 ms).
    ///
    /// The local backend cannot measure this: it is an assumption about whatever keeps the
    /// system clock in time (chronyd, ntpd, systemd-timesyncd). Its bounds are only as true as
    /// this number.
    #[serde(with = "sync_core::duration::serde")]
    pub assumed_error: Duration,
}

impl LocalOptions {
    /// The default assumed error of the system clock: 100 ms.
    pub const DEFAULT_ASSUMED_ERROR: Duration = Duration::from_millis(100);

    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`assumed_error`](Self::assumed_error).
    pub fn with_assumed_error(mut self, error: Duration) -> Self {
        self.assumed_error = error;
        self
    }
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            assumed_error: Self::DEFAULT_ASSUMED_ERROR,
        }
    }
}

/// Options of the `ntp` backend (`NtpTime`, feature `ntp`).
///
/// The error bound of a sync is, per server, from its minimum-delay sample:
///
/// `ε = δ/2 + root_delay/2 + root_dispersion + φ·(time since the sync started) + 2 µs`
///
/// where `δ` is the round trip, `φ` is [`max_drift_ppm`](Self::max_drift_ppm) and 2 µs covers
/// the microsecond resolution of the timestamps. The bounds are the interval that a majority
/// of the configured servers agree on (or [`min_agreeing`](Self::min_agreeing) of them), and
/// afterwards widen by `φ` × the time since the sync. A server listed twice (or two names for
/// one address) counts once.
///
/// ```
/// use std::time::Duration;
/// use sync_time::NtpOptions;
///
/// let opts = NtpOptions::new(["time1.example:123", "time2.example:123", "time3.example"])
///     .with_samples(4)
///     .with_query_timeout(Duration::from_millis(500))
///     .with_resync_interval(Duration::from_secs(64))
///     .with_max_drift_ppm(200);
/// assert_eq!(opts.servers.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NtpOptions {
    /// Servers as `host:port` (`host` alone means port 123; IPv6 as `[addr]:port`). They are
    /// resolved at every sync, by this crate.
    pub servers: Vec<String>,
    /// Queries per server per sync; the one with the smallest round trip is kept (default 4).
    pub samples: u32,
    /// Timeout of each query and each name lookup (default 1 s).
    #[serde(with = "sync_core::duration::serde")]
    pub query_timeout: Duration,
    /// How often the background task re-syncs (default 64 s; zero turns the background task
    /// off, leaving syncs to explicit [`Time::sync`](crate::Time::sync) calls).
    #[serde(with = "sync_core::duration::serde")]
    pub resync_interval: Duration,
    /// How soon the background task retries after a failed sync (default 5 s).
    #[serde(with = "sync_core::duration::serde")]
    pub retry_interval: Duration,
    /// The most the local monotonic clock is assumed to drift from true time, in parts per
    /// million (default 500, the usual bound for a quartz oscillator; the kernel's slewing adds
    /// at most 500 ppm more if the system clock is being disciplined).
    pub max_drift_ppm: u32,
    /// After how long without a successful sync the status turns
    /// [`Stale`](crate::SyncState::Stale) (default 5 min). Time is still served.
    #[serde(with = "sync_core::duration::serde")]
    pub stale_after: Duration,
    /// How many servers must agree before their time is believed (default `None`: a majority
    /// of the distinct configured servers, so 2 of 3, 3 of 4 or 5). Silent, refusing and
    /// outvoted servers do not count, so with the default one liar that alone answers is
    /// never believed. A smaller number keeps time available when most servers are down, at
    /// the cost of trusting fewer: [`Status::verification`](crate::Status::verification) then
    /// says the bound rests on fewer servers than a majority, or on one alone.
    ///
    /// Whatever this says, an agreement also needs a majority of the servers that answered.
    pub min_agreeing: Option<u32>,
}

impl NtpOptions {
    /// The defaults, with these servers.
    pub fn new<I, S>(servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            servers: servers.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Sets [`servers`](Self::servers).
    pub fn with_servers<I, S>(mut self, servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.servers = servers.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`samples`](Self::samples).
    pub fn with_samples(mut self, samples: u32) -> Self {
        self.samples = samples;
        self
    }

    /// Sets [`query_timeout`](Self::query_timeout).
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Sets [`resync_interval`](Self::resync_interval) (zero: no background re-sync).
    pub fn with_resync_interval(mut self, interval: Duration) -> Self {
        self.resync_interval = interval;
        self
    }

    /// Sets [`retry_interval`](Self::retry_interval).
    pub fn with_retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// Sets [`max_drift_ppm`](Self::max_drift_ppm).
    pub fn with_max_drift_ppm(mut self, ppm: u32) -> Self {
        self.max_drift_ppm = ppm;
        self
    }

    /// Sets [`stale_after`](Self::stale_after).
    pub fn with_stale_after(mut self, d: Duration) -> Self {
        self.stale_after = d;
        self
    }

    /// Sets [`min_agreeing`](Self::min_agreeing): how many servers must agree (at least 1, at
    /// most the number of distinct servers).
    ///
    /// ```
    /// use sync_time::NtpOptions;
    ///
    /// // Three servers: by default two must agree; accept one alone when two are down.
    /// let opts = NtpOptions::new(["a:123", "b:123", "c:123"]).with_min_agreeing(1);
    /// assert_eq!(opts.min_agreeing, Some(1));
    /// assert_eq!(opts.required_agreeing(), 1);
    /// assert_eq!(NtpOptions::new(["a", "b", "c", "a:123"]).required_agreeing(), 2);
    /// ```
    pub fn with_min_agreeing(mut self, n: u32) -> Self {
        self.min_agreeing = Some(n);
        self
    }

    /// The servers, each once: duplicates (the same `host:port` after trimming, lower-casing
    /// and adding the default port) are dropped, the first spelling is kept.
    pub fn distinct_servers(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.servers
            .iter()
            .filter(|s| seen.insert(Self::with_default_port(s).to_ascii_lowercase()))
            .map(|s| s.trim().to_owned())
            .collect()
    }

    /// How many servers must agree: [`min_agreeing`](Self::min_agreeing), or else a majority
    /// of the [distinct](Self::distinct_servers) servers.
    pub fn required_agreeing(&self) -> usize {
        let configured = self.distinct_servers().len();
        match self.min_agreeing {
            Some(n) => n as usize,
            None => configured / 2 + 1,
        }
    }

    /// Checks that these options can work.
    pub fn validate(&self) -> Result<()> {
        if self.servers.is_empty() {
            return Err(Error::config(
                "no NTP servers configured; give at least one `host:port` (three or more let \
                 false tickers be outvoted)",
            ));
        }
        if let Some(bad) = self.servers.iter().find(|s| s.trim().is_empty()) {
            return Err(Error::config(format!(
                "empty NTP server name {bad:?} in the server list"
            )));
        }
        if self.samples == 0 {
            return Err(Error::config("`samples` must be at least 1"));
        }
        if let Some(n) = self.min_agreeing {
            let distinct = self.distinct_servers().len();
            if n == 0 || n as usize > distinct {
                return Err(Error::config(format!(
                    "`min_agreeing` of {n} is impossible with {distinct} distinct server(s): \
                     it must be between 1 and the number of servers"
                )));
            }
        }
        if self.query_timeout.is_zero() {
            return Err(Error::config("`query_timeout` must be more than zero"));
        }
        if self.max_drift_ppm >= 1_000_000 {
            return Err(Error::config(format!(
                "`max_drift_ppm` of {} is not a drift rate (it must be below 1000000)",
                self.max_drift_ppm
            )));
        }
        if !self.resync_interval.is_zero() && self.retry_interval.is_zero() {
            return Err(Error::config(
                "`retry_interval` must be more than zero when background re-sync is on",
            ));
        }
        Ok(())
    }

    /// The server as a `host:port` string that a resolver accepts: port 123 is added when
    /// missing.
    pub(crate) fn with_default_port(server: &str) -> String {
        let s = server.trim();
        if s.parse::<std::net::SocketAddr>().is_ok() {
            return s.to_owned();
        }
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            return std::net::SocketAddr::new(ip, 123).to_string();
        }
        if (s.starts_with('[') && s.ends_with(']')) || !s.contains(':') {
            return format!("{s}:123");
        }
        s.to_owned()
    }
}

impl Default for NtpOptions {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            samples: 4,
            query_timeout: Duration::from_secs(1),
            resync_interval: Duration::from_secs(64),
            retry_interval: Duration::from_secs(5),
            max_drift_ppm: 500,
            stale_after: Duration::from_secs(300),
            min_agreeing: None,
        }
    }
}

/// A backend chosen by configuration: deserialized (`{"backend": "ntp", "servers": [...]}`) or
/// parsed from a URL.
///
/// URLs: `local`, `local?assumed_error=50ms`,
/// `ntp://host1:123,host2:123,host3?samples=4&timeout=1s&interval=64s&retry=5s&drift_ppm=500&stale_after=5m&min_agreeing=2`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> sync_time::Result<()> {
/// use sync_time::{Time, TimeConfig};
///
/// let config: TimeConfig = "local?assumed_error=20ms".parse()?;
/// let time = sync_time::connect(&config).await?; // Arc<dyn Time>
/// assert_eq!(time.status().backend, "local");
///
/// let config: TimeConfig = serde_json::from_str(r#"{"backend": "ntp", "servers": ["127.0.0.1:123"], "query_timeout": "500ms"}"#).unwrap();
/// assert!(matches!(config, TimeConfig::Ntp(_)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
#[non_exhaustive]
pub enum TimeConfig {
    /// The system clock.
    Local(LocalOptions),
    /// NTP servers (needs feature `ntp` to connect).
    Ntp(NtpOptions),
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig::Local(LocalOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_fields() {
        let c: TimeConfig =
            serde_json::from_str(r#"{"backend":"ntp","servers":["a:1"],"query_timeout":"2s"}"#)
                .unwrap();
        let TimeConfig::Ntp(o) = c else {
            panic!("expected ntp")
        };
        assert_eq!(o.query_timeout, Duration::from_secs(2));
        assert_eq!(o.samples, NtpOptions::default().samples);
        assert!(
            serde_json::from_str::<TimeConfig>(r#"{"backend":"ntp","sever":["a:1"]}"#).is_err()
        );
        let c: TimeConfig = serde_json::from_str(r#"{"backend":"local"}"#).unwrap();
        assert_eq!(c, TimeConfig::default());
    }

    #[test]
    fn duplicates_count_once_and_min_agreeing_is_checked() {
        let o = NtpOptions::new(["a", "A:123", " a:123 ", "b:9", "127.0.0.1", "127.0.0.1:123"]);
        assert_eq!(o.distinct_servers(), ["a", "b:9", "127.0.0.1"]);
        assert_eq!(o.required_agreeing(), 2);
        assert_eq!(NtpOptions::new(["a"]).required_agreeing(), 1);
        assert_eq!(NtpOptions::new(["a", "b"]).required_agreeing(), 2);
        assert_eq!(NtpOptions::new(["a", "b", "c", "d"]).required_agreeing(), 3);
        for (n, ok) in [(0, false), (1, true), (3, true), (4, false)] {
            let r = o.clone().with_min_agreeing(n).validate();
            assert_eq!(r.is_ok(), ok, "min_agreeing {n}: {r:?}");
        }
        let c: TimeConfig = "ntp://a,b,c?min_agreeing=1".parse().unwrap();
        assert!(matches!(c, TimeConfig::Ntp(o) if o.min_agreeing == Some(1)));
        assert!("ntp://a,b?min_agreeing=3".parse::<TimeConfig>().is_err());
    }

    #[test]
    fn adds_the_default_port() {
        assert_eq!(NtpOptions::with_default_port("a.example"), "a.example:123");
        assert_eq!(NtpOptions::with_default_port("a.example:9"), "a.example:9");
        assert_eq!(NtpOptions::with_default_port("127.0.0.1"), "127.0.0.1:123");
        assert_eq!(NtpOptions::with_default_port("::1"), "[::1]:123");
        assert_eq!(NtpOptions::with_default_port("[::1]"), "[::1]:123");
        assert_eq!(NtpOptions::with_default_port("[::1]:5"), "[::1]:5");
    }
}
