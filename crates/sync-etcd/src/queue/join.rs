//! The join transaction, and the guard that deletes a dropped join's key.

use etcd_client::{GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::task::JoinHandle;

use super::{leave, Slot};
use crate::{EtcdClient, Result};

pub(super) struct Joined {
    pub(super) key: String,
    pub(super) revision: i64,
    /// The keys ahead of ours, oldest first, and the revision at which they were read.
    pub(super) ahead: Vec<String>,
    pub(super) read_rev: i64,
}

/// Deletes the key of a `join` whose caller went away, once the join's transaction finished.
pub(super) struct JoinGuard {
    pub(super) task: Option<JoinHandle<Result<Joined>>>,
    pub(super) client: EtcdClient,
    pub(super) key: String,
    /// The key's slot: freed once the key is surely gone, never used again otherwise.
    pub(super) slot: Option<Slot>,
}

impl Drop for JoinGuard {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let key = std::mem::take(&mut self.key);
        let slot = self.slot.take();
        rt.spawn(async move {
            match task.await {
                Ok(Ok(j)) => {
                    if leave(&client, &j.key, j.revision).await.is_ok() {
                        if let Some(slot) = slot {
                            slot.free();
                        }
                    }
                }
                // The put may land late: its slot is never used again.
                _ => delete_late(client, key).await,
            }
        });
    }
}

/// After a join transaction that failed or timed out: an attempt may have landed, or may still
/// land late, so delete the (unique) key now and once more after a request timeout.
pub(super) async fn delete_late(client: EtcdClient, key: String) {
    let mut c = client.raw();
    let _ = c.delete(key.clone(), None).await;
    tokio::time::sleep(client.config().request_timeout).await;
    let _ = c.delete(key, None).await;
}

pub(super) fn keys_of(kvs: &[etcd_client::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// One transaction: put our key (no compare needed: the key is unique to this join, and a retry
/// after a lost reply only rewrites it, keeping its create revision) and read every key of the
/// queue, keys only.
pub(super) async fn join_txn(
    client: EtcdClient,
    dir: String,
    key: String,
    value: Vec<u8>,
    lease: i64,
) -> Result<Joined> {
    client
        .retry("join queue", client.default_budget(), |mut c| {
            let (dir, key, value) = (dir.clone(), key.clone(), value.clone());
            async move {
                let txn = Txn::new().and_then([
                    TxnOp::put(
                        key.clone(),
                        value,
                        Some(PutOptions::new().with_lease(lease).with_prev_key()),
                    ),
                    TxnOp::get(dir, Some(GetOptions::new().with_prefix().with_keys_only())),
                ]);
                let resp = c.txn(txn).await?;
                let read_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                let ops = resp.op_responses();
                let revision = match ops.first() {
                    Some(TxnOpResponse::Put(p)) => {
                        p.prev_key().map_or(read_rev, |prev| prev.create_revision())
                    }
                    _ => read_rev,
                };
                let ahead = match ops.get(1) {
                    Some(TxnOpResponse::Get(g)) => {
                        let mut kvs: Vec<_> = g
                            .kvs()
                            .iter()
                            .filter(|kv| kv.create_revision() < revision)
                            .collect();
                        kvs.sort_by_key(|kv| kv.create_revision());
                        kvs.iter()
                            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                            .collect()
                    }
                    _ => Vec::new(),
                };
                Ok(Joined {
                    key,
                    revision,
                    ahead,
                    read_rev,
                })
            }
        })
        .await
}
