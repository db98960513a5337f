//! The etcd backend: the FIFO queue of sync-core under `<prefix>/election/<group>/`, one key per
//! candidate bound to a kept-alive lease; the leader is the key with the smallest create
//! revision, and its create revision is the term.
//!
//! See `docs/leader.md` for why one leader at a time holds and what the term protects against.

mod observe;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp};
use futures::future::BoxFuture;
use futures::FutureExt;
use sync_core::etcd::{EtcdClient, EtcdConfig, Held, LeasePool, Queue, QueueEntry, WaitError};
use sync_core::signal::LossReason;

use crate::{
    check_group, ElectOptions, Elected, Error, Leader, LeaderInfo, LeaderStream, RawElected, Result,
};

/// The key kind of elections: `<prefix>/election/<encoded group>/<candidate key>`.
const KIND: &str = "election";

/// Elections shared by every process connected to the same etcd cluster and key prefix.
///
/// Cheap to clone; clones share one connection, one lease per TTL and one watch. Two candidacies
/// in one process are two candidates, exactly like candidacies of two processes.
///
/// ```no_run
/// use sync_leader::{ElectOptions, EtcdConfig, EtcdLeader, Leader};
/// # async fn demo() -> sync_leader::Result<()> {
/// let cfg = EtcdConfig::new(["127.0.0.1:2379"]).with_prefix("myapp");
/// let election = EtcdLeader::connect(cfg).await?;
/// let elected = election.elect("node-1", ElectOptions::new().with_group("scheduler")).await?;
/// tokio::select! {
///     reason = elected.revoked() => eprintln!("lost the leadership: {reason}"),
///     _ = async { /* lead, passing elected.term() along */ } => elected.resign().await?,
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct EtcdLeader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: EtcdClient,
    queue: Queue,
    leases: LeasePool,
    counter: AtomicU64,
}

/// A candidate key's value: the candidate id, a NUL (ids never contain one), the value.
pub(crate) fn encode_value(id: &str, value: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(id.len() + 1 + value.len());
    v.extend_from_slice(id.as_bytes());
    v.push(0);
    v.extend_from_slice(value.as_bytes());
    v
}

/// Reads a candidate key's value back; a value written by someone else is all id.
pub(crate) fn decode_value(raw: &[u8]) -> (String, String) {
    match raw.iter().position(|&b| b == 0) {
        Some(at) => (
            String::from_utf8_lossy(&raw[..at]).into_owned(),
            String::from_utf8_lossy(&raw[at + 1..]).into_owned(),
        ),
        None => (String::from_utf8_lossy(raw).into_owned(), String::new()),
    }
}

pub(crate) fn leader_info(raw_value: &[u8], create_revision: i64) -> LeaderInfo {
    let (id, value) = decode_value(raw_value);
    LeaderInfo::new(id, create_revision as u64, value)
}

impl EtcdLeader {
    /// Connects to etcd with `config`.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        let client = EtcdClient::connect(config).await.map_err(Error::connect)?;
        Ok(Self::new(client))
    }

    /// Uses an existing connection (shared with other primitives).
    pub fn new(client: EtcdClient) -> Self {
        EtcdLeader {
            inner: Arc::new(Inner {
                queue: Queue::new(client.clone(), KIND),
                leases: LeasePool::new(client.clone()),
                counter: AtomicU64::new(0),
                client,
            }),
        }
    }

    /// The connection.
    pub fn client(&self) -> &EtcdClient {
        &self.inner.client
    }

    fn dir(&self, group: &str) -> String {
        self.inner.client.keyspace().dir(KIND, group)
    }

    /// Joins the group's queue; returns the entry and whether it leads already.
    async fn join(&self, id: &str, options: &ElectOptions) -> Result<(QueueEntry, bool)> {
        let inner = &self.inner;
        let group = options.group();
        let ttl = options.ttl().unwrap_or(inner.client.config().ttl);
        let dir = self.dir(group);
        let value = encode_value(id, options.value());
        inner
            .leases
            .with_lease(ttl, |lease| {
                let unique = format!(
                    "{:016x}-{:x}",
                    lease.id(),
                    inner.counter.fetch_add(1, Ordering::Relaxed)
                );
                let (dir, value) = (dir.clone(), value.clone());
                async move { inner.queue.join(&dir, &unique, value, lease).await }
            })
            .await
            .map_err(|e| Error::backend(group, e))
    }

    async fn elect_inner(&self, id: &str, options: ElectOptions) -> Result<Elected> {
        options.validate(id)?;
        let group = options.group();
        let started = Instant::now();
        let campaign = async {
            let (mut entry, head) = self.join(id, &options).await?;
            if !head {
                tracing::debug!(%group, %id, key = entry.key(), "campaigning");
                self.inner
                    .queue
                    .wait_head(&mut entry)
                    .await
                    .map_err(|e| wait_error(group, id, e))?;
            }
            Ok::<_, Error>(entry)
        };
        let entry = match options.max_wait() {
            Some(max) => {
                tokio::time::timeout(max, campaign)
                    .await
                    .map_err(|_| Error::Timeout {
                        group: group.to_owned(),
                        candidate: id.to_owned(),
                        waited: started.elapsed(),
                    })??
            }
            None => campaign.await?,
        };
        // An election that arrives after our lease was lost is no election.
        if let Some(reason) = entry.lease().signal().reason() {
            return Err(Error::Lost {
                group: group.to_owned(),
                candidate: id.to_owned(),
                reason,
            });
        }
        let ttl = entry.lease().granted_ttl();
        let held = self.inner.queue.hold(entry);
        let elected = Elected::new(
            group,
            id,
            held.revision() as u64,
            Some(ttl),
            held.signal().clone(),
            Box::new(EtcdRawElected {
                held,
                group: group.to_owned(),
                id: id.to_owned(),
            }),
        );
        tracing::debug!(%group, %id, term = elected.term(), waited = ?started.elapsed(), "elected");
        Ok(elected)
    }

    async fn leader_inner(&self, group: &str) -> Result<Option<LeaderInfo>> {
        check_group(group)?;
        let dir = self.dir(group);
        let client = &self.inner.client;
        let head = client
            .retry("read leader", client.default_budget(), |mut c| {
                let dir = dir.clone();
                async move {
                    let r = c
                        .get(
                            dir,
                            Some(
                                GetOptions::new()
                                    .with_prefix()
                                    .with_sort(SortTarget::Create, SortOrder::Ascend)
                                    .with_limit(1),
                            ),
                        )
                        .await?;
                    Ok(r.kvs()
                        .first()
                        .map(|kv| leader_info(kv.value(), kv.create_revision())))
                }
            })
            .await
            .map_err(|e| Error::backend(group, e))?;
        Ok(head)
    }
}

