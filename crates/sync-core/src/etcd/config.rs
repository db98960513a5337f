use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::endpoint::{parse_host_port, percent_decode};

/// The port of a URL host given without one.
pub(crate) const DEFAULT_PORT: u16 = 2379;
use super::ConfigError as Error;
use crate::backend::redact_url;
use crate::duration::{parse_duration, validate_timeout, validate_ttl};

/// How to reach etcd, and how the primitives use it.
///
/// Build it in code, deserialize it (every field has a default), or parse a URL:
/// `etcd://[user:password@]host:port[,host:port…][/prefix][?ttl=10s&connect_timeout=5s&request_timeout=5s&ca=…&cert=…&key=…]`
/// (`etcds://` turns TLS on; TLS needs the `ca` that signed the servers' certificates).
///
/// ```
/// use std::time::Duration;
/// use sync_core::etcd::EtcdConfig;
///
/// let cfg: EtcdConfig = "etcd://127.0.0.1:2379,127.0.0.1:22379/myapp?ttl=10s".parse().unwrap();
/// assert_eq!(cfg.endpoints, ["127.0.0.1:2379", "127.0.0.1:22379"]);
/// assert_eq!(cfg.prefix, "myapp");
/// assert_eq!(cfg.ttl, Duration::from_secs(10));
///
/// let same = EtcdConfig::new(["127.0.0.1:2379", "127.0.0.1:22379"])
///     .with_prefix("myapp")
///     .with_ttl(Duration::from_secs(10));
/// assert_eq!(format!("{same:?}"), format!("{cfg:?}"));
/// ```
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// `host:port` (or `http://host:port`) of the members; at least one.
    pub endpoints: Vec<String>,
    /// Namespace for every key we write, so applications sharing a cluster never meet.
    /// Default `sync`.
    pub prefix: String,
    /// TLS settings; `None` for plain TCP.
    pub tls: Option<TlsConfig>,
    /// User name for etcd's authentication.
    pub user: Option<String>,
    /// Password for `user`. Hidden from `Debug`.
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// Time allowed to establish the connection. Default 5 s.
    #[serde(with = "crate::duration::serde")]
    pub connect_timeout: Duration,
    /// Time allowed for one request before it is retried or fails. Default 5 s.
    #[serde(with = "crate::duration::serde")]
    pub request_timeout: Duration,
    /// Default lease TTL of locks, candidacies and job claims. Default 10 s. etcd may raise it to
    /// its minimum; the granted TTL is what counts and is reported.
    #[serde(with = "crate::duration::serde")]
    pub ttl: Duration,
}

/// TLS settings: the CA that signed the servers' certificates and, for client authentication,
/// our certificate and key. Files in PEM format.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// CA certificate file (required when TLS is on).
    pub ca: Option<PathBuf>,
    /// Client certificate file (with `key`).
    pub cert: Option<PathBuf>,
    /// Client private key file (with `cert`).
    pub key: Option<PathBuf>,
    /// The name to expect in the servers' certificates, if it is not the endpoint's host.
    pub domain: Option<String>,
}

impl TlsConfig {
    /// TLS trusting the CA in `ca`.
    pub fn with_ca(ca: impl Into<PathBuf>) -> Self {
        TlsConfig {
            ca: Some(ca.into()),
            ..Default::default()
        }
    }

