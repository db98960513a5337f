use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use tokio::time::Instant;

use crate::error::{classify, Class};
use crate::leader_route::{self, LeaderRoute};
use crate::{Error, EtcdConfig, Keyspace, Result};

/// One connection to an etcd cluster, shared (cheaply cloned) by every primitive built on it.
///
/// Every call goes through [`EtcdClient::retry`], which retries transient failures (a member
/// down, no leader for a moment) within a time budget, so the loss of one member of three does
/// not surface as failed operations.
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: EtcdConfig,
    endpoints: String,
    keyspace: Keyspace,
    /// Requests go first to the raft leader, when it is one of the configured endpoints.
    leader: Arc<LeaderRoute>,
}

/// The bound of the first attempt after one failed with an error (see [`EtcdClient::retry`]):
/// about an election timeout at etcd's default timing (1 s), after which a follower that lost its
/// leader answers "no leader" at once instead of forwarding into the void.
const AFTER_FAILURE: Duration = Duration::from_secs(1);

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.config.prefix)
            .finish()
    }
}

impl EtcdClient {
    /// Connects and checks that the cluster answers (and accepts our credentials) within
    /// `config.connect_timeout`.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        config.validate()?;
        let endpoints = config.endpoints_display();
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some(user) = &config.user {
            opts = opts.with_user(user.clone(), config.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &config.tls {
            let read = |what: &str, path: &std::path::Path| {
                std::fs::read(path).map_err(|e| {
                    Error::InvalidConfig(format!(
                        "cannot read the TLS {what} file {}: {e}",
                        path.display()
                    ))
                })
            };
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca {
                t = t.ca_certificate(Certificate::from_pem(read("CA", ca)?));
            }
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                t = t.identity(Identity::from_pem(
                    read("certificate", cert)?,
                    read("key", key)?,
                ));
            }
            if let Some(d) = &tls.domain {
                t = t.domain_name(d.clone());
            }
            opts = opts.with_tls(t);
        }
        let deadline = Instant::now() + config.connect_timeout;
        let urls = config.endpoint_urls();
        let tls_without_cert = config.tls.as_ref().is_some_and(|t| t.cert.is_none());
        let connect_err =
            |source: Box<dyn std::error::Error + Send + Sync>| match closed_without_client_cert(
                tls_without_cert,
                &*source,
            ) {
                Some(detail) => Error::Tls {
                    endpoints: endpoints.clone(),
                    detail,
                    source,
                },
                None => Error::Connect {
                    endpoints: endpoints.clone(),
                    source,
                },
            };
        // With auth, connect() already talks to the server (to get a token), so it may fail in
        // the same transient ways as any request: retry until the connect deadline.
        let mut backoff = Duration::from_millis(50);
        let client = loop {
            match tokio::time::timeout_at(deadline, Client::connect(&urls, Some(opts.clone())))
                .await
            {
                Ok(Ok(c)) => break c,
                Ok(Err(e)) => match classify(&e) {
                    Class::Auth(detail) => {
                        return Err(Error::Auth {
                            endpoints: endpoints.clone(),
                            op: "connect",
                            detail: anonymous_hint(&config, detail),
                        })
                    }
                    Class::Tls(_) => return Err(Error::from_etcd(&endpoints, "connect", e)),
                    Class::Transient if Instant::now() + backoff < deadline => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                    _ => return Err(connect_err(Box::new(e))),
                },
                Err(_) => {
                    return Err(connect_err(
                        format!("no answer within {:?}", config.connect_timeout).into(),
                    ))
                }
            }
        };
        let keyspace = Keyspace::new(config.normalized_prefix());
        let (request_timeout, connect_timeout) = (config.request_timeout, config.connect_timeout);
        let this = EtcdClient {
            inner: Arc::new(Inner {
                client,
                config,
                endpoints: endpoints.clone(),
                keyspace,
                leader: Arc::new(LeaderRoute::new(
                    opts,
                    urls,
                    request_timeout,
                    connect_timeout,
                )),
            }),
        };
        // The channel connects lazily: probe it, so a wrong address, TLS setting or password is
        // reported here rather than at the first lock.
        let probe_key = this.inner.keyspace.root().to_owned();
        let budget = deadline.saturating_duration_since(Instant::now());
        let probed = this
            .retry("connect", budget, |mut c| {
                let k = probe_key.clone();
                async move {
                    c.get(k, Some(GetOptions::new().with_count_only().with_limit(1)))
                        .await
                }
            })
            .await;
        match probed {
            Ok(_) => {
                tokio::spawn(leader_route::follow(Arc::downgrade(&this.inner.leader)));
                Ok(this)
            }
            Err(Error::Auth {
                endpoints,
                op,
                detail,
            }) => Err(Error::Auth {
                endpoints,
                op,
                detail: anonymous_hint(this.config(), detail),
            }),
            Err(e @ Error::Tls { .. }) => Err(e),
            Err(Error::Unavailable { source, .. }) | Err(Error::Etcd { source, .. }) => {
                Err(connect_err(source))
            }
            Err(Error::Timeout { after, .. }) => {
                Err(connect_err(format!("no answer within {after:?}").into()))
            }
            Err(e) => Err(e),
        }
    }

    /// The settings this client was made with.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    /// The key layout under the configured prefix.
    pub fn keyspace(&self) -> &Keyspace {
        &self.inner.keyspace
    }

