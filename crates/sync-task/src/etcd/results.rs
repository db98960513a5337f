//! One long-lived watch of result puts (`results/`), shared by the waits on the jobs this
//! handle submitted: the event that ends a job carries its result, so waiting for a job this
//! handle submitted costs no read after the event.
//!
//! A job's result is written once, in the transaction that ends it (and deletes its key), so
//! the first put of `results/<id>` is its end. A subscription is taken before the job exists
//! (before the submit transaction is sent), after the watch was created: no result put can come
//! before the watch. After the watch is re-created (a reconnect, a compaction) every subscriber
//! is told to read instead ([`ResultEvent::Recheck`]): puts between the two watches were not seen.
//!
//! The watch delivers every result under the prefix (this handle's jobs and others'): results of
//! jobs nobody here waits for are dropped as they arrive. A result waiting for its `wait` is
//! kept in memory only up to [`MAX_KEPT_BYTES`] in all (and [`MAX_VALUE_BYTES`] each); beyond
//! that the subscriber is told the job ended and reads the result.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{EventType, WatchFilterType};
use sync_etcd::EtcdClient;
use tokio::sync::{mpsc, OnceCell};
use tokio::task::JoinHandle;

/// The largest result a subscription keeps in memory for its `wait`.
pub(crate) const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The most bytes of results all subscriptions keep in memory together.
pub(crate) const MAX_KEPT_BYTES: usize = 16 * 1024 * 1024;

/// What a subscriber hears about its job.
#[derive(Debug)]
pub(crate) enum ResultEvent {
    /// The job ended with this result record (its JSON).
    Ended(Vec<u8>),
    /// The job ended; its result was too large to keep here: read it.
    EndedRead,
    /// The watch was re-created and the end may have been missed: read the job.
    Recheck,
}

#[derive(Default)]
struct State {
    subs: HashMap<Vec<u8>, (u64, mpsc::UnboundedSender<ResultEvent>)>,
    next_id: u64,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Bytes of results sent to subscribers and not taken yet.
    kept: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is one insert or remove: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the put of `key` to its subscriber, if any: with its value while the memory
    /// bounds allow, else as "ended, read it".
    fn deliver(&self, key: &[u8], value: &[u8]) {
        let st = self.lock();
        let Some((_, tx)) = st.subs.get(key) else {
            return;
        };
        let len = value.len();
        let keep = len <= MAX_VALUE_BYTES
            && self.kept.fetch_add(len, Ordering::Relaxed) + len <= MAX_KEPT_BYTES;
        let event = if keep {
            ResultEvent::Ended(value.to_vec())
        } else {
            if len <= MAX_VALUE_BYTES {
                self.kept.fetch_sub(len, Ordering::Relaxed);
            }
            ResultEvent::EndedRead
        };
        if let Err(mpsc::error::SendError(ResultEvent::Ended(v))) = tx.send(event) {
            self.kept.fetch_sub(v.len(), Ordering::Relaxed);
        }
    }

    /// Registers interest in the put of `key` (replacing an earlier one for the same key).
    fn subscribe(self: &Arc<Self>, key: &str) -> ResultSubscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let key = key.as_bytes().to_vec();
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.subs.insert(key.clone(), (id, tx));
        drop(st);
        ResultSubscription {
            shared: self.clone(),
            key,
            id,
            rx,
        }
    }
}

/// The shared watch of `results/`.
pub(crate) struct ResultWatch {
    client: EtcdClient,
    range: String,
    shared: Arc<Shared>,
    task: OnceCell<JoinHandle<()>>,
}

impl Drop for ResultWatch {
    fn drop(&mut self) {
        if let Some(t) = self.task.get() {
            t.abort();
        }
    }
}

/// Interest in the end of one job; unsubscribes on drop.
pub(crate) struct ResultSubscription {
    shared: Arc<Shared>,
    key: Vec<u8>,
    id: u64,
    rx: mpsc::UnboundedReceiver<ResultEvent>,
}

impl ResultSubscription {
    /// The next event. If the watch is gone this waits for ever; the only caller is `wait`,
    /// which its own caller bounds.
    pub(crate) async fn next(&mut self) -> ResultEvent {
        match self.rx.recv().await {
            Some(e) => {
                self.took(&e);
                e
            }
            None => std::future::pending().await,
        }
    }

    fn took(&self, e: &ResultEvent) {
        if let ResultEvent::Ended(v) = e {
            self.shared.kept.fetch_sub(v.len(), Ordering::Relaxed);
        }
    }
}

impl Drop for ResultSubscription {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            if st.subs.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
                st.subs.remove(&self.key);
            }
        }
        // What was sent and never taken no longer counts.
        while let Ok(e) = self.rx.try_recv() {
            self.took(&e);
        }
    }
}

