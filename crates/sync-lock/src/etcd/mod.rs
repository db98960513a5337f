//! The etcd backend: an adapter over `sync-etcd`'s contender, which queues keys by create
//! revision under a kept-alive lease.
//!
//! See `docs/etcd.md` for the key layout and why mutual exclusion holds.

use crate::LockFuture;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::Arc;

use sync_core::telemetry;
use sync_etcd::{Claim, ContendError, Contender, EtcdConfig, EtcdConnection, Held, Session};

use crate::{check_name, AcquireOptions, Error, Fence, Lock, LockGuard, RawGuard, Result};

mod semaphore;
mod sticky;

pub use semaphore::{EtcdRwLock, EtcdSemaphore};

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
    queues: Queues,
}

/// What every etcd lock-like type is: a contender of its own key kind, turning a [`Claim`] into
/// a [`LockGuard`]. Semaphores and read-write locks differ from [`EtcdLock`] only in the claim.
#[derive(Clone, Debug)]
pub(crate) struct Queues {
    contender: Contender,
    owner: Arc<[u8]>,
    /// The parked and held keys of sticky acquires, shared by clones.
    sticky: Arc<sticky::StickyKeys>,
}

impl Queues {
    pub(crate) fn new(connection: &EtcdConnection, kind: &'static str) -> Self {
        Queues {
            contender: Contender::new(connection, kind),
            owner: format!("pid={}", std::process::id()).into_bytes().into(),
            sticky: Default::default(),
        }
    }

    pub(crate) fn with_session(&self, session: &Session) -> Self {
        Queues {
            contender: self.contender.in_session(session),
            owner: self.owner.clone(),
            // Keys on another lease: parked keys of the handle without the session are not
            // taken back through this one.
            sticky: Default::default(),
        }
    }

    pub(crate) fn connection(&self) -> EtcdConnection {
        self.contender.connection()
    }

    pub(crate) async fn acquire(
        &self,
        claim: Claim,
        name: &str,
        options: AcquireOptions,
    ) -> Result<LockGuard> {
        let wait = async {
            check(claim, name, &options)?;
            let held = self
                .contender
                .contend_for(
                    claim,
                    name,
                    self.owner.to_vec(),
                    options.ttl(),
                    options.max_wait(),
                )
                .await
                .map_err(|e| contend_error(name, e))?;
            Ok(self.grant(claim, name, &options, held))
        };
        telemetry::acquire(ask("acquire", claim, name), wait).await
    }

    pub(crate) async fn try_acquire(
        &self,
        claim: Claim,
        name: &str,
        options: AcquireOptions,
    ) -> Result<Option<LockGuard>> {
        let wait = async {
            check(claim, name, &options)?;
            let held = self
                .contender
                .try_contend_for(claim, name, self.owner.to_vec(), options.ttl())
                .await
                .map_err(|e| contend_error(name, e))?;
            Ok(held.map(|h| self.grant(claim, name, &options, h)))
        };
        telemetry::try_acquire(ask("try_acquire", claim, name), wait).await
    }
}

impl Queues {
    /// A guard for `held`: a sticky one (its key parked at release) for a sticky lock acquire.
    fn grant(&self, claim: Claim, name: &str, options: &AcquireOptions, held: Held) -> LockGuard {
        if claim == Claim::Exclusive && options.sticky() {
            let dir = self.contender.dir(name);
            self.sticky.insert(name, options.ttl(), held, dir)
        } else {
            guard(name, held)
        }
    }

    /// A sticky lock acquire's fast path: `name`'s parked key taken back in memory, if this
    /// handle has one that is still ours and nobody else waits for.
    fn reclaim(&self, name: &str, options: &AcquireOptions) -> Option<LockGuard> {
        if !options.sticky() || check(Claim::Exclusive, name, options).is_err() {
            return None;
        }
        let granted = self.sticky.reclaim(name, options.ttl())?;
        telemetry::granted_now(ask("acquire", Claim::Exclusive, name), &granted);
        Some(granted)
    }
}

/// The names of an acquire, for its span and metrics.
fn ask<'a>(op: &'static str, claim: Claim, name: &'a str) -> telemetry::Ask<'a> {
    let primitive = match claim {
        Claim::Permits(_) => "semaphore",
        Claim::Read => "rwlock.read",
        Claim::Write => "rwlock.write",
        _ => "lock",
    };
    telemetry::Ask {
        op,
        primitive,
        backend: "etcd",
        name,
    }
}

fn check(claim: Claim, name: &str, options: &AcquireOptions) -> Result<()> {
    check_name(name)?;
    options.validate(name)?;
    if claim == Claim::Permits(0) {
        return Err(Error::InvalidOptions {
            name: sync_core::name::display_name(name),
            reason: "a semaphore needs at least one permit".into(),
        });
    }
    Ok(())
}

fn guard(name: &str, held: Held) -> LockGuard {
    let (token, ttl, signal) = (held.fencing_token(), held.ttl(), held.signal().clone());
    LockGuard::new(
        name,
        token,
        Some(ttl),
        signal,
        Box::new(EtcdRawGuard { held }),
    )
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
            queues: Queues::new(&connection, "lock"),
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
            queues: self.queues.with_session(session),
        }
    }

    /// The connection, to share with other primitives or start a session on.
    pub fn connection(&self) -> EtcdConnection {
        self.queues.connection()
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
        ContendError::PermitsMismatch { theirs, ours } => Error::PermitsMismatch {
            name: name.to_owned(),
            theirs,
            ours,
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

    fn fence(&self) -> Option<Fence> {
        Some(Fence::new(self.held.key(), self.held.revision()))
    }
}

impl Lock for EtcdLock {
    fn acquire<'a>(&'a self, name: &'a str, options: AcquireOptions) -> LockFuture<'a, LockGuard> {
        // A sticky hold this process kept is taken back here, with no round trip: the future
        // is ready at once and allocates nothing.
        if let Some(granted) = self.queues.reclaim(name, &options) {
            return LockFuture::ready(Ok(granted));
        }
        LockFuture::waiting(self.queues.acquire(Claim::Exclusive, name, options))
    }

    fn try_acquire<'a>(
        &'a self,
        name: &'a str,
        options: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        if let Some(granted) = self.queues.reclaim(name, &options) {
            return LockFuture::ready(Ok(Some(granted)));
        }
        LockFuture::waiting(self.queues.try_acquire(Claim::Exclusive, name, options))
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<EtcdLock>();
    is::<EtcdSemaphore>();
    is::<EtcdRwLock>();
}
