//! A long-lived delete watch over one key range (one queue), shared by every waiter and holder
//! of that queue in this client.
//!
//! A watch created per wait starts at the revision of a read that is already old when the watch
//! is created; under load etcd then serves it from a catch-up loop that runs every 100 ms, so
//! the waiter wakes up late. One watch created once and kept open is never behind. Waiters
//! register interest in single keys ([`WatchHub::subscribe`]) and get their delete events.
//!
//! No event is missed: the hub records the highest revision it has dispatched, and keeps the last
//! [`HISTORY`] deletes it dispatched. A waiter that read its predecessor at revision `r` and
//! subscribes afterwards gets, at once and in order, the deletes of its keys after `r` that the
//! hub already dispatched (from that history), then every later one. Only when `r` is older than
//! the history (or than the watch's last restart) is it told to re-read instead. After a
//! reconnect or a compaction the hub tells every subscriber to re-read ([`KeyEvent::Recheck`]).
//!
//! The history saves the waiter a read under contention: without it, every release that landed
//! between a join's read and its subscription sent the joiner back to etcd.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{EventType, WatchFilterType, WatchOptions};
use tokio::sync::{mpsc, OnceCell};
use tokio::task::JoinHandle;

use crate::{EtcdClient, Result};
use sync_core::signal::{LossReason, LossTrigger};

/// What a subscriber hears about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEvent {
    /// The key was deleted at this revision.
    Deleted {
        /// The revision of the deletion.
        revision: i64,
    },
    /// The watch was re-created and events may have been missed: read the key again.
    Recheck,
}

type Delivery = (Option<Arc<[u8]>>, KeyEvent);
/// Subscribers of a key: (id, channel, the revision they saw the key at). A delete at or below
/// that revision is of an earlier key of the same name (queue keys are reused once deleted),
/// not theirs, and is not delivered.
type Subscribers = Vec<(u64, mpsc::UnboundedSender<Delivery>, i64)>;

/// Held keys whose deletion fires a loss trigger directly: (id, trigger, create revision). A
/// delete at or below the create revision is of an earlier key of the same name.
type Triggers = Vec<(u64, std::sync::Weak<LossTrigger>, i64)>;

#[derive(Default, Debug)]
struct State {
    subs: HashMap<Arc<[u8]>, Subscribers>,
    triggers: HashMap<Arc<[u8]>, Triggers>,
    dispatched: i64,
    /// The last deletes dispatched, oldest first: every delete with a revision above
    /// `history_from` (and at most `dispatched`) is in it.
    history: std::collections::VecDeque<(i64, Arc<[u8]>)>,
    history_from: i64,
    next_id: u64,
}

/// How many dispatched deletes a hub remembers for late subscribers.
const HISTORY: usize = 4096;

impl State {
    /// Records a dispatched delete.
    fn dispatch(&mut self, revision: i64, key: Arc<[u8]>) {
        self.dispatched = self.dispatched.max(revision);
        if self.history.len() == HISTORY {
            if let Some((oldest, _)) = self.history.pop_front() {
                // Deletes at or below it may now be missing from the history.
                self.history_from = self.history_from.max(oldest);
            }
        }
        self.history.push_back((revision, key));
    }

