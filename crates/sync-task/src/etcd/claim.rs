//! Claiming a job: the claim transaction (under the worker's lease) and the guards that make it
//! cancel-safe. Dropped at any point, a claim leaves nothing behind: whatever landed is handed
//! back without using up an attempt.

use std::sync::Arc;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use sync_etcd::{EtcdClient, Lease};
use tokio::time::Instant;

use super::batch::{self, SharedBatcher};
use super::finish::Finisher;
use super::records::{now_ms, to_json, ClaimRecord, JobRecord, Keys};
use super::registry::WorkerLease;
use super::view::View;
use crate::exec::{Count, Counters};

pub(crate) enum ClaimError {
    /// Someone else changed the job or claimed it first.
    Conflict,
    Etcd(sync_etcd::Error),
}

impl From<sync_etcd::Error> for ClaimError {
    fn from(e: sync_etcd::Error) -> Self {
        ClaimError::Etcd(e)
    }
}

/// Claims jobs for worker `me`; reports each claim's round trip to the view (which paces the
/// worker's claims by it).
pub(crate) struct Claimer {
    client: EtcdClient,
    keys: Keys,
    me: String,
    batcher: SharedBatcher,
    lease: Arc<WorkerLease>,
    finisher: Finisher,
    view: Arc<View>,
    counters: Arc<Counters>,
}

/// A claim that was won: the attempt may start. Dropped before [`settle`](Claimed::settle), it
/// hands the job back (without using up an attempt) on the runtime.
pub(crate) struct Claimed {
    claimer: Arc<Claimer>,
    id: String,
    /// The claim's create revision (the attempt's fencing token).
    pub(crate) rev: i64,
    /// Which attempt it is.
    pub(crate) attempt: u32,
    /// The job as the claim rewrote it (its attempt count raised).
    running: Option<JobRecord>,
    /// The job as it was before the claim.
    before: Arc<JobRecord>,
    pub(crate) payload: Vec<u8>,
    /// The job's submit had not returned yet when it was claimed (its hold was there): the
    /// attempt must not start before the hold is gone (see `View::hold_ended`).
    pub(crate) held: bool,
    pub(crate) lease: Arc<Lease>,
}

impl Claimed {
    /// The attempt's end will be written by the caller: disarms the guard.
    pub(crate) fn settle(mut self) -> JobRecord {
        self.running
            .take()
            .unwrap_or_else(|| (*self.before).clone())
    }

    /// Hands the job back at once (the attempt is not used up).
    #[cfg(feature = "conformance")]
    async fn hand_back(mut self) -> sync_etcd::Result<bool> {
        self.running = None;
        let guard = vec![Compare::create_revision(
            self.claimer.keys.claim(&self.id),
            CompareOp::Equal,
            self.rev,
        )];
        let back = (*self.before).clone();
        self.claimer
            .finisher
            .hand_back(&self.id, &back, guard)
            .await
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if self.running.is_some() {
            let back = (*self.before).clone();
            self.claimer
                .give_back_in_background(&self.id, Some(self.rev), back, None);
        }
    }
}

/// A claim whose outcome the hand-back must find out: what it put, on which lease, and its
/// pending outcome (`None`: unknown, look for it).
type Unsure = (ClaimRecord, i64, Option<batch::Pending>);

/// A claim transaction handed to the batcher; dropped before its outcome was taken, it hands
/// back whatever landed.
pub(crate) struct PendingClaim {
    claimer: Arc<Claimer>,
    id: String,
    claim: ClaimRecord,
    lease: Arc<Lease>,
    /// The job as it was before the claim, and as the claim rewrites it.
    before: Arc<JobRecord>,
    running: JobRecord,
    sent: Instant,
    reply: Option<batch::Pending>,
}

impl Drop for PendingClaim {
    fn drop(&mut self) {
        if let Some(pending) = self.reply.take() {
            let back = (*self.before).clone();
            self.claimer.give_back_in_background(
                &self.id,
                None,
                back,
                Some((self.claim.clone(), self.lease.id(), Some(pending))),
            );
        }
    }
}

impl PendingClaim {
    /// The claim's outcome: the claim, won, or why not. Cancel-safe: dropped at any point, it
    /// leaves no claim behind (what landed is handed back, without using up an attempt).
    pub(crate) async fn outcome(mut self) -> Result<Claimed, ClaimError> {
        let out = match self.reply.as_mut() {
            Some(reply) => reply.await,
            None => return Err(ClaimError::Conflict),
        };
        // The outcome is in hand: from here on, `Claimed` is the guard.
        self.reply = None;
        let this = &self.claimer;
        let lease_id = self.lease.id();
        let claimed = match out {
            Ok(out) => claim_outcome(out, &self.claim, lease_id),
            Err(e) => {
                this.view.claim_took(self.sent.elapsed(), false);
                // It may have landed: the guard looks and hands back what it finds.
                this.give_back_in_background(
                    &self.id,
                    None,
                    (*self.before).clone(),
                    Some((self.claim.clone(), lease_id, None)),
                );
                return Err(ClaimError::Etcd(e));
            }
        };
        this.view.claim_took(self.sent.elapsed(), claimed.is_some());
        let (rev, payload, held) = claimed.ok_or(ClaimError::Conflict)?;
        this.counters.bump(Count::Claimed);
        Ok(Claimed {
            claimer: this.clone(),
            id: std::mem::take(&mut self.id),
            rev,
            attempt: self.claim.attempt,
            running: Some(self.running.clone()),
            before: self.before.clone(),
            payload,
            held,
            lease: self.lease.clone(),
        })
    }
}

