//! The etcd backend: events as keys under the topic's prefix, numbered by a per-topic sequence
//! kept in the same transaction as each event. See `docs/event.md` for the layout and why
//! readers never see a gap.
//!
//! Keys, under `<prefix>/event/<encoded topic>/`:
//! - `e/<offset, 20 digits>`: one event (publish time, headers, payload);
//! - `seq`: the last offset given (the sequence);
//! - `g/<encoded group>/cursor`: the next offset the group has never delivered;
//! - `g/<encoded group>/p/<offset>`: an event delivered to the group and not yet acked, with its
//!   delivery count (no lease: it outlives every member); 0 for an event a member reserved and
//!   has not handed out yet;
//! - `g/<encoded group>/c/<offset>`: the claim of the member holding (or reserving) it, on that
//!   member's lease, with the wall-clock end of its ack wait (or reservation).

mod codec;
mod group;
mod subscribe;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use futures::future::BoxFuture;
use futures::FutureExt;
use sync_etcd::{EtcdClient, EtcdConfig, EtcdConnection};

use crate::{
    check_name, Error, EventOptions, EventStream, GroupOptions, Member, Message, Result, Start,
    Subscription,
};

/// The etcd backend's limit of one event (payload plus headers): 1 MiB, so that an event with
/// its key, the sequence key and the transaction around them stays below etcd's default
/// request limit of 1.5 MiB (`--max-request-bytes`).
pub const ETCD_MAX_EVENT_BYTES: usize = 1 << 20;

/// An event stream on etcd: every handle on the same cluster and prefix shares its topics and
/// groups. Publish is one transaction (one round trip when this handle knows the topic's
/// sequence); readers read pages and then follow a watch.
///
/// ```no_run
/// use sync_event::{EtcdConfig, EtcdEvents, EventOptions, EventStream, Message};
/// # async fn f() -> sync_event::Result<()> {
/// let events = EtcdEvents::connect(EtcdConfig::new(["127.0.0.1:2379"]), EventOptions::new()).await?;
/// let offset = events.publish("orders", Message::new("hello")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdEvents {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: EtcdClient,
    pub(crate) connection: EtcdConnection,
    pub(crate) options: EventOptions,
    pub(crate) max_bytes: usize,
    /// The last sequence this handle saw per topic: a hint that saves a read per publish.
    seqs: Mutex<HashMap<String, u64>>,
    /// When each topic's age retention was last applied by this handle.
    swept: Mutex<HashMap<String, Instant>>,
    /// Publishes waiting to be written, per topic.
    queues: Mutex<HashMap<String, Arc<Queue>>>,
}

/// Most events in one publish transaction (etcd allows 128 operations per transaction by
/// default; the sequence and a retention delete take two).
const BATCH_EVENTS: usize = 100;
/// Most event bytes in one publish transaction (beyond a single event), below etcd's default
/// request limit of 1.5 MiB.
const BATCH_BYTES: usize = 1 << 20;

struct Queued {
    value: Vec<u8>,
    id: u128,
    tx: tokio::sync::oneshot::Sender<Result<u64>>,
}

#[derive(Default)]
struct Queue {
    items: Mutex<Vec<Queued>>,
    running: std::sync::atomic::AtomicBool,
}

