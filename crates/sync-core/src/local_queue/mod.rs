//! The engine of the in-process backends (`LocalLock`, `LocalLeader`): named FIFO queues of
//! claims, each admitted by its [`Rule`] (one holder by default), written once.
//!
//! Users do not need it: it is public so that every primitive crate's `local` backend is a thin
//! layer over the same queue. It provides
//!
//! - first come, first served: a claim waits until its [`Rule`] admits it given the holders and
//!   every earlier claim ([`Rule::Exclusive`], the default: until nobody is ahead; permits,
//!   readers and writers through [`LocalQueue::acquire_with`]); whenever a hold ends or a waiter
//!   leaves, waiters are admitted from the front while their rule admits them;
//! - tokens from one counter per [`LocalQueue`], so they strictly increase from one holder of a
//!   name to the next, in grant order (fencing tokens, terms);
//! - a [`LossSignal`] per hold that fires with [`LossReason::Released`] on release and with
//!   [`LossReason::Revoked`] on [`LocalQueue::revoke`];
//! - cancel safety: a dropped [`acquire`](LocalQueue::acquire) leaves the queue, and passes on a
//!   grant that arrived too late; a dropped [`Hold`] releases;
//! - per-name state of the backend's own (observers, …) through [`Watch`].
//!
//! **Idle names** (no holder, no waiter, nothing its [`Watch`] keeps alive) stay in the map
//! until it is full: then, before it would grow, every idle name is dropped at once. A name used
//! over and over keeps its entry (its acquire allocates nothing), and memory stays within what
//! the busiest moment's names in use needed (below 64 names, idle ones are kept).
//! [`names`](LocalQueue::names) counts the names in use.
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
//! assert_eq!(q.names(), 0); // no name in use
//! # });
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::signal::{loss_signal, LossReason, LossSignal, LossTrigger};

mod hold;
mod rule;
pub use hold::Hold;
pub use rule::Rule;

/// Per-name state a backend keeps beside the queue (e.g. the observers of a leader group), told
/// of every change of the holder.
pub trait Watch<C>: Default + Send + 'static {
    /// Called after the holders of the name changed (granted, ended, handed over) or one updated
    /// its claim ([`Hold::update`]); `holder` is the earliest holder now.
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
    rule: Rule,
    claim: C,
    /// Made when the hold or someone else first asks for its loss signal (see
    /// [`Hold::loss_signal`]): a hold nobody watches costs no allocation.
    trigger: Option<LossTrigger>,
}

impl<C> Holder<C> {
    /// The rule it was admitted by.
    pub fn rule(&self) -> Rule {
        self.rule
    }

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
    /// A claim already there (holding or waiting) has a rule that conflicts with this one's
    /// (see [`Rule::mismatch`]); the claim was not queued.
    Mismatch {
        /// The rule of those already there.
        theirs: Rule,
    },
}

struct Waiting<C> {
    id: u64,
    rule: Rule,
    claim: C,
    tx: oneshot::Sender<Grant>,
}

struct Grant {
    token: u64,
    /// Made at the grant for the callers that take one at once.
    signal: Option<LossSignal>,
}

struct Entry<C, W> {
    /// The map's key, shared with the holds.
    key: Arc<str>,
    /// In grant order.
    holders: Vec<Holder<C>>,
    waiters: VecDeque<Waiting<C>>,
    watch: W,
}

impl<C, W: Watch<C>> Entry<C, W> {
    fn is_idle(&mut self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty() && !self.watch.in_use()
    }

    /// Whether a newcomer with `rule` is admitted at once (nobody waits, and the rule admits
    /// it given the holders).
    fn admits_now(&self, rule: Rule) -> bool {
        self.waiters.is_empty() && rule.admits(self.holders.iter().map(|h| &h.rule))
    }

    /// The rule of a claim there that conflicts with `rule`, if any.
    fn mismatch(&self, rule: Rule) -> Option<Rule> {
        let rules = self.holders.iter().map(|h| h.rule);
        rules
            .chain(self.waiters.iter().map(|w| w.rule))
            .find(|&theirs| rule.mismatch(theirs))
    }

    fn first(&self) -> Option<&Holder<C>> {
        self.holders.first()
    }

    /// Tells the watch of a change of the holders.
    fn notify(&mut self) {
        self.watch.changed(self.holders.first());
    }
}

