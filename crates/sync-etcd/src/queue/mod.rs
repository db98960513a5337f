//! The FIFO queue by create revision that locks and elections stand on.
//!
//! Keys: `<dir><unique>`, one per waiter, bound to the waiter's lease. The head of the queue is
//! the key with the smallest create revision. A waiter learns from the join's own read which keys
//! are ahead of it and waits, on the shared [`WatchHub`], until all of them are deleted; only
//! the last of them (its predecessor) completes its wait, so a release makes exactly one waiter
//! the head, with no further read. See `docs/etcd.md` for why this is safe.
//!
//! Cancel safety, structurally: from the moment a key may exist until a holder owns it, exactly
//! one armed owner is responsible for deleting it, and every exit (a drop at any await, any
//! error) goes through that owner's `Drop`:
//! - while the join's transaction is in flight, a `JoinGuard` (the transaction runs on a
//!   spawned task; a dropped join deletes the key once it lands, or after it failed);
//! - from the transaction's reply on, the armed [`QueueEntry`], built before any further await;
//! - once held, the [`Held`]. [`QueueEntry::leave`] and [`Held::release`] stay armed until
//!   etcd confirmed the delete, so dropping them mid-delete still deletes in the background.
//!
//! `cancel_at_every_poll` cases in the lock and leader conformance suites check it.

mod join;
mod slot;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use std::sync::Arc;

use join::{delete_late, join_txn, keys_of, JoinGuard};
pub(crate) use slot::Slot;

use crate::{Error, EtcdClient, KeyEvent, KeySubscription, Lease, Result, WatchHub};
use sync_core::signal::{loss_signal, LossReason, LossSignal, LossTrigger};

/// Why waiting for the head of the queue ended without getting there.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// Our key was deleted while we waited (someone deleted it, or its lease was revoked).
    #[error("our queue key was deleted while waiting")]
    Removed,
    /// Our lease was lost while we waited.
    #[error("the lease was lost while waiting: {0}")]
    LeaseLost(LossReason),
    /// etcd failed.
    #[error(transparent)]
    Etcd(#[from] Error),
}

/// When a place in a queue is good enough to hold. Keys joining later get greater create
/// revisions, so the keys ahead of a waiter only ever leave: each rule below, once true, stays
/// true, and a waiter learns it from deletions alone, with no further read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Nobody ahead: a lock, a leadership, a writer.
    Alone,
    /// Fewer than `n` keys ahead: one of `n` permits (FIFO, no barging: the first `n` keys of
    /// the queue are the holders).
    FewerThan(usize),
    /// No key ahead whose unique part starts with the tag: a reader, behind readers only (the
    /// tag is the writers').
    NoneTagged(&'static str),
}

impl Admission {
    fn admits(self, ahead: usize, tagged: usize) -> bool {
        match self {
            Admission::Alone => ahead == 0,
            Admission::FewerThan(n) => ahead < n,
            Admission::NoneTagged(_) => tagged == 0,
        }
    }

    /// Whether `key` (under `dir`) counts for [`Admission::NoneTagged`].
    fn tagged(self, dir: &str, key: &[u8]) -> bool {
        match self {
            Admission::NoneTagged(tag) => key
                .strip_prefix(dir.as_bytes())
                .is_some_and(|unique| unique.starts_with(tag.as_bytes())),
            _ => false,
        }
    }

    fn count_tagged<'k>(self, dir: &str, keys: impl Iterator<Item = &'k [u8]>) -> usize {
        keys.filter(|k| self.tagged(dir, k)).count()
    }
}

/// The FIFO queues of one primitive (`lock`, `election`) under a client's prefix.
#[derive(Debug)]
pub struct Queue {
    client: EtcdClient,
    hubs: std::sync::Mutex<Hubs>,
}

/// One delete watch per queue this client uses, kept while someone waits or holds there and for
/// [`LINGER`] after, so a name used again and again keeps its watch (never behind) while a
/// client only hears about the queues it uses (no fan-out of every lock's events to every
/// client).
#[derive(Debug)]
struct Hubs {
    map: std::collections::HashMap<String, HubSlot>,
    last_sweep: std::time::Instant,
}

