//! Semaphore faults: cancellation at every poll, revocation, crashes and bad input.

use std::time::Duration;

use sync_core::check::{cancel_at_every_poll, eventually, Sweep};

use super::semaphore::{opts, sem_entries_are, LONG};
use super::SemHarness;
use crate::Error;

/// `acquire` then `release` of a free permit, dropped after 1, 2, … polls until it completes:
/// after every drop nothing is left.
pub async fn sem_acquire_cancelled_at_every_poll(h: &dyn SemHarness) {
    let s = h.semaphore().await;
    let sweep = cancel_at_every_poll(
        "semaphore acquire + release",
        2_000,
        || {
            let (s, o) = (s.clone(), opts(h));
            async move {
                let g = s
                    .acquire("cancel", 2, o)
                    .await
                    .expect("acquire a free permit");
                g.release().await.expect("release")
            }
        },
        |_| sem_entries_are(h, "cancel", 0),
    )
    .await;
    assert!(matches!(sweep, Sweep::Completed { .. }), "{sweep:?}");
}

/// A waiting `acquire` of a full semaphore, dropped after 1, 2, … polls until it waits: only
/// the holder is left after every drop, and the next one gets the permit once it is freed.
pub async fn sem_contended_acquire_cancelled_at_every_poll(h: &dyn SemHarness) {
    let s = h.semaphore().await;
    let g = s.acquire("cancel-held", 1, opts(h)).await.unwrap();
    let sweep = cancel_at_every_poll(
        "contended semaphore acquire",
        2_000,
        || {
            let (s, o) = (s.clone(), opts(h));
            async move { s.acquire("cancel-held", 1, o).await.map(|_| ()) }
        },
        |_| sem_entries_are(h, "cancel-held", 1),
    )
    .await;
    assert!(matches!(sweep, Sweep::Parked { .. }), "{sweep:?}");
    g.release().await.unwrap();
    let g = tokio::time::timeout(LONG, s.acquire("cancel-held", 1, opts(h)))
        .await
        .unwrap()
        .unwrap();
    g.release().await.unwrap();
    sem_entries_are(h, "cancel-held", 0).await;
}

/// Revoking the holders fires `lost()` on each of their guards, and frees the permits.
pub async fn sem_lost_fires_on_revoke(h: &dyn SemHarness) {
    let s = h.semaphore().await;
    let a = s.acquire("revoke", 2, opts(h)).await.unwrap();
    let b = s.acquire("revoke", 2, opts(h)).await.unwrap();
    assert!(!a.is_lost() && !b.is_lost());
    h.revoke_sem_holders("revoke").await;
    for g in [&a, &b] {
        let reason = tokio::time::timeout(LONG, g.lost())
            .await
            .expect("lost() after revocation");
        assert!(g.is_lost(), "{reason:?}");
    }
    let c = tokio::time::timeout(LONG, s.acquire("revoke", 2, opts(h)))
        .await
        .unwrap()
        .unwrap();
    drop((a, b, c));
    sem_entries_are(h, "revoke", 0).await;
}

/// A holder that dies without releasing frees its permit within its TTL (plus a margin).
pub async fn sem_crashed_holder_frees_permit(h: &dyn SemHarness) {
    let ttl = h.ttl();
    let s = h.semaphore().await;
    h.crash_sem_holder("crash", ttl).await;
    let bound = h.crash_bound(ttl);
    let g = s
        .acquire("crash", 1, opts(h).with_max_wait(bound))
        .await
        .unwrap_or_else(|e| panic!("permit not freed within {bound:?} of the crash: {e}"));
    g.release().await.unwrap();
    sem_entries_are(h, "crash", 0).await;
}

