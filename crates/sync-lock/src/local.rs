//! The in-process backend.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_core::signal::{loss_signal, LossReason, LossSignal, LossTrigger};
use tokio::sync::oneshot;

use crate::{check_name, AcquireOptions, Error, Lock, LockGuard, Result};

/// Locks shared by the tasks of one process. Cheap to clone: clones share the locks.
///
/// Waiters are served first come, first served; fencing tokens come from one counter, so they
/// strictly increase from one holder of a name to the next; a name with no holder and no waiter
/// takes no memory.
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
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLock")
            .field("names", &self.shared.lock().len())
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

#[derive(Default)]
struct Shared {
    names: Mutex<Names>,
    next_id: AtomicU64,
    fence: AtomicU64,
}

#[derive(Default)]
struct NameState {
    /// The map's key, shared with the guards.
    name: Arc<str>,
    holder: Option<Holder>,
    waiters: VecDeque<(u64, oneshot::Sender<Grant>)>,
}

struct Holder {
    id: u64,
    trigger: LossTrigger,
}

enum Entered {
    Granted(Arc<str>, Grant),
    Queued(Arc<str>, oneshot::Receiver<Grant>),
    Busy,
}

struct Grant {
    token: u64,
    signal: LossSignal,
}

/// The per-name states. Idle entries (no holder, no waiter) are kept, so a name used over and
/// over costs no allocation, and swept when they outgrow the live ones, so memory stays bounded
/// by the names in use.
#[derive(Default)]
struct Names {
    map: HashMap<Arc<str>, NameState>,
    sweep_at: usize,
}

const MIN_SWEEP: usize = 1024;

impl Names {
    fn len(&self) -> usize {
        self.map.len()
    }