    /// The endpoints, joined, for messages.
    pub fn endpoints(&self) -> &str {
        &self.inner.endpoints
    }

    /// The endpoint that requests are sent to first: the raft leader's, once a check has found
    /// that the leader advertises one of the configured endpoints (checked at connect and every
    /// few seconds after). `None` while it is unknown, or when the leader is reached through
    /// addresses that were not configured: then requests are balanced over the endpoints.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use sync_etcd::{EtcdClient, EtcdConfig};
    /// let etcd = EtcdClient::connect(EtcdConfig::new(["127.0.0.1:2379"])).await?;
    /// println!("leader first: {:?}", etcd.leader_endpoint());
    /// # Ok(()) }
    /// ```
    pub fn leader_endpoint(&self) -> Option<String> {
        self.inner.leader.url()
    }

    /// A clone of the raw client (cheap: it shares the connection).
    pub fn raw(&self) -> Client {
        self.inner.client.clone()
    }

    /// Runs `f` until it succeeds, fails for good, or `budget` runs out. Each attempt is bounded
    /// by the request timeout; transient failures (unreachable member, no leader, timeout) are
    /// retried with a short backoff. After an attempt failed with an error (not a timeout), the
    /// next one is bounded by 1 s, and each timeout after that doubles the bound back up to the
    /// request timeout: right after a member's death a retry may reach a follower whose
    /// forwarded proposal is lost with the leader and never answered.
    pub async fn retry<T, F, Fut>(&self, op: &'static str, budget: Duration, mut f: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + budget;
        // The first retry goes at once: the client balances over the members, so it usually
        // lands on another one than the member that just failed.
        let mut backoff = Duration::ZERO;
        let mut last: Option<etcd_client::Error> = None;
        let mut last_failed = false;
        // Each attempt is bounded by the request timeout, until an attempt fails with an error
        // (a member refused or dropped us, or has no leader): then the next one is bounded by
        // [`AFTER_FAILURE`], and each timeout doubles the bound again, up to the request
        // timeout. Right after a member's death a
        // request can reach a follower that has not noticed the leader is gone; its forwarded
        // proposal is lost with the leader and never answered, and the attempt would wait the
        // whole request timeout. A cluster that is only slow fails by timeouts, which keep the
        // full bound.
        let request_timeout = self.inner.config.request_timeout;
        let mut attempt_timeout = request_timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(match last {
                    Some(e) => Error::from_etcd(&self.inner.endpoints, op, e),
                    None => Error::Timeout {
                        endpoints: self.inner.endpoints.clone(),
                        op,
                        after: budget,
                    },
                });
            }
            let attempt_end = deadline.min(now + attempt_timeout);
            // The first attempt goes to the leader when known; retries to the balanced client.
            let leader = if last_failed {
                None
            } else {
                self.inner.leader.client()
            };
            let at_leader = leader.is_some();
            let client = leader.unwrap_or_else(|| self.inner.client.clone());
            match tokio::time::timeout_at(attempt_end, f(client)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => match classify(&e) {
                    Class::Transient => {
                        tracing::debug!(op, error = %e, "transient etcd error, retrying");
                        last = Some(e);
                        attempt_timeout = attempt_timeout.min(AFTER_FAILURE);
                    }
                    _ => return Err(Error::from_etcd(&self.inner.endpoints, op, e)),
                },
                Err(_) => {
                    tracing::debug!(op, ?attempt_timeout, "etcd request timed out, retrying");
                    last = None;
                    attempt_timeout = (attempt_timeout * 2).min(request_timeout);
                }
            }
            last_failed = true;
            if at_leader {
                self.inner.leader.forget();
            }
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            backoff = (backoff * 2)
                .max(Duration::from_millis(10))
                .min(Duration::from_millis(400));
        }
    }

    /// The budget for one logical operation: three request timeouts, so that one member's loss
    /// (and the leader election it may cause) is absorbed by retries.
    pub fn default_budget(&self) -> Duration {
        self.inner.config.request_timeout * 3
    }
}

/// Says so when the server wants credentials and none were configured: etcd itself only
/// answers "permission denied" (or "user name is empty").
fn anonymous_hint(config: &EtcdConfig, detail: String) -> String {
    if config.user.is_none() {
        format!(
            "{detail} (no user or password configured, and the cluster has authentication \
             enabled: set `user` and `password`)"
        )
    } else {
        detail
    }
}

/// With TLS 1.3 the server judges our client certificate after the handshake has completed on
/// our side, so a server that requires one often just closes the connection and its alert is
/// never read. When TLS is on, no client certificate is configured, and the connection was
/// closed (not refused) by the peer, that is almost surely why: say so.
fn closed_without_client_cert(
    tls_without_cert: bool,
    e: &(dyn std::error::Error + 'static),
) -> Option<String> {
    if !tls_without_cert {
        return None;
    }
    let text = format!("{e:?}").to_ascii_lowercase();
    let closed = text.contains("connection closed")
        || text.contains("connection reset")
        || text.contains("broken pipe")
        || text.contains("unexpected eof");
    (closed && !text.contains("connection refused")).then(|| {
        format!(
            "the server closed the connection after the TLS handshake ({e}); it most likely \
             requires a client certificate and none is configured: set `cert` and `key`"
        )
    })
}