    /// A delete of `key` at `revision`, seen on the watch: recorded, and told to the triggers
    /// and subscribers of that key that saw it at an earlier revision. A delete at or below the
    /// revision a trigger's key was created at (or a subscriber read it at) is of an earlier key
    /// of the same name (queue keys are reused once deleted), not theirs.
    fn deliver_delete(&mut self, revision: i64, key: &[u8]) {
        let stored = self
            .subs
            .get_key_value(key)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| Arc::from(key));
        self.dispatch(revision, stored);
        if let Some(triggers) = self.triggers.get(key) {
            for (_, t, created) in triggers {
                if revision <= *created {
                    continue;
                }
                if let Some(t) = t.upgrade() {
                    if t.fire(LossReason::Revoked) {
                        tracing::warn!(key = %String::from_utf8_lossy(key), "held key deleted: loss reported");
                    }
                }
            }
        }
        if let Some((key, subs)) = self.subs.get_key_value(key) {
            for (_, tx, seen) in subs {
                if revision > *seen {
                    let _ = tx.send((Some(key.clone()), KeyEvent::Deleted { revision }));
                }
            }
        }
    }

    /// For a subscriber of `keys` that read them at `read_rev`: sends it the deletes of its keys
    /// after `read_rev` already dispatched, oldest first, and returns `false`; or returns `true`
    /// (read again) when some of them may be missing from the history.
    fn catch_up(
        &self,
        keys: &[Arc<[u8]>],
        read_rev: i64,
        tx: &mpsc::UnboundedSender<Delivery>,
    ) -> bool {
        if self.dispatched <= read_rev {
            return false;
        }
        if read_rev < self.history_from {
            return true;
        }
        let start = self.history.partition_point(|(rev, _)| *rev <= read_rev);
        for (revision, key) in self.history.range(start..) {
            if let Some(k) = keys.iter().find(|k| k[..] == key[..]) {
                let revision = *revision;
                let _ = tx.send((Some(k.clone()), KeyEvent::Deleted { revision }));
            }
        }
        false
    }

    /// The watch (re)started at `rev`: deletes before it were not all seen.
    fn restarted_at(&mut self, rev: i64) {
        self.dispatched = self.dispatched.max(rev);
        self.history.clear();
        self.history_from = self.dispatched;
    }
}

#[derive(Default, Debug)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the map inconsistent (every update is a
        // single insert or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The shared delete watch over one key range.
pub struct WatchHub {
    client: EtcdClient,
    range: String,
    shared: Arc<Shared>,
    task: OnceCell<JoinHandle<()>>,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHub")
            .field("range", &self.range)
            .finish()
    }
}

impl Drop for WatchHub {
    fn drop(&mut self) {
        if let Some(t) = self.task.get() {
            t.abort();
        }
    }
}

/// Interest in the deletion of one or more keys; unsubscribes on drop. Events of all its keys
/// arrive in revision order on one channel.
#[derive(Debug)]
pub struct KeySubscription {
    shared: Arc<Shared>,
    keys: Vec<Arc<[u8]>>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Delivery>,
}

impl KeySubscription {
    /// The next event for the key(s). If the hub is gone this waits forever; callers always race
    /// it against their lease's loss and their own deadline.
    pub async fn next(&mut self) -> KeyEvent {
        self.next_keyed().await.1
    }

    /// An event already delivered, if any (does not wait).
    pub fn try_next(&mut self) -> Option<KeyEvent> {
        self.rx.try_recv().ok().map(|(_, e)| e)
    }

    /// The next event and, for a deletion, which key it was.
    pub async fn next_keyed(&mut self) -> (Option<Arc<[u8]>>, KeyEvent) {
        match self.rx.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }
}

impl Drop for KeySubscription {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        for key in &self.keys {
            if let Some(v) = st.subs.get_mut(key) {
                v.retain(|(id, _, _)| *id != self.id);
                if v.is_empty() {
                    st.subs.remove(key);
                }
            }
        }
    }
}

/// A held key whose deletion fires a loss trigger; unregisters on drop.
#[derive(Debug)]
pub struct TriggerSubscription {
    shared: Arc<Shared>,
    key: Arc<[u8]>,
    id: u64,
}

impl Drop for TriggerSubscription {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(v) = st.triggers.get_mut(&self.key) {
            v.retain(|(id, _, _)| *id != self.id);
            if v.is_empty() {
                st.triggers.remove(&self.key);
            }
        }
    }
}

impl WatchHub {
    /// A hub over every key starting with `range`; the watch starts on first use.
    pub fn new(client: EtcdClient, range: impl Into<String>) -> Self {
        WatchHub {
            client,
            range: range.into(),
            shared: Default::default(),
            task: OnceCell::new(),
        }
    }

