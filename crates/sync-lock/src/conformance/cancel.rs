//! Cancel safety: operations dropped at every poll, and abandoned ones, leave nothing.

use super::*;

/// Dropping a waiting `acquire` leaves nothing behind and blocks nobody.
pub async fn cancelled_acquire_leaves_nothing(h: &dyn Harness) {
    let name = "cancel";
    let (a, b, c) = (h.client().await, h.client().await, h.client().await);
    let g = a.acquire(name, opts(h)).await.unwrap();
    let waiting = tokio::spawn({
        let b = b.clone();
        let o = opts(h);
        async move { b.acquire(name, o).await }
    });
    eventually("waiter queued", LONG, || async {
        h.entries(name).await == 2
    })
    .await;
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    eventually("cancelled waiter removed", LONG, || async {
        h.entries(name).await == 1
    })
    .await;
    // Cancel another one right at the start, before it could have been queued.
    let quick = tokio::time::timeout(Duration::ZERO, b.acquire(name, opts(h))).await;
    assert!(quick.is_err());
    g.release().await.unwrap();
    let g = within(
        "no ghost waiter blocks the lock",
        LONG,
        c.acquire(name, opts(h)),
    )
    .await
    .unwrap();
    g.release().await.unwrap();
    eventually("nothing left", LONG, || async {
        h.entries(name).await == 0
    })
    .await;
}

/// An `acquire` or `try_acquire` future dropped before its first poll gives back whatever it
/// took: a backend may take a free lock, or a sticky hold it kept, when the method is called
/// ([`LockFuture`](crate::LockFuture)). After each drop nothing is left and another client gets
/// the lock at once; dropped while another client holds the lock, it leaves the holder alone. A
/// `release` future dropped unpolled releases all the same.
pub async fn acquire_dropped_unpolled_gives_back_what_it_took(h: &dyn Harness) {
    let name = "unpolled";
    let (a, b) = (h.client().await, h.client().await);
    for round in 0..3 {
        let pending = a.acquire(name, opts(h));
        drop(pending);
        nothing_left(h, name, 0, "an acquire dropped unpolled", round).await;
        let pending = a.try_acquire(name, opts(h));
        drop(pending);
        nothing_left(h, name, 0, "a try_acquire dropped unpolled", round).await;
    }
    // A sticky hold kept by `a`, taken back by a future that is dropped unpolled: the hold goes
    // back to being kept (or released), and a contender still gets the lock.
    let g = a.acquire(name, opts(h).with_sticky(true)).await.unwrap();
    let token = g.fencing_token();
    g.release().await.unwrap();
    drop(a.acquire(name, opts(h).with_sticky(true)));
    drop(a.try_acquire(name, opts(h).with_sticky(true)));
    let g = within(
        "a contender after a sticky take-back dropped unpolled",
        LONG,
        b.acquire(name, opts(h)),
    )
    .await
    .unwrap();
    assert!(g.fencing_token() > token, "{g:?} after token {token}");
    // Dropped unpolled while `b` holds the lock: `b` keeps it and no entry is left behind.
    drop(a.acquire(name, opts(h)));
    assert!(
        a.try_acquire(name, opts(h)).await.unwrap().is_none(),
        "the lock is held by b"
    );
    assert!(
        !g.is_lost(),
        "an unpolled acquire disturbed the holder: {g:?}"
    );
    nothing_left(h, name, 1, "an acquire of a held lock dropped unpolled", 0).await;
    // A release dropped unpolled still releases (at the call, or as the dropped guard does).
    drop(g.release());
    nothing_left(h, name, 0, "a release dropped unpolled", 0).await;
}

/// The most polls a cancel-at-every-poll sweep may take before it must have completed or parked.
pub(super) const MAX_POLLS: usize = 2_000;

/// After a dropped operation on `name`: eventually only `held` entries are left (the dropped
/// one's key is gone), and, when the lock is free, a fresh client gets it at once.
pub(super) async fn nothing_left(
    h: &dyn Harness,
    name: &str,
    held: usize,
    what: &str,
    polls: usize,
) {
    eventually(
        &format!("{what} dropped after {polls} polls left its entry"),
        LONG,
        || async { h.entries(name).await == held },
    )
    .await;
    if held == 0 {
        let c = h.client().await;
        let g = c
            .try_acquire(name, opts(h))
            .await
            .unwrap()
            .unwrap_or_else(|| {
                panic!("{what} dropped after {polls} polls: the free lock is blocked by a ghost")
            });
        g.release().await.unwrap();
        eventually("the check's own entry gone", LONG, || async {
            h.entries(name).await == 0
        })
        .await;
    }
}

