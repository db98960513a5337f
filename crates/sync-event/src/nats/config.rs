//! [`NatsConfig`]: how to reach the NATS cluster and how topics are laid out on it.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use sync_core::backend::redact_url;
use sync_core::duration::parse_duration;
use sync_core::endpoint::{parse_host_port, percent_decode};

/// How to reach NATS (JetStream), built in code, deserialized (every field has a default) or
/// parsed from `nats://[user:password@]host:port[,host:port…][/prefix][?replicas=3&connect_timeout=5s&request_timeout=5s]`.
/// Each further server may repeat the scheme (`nats://h1:4222,nats://h2:4222`, the form of a
/// list of server URLs such as `SYNC_NATS_URLS`); user and password come once, before the first
/// server.
///
/// ```
/// # use std::time::Duration;
/// use sync_event::NatsConfig;
/// let cfg: NatsConfig = "nats://127.0.0.1:4222,127.0.0.1:4223/myapp?replicas=1".parse().unwrap();
/// assert_eq!(cfg.urls, ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]);
/// assert_eq!(cfg.prefix, "myapp");
/// assert_eq!(cfg.replicas, 1);
/// ```
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsConfig {
    /// `nats://host:port` of the servers; at least one (the client learns the others).
    pub urls: Vec<String>,
    /// Namespace of every stream and consumer we create, so applications sharing a cluster
    /// never meet: ASCII letters, digits, `-`. Default `sync`.
    pub prefix: String,
    /// Replicas of each topic's stream and each group's consumer. Default 3 (a 3-node cluster
    /// survives one node's loss); 1 for a single server.
    pub replicas: usize,
    /// User name, if the servers require one.
    pub user: Option<String>,
    /// Password for `user`. Hidden from `Debug`.
    pub password: Option<String>,
    /// Time allowed to connect. Default 5 s.
    #[serde(with = "sync_core::duration::serde")]
    pub connect_timeout: Duration,
    /// Time allowed for one request (a publish acknowledgement, a stream lookup) including
    /// retries across a server's failover. Default 10 s.
    #[serde(with = "sync_core::duration::serde")]
    pub request_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".into()],
            prefix: "sync".into(),
            replicas: 3,
            user: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("urls", &self.urls)
            .field("prefix", &self.prefix)
            .field("replicas", &self.replicas)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl NatsConfig {
    /// The servers at `urls` (`nats://host:port` or `host:port`), other settings default.
    pub fn new<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        NatsConfig {
            urls: urls.into_iter().map(|u| with_scheme(u.into())).collect(),
            ..NatsConfig::default()
        }
    }

    /// Sets the namespace of streams and consumers.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the replicas of streams and durable consumers.
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Sets user and password.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Checks the settings: at least one URL, a prefix of letters, digits and `-`, 1 to 5
    /// replicas, non-zero timeouts.
    pub fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("no NATS server URL; give at least one nats://host:port".into());
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 32
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "prefix {:?} must be 1 to 32 ASCII letters, digits or `-`",
                self.prefix
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(format!(
                "replicas = {}: JetStream allows 1 to 5",
                self.replicas
            ));
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err("connect_timeout and request_timeout must be above zero".into());
        }
        Ok(())
    }

    /// Parses a `nats://` URL (see the type's docs). Nothing is connected to.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let err = |reason: &str| format!("cannot use NATS URL {:?}: {reason}", redact_url(url));
        let rest = url
            .strip_prefix("nats://")
            .ok_or_else(|| err("it must start with nats://"))?;
        // `nats://a:1,nats://b:2` lists the same servers as `nats://a:1,b:2`.
        let rest = &rest.replace(",nats://", ",");
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, _)) if u.contains(',') => {
                return Err(err(
                    "user and password go once, before the first server (nats://user:pw@h1:4222,h2:4222)",
                ))
            }
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut cfg = NatsConfig {
            urls: Vec::new(),
            ..NatsConfig::default()
        };
        // The same endpoint and %-escape rules as every backend URL (sync_core::endpoint).
        for host in hosts.split(',') {
            let (h, port) = parse_host_port(host, None)
                .map_err(|why| err(&format!("server {host:?}: {why}")))?;
            cfg.urls.push(format!("nats://{h}:{port}"));
        }
        let decode = |what: &str, v: &str| {
            percent_decode(v).map_err(|why| err(&format!("the {what} is not valid: {why}")))
        };
        if let Some(u) = userinfo {
            let (user, password) = u.split_once(':').unwrap_or((u, ""));
            cfg.user = Some(decode("user", user)?);
            cfg.password = (!password.is_empty())
                .then(|| decode("password", password))
                .transpose()?;
        }
        if !path.is_empty() {
            cfg.prefix = decode("prefix", path.trim_end_matches('/'))?;
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = &decode(&format!("value of {k}"), v)?;
            let duration = || parse_duration(v).map_err(|e| err(&format!("{k}: {e}")));
            match k {
                "replicas" => {
                    cfg.replicas = v
                        .parse()
                        .map_err(|_| err(&format!("replicas={v:?} is not a number")))?
                }
                "connect_timeout" => cfg.connect_timeout = duration()?,
                "request_timeout" => cfg.request_timeout = duration()?,
                "password" => cfg.password = Some(v.to_string()),
                "user" => cfg.user = Some(v.to_string()),
                other => {
                    return Err(err(&format!(
                        "unknown parameter {other:?}; known: replicas, connect_timeout, request_timeout, user, password"
                    )))
                }
            }
        }
        cfg.validate().map_err(|e| err(&e))?;
        Ok(cfg)
    }
}

