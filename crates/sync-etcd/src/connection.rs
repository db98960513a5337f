//! What users share between primitives: a connection, and sessions on it.

use std::sync::Arc;
use std::time::Duration;

use sync_core::signal::{LossReason, LossSignal};

use crate::{EtcdClient, EtcdConfig, Lease, Result};

/// A connection to an etcd cluster, to share between locks, elections and job systems (cheap to
/// clone: clones share the connection).
///
/// Its API shows none of etcd-client's types; the engine underneath is `sync_etcd::EtcdClient::of`.
///
/// ```no_run
/// use sync_etcd::{EtcdConfig, EtcdConnection};
/// # async fn demo() -> Result<(), sync_etcd::Error> {
/// let etcd = EtcdConnection::connect(EtcdConfig::new(["127.0.0.1:2379"]).with_prefix("app")).await?;
/// assert_eq!(etcd.config().prefix, "app");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct EtcdConnection {
    pub(crate) client: EtcdClient,
}

impl EtcdConnection {
    /// Connects and checks that the cluster answers (and accepts the credentials) within
    /// `config.connect_timeout`. Bad settings are [`Error::InvalidConfig`](crate::Error::InvalidConfig)
    /// before anything is sent.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        Ok(EtcdClient::connect(config).await?.connection())
    }

    /// The settings it was made with.
    pub fn config(&self) -> &EtcdConfig {
        self.client.config()
    }

    /// The endpoints, joined, for messages.
    pub fn endpoints(&self) -> &str {
        self.client.endpoints()
    }

    /// The root of every key this library writes: `<prefix>/` (or empty without a prefix).
    /// Keys of your own belong elsewhere, or under a name of your own below it.
    pub fn key_root(&self) -> &str {
        self.client.keyspace().root()
    }

    /// Starts a [`Session`]: a lease of `ttl` (at least 1 s, whole seconds rounded up), kept
    /// alive until the session is closed or its last clone dropped.
    pub async fn session(&self, ttl: Duration) -> Result<Session> {
        Ok(Session {
            lease: Lease::grant(&self.client, ttl).await?,
        })
    }
}

/// A lease you can see: bind locks and elections to it (`EtcdLock::with_session`,
/// `EtcdLeader::with_session`) and your own keys (its [`lease_id`](Self::lease_id)), and learn
/// through [`lost`](Self::lost) when it can no longer be vouched for. Everything bound to it
/// ends together: closing the session, or losing it, loses every lock and leadership in it.
///
/// Kept alive by the same keeper as every lease of this library (see `docs/etcd.md`): its loss
/// is signalled before the server can expire it. Cheap to clone; the lease is revoked when the
/// last clone is dropped, or at once by [`close`](Self::close).
///
/// ```no_run
/// use std::time::Duration;
/// use sync_etcd::{EtcdConfig, EtcdConnection};
/// # async fn demo() -> Result<(), sync_etcd::Error> {
/// let etcd = EtcdConnection::connect(EtcdConfig::new(["127.0.0.1:2379"])).await?;
/// let session = etcd.session(Duration::from_secs(5)).await?;
/// tokio::select! {
///     reason = session.lost().fired() => eprintln!("session lost: {reason}"),
///     _ = tokio::time::sleep(Duration::from_millis(100)) => session.close().await?,
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Session {
    lease: Arc<Lease>,
}

impl Session {
    /// The lease's id, to bind keys of your own to it (`PutOptions::with_lease`).
    pub fn lease_id(&self) -> i64 {
        self.lease.id()
    }

    /// The TTL the server granted.
    pub fn ttl(&self) -> Duration {
        self.lease.granted_ttl()
    }

    /// Fires when the session is lost or closed, with the reason.
    pub fn lost(&self) -> &LossSignal {
        self.lease.signal()
    }

    /// Whether it was lost or closed.
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Revokes the lease now: every lock, leadership and key bound to it ends (their `lost()`
    /// fires with [`LossReason::Revoked`]).
    ///
    /// A session already lost returns at once: its keys are gone or go with its lease, and etcd
    /// may be out of reach (often why it was lost); the revoke is then tried in the background.
    pub async fn close(&self) -> Result<()> {
        if self.lease.is_lost() {
            let lease = self.lease.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = lease.revoke().await;
                });
            }
            return Ok(());
        }
        let revoked = self.lease.revoke().await;
        self.lease.mark_lost(LossReason::Revoked);
        revoked
    }
}

impl EtcdClient {
    /// The engine under a connection: for building a primitive of your own.
    pub fn of(connection: &EtcdConnection) -> &EtcdClient {
        &connection.client
    }

    /// This engine as a connection to hand to `EtcdLock::new` and the like.
    pub fn connection(&self) -> EtcdConnection {
        EtcdConnection {
            client: self.clone(),
        }
    }
}

impl Lease {
    /// The lease of a session: for building a primitive of your own.
    pub fn of(session: &Session) -> &Arc<Lease> {
        &session.lease
    }
}
