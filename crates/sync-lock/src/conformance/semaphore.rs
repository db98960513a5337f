//! The semaphore suite (cases prefixed `sem_`) and [`SemHarness`], what the semaphore and
//! read-write lock suites (`semaphore_conformance!`) need from a backend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::{AcquireOptions, Error, RwLock, Semaphore};

/// What the semaphore and rwlock suites need from a backend.
pub trait SemHarness: Send + Sync {
    /// A new semaphore client (for a distributed backend, a separate connection).
    fn semaphore(&self) -> BoxFuture<'_, Arc<dyn Semaphore>>;
    /// A new read-write lock client.
    fn rwlock(&self) -> BoxFuture<'_, Arc<dyn RwLock>>;
    /// How many holders plus waiters the backend records for semaphore `name`.
    fn sem_entries<'a>(&'a self, name: &'a str) -> BoxFuture<'a, usize>;
    /// How many holders plus waiters the backend records for rwlock `name`.
    fn rw_entries<'a>(&'a self, name: &'a str) -> BoxFuture<'a, usize>;
    /// Takes semaphore `name` away from all its holders behind their backs (etcd: revokes
    /// their leases); they must be told through `lost()`.
    fn revoke_sem_holders<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()>;
    /// Makes a holder of one permit of semaphore `name` (of 1 permit) that dies without
    /// releasing it (etcd: a child process killed with SIGKILL). Returns once it is dead.
    fn crash_sem_holder<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, ()>;
    /// How long after a holder's death (with TTL `ttl`) its permit must be free at the latest.
    fn crash_bound(&self, ttl: Duration) -> Duration;
    /// The TTL the suite asks for.
    fn ttl(&self) -> Duration;
}

pub(super) const LONG: Duration = Duration::from_secs(20);

pub(super) fn opts(h: &dyn SemHarness) -> AcquireOptions {
    AcquireOptions::new().with_ttl(h.ttl())
}