    /// Starts the watch if it is not running yet (the first call costs a round trip or two).
    pub async fn start(&self) -> Result<()> {
        self.task
            .get_or_try_init(|| async {
                let (rev, stream) = open(&self.client, &self.range).await?;
                self.shared.lock().restarted_at(rev);
                Ok(tokio::spawn(run(
                    self.client.clone(),
                    self.range.clone(),
                    self.shared.clone(),
                    stream,
                )))
            })
            .await
            .map(|_| ())
    }

    /// Whether nobody is subscribed.
    pub fn is_idle(&self) -> bool {
        let st = self.shared.lock();
        st.subs.is_empty() && st.triggers.is_empty()
    }

    /// Fires `trigger` with [`LossReason::Revoked`] when `key` (create revision `rev`) is
    /// deleted, without a task of the caller's: for held keys. The hub must be started, and the
    /// caller must already be subscribed to `key` (so no deletion can fall between the two).
    pub fn watch_trigger(
        &self,
        key: &str,
        rev: i64,
        trigger: &Arc<LossTrigger>,
    ) -> TriggerSubscription {
        let key: Arc<[u8]> = Arc::from(key.as_bytes());
        let mut st = self.shared.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.triggers
            .entry(key.clone())
            .or_default()
            .push((id, Arc::downgrade(trigger), rev));
        drop(st);
        TriggerSubscription {
            shared: self.shared.clone(),
            key,
            id,
        }
    }

    /// Subscribes to deletes of `key`, which the caller saw existing at revision `read_rev`.
    /// Returns the subscription and whether the caller must read the key again: only when a
    /// delete after `read_rev` may have been dispatched before it subscribed and is no longer in
    /// the hub's history. Deletes after `read_rev` that the history holds are delivered on the
    /// subscription at once, in order, before any later one. Deletes at or below `read_rev` are
    /// never delivered: they are of an earlier key of the same name (pass 0 to take every
    /// delete of a key that is never reused).
    pub async fn subscribe(&self, key: &str, read_rev: i64) -> Result<(KeySubscription, bool)> {
        self.subscribe_many([key], read_rev).await
    }

    /// Subscribes to deletes of every key in `keys`, all seen existing at revision `read_rev`,
    /// on one channel (so their events keep their order). Returns whether the caller must read
    /// again, as [`subscribe`](Self::subscribe) does.
    pub async fn subscribe_many<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
        read_rev: i64,
    ) -> Result<(KeySubscription, bool)> {
        self.start().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let keys: Vec<Arc<[u8]>> = keys.into_iter().map(|k| Arc::from(k.as_bytes())).collect();
        let mut st = self.shared.lock();
        let id = st.next_id;
        st.next_id += 1;
        for key in &keys {
            st.subs
                .entry(key.clone())
                .or_default()
                .push((id, tx.clone(), read_rev));
        }
        let recheck = st.catch_up(&keys, read_rev, &tx);
        drop(st);
        Ok((
            KeySubscription {
                shared: self.shared.clone(),
                keys,
                id,
                rx,
            },
            recheck,
        ))
    }
}

/// Opens a delete-only watch over the range from now on, and returns the revision its creation
/// reported: every delete after that revision will be delivered. A watch created without a start
/// revision is never behind, so etcd never serves it from its 100 ms catch-up loop.
async fn open(client: &EtcdClient, range: &str) -> Result<(i64, etcd_client::WatchStream)> {
    open_prefix_watch(client, "watch", range, WatchFilterType::NoPut).await
}