/// `try_acquire` (then `release` of what it got) dropped after 1, 2, … polls, on a semaphore of
/// two permits with none, one and both held by another client: after every drop only the
/// holders are left, a try never gets a permit when none is free, and a fresh try gets one when
/// one is.
pub async fn sem_try_acquire_cancelled_at_every_poll(h: &dyn SemHarness) {
    let name = "cancel-try";
    let (a, b) = (h.semaphore().await, h.semaphore().await);
    let mut holders = Vec::new();
    for held in 0..=2 {
        if held > 0 {
            holders.push(a.acquire(name, 2, opts(h)).await.unwrap());
        }
        let sweep = cancel_at_every_poll(
            "semaphore try_acquire",
            2_000,
            || try_and_release(b.clone(), name, 2, opts(h)),
            |_| sem_entries_are(h, name, held),
        )
        .await;
        match sweep {
            // The completing try may still meet the key of the attempt dropped just before it,
            // whose transaction was in flight at the drop and lands a moment later (its guard
            // then deletes it): a miss of a free permit is only checked eventually, below.
            Sweep::Completed { output, .. } => assert!(
                held < 2 || !output,
                "try_acquire got a permit with both held"
            ),
            other => panic!("try_acquire never completed: {other:?}"),
        }
        sem_entries_are(h, name, held).await;
        if held < 2 {
            let c = h.semaphore().await;
            eventually(
                &format!("a fresh try_acquire gets a permit with {held} of 2 held"),
                LONG,
                || try_and_release(c.clone(), name, 2, opts(h)),
            )
            .await;
        }
    }
    drop(holders);
    sem_entries_are(h, name, 0).await;
    let c = h.semaphore().await;
    eventually(
        "no ghost of a dropped try_acquire fixes the count or holds a permit",
        LONG,
        || try_and_release(c.clone(), name, 1, opts(h)),
    )
    .await;
}

/// `try_acquire` of one of `permits`, releasing what it got; whether it got one.
async fn try_and_release(
    s: std::sync::Arc<dyn crate::Semaphore>,
    name: &str,
    permits: usize,
    o: crate::AcquireOptions,
) -> bool {
    match s.try_acquire(name, permits, o).await.expect("try_acquire") {
        Some(g) => g.release().await.map(|()| true).expect("release"),
        None => false,
    }
}

/// Every TTL no backend accepts ([`bad_ttls`](sync_core::check::bad_ttls)) and a zero maximum
/// wait are `Error::InvalidOptions`, not retryable, for `acquire` and `try_acquire`, on a free
/// and on a held semaphore; none of them queues or disturbs the holder.
pub async fn sem_invalid_wait_and_ttl_rejected(h: &dyn SemHarness) {
    use crate::AcquireOptions;
    let name = "bad-options";
    let s = h.semaphore().await;
    let check = |what: String, r: crate::Result<bool>| match r {
        Err(e @ Error::InvalidOptions { .. }) => assert!(!e.is_retryable(), "{what}: {e}"),
        other => panic!("{what}: expected InvalidOptions, got {other:?}"),
    };
    let mut holder = None;
    for held in 0..=1 {
        for ttl in sync_core::check::bad_ttls() {
            let o = AcquireOptions::new().with_ttl(ttl);
            let r = s.acquire(name, 1, o.clone()).await.map(|_| true);
            check(format!("acquire, ttl {ttl:?}, {held} held"), r);
            let r = s.try_acquire(name, 1, o).await.map(|g| g.is_some());
            check(format!("try_acquire, ttl {ttl:?}, {held} held"), r);
        }
        let o = opts(h).with_max_wait(Duration::ZERO);
        let r = s.acquire(name, 1, o).await.map(|_| true);
        check(format!("acquire, max wait 0, {held} held"), r);
        sem_entries_are(h, name, held).await;
        if held == 0 {
            holder = Some(s.acquire(name, 1, opts(h)).await.unwrap());
        }
    }
    let holder = holder.unwrap();
    assert!(!holder.is_lost());
    holder.release().await.unwrap();
    sem_entries_are(h, name, 0).await;
}

