//! Sticky locks ([`AcquireOptions::with_sticky`](crate::AcquireOptions::with_sticky)): a
//! released guard's key stays *parked* at the head of its queue while nobody else waits, so the
//! next sticky acquire through the same handle takes it back in memory, without a round trip.
//!
//! Every sticky key has a [`Slot`] and a keeper task:
//! - the slot owns the key's [`Held`] for its whole life, while a guard holds it and while it is
//!   parked; a guard of a sticky key is only a handle on the slot with a loss signal of its own
//!   (one per hold, so a worker told "released" at a park is not told "held" again);
//! - the keeper watches the queue for contenders (keys created after ours: a watch from now on
//!   and one read for those that came before it, so none is missed) and relays the key's loss to the guard that
//!   holds it. When it sees a contender, the key is never parked again: if parked, the keeper
//!   deletes it at once; if held, the guard's release deletes it.
//!
//! Every decision (park, take back, hand over, lose) is made under the slot's mutex, so a
//! contender seen while a release parks, or a loss while a re-acquire takes the key back, is
//! never missed: one of the two sides sees the other's mark.
//!
//! A parked key is taken back only while its loss signal has not fired: the lease keeper fires
//! it a margin before the lease can expire, and the queue's watch fires it when the key is
//! deleted. That is the same test a holder's guard passes while it keeps holding, which is what
//! a parked key is: a hold with nobody working under it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_core::signal::{loss_signal, LossReason, LossSignal, LossTrigger};
use sync_etcd::etcd_client::{EventType, GetOptions, WatchFilterType, WatchOptions};
use sync_etcd::{EtcdClient, Held};

use crate::{Error, Fence, LockGuard, RawGuard, Result};

/// The sticky keys of one lock handle, shared by its clones. Dropping the last clone deletes
/// every parked key (held ones go when their guard is released).
#[derive(Debug, Default)]
pub(crate) struct StickyKeys {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// One sticky key, from its grant until it is deleted or lost.
#[derive(Debug)]
pub(crate) struct Slot {
    name: Arc<str>,
    key: String,
    revision: i64,
    /// The TTL the acquire asked for: only an acquire asking the same takes the key back.
    ttl_asked: Option<Duration>,
    granted_ttl: Duration,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// The key, while it is ours (held or parked).
    held: Option<Held>,
    /// The loss trigger of the guard holding it; `None` while parked.
    guard: Option<LossTrigger>,
    /// A contender joined (or the watch for them failed): never park again.
    contender_seen: bool,
    /// The handle is gone, or the key was lost: never park again.
    closed: bool,
}

/// What a sticky guard's release did.
enum Release {
    /// The key stays, parked.
    Parked,
    /// The key was already lost.
    Lost,
    /// The key must be deleted now (a contender waits, or the handle is gone).
    Delete(Held),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is a single assignment or insert: a panic elsewhere
    // cannot leave them inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StickyKeys {
    /// Takes `name`'s parked key back for a sticky acquire asking `ttl`: the guard, or `None`
    /// (nothing parked, held by another guard of ours, or lost: take the normal path).
    pub(crate) fn reclaim(&self, name: &str, ttl: Option<Duration>) -> Option<LockGuard> {
        let slot = lock(&self.slots).get(name)?.clone();
        let signal = slot.reclaim(ttl)?;
        Some(slot.guard(signal))
    }