#[derive(Debug)]
struct HubSlot {
    hub: Arc<WatchHub>,
    idle_since: Option<std::time::Instant>,
}

/// How long an unused queue's watch is kept.
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);

/// Our place in one queue. Dropping it deletes the key in the background unless
/// [`defuse`](QueueEntry::defuse)d.
#[derive(Debug)]
pub struct QueueEntry {
    key: String,
    dir: String,
    revision: i64,
    lease: Arc<Lease>,
    own: Option<KeySubscription>,
    /// What the join read: the keys ahead of ours and the revision it read them at.
    ahead: Option<(Vec<String>, i64)>,
    /// When our place is good enough to hold.
    admission: Admission,
    /// The queue's watch, kept alive while we are in it.
    hub: Arc<WatchHub>,
    client: EtcdClient,
    armed: bool,
    /// The slot of our key's name, freed once the key is surely gone (see [`Slot`]); `None`
    /// for a key named by the caller of [`Queue::join`].
    slot: Option<Slot>,
}

impl QueueEntry {
    /// Our key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The queue's range.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// The keys the join found ahead of ours (oldest first), until waiting starts.
    pub fn ahead(&self) -> &[String] {
        self.ahead.as_ref().map_or(&[], |(keys, _)| keys.as_slice())
    }

    /// Our key's create revision: the fencing token once we are at the head.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The lease our key is bound to.
    pub fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    /// Leaves the queue now: deletes our key. Returns whether it deleted it. The entry stays
    /// armed until the delete is confirmed: if this future is dropped, or the delete fails, the
    /// entry's drop deletes the key in the background.
    pub async fn leave(mut self) -> Result<bool> {
        let deleted = leave(&self.client, &self.key, self.revision).await?;
        self.armed = false;
        if let Some(slot) = self.slot.take() {
            slot.free();
        }
        Ok(deleted)
    }

    /// Forgets the key without deleting it (it stays until its lease ends).
    pub fn defuse(mut self) {
        self.armed = false;
    }

    fn take_subscription(&mut self) -> KeySubscription {
        self.own
            .take()
            .expect("an entry's subscription is taken only once, by hold()")
    }
}

impl Drop for QueueEntry {
    fn drop(&mut self) {
        if self.armed {
            leave_in_background(
                &self.client,
                std::mem::take(&mut self.key),
                self.revision,
                self.slot.take(),
            );
        }
    }
}

/// [`leave`] on the runtime, for `Drop`; the lease is the safety net if it fails (and the slot,
/// if any, is then never used again).
fn leave_in_background(client: &EtcdClient, key: String, rev: i64, slot: Option<Slot>) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let client = client.clone();
        rt.spawn(async move {
            match leave(&client, &key, rev).await {
                Ok(_) => {
                    if let Some(slot) = slot {
                        slot.free();
                    }
                }
                Err(e) => {
                    tracing::warn!(%key, error = %e, "could not delete a dropped queue key; its lease will remove it");
                }
            }
        });
    }
}

/// Deletes our key, the one created at revision `rev`: a key of that name created later (its
/// slot reused after this delete, see [`Slot`]) is never touched, even by a late retry of this
/// delete. Whether it deleted something says whether the key was still ours.
async fn leave(client: &EtcdClient, key: &str, rev: i64) -> Result<bool> {
    let key = key.to_owned();
    let deleted = client
        .retry("release", client.default_budget(), |mut c| {
            let key = key.clone();
            async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, rev)])
                    .and_then([TxnOp::delete(key, None)]);
                Ok(c.txn(txn).await?.succeeded())
            }
        })
        .await?;
    tracing::trace!(%key, rev, deleted, "left queue");
    Ok(deleted)
}

impl Queue {
    /// The queues under `<prefix>/<kind>/`.
    pub fn new(client: EtcdClient, kind: &str) -> Self {
        let _ = kind;
        Queue {
            client,
            hubs: std::sync::Mutex::new(Hubs {
                map: Default::default(),
                last_sweep: std::time::Instant::now(),
            }),
        }
    }