impl std::str::FromStr for NatsConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        NatsConfig::from_url(s)
    }
}

fn with_scheme(url: String) -> String {
    if url.contains("://") {
        url
    } else {
        format!("nats://{url}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_url() {
        let c = NatsConfig::from_url("nats://u:pw@h1:1,h2:2/app?replicas=1&request_timeout=3s")
            .unwrap();
        assert_eq!(c.urls, ["nats://h1:1", "nats://h2:2"]);
        assert_eq!(c.prefix, "app");
        assert_eq!(c.replicas, 1);
        assert_eq!(c.user.as_deref(), Some("u"));
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert!(!format!("{c:?}").contains("pw"));
        assert!(NatsConfig::from_url("nats://h1/app").is_err());
        assert!(NatsConfig::from_url("nats://h1:1/a.b").is_err());
        assert!(NatsConfig::from_url("nats://h1:1?replicas=9").is_err());
        assert!(NatsConfig::from_url("nats://h1:1?x=1").is_err());
        // The shared endpoint and %-escape rules: escapes decode, IPv6 in brackets, no port 0.
        let c = NatsConfig::from_url("nats://u%40x:p%3Aw@[::1]:4222/app").unwrap();
        assert_eq!(c.urls, ["nats://[::1]:4222"]);
        assert_eq!(
            (c.user.as_deref(), c.password.as_deref()),
            (Some("u@x"), Some("p:w"))
        );
        // A list of server URLs, each with its scheme (as SYNC_NATS_URLS gives them).
        let c = NatsConfig::from_url("nats://127.0.0.1:4222,nats://127.0.0.1:4223/app").unwrap();
        assert_eq!(c.urls, ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]);
        assert_eq!(c.prefix, "app");
        let e = NatsConfig::from_url("nats://u:p@h1:1,nats://u:p@h2:2").unwrap_err();
        assert!(e.contains("once, before the first server"), "{e}");
        assert!(!e.contains(":p@"), "the password is not shown: {e}");
        let e = NatsConfig::from_url("nats://h1").unwrap_err();
        assert!(e.contains("4222"), "the example is a NATS port: {e}");
        for bad in [
            "nats://h1:0",
            "nats://h1:1,https://h2:2",
            "nats://h 1:1",
            "nats://h1:1?request_timeout=%zz",
            "nats://u:%4@h1:1",
        ] {
            assert!(NatsConfig::from_url(bad).is_err(), "{bad} accepted");
        }
    }
}