/// A hold and its loss signal, as the queue hands them out.
pub type Granted<C = (), W = ()> = (Hold<C, W>, LossSignal);

/// Names are chosen by the application, possibly from its users' input: the hash is seeded at
/// random per map (hashbrown's foldhash), not a fixed function an attacker could aim collisions
/// at.
type Names<C, W> = hashbrown::HashMap<Arc<str>, Entry<C, W>>;

struct Shared<C, W> {
    state: Mutex<State<C, W>>,
}

/// Everything behind the one lock: the names, and the counters of claim ids and tokens (plain
/// numbers: every claim and grant takes the lock anyway, so they cost no atomic operation of
/// their own).
struct State<C, W> {
    names: Names<C, W>,
    next_id: u64,
    /// The last token granted.
    tokens: u64,
}

impl<C, W> State<C, W> {
    /// A new claim's id.
    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

/// Named FIFO queues, each claim admitted by its [`Rule`]; see the [module docs](self). Cheap to clone:
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
                state: Mutex::new(State {
                    names: hashbrown::HashMap::default(),
                    next_id: 0,
                    tokens: 0,
                }),
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
    fn lock(&self) -> MutexGuard<'_, State<C, W>> {
        // Every critical section leaves the state consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Makes `id` a holder of `entry`, returning its grant (the next of `tokens`), with its loss
/// signal if `signal`.
fn grant<C, W>(
    tokens: &mut u64,
    entry: &mut Entry<C, W>,
    id: u64,
    rule: Rule,
    claim: C,
    signal: bool,
) -> Grant {
    let (trigger, signal) = match signal {
        true => {
            let (t, s) = loss_signal();
            (Some(t), Some(s))
        }
        false => (None, None),
    };
    *tokens += 1;
    let token = *tokens;
    entry.holders.push(Holder {
        id,
        token,
        rule,
        claim,
        trigger,
    });
    Grant { token, signal }
}

/// Admits waiters from the front while their rule admits them, with tokens from `tokens`;
/// returns whether any was.
fn admit<C, W>(tokens: &mut u64, entry: &mut Entry<C, W>) -> bool {
    let mut any = false;
    while let Some(front) = entry.waiters.front() {
        if !front.rule.admits(entry.holders.iter().map(|h| &h.rule)) {
            break;
        }
        let w = entry.waiters.pop_front().expect("front exists");
        let grant = grant(tokens, entry, w.id, w.rule, w.claim, true);
        if w.tx.send(grant).is_ok() {
            any = true;
        } else {
            // That waiter went away between queuing and now: try the next.
            entry.holders.pop();
        }
    }
    any
}

impl<C: Send + 'static, W: Watch<C>> Shared<C, W> {
    /// Ends `id`'s hold on `name` (anyone's if `None`) with `reason`, hands the name over and
    /// forgets it if idle. Returns whether a hold was ended.
    fn end_hold<Q>(&self, name: &Q, id: Option<u64>, reason: LossReason) -> bool
    where
        Q: std::hash::Hash + hashbrown::Equivalent<Arc<str>> + ?Sized,
    {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(entry) = state.names.get_mut(name) else {
            return false;
        };
        let any = match id {
            // One hold (a release): no list to allocate on the hot path.
            Some(id) => match entry.holders.iter().position(|h| h.id == id) {
                Some(i) => {
                    if let Some(t) = entry.holders.remove(i).trigger {
                        t.fire(reason);
                    }
                    true
                }
                None => false,
            },
            None => {
                let ended = std::mem::take(&mut entry.holders);
                for t in ended.iter().filter_map(|h| h.trigger.as_ref()) {
                    t.fire(reason.clone());
                }
                !ended.is_empty()
            }
        };
        if any {
            admit(&mut state.tokens, entry);
            entry.notify();
        }
        forget_if_idle(&mut state.names);
        any
    }
}

/// A hold's name as a map key: the map's own key is the same `Arc`, so comparing the pointers
/// finds it without comparing the bytes (the name is hashed as a `str`, as the map's keys are).
struct SameName<'a>(&'a Arc<str>);

impl std::hash::Hash for SameName<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self.0).hash(state)
    }
}

impl hashbrown::Equivalent<Arc<str>> for SameName<'_> {
    fn equivalent(&self, key: &Arc<str>) -> bool {
        Arc::ptr_eq(self.0, key) || **self.0 == **key
    }
}

