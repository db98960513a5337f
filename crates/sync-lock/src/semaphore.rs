//! Named counting semaphores: at most `permits` holders of one name at a time.

use std::sync::Arc;

use crate::{AcquireOptions, LockFuture, LockGuard};

/// Named semaphores: up to `permits` holders of one name at a time, served first come, first
/// served (no barging: a newcomer never overtakes a waiter). Each permit is a [`LockGuard`],
/// with its fencing token (increasing in the order permits are asked for), `lost()`, `release()`
/// and release on drop.
///
/// The number of permits of a name is fixed by those holding or waiting: asking with another
/// number fails with [`Error::PermitsMismatch`](crate::Error::PermitsMismatch), and zero with
/// [`Error::InvalidOptions`](crate::Error::InvalidOptions).
///
/// ```
/// use sync_lock::{AcquireOptions, LocalSemaphore, Semaphore};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let pool = LocalSemaphore::new(); // or EtcdSemaphore::connect(config).await?
/// let a = pool.acquire("db-connections", 2, AcquireOptions::new()).await?;
/// let b = pool.acquire("db-connections", 2, AcquireOptions::new()).await?;
/// assert!(pool.try_acquire("db-connections", 2, AcquireOptions::new()).await?.is_none());
/// a.release().await?;
/// let c = pool.acquire("db-connections", 2, AcquireOptions::new()).await?;
/// assert!(c.fencing_token() > b.fencing_token());
/// # Ok::<(), sync_lock::Error>(()) }).unwrap();
/// ```
pub trait Semaphore: Send + Sync + std::fmt::Debug {
    /// Waits for one of the `permits` permits of `name`. Fails with
    /// [`Error::Timeout`](crate::Error::Timeout) after the options' maximum wait. Cancel-safe:
    /// dropping the future leaves nothing behind.
    fn acquire<'a>(
        &'a self,
        name: &'a str,
        permits: usize,
        options: AcquireOptions,
    ) -> LockFuture<'a, LockGuard>;

    /// Takes a permit if one is free and nobody waits; `Ok(None)` otherwise.
    fn try_acquire<'a>(
        &'a self,
        name: &'a str,
        permits: usize,
        options: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>>;
}

impl<S: Semaphore + ?Sized> Semaphore for Arc<S> {
    fn acquire<'a>(
        &'a self,
        name: &'a str,
        permits: usize,
        o: AcquireOptions,
    ) -> LockFuture<'a, LockGuard> {
        (**self).acquire(name, permits, o)
    }
    fn try_acquire<'a>(
        &'a self,
        name: &'a str,
        permits: usize,
        o: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        (**self).try_acquire(name, permits, o)
    }
}

/// Named read-write locks: readers share a name, a writer excludes everyone. First come, first
/// served, so writers are not starved: a reader that arrives behind a waiting writer waits for
/// it. Each hold is a [`LockGuard`] with its fencing token, `lost()`, `release()` and release on
/// drop.
///
/// ```
/// use sync_lock::{AcquireOptions, LocalRwLock, RwLock};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let locks = LocalRwLock::new(); // or EtcdRwLock::connect(config).await?
/// let r1 = locks.read("config", AcquireOptions::new()).await?;
/// let r2 = locks.read("config", AcquireOptions::new()).await?;
/// assert!(locks.try_write("config", AcquireOptions::new()).await?.is_none());
/// r1.release().await?;
/// r2.release().await?;
/// let w = locks.write("config", AcquireOptions::new()).await?;
/// w.release().await?;
/// # Ok::<(), sync_lock::Error>(()) }).unwrap();
/// ```
pub trait RwLock: Send + Sync + std::fmt::Debug {
    /// Waits to read `name`, shared with other readers.
    fn read<'a>(&'a self, name: &'a str, options: AcquireOptions) -> LockFuture<'a, LockGuard>;

    /// Waits to write `name`, alone.
    fn write<'a>(&'a self, name: &'a str, options: AcquireOptions) -> LockFuture<'a, LockGuard>;

    /// Reads if no writer holds or waits; `Ok(None)` otherwise.
    fn try_read<'a>(
        &'a self,
        name: &'a str,
        options: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>>;

    /// Writes if nobody holds or waits; `Ok(None)` otherwise.
    fn try_write<'a>(
        &'a self,
        name: &'a str,
        options: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>>;
}

impl<L: RwLock + ?Sized> RwLock for Arc<L> {
    fn read<'a>(&'a self, name: &'a str, o: AcquireOptions) -> LockFuture<'a, LockGuard> {
        (**self).read(name, o)
    }
    fn write<'a>(&'a self, name: &'a str, o: AcquireOptions) -> LockFuture<'a, LockGuard> {
        (**self).write(name, o)
    }
    fn try_read<'a>(
        &'a self,
        name: &'a str,
        o: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        (**self).try_read(name, o)
    }
    fn try_write<'a>(
        &'a self,
        name: &'a str,
        o: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        (**self).try_write(name, o)
    }
}
