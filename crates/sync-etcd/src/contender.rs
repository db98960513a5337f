//! One cancel-safe contender for every queue-shaped primitive: locks, elections (and what comes
//! next: semaphores, read-write locks). A primitive's etcd backend is an adapter that turns its
//! options into [`Contender::contend`]'s arguments and a [`Held`] into its guard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp};
use sync_core::signal::LossReason;

use crate::queue::{Admission, Slot};
use crate::{Error, WaitError};
use crate::{EtcdClient, EtcdConnection, Held, Lease, LeasePool, Queue, QueueEntry, Session};

/// Why [`Contender::contend`] gave no position.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContendError {
    /// The max wait ran out first; nothing was left behind.
    #[error("gave up waiting after {waited:?}")]
    Timeout {
        /// How long it waited.
        waited: Duration,
    },
    /// Our key or lease was lost while waiting, or it was lost already (a closed session).
    #[error("lost while waiting: {0}")]
    Lost(LossReason),
    /// The arguments cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// The queue's holders and waiters ahead count permits differently: a semaphore's number
    /// of permits is fixed by those already in it.
    #[error("asked for one of {ours} permits, but those ahead hold or wait for one of {theirs}")]
    PermitsMismatch {
        /// The number ahead.
        theirs: usize,
        /// Ours.
        ours: usize,
    },
    /// etcd failed (after retries within the operation's budget).
    #[error(transparent)]
    Etcd(#[from] Error),
}

impl From<WaitError> for ContendError {
    fn from(e: WaitError) -> Self {
        match e {
            WaitError::Removed => ContendError::Lost(LossReason::Revoked),
            WaitError::LeaseLost(reason) => ContendError::Lost(reason),
            WaitError::Etcd(e) => ContendError::Etcd(e),
        }
    }
}

/// What a contender asks of a queue: when its place is good enough to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// Alone: nobody ahead (a lock, a leadership).
    Exclusive,
    /// One of `n` permits: fewer than `n` ahead. Everyone in one queue must ask for the same
    /// `n` ([`ContendError::PermitsMismatch`] otherwise).
    Permits(usize),
    /// Shared with other readers: no writer ahead.
    Read,
    /// Exclusive among readers and writers: nobody ahead.
    Write,
}

impl Claim {
    /// The start of our key's unique part, and the rule that admits us.
    fn parts(self) -> (String, Admission) {
        match self {
            Claim::Exclusive => (String::new(), Admission::Alone),
            Claim::Permits(n) => (format!("p{n}-"), Admission::FewerThan(n)),
            Claim::Read => ("r-".into(), Admission::NoneTagged("w-")),
            Claim::Write => ("w-".into(), Admission::Alone),
        }
    }

    /// For permits: the error for the first key ahead that counts permits differently.
    fn mismatch(self, dir: &str, ahead: &[String]) -> Option<ContendError> {
        let Claim::Permits(ours) = self else {
            return None;
        };
        ahead.iter().find_map(|key| {
            let unique = key.strip_prefix(dir)?.strip_prefix('p')?;
            let theirs: usize = unique.split('-').next()?.parse().ok()?;
            (theirs != ours).then_some(ContendError::PermitsMismatch { theirs, ours })
        })
    }
}

/// The queues of one kind of primitive (`lock`, `election`, …) under a connection's prefix:
/// `<prefix>/<kind>/<encoded name>/<unique>`, one key per contender bound to its lease, served in
/// create-revision order. Cheap to clone.
///
/// ```no_run
/// use std::time::Duration;
/// use sync_etcd::{Contender, EtcdConfig, EtcdConnection};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let etcd = EtcdConnection::connect(EtcdConfig::new(["127.0.0.1:2379"])).await?;
/// let queues = Contender::new(&etcd, "lock");
/// let held = queues.contend("billing", b"me".to_vec(), None, Some(Duration::from_secs(5))).await?;
/// println!("held with token {}", held.fencing_token());
/// held.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Contender {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: EtcdClient,
    kind: &'static str,
    queue: Arc<Queue>,
    leases: Leases,
}