    /// The delete watch of the queue `dir`, created on first use.
    fn hub_for(&self, dir: &str) -> Arc<WatchHub> {
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if now.duration_since(hubs.last_sweep) > LINGER / 4 {
            hubs.last_sweep = now;
            hubs.map.retain(|_, slot| {
                // Only the map holds it and nobody listens: idle.
                if Arc::strong_count(&slot.hub) == 1 && slot.hub.is_idle() {
                    let since = *slot.idle_since.get_or_insert(now);
                    now.duration_since(since) < LINGER
                } else {
                    slot.idle_since = None;
                    true
                }
            });
        }
        let slot = hubs.map.entry(dir.to_owned()).or_insert_with(|| HubSlot {
            hub: Arc::new(WatchHub::new(self.client.clone(), dir)),
            idle_since: None,
        });
        slot.idle_since = None;
        slot.hub.clone()
    }

    /// The client.
    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    /// Joins the queue `dir` with key `dir + unique` holding `value`, bound to `lease`, in one
    /// transaction that also reads the queue. Returns our entry and whether `admission` admits
    /// it already.
    pub async fn join(
        &self,
        dir: &str,
        unique: &str,
        value: Vec<u8>,
        lease: Arc<Lease>,
        admission: Admission,
    ) -> Result<(QueueEntry, bool)> {
        self.join_keyed(dir, unique, value, lease, admission, None)
            .await
    }

    /// [`join`](Self::join) with a key named after `slot` (freed once the key is surely gone).
    pub(crate) async fn join_keyed(
        &self,
        dir: &str,
        unique: &str,
        value: Vec<u8>,
        lease: Arc<Lease>,
        admission: Admission,
        slot: Option<Slot>,
    ) -> Result<(QueueEntry, bool)> {
        // Make sure the queue's watch exists before our first read (see `WatchHub`).
        let hub = self.hub_for(dir);
        hub.start().await?;
        let key = format!("{dir}{unique}");
        let task = tokio::spawn(join_txn(
            self.client.clone(),
            dir.to_owned(),
            key.clone(),
            value,
            lease.id(),
        ));
        let mut guard = JoinGuard {
            task: Some(task),
            client: self.client.clone(),
            key,
            slot,
        };
        let joined = match guard.task.as_mut().expect("set above").await {
            Ok(Ok(j)) => {
                guard.task = None;
                j
            }
            Ok(Err(e)) => {
                guard.task = None;
                tokio::spawn(delete_late(
                    self.client.clone(),
                    std::mem::take(&mut guard.key),
                ));
                return Err(e);
            }
            Err(join_err) => {
                guard.task = None;
                tokio::spawn(delete_late(
                    self.client.clone(),
                    std::mem::take(&mut guard.key),
                ));
                return Err(Error::Etcd {
                    endpoints: self.client.endpoints().to_owned(),
                    op: "join queue",
                    source: Box::new(join_err),
                });
            }
        };
        // From here on the key exists, and the armed entry owns it: every exit below (an error,
        // or the caller dropping this future at any await) deletes it.
        let mut entry = QueueEntry {
            key: joined.key,
            dir: dir.to_owned(),
            revision: joined.revision,
            lease,
            own: None,
            ahead: Some((joined.ahead, joined.read_rev)),
            admission,
            hub: hub.clone(),
            client: self.client.clone(),
            armed: true,
            slot: guard.slot.take(),
        };
        let (mut own, mut recheck) = hub.subscribe(&entry.key, entry.revision).await?;
        // The hub replays a deletion of our key that it dispatched before we subscribed.
        let deleted = match own.try_next() {
            Some(KeyEvent::Deleted { .. }) => true,
            Some(KeyEvent::Recheck) => {
                recheck = true;
                false
            }
            None => false,
        };
        entry.own = Some(own);
        if deleted || (recheck && !self.still_ours(&entry.key, entry.revision).await?) {
            // Deleted (by someone else, or with its lease) before we could watch it: the
            // deletion went by unseen, so report it here rather than hand out a dead grant.
            return Err(Error::Unavailable {
                endpoints: self.client.endpoints().to_owned(),
                op: "join queue",
                source: "our queue key was deleted right after it was created".into(),
            });
        }
        let admitted = admission.admits(
            entry.ahead().len(),
            admission.count_tagged(dir, entry.ahead().iter().map(|k| k.as_bytes())),
        );
        Ok((entry, admitted))
    }

