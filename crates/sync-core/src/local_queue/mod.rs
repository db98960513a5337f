//! The engine of the in-process backends (`LocalLock`, `LocalLeader`): named FIFO queues of
//! claims, one holder per name, written once.
//!
//! Users do not need it: it is public so that every primitive crate's `local` backend is a thin
//! layer over the same queue. It provides
//!
//! - first come, first served: a claim waits behind the holder and every earlier claim;
//! - tokens from one counter per [`LocalQueue`], so they strictly increase from one holder of a
//!   name to the next (fencing tokens, terms);
//! - a [`LossSignal`] per hold that fires with [`LossReason::Released`] on release and with
//!   [`LossReason::Revoked`] on [`LocalQueue::revoke`];
//! - cancel safety: a dropped [`acquire`](LocalQueue::acquire) leaves the queue, and passes on a
//!   grant that arrived too late; a dropped [`Hold`] releases;
//! - per-name state of the backend's own (observers, …) through [`Watch`].
//!
//! **Idle names** take no memory: a name with no holder, no waiter and nothing its [`Watch`]
//! keeps alive is removed at once, when its last hold, waiter or watcher goes. A name used over
//! and over thus allocates its entry again each time it turns from idle to held; in exchange,
//! memory is bounded by the names in use at every moment, with no sweep to tune or to wait for.
//!
//! ```
//! use sync_core::local_queue::LocalQueue;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let q: LocalQueue = LocalQueue::new();
//! let (first, _lost) = q.try_acquire("a", ()).expect("free");
//! assert!(q.try_acquire("a", ()).is_none());
//! let token = first.token();
//! assert!(first.release());
//! let (second, _lost) = q.acquire("a", (), None).await.unwrap();
//! assert!(second.token() > token);
//! drop(second);
//! assert_eq!(q.names(), 0); // an idle name takes no memory
//! # });
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::signal::{loss_signal, LossReason, LossSignal, LossTrigger};

/// Per-name state a backend keeps beside the queue (e.g. the observers of a leader group), told
/// of every change of the holder.
pub trait Watch<C>: Default + Send + 'static {
    /// Called after the holder of the name changed (granted, ended, handed over) or updated its
    /// claim ([`Hold::update`]); `holder` is the holder now.
    fn changed(&mut self, holder: Option<&Holder<C>>) {
        let _ = holder;
    }

    /// Whether this state keeps the name alive although it has no holder and no waiter (live
    /// observers). Called when the name may have become idle.
    fn in_use(&mut self) -> bool {
        false
    }
}

impl<C> Watch<C> for () {}

/// The current holder of a name, as [`Watch::changed`] and [`LocalQueue::inspect`] see it.
pub struct Holder<C> {
    id: u64,
    token: u64,
    claim: C,
    trigger: LossTrigger,
}

impl<C> Holder<C> {
    /// Its token: strictly greater than every earlier holder's of the same queue.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// What it brought when it asked (a candidate's id and value, …).
    pub fn claim(&self) -> &C {
        &self.claim
    }
}

impl<C: fmt::Debug> fmt::Debug for Holder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Holder")
            .field("token", &self.token)
            .field("claim", &self.claim)
            .finish()
    }
}

/// Why [`LocalQueue::acquire`] returned without a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitError {
    /// `max_wait` passed first; the claim left the queue.
    Timeout {
        /// How long it waited.
        waited: Duration,
    },
    /// The queue dropped the claim without granting it (it does not, short of a bug).
    Closed,
}

struct Waiting<C> {
    id: u64,
    claim: C,
    tx: oneshot::Sender<Grant>,
}

struct Grant {
    token: u64,
    signal: LossSignal,
}

struct Entry<C, W> {
    /// The map's key, shared with the holds.
    key: Arc<str>,
    holder: Option<Holder<C>>,
    waiters: VecDeque<Waiting<C>>,
    watch: W,
}

impl<C, W: Watch<C>> Entry<C, W> {
    fn is_idle(&mut self) -> bool {
        self.holder.is_none() && self.waiters.is_empty() && !self.watch.in_use()
    }
}

type Names<C, W> = HashMap<Arc<str>, Entry<C, W>>;

struct Shared<C, W> {
    names: Mutex<Names<C, W>>,
    next_id: AtomicU64,
    tokens: AtomicU64,
}

/// Named FIFO queues with one holder per name; see the [module docs](self). Cheap to clone:
/// clones share the queues.
///
/// `C` is what a claim brings (kept by the holder, e.g. a candidate's id); `W` is the backend's
/// per-name state.
pub struct LocalQueue<C = (), W = ()> {
    shared: Arc<Shared<C, W>>,
}

impl<C, W> Clone for LocalQueue<C, W> {
    fn clone(&self) -> Self {
        LocalQueue {
            shared: self.shared.clone(),
        }
    }
}

impl<C: Send + 'static, W: Watch<C>> Default for LocalQueue<C, W> {
    fn default() -> Self {
        LocalQueue {
            shared: Arc::new(Shared {
                names: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                tokens: AtomicU64::new(0),
            }),
        }
    }
}

