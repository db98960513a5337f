//! Semaphores and read-write locks on etcd: the lock's queue with another admission rule.
//!
//! Keys: `<prefix>/semaphore/<name>/p<N>-<lease>-<n>` (one of N permits: held while fewer than N
//! keys are ahead) and `<prefix>/rwlock/<name>/{r,w}-<lease>-<n>` (a reader holds while no
//! writer's key is ahead, a writer while no key is ahead). See `docs/semaphore.md`.

use crate::LockFuture;
use futures::FutureExt;
use sync_etcd::{Claim, EtcdConfig, EtcdConnection, Session};

use super::Queues;
use crate::{AcquireOptions, Error, LockGuard, Result, RwLock, Semaphore};

/// Semaphores shared by every process connected to the same etcd cluster and key prefix.
///
/// ```no_run
/// use sync_lock::{AcquireOptions, EtcdConfig, EtcdSemaphore, Semaphore};
/// # async fn demo() -> sync_lock::Result<()> {
/// let pool = EtcdSemaphore::connect(EtcdConfig::new(["127.0.0.1:2379"]).with_prefix("app")).await?;
/// let permit = pool.acquire("render-farm", 3, AcquireOptions::new()).await?;
/// // … one of at most three holders at once …
/// permit.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct EtcdSemaphore {
    queues: Queues,
}

/// Read-write locks shared by every process connected to the same etcd cluster and key prefix.
///
/// ```no_run
/// use sync_lock::{AcquireOptions, EtcdConfig, EtcdRwLock, RwLock};
/// # async fn demo() -> sync_lock::Result<()> {
/// let locks = EtcdRwLock::connect(EtcdConfig::new(["127.0.0.1:2379"]).with_prefix("app")).await?;
/// let read = locks.read("catalog", AcquireOptions::new()).await?;
/// // … readers share; a writer waits for every reader ahead of it …
/// read.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct EtcdRwLock {
    queues: Queues,
}

macro_rules! connect_and_share {
    ($ty:ident, $kind:literal) => {
        impl $ty {
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
                $ty {
                    queues: Queues::new(&connection, $kind),
                }
            }

            /// The same, with every hold bound to `session`'s lease: they all end when the
            /// session does, and a per-acquire TTL is an [`Error::InvalidOptions`].
            pub fn with_session(&self, session: &Session) -> Self {
                $ty {
                    queues: self.queues.with_session(session),
                }
            }

            /// The connection, to share with other primitives or start a session on.
            pub fn connection(&self) -> EtcdConnection {
                self.queues.connection()
            }
        }
    };
}

connect_and_share!(EtcdSemaphore, "semaphore");
connect_and_share!(EtcdRwLock, "rwlock");

impl Semaphore for EtcdSemaphore {
    fn acquire<'a>(
        &'a self,
        name: &'a str,
        permits: usize,
        options: AcquireOptions,
    ) -> LockFuture<'a, LockGuard> {
        self.queues
            .acquire(Claim::Permits(permits), name, options)
            .boxed()
            .into()
    }

    fn try_acquire<'a>(
        &'a self,
        name: &'a str,
        permits: usize,
        options: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        self.queues
            .try_acquire(Claim::Permits(permits), name, options)
            .boxed()
            .into()
    }
}

impl RwLock for EtcdRwLock {
    fn read<'a>(&'a self, name: &'a str, o: AcquireOptions) -> LockFuture<'a, LockGuard> {
        self.queues.acquire(Claim::Read, name, o).boxed().into()
    }

    fn write<'a>(&'a self, name: &'a str, o: AcquireOptions) -> LockFuture<'a, LockGuard> {
        self.queues.acquire(Claim::Write, name, o).boxed().into()
    }

    fn try_read<'a>(
        &'a self,
        name: &'a str,
        o: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        self.queues.try_acquire(Claim::Read, name, o).boxed().into()
    }

    fn try_write<'a>(
        &'a self,
        name: &'a str,
        o: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        self.queues
            .try_acquire(Claim::Write, name, o)
            .boxed()
            .into()
    }
}