/// Opens a watch of every key starting with `prefix` from now on, leaving out the events
/// `filter` names, through [`EtcdClient::retry`] as `op`; returns once etcd reported its creation,
/// with the revision that creation reported (every event after it will be delivered). Waiting for
/// the creation makes errors (auth, no leader) surface here rather than on the first event.
///
/// ```no_run
/// # async fn demo(etcd: sync_etcd::EtcdClient) -> sync_etcd::Result<()> {
/// use sync_etcd::etcd_client::WatchFilterType;
/// let (rev, _stream) =
///     sync_etcd::open_prefix_watch(&etcd, "watch jobs", "app/jobs/", WatchFilterType::NoDelete)
///         .await?;
/// println!("every put after revision {rev} will arrive");
/// # Ok(()) }
/// ```
pub async fn open_prefix_watch(
    client: &EtcdClient,
    op: &'static str,
    prefix: &str,
    filter: WatchFilterType,
) -> Result<(i64, etcd_client::WatchStream)> {
    let prefix = prefix.to_owned();
    client
        .retry(op, client.default_budget(), |mut c| {
            let prefix = prefix.clone();
            async move {
                let mut stream = c
                    .watch(
                        prefix,
                        Some(WatchOptions::new().with_prefix().with_filters([filter])),
                    )
                    .await?;
                match stream.message().await? {
                    Some(m) if m.created() && !m.canceled() => {
                        let rev = m.header().map(|h| h.revision()).unwrap_or(0);
                        Ok((rev, stream))
                    }
                    Some(m) => Err(etcd_client::Error::WatchError(format!(
                        "watch was not created: {}",
                        m.cancel_reason()
                    ))),
                    None => Err(etcd_client::Error::WatchError(
                        "watch stream closed at creation".into(),
                    )),
                }
            }
        })
        .await
}