#[derive(Debug)]
enum Leases {
    /// One kept-alive lease per TTL, shared by every key of this contender with that TTL.
    Pool(LeasePool),
    /// Every key on a session's lease.
    Session(Arc<Lease>),
}

impl Contender {
    /// The queues of `kind` on `connection`.
    pub fn new(connection: &EtcdConnection, kind: &'static str) -> Self {
        let client = EtcdClient::of(connection).clone();
        Contender {
            inner: Arc::new(Inner {
                queue: Arc::new(Queue::new(client.clone(), kind)),
                leases: Leases::Pool(LeasePool::new(client.clone())),
                kind,
                client,
            }),
        }
    }

    /// The same queues, with every key bound to `session`'s lease: a per-call TTL is then an
    /// error, and losing the session loses everything held through it.
    pub fn in_session(&self, session: &Session) -> Self {
        let inner = &self.inner;
        Contender {
            inner: Arc::new(Inner {
                client: inner.client.clone(),
                kind: inner.kind,
                queue: inner.queue.clone(),
                leases: Leases::Session(Lease::of(session).clone()),
            }),
        }
    }

    /// The connection.
    pub fn connection(&self) -> EtcdConnection {
        self.inner.client.connection()
    }

    /// The engine.
    pub fn client(&self) -> &EtcdClient {
        &self.inner.client
    }

    /// The queue of `name`: `<prefix>/<kind>/<encoded name>/`.
    pub fn dir(&self, name: &str) -> String {
        self.inner.client.keyspace().dir(self.inner.kind, name)
    }

    /// Joins the queue of `name` with `value` and waits to be its head, for at most `max_wait`
    /// (`None`: no limit). `ttl` is the lease's (`None`: the connection's). On every path that
    /// gives no [`Held`], including this future being dropped at any await, our key is deleted.
    pub async fn contend(
        &self,
        name: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        max_wait: Option<Duration>,
    ) -> Result<Held, ContendError> {
        self.contend_for(Claim::Exclusive, name, value, ttl, max_wait)
            .await
    }

    /// [`contend`](Self::contend) for a place that `claim` admits: one of several permits, a
    /// reader's or a writer's.
    pub async fn contend_for(
        &self,
        claim: Claim,
        name: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        max_wait: Option<Duration>,
    ) -> Result<Held, ContendError> {
        let started = Instant::now();
        let wait = async {
            let (mut entry, admitted) = self.join(claim, name, value, ttl).await?;
            if !admitted {
                tracing::debug!(kind = self.inner.kind, %name, key = entry.key(), "waiting in queue");
                self.inner.queue.wait_admitted(&mut entry).await?;
            }
            Ok::<_, ContendError>(entry)
        };
        let entry = match max_wait {
            Some(max) => {
                tokio::time::timeout(max, wait)
                    .await
                    .map_err(|_| ContendError::Timeout {
                        waited: started.elapsed(),
                    })??
            }
            None => wait.await?,
        };
        self.hold(entry)
    }

