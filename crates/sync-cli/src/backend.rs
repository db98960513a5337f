//! From `--url` and the TLS and credential flags to a backend of each primitive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sync_core::backend::Backend;
use sync_core::etcd::EtcdConfig;
use sync_etcd::{EtcdConnection, Session};
use sync_event::{EventOptions, EventStream, NatsConfig};

use crate::exit::Failure;

/// The connection flags every backend command shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Connect {
    /// Backend URL: `local` (this process only: useful for tests),
    /// `etcd://[user[:password]@]host:port[,host:port…][/prefix][?ttl=10s&…]` (`etcds://` for
    /// TLS), or `nats://[user:password@]host:port[,…][/prefix][?replicas=3]` (`event` only).
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
    /// etcd or NATS user (overrides one in the URL).
    #[arg(long, env = "SYNC_USER", global = true)]
    pub(crate) user: Option<String>,
    /// etcd or NATS password (prefer the environment variable: a flag shows in `ps`).
    #[arg(long, env = "SYNC_PASSWORD", global = true, hide_env_values = true)]
    pub(crate) password: Option<String>,
    /// Time allowed to connect to etcd or NATS, e.g. `5s`.
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
    /// NATS JetStream: only `event` runs on it.
    Nats(Box<NatsConfig>),
}

