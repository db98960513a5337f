//! The etcd backend: an adapter over `sync-etcd`'s contender, which queues keys by create
//! revision under a kept-alive lease.
//!
//! See `docs/etcd.md` for the key layout and why mutual exclusion holds.

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_etcd::{ContendError, Contender, EtcdConfig, EtcdConnection, Held, Session};

use crate::{check_name, AcquireOptions, Error, Lock, LockGuard, RawGuard, Result};

/// Locks shared by every process connected to the same etcd cluster and key prefix.
///
/// Cheap to clone; clones share one connection, one lease per TTL and one watch. Two guards for
/// one name in one process exclude each other like guards of two processes.
///
/// ```no_run
/// use sync_lock::{AcquireOptions, EtcdConfig, EtcdLock, Lock};
/// # async fn demo() -> sync_lock::Result<()> {
/// let locks = EtcdLock::connect(EtcdConfig::new(["127.0.0.1:2379"]).with_prefix("myapp")).await?;
/// let guard = locks.acquire("billing", AcquireOptions::new()).await?;
/// // … write to the resource, passing guard.fencing_token() …
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct EtcdLock {
    queues: Contender,
    owner: std::sync::Arc<[u8]>,
}

impl EtcdLock {
    /// Connects to etcd with `config`.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        Ok(Self::new(
            EtcdConnection::connect(config)
                .await
                .map_err(Error::connect)?,
        ))
    }

    /// Uses an existing connection (shared with other primitives).
    pub fn new(connection: EtcdConnection) -> Self {
        EtcdLock {
            queues: Contender::new(&connection, "lock"),
            owner: format!("pid={}", std::process::id()).into_bytes().into(),
        }
    }

    /// The same locks, with every lock bound to `session`'s lease: they all end when the session
    /// does (closed, or lost), and a per-acquire TTL is an [`Error::InvalidOptions`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sync_lock::{AcquireOptions, EtcdLock, Lock};
    /// # async fn demo(locks: EtcdLock) -> Result<(), Box<dyn std::error::Error>> {
    /// let session = locks.connection().session(Duration::from_secs(10)).await?;
    /// let in_session = locks.with_session(&session);
    /// let a = in_session.acquire("a", AcquireOptions::new()).await?;
    /// let b = in_session.acquire("b", AcquireOptions::new()).await?;
    /// session.close().await?; // a and b are lost together
    /// # Ok(()) }
    /// ```
    pub fn with_session(&self, session: &Session) -> Self {
        EtcdLock {
            queues: self.queues.in_session(session),
            owner: self.owner.clone(),
        }
    }

    /// The connection, to share with other primitives or start a session on.
    pub fn connection(&self) -> EtcdConnection {
        self.queues.connection()
    }

    fn checked(&self, name: &str, options: &AcquireOptions) -> Result<()> {
        check_name(name)?;
        options.validate(name)
    }

    fn guard(name: &str, held: Held) -> LockGuard {
        let (token, ttl, signal) = (held.fencing_token(), held.ttl(), held.signal().clone());
        tracing::debug!(lock = %name, token, "lock acquired");
        LockGuard::new(
            name,
            token,
            Some(ttl),
            signal,
            Box::new(EtcdRawGuard { held }),
        )
    }
}

fn contend_error(name: &str, e: ContendError) -> Error {
    match e {
        ContendError::Timeout { waited } => Error::Timeout {
            name: name.to_owned(),
            waited,
        },
        ContendError::Lost(reason) => Error::Lost {
            name: name.to_owned(),
            reason,
        },
        ContendError::Invalid(reason) => Error::InvalidOptions {
            name: sync_core::name::display_name(name),
            reason,
        },
        ContendError::Etcd(e) => Error::backend(name, e),
        other => Error::backend_other(name, other),
    }
}

#[derive(Debug)]
struct EtcdRawGuard {
    held: Held,
}

impl RawGuard for EtcdRawGuard {
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<bool>> {
        async move {
            let key = self.held.key().to_owned();
            self.held
                .release()
                .await
                .map_err(|e| Error::backend(&key, e))
        }
        .boxed()
    }
}

impl Lock for EtcdLock {
    fn acquire<'a>(
        &'a self,
        name: &'a str,
        options: AcquireOptions,
    ) -> BoxFuture<'a, Result<LockGuard>> {
        async move {
            self.checked(name, &options)?;
            let owner = self.owner.to_vec();
            let held = self
                .queues
                .contend(name, owner, options.ttl(), options.max_wait())
                .await
                .map_err(|e| contend_error(name, e))?;
            Ok(Self::guard(name, held))
        }
        .boxed()
    }

    fn try_acquire<'a>(
        &'a self,
        name: &'a str,
        options: AcquireOptions,
    ) -> BoxFuture<'a, Result<Option<LockGuard>>> {
        async move {
            self.checked(name, &options)?;
            let owner = self.owner.to_vec();
            let held = self
                .queues
                .try_contend(name, owner, options.ttl())
                .await
                .map_err(|e| contend_error(name, e))?;
            Ok(held.map(|h| Self::guard(name, h)))
        }
        .boxed()
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<EtcdLock>();
}