/// Idle names (no holder, no waiter, no watch in use) stay in the map, so a name used over and
/// over keeps its entry and its acquire allocates nothing; once the map is full (the next new
/// name would make it grow), every idle name is dropped at once. Memory thus stays within what
/// the names in use at the busiest moment needed, as a map that forgets at once would keep too
/// (a `HashMap` never shrinks), without an allocation per acquire of an idle name.
fn forget_if_idle<C, W: Watch<C>>(names: &mut Names<C, W>) {
    if names.len() >= names.capacity().max(KEEP_IDLE) {
        names.retain(|_, e| !e.is_idle());
    }
}

/// Below this many names, idle ones are never swept.
const KEEP_IDLE: usize = 64;

impl<C: Send + 'static, W: Watch<C>> LocalQueue<C, W> {
    /// A new set of empty queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many names take memory (those with a holder, a waiter or a watch in use).
    pub fn names(&self) -> usize {
        self.shared
            .lock()
            .names
            .values_mut()
            .map(|e| usize::from(!e.is_idle()))
            .sum()
    }

    /// How many names the map keeps, idle ones included (see the module docs).
    pub fn names_in_memory(&self) -> usize {
        self.shared.lock().names.len()
    }

    /// Reads the (earliest) holder of `name` and how many wait behind it.
    pub fn inspect<R>(&self, name: &str, f: impl FnOnce(Option<&Holder<C>>, usize) -> R) -> R {
        let state = self.shared.lock();
        match state.names.get(name) {
            Some(e) => f(e.first(), e.waiters.len()),
            None => f(None, 0),
        }
    }

    /// Reads every holder of `name` (in grant order) and how many wait behind them.
    pub fn inspect_all<R>(&self, name: &str, f: impl FnOnce(&[Holder<C>], usize) -> R) -> R {
        let state = self.shared.lock();
        match state.names.get(name) {
            Some(e) => f(&e.holders, e.waiters.len()),
            None => f(&[], 0),
        }
    }

    /// Runs `f` on the per-name state of `name` (made if missing) and the holder; the name is
    /// forgotten afterwards if it is idle.
    pub fn with_watch<R>(&self, name: &str, f: impl FnOnce(&mut W, Option<&Holder<C>>) -> R) -> R {
        let mut state = self.shared.lock();
        let entry = entry(&mut state.names, name);
        let r = f(&mut entry.watch, entry.holders.first());
        forget_if_idle(&mut state.names);
        r
    }

    /// Call it when something a [`Watch`] counted for `name` went away: idle names are
    /// forgotten as the [module docs](self) say (all at once, when the map is full), so an idle
    /// `name` may stay in memory until then.
    pub fn tidy(&self, name: &str) {
        let _ = name;
        forget_if_idle(&mut self.shared.lock().names);
    }

    /// A handle that does not keep the queues alive.
    pub fn downgrade(&self) -> WeakLocalQueue<C, W> {
        WeakLocalQueue {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Takes `name` away from its holders, as an administrator would: their signals fire with
    /// [`LossReason::Revoked`] and the next waiters get it. Returns whether it was held.
    pub fn revoke(&self, name: &str) -> bool {
        self.shared.end_hold(name, None, LossReason::Revoked)
    }

    /// Takes `name` at once if nobody holds it or waits for it ([`Rule::Exclusive`]).
    pub fn try_acquire(&self, name: &str, claim: C) -> Option<(Hold<C, W>, LossSignal)> {
        self.try_acquire_with(name, Rule::Exclusive, claim)
            .ok()
            .flatten()
    }

    /// Takes `name` at once if nobody waits and `rule` admits the claim given the holders;
    /// `Ok(None)` otherwise, [`WaitError::Mismatch`] if a claim there conflicts with `rule`.
    pub fn try_acquire_with(
        &self,
        name: &str,
        rule: Rule,
        claim: C,
    ) -> Result<Option<Granted<C, W>>, WaitError> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let id = state.next_id();
        let entry = entry(&mut state.names, name);
        if let Some(theirs) = entry.mismatch(rule) {
            forget_if_idle(&mut state.names);
            return Err(WaitError::Mismatch { theirs });
        }
        if !entry.admits_now(rule) {
            forget_if_idle(&mut state.names);
            return Ok(None);
        }
        let key = entry.key.clone();
        let grant = grant(&mut state.tokens, entry, id, rule, claim, true);
        entry.notify();
        drop(guard);
        Ok(Some(self.hold(key, id, grant)))
    }

    /// [`try_acquire`](Self::try_acquire) without a loss signal made up front: the cheapest
    /// grant (no allocation once the name is known). Ask [`Hold::loss_signal`] when someone
    /// wants to watch for the loss.
    pub fn try_acquire_bare(&self, name: &str, claim: C) -> Option<Hold<C, W>> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let id = state.next_id();
        let entry = entry(&mut state.names, name);
        // Admitted only with no holder and no waiter, so no claim there can conflict.
        if !entry.admits_now(Rule::Exclusive) {
            forget_if_idle(&mut state.names);
            return None;
        }
        let key = entry.key.clone();
        let grant = grant(&mut state.tokens, entry, id, Rule::Exclusive, claim, false);
        entry.notify();
        drop(guard);
        Some(self.hold_bare(key, id, grant.token))
    }

    /// Takes `name`, waiting behind the holder and every earlier claim for at most `max_wait`
    /// (no limit if `None`; [`Rule::Exclusive`]). Cancel-safe: dropping the future leaves the
    /// queue, and releases a grant that arrived after the last poll.
    pub async fn acquire(
        &self,
        name: &str,
        claim: C,
        max_wait: Option<Duration>,
    ) -> Result<(Hold<C, W>, LossSignal), WaitError> {
        self.acquire_with(name, Rule::Exclusive, claim, max_wait)
            .await
    }

    /// Like [`acquire`](Self::acquire), waiting until `rule` admits the claim given the claims
    /// ahead of it. Fails at once with [`WaitError::Mismatch`] if a claim there conflicts.
    pub async fn acquire_with(
        &self,
        name: &str,
        rule: Rule,
        claim: C,
        max_wait: Option<Duration>,
    ) -> Result<(Hold<C, W>, LossSignal), WaitError> {
        let (id, key, rx) = {
            let mut guard = self.shared.lock();
            let state = &mut *guard;
            let id = state.next_id();
            let entry = entry(&mut state.names, name);
            if let Some(theirs) = entry.mismatch(rule) {
                forget_if_idle(&mut state.names);
                return Err(WaitError::Mismatch { theirs });
            }
            let key = entry.key.clone();
            if entry.admits_now(rule) {
                let grant = grant(&mut state.tokens, entry, id, rule, claim, true);
                entry.notify();
                drop(guard);
                return Ok(self.hold(key, id, grant));
            }
            let (tx, rx) = oneshot::channel();
            entry.waiters.push_back(Waiting {
                id,
                rule,
                claim,
                tx,
            });
            (id, key, rx)
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
        let hold = self.hold_bare(name, id, grant.token);
        let signal = match grant.signal {
            Some(s) => s,
            None => hold.loss_signal(),
        };
        (hold, signal)
    }

    fn hold_bare(&self, name: Arc<str>, id: u64, token: u64) -> Hold<C, W> {
        Hold {
            shared: self.shared.clone(),
            name,
            id,
            token,
            done: false,
        }
    }
}

