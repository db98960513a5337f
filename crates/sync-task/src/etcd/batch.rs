//! Group commit for the worker's transactions (claim, finish, retry, hand back).
//!
//! Each of them is a small transaction about one job. Under load many are ready at the same
//! moment; sending each alone costs etcd one request, one raft entry and one apply each. The
//! batcher sends the ones that are waiting as one transaction of nested transactions (etcd
//! evaluates each nested transaction's comparisons on its own, so one job's conflict does not
//! fail the others), with a few batches in flight. When the cluster is idle a transaction goes
//! out alone at once: batching adds no latency, it only grows while requests queue up.
//!
//! Two transactions about one job never share a batch. If a batch fails as a whole (after the
//! client's retries), each transaction is sent again on its own, so each gets its own outcome.
//! Every transaction tolerates being applied twice (see the `or_else` branches in `claim` and `finish`).
//!
//! A batch also stays below [`MAX_BATCH_BYTES`] of what it writes and reads (payloads, outputs),
//! so that it fits etcd's request limit (1.5 MiB by default) and gRPC's response limit (4 MiB);
//! a transaction larger than that goes alone.
//!
//! A transaction is handed to the batcher when it is [sent](Batcher::send), synchronously: it is
//! applied even if whoever sent it stops waiting, and its outcome can still be awaited by
//! someone else (the drop guards of `submit` and of a claim, which undo what landed).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

use etcd_client::{Txn, TxnOp, TxnOpResponse};
use sync_etcd::{Error, EtcdClient, Result};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

/// How many job transactions one batch carries at most (etcd's default `--max-txn-ops` is 128
/// per level).
pub(crate) const MAX_BATCH: usize = 32;
/// How many batches may be in flight at once.
const IN_FLIGHT: usize = 4;
/// How many bytes (written and read) one batch carries at most, unless one transaction alone is
/// larger.
pub(crate) const MAX_BATCH_BYTES: usize = 512 * 1024;
/// What a transaction costs beyond the bytes its caller counts (keys, records, framing).
pub(crate) const TXN_OVERHEAD: usize = 2048;

/// The outcome of one job's transaction.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) succeeded: bool,
    /// The revision at which it was applied.
    pub(crate) revision: i64,
    pub(crate) responses: Vec<TxnOpResponse>,
}

struct Req {
    op: &'static str,
    job: String,
    txn: Txn,
    /// Bytes it writes and reads, about.
    bytes: usize,
    reply: oneshot::Sender<Result<Outcome>>,
}

/// The outcome of a transaction handed to the batcher: await it (or drop it: the transaction is
/// applied all the same).
pub(crate) struct Pending {
    op: &'static str,
    endpoints: String,
    rx: oneshot::Receiver<Result<Outcome>>,
}

impl std::future::Future for Pending {
    type Output = Result<Outcome>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(Error::Etcd {
                    endpoints: self.endpoints.clone(),
                    op: self.op,
                    source:
                        "the transaction batcher stopped; the transaction may not have been applied"
                            .into(),
                })
            })
        })
    }
}

pub(crate) struct Batcher {
    /// Groups of requests: each group goes out in one batch (as far as the limits allow).
    tx: mpsc::UnboundedSender<Vec<Req>>,
    task: JoinHandle<()>,
    client: EtcdClient,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Batcher {
    /// A batcher sending on `client`. Needs a tokio runtime.
    pub(crate) fn new(client: EtcdClient) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Batcher {
            task: tokio::spawn(run(client.clone(), rx)),
            tx,
            client,
        }
    }

    /// Applies `txn` (about job `job`, writing and reading about `bytes` bytes besides its keys
    /// and records), alone or with others.
    pub(crate) async fn txn(
        &self,
        op: &'static str,
        job: &str,
        txn: Txn,
        bytes: usize,
    ) -> Result<Outcome> {
        self.send(op, job, txn, bytes).await
    }

