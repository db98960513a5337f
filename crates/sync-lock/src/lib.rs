#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod error;
mod fence;
mod future;
mod guard;
mod local;
mod local_semaphore;
mod lockset;
mod options;
mod semaphore;

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
mod etcd;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

/// For the conformance macro's expansion in other crates.
#[cfg(feature = "conformance")]
#[doc(hidden)]
pub use sync_core as __core;

use std::future::Future;
use std::sync::Arc;

pub use error::{Error, Result};
pub use fence::Fence;
pub use future::LockFuture;
pub use guard::{LockGuard, RawGuard};
pub use local::{LocalLock, LockStatus};
pub use local_semaphore::{LocalRwLock, LocalSemaphore};
pub use lockset::LockSet;
pub use options::AcquireOptions;
pub use semaphore::{RwLock, Semaphore};
pub use sync_core::name::MAX_NAME_LEN;
pub use sync_core::signal::{LossReason, LossSignal};

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use etcd::{EtcdLock, EtcdRwLock, EtcdSemaphore};
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use sync_etcd::{EtcdConfig, EtcdConnection, Session, TlsConfig};

/// Named, exclusive locks shared by every holder of the same backend: tasks of one process
/// ([`LocalLock`]) or processes on many machines (`EtcdLock`, feature `etcd`).
///
/// The trait is dyn-compatible, so `Arc<dyn Lock>` picks a backend at run time, and generic code
/// can take `impl Lock`.
///
/// ```
/// use std::sync::Arc;
/// use sync_lock::{AcquireOptions, Lock, LocalLock};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let locks: Arc<dyn Lock> = Arc::new(LocalLock::new());
/// let guard = locks.acquire("invoices", AcquireOptions::new()).await?;
/// assert!(locks.try_acquire("invoices", AcquireOptions::new()).await?.is_none());
/// guard.release().await?;
/// # Ok::<(), sync_lock::Error>(()) }).unwrap();
/// ```
pub trait Lock: Send + Sync + std::fmt::Debug {
    /// Waits for the lock `name` (first come, first served) and returns its guard. Fails with
    /// [`Error::Timeout`] after the options' maximum wait. Cancel-safe: dropping the future
    /// leaves nothing behind.
    fn acquire<'a>(&'a self, name: &'a str, options: AcquireOptions) -> LockFuture<'a, LockGuard>;

    /// Takes the lock if nobody holds it or waits for it; `Ok(None)` otherwise. Never waits
    /// behind a holder.
    fn try_acquire<'a>(
        &'a self,
        name: &'a str,
        options: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>>;
}

impl<L: Lock + ?Sized> Lock for Arc<L> {
    fn acquire<'a>(&'a self, name: &'a str, o: AcquireOptions) -> LockFuture<'a, LockGuard> {
        (**self).acquire(name, o)
    }
    fn try_acquire<'a>(
        &'a self,
        name: &'a str,
        o: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        (**self).try_acquire(name, o)
    }
}

impl<L: Lock + ?Sized> Lock for Box<L> {
    fn acquire<'a>(&'a self, name: &'a str, o: AcquireOptions) -> LockFuture<'a, LockGuard> {
        (**self).acquire(name, o)
    }
    fn try_acquire<'a>(
        &'a self,
        name: &'a str,
        o: AcquireOptions,
    ) -> LockFuture<'a, Option<LockGuard>> {
        (**self).try_acquire(name, o)
    }
}

/// Conveniences over any [`Lock`].
pub trait LockExt: Lock {
    /// Runs `work` while holding `name`, then releases it; the work's output is returned. If the
    /// lock is lost meanwhile, the work is cancelled (dropped) and [`Error::Lost`] returned.
    ///
    /// ```
    /// use sync_lock::{AcquireOptions, LockExt, LocalLock};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let locks = LocalLock::new();
    /// let n = locks.with_lock("counter", AcquireOptions::new(), |_token| async { 41 + 1 }).await?;
    /// assert_eq!(n, 42);
    /// # Ok::<(), sync_lock::Error>(()) }).unwrap();
    /// ```
    fn with_lock<'a, F, Fut, T>(
        &'a self,
        name: &'a str,
        options: AcquireOptions,
        work: F,
    ) -> impl Future<Output = Result<T>> + Send + 'a
    where
        F: FnOnce(u64) -> Fut + Send + 'a,
        Fut: Future<Output = T> + Send + 'a,
        T: Send + 'a,
    {
        async move {
            let guard = self.acquire(name, options).await?;
            let out = tokio::select! {
                out = work(guard.fencing_token()) => out,
                reason = guard.lost() => {
                    return Err(Error::Lost { name: name.to_owned(), reason });
                }
            };
            guard.release().await?;
            Ok(out)
        }
    }
}

