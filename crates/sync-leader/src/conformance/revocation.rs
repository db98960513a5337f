//! `revoked()` on every kind of loss, crash recovery, and the seed's re-elect loop.

use super::*;

/// `revoked()` fires on resignation too: a worker holding the signal learns that the office
/// ended, with `Released`.
pub async fn revoked_fires_on_resign(h: &dyn Harness) {
    let group = "resign-signal";
    let c = h.client().await;
    let e = c.elect("a", opts(h, group)).await.unwrap();
    let signal = e.revoked_signal();
    let worker = tokio::spawn(async move { signal.fired().await });
    assert!(e.is_leader());
    assert!(!e.revoked_signal().is_fired());
    e.resign().await.unwrap();
    let reason = within("revoked() after resign", LONG, worker)
        .await
        .unwrap();
    assert_eq!(reason, LossReason::Released);
    assert_eq!(c.leader(group).await.unwrap(), None);
    queued(h, group, 0).await;
}

/// Ending the leader's lease behind its back fires `revoked()`, elects the next candidate, and
/// leaves the old leader unable to proclaim or to resign the new leader's office.
pub async fn revoked_fires_on_lease_revocation(h: &dyn Harness) {
    let group = "revoke-lease";
    let (a, b) = (h.client().await, h.client().await);
    let e = a.elect("a", opts(h, group)).await.unwrap();
    let next = campaign(&b, "b", opts(h, group));
    queued(h, group, 2).await;
    h.revoke_lease(group).await;
    let reason = within(
        "revoked() after lease revocation",
        h.loss_bound(),
        e.revoked(),
    )
    .await;
    assert!(is_loss(&reason), "{reason:?}");
    assert!(!e.is_leader());
    let e2 = elected("next candidate elected after revocation", next).await;
    assert!(e2.term() > e.term());
    let err = e.proclaim("stale").await.unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err:?}");
    let err = e.resign().await.unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err:?}");
    assert!(err.is_retryable());
    let now = a.leader(group).await.unwrap().expect("b leads");
    assert_eq!((now.id.as_str(), now.term), ("b", e2.term()));
    assert!(e2.is_leader());
    e2.resign().await.unwrap();
}

/// Deleting the leader's record behind its back fires `revoked()` with `Revoked`; the next
/// candidate is elected.
pub async fn revoked_fires_on_key_deletion(h: &dyn Harness) {
    let group = "delete-key";
    let (a, b) = (h.client().await, h.client().await);
    let e = a.elect("a", opts(h, group)).await.unwrap();
    let next = campaign(&b, "b", opts(h, group));
    queued(h, group, 2).await;
    h.delete_leader_key(group).await;
    let reason = within("revoked() after key deletion", h.loss_bound(), e.revoked()).await;
    assert_eq!(reason, LossReason::Revoked);
    let e2 = elected("next candidate elected after deletion", next).await;
    assert!(e2.term() > e.term());
    assert!(e.resign().await.is_err());
    assert!(e2.is_leader());
    e2.resign().await.unwrap();
    queued(h, group, 0).await;
}

/// A leader that dies without resigning is replaced within its TTL (plus a margin).
pub async fn crashed_leader_replaced_within_ttl(h: &dyn Harness) {
    let group = "crash";
    let ttl = h.ttl();
    let b = h.client().await;
    let dead_term = h.crash_leader(group, "doomed", ttl).await;
    let died = Instant::now();
    let bound = h.crash_bound(ttl);
    if bound >= Duration::from_secs(1) {
        let still = b.leader(group).await.unwrap();
        assert_eq!(
            still.map(|l| (l.id, l.term)),
            Some(("doomed".to_owned(), dead_term)),
            "the dead leader was gone at once, so the crash was not simulated"
        );
    }
    let e = b
        .elect("heir", opts(h, group).with_max_wait(bound))
        .await
        .unwrap_or_else(|err| panic!("no new leader within {bound:?} of the crash: {err}"));
    tracing::info!(after = ?died.elapsed(), "crashed leader replaced");
    assert!(e.term() > dead_term);
    e.resign().await.unwrap();
}

/// The seed's loop: elect, act as leader until `revoked()`, elect again; three revocations
/// (lease and record alternately) behind its back, and terms increase each time.
pub async fn seed_reelect_loop(h: &dyn Harness) {
    let name = "seed";
    let l = Group::from_arc(h.client().await, name).with_ttl(h.ttl());
    let observer = h.client().await;
    let terms = Mutex::new(Vec::new());
    let ops = AtomicUsize::new(0);
    let leader_loop = async {
        // elect leader
        let mut e = l.elect("id").await.unwrap();
        terms.lock().unwrap().push(e.term());
        let mut revocations = 0;
        loop {
            let revoked = tokio::select! {
                reason = e.revoked() => Some(reason),
                _ = tokio::time::sleep(Duration::from_millis(5)) => None,
            };
            match revoked {
                Some(reason) => {
                    assert!(is_loss(&reason), "{reason:?}");
                    revocations += 1;
                    if revocations == 3 {
                        break;
                    }
                    // re-elect
                    e = l.elect("id").await.unwrap();
                    terms.lock().unwrap().push(e.term());
                }
                // leader operation
                None => {
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // The office is gone: resigning it now reports the loss.
        assert!(e.resign().await.is_err());
    };
    let revoker = async {
        let mut last = 0;
        for i in 0..3 {
            eventually("the loop leads in a new term", LONG, || async {
                matches!(observer.leader(name).await.unwrap(), Some(l) if l.id == "id" && l.term > last)
            })
            .await;
            last = observer.leader(name).await.unwrap().unwrap().term;
            if i % 2 == 0 {
                h.revoke_lease(name).await;
            } else {
                h.delete_leader_key(name).await;
            }
        }
    };
    within("the seed loop", LONG * 3, async {
        tokio::join!(leader_loop, revoker)
    })
    .await;
    let terms = terms.into_inner().unwrap();
    assert_eq!(terms.len(), 3);
    assert!(terms.windows(2).all(|w| w[0] < w[1]), "{terms:?}");
    queued(h, name, 0).await;
}
