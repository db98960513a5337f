//! A watch over every key of one range, puts and deletes alike, that starts from a consistent
//! snapshot and keeps going across reconnects.
//!
//! [`WatchHub`](crate::WatchHub) only sees deletions, which is all a waiter needs. Someone who
//! wants to know the whole state of a range (who leads an election, and what it proclaimed) needs
//! the puts too, and must never miss a change: [`RangeWatch::open`] reads the range and watches it
//! from the read's revision + 1, so the snapshot and the events after it fit together with
//! nothing missed and nothing twice.
//!
//! After a disconnect the watch resumes from the revision after the last one it delivered, so
//! no change is lost. Only if etcd compacted those revisions meanwhile does it read the range
//! again and deliver a [`RangeEvent::Reset`]: the intermediate changes are then gone for good, and
//! the consumer replaces its view.
//!
//! Snapshots are read in pages of 500 keys, all at the revision of the first page, so a
//! range of any size fits gRPC's message limit (4 MiB by default; one response of 25 000 small
//! keys did not). A consumer that cannot hold a whole range in memory opens the watch with
//! [`RangeWatch::open_parts`]: snapshots then hold only the sub-ranges it names, and it reads
//! the rest itself, page by page ([`read_page`]), as it needs it.
//!
//! There is no background task: events are read when [`RangeWatch::next`] is polled, and dropping
//! the `RangeWatch` cancels the watch at the server.

use std::collections::VecDeque;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions, WatchStream};

use crate::{EtcdClient, Result};

/// One key of the range, as read or as put.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RangeKv {
    /// The key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
    /// The revision that created it (unchanged by later puts).
    pub create_revision: i64,
    /// The revision of its last put.
    pub mod_revision: i64,
    /// The lease it is bound to (0: none).
    pub lease: i64,
}

impl RangeKv {
    /// A key as it would be read (for tests of consumers).
    pub fn new(
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        create_revision: i64,
        mod_revision: i64,
        lease: i64,
    ) -> Self {
        RangeKv {
            key: key.into(),
            value: value.into(),
            create_revision,
            mod_revision,
            lease,
        }
    }

    fn from_kv(kv: &etcd_client::KeyValue) -> Self {
        RangeKv {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }
    }
}

/// One change of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeChange {
    /// The key was created or overwritten.
    Put(RangeKv),
    /// The key was deleted (by a delete, a transaction or its lease's end).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// What [`RangeWatch::next`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeEvent {
    /// Every change made at one revision (one transaction), in order. Apply them all before
    /// looking at the range: a transaction's intermediate states never existed for anyone else.
    Changes {
        /// The revision.
        revision: i64,
        /// The changes.
        changes: Vec<RangeChange>,
    },
    /// Changes were missed (etcd compacted them while the watch was disconnected): here is the
    /// range (or the parts given to [`RangeWatch::open_parts`]) as of `revision`, sorted by
    /// create revision; replace your view with it.
    Reset {
        /// The revision of the read.
        revision: i64,
        /// The keys of the range.
        kvs: Vec<RangeKv>,
    },
}

/// The range's keys (or its parts') at one revision, as [`RangeWatch::open`] read them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RangeSnapshot {
    /// The revision of the read.
    pub revision: i64,
    /// The keys of the range, sorted by create revision.
    pub kvs: Vec<RangeKv>,
}

/// How many keys one snapshot read asks for at most.
pub(super) const PAGE: i64 = 500;

/// One page of a range, as [`read_page`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RangePage {
    /// The revision of the read.
    pub revision: i64,
    /// The keys, in key order.
    pub kvs: Vec<RangeKv>,
    /// Where the next page starts, if there are more keys.
    pub next: Option<Vec<u8>>,
}

impl RangePage {
    /// A page as it would be read (for tests of consumers).
    pub fn new(revision: i64, kvs: Vec<RangeKv>, next: Option<Vec<u8>>) -> Self {
        RangePage {
            revision,
            kvs,
            next,
        }
    }
}

/// The end of the range of keys starting with `prefix` (for [`read_page`]).
///
/// ```
/// assert_eq!(sync_etcd::prefix_end(b"a/"), b"a0".to_vec());
/// assert_eq!(sync_etcd::prefix_end(b"a\xff"), b"b".to_vec());
/// ```
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

