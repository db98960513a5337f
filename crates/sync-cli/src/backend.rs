//! From `--url` and the TLS and credential flags to a backend of each primitive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sync_core::backend::Backend;
use sync_core::etcd::EtcdConfig;
use sync_etcd::{EtcdConnection, Session};

use crate::exit::Failure;

/// The connection flags every backend command shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Connect {
    /// Backend URL: `local` (this process only: useful for tests) or
    /// `etcd://[user[:password]@]host:port[,host:port…][/prefix][?ttl=10s&…]` (`etcds://` for TLS).
    #[arg(long, env = "SYNC_URL", global = true, hide_env_values = true)]
    pub(crate) url: Option<String>,
    /// CA certificate (PEM) that signed etcd's certificates; turns TLS on.
    #[arg(long, env = "SYNC_CA", global = true, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// Client certificate (PEM), with --key.
    #[arg(
        long,
        env = "SYNC_CERT",
        global = true,
        value_name = "FILE",
        requires = "key"
    )]
    pub(crate) cert: Option<PathBuf>,
    /// Client private key (PEM), with --cert.
    #[arg(
        long,
        env = "SYNC_KEY",
        global = true,
        value_name = "FILE",
        requires = "cert"
    )]
    pub(crate) key: Option<PathBuf>,
    /// The name to expect in etcd's certificates, if not the endpoint's host.
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) domain: Option<String>,
    /// etcd user (overrides one in the URL).
    #[arg(long, env = "SYNC_USER", global = true)]
    pub(crate) user: Option<String>,
    /// etcd password (prefer the environment variable: a flag shows in `ps`).
    #[arg(long, env = "SYNC_PASSWORD", global = true, hide_env_values = true)]
    pub(crate) password: Option<String>,
    /// Time allowed to connect to etcd, e.g. `5s`.
    #[arg(long, global = true, value_name = "D", value_parser = parse_duration)]
    pub(crate) connect_timeout: Option<Duration>,
}

/// A duration such as `500ms`, `3s` or `1m`, for clap.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    sync_core::duration::parse_duration(s).map_err(|e| e.to_string())
}

/// The backend chosen, with the flags applied.
pub(crate) enum Chosen {
    Local,
    Etcd(Box<EtcdConfig>),
}