    /// Makes `held`, just granted to a sticky acquire of `name`, a sticky key: its guard, and
    /// a keeper watching `dir` for contenders.
    pub(crate) fn insert(
        self: &Arc<Self>,
        name: &str,
        ttl_asked: Option<Duration>,
        held: Held,
        dir: String,
    ) -> LockGuard {
        let (trigger, signal) = loss_signal();
        let client = held.client().clone();
        let key_signal = held.signal().clone();
        let slot = Arc::new(Slot {
            name: name.into(),
            key: held.key().to_owned(),
            revision: held.revision(),
            ttl_asked,
            granted_ttl: held.ttl(),
            state: Mutex::new(SlotState {
                held: Some(held),
                guard: Some(trigger),
                ..Default::default()
            }),
        });
        let old = lock(&self.slots).insert(name.to_owned(), slot.clone());
        // Only possible once the old key is gone (we were granted after it), but never leave a
        // parked key behind unreachable.
        if let Some(old) = old {
            drop(old.close());
        }
        tokio::spawn(keep(
            Arc::downgrade(self),
            slot.clone(),
            client,
            dir,
            key_signal,
        ));
        slot.guard(signal)
    }

    fn forget(&self, slot: &Arc<Slot>) {
        let mut slots = lock(&self.slots);
        if slots.get(&*slot.name).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(&*slot.name);
        }
    }
}

impl Drop for StickyKeys {
    fn drop(&mut self) {
        let slots = self.slots.get_mut().unwrap_or_else(|p| p.into_inner());
        for slot in slots.values() {
            // Dropping a parked `Held` deletes its key in the background.
            if let Some(held) = slot.close() {
                tracing::debug!(key = %slot.key, "lock handle dropped: deleting its parked key");
                drop(held);
            }
        }
    }
}

impl Slot {
    fn guard(self: &Arc<Self>, signal: LossSignal) -> LockGuard {
        LockGuard::new(
            self.name.clone(),
            self.revision as u64,
            Some(self.granted_ttl),
            signal,
            Box::new(StickyGuard {
                slot: self.clone(),
                released: false,
            }),
        )
    }

    /// See [`StickyKeys::reclaim`].
    fn reclaim(&self, ttl: Option<Duration>) -> Option<LossSignal> {
        let mut st = lock(&self.state);
        if st.guard.is_some() || st.closed {
            return None;
        }
        let held = st.held.as_ref()?;
        if held.signal().is_fired() || ttl != self.ttl_asked {
            // Lost (never handed out again), or asked with another TTL: delete it, so that
            // the normal path does not wait behind our own key.
            st.closed = true;
            let held = st.held.take();
            drop(st);
            drop(held);
            return None;
        }
        let (trigger, signal) = loss_signal();
        st.guard = Some(trigger);
        Some(signal)
    }

    fn release(&self) -> Release {
        let mut st = lock(&self.state);
        let guard = st.guard.take();
        let Some(held) = st.held.take() else {
            return Release::Lost;
        };
        if let Some(reason) = held.signal().reason() {
            if let Some(g) = guard {
                g.fire(reason);
            }
            st.closed = true;
            drop(st);
            drop(held);
            return Release::Lost;
        }
        let out = if st.contender_seen || st.closed {
            Release::Delete(held)
        } else {
            st.held = Some(held);
            Release::Parked
        };
        drop(st);
        if let Some(g) = guard {
            g.fire(LossReason::Released);
        }
        out
    }

    /// A contender joined: never park again; the parked key, if any, to delete now.
    fn contender_seen(&self) -> Option<Held> {
        let mut st = lock(&self.state);
        st.contender_seen = true;
        if st.guard.is_none() {
            st.held.take()
        } else {
            None
        }
    }

    /// The key was lost, deleted or released for good: tell its holder, if any.
    fn lost(&self, reason: LossReason) {
        let mut st = lock(&self.state);
        st.closed = true;
        let guard = st.guard.take();
        let held = st.held.take();
        drop(st);
        if let Some(g) = guard {
            g.fire(reason);
        }
        drop(held);
    }

    /// The handle is gone: never park again; the parked key, if any, to delete.
    fn close(&self) -> Option<Held> {
        let mut st = lock(&self.state);
        st.closed = true;
        if st.guard.is_none() {
            st.held.take()
        } else {
            None
        }
    }
}

