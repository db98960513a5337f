//! Sticky acquires ([`AcquireOptions::with_sticky`]): a re-acquire with nobody waiting, a
//! contender's hand-over, exclusion when they race, loss while parked, cancellation.
//!
//! On a backend that parks released sticky locks ([`Harness::parks_sticky_locks`], etcd) the
//! cases also check that the key stays and the token is kept; on the others (local) a sticky
//! acquire behaves as a plain one, and the same cases check that.

use std::sync::Mutex;

use super::*;

fn sticky(h: &dyn Harness) -> AcquireOptions {
    opts(h).with_sticky(true)
}

/// A sticky release with nobody waiting keeps the lock's place (etcd: the key stays, and the
/// re-acquire has the same token, so no new key was made); every re-acquire, `acquire` or
/// `try_acquire`, gets it at once; each guard's loss signal says `Released` at its release;
/// dropping the handle deletes the parked key.
pub async fn sticky_reacquire_without_waiter(h: &dyn Harness) {
    let name = "sticky-again";
    let parks = h.parks_sticky_locks();
    let a = h.client().await;
    let g = a.acquire(name, sticky(h)).await.unwrap();
    let (first, fence) = (g.fencing_token(), g.fence());
    g.release().await.unwrap();
    if parks {
        assert_eq!(
            h.entries(name).await,
            1,
            "a released sticky lock with nobody waiting was not parked"
        );
    }
    let mut last = first;
    for i in 0..50 {
        let g = if i % 2 == 0 {
            within("a sticky re-acquire", LONG, a.acquire(name, sticky(h)))
                .await
                .unwrap()
        } else {
            a.try_acquire(name, sticky(h))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("try_acquire {i} missed our own free lock"))
        };
        let token = g.fencing_token();
        if parks {
            assert_eq!(
                (token, g.fence()),
                (first, fence.clone()),
                "re-acquire {i}: a new key instead of the parked one"
            );
        } else {
            assert!(token > last, "re-acquire {i}: token {token} after {last}");
        }
        last = token;
        assert!(!g.is_lost(), "re-acquire {i} handed out a lost lock: {g:?}");
        let signal = g.loss_signal();
        g.release().await.unwrap();
        assert_eq!(
            signal.reason(),
            Some(LossReason::Released),
            "re-acquire {i}: a parked guard's worker must be told it was released"
        );
    }
    // Dropped without release: parked too, and taken back.
    drop(a.acquire(name, sticky(h)).await.unwrap());
    let g = a.try_acquire(name, sticky(h)).await.unwrap();
    let g = g.expect("a dropped sticky guard left the lock to its own handle");
    if parks {
        assert_eq!(
            g.fencing_token(),
            first,
            "a dropped sticky guard was not parked"
        );
    }
    // Another task of the same handle does not share the held lock (its try counts as a
    // contender: the key is not parked again).
    assert!(
        a.try_acquire(name, sticky(h)).await.unwrap().is_none(),
        "a second sticky guard of one handle while the first held"
    );
    g.release().await.unwrap();
    let g = a.acquire(name, sticky(h)).await.unwrap();
    g.release().await.unwrap();
    drop(a);
    eventually(
        "dropping the handle deleted its parked key",
        LONG,
        || async { h.entries(name).await == 0 },
    )
    .await;
}

