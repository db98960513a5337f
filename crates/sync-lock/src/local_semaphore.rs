//! The in-process semaphores and read-write locks: [`LocalLock`](crate::LocalLock)'s queue with
//! another admission [`Rule`] per claim.

use crate::LockFuture;
use sync_core::local_queue::{Granted, LocalQueue, Rule, WaitError};
use sync_core::signal::LossReason;
use sync_core::telemetry;

use crate::local::LocalRawGuard;
use crate::{check_name, AcquireOptions, Error, LockGuard, Result, RwLock, Semaphore};

/// Semaphores shared by the tasks of one process. Cheap to clone: clones share them.
///
/// First come, first served (no barging); fencing tokens strictly increase in grant order; an
/// idle name takes no memory. The TTL of the options is ignored (nothing to crash apart).
///
/// ```
/// use sync_lock::{AcquireOptions, LocalSemaphore, Semaphore};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let pool = LocalSemaphore::new();
/// let a = pool.acquire("db-connections", 2, AcquireOptions::new()).await?;
/// let b = pool.acquire("db-connections", 2, AcquireOptions::new()).await?;
/// assert!(pool.try_acquire("db-connections", 2, AcquireOptions::new()).await?.is_none());
/// a.release().await?;
/// let c = pool.acquire("db-connections", 2, AcquireOptions::new()).await?;
/// assert!(c.fencing_token() > b.fencing_token());
/// # Ok::<(), sync_lock::Error>(()) }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct LocalSemaphore {
    queue: LocalQueue,
}

/// Read-write locks shared by the tasks of one process. Cheap to clone: clones share them.
///
/// First come, first served: a reader behind a waiting writer waits, so writers are not
/// starved. The TTL of the options is ignored.
///
/// ```
/// use sync_lock::{AcquireOptions, LocalRwLock, RwLock};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let locks = LocalRwLock::new();
/// let r1 = locks.read("config", AcquireOptions::new()).await?;
/// let r2 = locks.read("config", AcquireOptions::new()).await?;
/// assert!(locks.try_write("config", AcquireOptions::new()).await?.is_none());
/// r1.release().await?;
/// r2.release().await?;
/// let w = locks.write("config", AcquireOptions::new()).await?;
/// w.release().await?;
/// # Ok::<(), sync_lock::Error>(()) }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct LocalRwLock {
    queue: LocalQueue,
}

impl std::fmt::Debug for LocalSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSemaphore")
            .field("names", &self.queue.names())
            .finish()
    }
}

impl std::fmt::Debug for LocalRwLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRwLock")
            .field("names", &self.queue.names())
            .finish()
    }
}

impl LocalSemaphore {
    /// A new, empty set of semaphores.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many hold `name` and how many wait for it.
    pub fn status(&self, name: &str) -> (usize, usize) {
        self.queue.inspect_all(name, |h, w| (h.len(), w))
    }

    /// Takes `name` away from all its holders, as an administrator would: their guards report
    /// [`LossReason::Revoked`]. Returns whether it was held.
    pub fn revoke(&self, name: &str) -> bool {
        self.queue.revoke(name)
    }
}

impl LocalRwLock {
    /// A new, empty set of read-write locks.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many hold `name` and how many wait for it.
    pub fn status(&self, name: &str) -> (usize, usize) {
        self.queue.inspect_all(name, |h, w| (h.len(), w))
    }

    /// Takes `name` away from all its holders, as an administrator would: their guards report
    /// [`LossReason::Revoked`]. Returns whether it was held.
    pub fn revoke(&self, name: &str) -> bool {
        self.queue.revoke(name)
    }
}

fn check(name: &str, rule: Rule, options: &AcquireOptions) -> Result<()> {
    check_name(name)?;
    options.validate(name)?;
    if rule == Rule::Permits(0) {
        return Err(Error::InvalidOptions {
            name: sync_core::name::display_name(name),
            reason: "a semaphore needs at least one permit".into(),
        });
    }
    Ok(())
}

fn wait_error(name: &str, rule: Rule, e: WaitError) -> Error {
    match (e, rule) {
        (WaitError::Timeout { waited }, _) => Error::Timeout {
            name: name.to_owned(),
            waited,
        },
        (WaitError::Mismatch { theirs }, Rule::Permits(ours)) => Error::PermitsMismatch {
            name: name.to_owned(),
            theirs: match theirs {
                Rule::Permits(n) => n,
                _ => 0,
            },
            ours,
        },
        _ => Error::Lost {
            name: name.to_owned(),
            reason: LossReason::Shutdown,
        },
    }
}

fn guard((hold, signal): Granted) -> LockGuard {
    LockGuard::new_local(Some(signal), LocalRawGuard(hold))
}

async fn acquire(
    queue: &LocalQueue,
    name: &str,
    rule: Rule,
    options: AcquireOptions,
) -> Result<LockGuard> {
    let wait = async {
        check(name, rule, &options)?;
        let granted = queue
            .acquire_with(name, rule, (), options.max_wait())
            .await
            .map_err(|e| wait_error(name, rule, e))?;
        Ok(guard(granted))
    };
    telemetry::acquire(ask("acquire", rule, name), wait).await
}

/// The names of an acquire, for its span and metrics.
fn ask<'a>(op: &'static str, rule: Rule, name: &'a str) -> telemetry::Ask<'a> {
    let primitive = match rule {
        Rule::Permits(_) => "semaphore",
        Rule::Read => "rwlock.read",
        Rule::Write => "rwlock.write",
        _ => "lock",
    };
    telemetry::Ask {
        op,
        primitive,
        backend: "local",
        name,
    }
}

fn try_acquire(
    queue: &LocalQueue,
    name: &str,
    rule: Rule,
    options: AcquireOptions,
) -> Result<Option<LockGuard>> {
    let result = check(name, rule, &options).and_then(|()| {
        queue
            .try_acquire_with(name, rule, ())
            .map(|granted| granted.map(guard))
            .map_err(|e| wait_error(name, rule, e))
    });
    telemetry::tried(ask("try_acquire", rule, name), &result);
    result
}

impl Semaphore for LocalSemaphore {
    fn acquire<'a>(
        &'a self,
        name: &'a str,
        permits: usize,
        options: AcquireOptions,
    ) -> LockFuture<'a, LockGuard> {
        LockFuture::waiting(acquire(&self.queue, name, Rule::Permits(permits), options))
    }

    fn try_acquire<'a>(
        &'a self,
        name: &'a str,
        permits: usize,
        options: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        let r = try_acquire(&self.queue, name, Rule::Permits(permits), options);
        LockFuture::ready(r)
    }
}

impl RwLock for LocalRwLock {
    fn read<'a>(&'a self, name: &'a str, options: AcquireOptions) -> LockFuture<'a, LockGuard> {
        LockFuture::waiting(acquire(&self.queue, name, Rule::Read, options))
    }

    fn write<'a>(&'a self, name: &'a str, options: AcquireOptions) -> LockFuture<'a, LockGuard> {
        LockFuture::waiting(acquire(&self.queue, name, Rule::Write, options))
    }

    fn try_read<'a>(
        &'a self,
        name: &'a str,
        options: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        let r = try_acquire(&self.queue, name, Rule::Read, options);
        LockFuture::ready(r)
    }

    fn try_write<'a>(
        &'a self,
        name: &'a str,
        options: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        let r = try_acquire(&self.queue, name, Rule::Write, options);
        LockFuture::ready(r)
    }
}