/// The keeper of one sticky key: hands a parked key over to the first contender it sees, and
/// relays the key's loss to the guard holding it. Ends when the key is gone.
async fn keep(
    keys: Weak<StickyKeys>,
    slot: Arc<Slot>,
    client: EtcdClient,
    dir: String,
    key_signal: LossSignal,
) {
    let hand_over = async {
        let why = first_contender(&client, &dir, slot.revision).await;
        tracing::debug!(key = %slot.key, why, "sticky key: will not be parked again");
        if let Some(held) = slot.contender_seen() {
            let started = std::time::Instant::now();
            match held.release().await {
                Ok(_) => {
                    tracing::debug!(key = %slot.key, took = ?started.elapsed(), "parked key handed over")
                }
                Err(e) => {
                    tracing::warn!(key = %slot.key, error = %e, "could not delete a parked key; it is deleted in the background or with its lease")
                }
            }
        }
        std::future::pending::<()>().await
    };
    let reason = tokio::select! {
        reason = key_signal.fired() => reason,
        () = hand_over => unreachable!("hand_over never ends"),
    };
    slot.lost(reason);
    if let Some(keys) = keys.upgrade() {
        keys.forget(&slot);
    }
}

/// Resolves when a key created after `revision` (a contender behind ours) is in `dir`, or when
/// the watch for them fails (then nobody can say there is none).
///
/// The watch starts at the current revision `r` (a watch asked to start in the past is served
/// by etcd's catch-up loop, up to 100 ms late); one read then finds the contenders that joined
/// between our key's creation and `r`, and the watch every one after.
async fn first_contender(client: &EtcdClient, dir: &str, revision: i64) -> &'static str {
    let options = WatchOptions::new()
        .with_prefix()
        .with_filters([WatchFilterType::NoDelete]);
    let mut raw = client.raw();
    let mut stream = match raw.watch(dir, Some(options)).await {
        Ok(s) => s,
        Err(_) => return "the contender watch could not be created",
    };
    match stream.message().await {
        Ok(Some(m)) if m.created() && !m.canceled() => {}
        _ => return "the contender watch could not be created",
    }
    // Keys only, not a count: etcd counts before it applies the revision filter.
    let behind = GetOptions::new()
        .with_prefix()
        .with_min_create_revision(revision + 1)
        .with_keys_only();
    match raw.get(dir, Some(behind)).await {
        Ok(r) if r.kvs().iter().any(|kv| kv.create_revision() > revision) => {
            return "a contender joined before the watch started"
        }
        Ok(_) => {}
        Err(_) => return "could not read the queue for contenders",
    }
    loop {
        match stream.message().await {
            Ok(Some(resp)) => {
                if resp.canceled() {
                    return "the contender watch was cancelled";
                }
                let joined = resp.events().iter().any(|ev| {
                    ev.event_type() == EventType::Put
                        && ev.kv().is_some_and(|kv| kv.create_revision() > revision)
                });
                if joined {
                    return "a contender joined";
                }
            }
            Ok(None) | Err(_) => return "the contender watch ended",
        }
    }
}

/// A guard's hold on a sticky key.
#[derive(Debug)]
struct StickyGuard {
    slot: Arc<Slot>,
    released: bool,
}

impl RawGuard for StickyGuard {
    fn release(mut self: Box<Self>) -> BoxFuture<'static, Result<bool>> {
        self.released = true;
        match self.slot.release() {
            Release::Parked => futures::future::ready(Ok(true)).boxed(),
            Release::Lost => futures::future::ready(Ok(false)).boxed(),
            Release::Delete(held) => async move {
                let key = held.key().to_owned();
                held.release().await.map_err(|e| Error::backend(&key, e))
            }
            .boxed(),
        }
    }

    fn fence(&self) -> Option<Fence> {
        Some(Fence::new(self.slot.key.clone(), self.slot.revision))
    }
}

impl Drop for StickyGuard {
    fn drop(&mut self) {
        if !self.released {
            // Parks, or deletes in the background (dropping a `Held` does).
            if let Release::Delete(held) = self.slot.release() {
                drop(held);
            }
        }
    }
}