/// A contender that appears while the lock is parked gets it promptly (the parked key goes);
/// the parked holder then waits its turn like anyone (no take-back while the contender holds),
/// and gets a greater token. A sticky holder with a contender waiting hands over at release.
pub async fn sticky_contender_gets_parked_lock(h: &dyn Harness) {
    let name = "sticky-contended";
    let (a, b) = (h.client().await, h.client().await);
    let g = a.acquire(name, sticky(h)).await.unwrap();
    let t0 = g.fencing_token();
    g.release().await.unwrap();
    let gb = within(
        "a contender gets a parked lock",
        h.loss_bound(),
        b.acquire(name, opts(h)),
    )
    .await
    .unwrap();
    assert!(gb.fencing_token() > t0);
    assert!(
        a.try_acquire(name, sticky(h)).await.unwrap().is_none(),
        "a sticky re-acquire took the lock back while a contender held it"
    );
    eventually("the parked key is gone", LONG, || async {
        h.entries(name).await == 1
    })
    .await;
    // a waits behind b; both sticky from now on.
    let waiting = tokio::spawn({
        let (a, o) = (a.clone(), sticky(h));
        async move { a.acquire(name, o).await }
    });
    eventually("a queued", LONG, || async { h.entries(name).await == 2 }).await;
    let tb = gb.fencing_token();
    gb.release().await.unwrap();
    let ga = within("a gets it after b", LONG, waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(ga.fencing_token() > tb);
    // A waiter queued while the sticky holder holds: the release hands over instead of parking.
    let waiting = tokio::spawn({
        let (b, o) = (b.clone(), sticky(h));
        async move { b.acquire(name, o).await }
    });
    eventually("b queued", LONG, || async { h.entries(name).await == 2 }).await;
    let ta = ga.fencing_token();
    ga.release().await.unwrap();
    let gb = within(
        "a waiter gets a sticky holder's lock at its release",
        h.loss_bound(),
        waiting,
    )
    .await
    .unwrap()
    .unwrap();
    assert!(gb.fencing_token() > ta);
    assert!(
        a.try_acquire(name, sticky(h)).await.unwrap().is_none(),
        "a sticky holder that handed over took the lock back"
    );
    gb.release().await.unwrap();
    drop((a, b));
    eventually("nothing left", LONG, || async {
        h.entries(name).await == 0
    })
    .await;
}

/// Sticky and plain acquires from several clients race, each task re-acquiring right after its
/// release: never two inside at once, and tokens never go back; an equal token comes only from
/// the client that had it last (a take-back of its own parked key, nobody between).
pub async fn sticky_exclusion_under_races(h: &dyn Harness) {
    let name = "sticky-races";
    let inside = Arc::new(AtomicBool::new(false));
    let last = Arc::new(Mutex::new((0u64, usize::MAX)));
    let entered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for client in 0..3usize {
        let c = h.client().await;
        for task in 0..2usize {
            let (c, inside, last, entered) =
                (c.clone(), inside.clone(), last.clone(), entered.clone());
            // Client 2's second task acquires plainly: a contender that never parks.
            let o = if client == 2 && task == 1 {
                opts(h)
            } else {
                sticky(h)
            };
            tasks.push(tokio::spawn(async move {
                for round in 0..12 {
                    let g = c.acquire(name, o.clone()).await.expect("acquire");
                    assert!(
                        !inside.swap(true, Ordering::SeqCst),
                        "two holders inside at once (client {client}, round {round})"
                    );
                    let token = g.fencing_token();
                    {
                        let mut l = last.lock().unwrap();
                        assert!(
                            token > l.0 || (token == l.0 && client == l.1),
                            "client {client} got token {token} after client {} had {}",
                            l.1,
                            l.0
                        );
                        *l = (token, client);
                    }
                    entered.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    if round % 3 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    assert!(inside.swap(false, Ordering::SeqCst));
                    assert!(!g.is_lost(), "lost while holding: {g:?}");
                    g.release().await.expect("release");
                }
            }));
        }
    }
    for t in tasks {
        within("racing contenders finish", LONG * 3, t)
            .await
            .expect("a contender panicked");
    }
    assert_eq!(entered.load(Ordering::SeqCst), 6 * 12);
}

/// A sticky lock lost (revoked behind its back) is never handed out again once the loss is
/// known: held when lost, its release fails with `Lost`; parked when lost (etcd), a take-back
/// in the moment before the loss is heard reports the loss at once, and none after it. Either
/// way another client gets the lock, and the old holder waits its turn with a greater token.
pub async fn sticky_lost_lock_not_taken_back(h: &dyn Harness) {
    let name = "sticky-lost";
    let (a, b) = (h.client().await, h.client().await);
    // Lost while held.
    let g = a.acquire(name, sticky(h)).await.unwrap();
    h.revoke_holder(name).await;
    within("the holder is told", h.loss_bound(), g.lost()).await;
    let r = g.release().await;
    assert!(matches!(r, Err(Error::Lost { .. })), "{r:?}");
    check_not_taken_back(h, name, &a, &b, None).await;
    if !h.parks_sticky_locks() {
        return;
    }
    // Lost while parked.
    let g = a.acquire(name, sticky(h)).await.unwrap();
    let t0 = g.fencing_token();
    g.release().await.unwrap();
    assert_eq!(h.entries(name).await, 1, "not parked");
    h.revoke_holder(name).await;
    check_not_taken_back(h, name, &a, &b, Some(t0)).await;
}

/// After `a`'s sticky lock `name` was revoked: `b` gets it; `a`'s sticky acquires get nothing
/// while `b` holds (except, once, the parked key `stale` in the moment before its loss is
/// heard, which must then report the loss); then `a` gets it after `b`, with a greater token.
async fn check_not_taken_back(
    h: &dyn Harness,
    name: &str,
    a: &Arc<dyn Lock>,
    b: &Arc<dyn Lock>,
    stale: Option<u64>,
) {
    let gb = within(
        "another client gets a revoked lock",
        h.loss_bound(),
        b.acquire(name, opts(h)),
    )
    .await
    .unwrap();
    let mut stale_seen = 0;
    for i in 0..50 {
        match a.try_acquire(name, sticky(h)).await.unwrap() {
            None => {}
            Some(g) => {
                assert_eq!(
                    Some(g.fencing_token()),
                    stale,
                    "try {i}: a sticky acquire got the lock while another client held it"
                );
                stale_seen += 1;
                assert_eq!(
                    stale_seen, 1,
                    "a lost parked key was handed out again after its loss was reported"
                );
                within(
                    "a stale take-back reports its loss",
                    h.loss_bound(),
                    g.lost(),
                )
                .await;
            }
        }
    }
    let r = a
        .acquire(name, sticky(h).with_max_wait(Duration::from_millis(300)))
        .await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    let tb = gb.fencing_token();
    gb.release().await.unwrap();
    let ga = within("a gets it after b", LONG, a.acquire(name, sticky(h)))
        .await
        .unwrap();
    assert!(ga.fencing_token() > tb);
    drop(ga);
}

/// Sticky `acquire`, `release`, `acquire` (a take-back), `release`, dropped after 1, 2, …
/// polls until it completes; and a sticky `acquire` of a held lock dropped at every poll. After
/// every drop at most the parked key is left, and another client gets the lock promptly.
pub async fn sticky_acquire_cancelled_at_every_poll(h: &dyn Harness) {
    use sync_core::check::{cancel_at_every_poll, Sweep};
    let name = "sticky-every-poll";
    let parked = usize::from(h.parks_sticky_locks());
    let b = h.client().await;
    let check = |polls: usize| async move {
        eventually(
            &format!("a sticky cycle dropped after {polls} polls left more than its parked key"),
            LONG,
            || async { h.entries(name).await <= parked },
        )
        .await;
        let c = h.client().await;
        let g = within(
            &format!("after a drop at poll {polls}, another client gets the lock"),
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
    };
    let sweep = cancel_at_every_poll(
        "sticky acquire + release + take-back + release",
        super::cancel::MAX_POLLS,
        || {
            let (b, o) = (b.clone(), sticky(h));
            async move {
                let g = b.acquire(name, o.clone()).await.expect("acquire");
                let t = g.fencing_token();
                g.release().await.expect("release");
                let g = b.acquire(name, o).await.expect("take back");
                assert!(g.fencing_token() >= t);
                g.release().await.expect("release again");
            }
        },
        check,
    )
    .await;
    assert!(
        matches!(sweep, Sweep::Completed { .. }),
        "a sticky cycle on a free lock never completed: {sweep:?}"
    );
    check(0).await;
    // Contended.
    let a = h.client().await;
    let g = a.acquire(name, opts(h)).await.unwrap();
    let sweep = cancel_at_every_poll(
        "contended sticky acquire",
        super::cancel::MAX_POLLS,
        || {
            let (b, o) = (b.clone(), sticky(h));
            async move { b.acquire(name, o).await }
        },
        |polls| super::cancel::nothing_left(h, name, 1, "a contended sticky acquire", polls),
    )
    .await;
    assert!(
        matches!(sweep, Sweep::Parked { .. }),
        "a sticky acquire of a held lock completed: {sweep:?}"
    );
    g.release().await.unwrap();
    check(0).await;
}