    /// Joins the queue of `name` and holds it only if nobody is ahead; otherwise leaves again and
    /// returns `None`.
    pub async fn try_contend(
        &self,
        name: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<Option<Held>, ContendError> {
        self.try_contend_for(Claim::Exclusive, name, value, ttl)
            .await
    }

    /// [`try_contend`](Self::try_contend) for a place that `claim` admits.
    pub async fn try_contend_for(
        &self,
        claim: Claim,
        name: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<Option<Held>, ContendError> {
        let (entry, admitted) = self.join(claim, name, value, ttl).await?;
        if admitted {
            self.hold(entry).map(Some)
        } else {
            entry.leave().await?;
            Ok(None)
        }
    }

    /// The head of the queue of `name` (the holder): its value and create revision (its fencing
    /// token), or `None` if the queue is empty. One linearizable read.
    pub async fn head(&self, name: &str) -> Result<Option<(Vec<u8>, u64)>, Error> {
        let dir = self.dir(name);
        let client = &self.inner.client;
        client
            .retry("read the head", client.default_budget(), |mut c| {
                let dir = dir.clone();
                async move {
                    let options = GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Create, SortOrder::Ascend)
                        .with_limit(1);
                    let r = c.get(dir, Some(options)).await?;
                    Ok(r.kvs()
                        .first()
                        .map(|kv| (kv.value().to_vec(), kv.create_revision() as u64)))
                }
            })
            .await
    }

    /// A position reached after our lease was lost is no position.
    fn hold(&self, entry: QueueEntry) -> Result<Held, ContendError> {
        if let Some(reason) = entry.lease().signal().reason() {
            return Err(ContendError::Lost(reason));
        }
        Ok(self.inner.queue.hold(entry))
    }

    async fn join(
        &self,
        claim: Claim,
        name: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(QueueEntry, bool), ContendError> {
        if claim == Claim::Permits(0) {
            return Err(ContendError::Invalid(
                "a semaphore needs at least one permit".into(),
            ));
        }
        let dir = self.dir(name);
        let (entry, admitted) = self.join_queue(claim, &dir, value, ttl).await?;
        if let Some(mismatch) = claim.mismatch(&dir, entry.ahead()) {
            entry.leave().await?;
            return Err(mismatch);
        }
        Ok((entry, admitted))
    }

    async fn join_queue(
        &self,
        claim: Claim,
        dir: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(QueueEntry, bool), ContendError> {
        let inner = &self.inner;
        let (tag, admission) = claim.parts();
        let join = |lease: Arc<Lease>| {
            // The key's number on its lease: reused once an earlier key of it is surely gone,
            // so that a name acquired again and again does not pile up deleted keys that every
            // read of its queue must walk (see `queue::Slot`).
            let slot = Slot::take(lease.id());
            let unique = format!("{tag}{:016x}-{:x}", lease.id(), slot.n());
            let value = value.clone();
            async move {
                inner
                    .queue
                    .join_keyed(dir, &unique, value, lease, admission, Some(slot))
                    .await
            }
        };
        match &inner.leases {
            Leases::Pool(pool) => {
                let ttl = ttl.unwrap_or(inner.client.config().ttl);
                Ok(pool.with_lease(ttl, join).await?)
            }
            Leases::Session(lease) => {
                if ttl.is_some() {
                    return Err(ContendError::Invalid(
                        "a TTL cannot be set per call in a session: its keys live as long as the \
                         session's lease; start a session with the TTL you need"
                            .into(),
                    ));
                }
                if let Some(reason) = lease.signal().reason() {
                    return Err(ContendError::Lost(reason));
                }
                match join(lease.clone()).await {
                    Err(e) if e.is_lease_not_found() => {
                        lease.mark_lost(LossReason::LeaseExpired);
                        Err(ContendError::Lost(LossReason::LeaseExpired))
                    }
                    other => Ok(other?),
                }
            }
        }
    }
}

impl Held {
    /// Replaces our key's value, only while the key is still ours (same create revision) and on
    /// the same lease. Returns whether it was still ours.
    pub async fn set_value(&self, value: Vec<u8>) -> Result<bool, Error> {
        let (key, rev, lease) = (self.key().to_owned(), self.revision(), self.lease().id());
        let client = self.client();
        client
            .retry("replace the value", client.default_budget(), |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, rev)])
                        .and_then([TxnOp::put(
                            key,
                            value,
                            Some(PutOptions::new().with_lease(lease)),
                        )]);
                    Ok(c.txn(txn).await?.succeeded())
                }
            })
            .await
    }

    /// The fencing token: our key's create revision, which only grows.
    pub fn fencing_token(&self) -> u64 {
        self.revision() as u64
    }

    /// The TTL of the lease our key is bound to.
    pub fn ttl(&self) -> Duration {
        self.lease().granted_ttl()
    }
}