/// `acquire` then `release` of a free lock, dropped after 1, 2, … polls until it completes:
/// after every drop nothing is left and the next contender gets the lock at once.
pub async fn acquire_and_release_cancelled_at_every_poll(h: &dyn Harness) {
    use sync_core::check::{cancel_at_every_poll, Sweep};
    let name = "cancel-every-poll";
    let b = h.client().await;
    let sweep = cancel_at_every_poll(
        "acquire + release",
        MAX_POLLS,
        || {
            let b = b.clone();
            let o = opts(h);
            async move {
                let g = b.acquire(name, o).await.expect("acquire a free lock");
                g.release().await.expect("release")
            }
        },
        |polls| nothing_left(h, name, 0, "acquire + release", polls),
    )
    .await;
    assert!(
        matches!(sweep, Sweep::Completed { .. }),
        "acquire of a free lock never completed: {sweep:?}"
    );
    nothing_left(h, name, 0, "the completed acquire + release", 0).await;
}

/// A waiting `acquire` of a held lock, dropped after 1, 2, … polls until it waits: after every
/// drop only the holder is left, and once the holder releases, the next contender gets it.
pub async fn contended_acquire_cancelled_at_every_poll(h: &dyn Harness) {
    use sync_core::check::{cancel_at_every_poll, Sweep};
    let name = "cancel-every-poll-held";
    let (a, b) = (h.client().await, h.client().await);
    let g = a.acquire(name, opts(h)).await.unwrap();
    let sweep = cancel_at_every_poll(
        "contended acquire",
        MAX_POLLS,
        || {
            let b = b.clone();
            let o = opts(h);
            async move { b.acquire(name, o).await }
        },
        |polls| nothing_left(h, name, 1, "contended acquire", polls),
    )
    .await;
    match sweep {
        Sweep::Parked { .. } => {}
        Sweep::Completed { output, polls } => {
            panic!("an acquire of a held lock completed after {polls} polls: {output:?}")
        }
        other => panic!("unexpected sweep outcome: {other:?}"),
    }
    g.release().await.unwrap();
    let c = h.client().await;
    let g = within(
        "the next contender gets the lock",
        LONG,
        c.acquire(name, opts(h)),
    )
    .await
    .unwrap();
    g.release().await.unwrap();
    nothing_left(h, name, 0, "the final acquire", 0).await;
}

/// `try_acquire` dropped after 1, 2, … polls, on a free lock and on a held one: after every drop
/// nothing of it is left.
pub async fn try_acquire_cancelled_at_every_poll(h: &dyn Harness) {
    use sync_core::check::{cancel_at_every_poll, Sweep};
    let name = "cancel-every-poll-try";
    let (a, b) = (h.client().await, h.client().await);
    for held in [0, 1] {
        let holder = if held == 1 {
            Some(a.acquire(name, opts(h)).await.unwrap())
        } else {
            None
        };
        let sweep = cancel_at_every_poll(
            "try_acquire",
            MAX_POLLS,
            || {
                let b = b.clone();
                let o = opts(h);
                async move {
                    match b.try_acquire(name, o).await.expect("try_acquire") {
                        Some(g) => g.release().await.map(|_| true).expect("release"),
                        None => false,
                    }
                }
            },
            |polls| nothing_left(h, name, held, "try_acquire", polls),
        )
        .await;
        match sweep {
            Sweep::Completed { output, .. } => assert_eq!(
                output,
                held == 0,
                "try_acquire got a held lock, or missed a free one"
            ),
            other => panic!("try_acquire never completed: {other:?}"),
        }
        if let Some(g) = holder {
            g.release().await.unwrap();
        }
        nothing_left(h, name, 0, "try_acquire", 0).await;
    }
}

/// The outside tester's scenario: while one client holds the lock, another makes many acquires
/// that are dropped after a random 0–20 ms (by an outer timeout, and through the lock's own
/// maximum wait); after the holder releases, a fresh client gets the lock at once.
pub async fn abandoned_acquires_leave_no_ghost(h: &dyn Harness) {
    let name = "abandoned";
    let (a, b) = (h.client().await, h.client().await);
    let g = a.acquire(name, opts(h)).await.unwrap();
    for i in 0..100u64 {
        // Spread over 0–20 ms, the same on every run.
        let wait = Duration::from_micros((i * 7_919) % 20_000);
        if i % 2 == 0 {
            let r = tokio::time::timeout(wait, b.acquire(name, opts(h))).await;
            assert!(r.is_err(), "acquired a held lock: {r:?}");
        } else {
            let r = b.acquire(name, opts(h).with_max_wait(wait)).await;
            assert!(
                matches!(r, Err(Error::Timeout { .. })),
                "a maximum wait of {wait:?} on a held lock ended with {r:?}"
            );
        }
    }
    eventually("abandoned waiters gone", LONG, || async {
        h.entries(name).await == 1
    })
    .await;
    g.release().await.unwrap();
    nothing_left(h, name, 0, "abandoned acquires", 0).await;
}