impl Connect {
    /// Parses `--url` and applies the other flags; no I/O.
    pub(crate) fn choose(&self) -> Result<Chosen, Failure> {
        let url = self.url.as_deref().ok_or_else(|| {
            Failure::usage(
                "no backend: pass --url etcd://host:port/prefix (or set SYNC_URL); `--url local` \
                 coordinates nothing beyond this one syncctl process",
            )
        })?;
        let backend = Backend::from_url(url).map_err(|e| Failure::usage(e.to_string()))?;
        match backend {
            Backend::Local => {
                if self.ca.is_some() || self.cert.is_some() || self.user.is_some() {
                    return Err(Failure::usage(
                        "TLS and credential flags only apply to an etcd:// URL",
                    ));
                }
                Ok(Chosen::Local)
            }
            Backend::Etcd(cfg) => {
                let mut cfg = *cfg;
                if self.ca.is_some() || self.cert.is_some() || self.domain.is_some() {
                    let mut tls = cfg.tls.take().unwrap_or_default();
                    if let Some(ca) = &self.ca {
                        tls.ca = Some(ca.clone());
                    }
                    if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                        tls = tls.with_client_cert(cert, key);
                    }
                    if let Some(d) = &self.domain {
                        tls = tls.with_domain(d);
                    }
                    cfg = cfg.with_tls(tls);
                }
                if let Some(u) = &self.user {
                    cfg.user = Some(u.clone());
                }
                if let Some(p) = &self.password {
                    if cfg.user.is_none() {
                        return Err(Failure::usage(
                            "--password needs a user (--user or user@ in the URL)",
                        ));
                    }
                    cfg.password = Some(p.clone());
                }
                if let Some(t) = self.connect_timeout {
                    cfg = cfg.with_connect_timeout(t);
                }
                cfg.validate().map_err(|e| Failure::usage(e.to_string()))?;
                Ok(Chosen::Etcd(Box::new(cfg)))
            }
            #[allow(unreachable_patterns)]
            other => Err(Failure::usage(format!(
                "the {} backend is not supported by syncctl",
                other.name()
            ))),
        }
    }

    /// Connects to etcd and starts the session every key of this run is bound to, with `ttl`
    /// (or the URL's). `Ok(None)` for `local`.
    pub(crate) async fn session(&self, ttl: Option<Duration>) -> Result<Option<Opened>, Failure> {
        if let Some(ttl) = ttl {
            sync_core::duration::validate_ttl(ttl)
                .map_err(|e| Failure::usage(format!("--ttl: {e}")))?;
        }
        let cfg = match self.choose()? {
            Chosen::Local => return Ok(None),
            Chosen::Etcd(cfg) => cfg,
        };
        let ttl = ttl.unwrap_or(cfg.ttl);
        let connection = EtcdConnection::connect(*cfg).await.map_err(etcd_failure)?;
        let session = connection.session(ttl).await.map_err(etcd_failure)?;
        Ok(Some(Opened {
            connection,
            session,
        }))
    }

    pub(crate) async fn lock(
        &self,
        ttl: Option<Duration>,
    ) -> Result<(Arc<dyn sync_lock::Lock>, Closer), Failure> {
        Ok(match self.session(ttl).await? {
            None => (Arc::new(sync_lock::LocalLock::new()), Closer(None)),
            Some(o) => (
                Arc::new(sync_lock::EtcdLock::new(o.connection.clone()).with_session(&o.session)),
                Closer(Some(o.session)),
            ),
        })
    }

    pub(crate) async fn semaphore(
        &self,
        ttl: Option<Duration>,
    ) -> Result<(Arc<dyn sync_lock::Semaphore>, Closer), Failure> {
        Ok(match self.session(ttl).await? {
            None => (Arc::new(sync_lock::LocalSemaphore::new()), Closer(None)),
            Some(o) => (
                Arc::new(
                    sync_lock::EtcdSemaphore::new(o.connection.clone()).with_session(&o.session),
                ),
                Closer(Some(o.session)),
            ),
        })
    }

    pub(crate) async fn rwlock(
        &self,
        ttl: Option<Duration>,
    ) -> Result<(Arc<dyn sync_lock::RwLock>, Closer), Failure> {
        Ok(match self.session(ttl).await? {
            None => (Arc::new(sync_lock::LocalRwLock::new()), Closer(None)),
            Some(o) => (
                Arc::new(sync_lock::EtcdRwLock::new(o.connection.clone()).with_session(&o.session)),
                Closer(Some(o.session)),
            ),
        })
    }

    pub(crate) async fn leader(
        &self,
        ttl: Option<Duration>,
    ) -> Result<(Arc<dyn sync_leader::Leader>, Closer), Failure> {
        Ok(match self.session(ttl).await? {
            None => (Arc::new(sync_leader::LocalLeader::new()), Closer(None)),
            Some(o) => (
                Arc::new(
                    sync_leader::EtcdLeader::new(o.connection.clone()).with_session(&o.session),
                ),
                Closer(Some(o.session)),
            ),
        })
    }
}

/// An etcd connection and the session of this run.
pub(crate) struct Opened {
    connection: EtcdConnection,
    session: Session,
}

/// Ends the run's session: revokes its lease, which deletes every key of ours that is left (a
/// place in a queue given up by `--wait` or a signal, a hold whose release failed). Without it
/// such a key would stay until the lease expired, as the library cleans up dropped waits in
/// background tasks that a process about to exit does not run.
pub(crate) struct Closer(Option<Session>);

impl Closer {
    pub(crate) async fn close(self) {
        if let Some(s) = self.0 {
            // Lost or unreachable: the lease expires by itself.
            let _ = s.close().await;
        }
    }
}

fn etcd_failure(e: sync_etcd::Error) -> Failure {
    use sync_etcd::Error as E;
    let code = match &e {
        E::InvalidConfig(_) => crate::exit::USAGE,
        _ => crate::exit::UNAVAILABLE,
    };
    Failure::new(code, format!("etcd: {}", crate::exit::full_message(&e)))
}
