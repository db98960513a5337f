//! The lease keeper and its deadline rule.
//!
//! etcd-client does not renew leases by itself: [`Lease`] drives keepalives on a timer and turns
//! a keepalive that fails or lapses into a loss signal. The rule (see `docs/etcd.md`):
//!
//! - for each keepalive reply with TTL > 0, note the local [`Instant`] at which its request was
//!   **sent**; the server cannot expire the lease before `sent_at + ttl`, since it restarted its
//!   countdown on receiving the request, after we sent it. That is the `deadline`;
//! - a reply with TTL 0 means the lease is gone: loss at once;
//! - when `now >= deadline - margin` without a newer good reply, loss. The margin covers clock
//!   rate differences between us and the server ([`loss_margin`]);
//! - transient errors are retried (on a new stream, possibly another member) until then.
//!
//! So a holder is told of the loss before anyone else can be granted what the lease protected.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::LeaseKeepAliveStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Error, EtcdClient, Result};
use sync_core::signal::{loss_signal, LossReason, LossSignal, LossTrigger};

/// The safety margin subtracted from a lease's server-side deadline: a fifteenth of the TTL, at
/// least 200 ms and at most 2 s. It covers the difference between our clock's rate and the
/// server's, and the time the holder needs to act on the loss; the server itself only expires a
/// lease on a timer some hundreds of milliseconds after its deadline, and a successor only learns
/// of it after a raft round and a watch event on top.
///
/// ```
/// use std::time::Duration;
/// use sync_etcd::loss_margin;
/// assert_eq!(loss_margin(Duration::from_secs(3)), Duration::from_millis(200));
/// assert_eq!(loss_margin(Duration::from_secs(15)), Duration::from_secs(1));
/// assert_eq!(loss_margin(Duration::from_secs(60)), Duration::from_secs(2));
/// ```
pub fn loss_margin(ttl: Duration) -> Duration {
    (ttl / 15).clamp(Duration::from_millis(200), Duration::from_secs(2))
}

/// The outage the keeper plans to ride out without a false loss: the time etcd needs, on its
/// default timing (heartbeat 100 ms, election timeout 1000 ms), to replace a raft leader that
/// died (measured 1.1–2.2 s on an idle machine: a follower waits a randomised 1–2 election
/// timeouts, then one vote round; longer on a loaded one), plus a retry and a round trip to the
/// new leader. While no leader exists the server cannot expire
/// a lease, and the new leader extends every lease, so a keepalive that gets through right after
/// the election keeps the lease; the keeper renews often enough that the last good renewal
/// still covers the whole outage when the TTL allows it (see [`renew_interval`]).
pub const RIDE_OUT: Duration = Duration::from_millis(2700);

/// The shortest renewal interval: below it keepalives would only load the cluster.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How often a lease of `ttl` is renewed: every TTL/3, or more often when that is needed to ride
/// out an outage of [`RIDE_OUT`] after the last good renewal (`ttl - margin - interval >=
/// RIDE_OUT`), but never more often than every 100 ms. So the minimum TTL that rides out a
/// raft-leader election on etcd's default timing is `RIDE_OUT + loss_margin + 100 ms` = 3 s;
/// use more on loaded machines or if your etcd's `--election-timeout` is longer than the
/// default (the ride-out grows with the TTL: 5.6 s at TTL 10 s).
///
/// ```
/// use std::time::Duration;
/// use sync_etcd::{loss_margin, renew_interval, RIDE_OUT};
/// let ttl = Duration::from_secs(3);
/// assert!(ttl - loss_margin(ttl) - renew_interval(ttl) >= RIDE_OUT);
/// assert_eq!(renew_interval(Duration::from_secs(30)), Duration::from_secs(10));
/// ```
pub fn renew_interval(ttl: Duration) -> Duration {
    let budget = ttl
        .saturating_sub(loss_margin(ttl))
        .saturating_sub(RIDE_OUT);
    (ttl / 3).min(budget).max(MIN_INTERVAL)
}

/// How long one keepalive may take before the keeper gives up on its connection and tries again
/// on a new stream (possibly on another member): a quarter of the TTL, between 500 ms and 3 s.
fn attempt_timeout(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(500), Duration::from_secs(3))
}