/// Reads at most `limit` keys of `[from, end)` in key order, at `revision` (0: the current one,
/// a linearizable read), retrying transient errors within the client's default budget.
pub async fn read_page(
    client: &EtcdClient,
    from: &[u8],
    end: &[u8],
    limit: i64,
    revision: i64,
) -> Result<RangePage> {
    let (from, end) = (from.to_vec(), end.to_vec());
    client
        .retry("read range", client.default_budget(), |mut c| {
            let (from, end) = (from.clone(), end.clone());
            async move {
                let mut opts = GetOptions::new().with_range(end).with_limit(limit);
                if revision > 0 {
                    opts = opts.with_revision(revision);
                }
                let r = c.get(from, Some(opts)).await?;
                let kvs: Vec<RangeKv> = r.kvs().iter().map(RangeKv::from_kv).collect();
                let next = match kvs.last() {
                    Some(last) if r.more() => {
                        let mut k = last.key.clone();
                        k.push(0);
                        Some(k)
                    }
                    _ => None,
                };
                Ok(RangePage {
                    revision: r.header().map(|h| h.revision()).unwrap_or(0),
                    kvs,
                    next,
                })
            }
        })
        .await
}

/// A watch over every key starting with a prefix; see the module documentation.
pub struct RangeWatch {
    client: EtcdClient,
    range: String,
    /// What snapshots read: the sub-ranges of `range` named by [`RangeWatch::open_parts`], or
    /// the whole range.
    parts: Vec<String>,
    stream: Option<WatchStream>,
    /// Every change up to this revision was delivered (or is in `ready`).
    revision: i64,
    /// The next reconnect must read the range again (the missed revisions were compacted).
    reset: bool,
    ready: VecDeque<RangeEvent>,
}

impl std::fmt::Debug for RangeWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeWatch")
            .field("range", &self.range)
            .field("revision", &self.revision)
            .field("connected", &self.stream.is_some())
            .finish()
    }
}

impl RangeWatch {
    /// Reads every key under `range` (in pages, at one revision) and starts watching it from
    /// the next revision. Fails if etcd cannot be reached within the client's default budget.
    pub async fn open(
        client: EtcdClient,
        range: impl Into<String>,
    ) -> Result<(Self, RangeSnapshot)> {
        let range = range.into();
        let parts = vec![range.clone()];
        Self::open_with(client, range, parts).await
    }

    /// Watches every key under `range`, like [`open`](RangeWatch::open), but its snapshots (the
    /// first one, and those a [`RangeEvent::Reset`] delivers) hold only the keys under `parts`,
    /// sub-prefixes of `range`. For a consumer that reads the rest of the range itself, in
    /// pages ([`read_page`]): a read it makes after applying every event up to revision `r`
    /// sees revision `r` or later, and the events it applies afterwards that are not newer
    /// than its read repeat what it read.
    pub async fn open_parts(
        client: EtcdClient,
        range: impl Into<String>,
        parts: Vec<String>,
    ) -> Result<(Self, RangeSnapshot)> {
        let range = range.into();
        if let Some(p) = parts.iter().find(|p| !p.starts_with(&range)) {
            return Err(crate::Error::InvalidConfig(format!(
                "{p:?} is not a part of the watched range {range:?}"
            )));
        }
        Self::open_with(client, range, parts).await
    }

    async fn open_with(
        client: EtcdClient,
        range: String,
        parts: Vec<String>,
    ) -> Result<(Self, RangeSnapshot)> {
        let (snapshot, stream) = read_and_watch(&client, &range, &parts).await?;
        Ok((
            RangeWatch {
                client,
                range,
                parts,
                stream: Some(stream),
                revision: snapshot.revision,
                reset: false,
                ready: VecDeque::new(),
            },
            snapshot,
        ))
    }

    /// The range this watch covers.
    pub fn range(&self) -> &str {
        &self.range
    }