impl<C: Send + 'static, W: Watch<C>> fmt::Debug for LocalQueue<C, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalQueue")
            .field("names", &self.names())
            .finish()
    }
}

impl<C, W> Shared<C, W> {
    fn lock(&self) -> MutexGuard<'_, Names<C, W>> {
        // Every critical section leaves the map consistent, so a poisoned lock is still usable.
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<C: Send + 'static, W: Watch<C>> Shared<C, W> {
    /// Makes `id` the holder of `entry`, returning its grant.
    fn grant(&self, entry: &mut Entry<C, W>, id: u64, claim: C) -> Grant {
        let (trigger, signal) = loss_signal();
        let token = self.tokens.fetch_add(1, Ordering::Relaxed) + 1;
        entry.holder = Some(Holder {
            id,
            token,
            claim,
            trigger,
        });
        Grant { token, signal }
    }

    /// Hands the free name to the first waiter still waiting.
    fn hand_over(&self, entry: &mut Entry<C, W>) {
        debug_assert!(entry.holder.is_none());
        while let Some(w) = entry.waiters.pop_front() {
            let grant = self.grant(entry, w.id, w.claim);
            if w.tx.send(grant).is_ok() {
                return;
            }
            // That waiter went away between queuing and now: try the next.
            entry.holder = None;
        }
    }

    /// Ends `id`'s hold on `name` (anyone's if `None`) with `reason`, hands the name over and
    /// forgets it if idle. Returns whether a hold was ended.
    fn end_hold(&self, name: &str, id: Option<u64>, reason: LossReason) -> bool {
        let mut names = self.lock();
        let Some(entry) = names.get_mut(name) else {
            return false;
        };
        let ended = match (&entry.holder, id) {
            (Some(h), Some(id)) => h.id == id,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if ended {
            if let Some(h) = entry.holder.take() {
                h.trigger.fire(reason);
            }
            self.hand_over(entry);
            entry.watch.changed(entry.holder.as_ref());
        }
        forget_if_idle(&mut names, name);
        ended
    }
}

fn forget_if_idle<C, W: Watch<C>>(names: &mut Names<C, W>, name: &str) {
    if names.get_mut(name).is_some_and(Entry::is_idle) {
        names.remove(name);
    }
}

impl<C: Send + 'static, W: Watch<C>> LocalQueue<C, W> {
    /// A new set of empty queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many names take memory (those with a holder, a waiter or a watch in use).
    pub fn names(&self) -> usize {
        self.shared.lock().len()
    }

    /// Reads the holder of `name` and how many wait behind it.
    pub fn inspect<R>(&self, name: &str, f: impl FnOnce(Option<&Holder<C>>, usize) -> R) -> R {
        let names = self.shared.lock();
        match names.get(name) {
            Some(e) => f(e.holder.as_ref(), e.waiters.len()),
            None => f(None, 0),
        }
    }

    /// Runs `f` on the per-name state of `name` (made if missing) and the holder; the name is
    /// forgotten afterwards if it is idle.
    pub fn with_watch<R>(&self, name: &str, f: impl FnOnce(&mut W, Option<&Holder<C>>) -> R) -> R {
        let mut names = self.shared.lock();
        let entry = entry(&mut names, name);
        let r = f(&mut entry.watch, entry.holder.as_ref());
        forget_if_idle(&mut names, name);
        r
    }

    /// Forgets `name` if it is idle (call it when something a [`Watch`] counted went away).
    pub fn tidy(&self, name: &str) {
        forget_if_idle(&mut self.shared.lock(), name);
    }

    /// A handle that does not keep the queues alive.
    pub fn downgrade(&self) -> WeakLocalQueue<C, W> {
        WeakLocalQueue {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Takes `name` away from its holder, as an administrator would: its signal fires with
    /// [`LossReason::Revoked`] and the next waiter gets it. Returns whether it was held.
    pub fn revoke(&self, name: &str) -> bool {
        self.shared.end_hold(name, None, LossReason::Revoked)
    }

    /// Takes `name` at once if nobody holds it or waits for it.
    pub fn try_acquire(&self, name: &str, claim: C) -> Option<(Hold<C, W>, LossSignal)> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut names = self.shared.lock();
        let entry = entry(&mut names, name);
        if entry.holder.is_some() || !entry.waiters.is_empty() {
            return None;
        }
        let key = entry.key.clone();
        let grant = self.shared.grant(entry, id, claim);
        entry.watch.changed(entry.holder.as_ref());
        drop(names);
        Some(self.hold(key, id, grant))
    }

    /// Takes `name`, waiting behind the holder and every earlier claim for at most `max_wait`
    /// (no limit if `None`). Cancel-safe: dropping the future leaves the queue, and releases a
    /// grant that arrived after the last poll.
    pub async fn acquire(
        &self,
        name: &str,
        claim: C,
        max_wait: Option<Duration>,
    ) -> Result<(Hold<C, W>, LossSignal), WaitError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (key, rx) = {
            let mut names = self.shared.lock();
            let entry = entry(&mut names, name);
            let key = entry.key.clone();
            if entry.holder.is_none() && entry.waiters.is_empty() {
                let grant = self.shared.grant(entry, id, claim);
                entry.watch.changed(entry.holder.as_ref());
                drop(names);
                return Ok(self.hold(key, id, grant));
            }
            let (tx, rx) = oneshot::channel();
            entry.waiters.push_back(Waiting { id, claim, tx });
            (key, rx)
        };
        let started = Instant::now();
        let mut waiter = Waiter {
            shared: &self.shared,
            name: &key,
            id,
            rx: Some(rx),
        };
        let rx = waiter.rx.as_mut().expect("set above");
        let grant = match max_wait {
            Some(max) => match tokio::time::timeout(max, rx).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(WaitError::Timeout {
                        waited: started.elapsed(),
                    })
                }
            },
            None => rx.await,
        };
        waiter.rx = None;
        let grant = grant.map_err(|_| WaitError::Closed)?;
        Ok(self.hold(key.clone(), id, grant))
    }

    fn hold(&self, name: Arc<str>, id: u64, grant: Grant) -> (Hold<C, W>, LossSignal) {
        let hold = Hold {
            shared: self.shared.clone(),
            name,
            id,
            token: grant.token,
            done: false,
        };
        (hold, grant.signal)
    }
}

