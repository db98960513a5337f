//! The in-process backend: a thin layer over [`sync_core::local_queue`].

use crate::LockFuture;
use sync_core::local_queue::{Hold, LocalQueue, WaitError};
use sync_core::signal::{LossReason, LossSignal};
use sync_core::telemetry;

use crate::{check_name, AcquireOptions, Error, Lock, LockGuard, Result};

/// Locks shared by the tasks of one process. Cheap to clone: clones share the locks.
///
/// Waiters are served first come, first served; fencing tokens come from one counter, so they
/// strictly increase from one holder of a name to the next; a name with no holder and no waiter
/// takes no memory (it is forgotten as soon as its last holder or waiter goes; see
/// [`sync_core::local_queue`]).
///
/// ```
/// use sync_lock::{AcquireOptions, Lock, LocalLock};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let locks = LocalLock::new();
/// let g = locks.acquire("a", AcquireOptions::new()).await?;
/// assert!(locks.status("a").held);
/// drop(g); // released at once
/// assert!(!locks.status("a").held);
/// # Ok::<(), sync_lock::Error>(()) }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct LocalLock {
    queue: LocalQueue,
}

impl std::fmt::Debug for LocalLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLock")
            .field("names", &self.queue.names())
            .finish()
    }
}

/// What [`LocalLock::status`] reports about one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStatus {
    /// Whether someone holds it.
    pub held: bool,
    /// How many wait for it.
    pub waiters: usize,
}

/// The local backend's raw guard: its hold in the queue.
#[derive(Debug)]
pub(crate) struct LocalRawGuard(pub(crate) Hold);

impl LocalRawGuard {
    /// Releases at once (nothing to wait for in-process); whether it was still held. The hold
    /// stays readable (its name) until the guard drops.
    pub(crate) fn release_now(&mut self) -> bool {
        self.0.end()
    }
}

impl LocalLock {
    /// A new, empty set of locks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `name` is held and how many wait for it.
    pub fn status(&self, name: &str) -> LockStatus {
        self.queue.inspect(name, |holder, waiters| LockStatus {
            held: holder.is_some(),
            waiters,
        })
    }

    /// Takes `name` away from its holder, as an administrator would: the holder's guard reports
    /// [`LossReason::Revoked`] and the next waiter gets the lock. Returns whether it was held.
    pub fn revoke(&self, name: &str) -> bool {
        let revoked = self.queue.revoke(name);
        if revoked {
            tracing::info!(lock = %name, "lock revoked");
        }
        revoked
    }

    /// [`Lock::acquire`]: a free lock is taken when this is called and the future is ready at
    /// once, so an uncontended acquire and its release allocate nothing (once the name is
    /// known), through the trait and `Arc<dyn Lock>` too. A lock that is held is waited for by a
    /// boxed future. Dropping the future, polled or not, gives back whatever it took.
    ///
    /// ```
    /// use sync_lock::{AcquireOptions, LocalLock};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let locks = LocalLock::new();
    /// let g = locks.acquire("a", AcquireOptions::new()).await?;
    /// g.release().await?;
    /// # Ok::<(), sync_lock::Error>(()) }).unwrap();
    /// ```
    pub fn acquire<'a>(
        &'a self,
        name: &'a str,
        options: AcquireOptions,
    ) -> LockFuture<'a, LockGuard> {
        // Uncontended: granted here, with no loss signal made until someone asks, and the
        // future is ready with nothing allocated. Bad input and the waiting path go to the boxed
        // future, to be refused or queued (and recorded) in one place.
        if check_name(name).is_ok() && options.validate(name).is_ok() {
            if let Some(hold) = self.queue.try_acquire_bare(name, ()) {
                let granted = bare_guard(hold);
                telemetry::granted_now(ask("acquire", name), &granted);
                return LockFuture::ready(Ok(granted));
            }
        }
        LockFuture::waiting(self.acquire_inner(name, options))
    }

    /// [`Lock::try_acquire`] on the concrete type: it answers at once, so its future is ready
    /// with nothing allocated.
    pub fn try_acquire<'a>(
        &'a self,
        name: &'a str,
        options: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        let tried = check_name(name)
            .and_then(|()| options.validate(name))
            .map(|()| self.queue.try_acquire_bare(name, ()).map(bare_guard));
        telemetry::tried(ask("try_acquire", name), &tried);
        LockFuture::ready(tried)
    }

    async fn acquire_inner(&self, name: &str, options: AcquireOptions) -> Result<LockGuard> {
        let wait = async {
            check_name(name)?;
            options.validate(name)?;
            let (hold, signal) = self
                .queue
                .acquire(name, (), options.max_wait())
                .await
                .map_err(|e| match e {
                    WaitError::Timeout { waited } => Error::Timeout {
                        name: name.to_owned(),
                        waited,
                    },
                    _ => Error::Lost {
                        name: name.to_owned(),
                        reason: LossReason::Shutdown,
                    },
                })?;
            Ok(guard((hold, signal)))
        };
        telemetry::acquire(ask("acquire", name), wait).await
    }
}

fn ask<'a>(op: &'static str, name: &'a str) -> telemetry::Ask<'a> {
    telemetry::Ask {
        op,
        primitive: "lock",
        backend: "local",
        name,
    }
}

fn guard((hold, signal): (Hold<()>, LossSignal)) -> LockGuard {
    LockGuard::new_local(Some(signal), LocalRawGuard(hold))
}

/// A guard whose loss signal is made only if someone asks (`lost()`, `is_lost()`, …).
fn bare_guard(hold: Hold<()>) -> LockGuard {
    LockGuard::new_local(None, LocalRawGuard(hold))
}

impl Lock for LocalLock {
    fn acquire<'a>(&'a self, name: &'a str, options: AcquireOptions) -> LockFuture<'a, LockGuard> {
        LocalLock::acquire(self, name, options)
    }

    fn try_acquire<'a>(
        &'a self,
        name: &'a str,
        options: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        LocalLock::try_acquire(self, name, options)
    }
}