    /// Adds a client certificate and key.
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Sets the expected server name.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".to_owned()],
            prefix: "sync".to_owned(),
            tls: None,
            user: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            ttl: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl EtcdConfig {
    /// A config for these endpoints with every other setting at its default.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Sets the key prefix (namespace).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the default lease TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets user and password.
    pub fn with_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// Sets TLS.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the per-request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Checks the settings; `sync_etcd::EtcdClient::connect` calls it, and
    /// so does [`from_url`](Self::from_url). Every endpoint must be `host:port` (optionally
    /// `http://host:port`) with a DNS name, an IPv4 address or a bracketed IPv6 address and a
    /// port from 1 to 65535; the TTL must lie within
    /// [`validate_ttl`](crate::duration::validate_ttl)'s range (1 s to etcd's 9,000,000,000 s),
    /// the timeouts above zero and at most [`MAX_TIMEOUT`](crate::duration::MAX_TIMEOUT)
    /// (1 hour). A failure is [`ConfigError`](super::ConfigError), which is never retryable.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sync_core::etcd::EtcdConfig;
    /// assert!(EtcdConfig::new(Vec::<String>::new()).validate().is_err());
    /// assert!(EtcdConfig::default().with_ttl(Duration::ZERO).validate().is_err());
    /// assert!(EtcdConfig::default().with_ttl(Duration::MAX).validate().is_err());
    /// assert!(EtcdConfig::new(["127.0.0.1:99999"]).validate().is_err());
    /// assert!(EtcdConfig::new(["[::1]:2379", "http://etcd-0.local:2379"]).validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error(m));
        if self.endpoints.is_empty() {
            return bad("no endpoints; give at least one host:port".into());
        }
        for e in &self.endpoints {
            if let Err(why) = parse_host_port(strip_scheme(e), None) {
                return bad(format!("endpoint {e:?}: {why}"));
            }
        }
        if self.prefix.as_bytes().contains(&0) {
            return bad("the key prefix contains a NUL character".into());
        }
        validate_ttl(self.ttl).map_err(Error)?;
        validate_timeout("connect_timeout", self.connect_timeout).map_err(Error)?;
        validate_timeout("request_timeout", self.request_timeout).map_err(Error)?;
        if self.user.as_deref() == Some("") {
            return bad("the user name is empty; give a user or no credentials at all".into());
        }
        if self.password.is_some() && self.user.is_none() {
            return bad("a password is set without a user".into());
        }
        if let Some(tls) = &self.tls {
            if tls.ca.is_none() {
                return bad(
                    "TLS needs the CA file that signed the servers' certificates (`ca`)".into(),
                );
            }
            if tls.cert.is_some() != tls.key.is_some() {
                return bad("TLS needs both a client certificate and its key, or neither".into());
            }
            for (what, path) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
                if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                    return bad(format!("the TLS `{what}` file name is empty"));
                }
            }
        }
        Ok(())
    }

    /// The endpoints as URLs with the scheme that matches the TLS setting.
    pub fn endpoint_urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|e| format!("{scheme}://{}", strip_scheme(e)))
            .collect()
    }

    /// The endpoints joined for messages.
    pub fn endpoints_display(&self) -> String {
        self.endpoints.join(",")
    }

    /// The prefix normalised: without trailing slashes.
    pub fn normalized_prefix(&self) -> &str {
        self.prefix.trim_end_matches('/')
    }

    /// Parses a URL; see the type's documentation for the format. A host without a port gets
    /// 2379. Spaces and control characters must be %-escaped, and every %-escape must be valid.
    /// The result is [validated](Self::validate); any failure is [`ConfigError`](super::ConfigError),
    /// returned without touching the network.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let bad = |m: &str| Error(format!("URL {:?}: {m}", redact_url(url)));
        if let Some((at, c)) = url
            .char_indices()
            .find(|&(_, c)| c.is_whitespace() || c.is_control() || c == '#')
        {
            return Err(bad(&format!(
                "{c:?} at byte {at} must be %-escaped (a space is %20, '#' is %23)"
            )));
        }
        let (tls, rest) = if let Some(r) = url.strip_prefix("etcds://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("etcd://") {
            (false, r)
        } else {
            return Err(bad("must start with etcd:// or etcds://"));
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rest, None),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut endpoints = Vec::new();
        for h in hosts.split(',').filter(|h| !h.is_empty()) {
            let (host, port) = parse_host_port(h, Some(DEFAULT_PORT))
                .map_err(|why| bad(&format!("host {h:?}: {why}")))?;
            endpoints.push(format!("{host}:{port}"));
        }
        if endpoints.is_empty() {
            return Err(bad("no host given"));
        }
        let mut cfg = EtcdConfig {
            endpoints,
            ..Default::default()
        };
        let decode = |what: &str, v: &str| {
            percent_decode(v).map_err(|why| {
                if what.contains("password") {
                    // The reason quotes the bad escape: not for a password.
                    bad(&format!("the {what} has a bad %-escape or is not UTF-8"))
                } else {
                    bad(&format!("the {what}: {why}"))
                }
            })
        };
        if let Some(u) = userinfo {
            let (user, pass) = match u.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (u, None),
            };
            cfg.user = Some(decode("user", user)?);
            cfg.password = pass.map(|p| decode("password", p)).transpose()?;
        }
        if let Some(p) = path {
            cfg.prefix = decode("prefix", p.trim_end_matches('/'))?;
        }
        let mut tls_cfg = if tls {
            Some(TlsConfig::default())
        } else {
            None
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(&format!("query item {pair:?} is not key=value")))?;
            let v = decode(&format!("value of {k}"), v)?;
            let dur = |v: &str| parse_duration(v).map_err(|e| bad(&e.to_string()));
            match k {
                "ttl" => cfg.ttl = dur(&v)?,
                "connect_timeout" => cfg.connect_timeout = dur(&v)?,
                "request_timeout" | "timeout" => cfg.request_timeout = dur(&v)?,
                "user" => cfg.user = Some(v),
                "password" => cfg.password = Some(v),
                "prefix" => cfg.prefix = v,
                "ca" => tls_cfg.get_or_insert_with(Default::default).ca = Some(v.into()),
                "cert" => tls_cfg.get_or_insert_with(Default::default).cert = Some(v.into()),
                "key" => tls_cfg.get_or_insert_with(Default::default).key = Some(v.into()),
                "domain" => tls_cfg.get_or_insert_with(Default::default).domain = Some(v),
                other => {
                    return Err(bad(&format!(
                        "unknown parameter {other:?} (known: ttl, connect_timeout, request_timeout, user, password, prefix, ca, cert, key, domain)"
                    )))
                }
            }
        }
        cfg.tls = tls_cfg;
        cfg.validate().map_err(|Error(m)| bad(&m))?;
        Ok(cfg)
    }
}