/// A lease kept alive in the background; dropping it stops the keepalive and revokes it.
pub struct Lease {
    id: i64,
    granted_ttl: Duration,
    loss: Arc<Loss>,
    signal: LossSignal,
    keeper: JoinHandle<()>,
    client: EtcdClient,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &format_args!("{:x}", self.id))
            .field("granted_ttl", &self.granted_ttl)
            .field("lost", &self.signal.reason())
            .finish()
    }
}

impl Lease {
    /// Grants a lease of `ttl` (whole seconds, rounded up; etcd may raise it to its minimum) and
    /// starts keeping it alive.
    pub async fn grant(client: &EtcdClient, ttl: Duration) -> Result<Arc<Lease>> {
        let ttl = sync_core::duration::validate_ttl(ttl).map_err(Error::InvalidConfig)?;
        // Whole seconds, rounded up: at most etcd's maximum, so no overflow.
        let secs = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)) as i64;
        let sent_at = Instant::now();
        // Each attempt notes its own send time; an attempt that was sent earlier and whose reply
        // got lost would leave an orphan lease that simply expires.
        let (id, granted, sent_at) = client
            .retry("lease grant", client.default_budget(), |mut c| async move {
                let at = Instant::now();
                let r = c.lease_grant(secs, None).await?;
                Ok((r.id(), r.ttl(), at))
            })
            .await
            .map(|(id, g, at)| (id, g, at.max(sent_at)))?;
        let granted_ttl =
            Duration::from_secs(granted.max(1) as u64).min(sync_core::duration::MAX_TTL);
        let (trigger, signal) = loss_signal();
        let loss = Arc::new(Loss {
            trigger,
            dependents: Default::default(),
        });
        let keeper = tokio::spawn(keep_alive(
            client.clone(),
            id,
            granted_ttl,
            sent_at + granted_ttl,
            loss.clone(),
        ));
        tracing::debug!(
            lease = format_args!("{id:x}"),
            ?granted_ttl,
            "lease granted"
        );
        Ok(Arc::new(Lease {
            id,
            granted_ttl,
            loss,
            signal,
            keeper,
            client: client.clone(),
        }))
    }

    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL the server granted (it may exceed the one asked for).
    pub fn granted_ttl(&self) -> Duration {
        self.granted_ttl
    }

    /// Fires when the lease can no longer be vouched for.
    pub fn signal(&self) -> &LossSignal {
        &self.signal
    }

    /// Whether it was lost.
    pub fn is_lost(&self) -> bool {
        self.signal.is_fired()
    }

    /// Reports the lease lost now, for a caller that learned it before the keeper did (the
    /// server answered "lease not found"). Everything attached to it is told.
    pub fn mark_lost(&self, reason: LossReason) {
        if self.loss.fire(reason) {
            self.keeper.abort();
        }
    }

    /// Makes `trigger` fire (with the lease's reason) when the lease is lost, or at once if it
    /// was. Held only weakly: a trigger dropped meanwhile is skipped. This is how everything
    /// attached to the lease learns of its loss without a task of its own.
    pub fn attach(&self, trigger: &Arc<LossTrigger>) {
        self.loss.attach(trigger);
    }

    /// Revokes the lease now: every key attached to it is deleted by the server.
    pub async fn revoke(&self) -> Result<()> {
        self.keeper.abort();
        let id = self.id;
        self.client
            .retry(
                "lease revoke",
                self.client.default_budget(),
                |mut c| async move {
                    match c.lease_revoke(id).await {
                        Ok(_) => Ok(()),
                        // Already gone: that is what we wanted.
                        Err(etcd_client::Error::GRpcStatus(s))
                            if s.message().contains("not found") =>
                        {
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                },
            )
            .await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let mut c = self.client.raw();
            let id = self.id;
            let budget = self.client.config().request_timeout;
            rt.spawn(async move {
                let _ = tokio::time::timeout(budget, c.lease_revoke(id)).await;
            });
        }
    }
}