    /// Hands `txn` to the batcher now; it is applied whether or not the returned outcome is
    /// awaited.
    pub(crate) fn send(&self, op: &'static str, job: &str, txn: Txn, bytes: usize) -> Pending {
        let mut p = self.send_group(op, vec![(job.to_owned(), txn, bytes)]);
        p.pop().unwrap_or_else(|| Pending {
            op,
            endpoints: self.client.endpoints().to_owned(),
            rx: oneshot::channel().1,
        })
    }

    /// Hands several transactions (each about its own job: `(job, txn, bytes)`) to the batcher
    /// now, to go out together in one batch, as far as [`MAX_BATCH`] and [`MAX_BATCH_BYTES`]
    /// allow. Each is applied whether or not its outcome (same order) is awaited.
    pub(crate) fn send_group(
        &self,
        op: &'static str,
        txns: Vec<(String, Txn, usize)>,
    ) -> Vec<Pending> {
        let mut pending = Vec::with_capacity(txns.len());
        let group: Vec<Req> = txns
            .into_iter()
            .map(|(job, txn, bytes)| {
                let (reply, rx) = oneshot::channel();
                pending.push(Pending {
                    op,
                    endpoints: self.client.endpoints().to_owned(),
                    rx,
                });
                Req {
                    op,
                    job,
                    txn,
                    bytes: bytes.saturating_add(TXN_OVERHEAD),
                    reply,
                }
            })
            .collect();
        if let Err(mpsc::error::SendError(group)) = self.tx.send(group) {
            // The batcher's task is gone (its runtime is shutting down): send each alone.
            for req in group {
                let client = self.client.clone();
                tokio::spawn(async move {
                    let out = alone(&client, req.op, req.txn).await;
                    answer(req.op, &req.job, req.reply, out);
                });
            }
        }
        pending
    }
}

/// One handle's batcher, started on first use (inside the runtime): what the parts of the backend
/// that write job transactions (submitting, claiming, finishing) hold. Clones share it; its task
/// stops when the last clone goes.
#[derive(Clone)]
pub(crate) struct SharedBatcher {
    client: EtcdClient,
    batcher: Arc<OnceLock<Batcher>>,
}

impl SharedBatcher {
    pub(crate) fn new(client: EtcdClient) -> Self {
        SharedBatcher {
            client,
            batcher: Default::default(),
        }
    }

    fn get(&self) -> &Batcher {
        self.batcher
            .get_or_init(|| Batcher::new(self.client.clone()))
    }

    /// See [`Batcher::txn`].
    pub(crate) async fn txn(
        &self,
        op: &'static str,
        job: &str,
        txn: Txn,
        bytes: usize,
    ) -> Result<Outcome> {
        self.get().txn(op, job, txn, bytes).await
    }

    /// See [`Batcher::send`].
    pub(crate) fn send(&self, op: &'static str, job: &str, txn: Txn, bytes: usize) -> Pending {
        self.get().send(op, job, txn, bytes)
    }

    /// See [`Batcher::send_group`].
    pub(crate) fn send_group(
        &self,
        op: &'static str,
        txns: Vec<(String, Txn, usize)>,
    ) -> Vec<Pending> {
        self.get().send_group(op, txns)
    }
}