impl ResultWatch {
    /// A watch of every key starting with `range` (the results' prefix), started on first use.
    pub(crate) fn new(client: EtcdClient, range: String) -> Self {
        ResultWatch {
            client,
            range,
            shared: Default::default(),
            task: OnceCell::new(),
        }
    }

    /// Subscribes to the result put of `key`; the watch is open when this returns, so any put
    /// of `key` committed afterwards reaches the subscription (or a `Recheck` does).
    pub(crate) async fn subscribe(&self, key: &str) -> sync_etcd::Result<ResultSubscription> {
        self.task
            .get_or_try_init(|| async {
                let stream = open(&self.client, &self.range).await?;
                Ok::<_, sync_etcd::Error>(tokio::spawn(run(
                    self.client.clone(),
                    self.range.clone(),
                    self.shared.clone(),
                    stream,
                )))
            })
            .await?;
        Ok(self.shared.subscribe(key))
    }
}

/// Opens a put-only watch over the range from now on; waits for its creation (so that errors
/// surface here, and every put after it is delivered).
async fn open(client: &EtcdClient, range: &str) -> sync_etcd::Result<etcd_client::WatchStream> {
    sync_etcd::open_prefix_watch(client, "watch results", range, WatchFilterType::NoDelete)
        .await
        .map(|(_, stream)| stream)
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
                Ok(Some(resp)) if resp.canceled() => {
                    tracing::debug!(%range, reason = resp.cancel_reason(), "result watch cancelled");
                    break;
                }
                Ok(Some(resp)) => {
                    for ev in resp.events() {
                        if ev.event_type() != EventType::Put {
                            continue;
                        }
                        if let Some(kv) = ev.kv() {
                            shared.deliver(kv.key(), kv.value());
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%range, error = %e, "result watch failed");
                    break;
                }
            }
        }
        // Re-create it from now on and have every subscriber read: puts between the two
        // watches were not seen.
        let mut backoff = Duration::from_millis(50);
        loop {
            match open(&client, &range).await {
                Ok(s) => {
                    stream = s;
                    for (_, tx) in shared.lock().subs.values() {
                        let _ = tx.send(ResultEvent::Recheck);
                    }
                    tracing::debug!(%range, "result watch re-created");
                    break;
                }
                Err(e) => {
                    tracing::debug!(%range, error = %e, "cannot re-create the result watch yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(sub: &mut ResultSubscription) -> Option<ResultEvent> {
        let e = sub.rx.try_recv().ok()?;
        sub.took(&e);
        Some(e)
    }

    #[test]
    fn results_reach_their_subscriber_within_the_memory_bounds() {
        let shared = Arc::new(Shared::default());
        let mut a = shared.subscribe("r/a");
        let mut b = shared.subscribe("r/b");
        shared.deliver(b"r/other", b"nobody waits");
        shared.deliver(b"r/a", b"small");
        assert!(matches!(ended(&mut a), Some(ResultEvent::Ended(v)) if v == b"small"));
        assert_eq!(
            shared.kept.load(Ordering::Relaxed),
            0,
            "taken: no longer kept"
        );
        assert!(ended(&mut b).is_none(), "another key's put is not b's");
        // Above the per-value bound: "read it", nothing kept.
        shared.deliver(b"r/b", &vec![b'x'; MAX_VALUE_BYTES + 1]);
        assert!(matches!(ended(&mut b), Some(ResultEvent::EndedRead)));
        assert_eq!(shared.kept.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn results_nobody_took_are_bounded_and_released_on_drop() {
        let shared = Arc::new(Shared::default());
        let value = vec![b'v'; MAX_VALUE_BYTES];
        let n = MAX_KEPT_BYTES / MAX_VALUE_BYTES;
        let mut subs: Vec<_> = (0..=n)
            .map(|i| shared.subscribe(&format!("r/{i}")))
            .collect();
        for i in 0..=n {
            shared.deliver(format!("r/{i}").as_bytes(), &value);
        }
        assert_eq!(shared.kept.load(Ordering::Relaxed), MAX_KEPT_BYTES);
        assert!(
            matches!(ended(&mut subs[n]), Some(ResultEvent::EndedRead)),
            "past the budget the subscriber reads instead"
        );
        assert!(matches!(ended(&mut subs[0]), Some(ResultEvent::Ended(_))));
        assert_eq!(
            shared.kept.load(Ordering::Relaxed),
            MAX_KEPT_BYTES - MAX_VALUE_BYTES
        );
        // Dropped with its value not taken: the bytes are free again, the key unsubscribed.
        subs.truncate(1);
        assert_eq!(shared.kept.load(Ordering::Relaxed), 0);
        assert_eq!(shared.lock().subs.len(), 1);
        drop(subs);
        assert!(shared.lock().subs.is_empty());
    }
}