fn entry<'a, C, W: Default>(names: &'a mut Names<C, W>, name: &str) -> &'a mut Entry<C, W> {
    if !names.contains_key(name) {
        let key: Arc<str> = Arc::from(name);
        names.insert(
            key.clone(),
            Entry {
                key,
                holder: None,
                waiters: VecDeque::new(),
                watch: W::default(),
            },
        );
    }
    names.get_mut(name).expect("inserted above")
}

/// A [`LocalQueue`] that may be gone: see [`LocalQueue::downgrade`].
pub struct WeakLocalQueue<C = (), W = ()> {
    shared: Weak<Shared<C, W>>,
}

impl<C, W> Clone for WeakLocalQueue<C, W> {
    fn clone(&self) -> Self {
        WeakLocalQueue {
            shared: self.shared.clone(),
        }
    }
}

impl<C, W> fmt::Debug for WeakLocalQueue<C, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakLocalQueue")
    }
}

impl<C, W> WeakLocalQueue<C, W> {
    /// The queues, if some [`LocalQueue`] still keeps them.
    pub fn upgrade(&self) -> Option<LocalQueue<C, W>> {
        self.shared.upgrade().map(|shared| LocalQueue { shared })
    }
}

/// A queued claim; leaves the queue (or passes on a grant that came too late) on drop.
struct Waiter<'a, C: Send + 'static, W: Watch<C>> {
    shared: &'a Shared<C, W>,
    name: &'a str,
    id: u64,
    rx: Option<oneshot::Receiver<Grant>>,
}

impl<C: Send + 'static, W: Watch<C>> Drop for Waiter<'_, C, W> {
    fn drop(&mut self) {
        if self.rx.is_none() {
            return;
        }
        let mut names = self.shared.lock();
        let Some(entry) = names.get_mut(self.name) else {
            return;
        };
        let before = entry.waiters.len();
        entry.waiters.retain(|w| w.id != self.id);
        if entry.waiters.len() == before {
            // Not queued any more: it was granted, but nobody will take the hold.
            drop(names);
            self.shared
                .end_hold(self.name, Some(self.id), LossReason::Released);
            return;
        }
        forget_if_idle(&mut names, self.name);
    }
}

/// One hold of a name, until [`release`](Hold::release), drop or [`revoke`](LocalQueue::revoke).
pub struct Hold<C: Send + 'static = (), W: Watch<C> = ()> {
    shared: Arc<Shared<C, W>>,
    name: Arc<str>,
    id: u64,
    token: u64,
    done: bool,
}

impl<C: Send + 'static, W: Watch<C>> fmt::Debug for Hold<C, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold")
            .field("name", &self.name)
            .field("token", &self.token)
            .finish()
    }
}

impl<C: Send + 'static, W: Watch<C>> Hold<C, W> {
    /// The name held.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Its token (see [`Holder::token`]).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Releases now; returns whether it was still held (not revoked first). The signal fires
    /// with [`LossReason::Released`] and the next waiter gets the name.
    pub fn release(mut self) -> bool {
        self.done = true;
        self.shared
            .end_hold(&self.name, Some(self.id), LossReason::Released)
    }

    /// Changes the claim while it is held, and tells the [`Watch`]; returns whether it was
    /// still held (nothing changes otherwise).
    pub fn update(&self, f: impl FnOnce(&mut C)) -> bool {
        let mut names = self.shared.lock();
        let Some(entry) = names.get_mut(&*self.name) else {
            return false;
        };
        match entry.holder.as_mut() {
            Some(h) if h.id == self.id => {
                f(&mut h.claim);
                entry.watch.changed(entry.holder.as_ref());
                true
            }
            _ => false,
        }
    }
}

impl<C: Send + 'static, W: Watch<C>> Drop for Hold<C, W> {
    fn drop(&mut self) {
        if !self.done {
            self.shared
                .end_hold(&self.name, Some(self.id), LossReason::Released);
        }
    }
}

#[cfg(test)]
mod tests;