async fn run(client: EtcdClient, mut rx: mpsc::UnboundedReceiver<Vec<Req>>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carry: VecDeque<Vec<Req>> = VecDeque::new();
    loop {
        let first = match carry.pop_front() {
            Some(g) => g,
            None => match rx.recv().await {
                Some(g) => g,
                None => return,
            },
        };
        if first.is_empty() {
            continue;
        }
        // Wait for a free slot before collecting: requests pile up meanwhile.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut jobs = HashSet::new();
        let mut bytes = 0usize;
        let mut batch = Vec::new();
        // The first group: as much of it as fits (its first request in any case); the rest
        // goes first into the next batch.
        let mut rest = Vec::new();
        for r in first {
            let fits = batch.is_empty()
                || (rest.is_empty()
                    && batch.len() < MAX_BATCH
                    && bytes.saturating_add(r.bytes) <= MAX_BATCH_BYTES
                    && !jobs.contains(&r.job));
            if fits {
                jobs.insert(r.job.clone());
                bytes = bytes.saturating_add(r.bytes);
                batch.push(r);
            } else {
                rest.push(r);
            }
        }
        if !rest.is_empty() {
            carry.push_front(rest);
        }
        // Then whole groups, while they fit: what was carried over first, then the queue.
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            let next = match carry.pop_front() {
                Some(g) => g,
                None => match rx.try_recv() {
                    Ok(g) => g,
                    Err(_) => break,
                },
            };
            let size = next.iter().map(|r| r.bytes).fold(0, usize::saturating_add);
            let fits = batch.len() + next.len() <= MAX_BATCH
                && bytes.saturating_add(size) <= MAX_BATCH_BYTES
                && next.iter().all(|r| !jobs.contains(&r.job));
            if !fits {
                // For the next batch (where it may go first, or alone).
                carry.push_front(next);
                break;
            }
            for r in next {
                jobs.insert(r.job.clone());
                batch.push(r);
            }
            bytes = bytes.saturating_add(size);
        }
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            send(&client, batch).await;
        });
    }
}

async fn send(client: &EtcdClient, mut batch: Vec<Req>) {
    if batch.len() == 1 {
        let Some(r) = batch.pop() else { return };
        let out = alone(client, r.op, r.txn).await;
        answer(r.op, &r.job, r.reply, out);
        return;
    }
    let outer = Txn::new().and_then(
        batch
            .iter()
            .map(|r| TxnOp::txn(r.txn.clone()))
            .collect::<Vec<_>>(),
    );
    let n = batch.len();
    let applied = client
        .retry("job transactions", client.default_budget(), |mut c| {
            let outer = outer.clone();
            async move {
                let resp = c.txn(outer).await?;
                let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
                let subs: Vec<_> = resp
                    .op_responses()
                    .into_iter()
                    .filter_map(|r| match r {
                        TxnOpResponse::Txn(t) => Some(Outcome {
                            succeeded: t.succeeded(),
                            revision,
                            responses: t.op_responses(),
                        }),
                        _ => None,
                    })
                    .collect();
                Ok(subs)
            }
        })
        .await;
    match applied {
        Ok(subs) if subs.len() == n => {
            for (r, out) in batch.into_iter().zip(subs) {
                answer(r.op, &r.job, r.reply, Ok(out));
            }
        }
        other => {
            if let Err(e) = other {
                tracing::debug!(error = %e, jobs = n, "batched job transactions failed; sending them one by one");
            }
            let each = batch.into_iter().map(|r| async move {
                let out = alone(client, r.op, r.txn).await;
                answer(r.op, &r.job, r.reply, out);
            });
            futures::future::join_all(each).await;
        }
    }
}

/// Sends a transaction's outcome to whoever waits for it; if nobody does any more (a release
/// sent on, a dropped caller) and it failed, says so in the log.
fn answer(op: &str, job: &str, reply: oneshot::Sender<Result<Outcome>>, out: Result<Outcome>) {
    if let Err(Err(e)) = reply.send(out) {
        tracing::warn!(op, job, error = %e, "a job transaction nobody waits for failed");
    }
}

async fn alone(client: &EtcdClient, op: &'static str, txn: Txn) -> Result<Outcome> {
    client
        .retry(op, client.default_budget(), |mut c| {
            let txn = txn.clone();
            async move {
                let resp = c.txn(txn).await?;
                Ok(Outcome {
                    succeeded: resp.succeeded(),
                    revision: resp.header().map(|h| h.revision()).unwrap_or(0),
                    responses: resp.op_responses(),
                })
            }
        })
        .await
}
