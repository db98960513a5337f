//! Read-write lock faults: cancellation at every poll, revocation, crashes and bad input.

use std::time::Duration;

use sync_core::check::{cancel_at_every_poll, eventually, Sweep};

use super::semaphore::{opts, rw_entries_are, LONG};
use super::SemHarness;
use crate::{Error, LockGuard};

/// A writer waiting behind a reader, dropped after 1, 2, … polls: only the reader is left, and
/// a new reader is not blocked by a ghost writer.
pub async fn rw_contended_write_cancelled_at_every_poll(h: &dyn SemHarness) {
    let l = h.rwlock().await;
    let r = l.read("cancel-w", opts(h)).await.unwrap();
    let sweep = cancel_at_every_poll(
        "contended write",
        2_000,
        || {
            let (l, o) = (l.clone(), opts(h));
            async move { l.write("cancel-w", o).await.map(|_| ()) }
        },
        |_| rw_entries_are(h, "cancel-w", 1),
    )
    .await;
    assert!(matches!(sweep, Sweep::Parked { .. }), "{sweep:?}");
    let r2 = l
        .try_read("cancel-w", opts(h))
        .await
        .unwrap()
        .expect("no ghost writer");
    drop((r, r2));
    rw_entries_are(h, "cancel-w", 0).await;
}

/// A reader waiting behind a writer, dropped after 1, 2, … polls until it waits: only the
/// writer is left after every drop, and once it releases, a writer of another client gets the
/// lock at once (no ghost reader holds it).
pub async fn rw_contended_read_cancelled_at_every_poll(h: &dyn SemHarness) {
    let name = "cancel-r";
    let (a, b) = (h.rwlock().await, h.rwlock().await);
    let w = a.write(name, opts(h)).await.unwrap();
    let sweep = cancel_at_every_poll(
        "contended read",
        2_000,
        || {
            let (b, o) = (b.clone(), opts(h));
            async move { b.read(name, o).await.map(|_| ()) }
        },
        |_| rw_entries_are(h, name, 1),
    )
    .await;
    match sweep {
        Sweep::Parked { .. } => {}
        Sweep::Completed { output, polls } => {
            panic!("a read behind a writer completed after {polls} polls: {output:?}")
        }
        other => panic!("unexpected sweep outcome: {other:?}"),
    }
    w.release().await.unwrap();
    let c = h.rwlock().await;
    let w2 = c
        .try_write(name, opts(h))
        .await
        .unwrap()
        .expect("a ghost reader holds the lock");
    w2.release().await.unwrap();
    rw_entries_are(h, name, 0).await;
}

/// What holds `name` while a `try_read` or `try_write` is swept.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Held {
    Nobody,
    Reader,
    Writer,
}

/// `try_read` (`write` false) or `try_write`, then `release` of what it got, dropped after 1, 2,
/// … polls, with the lock free, read and written by another client: after every drop only that
/// holder is left, a try never gets a lock that is not free for it, and a fresh try gets one
/// that is.
async fn try_cancelled_at_every_poll(h: &dyn SemHarness, name: &str, write: bool) {
    let (a, b) = (h.rwlock().await, h.rwlock().await);
    let what = if write { "try_write" } else { "try_read" };
    for held in [Held::Nobody, Held::Reader, Held::Writer] {
        let holder: Option<LockGuard> = match held {
            Held::Nobody => None,
            Held::Reader => Some(a.read(name, opts(h)).await.unwrap()),
            Held::Writer => Some(a.write(name, opts(h)).await.unwrap()),
        };
        let entries = usize::from(holder.is_some());
        let sweep = cancel_at_every_poll(
            what,
            2_000,
            || try_and_release(b.clone(), name, write, opts(h)),
            |_| rw_entries_are(h, name, entries),
        )
        .await;
        let free = held == Held::Nobody || (held == Held::Reader && !write);
        match sweep {
            // The completing try may still meet the key of the attempt dropped just before it,
            // whose transaction was in flight at the drop and lands a moment later (its guard
            // then deletes it): a miss of a free lock is only checked eventually, below.
            Sweep::Completed { output, .. } => {
                assert!(free || !output, "{what} with {held:?} holding got the lock")
            }
            other => panic!("{what} never completed: {other:?}"),
        }
        rw_entries_are(h, name, entries).await;
        if free {
            let c = h.rwlock().await;
            eventually(
                &format!("{what} by a fresh client with {held:?} holding gets the lock"),
                LONG,
                || try_and_release(c.clone(), name, write, opts(h)),
            )
            .await;
        }
        if let Some(g) = holder {
            g.release().await.unwrap();
        }
        rw_entries_are(h, name, 0).await;
    }
}