    /// Waits until `entry`'s admission admits it (for a lock: until it is the head). Ends with
    /// an error, never a late success, if our key is deleted or our lease is lost meanwhile.
    /// Cancel-safe: it only reads.
    ///
    /// It subscribes to the deletion of every key ahead of ours (and of ours) on one ordered
    /// channel. Keys joining later get greater create revisions, so the set ahead only shrinks,
    /// and every [`Admission`], once true, stays true: no further read is needed. A lock's
    /// waiter is woken for good only by the last key ahead of it, so a release still wakes one.
    pub async fn wait_admitted(&self, entry: &mut QueueEntry) -> Result<(), WaitError> {
        let lease = entry.lease.clone();
        let (admission, dir) = (entry.admission, entry.dir.clone());
        let mut known = entry.ahead.take();
        loop {
            if let Some(reason) = lease.signal().reason() {
                return Err(WaitError::LeaseLost(reason));
            }
            let (ahead, read_rev) = match known.take() {
                Some(k) => k,
                None => self.ahead_of(entry).await?,
            };
            let mut tagged = admission.count_tagged(&dir, ahead.iter().map(|k| k.as_bytes()));
            if admission.admits(ahead.len(), tagged) {
                return Ok(());
            }
            let keys = ahead.iter().map(String::as_str).chain([entry.key.as_str()]);
            let (mut sub, recheck) = entry.hub.subscribe_many(keys, read_rev).await?;
            if recheck {
                continue;
            }
            tracing::trace!(key = %entry.key, ahead = ahead.len(), "waiting for the keys ahead");
            let mut remaining: std::collections::HashSet<&[u8]> =
                ahead.iter().map(|k| k.as_bytes()).collect();
            loop {
                tokio::select! {
                    (key, ev) = sub.next_keyed() => match (key, ev) {
                        (Some(key), KeyEvent::Deleted { .. }) => {
                            if *key == *entry.key.as_bytes() {
                                return Err(WaitError::Removed);
                            }
                            if remaining.remove(&*key) && admission.tagged(&dir, &key) {
                                tagged -= 1;
                            }
                            if admission.admits(remaining.len(), tagged) {
                                return Ok(());
                            }
                        }
                        // The watch restarted: events may be missing; read again.
                        _ => break,
                    },
                    reason = lease.signal().fired() => return Err(WaitError::LeaseLost(reason)),
                }
            }
        }
    }

    /// Whether `key` still exists with create revision `rev`.
    async fn still_ours(&self, key: &str, rev: i64) -> Result<bool> {
        let key = key.to_owned();
        self.client
            .retry("join queue", self.client.default_budget(), |mut c| {
                let key = key.clone();
                async move {
                    let r = c.get(key, Some(GetOptions::new().with_keys_only())).await?;
                    Ok(r.kvs().first().map(|kv| kv.create_revision()) == Some(rev))
                }
            })
            .await
    }

    /// Reads, at one revision, whether our key is still ours and which keys are ahead of it.
    async fn ahead_of(&self, entry: &QueueEntry) -> Result<(Vec<String>, i64), WaitError> {
        let (key, dir, rev) = (entry.key.clone(), entry.dir.clone(), entry.revision);
        let (own_rev, ahead, read_rev) = self
            .client
            .retry("wait in queue", self.client.default_budget(), |mut c| {
                let (key, dir) = (key.clone(), dir.clone());
                async move {
                    let txn = Txn::new().and_then([
                        TxnOp::get(key, Some(GetOptions::new().with_keys_only())),
                        TxnOp::get(
                            dir,
                            Some(
                                GetOptions::new()
                                    .with_prefix()
                                    .with_max_create_revision(rev - 1)
                                    .with_keys_only(),
                            ),
                        ),
                    ]);
                    let resp = c.txn(txn).await?;
                    let read_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                    let ops = resp.op_responses();
                    let own_rev = match ops.first() {
                        Some(TxnOpResponse::Get(g)) => {
                            g.kvs().first().map_or(0, |kv| kv.create_revision())
                        }
                        _ => 0,
                    };
                    let ahead = match ops.get(1) {
                        Some(TxnOpResponse::Get(g)) => keys_of(g.kvs()),
                        _ => Vec::new(),
                    };
                    Ok((own_rev, ahead, read_rev))
                }
            })
            .await?;
        if own_rev != rev {
            return Err(WaitError::Removed);
        }
        Ok((ahead, read_rev))
    }