async fn keep_alive(
    client: EtcdClient,
    id: i64,
    ttl: Duration,
    mut deadline: Instant,
    trigger: Arc<Loss>,
) {
    let margin = loss_margin(ttl);
    let interval = renew_interval(ttl);
    let per_attempt = attempt_timeout(ttl);
    let mut next = Instant::now() + interval;
    let mut stream: Option<(etcd_client::LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut last_error = String::new();
    let mut failures: u32 = 0;
    let lease = format_args!("{id:x}").to_string();
    loop {
        let give_up = deadline.checked_sub(margin).unwrap_or(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = tokio::time::sleep_until(give_up) => {
                tracing::warn!(
                    %lease,
                    %last_error,
                    endangered = %trigger.endangered(),
                    "lease keepalive lapsed: reporting loss of what is held on it: {}",
                    trigger.endangered()
                );
                trigger.fire(LossReason::KeepaliveFailed { last_error });
                return;
            }
        }
        let attempt = async {
            let sent_at = Instant::now();
            if stream.is_none() {
                // Opening the stream sends one keepalive and reads its reply (a reply with
                // TTL <= 0 comes back as "lease not found"): that renewal counts.
                let mut c = client.raw();
                stream = Some(c.lease_keep_alive(id).await?);
                return Ok::<_, etcd_client::Error>(Some((sent_at, ttl.as_secs() as i64)));
            }
            let (keeper, replies) = stream.as_mut().expect("stream is set");
            keeper.keep_alive().await?;
            match replies.message().await? {
                Some(r) => Ok(Some((sent_at, r.ttl()))),
                None => Ok(None),
            }
        };
        let outcome =
            tokio::time::timeout_at(give_up.min(Instant::now() + per_attempt), attempt).await;
        match outcome {
            Ok(Ok(Some((_, ttl_left)))) if ttl_left <= 0 => {
                tracing::warn!(
                    %lease,
                    "lease expired or was revoked: reporting loss of what is held on it: {}",
                    trigger.endangered()
                );
                trigger.fire(LossReason::LeaseExpired);
                return;
            }
            Ok(Ok(Some((sent_at, ttl_left)))) => {
                if failures > 0 {
                    tracing::debug!(%lease, failures, "keepalive got through again");
                }
                failures = 0;
                let renewed = sent_at.checked_add(Duration::from_secs(ttl_left as u64));
                deadline = renewed.unwrap_or(deadline).max(deadline);
                let now = Instant::now();
                sync_core::telemetry::record::keepalive(
                    now.saturating_duration_since(sent_at),
                    deadline.saturating_duration_since(now + margin),
                );
                next = sent_at + interval;
                continue;
            }
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(msg))) if msg.contains("not found") => {
                tracing::warn!(
                    %lease,
                    "lease not found at the server: reporting loss of what is held on it: {}",
                    trigger.endangered()
                );
                trigger.fire(LossReason::LeaseExpired);
                return;
            }
            Ok(Ok(None)) => last_error = "the keepalive stream closed".to_owned(),
            Ok(Err(e)) => {
                tracing::debug!(%lease, error = %e, "keepalive failed, retrying");
                last_error = e.to_string();
            }
            Err(_) => {
                last_error = format!("no keepalive reply within {per_attempt:?}");
                tracing::debug!(%lease, "keepalive timed out, retrying on a new stream");
            }
        }
        // Failed: drop the stream (its member may be dead or cut off) and retry soon on a new
        // one, which the client balances to another member. A raft election answers "no
        // leader" until it is over, so keep trying, briefly spaced, until the deadline rule
        // says the lease can no longer be vouched for.
        stream = None;
        failures = failures.saturating_add(1);
        let pause = Duration::from_millis(10) * failures.min(5);
        next = Instant::now() + pause;
    }
}

/// The lease's own loss trigger and the triggers attached to it.
#[derive(Debug)]
struct Loss {
    trigger: LossTrigger,
    dependents: std::sync::Mutex<Vec<std::sync::Weak<LossTrigger>>>,
}

impl Loss {
    /// Fires what is held on the lease first, then the lease's own signal: whoever sees the
    /// lease (a session) lost sees everything held in it lost already. (The other order let a
    /// task woken by the session's signal find a lock in it not yet lost.) The dependents' lock
    /// makes concurrent calls and [`attach`](Loss::attach) wait for the whole of it.
    fn fire(&self, reason: LossReason) -> bool {
        let mut deps = self.dependents.lock().unwrap_or_else(|p| p.into_inner());
        if self.trigger.is_fired() {
            return false;
        }
        for d in deps.drain(..) {
            if let Some(t) = d.upgrade() {
                t.fire(reason.clone());
            }
        }
        self.trigger.fire(reason)
    }