/// `try_write` (or `try_read`) of `name`, releasing what it got; whether it got it.
async fn try_and_release(
    l: std::sync::Arc<dyn crate::RwLock>,
    name: &str,
    write: bool,
    o: crate::AcquireOptions,
) -> bool {
    let got = if write {
        l.try_write(name, o).await
    } else {
        l.try_read(name, o).await
    };
    match got.expect("try") {
        Some(g) => g.release().await.map(|()| true).expect("release"),
        None => false,
    }
}

/// `try_read` dropped at every poll leaves nothing (see `try_cancelled_at_every_poll`).
pub async fn rw_try_read_cancelled_at_every_poll(h: &dyn SemHarness) {
    try_cancelled_at_every_poll(h, "cancel-try-r", false).await;
}

/// `try_write` dropped at every poll leaves nothing (see `try_cancelled_at_every_poll`).
pub async fn rw_try_write_cancelled_at_every_poll(h: &dyn SemHarness) {
    try_cancelled_at_every_poll(h, "cancel-try-w", true).await;
}

/// After `holders` of `name` (on one client) were revoked: `lost()` fires on each, `waiter`
/// (another client's) is granted, the holders' late `release()` is `Error::Lost` and frees
/// nothing of the new holder, which a third client's `try_write` (`probe_write`) or
/// `try_read` shows.
async fn revoked_holders_hand_over(
    h: &dyn SemHarness,
    name: &str,
    holders: Vec<LockGuard>,
    waiter: tokio::task::JoinHandle<LockGuard>,
    probe_write: bool,
) {
    rw_entries_are(h, name, holders.len() + 1).await;
    assert!(holders.iter().all(|g| !g.is_lost()));
    h.revoke_rw_holders(name).await;
    for g in &holders {
        let reason = tokio::time::timeout(LONG, g.lost())
            .await
            .expect("lost() after revocation");
        assert!(g.is_lost(), "{reason:?}");
    }
    let next = tokio::time::timeout(LONG, waiter)
        .await
        .expect("the waiter is granted after the revocation")
        .unwrap();
    assert!(holders
        .iter()
        .all(|g| next.fencing_token() > g.fencing_token()));
    for g in holders {
        let e = g.release().await.unwrap_err();
        assert!(matches!(e, Error::Lost { .. }), "{e:?}");
    }
    let c = h.rwlock().await;
    let probe = if probe_write {
        c.try_write(name, opts(h)).await
    } else {
        c.try_read(name, opts(h)).await
    };
    assert!(
        probe.unwrap().is_none(),
        "a revoked holder's late release freed the new holder's lock"
    );
    assert!(!next.is_lost());
    rw_entries_are(h, name, 1).await;
    next.release().await.unwrap();
    rw_entries_are(h, name, 0).await;
}

/// Revoking two readers fires `lost()` on both and hands the lock to the waiting writer.
pub async fn rw_lost_fires_on_revoke_read(h: &dyn SemHarness) {
    let name = "revoke-r";
    let (a, b) = (h.rwlock().await, h.rwlock().await);
    let readers = vec![
        a.read(name, opts(h)).await.unwrap(),
        a.read(name, opts(h)).await.unwrap(),
    ];
    let o = opts(h);
    let writer = tokio::spawn(async move { b.write(name, o).await.unwrap() });
    revoked_holders_hand_over(h, name, readers, writer, false).await;
}

/// Revoking a writer fires `lost()` on it and hands the lock to the waiting reader.
pub async fn rw_lost_fires_on_revoke_write(h: &dyn SemHarness) {
    let name = "revoke-w";
    let (a, b) = (h.rwlock().await, h.rwlock().await);
    let w = a.write(name, opts(h)).await.unwrap();
    let o = opts(h);
    let reader = tokio::spawn(async move { b.read(name, o).await.unwrap() });
    revoked_holders_hand_over(h, name, vec![w], reader, true).await;
}