async fn sem_entries_are(h: &dyn SemHarness, name: &str, n: usize) {
    let start = Instant::now();
    loop {
        let got = h.sem_entries(name).await;
        if got == n {
            return;
        }
        assert!(
            start.elapsed() < LONG,
            "semaphore {name}: {got} entries, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(super) async fn rw_entries_are(h: &dyn SemHarness, name: &str, n: usize) {
    let start = Instant::now();
    loop {
        let got = h.rw_entries(name).await;
        if got == n {
            return;
        }
        assert!(
            start.elapsed() < LONG,
            "rwlock {name}: {got} entries, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Many clients at once: never more than N hold, and all get through.
pub async fn sem_at_most_n_holders(h: &dyn SemHarness) {
    const N: usize = 3;
    let inside = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let s = h.semaphore().await;
        let (inside, max, o) = (inside.clone(), max.clone(), opts(h));
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let g = s.acquire("pool", N, o.clone()).await.unwrap();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                g.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let max = max.load(Ordering::SeqCst);
    assert!(
        (1..=N).contains(&max),
        "{max} held at once, at most {N} allowed"
    );
    sem_entries_are(h, "pool", 0).await;
}

/// Waiters get permits in the order they asked; a newcomer does not overtake them.
pub async fn sem_fifo_no_barging(h: &dyn SemHarness) {
    let s = h.semaphore().await;
    let a = s.acquire("fifo", 1, opts(h)).await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (s2, o, order) = (h.semaphore().await, opts(h), order.clone());
        tasks.push(tokio::spawn(async move {
            let g = s2.acquire("fifo", 1, o).await.unwrap();
            order.lock().unwrap().push(i);
            g.release().await.unwrap();
        }));
        sem_entries_are(h, "fifo", i + 2).await;
    }
    assert!(s.try_acquire("fifo", 1, opts(h)).await.unwrap().is_none());
    a.release().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    sem_entries_are(h, "fifo", 0).await;
}

/// try_acquire takes a free permit, and refuses when all are taken or someone waits.
pub async fn sem_try_acquire_semantics(h: &dyn SemHarness) {
    let s = h.semaphore().await;
    let a = s
        .try_acquire("try", 2, opts(h))
        .await
        .unwrap()
        .expect("free");
    let b = s
        .try_acquire("try", 2, opts(h))
        .await
        .unwrap()
        .expect("free");
    assert!(s.try_acquire("try", 2, opts(h)).await.unwrap().is_none());
    drop(a);
    sem_entries_are(h, "try", 1).await;
    let c = s
        .try_acquire("try", 2, opts(h))
        .await
        .unwrap()
        .expect("freed");
    drop((b, c));
    sem_entries_are(h, "try", 0).await;
}

/// A max wait that passes is Error::Timeout and leaves nothing behind.
pub async fn sem_wait_timeout_leaves_nothing(h: &dyn SemHarness) {
    let s = h.semaphore().await;
    let a = s.acquire("slow", 1, opts(h)).await.unwrap();
    let err = s
        .acquire("slow", 1, opts(h).with_max_wait(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    sem_entries_are(h, "slow", 1).await;
    a.release().await.unwrap();
    sem_entries_are(h, "slow", 0).await;
}

/// Dropping a guard releases it and hands the permit to the first waiter.
pub async fn sem_drop_releases_and_hands_over(h: &dyn SemHarness) {
    let s = h.semaphore().await;
    let a = s.acquire("drop", 1, opts(h)).await.unwrap();
    let s2 = h.semaphore().await;
    let o = opts(h);
    let waiter =
        tokio::spawn(async move { s2.acquire("drop", 1, o).await.map(|g| g.fencing_token()) });
    sem_entries_are(h, "drop", 2).await;
    let t = a.fencing_token();
    drop(a);
    let t2 = tokio::time::timeout(LONG, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(t2 > t);
    sem_entries_are(h, "drop", 0).await;
}

/// Fencing tokens strictly increase in grant order.
pub async fn sem_fencing_tokens_increase(h: &dyn SemHarness) {
    let s = h.semaphore().await;
    let mut last = 0;
    for _ in 0..5 {
        let g = s.acquire("tokens", 2, opts(h)).await.unwrap();
        assert!(g.fencing_token() > last);
        last = g.fencing_token();
        g.release().await.unwrap();
    }
}

/// Zero permits is Error::InvalidOptions.
pub async fn sem_zero_permits_rejected(h: &dyn SemHarness) {
    let s = h.semaphore().await;
    let e = s.acquire("zero", 0, opts(h)).await.unwrap_err();
    assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
    let e = s.try_acquire("zero", 0, opts(h)).await.unwrap_err();
    assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
    sem_entries_are(h, "zero", 0).await;
}

/// Asking with another N than those there is Error::PermitsMismatch.
pub async fn sem_permits_mismatch(h: &dyn SemHarness) {
    let s = h.semaphore().await;
    let a = s.acquire("n", 2, opts(h)).await.unwrap();
    let e = s.acquire("n", 3, opts(h)).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::PermitsMismatch {
                theirs: 2,
                ours: 3,
                ..
            }
        ),
        "{e:?}"
    );
    let e = s.try_acquire("n", 1, opts(h)).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::PermitsMismatch {
                theirs: 2,
                ours: 1,
                ..
            }
        ),
        "{e:?}"
    );
    a.release().await.unwrap();
    sem_entries_are(h, "n", 0).await;
    // Once nobody is there, another N is fine.
    let b = s.acquire("n", 3, opts(h)).await.unwrap();
    b.release().await.unwrap();
}

/// Bad names and a zero TTL or max wait are typed errors.
pub async fn sem_invalid_input_rejected(h: &dyn SemHarness) {
    let s = h.semaphore().await;
    for name in [String::new(), "x".repeat(crate::MAX_NAME_LEN + 1)] {
        let e = s.acquire(&name, 1, opts(h)).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{name:?}: {e:?}");
    }
    let e = s
        .acquire("ttl", 1, AcquireOptions::new().with_ttl(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
}

/// Semaphores of different names do not interfere.
pub async fn sem_names_do_not_interfere(h: &dyn SemHarness) {
    let s = h.semaphore().await;
    let a = s.acquire("x", 1, opts(h)).await.unwrap();
    let b = s
        .try_acquire("y", 1, opts(h))
        .await
        .unwrap()
        .expect("other name free");
    drop((a, b));
    sem_entries_are(h, "x", 0).await;
    sem_entries_are(h, "y", 0).await;
}

/// Works through `Arc<dyn Semaphore>` and generically.
pub async fn sem_dyn_and_generic_use(h: &dyn SemHarness) {
    async fn generic<S: Semaphore>(s: &S, o: AcquireOptions) -> u64 {
        s.acquire("dyn", 1, o).await.unwrap().fencing_token()
    }
    let s: Arc<dyn Semaphore> = h.semaphore().await;
    assert!(generic(&s, opts(h)).await > 0);
    sem_entries_are(h, "dyn", 0).await;
}

/// `acquire` then `release` of a free permit, dropped after 1, 2, … polls until it completes:
/// after every drop nothing is left.
pub async fn sem_acquire_cancelled_at_every_poll(h: &dyn SemHarness) {
    use sync_core::check::{cancel_at_every_poll, Sweep};
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
    use sync_core::check::{cancel_at_every_poll, Sweep};
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
