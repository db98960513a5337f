//! The etcd backend: a FIFO queue of keys by create revision under a kept-alive lease.
//!
//! See `docs/etcd.md` for the key layout and why mutual exclusion holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_core::etcd::{EtcdClient, EtcdConfig, Held, LeasePool, Queue, WaitError};
use sync_core::signal::LossReason;

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
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: EtcdClient,
    queue: Queue,
    leases: LeasePool,
    counter: AtomicU64,
    owner: String,
}

impl EtcdLock {
    /// Connects to etcd with `config`.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        let client = EtcdClient::connect(config).await.map_err(Error::connect)?;
        Ok(Self::new(client))
    }

    /// Uses an existing connection (shared with other primitives).
    pub fn new(client: EtcdClient) -> Self {
        EtcdLock {
            inner: Arc::new(Inner {
                queue: Queue::new(client.clone(), "lock"),
                leases: LeasePool::new(client.clone()),
                counter: AtomicU64::new(0),
                owner: format!("pid={}", std::process::id()),
                client,
            }),
        }
    }

    /// The connection.
    pub fn client(&self) -> &EtcdClient {
        &self.inner.client
    }

    /// Joins the queue of `name`; returns the entry and whether it is the head.
    async fn join(
        &self,
        name: &str,
        options: &AcquireOptions,
    ) -> Result<(sync_core::etcd::QueueEntry, bool)> {
        check_name(name)?;
        options.validate(name)?;
        let inner = &self.inner;
        let ttl = options.ttl().unwrap_or(inner.client.config().ttl);
        let dir = inner.client.keyspace().dir("lock", name);
        inner
            .leases
            .with_lease(ttl, |lease| {
                let unique = format!(
                    "{:016x}-{:x}",
                    lease.id(),
                    inner.counter.fetch_add(1, Ordering::Relaxed)
                );
                let (dir, value) = (dir.clone(), inner.owner.clone().into_bytes());
                async move { inner.queue.join(&dir, &unique, value, lease).await }
            })
            .await
            .map_err(|e| Error::backend(name, e))
    }

    fn guard(&self, name: &str, entry: sync_core::etcd::QueueEntry) -> LockGuard {
        let ttl = entry.lease().granted_ttl();
        let held = self.inner.queue.hold(entry);
        let signal = held.signal().clone();
        let token = held.revision() as u64;
        LockGuard::new(
            name,
            token,
            Some(ttl),
            signal,
            Box::new(EtcdRawGuard { held }),
        )
    }

    async fn acquire_inner(&self, name: &str, options: AcquireOptions) -> Result<LockGuard> {
        let started = Instant::now();
        let wait = async {
            let (mut entry, head) = self.join(name, &options).await?;
            if !head {
                tracing::debug!(lock = %name, key = entry.key(), "waiting for lock");
                self.inner
                    .queue
                    .wait_head(&mut entry)
                    .await
                    .map_err(|e| wait_error(name, e))?;
            }
            Ok(entry)
        };
        let entry = match options.max_wait() {
            Some(max) => tokio::time::timeout(max, wait)
                .await
                .map_err(|_| Error::Timeout {
                    name: name.to_owned(),
                    waited: started.elapsed(),
                })??,
            None => wait.await?,
        };
        // A grant that arrives after our lease was lost is no grant.
        if let Some(reason) = entry.lease().signal().reason() {
            return Err(Error::Lost {
                name: name.to_owned(),
                reason,
            });
        }
        let guard = self.guard(name, entry);
        tracing::debug!(lock = %name, token = guard.fencing_token(), waited = ?started.elapsed(), "lock acquired");
        Ok(guard)
    }
}

fn wait_error(name: &str, e: WaitError) -> Error {
    match e {
        WaitError::Removed => Error::Lost {
            name: name.to_owned(),
            reason: LossReason::Revoked,
        },
        WaitError::LeaseLost(reason) => Error::Lost {
            name: name.to_owned(),
            reason,
        },
        WaitError::Etcd(e) => Error::backend(name, e),
        other => Error::Backend {
            name: name.to_owned(),
            retryable: true,
            source: Box::new(other),
        },
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
        self.acquire_inner(name, options).boxed()
    }

    fn try_acquire<'a>(
        &'a self,
        name: &'a str,
        options: AcquireOptions,
    ) -> BoxFuture<'a, Result<Option<LockGuard>>> {
        async move {
            let (entry, head) = self.join(name, &options).await?;
            if head {
                Ok(Some(self.guard(name, entry)))
            } else {
                entry.leave().await.map_err(|e| Error::backend(name, e))?;
                Ok(None)
            }
        }
        .boxed()
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<EtcdLock>();
    let _ = Duration::ZERO;
}