    /// Turns the head entry into a [`Held`]: from now on the queue's watch fires the held
    /// thing's loss signal if our key is deleted, and the lease fires it if the lease is lost,
    /// with no task per held key.
    pub fn hold(&self, mut entry: QueueEntry) -> Held {
        let (trigger, signal) = loss_signal();
        let trigger = Arc::new(trigger);
        let (key, revision, lease) = (entry.key.clone(), entry.revision, entry.lease.clone());
        let hub = entry.hub.clone();
        // Register the trigger first, then look at what the entry's own subscription already
        // received: a deletion is seen by one or the other, never by neither.
        let on_delete = hub.watch_trigger(&key, revision, &trigger);
        let mut own = entry.take_subscription();
        let slot = entry.slot.take();
        entry.defuse();
        let mut recheck = false;
        while let Some(ev) = own.try_next() {
            match ev {
                KeyEvent::Deleted { .. } => {
                    trigger.fire(LossReason::Revoked);
                }
                KeyEvent::Recheck => recheck = true,
            }
        }
        drop(own);
        if recheck && !trigger.is_fired() {
            let (client, t, k) = (self.client.clone(), Arc::downgrade(&trigger), key.clone());
            tokio::spawn(async move {
                let mut c = client.raw();
                if let Ok(r) = c.get(k, Some(GetOptions::new().with_keys_only())).await {
                    if r.kvs().first().map(|kv| kv.create_revision()) != Some(revision) {
                        if let Some(t) = t.upgrade() {
                            t.fire(LossReason::Revoked);
                        }
                    }
                }
            });
        }
        lease.attach(&trigger);
        Held {
            key,
            revision,
            lease,
            client: self.client.clone(),
            trigger,
            signal,
            armed: true,
            on_delete: Some(on_delete),
            _hub: hub,
            slot,
        }
    }
}

/// The head of a queue, held: a lock, or a leadership. Dropping it deletes the key in the
/// background; [`Held::release`] does it now.
#[derive(Debug)]
pub struct Held {
    key: String,
    revision: i64,
    lease: Arc<Lease>,
    client: EtcdClient,
    trigger: Arc<LossTrigger>,
    signal: LossSignal,
    armed: bool,
    /// Fires the trigger if our key is deleted (by anyone but us).
    on_delete: Option<crate::watch::TriggerSubscription>,
    /// Keeps the queue's watch alive while held.
    _hub: Arc<WatchHub>,
    /// The slot of our key's name (see [`Slot`]).
    slot: Option<Slot>,
}

impl Held {
    /// Our key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Our key's create revision: the fencing token.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The lease our key is bound to.
    pub fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    /// The client.
    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    /// Fires when it is lost (or released).
    pub fn signal(&self) -> &LossSignal {
        &self.signal
    }

    /// Deletes our key if it is still ours; returns whether it was (`false`: it was lost first).
    /// Until the delete is confirmed the key stays armed: if this future is dropped, or the
    /// delete fails, the drop deletes it in the background.
    ///
    /// Once the loss signal has fired, the key is gone or goes with its lease, and etcd may be
    /// out of reach (that is often why it was lost): `release` then returns `Ok(false)` at once
    /// and deletes the key in the background, instead of waiting out the retries of a delete.
    pub async fn release(mut self) -> Result<bool> {
        // Our own deletion is not a loss.
        self.on_delete = None;
        if self.signal.is_fired() {
            // Still armed: the drop deletes the key in the background.
            return Ok(false);
        }
        let deleted = leave(&self.client, &self.key, self.revision).await?;
        self.armed = false;
        if let Some(slot) = self.slot.take() {
            slot.free();
        }
        self.trigger.fire(LossReason::Released);
        Ok(deleted)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.trigger.fire(LossReason::Released);
        if self.armed {
            leave_in_background(
                &self.client,
                std::mem::take(&mut self.key),
                self.revision,
                self.slot.take(),
            );
        }
    }
}