/// Writes a topic's queued publishes in batches until the queue is empty.
async fn flush(inner: Arc<Inner>, topic: String, queue: Arc<Queue>) {
    loop {
        // A batch never holds more events than a count retention keeps: its transaction puts
        // them and deletes what falls out, and etcd refuses a transaction that puts a key it
        // also deletes ("duplicate key"); so every event is stored, and seen by those
        // following the topic, before retention removes it.
        let most = inner
            .options
            .retention_for(&topic)
            .max_events()
            .map_or(BATCH_EVENTS, |max| {
                BATCH_EVENTS.min(usize::try_from(max).unwrap_or(usize::MAX).max(1))
            });
        let batch: Vec<Queued> = {
            let mut items = queue.items.lock().unwrap_or_else(|p| p.into_inner());
            let mut bytes = 0;
            let mut take = 0;
            for q in items.iter() {
                if take > 0 && (take == most || bytes + q.value.len() > BATCH_BYTES) {
                    break;
                }
                bytes += q.value.len();
                take += 1;
            }
            items.drain(..take).collect()
        };
        if batch.is_empty() {
            queue.running.store(false, Ordering::SeqCst);
            let more = !queue
                .items
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            if more && !queue.running.swap(true, Ordering::SeqCst) {
                continue;
            }
            return;
        }
        let values: Vec<(Vec<u8>, u128)> = batch.iter().map(|q| (q.value.clone(), q.id)).collect();
        match inner.write_batch(&topic, &values).await {
            Ok(first) => {
                for (i, q) in batch.into_iter().enumerate() {
                    let _ = q.tx.send(Ok(first + i as u64));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for q in batch {
                    let _ = q.tx.send(Err(Error::Unavailable {
                        op: "publish",
                        endpoint: inner.client.endpoints().to_owned(),
                        source: msg.clone().into(),
                    }));
                }
            }
        }
    }
}

/// A publish writing its own event (see [`Inner::publish`]): when it ends or is dropped, the
/// topic's queue is free again, and what queued meanwhile goes to a flush task.
struct Turn<'a> {
    inner: Arc<Inner>,
    topic: &'a str,
    queue: &'a Arc<Queue>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.queue.running.store(false, Ordering::SeqCst);
        let more = !self
            .queue
            .items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if more && !self.queue.running.swap(true, Ordering::SeqCst) {
            let (inner, topic, queue) = (
                self.inner.clone(),
                self.topic.to_owned(),
                self.queue.clone(),
            );
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(flush(inner, topic, queue));
                }
                // No runtime to write them on (the publish was dropped as the runtime shut
                // down): their publishers see `Closed`, as with a flush task the runtime drops.
                Err(_) => {
                    let items = std::mem::take(
                        &mut *self.queue.items.lock().unwrap_or_else(|p| p.into_inner()),
                    );
                    drop(items);
                    self.queue.running.store(false, Ordering::SeqCst);
                }
            }
        }
    }
}

impl std::fmt::Debug for EtcdEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdEvents")
            .field("endpoints", &self.inner.client.endpoints())
            .field("prefix", &self.inner.client.keyspace().root())
            .finish_non_exhaustive()
    }
}

pub(crate) fn map_err(e: sync_etcd::Error) -> Error {
    match e {
        sync_etcd::Error::InvalidConfig(s) => Error::Config(s),
        other => Error::Unavailable {
            op: "an etcd request",
            endpoint: "the etcd cluster (the cause names the endpoints)".to_owned(),
            source: Box::new(other),
        },
    }
}

/// The keys of one topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicKeys {
    pub(crate) dir: String,
}

impl TopicKeys {
    pub(crate) fn new(client: &EtcdClient, topic: &str) -> Self {
        TopicKeys {
            dir: client.keyspace().dir("event", topic),
        }
    }
    pub(crate) fn events(&self) -> String {
        format!("{}e/", self.dir)
    }
    pub(crate) fn event(&self, offset: u64) -> String {
        format!("{}e/{offset:020}", self.dir)
    }
    /// A prefix under the topic that holds no key: a watch snapshot of it only fixes a
    /// revision.
    pub(crate) fn nothing(&self) -> String {
        format!("{}e/~", self.dir)
    }
    pub(crate) fn seq(&self) -> String {
        format!("{}seq", self.dir)
    }
    pub(crate) fn offset_of(&self, key: &[u8]) -> Option<u64> {
        let k = std::str::from_utf8(key).ok()?;
        k.strip_prefix(&self.events())?.parse().ok()
    }
}

