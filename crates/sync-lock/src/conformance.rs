//! The conformance suite: the guarantees every lock backend gives, checked the same way.
//!
//! A backend provides a [`Harness`] and runs the whole suite with one macro line:
//!
//! ```text
//! sync_lock::lock_conformance!(local, LocalHarness::default());
//! ```
//!
//! which expands to one `#[tokio::test]` per guarantee inside a module named for the backend
//! (`local::mutual_exclusion_in_process`, …). Extra attributes (such as `#[ignore = "…"]` for
//! tests that need a server) follow the harness expression.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::{AcquireOptions, Error, Lock, LockExt, LockSet, LossReason, MAX_NAME_LEN};

/// What the suite needs from a backend beyond the [`Lock`] trait.
pub trait Harness: Send + Sync {
    /// A new client of the same backend: for a distributed backend a separate connection, as
    /// another process would have.
    fn client(&self) -> BoxFuture<'_, Arc<dyn Lock>>;
    /// Takes `name` away from its current holder behind its back (etcd: revokes the holder's
    /// lease); the holder must be told through `lost()`.
    fn revoke_holder<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()>;
    /// How many holders plus waiters the backend records for `name`.
    fn entries<'a>(&'a self, name: &'a str) -> BoxFuture<'a, usize>;
    /// Makes a holder of `name` that dies without releasing it (etcd: a child process that
    /// acquires it and is killed with SIGKILL). Returns once the holder held it and is dead.
    fn crash_holder<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, ()>;
    /// The TTL the suite asks for.
    fn ttl(&self) -> Duration;
    /// How long after a holder's death (with TTL `ttl`) the lock must be free at the latest.
    fn crash_bound(&self, ttl: Duration) -> Duration;
    /// How long a loss may take to be reported after a revocation.
    fn loss_bound(&self) -> Duration;
}

fn opts(h: &dyn Harness) -> AcquireOptions {
    AcquireOptions::new().with_ttl(h.ttl())
}

use sync_core::check::{eventually, within};

const LONG: Duration = Duration::from_secs(20);

async fn contend(clients: Vec<Arc<dyn Lock>>, name: &str, ttl: Duration, rounds: usize) {
    let inside = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in clients {
        let (inside, entered, name) = (inside.clone(), entered.clone(), name.to_owned());
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                let g = c
                    .acquire(&name, AcquireOptions::new().with_ttl(ttl))
                    .await
                    .expect("acquire");
                assert!(
                    !inside.swap(true, Ordering::SeqCst),
                    "two holders inside the critical section at once"
                );
                entered.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                assert!(inside.swap(false, Ordering::SeqCst));
                assert!(!g.is_lost(), "lost while holding: {:?}", g);
                g.release().await.expect("release");
            }
        }));
    }
    for t in tasks {
        within("contenders finish", LONG * 3, t)
            .await
            .expect("contender panicked");
    }
}

/// Eight tasks sharing one client take turns; never two inside at once.
pub async fn mutual_exclusion_in_process(h: &dyn Harness) {
    let c = h.client().await;
    contend(vec![c; 8], "mutex-in-process", h.ttl(), 6).await;
}

/// Eight clients (separate connections) take turns; never two inside at once.
pub async fn mutual_exclusion_across_clients(h: &dyn Harness) {
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(h.client().await);
    }
    contend(clients, "mutex-across-clients", h.ttl(), 6).await;
}

/// Waiters are served in the order they queued.
pub async fn fifo_order(h: &dyn Harness) {
    let name = "fifo";
    let c = h.client().await;
    let first = c.acquire(name, opts(h)).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..5usize {
        let client = h.client().await;
        let tx = tx.clone();
        let o = opts(h);
        tasks.push(tokio::spawn(async move {
            let g = client.acquire(name, o).await.unwrap();
            tx.send(i).unwrap();
            g.release().await.unwrap();
        }));
        // Queue them one after the other.
        eventually("waiter queued", LONG, || async {
            h.entries(name).await == i + 2
        })
        .await;
    }
    first.release().await.unwrap();
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(within("next waiter served", LONG, rx.recv()).await.unwrap());
    }
    assert_eq!(
        order,
        vec![0, 1, 2, 3, 4],
        "waiters were not served in FIFO order"
    );
    for t in tasks {
        t.await.unwrap();
    }
}