impl FromStr for EtcdConfig {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        EtcdConfig::from_url(s)
    }
}

fn strip_scheme(e: &str) -> &str {
    e.strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .unwrap_or(e)
        .trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_everything() {
        let cfg = EtcdConfig::from_url(
            "etcds://alice:s%40cret@a:1,b:2/apps/x?ttl=3s&connect_timeout=1s&request_timeout=2s&ca=/ca.pem&cert=/c.pem&key=/k.pem",
        )
        .unwrap();
        assert_eq!(cfg.endpoints, ["a:1", "b:2"]);
        assert_eq!(cfg.prefix, "apps/x");
        assert_eq!(cfg.user.as_deref(), Some("alice"));
        assert_eq!(cfg.password.as_deref(), Some("s@cret"));
        assert_eq!(cfg.ttl, Duration::from_secs(3));
        assert_eq!(cfg.connect_timeout, Duration::from_secs(1));
        assert_eq!(cfg.request_timeout, Duration::from_secs(2));
        let tls = cfg.tls.clone().unwrap();
        assert_eq!(tls.ca.unwrap(), PathBuf::from("/ca.pem"));
        assert_eq!(cfg.endpoint_urls(), ["https://a:1", "https://b:2"]);
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("s@cret") && dbg.contains("<hidden>"), "{dbg}");
    }

    #[test]
    fn url_defaults_and_errors() {
        let cfg: EtcdConfig = "etcd://localhost".parse().unwrap();
        assert_eq!(cfg.endpoints, ["localhost:2379"]);
        assert_eq!(cfg.prefix, "sync");
        assert!(cfg.tls.is_none());
        for bad in [
            "http://a:1",
            "etcd://",
            "etcd://a:1?ttl=soon",
            "etcd://a:1?colour=red",
            "etcd://a:1?ttl=0s",
            "etcd://a:1?ttl",
            "etcd://a:1?cert=/c.pem",
        ] {
            assert!(
                EtcdConfig::from_url(bad).is_err(),
                "{bad} should be rejected"
            );
        }
        let err = EtcdConfig::from_url("etcd://u:topsecret@a:1?colour=red").unwrap_err();
        assert!(!err.to_string().contains("topsecret"), "{err}");
        for url in [
            "etcd://u:ab%zzcd@a:1",
            "etcd://u@a:1?password=ab%zzcd",
            "etcd://u:ab%ffcd@a:1",
        ] {
            let err = EtcdConfig::from_url(url).unwrap_err().to_string();
            assert!(!err.contains("ab") && !err.contains("zz"), "{err}");
        }
    }

    #[test]
    fn serde_with_defaults() {
        let cfg: EtcdConfig = serde_json::from_str(
            r#"{"endpoints":["127.0.0.1:2379"],"ttl":"4s","user":"u","password":"p"}"#,
        )
        .unwrap();
        assert_eq!(cfg.ttl, Duration::from_secs(4));
        assert_eq!(cfg.prefix, "sync");
        assert!(!format!("{cfg:?}").contains("\"p\""));
        assert!(serde_json::from_str::<EtcdConfig>(r#"{"endpoint":"x"}"#).is_err());
    }
}