pub(crate) fn parse_u64(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl EtcdEvents {
    /// Connects to etcd with `config` (endpoints, prefix, TLS, auth, timeouts, TTL of group
    /// members' leases).
    pub async fn connect(config: EtcdConfig, options: EventOptions) -> Result<Self> {
        let max_bytes = options.validate(ETCD_MAX_EVENT_BYTES)?;
        let client = EtcdClient::connect(config).await.map_err(map_err)?;
        Ok(Self::build(client, options, max_bytes))
    }

    /// A handle on an existing connection (shared with locks, elections, …).
    pub fn new(connection: EtcdConnection, options: EventOptions) -> Result<Self> {
        let max_bytes = options.validate(ETCD_MAX_EVENT_BYTES)?;
        let client = EtcdClient::of(&connection).clone();
        Ok(Self::build(client, options, max_bytes))
    }

    fn build(client: EtcdClient, options: EventOptions, max_bytes: usize) -> Self {
        EtcdEvents {
            inner: Arc::new(Inner {
                connection: client.connection(),
                client,
                options,
                max_bytes,
                seqs: Mutex::new(HashMap::new()),
                swept: Mutex::new(HashMap::new()),
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Inner {
    pub(crate) fn keys(&self, topic: &str) -> TopicKeys {
        TopicKeys::new(&self.client, topic)
    }

    fn seq_hint(&self, topic: &str) -> Option<u64> {
        self.seqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .copied()
    }

    fn set_seq_hint(&self, topic: &str, seq: u64) {
        self.seqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_owned(), seq);
    }

    /// Publishes through the topic's batcher: events queued by concurrent publishes of this
    /// handle go out together in one transaction (see [`Inner::write_batch`]). The write runs
    /// on a task of its own, so a dropped publish is still written whole, once, or was never
    /// queued.
    pub(crate) async fn publish(self: &Arc<Self>, topic: &str, message: Message) -> Result<u64> {
        check_name("topic", topic)?;
        let size = message.size();
        if size > self.max_bytes {
            return Err(Error::TooLarge {
                topic: topic.to_owned(),
                size,
                limit: self.max_bytes,
                backend: "etcd",
                limit_from: crate::error::limit_from(
                    &self.options,
                    "ETCD_MAX_EVENT_BYTES, which keeps the transaction below etcd's default request limit of 1.5 MiB",
                ),
            });
        }
        let id: u128 = rand::random();
        let value = codec::encode(std::time::SystemTime::now(), id, &message);
        let queue = {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            match queues.get(topic) {
                Some(q) => q.clone(),
                None => queues.entry(topic.to_owned()).or_default().clone(),
            }
        };
        // Nothing queued and no write running: this publish writes its event itself, without
        // a task and two wake-ups between it and etcd (what one publish at a time costs).
        // Publishes that come meanwhile queue behind it; the turn hands them to a flush task
        // when this write ends or is dropped. A dropped publish is still whole, once, or not
        // at all: its write is one transaction.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = {
            let mut items = queue.items.lock().unwrap_or_else(|p| p.into_inner());
            if items.is_empty() && !queue.running.swap(true, Ordering::SeqCst) {
                Some(value)
            } else {
                items.push(Queued { value, id, tx });
                None
            }
        };
        if let Some(value) = queued {
            let _turn = Turn {
                inner: self.clone(),
                topic,
                queue: &queue,
            };
            return self.write_batch(topic, &[(value, id)]).await;
        }
        if !queue.running.swap(true, Ordering::SeqCst) {
            tokio::spawn(flush(self.clone(), topic.to_owned(), queue));
        }
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Writes a batch: one transaction that moves `seq` from n to n + k and puts `e/<n+1>` ..
    /// `e/<n+k>` (and, with a count retention, deletes the events that fall out), guarded by
    /// `seq`'s value. Retried with the sequence it returns when another publisher got there
    /// first; a retry after a lost response finds its own first event by its publish id.
    async fn write_batch(&self, topic: &str, batch: &[(Vec<u8>, u128)]) -> Result<u64> {
        let keys = self.keys(topic);
        let retention = self.options.retention_for(topic);
        let k = batch.len() as u64;
        let mut seq = match self.seq_hint(topic) {
            Some(s) => s,
            None => self.read_seq(&keys).await?,
        };
        loop {
            let n = seq + 1;
            let last = seq + k;
            let guard = if seq == 0 {
                Compare::version(keys.seq(), CompareOp::Equal, 0)
            } else {
                Compare::value(keys.seq(), CompareOp::Equal, seq.to_string())
            };
            let mut ops = vec![TxnOp::put(keys.seq(), last.to_string(), None)];
            for (i, (value, _)) in batch.iter().enumerate() {
                ops.push(TxnOp::put(keys.event(n + i as u64), value.clone(), None));
            }
            if let Some(max) = retention.max_events() {
                if last > max {
                    // Every event up to last - max falls out.
                    ops.push(TxnOp::delete(
                        keys.events(),
                        Some(
                            etcd_client::DeleteOptions::new()
                                .with_range(keys.event(last - max + 1)),
                        ),
                    ));
                }
            }
            let txn = Txn::new().when([guard]).and_then(ops).or_else([
                TxnOp::get(keys.seq(), None),
                TxnOp::get(keys.event(n), None),
            ]);
            let resp = self
                .client
                .retry("publish", self.client.default_budget(), |mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await
                .map_err(map_err)?;
            if resp.succeeded() {
                self.set_seq_hint(topic, last);
                self.sweep_age(topic, &keys, retention.max_age()).await;
                return Ok(n);
            }
            let mut got = resp.op_responses().into_iter().filter_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| kv.value().to_vec())),
                _ => None,
            });
            let current = got.next().flatten().map_or(0, |v| parse_u64(&v));
            if let Some(Some(ev)) = got.next() {
                if codec::id_of(&ev) == Some(batch[0].1) {
                    // Our earlier attempt committed; its response was lost.
                    self.set_seq_hint(topic, current.max(last));
                    return Ok(n);
                }
            }
            seq = current;
            self.set_seq_hint(topic, seq);
        }
    }

    pub(crate) async fn read_seq(&self, keys: &TopicKeys) -> Result<u64> {
        let key = keys.seq();
        let r = self
            .client
            .retry("read sequence", self.client.default_budget(), |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await
            .map_err(map_err)?;
        Ok(r.kvs().first().map_or(0, |kv| parse_u64(kv.value())))
    }

    /// Deletes the events older than `max_age` from the front of the topic, at most every
    /// quarter of the age (between 10 ms and 1 s) per handle. Best effort: a failure is retried
    /// at the next publish.
    async fn sweep_age(&self, topic: &str, keys: &TopicKeys, max_age: Option<Duration>) {
        let Some(age) = max_age else { return };
        let every = (age / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        {
            let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
            let last = swept.get(topic).copied();
            if last.is_some_and(|l| l.elapsed() < every) {
                return;
            }
            swept.insert(topic.to_owned(), Instant::now());
        }
        let Some(cutoff) = std::time::SystemTime::now().checked_sub(age) else {
            return;
        };
        let from = keys.events();
        let end = sync_etcd::prefix_end(from.as_bytes());
        loop {
            let Ok(page) = sync_etcd::read_page(&self.client, from.as_bytes(), &end, 200, 0).await
            else {
                return;
            };
            let old: Vec<u64> = page
                .kvs
                .iter()
                .take_while(|kv| codec::time_of(&kv.value).is_some_and(|t| t < cutoff))
                .filter_map(|kv| keys.offset_of(&kv.key))
                .collect();
            let Some(&last_old) = old.last() else { return };
            let del_end = keys.event(last_old + 1);
            let from2 = from.clone();
            let _ = self
                .client
                .retry(
                    "apply age retention",
                    self.client.default_budget(),
                    |mut c| {
                        let (from, del_end) = (from2.clone(), del_end.clone());
                        async move {
                            c.delete(
                                from,
                                Some(etcd_client::DeleteOptions::new().with_range(del_end)),
                            )
                            .await
                        }
                    },
                )
                .await;
            if old.len() < page.kvs.len() || page.next.is_none() {
                return;
            }
        }
    }

    /// The oldest retained offset (or seq + 1), read at one revision.
    pub(crate) async fn first_available(&self, keys: &TopicKeys) -> Result<(u64, u64)> {
        let (ev, seq) = (keys.events(), keys.seq());
        let txn = Txn::new().and_then([
            TxnOp::get(
                ev.clone(),
                Some(
                    GetOptions::new()
                        .with_range(sync_etcd::prefix_end(ev.as_bytes()))
                        .with_limit(1)
                        .with_keys_only(),
                ),
            ),
            TxnOp::get(seq, None),
        ]);
        let resp = self
            .client
            .retry(
                "read first offset",
                self.client.default_budget(),
                |mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                },
            )
            .await
            .map_err(map_err)?;
        let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        });
        let first = gets
            .next()
            .and_then(|g| g.kvs().first().and_then(|kv| keys.offset_of(kv.key())));
        let seq = gets
            .next()
            .and_then(|g| g.kvs().first().map(|kv| parse_u64(kv.value())))
            .unwrap_or(0);
        Ok((first.unwrap_or(seq + 1), seq))
    }
}

impl EventStream for EtcdEvents {
    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<u64>> {
        self.inner.publish(topic, message).boxed()
    }

    fn subscribe<'a>(
        &'a self,
        topic: &'a str,
        start: Start,
    ) -> BoxFuture<'a, Result<Subscription>> {
        subscribe::subscribe(self.inner.clone(), topic, start).boxed()
    }

    fn join<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        options: GroupOptions,
    ) -> BoxFuture<'a, Result<Box<dyn Member>>> {
        group::join(self.inner.clone(), topic, group, options).boxed()
    }

    fn first_available<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<u64>> {
        async move {
            check_name("topic", topic)?;
            let keys = self.inner.keys(topic);
            if let Some(age) = self.inner.options.retention_for(topic).max_age() {
                self.inner.sweep_age(topic, &keys, Some(age)).await;
            }
            Ok(self.inner.first_available(&keys).await?.0)
        }
        .boxed()
    }
}