    fn get(&self, name: &str) -> Option<&NameState> {
        self.map.get(name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut NameState> {
        self.map.get_mut(name)
    }

    fn entry(&mut self, name: &str) -> (Arc<str>, &mut NameState) {
        if !self.map.contains_key(name) {
            let key: Arc<str> = Arc::from(name);
            self.map.insert(
                key.clone(),
                NameState {
                    name: key,
                    ..Default::default()
                },
            );
        }
        let state = self.map.get_mut(name).expect("inserted above");
        (state.name.clone(), state)
    }

    /// Called when an entry may have become idle: sweeps idle entries once they are many.
    fn maybe_sweep(&mut self) {
        if self.map.len() > self.sweep_at.max(MIN_SWEEP) {
            self.map
                .retain(|_, s| s.holder.is_some() || !s.waiters.is_empty());
            self.sweep_at = self.map.len() * 2;
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Names> {
        // Every critical section leaves the map consistent, so a poisoned lock is still usable.
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `id` the holder of `state`, returning its grant.
    fn grant(&self, state: &mut NameState, id: u64) -> Grant {
        let (trigger, signal) = loss_signal();
        state.holder = Some(Holder { id, trigger });
        Grant {
            token: self.fence.fetch_add(1, Ordering::Relaxed) + 1,
            signal,
        }
    }

    /// Hands the free lock to the first waiter still waiting.
    fn hand_over(&self, state: &mut NameState) {
        debug_assert!(state.holder.is_none());
        while let Some((id, tx)) = state.waiters.pop_front() {
            let grant = self.grant(state, id);
            if tx.send(grant).is_ok() {
                return;
            }
            // That waiter went away between enqueuing and now: try the next.
            state.holder = None;
        }
    }

    /// Ends `id`'s hold on `name` (if it still holds it) with `reason`; returns whether it did.
    fn end_hold(&self, name: &str, id: Option<u64>, reason: LossReason) -> bool {
        let mut names = self.lock();
        let Some(state) = names.get_mut(name) else {
            return false;
        };
        let matches = match (&state.holder, id) {
            (Some(h), Some(id)) => h.id == id,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if matches {
            if let Some(h) = state.holder.take() {
                h.trigger.fire(reason);
            }
            self.hand_over(state);
        }
        names.maybe_sweep();
        matches
    }
}

impl LocalLock {
    /// A new, empty set of locks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `name` is held and how many wait for it.
    pub fn status(&self, name: &str) -> LockStatus {
        let names = self.shared.lock();
        names.get(name).map_or(
            LockStatus {
                held: false,
                waiters: 0,
            },
            |s| LockStatus {
                held: s.holder.is_some(),
                waiters: s.waiters.len(),
            },
        )
    }

    /// Takes `name` away from its holder, as an administrator would: the holder's guard reports
    /// [`LossReason::Revoked`] and the next waiter gets the lock. Returns whether it was held.
    pub fn revoke(&self, name: &str) -> bool {
        let revoked = self.shared.end_hold(name, None, LossReason::Revoked);
        if revoked {
            tracing::info!(lock = %name, "lock revoked");
        }
        revoked
    }

    fn guard(&self, name: Arc<str>, id: u64, grant: Grant) -> LockGuard {
        LockGuard::new_local(
            name.clone(),
            grant.token,
            grant.signal,
            LocalRawGuard {
                shared: self.shared.clone(),
                name,
                id,
                done: false,
            },
        )
    }

    /// Takes the lock at once if it is free and nobody waits; otherwise, if `queue`, joins the
    /// queue and returns the receiver of its grant.
    fn enter(&self, name: &str, id: u64, queue: bool) -> Entered {
        let mut names = self.shared.lock();
        let (key, state) = names.entry(name);
        if state.holder.is_none() && state.waiters.is_empty() {
            return Entered::Granted(key, self.shared.grant(state, id));
        }
        if !queue {
            return Entered::Busy;
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push_back((id, tx));
        Entered::Queued(key, rx)
    }

    async fn acquire_inner(&self, name: &str, options: AcquireOptions) -> Result<LockGuard> {
        check_name(name)?;
        options.validate(name)?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (key, rx) = match self.enter(name, id, true) {
            Entered::Granted(key, grant) => {
                tracing::debug!(lock = %name, token = grant.token, "lock acquired");
                return Ok(self.guard(key, id, grant));
            }
            Entered::Queued(key, rx) => (key, rx),
            Entered::Busy => unreachable!("enter() queues when asked to"),
        };
        let started = Instant::now();
        let mut waiter = Waiter {
            shared: self.shared.clone(),
            name,
            id,
            rx: Some(rx),
        };
        let rx = waiter.rx.as_mut().expect("set above");
        let grant = match options.max_wait() {
            Some(max) => match tokio::time::timeout(max, rx).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Error::Timeout {
                        name: name.to_owned(),
                        waited: started.elapsed(),
                    })
                }
            },
            None => rx.await,
        };
        waiter.rx = None;
        let grant = grant.map_err(|_| Error::Lost {
            name: name.to_owned(),
            reason: LossReason::Shutdown,
        })?;
        tracing::debug!(lock = %name, token = grant.token, waited = ?started.elapsed(), "lock acquired");
        Ok(self.guard(key, id, grant))
    }
}

/// A queued waiter; leaving the queue (or passing on a grant that arrived too late) on drop.
struct Waiter<'a> {
    shared: Arc<Shared>,
    name: &'a str,
    id: u64,
    rx: Option<oneshot::Receiver<Grant>>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if self.rx.is_none() {
            return;
        }
        let mut names = self.shared.lock();
        let Some(state) = names.get_mut(self.name) else {
            return;
        };
        let before = state.waiters.len();
        state.waiters.retain(|(id, _)| *id != self.id);
        if state.waiters.len() == before {
            // Not queued any more: we were granted the lock but nobody will take the guard.
            drop(names);
            self.shared
                .end_hold(self.name, Some(self.id), LossReason::Released);
            return;
        }
        names.maybe_sweep();
    }
}

#[derive(Debug)]
pub(crate) struct LocalRawGuard {
    shared: Arc<Shared>,
    name: Arc<str>,
    id: u64,
    done: bool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl LocalRawGuard {
    /// Releases at once (nothing to wait for in-process); whether it was still held.
    pub(crate) fn release_now(mut self) -> bool {
        self.done = true;
        self.shared
            .end_hold(&self.name, Some(self.id), LossReason::Released)
    }
}

impl Drop for LocalRawGuard {
    fn drop(&mut self) {
        if !self.done {
            self.shared
                .end_hold(&self.name, Some(self.id), LossReason::Released);
        }
    }
}

impl Lock for LocalLock {
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
            check_name(name)?;
            options.validate(name)?;
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            Ok(match self.enter(name, id, false) {
                Entered::Granted(key, grant) => Some(self.guard(key, id, grant)),
                _ => None,
            })
        }
        .boxed()
    }
}