/// A job to claim: its id, its record as seen, and the revision it was seen at.
pub(crate) type ToClaim<'a> = (&'a str, &'a Arc<JobRecord>, i64);

impl Claimer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: EtcdClient,
        keys: Keys,
        me: String,
        batcher: SharedBatcher,
        lease: Arc<WorkerLease>,
        finisher: Finisher,
        view: Arc<View>,
        counters: Arc<Counters>,
    ) -> Self {
        Claimer {
            client,
            keys,
            me,
            batcher,
            lease,
            finisher,
            view,
            counters,
        }
    }

    /// The key layout it claims under.
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The worker's lease (claims live on it).
    pub(crate) async fn lease(&self) -> sync_etcd::Result<Arc<Lease>> {
        self.lease.get().await
    }

    /// The worker's claim path for job `id` last seen at `mod_rev`: puts the claim (on the
    /// worker's lease) and the job with its attempt count raised, if the job is unchanged and
    /// unclaimed, and reads the payload. Cancel-safe: dropped at any point, it leaves no claim
    /// behind (what landed is handed back, without using up an attempt).
    #[cfg(feature = "conformance")]
    pub(crate) async fn claim(
        self: &Arc<Self>,
        id: &str,
        record: &Arc<JobRecord>,
        mod_rev: i64,
    ) -> Result<Claimed, ClaimError> {
        let lease = self.lease.get().await?;
        let mut claims = self.send_claims(&lease, &[(id, record, mod_rev)]);
        match claims.pop() {
            Some(c) => c.outcome().await,
            None => Err(ClaimError::Conflict),
        }
    }

    /// Claims several jobs at once, on `lease`: one claim transaction each (see
    /// [`claim`](Self::claim)), handed to the batcher now as one group, so that they go out as
    /// one request. Each job's claim stands or falls on its own (its own comparisons). The
    /// returned claims are in the same order; each is cancel-safe.
    pub(crate) fn send_claims(
        self: &Arc<Self>,
        lease: &Arc<Lease>,
        jobs: &[ToClaim<'_>],
    ) -> Vec<PendingClaim> {
        let lease_id = lease.id();
        let mut txns = Vec::with_capacity(jobs.len());
        let mut claims = Vec::with_capacity(jobs.len());
        for &(id, record, mod_rev) in jobs {
            let attempt = record.attempts + 1;
            let mut running = (**record).clone();
            running.attempts = attempt;
            let claim = ClaimRecord {
                worker: self.me.clone(),
                attempt,
                started_ms: now_ms(),
            };
            let (job_key, claim_key) = (self.keys.job(id), self.keys.claim(id));
            let payload_key = self.keys.payload(id);
            let hold_key = self.keys.hold(id);
            let count = || Some(GetOptions::new().with_count_only());
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(job_key.clone(), CompareOp::Equal, mod_rev),
                    Compare::create_revision(claim_key.clone(), CompareOp::Equal, 0),
                ])
                .and_then([
                    TxnOp::put(
                        claim_key.clone(),
                        to_json(&claim),
                        Some(PutOptions::new().with_lease(lease_id)),
                    ),
                    TxnOp::put(job_key, to_json(&running), None),
                    TxnOp::get(payload_key.clone(), None),
                    TxnOp::get(hold_key.clone(), count()),
                ])
                // A retry after an attempt that landed but whose reply was lost: read ours.
                .or_else([
                    TxnOp::get(claim_key, None),
                    TxnOp::get(payload_key, None),
                    TxnOp::get(hold_key, count()),
                ]);
            let bytes = usize::try_from(record.payload_bytes).unwrap_or(usize::MAX);
            txns.push((id.to_owned(), txn, bytes));
            claims.push((id, claim, record, running));
        }
        let sent = Instant::now();
        let replies = self.batcher.send_group("claim job", txns);
        claims
            .into_iter()
            .zip(replies)
            .map(|((id, claim, record, running), reply)| PendingClaim {
                claimer: self.clone(),
                id: id.to_owned(),
                claim,
                lease: lease.clone(),
                before: record.clone(),
                running,
                sent,
                reply: Some(reply),
            })
            .collect()
    }

    /// Hands a job back on the runtime (for `Drop`): the claim of create revision `rev` (or, if
    /// the claim's outcome is not known yet, the claim `mine` if it landed), restoring `back`.
    /// The worker's lease is the safety net if this fails.
    fn give_back_in_background(
        self: &Arc<Self>,
        id: &str,
        rev: Option<i64>,
        back: JobRecord,
        mine: Option<Unsure>,
    ) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (this, id) = (self.clone(), id.to_owned());
        rt.spawn(async move {
            let rev = match (rev, mine) {
                (Some(rev), _) => Some(rev),
                (None, Some((claim, lease_id, pending))) => match pending {
                    Some(p) => match p.await {
                        Ok(out) => claim_outcome(out, &claim, lease_id).map(|(rev, ..)| rev),
                        Err(_) => this.look(&id, &claim, lease_id).await,
                    },
                    None => this.look(&id, &claim, lease_id).await,
                },
                (None, None) => None,
            };
            let Some(rev) = rev else { return };
            let guard = vec![Compare::create_revision(
                this.keys.claim(&id),
                CompareOp::Equal,
                rev,
            )];
            match this.finisher.hand_back(&id, &back, guard).await {
                Ok(true) => tracing::debug!(job = %id, "cancelled claim handed back"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "could not hand back a cancelled claim; it goes when the worker's lease does")
                }
            }
        });
    }

    /// Whether a claim whose outcome is unknown landed: looks now, and once more after a request
    /// timeout (it may land late). Its create revision if so.
    async fn look(&self, id: &str, claim: &ClaimRecord, lease_id: i64) -> Option<i64> {
        if let Some(rev) = self.our_claim(id, claim, lease_id).await {
            return Some(rev);
        }
        tokio::time::sleep(self.client.config().request_timeout).await;
        self.our_claim(id, claim, lease_id).await
    }

    /// The create revision of the claim of job `id` if it is `claim` on our lease.
    async fn our_claim(&self, id: &str, claim: &ClaimRecord, lease_id: i64) -> Option<i64> {
        let key = self.keys.claim(id);
        let kv = self
            .client
            .retry("read claim", self.client.default_budget(), |mut c| {
                let key = key.clone();
                async move { Ok(c.get(key, None).await?.kvs().first().cloned()) }
            })
            .await
            .ok()
            .flatten()?;
        is_ours(&kv, claim, lease_id).then(|| kv.create_revision())
    }

    /// The worker's claim path for one job, for the conformance suite: claims job `id` as the
    /// dispatcher would, then hands it back at once. Returns whether it claimed it.
    #[cfg(feature = "conformance")]
    pub(crate) async fn claim_and_hand_back(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<bool, sync_etcd::Error> {
        let key = self.keys.job(id);
        let kv = self
            .client
            .retry("read job", self.client.default_budget(), |mut c| {
                let key = key.clone();
                async move { Ok(c.get(key, None).await?.kvs().first().cloned()) }
            })
            .await?;
        let Some(kv) = kv else { return Ok(false) };
        let Ok(record) = serde_json::from_slice::<JobRecord>(kv.value()) else {
            return Ok(false);
        };
        match self.claim(id, &Arc::new(record), kv.mod_revision()).await {
            Ok(claimed) => claimed.hand_back().await,
            Err(ClaimError::Conflict) => Ok(false),
            Err(ClaimError::Etcd(e)) => Err(e),
        }
    }
}