/// Once `lost()` fired for a revoked holder, a new acquirer on another client gets its permit;
/// the old holder's late `release()` is `Error::Lost` and does not free the new holder's one.
pub async fn sem_new_acquirer_gets_permit_after_lost(h: &dyn SemHarness) {
    let name = "after-lost";
    let (a, b, c) = (
        h.semaphore().await,
        h.semaphore().await,
        h.semaphore().await,
    );
    let old = a.acquire(name, 1, opts(h)).await.unwrap();
    h.revoke_sem_holders(name).await;
    let reason = tokio::time::timeout(LONG, old.lost())
        .await
        .expect("lost() after revocation");
    let new = tokio::time::timeout(LONG, b.acquire(name, 1, opts(h)))
        .await
        .unwrap_or_else(|_| {
            panic!("the revoked permit ({reason:?}) was not given to a new acquirer")
        })
        .unwrap();
    assert!(new.fencing_token() > old.fencing_token());
    let e = old.release().await.unwrap_err();
    assert!(matches!(e, Error::Lost { .. }), "{e:?}");
    assert!(
        c.try_acquire(name, 1, opts(h)).await.unwrap().is_none(),
        "the old holder's late release freed the new holder's permit"
    );
    assert!(!new.is_lost());
    sem_entries_are(h, name, 1).await;
    new.release().await.unwrap();
    sem_entries_are(h, name, 0).await;
}

/// An `acquire` with the wrong count, dropped after 1, 2, … polls (it may be dropped after it
/// queued its claim and before it saw the mismatch and left): after every drop only the holder
/// is left, and when it is not dropped it ends in `Error::PermitsMismatch`.
pub async fn sem_mismatched_acquire_cancelled_at_every_poll(h: &dyn SemHarness) {
    let name = "cancel-mismatch";
    let (a, b) = (h.semaphore().await, h.semaphore().await);
    let holder = a.acquire(name, 2, opts(h)).await.unwrap();
    let sweep = cancel_at_every_poll(
        "mismatched semaphore acquire",
        2_000,
        || {
            let (b, o) = (b.clone(), opts(h));
            async move { b.acquire(name, 3, o).await.map(|g| g.fencing_token()) }
        },
        |_| sem_entries_are(h, name, 1),
    )
    .await;
    match sweep {
        Sweep::Completed {
            output:
                Err(Error::PermitsMismatch {
                    theirs: 2, ours: 3, ..
                }),
            ..
        } => {}
        other => panic!("expected a PermitsMismatch: {other:?}"),
    }
    sem_entries_are(h, name, 1).await;
    // Eventually: the attempt dropped last may have left a key in flight (see above).
    let c = h.semaphore().await;
    eventually(
        "no ghost of a mismatched acquire fixes the count or takes a permit",
        LONG,
        || async {
            match c.try_acquire(name, 2, opts(h)).await {
                Ok(Some(g)) => g.release().await.is_ok(),
                Ok(None) | Err(Error::PermitsMismatch { .. }) => false,
                Err(e) => panic!("{e:?}"),
            }
        },
    )
    .await;
    drop(holder);
    sem_entries_are(h, name, 0).await;
}

/// A permit is kept well past its TTL (the lease is kept alive) without a loss, and stays
/// taken for another client.
pub async fn sem_held_past_ttl_without_loss(h: &dyn SemHarness) {
    let name = "long";
    let (a, b) = (h.semaphore().await, h.semaphore().await);
    let g = a.acquire(name, 1, opts(h)).await.unwrap();
    let hold = h.ttl() * 2 + Duration::from_millis(500);
    let lost = tokio::time::timeout(hold, g.lost()).await;
    assert!(lost.is_err(), "lost while kept alive: {lost:?}");
    assert!(b.try_acquire(name, 1, opts(h)).await.unwrap().is_none());
    g.release().await.unwrap();
    sem_entries_are(h, name, 0).await;
}