impl<L: Lock + ?Sized> LockExt for L {}

/// Opens a lock backend from a URL: `local` (in-process) or `etcd://host:port,…/prefix?ttl=10s`
/// (feature `etcd`).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let locks = sync_lock::open("local").await?;
/// let g = locks.acquire("x", Default::default()).await?;
/// g.release().await?;
/// assert!(sync_lock::open("zookeeper://x").await.is_err());
/// # Ok::<(), sync_lock::Error>(()) }).unwrap();
/// ```
pub async fn open(url: &str) -> Result<Arc<dyn Lock>> {
    match backend(url)? {
        sync_core::backend::Backend::Local => Ok(Arc::new(LocalLock::new())),
        #[cfg(feature = "etcd")]
        sync_core::backend::Backend::Etcd(cfg) => Ok(Arc::new(EtcdLock::connect(*cfg).await?)),
        #[allow(unreachable_patterns)]
        other => Err(not_compiled(&other)),
    }
}

/// Opens a semaphore backend from a URL, like [`open`]: `local` or `etcd://…` (feature `etcd`).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let sems = sync_lock::open_semaphore("local").await?;
/// let permit = sems.acquire("pool", 2, Default::default()).await?;
/// let second = sems.try_acquire("pool", 2, Default::default()).await?;
/// assert!(second.is_some(), "two permits");
/// assert!(sems.try_acquire("pool", 2, Default::default()).await?.is_none());
/// permit.release().await?;
/// # Ok::<(), sync_lock::Error>(()) }).unwrap();
/// ```
pub async fn open_semaphore(url: &str) -> Result<Arc<dyn Semaphore>> {
    match backend(url)? {
        sync_core::backend::Backend::Local => Ok(Arc::new(LocalSemaphore::new())),
        #[cfg(feature = "etcd")]
        sync_core::backend::Backend::Etcd(cfg) => Ok(Arc::new(EtcdSemaphore::connect(*cfg).await?)),
        #[allow(unreachable_patterns)]
        other => Err(not_compiled(&other)),
    }
}

/// Opens a read-write lock backend from a URL, like [`open`]: `local` or `etcd://…` (feature
/// `etcd`).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let locks = sync_lock::open_rwlock("local").await?;
/// let a = locks.read("catalog", Default::default()).await?;
/// let b = locks.read("catalog", Default::default()).await?; // readers share
/// assert!(locks.try_write("catalog", Default::default()).await?.is_none());
/// a.release().await?;
/// b.release().await?;
/// # Ok::<(), sync_lock::Error>(()) }).unwrap();
/// ```
pub async fn open_rwlock(url: &str) -> Result<Arc<dyn RwLock>> {
    match backend(url)? {
        sync_core::backend::Backend::Local => Ok(Arc::new(LocalRwLock::new())),
        #[cfg(feature = "etcd")]
        sync_core::backend::Backend::Etcd(cfg) => Ok(Arc::new(EtcdRwLock::connect(*cfg).await?)),
        #[allow(unreachable_patterns)]
        other => Err(not_compiled(&other)),
    }
}

fn backend(url: &str) -> Result<sync_core::backend::Backend> {
    sync_core::backend::Backend::from_url(url).map_err(|e| Error::Config(e.to_string()))
}

fn not_compiled(backend: &sync_core::backend::Backend) -> Error {
    Error::Config(format!(
        "the {} backend is not compiled into sync-lock; enable its `{}` feature",
        backend.name(),
        backend.name()
    ))
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    sync_core::name::validate_name(name).map_err(|r| Error::invalid_name(name, r))
}