async fn run(
    client: EtcdClient,
    range: String,
    shared: Arc<Shared>,
    mut stream: etcd_client::WatchStream,
) {
    loop {
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        tracing::debug!(%range, reason = resp.cancel_reason(), compacted = resp.compact_revision(), "shared watch cancelled");
                        break;
                    }
                    let mut st = shared.lock();
                    for ev in resp.events() {
                        if ev.event_type() != EventType::Delete {
                            continue;
                        }
                        let Some(kv) = ev.kv() else { continue };
                        st.deliver_delete(kv.mod_revision(), kv.key());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%range, error = %e, "shared watch failed");
                    break;
                }
            }
        }
        // Re-create the watch from the current revision and have every subscriber re-read: the
        // deletes between the old watch's end and the new one's start were not seen.
        let mut backoff = Duration::from_millis(50);
        loop {
            match open(&client, &range).await {
                Ok((rev, s)) => {
                    stream = s;
                    let mut st = shared.lock();
                    st.restarted_at(rev);
                    for subs in st.subs.values() {
                        for (_, tx, _) in subs {
                            let _ = tx.send((None, KeyEvent::Recheck));
                        }
                    }
                    // Held keys: read each back; one deleted meanwhile fires its trigger.
                    let held: Vec<(Arc<[u8]>, std::sync::Weak<LossTrigger>, i64)> = st
                        .triggers
                        .iter()
                        .flat_map(|(k, v)| v.iter().map(|(_, t, r)| (k.clone(), t.clone(), *r)))
                        .collect();
                    if !held.is_empty() {
                        tokio::spawn(recheck_held(client.clone(), held));
                    }
                    tracing::debug!(%range, rev, "shared watch re-created");
                    break;
                }
                Err(e) => {
                    tracing::debug!(%range, error = %e, "cannot re-create the shared watch yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// After a watch restart: fires the trigger of every held key that no longer exists with its
/// create revision (its deletion may have gone by while the watch was down).
async fn recheck_held(
    client: EtcdClient,
    held: Vec<(Arc<[u8]>, std::sync::Weak<LossTrigger>, i64)>,
) {
    for (key, trigger, rev) in held {
        let Some(trigger) = trigger.upgrade() else {
            continue;
        };
        let k = key.to_vec();
        let still = client
            .retry("recheck held key", client.default_budget(), |mut c| {
                let k = k.clone();
                async move {
                    let r = c
                        .get(k, Some(etcd_client::GetOptions::new().with_keys_only()))
                        .await?;
                    Ok(r.kvs().first().map(|kv| kv.create_revision()) == Some(rev))
                }
            })
            .await;
        // An error here leaves the decision to the lease keeper's deadline.
        if let Ok(false) = still {
            if trigger.fire(LossReason::Revoked) {
                tracing::warn!(key = %String::from_utf8_lossy(&key), "held key gone after a watch restart: loss reported");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_core::signal::loss_signal;

    fn key(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    fn dispatch(st: &mut State, rev: i64, k: &str) {
        st.dispatch(rev, key(k));
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        while let Ok((k, ev)) = rx.try_recv() {
            let KeyEvent::Deleted { revision } = ev else {
                panic!("unexpected {ev:?}")
            };
            out.push((String::from_utf8(k.unwrap().to_vec()).unwrap(), revision));
        }
        out
    }

    #[test]
    fn a_delete_of_an_earlier_key_of_the_same_name_is_not_delivered() {
        let mut st = State::default();
        st.restarted_at(10);
        let (tx, mut rx) = mpsc::unbounded_channel();
        // A subscriber that read "k" at 20, and a held "k" created at 20.
        st.subs.entry(key("k")).or_default().push((1, tx, 20));
        let (trigger, signal) = loss_signal();
        let trigger = Arc::new(trigger);
        st.triggers
            .entry(key("k"))
            .or_default()
            .push((2, Arc::downgrade(&trigger), 20));
        // The delete of the key "k" before it, arriving late.
        st.deliver_delete(15, b"k");
        st.deliver_delete(20, b"k");
        assert!(
            drain(&mut rx).is_empty(),
            "an earlier key's delete was delivered"
        );
        assert!(!signal.is_fired(), "an earlier key's delete fired the loss");
        // Its own delete.
        st.deliver_delete(21, b"k");
        assert_eq!(drain(&mut rx), [("k".into(), 21)]);
        assert_eq!(signal.reason(), Some(LossReason::Revoked));
    }

    #[test]
    fn a_late_subscriber_gets_what_went_by_in_order_and_only_its_keys() {
        let mut st = State::default();
        st.restarted_at(10);
        dispatch(&mut st, 11, "a");
        dispatch(&mut st, 12, "b");
        dispatch(&mut st, 13, "c");
        dispatch(&mut st, 13, "a2");
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Read at 11: the delete of "a" at 11 was seen by the read; "c" and "a2" came after.
        let recheck = st.catch_up(&[key("a"), key("c"), key("a2")], 11, &tx);
        assert!(!recheck);
        assert_eq!(drain(&mut rx), [("c".into(), 13), ("a2".into(), 13)]);
        // Up to date: nothing to replay, no read.
        assert!(!st.catch_up(&[key("a")], 13, &tx));
        assert!(drain(&mut rx).is_empty());
    }

    #[test]
    fn a_read_older_than_the_history_or_the_last_restart_must_read_again() {
        let mut st = State::default();
        st.restarted_at(10);
        let (tx, mut rx) = mpsc::unbounded_channel();
        dispatch(&mut st, 11, "a");
        assert!(
            st.catch_up(&[key("a")], 9, &tx),
            "read before the watch started"
        );
        for i in 0..HISTORY as i64 {
            dispatch(&mut st, 12 + i, "x");
        }
        // The delete at 11 fell out of the history: a read at 11 is still complete (11 itself
        // was seen by the read), a read at 10 is not.
        assert!(!st.catch_up(&[key("a")], 11, &tx));
        assert!(st.catch_up(&[key("a")], 10, &tx));
        assert!(drain(&mut rx).is_empty());
        st.restarted_at(20_000);
        assert!(
            st.catch_up(&[key("x")], 19_999, &tx),
            "deletes across a restart were missed"
        );
        assert!(!st.catch_up(&[key("x")], 20_000, &tx));
    }
}