/// `try_acquire` gets a free lock at once and returns `None` for a held one.
pub async fn try_acquire_on_held_lock(h: &dyn Harness) {
    let (a, b) = (h.client().await, h.client().await);
    let g = a
        .try_acquire("try", opts(h))
        .await
        .unwrap()
        .expect("free lock");
    assert!(b.try_acquire("try", opts(h)).await.unwrap().is_none());
    assert!(a.try_acquire("try", opts(h)).await.unwrap().is_none());
    assert_eq!(
        h.entries("try").await,
        1,
        "a failed try_acquire left an entry"
    );
    g.release().await.unwrap();
    let g2 = b
        .try_acquire("try", opts(h))
        .await
        .unwrap()
        .expect("free again");
    g2.release().await.unwrap();
}

/// A wait longer than the maximum fails with `Timeout` and leaves no waiter behind.
pub async fn wait_timeout(h: &dyn Harness) {
    let (a, b) = (h.client().await, h.client().await);
    let g = a.acquire("timeout", opts(h)).await.unwrap();
    let start = Instant::now();
    let max = Duration::from_millis(300);
    let err = b
        .acquire("timeout", opts(h).with_max_wait(max))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(start.elapsed() >= max);
    eventually("timed-out waiter gone", LONG, || async {
        h.entries("timeout").await == 1
    })
    .await;
    g.release().await.unwrap();
    let g = within(
        "lock free after release",
        LONG,
        b.acquire("timeout", opts(h)),
    )
    .await
    .unwrap();
    g.release().await.unwrap();
}

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

/// A released lock can be acquired again, by the same client or another.
pub async fn release_then_reacquire(h: &dyn Harness) {
    let (a, b) = (h.client().await, h.client().await);
    for _ in 0..3 {
        let g = a.acquire("again", opts(h)).await.unwrap();
        g.release().await.unwrap();
        let g = b.acquire("again", opts(h)).await.unwrap();
        g.release().await.unwrap();
    }
    eventually("nothing left", LONG, || async {
        h.entries("again").await == 0
    })
    .await;
}

/// Dropping a guard releases the lock.
pub async fn drop_releases(h: &dyn Harness) {
    let (a, b) = (h.client().await, h.client().await);
    let g = a.acquire("drop", opts(h)).await.unwrap();
    drop(g);
    let g = within("dropped guard released", LONG, b.acquire("drop", opts(h)))
        .await
        .unwrap();
    g.release().await.unwrap();
}

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

/// Names that share a prefix, or differ only by an encoded character, are separate locks.
pub async fn names_do_not_interfere(h: &dyn Harness) {
    let c = h.client().await;
    let names = ["a", "a/b", "ab", "a%2Fb", "a b", "a/", "ä", "a/b/c"];
    let mut guards = Vec::new();
    for n in names {
        guards.push(
            c.try_acquire(n, opts(h))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{n:?} blocked by another name")),
        );
    }
    for (n, g) in names.iter().zip(guards) {
        assert_eq!(g.name(), *n);
        g.release().await.unwrap();
    }
}

