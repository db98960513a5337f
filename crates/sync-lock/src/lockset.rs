use std::collections::HashMap;
use std::sync::Arc;

use crate::{AcquireOptions, Error, Lock, LockGuard, Result};

/// The seed's shape: `acquire(id)` and `release(id)` on one handle, which keeps the guards.
///
/// ```
/// use sync_lock::{LockSet, LocalLock};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let lock = LockSet::new(LocalLock::new());
/// lock.acquire("id").await?;
/// // … exclusive work …
/// lock.release("id").await?;
/// assert!(lock.release("id").await.is_err()); // not held any more
/// # Ok::<(), sync_lock::Error>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct LockSet {
    lock: Arc<dyn Lock>,
    options: AcquireOptions,
    held: tokio::sync::Mutex<HashMap<String, LockGuard>>,
}

impl LockSet {
    /// A lock set over any backend, with default options.
    pub fn new(lock: impl Lock + 'static) -> Self {
        Self::from_arc(Arc::new(lock))
    }

    /// A lock set over a shared backend.
    pub fn from_arc(lock: Arc<dyn Lock>) -> Self {
        LockSet {
            lock,
            options: AcquireOptions::new(),
            held: Default::default(),
        }
    }

    /// Uses these options for every acquire.
    pub fn with_options(mut self, options: AcquireOptions) -> Self {
        self.options = options;
        self
    }

    /// Waits for the lock `id` and keeps its guard. Fails with [`Error::NotHeld`] (`already
    /// held`) if this set holds it already, instead of waiting for itself forever.
    pub async fn acquire(&self, id: &str) -> Result<u64> {
        if self.held.lock().await.contains_key(id) {
            return Err(Error::NotHeld {
                name: id.to_owned(),
                state: "already held",
            });
        }
        let guard = self.lock.acquire(id, self.options.clone()).await?;
        let token = guard.fencing_token();
        let mut held = self.held.lock().await;
        if held.contains_key(id) {
            // Another task of ours raced us to it and won first: keep theirs, give ours back.
            drop(held);
            guard.release().await?;
            return Err(Error::NotHeld {
                name: id.to_owned(),
                state: "already held",
            });
        }
        held.insert(id.to_owned(), guard);
        Ok(token)
    }

    /// Releases the lock `id`.
    pub async fn release(&self, id: &str) -> Result<()> {
        let guard = self
            .held
            .lock()
            .await
            .remove(id)
            .ok_or_else(|| Error::NotHeld {
                name: id.to_owned(),
                state: "not held",
            })?;
        guard.release().await
    }

    /// The guard of `id`, to check [`LockGuard::lost`] or the fencing token.
    pub async fn with_guard<T>(&self, id: &str, f: impl FnOnce(&LockGuard) -> T) -> Option<T> {
        self.held.lock().await.get(id).map(f)
    }
}
