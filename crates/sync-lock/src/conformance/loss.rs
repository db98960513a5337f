//! Loss of a lock: crashes, revocation, fencing tokens, TTLs kept alive.

use super::*;

/// A holder that dies without releasing frees the lock within its TTL (plus a margin).
pub async fn crashed_holder_frees_lock(h: &dyn Harness) {
    let ttl = h.ttl();
    let b = h.client().await;
    h.crash_holder("crash", ttl).await;
    let died = Instant::now();
    assert!(
        b.try_acquire("crash", opts(h)).await.unwrap().is_none()
            || h.crash_bound(ttl) < Duration::from_secs(1),
        "the crashed holder's lock was free at once, so the crash was not simulated"
    );
    let bound = h.crash_bound(ttl);
    let g = b
        .acquire("crash", opts(h).with_max_wait(bound))
        .await
        .unwrap_or_else(|e| panic!("lock not freed within {bound:?} of the crash: {e}"));
    tracing::info!(after = ?died.elapsed(), "crashed holder's lock taken over");
    g.release().await.unwrap();
}

/// Fencing tokens strictly increase from one holder to the next, across clients.
pub async fn fencing_tokens_increase(h: &dyn Harness) {
    let clients = [h.client().await, h.client().await, h.client().await];
    let mut last = 0;
    for i in 0..9 {
        let g = clients[i % 3].acquire("fence", opts(h)).await.unwrap();
        assert!(
            g.fencing_token() > last,
            "token {} after {last}",
            g.fencing_token()
        );
        last = g.fencing_token();
        g.release().await.unwrap();
    }
    // Also through contention and a revocation.
    let g = clients[0].acquire("fence", opts(h)).await.unwrap();
    let t0 = g.fencing_token();
    let next = tokio::spawn({
        let c = clients[1].clone();
        let o = opts(h);
        async move { c.acquire("fence", o).await.unwrap() }
    });
    eventually("waiter queued", LONG, || async {
        h.entries("fence").await == 2
    })
    .await;
    h.revoke_holder("fence").await;
    let g2 = within("successor granted", LONG, next).await.unwrap();
    assert!(g2.fencing_token() > t0);
    g2.release().await.unwrap();
    drop(g);
}

/// Taking the lock away behind the holder's back fires `lost()`; the next waiter gets it; the
/// old holder's late release fails with `Lost` and does not touch the new holder.
pub async fn lost_fires_on_revoke(h: &dyn Harness) {
    let name = "revoke";
    let (a, b, c) = (h.client().await, h.client().await, h.client().await);
    let g = a.acquire(name, opts(h)).await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        let o = opts(h);
        async move { b.acquire(name, o).await.unwrap() }
    });
    eventually("waiter queued", LONG, || async {
        h.entries(name).await == 2
    })
    .await;
    h.revoke_holder(name).await;
    let reason = within("lost() after revocation", h.loss_bound(), g.lost()).await;
    assert!(
        matches!(
            reason,
            LossReason::Revoked | LossReason::LeaseExpired | LossReason::KeepaliveFailed { .. }
        ),
        "{reason:?}"
    );
    assert!(g.is_lost());
    let g2 = within("waiter granted after revocation", LONG, waiter)
        .await
        .unwrap();
    let err = g.release().await.unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err:?}");
    assert!(
        c.try_acquire(name, opts(h)).await.unwrap().is_none(),
        "the old holder's release freed the new holder's lock"
    );
    assert!(!g2.is_lost());
    g2.release().await.unwrap();
}

/// A holder keeps its lock well past its TTL (the lease is kept alive) and is not told of loss.
pub async fn held_past_ttl_without_loss(h: &dyn Harness) {
    let (a, b) = (h.client().await, h.client().await);
    let g = a.acquire("long", opts(h)).await.unwrap();
    let hold = h.ttl() * 2 + Duration::from_millis(500);
    let lost = tokio::time::timeout(hold, g.lost()).await;
    assert!(lost.is_err(), "lost while kept alive: {lost:?}");
    assert!(b.try_acquire("long", opts(h)).await.unwrap().is_none());
    g.release().await.unwrap();
}

/// A name acquired again and again, by one client and by two in turn, keeps each grant until
/// its release. A backend that names the keys of acquires that follow one another alike (etcd
/// reuses a key's name once it is deleted, so that dead keys do not pile up in the queue) must
/// never take an earlier holder's delete, arriving late, for a later holder's: that would report
/// a false loss, or, for a waiter, let two holders in at once.
pub async fn back_to_back_acquires_keep_their_grant(h: &dyn Harness) {
    let a = h.client().await;
    let mut last = 0;
    for i in 0..100 {
        let g = a.acquire("again", opts(h)).await.unwrap();
        assert!(
            g.fencing_token() > last,
            "acquire {i}: token {} after {last}",
            g.fencing_token()
        );
        last = g.fencing_token();
        // Time for a late delete of the hold before to arrive.
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(!g.is_lost(), "acquire {i}: lost without a cause");
        g.release()
            .await
            .unwrap_or_else(|e| panic!("acquire {i}: release failed: {e}"));
    }
    // Two clients in turn on one name: each waits behind the other's reused key.
    let inside = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in [h.client().await, h.client().await] {
        let (inside, o) = (inside.clone(), opts(h));
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                let g = c
                    .acquire("again-2", o.clone())
                    .await
                    .unwrap_or_else(|e| panic!("round {i}: acquire failed: {e}"));
                assert!(
                    !inside.swap(true, Ordering::SeqCst),
                    "round {i}: two holders at once"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
                assert!(!g.is_lost(), "round {i}: lost without a cause");
                inside.store(false, Ordering::SeqCst);
                g.release()
                    .await
                    .unwrap_or_else(|e| panic!("round {i}: release failed: {e}"));
            }
        }));
    }
    for t in tasks {
        within("two clients taking turns", LONG * 3, t)
            .await
            .unwrap();
    }
}