fn wait_error(group: &str, id: &str, e: WaitError) -> Error {
    let lost = |reason| Error::Lost {
        group: group.to_owned(),
        candidate: id.to_owned(),
        reason,
    };
    match e {
        WaitError::Removed => lost(LossReason::Revoked),
        WaitError::LeaseLost(reason) => lost(reason),
        WaitError::Etcd(e) => Error::backend(group, e),
        other => Error::Backend {
            group: group.to_owned(),
            retryable: true,
            source: Box::new(other),
        },
    }
}

#[derive(Debug)]
struct EtcdRawElected {
    held: Held,
    group: String,
    id: String,
}

impl RawElected for EtcdRawElected {
    fn resign(self: Box<Self>) -> BoxFuture<'static, Result<bool>> {
        async move {
            let group = self.group;
            self.held
                .release()
                .await
                .map_err(|e| Error::backend(&group, e))
        }
        .boxed()
    }

    fn proclaim(&self, value: String) -> BoxFuture<'_, Result<bool>> {
        async move {
            let key = self.held.key().to_owned();
            let (rev, lease) = (self.held.revision(), self.held.lease().id());
            let raw = encode_value(&self.id, &value);
            let client = self.held.client();
            client
                .retry("proclaim", client.default_budget(), |mut c| {
                    let (key, raw) = (key.clone(), raw.clone());
                    async move {
                        // Only while the key is still ours, and bound to the same lease.
                        let txn = Txn::new()
                            .when([Compare::create_revision(key.clone(), CompareOp::Equal, rev)])
                            .and_then([TxnOp::put(
                                key,
                                raw,
                                Some(PutOptions::new().with_lease(lease)),
                            )]);
                        Ok(c.txn(txn).await?.succeeded())
                    }
                })
                .await
                .map_err(|e| Error::backend(&self.group, e))
        }
        .boxed()
    }
}

impl Leader for EtcdLeader {
    fn elect<'a>(
        &'a self,
        candidate_id: &'a str,
        options: ElectOptions,
    ) -> BoxFuture<'a, Result<Elected>> {
        self.elect_inner(candidate_id, options).boxed()
    }

    fn leader<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Option<LeaderInfo>>> {
        self.leader_inner(group).boxed()
    }

    fn observe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<LeaderStream>> {
        async move {
            check_group(group)?;
            observe::observe(self.inner.client.clone(), self.dir(group))
                .await
                .map_err(|e| Error::backend(group, e))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_foreign_values_are_ids() {
        let raw = encode_value("node-1", "10.0.0.1:80\0x");
        assert_eq!(
            decode_value(&raw),
            ("node-1".to_owned(), "10.0.0.1:80\0x".to_owned())
        );
        assert_eq!(decode_value(b"plain"), ("plain".to_owned(), String::new()));
        assert_eq!(leader_info(&encode_value("a", ""), 42).term, 42);
    }
}