    /// What is held on the lease, for warnings: `lock "a" (token 5), leader "g" (token 9)`.
    fn endangered(&self) -> String {
        let deps = self.dependents.lock().unwrap_or_else(|p| p.into_inner());
        let live: Vec<_> = deps.iter().filter_map(|d| d.upgrade()).collect();
        drop(deps);
        const SHOWN: usize = 5;
        let mut named: Vec<String> = live
            .iter()
            .filter_map(|t| t.subject().map(ToString::to_string))
            .take(SHOWN)
            .collect();
        let unnamed = live.len().saturating_sub(named.len());
        if unnamed > 0 {
            named.push(format!("{unnamed} more"));
        }
        if named.is_empty() {
            "nothing held now".to_owned()
        } else {
            named.join(", ")
        }
    }

    fn attach(&self, t: &Arc<LossTrigger>) {
        let mut deps = self.dependents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reason) = self.trigger.signal().reason() {
            drop(deps);
            t.fire(reason);
            return;
        }
        if deps.len() >= 64 && deps.len().is_power_of_two() {
            deps.retain(|d| d.strong_count() > 0);
        }
        deps.push(Arc::downgrade(t));
    }
}

/// One kept-alive lease per TTL, shared by everything a client holds with that TTL, and replaced
/// by a fresh one once lost. Sharing keeps acquire to one round trip.
#[derive(Debug)]
pub struct LeasePool {
    client: EtcdClient,
    leases: tokio::sync::Mutex<HashMap<Duration, Arc<Lease>>>,
}

impl LeasePool {
    /// An empty pool.
    pub fn new(client: EtcdClient) -> Self {
        LeasePool {
            client,
            leases: Default::default(),
        }
    }

    /// The live lease for `ttl`, granting one if there is none.
    pub async fn get(&self, ttl: Duration) -> Result<Arc<Lease>> {
        let mut leases = self.leases.lock().await;
        if let Some(l) = leases.get(&ttl) {
            if !l.is_lost() {
                return Ok(l.clone());
            }
        }
        let lease = Lease::grant(&self.client, ttl).await?;
        leases.insert(ttl, lease.clone());
        Ok(lease)
    }

    /// Drops the pool's reference to `lease` if it is the pooled one (e.g. after it was lost).
    pub async fn forget(&self, lease: &Lease) {
        self.leases.lock().await.retain(|_, l| l.id() != lease.id());
    }

    /// Runs `f` with the pooled lease for `ttl`. If the server says the lease is gone (revoked
    /// behind our back before the keeper noticed), the lease is reported lost and `f` runs once
    /// more with a fresh one.
    pub async fn with_lease<T, F, Fut>(&self, ttl: Duration, mut f: F) -> Result<T>
    where
        F: FnMut(Arc<Lease>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let lease = self.get(ttl).await?;
        match f(lease.clone()).await {
            Err(e) if e.is_lease_not_found() => {
                tracing::debug!(
                    lease = format_args!("{:x}", lease.id()),
                    "pooled lease is gone at the server; granting a new one"
                );
                lease.mark_lost(LossReason::LeaseExpired);
                self.forget(&lease).await;
                f(self.get(ttl).await?).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whoever wakes on the lease's signal finds everything attached to it lost already: each
    /// round, a waiter on another thread checks the dependents the moment the lease's signal
    /// fires (with the dependents fired after the lease, it saw them pending in some rounds).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dependents_are_lost_before_the_lease_says_so() {
        for round in 0..20 {
            let (trigger, signal) = loss_signal();
            let loss = Loss {
                trigger,
                dependents: Default::default(),
            };
            // Many, so that firing them takes long enough for the waiter to wake meanwhile.
            let deps: Vec<Arc<LossTrigger>> =
                (0..20_000).map(|_| Arc::new(loss_signal().0)).collect();
            for d in &deps {
                loss.attach(d);
            }
            let seen: Vec<LossSignal> = deps.iter().map(|d| d.signal()).collect();
            let waiter = tokio::spawn(async move {
                signal.fired().await;
                seen.iter().all(LossSignal::is_fired)
            });
            tokio::task::yield_now().await;
            assert!(loss.fire(LossReason::LeaseExpired));
            assert!(!loss.fire(LossReason::Revoked), "fires once");
            assert!(
                waiter.await.unwrap(),
                "round {round}: the lease was lost before what it holds"
            );
            // Attached after the loss: told at once, with the lease's reason.
            let late = Arc::new(loss_signal().0);
            loss.attach(&late);
            assert_eq!(late.signal().reason(), Some(LossReason::LeaseExpired));
        }
    }
}