    /// The next event. Never fails: a broken watch is re-created (with a backoff while etcd is
    /// unreachable), so during an outage this simply waits. Cancel-safe.
    pub async fn next(&mut self) -> RangeEvent {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return ev;
            }
            let Some(stream) = self.stream.as_mut() else {
                self.reconnect().await;
                continue;
            };
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        tracing::debug!(range = %self.range, reason = resp.cancel_reason(), compacted = resp.compact_revision(), "range watch cancelled");
                        self.reset |= resp.compact_revision() > 0;
                        self.stream = None;
                        continue;
                    }
                    self.absorb(&resp);
                }
                Ok(None) => {
                    tracing::debug!(range = %self.range, "range watch closed");
                    self.stream = None;
                }
                Err(e) => {
                    tracing::debug!(range = %self.range, error = %e, "range watch failed");
                    self.stream = None;
                }
            }
        }
    }

    /// Queues the events of one response, one [`RangeEvent::Changes`] per revision.
    fn absorb(&mut self, resp: &etcd_client::WatchResponse) {
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let revision = kv.mod_revision();
            if revision <= self.revision {
                // Already delivered (a resumed watch may repeat the last revision's events).
                continue;
            }
            let change = match ev.event_type() {
                EventType::Put => RangeChange::Put(RangeKv::from_kv(kv)),
                EventType::Delete => RangeChange::Delete {
                    key: kv.key().to_vec(),
                },
            };
            match self.ready.back_mut() {
                Some(RangeEvent::Changes {
                    revision: last,
                    changes,
                }) if *last == revision => changes.push(change),
                _ => self.ready.push_back(RangeEvent::Changes {
                    revision,
                    changes: vec![change],
                }),
            }
        }
        if let Some(RangeEvent::Changes { revision, .. }) = self.ready.back() {
            self.revision = self.revision.max(*revision);
        }
    }

    /// Re-creates the watch: from the next undelivered revision if etcd still has it, else by
    /// reading the range again (queuing a [`RangeEvent::Reset`]). Retries until it succeeds.
    async fn reconnect(&mut self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = if self.reset {
                match read_and_watch(&self.client, &self.range, &self.parts).await {
                    Ok((snap, stream)) => {
                        self.revision = snap.revision;
                        self.reset = false;
                        self.ready.push_back(RangeEvent::Reset {
                            revision: snap.revision,
                            kvs: snap.kvs,
                        });
                        Ok(Some(stream))
                    }
                    Err(e) => Err(e.to_string()),
                }
            } else {
                match watch_from(&self.client, &self.range, self.revision + 1).await {
                    Ok(Watched::Stream(s)) => Ok(Some(*s)),
                    Ok(Watched::Compacted) => {
                        self.reset = true;
                        Ok(None)
                    }
                    Err(e) => Err(e.to_string()),
                }
            };
            match attempt {
                Ok(Some(stream)) => {
                    tracing::debug!(range = %self.range, revision = self.revision, "range watch re-created");
                    self.stream = Some(stream);
                    return;
                }
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(range = %self.range, error = %e, "cannot re-create the range watch yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// A confirmed watch, or `Compacted` if its start revision is no longer available.
enum Watched {
    Stream(Box<WatchStream>),
    Compacted,
}

/// Reads every key under `parts`, in pages, all at the revision of the first page, sorted by
/// create revision. Starts again (at a newer revision) if etcd compacts that revision meanwhile.
async fn read_snapshot(client: &EtcdClient, parts: &[String]) -> Result<RangeSnapshot> {
    let mut tries = 0;
    loop {
        tries += 1;
        match read_parts(client, parts).await {
            Err(e) if tries < 5 && is_compacted(&e) => {
                tracing::debug!(error = %e, "snapshot revision compacted while reading; again");
            }
            other => return other,
        }
    }
}

async fn read_parts(client: &EtcdClient, parts: &[String]) -> Result<RangeSnapshot> {
    // 0 until the first page fixes it.
    let mut revision = 0;
    let mut kvs = Vec::new();
    for part in parts {
        let end = prefix_end(part.as_bytes());
        let mut from = part.as_bytes().to_vec();
        loop {
            let page = read_page(client, &from, &end, PAGE, revision).await?;
            if revision == 0 {
                revision = page.revision;
            }
            kvs.extend(page.kvs);
            match page.next {
                Some(next) => from = next,
                None => break,
            }
        }
    }
    kvs.sort_by_key(|kv| kv.create_revision);
    Ok(RangeSnapshot { revision, kvs })
}

fn is_compacted(e: &crate::Error) -> bool {
    match e {
        crate::Error::Etcd { source, .. } => source.to_string().contains("compacted"),
        _ => false,
    }
}

/// Reads the snapshot of `parts`, then watches `range` from the read's revision + 1.
async fn read_and_watch(
    client: &EtcdClient,
    range: &str,
    parts: &[String],
) -> Result<(RangeSnapshot, WatchStream)> {
    let snapshot = read_snapshot(client, parts).await?;
    match watch_from(client, range, snapshot.revision + 1).await? {
        Watched::Stream(s) => Ok((snapshot, *s)),
        // We just read at that revision; only an extreme race with a compaction gets here.
        Watched::Compacted => Err(crate::Error::Unavailable {
            endpoints: client.endpoints().to_owned(),
            op: "watch range",
            source: "the revision just read was compacted at once".into(),
        }),
    }
}

/// Opens a watch over `range` from `start` and waits for the server to confirm it.
async fn watch_from(client: &EtcdClient, range: &str, start: i64) -> Result<Watched> {
    let range = range.to_owned();
    client
        .retry("watch range", client.default_budget(), |mut c| {
            let range = range.clone();
            async move {
                let mut stream = c
                    .watch(
                        range,
                        Some(WatchOptions::new().with_prefix().with_start_revision(start)),
                    )
                    .await?;
                match stream.message().await? {
                    Some(m) if m.created() && !m.canceled() => {
                        Ok(Watched::Stream(Box::new(stream)))
                    }
                    Some(m) if m.compact_revision() > 0 => Ok(Watched::Compacted),
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