/// A writer that dies without releasing frees the lock within its TTL (plus a margin): a reader
/// gets it within the harness's crash bound, then a writer.
pub async fn rw_crashed_writer_frees_lock(h: &dyn SemHarness) {
    let (name, ttl) = ("crash-w", h.ttl());
    let l = h.rwlock().await;
    h.crash_rw_holder(name, ttl).await;
    let bound = h.crash_bound(ttl);
    assert!(
        l.try_read(name, opts(h)).await.unwrap().is_none() || bound < Duration::from_secs(1),
        "the crashed writer's lock was free at once, so the crash was not simulated"
    );
    let r = l
        .read(name, opts(h).with_max_wait(bound))
        .await
        .unwrap_or_else(|e| panic!("lock not freed within {bound:?} of the crash: {e}"));
    r.release().await.unwrap();
    let w = l.try_write(name, opts(h)).await.unwrap();
    w.expect("free after the reader").release().await.unwrap();
    rw_entries_are(h, name, 0).await;
}

/// Every TTL no backend accepts and a zero maximum wait are `Error::InvalidOptions`, not
/// retryable, from `read`, `write`, `try_read` and `try_write`, on a free and on a read lock;
/// none of them queues or disturbs the holder.
pub async fn rw_invalid_wait_and_ttl_rejected(h: &dyn SemHarness) {
    use crate::AcquireOptions;
    let name = "bad-options";
    let l = h.rwlock().await;
    let check = |what: String, r: crate::Result<bool>| match r {
        Err(e @ Error::InvalidOptions { .. }) => assert!(!e.is_retryable(), "{what}: {e}"),
        other => panic!("{what}: expected InvalidOptions, got {other:?}"),
    };
    let mut holder = None;
    for held in 0..=1 {
        for ttl in sync_core::check::bad_ttls() {
            let o = AcquireOptions::new().with_ttl(ttl);
            let what = |op: &str| format!("{op}, ttl {ttl:?}, {held} held");
            check(what("read"), l.read(name, o.clone()).await.map(|_| true));
            check(what("write"), l.write(name, o.clone()).await.map(|_| true));
            let r = l.try_read(name, o.clone()).await.map(|g| g.is_some());
            check(what("try_read"), r);
            let r = l.try_write(name, o).await.map(|g| g.is_some());
            check(what("try_write"), r);
        }
        let o = opts(h).with_max_wait(Duration::ZERO);
        let what = |op: &str| format!("{op}, max wait 0, {held} held");
        check(what("read"), l.read(name, o.clone()).await.map(|_| true));
        check(what("write"), l.write(name, o).await.map(|_| true));
        rw_entries_are(h, name, held).await;
        if held == 0 {
            holder = Some(l.read(name, opts(h)).await.unwrap());
        }
    }
    let holder = holder.unwrap();
    assert!(!holder.is_lost());
    holder.release().await.unwrap();
    rw_entries_are(h, name, 0).await;
}

/// A writer, and two readers of another name, keep their locks well past the TTL (the leases
/// are kept alive) without a loss, and the locks stay taken for another client.
pub async fn rw_held_past_ttl_without_loss(h: &dyn SemHarness) {
    let (a, b, c) = (h.rwlock().await, h.rwlock().await, h.rwlock().await);
    let guards = [
        a.write("long-w", opts(h)).await.unwrap(),
        a.read("long-r", opts(h)).await.unwrap(),
        b.read("long-r", opts(h)).await.unwrap(),
    ];
    let hold = h.ttl() * 2 + Duration::from_millis(500);
    let any_lost = futures::future::select_all(guards.iter().map(|g| Box::pin(g.lost())));
    let lost = tokio::time::timeout(hold, any_lost)
        .await
        .map(|(reason, i, _)| (i, reason));
    assert!(lost.is_err(), "lost while kept alive: {lost:?}");
    assert!(c.try_read("long-w", opts(h)).await.unwrap().is_none());
    assert!(c.try_write("long-r", opts(h)).await.unwrap().is_none());
    for g in guards {
        g.release().await.unwrap();
    }
    rw_entries_are(h, "long-w", 0).await;
    rw_entries_are(h, "long-r", 0).await;
}