fn entry<'a, C, W: Watch<C>>(names: &'a mut Names<C, W>, name: &str) -> &'a mut Entry<C, W> {
    if names.len() >= names.capacity().max(KEEP_IDLE) && !names.contains_key(name) {
        // A new name would make the map grow: sweep the idle ones first.
        forget_if_idle(names);
    }
    // One probe whether the name is known or not.
    match names.entry_ref(name) {
        hashbrown::hash_map::EntryRef::Occupied(e) => e.into_mut(),
        hashbrown::hash_map::EntryRef::Vacant(v) => {
            let key: Arc<str> = Arc::from(name);
            v.insert_with_key(
                key.clone(),
                Entry {
                    key,
                    holders: Vec::new(),
                    waiters: VecDeque::new(),
                    watch: W::default(),
                },
            )
        }
    }
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
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let Some(entry) = state.names.get_mut(self.name) else {
            return;
        };
        let before = entry.waiters.len();
        entry.waiters.retain(|w| w.id != self.id);
        if entry.waiters.len() == before {
            // Not queued any more: it was granted, but nobody will take the hold.
            drop(guard);
            self.shared
                .end_hold(self.name, Some(self.id), LossReason::Released);
            return;
        }
        // Those behind it may be admitted now (readers behind a writer that gave up).
        if admit(&mut state.tokens, entry) {
            entry.notify();
        }
        forget_if_idle(&mut state.names);
    }
}

#[cfg(test)]
mod tests;