impl Chosen {
    /// The etcd settings, or a usage error naming `what` for a backend that cannot serve it
    /// (NATS serves only events). `Ok(None)` for `local`.
    pub(crate) fn etcd_or_local(self, what: &str) -> Result<Option<Box<EtcdConfig>>, Failure> {
        match self {
            Chosen::Local => Ok(None),
            Chosen::Etcd(cfg) => Ok(Some(cfg)),
            Chosen::Nats(_) => Err(Failure::usage(format!(
                "a nats:// URL serves only `syncctl event`; {what} needs an etcd:// URL (or `local`)"
            ))),
        }
    }
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
        let tls_flags = self.ca.is_some() || self.cert.is_some() || self.domain.is_some();
        if sync_core::backend::scheme(url) == "nats" {
            return self.nats(url, tls_flags).map(|c| Chosen::Nats(Box::new(c)));
        }
        let backend = Backend::from_url(url).map_err(|e| Failure::usage(e.to_string()))?;
        match backend {
            Backend::Local => {
                if tls_flags || self.user.is_some() {
                    return Err(Failure::usage(
                        "TLS and credential flags only apply to an etcd:// or nats:// URL",
                    ));
                }
                Ok(Chosen::Local)
            }
            Backend::Etcd(cfg) => {
                let mut cfg = *cfg;
                if tls_flags {
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
                (cfg.user, cfg.password) =
                    self.credentials(cfg.user.take(), cfg.password.take())?;
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

    /// A `nats://` URL with the credential and timeout flags applied.
    fn nats(&self, url: &str, tls_flags: bool) -> Result<NatsConfig, Failure> {
        if tls_flags {
            return Err(Failure::usage(
                "--ca, --cert, --key and --domain apply to etcd only; syncctl connects to NATS \
                 without TLS",
            ));
        }
        let mut cfg = NatsConfig::from_url(url).map_err(Failure::usage)?;
        (cfg.user, cfg.password) = self.credentials(cfg.user.take(), cfg.password.take())?;
        if let Some(t) = self.connect_timeout {
            cfg = cfg.with_connect_timeout(t);
        }
        cfg.validate()
            .map_err(|e| Failure::usage(format!("NATS settings: {e}")))?;
        Ok(cfg)
    }

    /// The URL's user and password with `--user` and `--password` applied over them.
    fn credentials(
        &self,
        user: Option<String>,
        password: Option<String>,
    ) -> Result<(Option<String>, Option<String>), Failure> {
        let user = self.user.clone().or(user);
        let password = self.password.clone().or(password);
        if password.is_some() && user.is_none() {
            return Err(Failure::usage(
                "--password needs a user (--user or user@ in the URL)",
            ));
        }
        Ok((user, password))
    }

    /// Connects to etcd and starts the session every key of this run is bound to, with `ttl`
    /// (or the URL's). `Ok(None)` for `local`; `what` names the command for the error a
    /// `nats://` URL gets.
    pub(crate) async fn session(
        &self,
        what: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Opened>, Failure> {
        if let Some(ttl) = ttl {
            sync_core::duration::validate_ttl(ttl)
                .map_err(|e| Failure::usage(format!("--ttl: {e}")))?;
        }
        let Some(cfg) = self.choose()?.etcd_or_local(what)? else {
            return Ok(None);
        };
        let ttl = ttl.unwrap_or(cfg.ttl);
        let connection = EtcdConnection::connect(*cfg).await.map_err(etcd_failure)?;
        let session = connection.session(ttl).await.map_err(etcd_failure)?;
        Ok(Some(Opened {
            connection,
            session,
        }))
    }

    /// One primitive's backend: `local()` in-process, or `etcd(connection, session)` bound to
    /// this run's session (closed by the returned [`Closer`]).
    async fn open<T: ?Sized>(
        &self,
        what: &str,
        ttl: Option<Duration>,
        local: impl FnOnce() -> Arc<T>,
        etcd: impl FnOnce(EtcdConnection, &Session) -> Arc<T>,
    ) -> Result<(Arc<T>, Closer), Failure> {
        Ok(match self.session(what, ttl).await? {
            None => (local(), Closer(None)),
            Some(o) => (etcd(o.connection, &o.session), Closer(Some(o.session))),
        })
    }

    pub(crate) async fn lock(
        &self,
        ttl: Option<Duration>,
    ) -> Result<(Arc<dyn sync_lock::Lock>, Closer), Failure> {
        self.open::<dyn sync_lock::Lock>(
            "lock",
            ttl,
            || Arc::new(sync_lock::LocalLock::new()),
            |c, s| Arc::new(sync_lock::EtcdLock::new(c).with_session(s)),
        )
        .await
    }

    pub(crate) async fn semaphore(
        &self,
        ttl: Option<Duration>,
    ) -> Result<(Arc<dyn sync_lock::Semaphore>, Closer), Failure> {
        self.open::<dyn sync_lock::Semaphore>(
            "semaphore",
            ttl,
            || Arc::new(sync_lock::LocalSemaphore::new()),
            |c, s| Arc::new(sync_lock::EtcdSemaphore::new(c).with_session(s)),
        )
        .await
    }

    pub(crate) async fn rwlock(
        &self,
        ttl: Option<Duration>,
    ) -> Result<(Arc<dyn sync_lock::RwLock>, Closer), Failure> {
        self.open::<dyn sync_lock::RwLock>(
            "rwlock",
            ttl,
            || Arc::new(sync_lock::LocalRwLock::new()),
            |c, s| Arc::new(sync_lock::EtcdRwLock::new(c).with_session(s)),
        )
        .await
    }

    pub(crate) async fn leader(
        &self,
        what: &str,
        ttl: Option<Duration>,
    ) -> Result<(Arc<dyn sync_leader::Leader>, Closer), Failure> {
        self.open::<dyn sync_leader::Leader>(
            what,
            ttl,
            || Arc::new(sync_leader::LocalLeader::new()),
            |c, s| Arc::new(sync_leader::EtcdLeader::new(c).with_session(s)),
        )
        .await
    }

    /// An event backend with `options`: in-process, on etcd (its own connection; group
    /// members hold leases of the URL's TTL) or on NATS.
    pub(crate) async fn events(
        &self,
        options: EventOptions,
    ) -> Result<Arc<dyn EventStream>, Failure> {
        Ok(match self.choose()? {
            Chosen::Local => Arc::new(sync_event::LocalEvents::with_options(options)?),
            Chosen::Etcd(cfg) => {
                let connection = EtcdConnection::connect(*cfg).await.map_err(etcd_failure)?;
                Arc::new(sync_event::EtcdEvents::new(connection, options)?)
            }
            Chosen::Nats(cfg) => Arc::new(sync_event::NatsEvents::connect(*cfg, options).await?),
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