/// Empty, oversized and NUL-containing names, and a zero TTL, are typed errors; nothing is left.
pub async fn invalid_input_rejected(h: &dyn Harness) {
    let c = h.client().await;
    let long = "x".repeat(MAX_NAME_LEN + 1);
    for bad in ["", long.as_str(), "a\0b"] {
        let e = c.acquire(bad, opts(h)).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
        let e = c.try_acquire(bad, opts(h)).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
        assert!(!e.is_retryable());
        assert!(e.to_string().len() < 300, "error message too long: {e}");
    }
    let e = c
        .acquire("zero-ttl", AcquireOptions::new().with_ttl(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
    assert_eq!(h.entries("zero-ttl").await, 0);
    // The longest valid name, and non-ASCII names, work.
    let longest = "y".repeat(MAX_NAME_LEN);
    let g = c.acquire(&longest, opts(h)).await.unwrap();
    g.release().await.unwrap();
    let g = c.acquire("名前/ünïcode 🚀", opts(h)).await.unwrap();
    g.release().await.unwrap();
}

async fn generic_hold(l: &impl Lock, name: &str, o: AcquireOptions) -> u64 {
    let g = l.acquire(name, o).await.unwrap();
    let t = g.fencing_token();
    g.release().await.unwrap();
    t
}

/// `Arc<dyn Lock>`, generic code over `impl Lock`, and `LockExt::with_lock` all work.
pub async fn dyn_and_generic_use(h: &dyn Harness) {
    let c: Arc<dyn Lock> = h.client().await;
    let t1 = generic_hold(&c, "dyn", opts(h)).await;
    let boxed: Box<dyn Lock> = Box::new(c.clone());
    let t2 = generic_hold(&boxed, "dyn", opts(h)).await;
    assert!(t2 > t1);
    let out = c
        .with_lock("dyn", opts(h), |token| async move { token * 2 })
        .await
        .unwrap();
    assert!(out > t2 * 2);
    eventually("with_lock released", LONG, || async {
        h.entries("dyn").await == 0
    })
    .await;
}

/// The seed's shape: `acquire(id)` / `release(id)` on one handle.
pub async fn lockset_seed_shape(h: &dyn Harness) {
    let set = LockSet::from_arc(h.client().await).with_options(opts(h));
    let other = h.client().await;
    let token = set.acquire("id").await.unwrap();
    assert!(token > 0);
    assert!(other.try_acquire("id", opts(h)).await.unwrap().is_none());
    let again = set.acquire("id").await.unwrap_err();
    assert!(matches!(again, Error::NotHeld { .. }), "{again:?}");
    assert_eq!(
        set.with_guard("id", |g| g.fencing_token()).await,
        Some(token)
    );
    set.release("id").await.unwrap();
    let e = set.release("id").await.unwrap_err();
    assert!(matches!(e, Error::NotHeld { .. }), "{e:?}");
    let g = other
        .try_acquire("id", opts(h))
        .await
        .unwrap()
        .expect("free");
    g.release().await.unwrap();
}

/// Many different names are held at once without blocking each other.
pub async fn many_names_in_parallel(h: &dyn Harness) {
    let c = h.client().await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let c = c.clone();
        let o = opts(h);
        tasks.push(tokio::spawn(async move {
            c.acquire(&format!("many/{i}"), o).await.unwrap()
        }));
    }
    let mut guards = Vec::new();
    for t in tasks {
        guards.push(within("independent names", LONG, t).await.unwrap());
    }
    let mut tokens: Vec<u64> = guards.iter().map(|g| g.fencing_token()).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 32, "two grants shared a token");
    for g in guards {
        g.release().await.unwrap();
    }
}

/// A released lock goes to the next waiter at once (no polling interval in between).
pub async fn release_hands_over_to_waiter(h: &dyn Harness) {
    let (a, b) = (h.client().await, h.client().await);
    let g = a.acquire("handover", opts(h)).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let waiter = tokio::spawn({
        let o = opts(h);
        async move {
            let g = b.acquire("handover", o).await.unwrap();
            let _ = tx.send(Instant::now());
            g
        }
    });
    eventually("waiter queued", LONG, || async {
        h.entries("handover").await == 2
    })
    .await;
    let released = Instant::now();
    g.release().await.unwrap();
    let got = within("hand-over", LONG, rx).await.unwrap();
    let g2 = waiter.await.unwrap();
    // Generous: this is not a benchmark, only a guard against hand-over by polling/TTL.
    assert!(
        got.duration_since(released) < Duration::from_secs(1),
        "hand-over took {:?}",
        got.duration_since(released)
    );
    g2.release().await.unwrap();
}

/// Expands to one test per guarantee of the suite, in a module named for the backend.
#[macro_export]
macro_rules! lock_conformance {
    ($backend:ident, $make:expr $(, #[$attr:meta])* $(,)?) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance as __suite;
            $crate::__core::conformance_cases!(__suite, $make, [$(#[$attr])*];
                mutual_exclusion_in_process,
                mutual_exclusion_across_clients,
                fifo_order,
                try_acquire_on_held_lock,
                wait_timeout,
                cancelled_acquire_leaves_nothing,
                release_then_reacquire,
                drop_releases,
                crashed_holder_frees_lock,
                fencing_tokens_increase,
                lost_fires_on_revoke,
                held_past_ttl_without_loss,
                names_do_not_interfere,
                invalid_input_rejected,
                dyn_and_generic_use,
                lockset_seed_shape,
                many_names_in_parallel,
                release_hands_over_to_waiter,
                acquire_and_release_cancelled_at_every_poll,
                contended_acquire_cancelled_at_every_poll,
                try_acquire_cancelled_at_every_poll,
                abandoned_acquires_leave_no_ghost,
            );
        }
    };
}

/// The most polls a cancel-at-every-poll sweep may take before it must have completed or parked.
const MAX_POLLS: usize = 2_000;

/// After a dropped operation on `name`: eventually only `held` entries are left (the dropped
/// one's key is gone), and, when the lock is free, a fresh client gets it at once.
async fn nothing_left(h: &dyn Harness, name: &str, held: usize, what: &str, polls: usize) {
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