fn is_ours(kv: &etcd_client::KeyValue, claim: &ClaimRecord, lease_id: i64) -> bool {
    let same: Option<ClaimRecord> = serde_json::from_slice(kv.value()).ok();
    kv.lease() == lease_id
        && same.is_some_and(|s| s.worker == claim.worker && s.attempt == claim.attempt)
}

/// What a claim transaction's outcome says: the claim's create revision, the payload, and
/// whether the job was still held by its submit, if the claim is ours.
fn claim_outcome(
    out: batch::Outcome,
    claim: &ClaimRecord,
    lease_id: i64,
) -> Option<(i64, Vec<u8>, bool)> {
    let gets: Vec<(Option<etcd_client::KeyValue>, i64)> = out
        .responses
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some((g.kvs().first().cloned(), g.count())),
            _ => None,
        })
        .collect();
    let payload = |i: usize| {
        gets.get(i)
            .and_then(|(kv, _)| kv.as_ref())
            .map(|kv| kv.value().to_vec())
            .unwrap_or_else(|| b"null".to_vec())
    };
    let held = |i: usize| gets.get(i).is_some_and(|(_, count)| *count > 0);
    if out.succeeded {
        Some((out.revision, payload(0), held(1)))
    } else {
        let ours = gets
            .first()
            .and_then(|(kv, _)| kv.as_ref())
            .filter(|kv| is_ours(kv, claim, lease_id))
            .map(|kv| kv.create_revision());
        ours.map(|rev| (rev, payload(1), held(2)))
    }
}
