//! A watch over every key of one range, puts and deletes alike, that starts from a consistent
//! snapshot and keeps going across reconnects.
//!
//! [`WatchHub`](super::WatchHub) only sees deletions, which is all a waiter needs. Someone who
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
//! There is no background task: events are read when [`RangeWatch::next`] is polled, and dropping
//! the `RangeWatch` cancels the watch at the server.

use std::collections::VecDeque;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, SortOrder, SortTarget, WatchOptions, WatchStream};

use super::{EtcdClient, Result};

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
    /// whole range as of `revision`, sorted by create revision; replace your view with it.
    Reset {
        /// The revision of the read.
        revision: i64,
        /// The keys of the range.
        kvs: Vec<RangeKv>,
    },
}

/// The range's keys at one revision, as [`RangeWatch::open`] read them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RangeSnapshot {
    /// The revision of the read.
    pub revision: i64,
    /// The keys of the range, sorted by create revision.
    pub kvs: Vec<RangeKv>,
}

/// A watch over every key starting with a prefix; see the module documentation.
pub struct RangeWatch {
    client: EtcdClient,
    range: String,
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
    /// Reads every key under `range` and starts watching it from the next revision. Fails if
    /// etcd cannot be reached within the client's default budget.
    pub async fn open(
        client: EtcdClient,
        range: impl Into<String>,
    ) -> Result<(Self, RangeSnapshot)> {
        let range = range.into();
        let (snapshot, stream) = read_and_watch(&client, &range).await?;
        Ok((
            RangeWatch {
                client,
                range,
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
                match read_and_watch(&self.client, &self.range).await {
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

/// Reads the range, then watches it from the read's revision + 1.
async fn read_and_watch(client: &EtcdClient, range: &str) -> Result<(RangeSnapshot, WatchStream)> {
    let key = range.to_owned();
    let snapshot = client
        .retry("read range", client.default_budget(), |mut c| {
            let key = key.clone();
            async move {
                let r = c
                    .get(
                        key,
                        Some(
                            GetOptions::new()
                                .with_prefix()
                                .with_sort(SortTarget::Create, SortOrder::Ascend),
                        ),
                    )
                    .await?;
                Ok(RangeSnapshot {
                    revision: r.header().map(|h| h.revision()).unwrap_or(0),
                    kvs: r.kvs().iter().map(RangeKv::from_kv).collect(),
                })
            }
        })
        .await?;
    match watch_from(client, range, snapshot.revision + 1).await? {
        Watched::Stream(s) => Ok((snapshot, *s)),
        // We just read at that revision; only an extreme race with a compaction gets here.
        Watched::Compacted => Err(super::Error::Unavailable {
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
