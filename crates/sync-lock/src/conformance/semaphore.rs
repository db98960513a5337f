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
    /// Takes rwlock `name` away from all its holders (readers or a writer) behind their backs
    /// (etcd: revokes their leases, and with them anything else of their clients); they must
    /// be told through `lost()`, and the waiters get it.
    fn revoke_rw_holders<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()>;
    /// Makes a holder of one permit of semaphore `name` (of 1 permit) that dies without
    /// releasing it (etcd: a child process killed with SIGKILL). Returns once it is dead.
    fn crash_sem_holder<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, ()>;
    /// Makes a writer of rwlock `name` that dies without releasing it, as
    /// [`crash_sem_holder`](Self::crash_sem_holder) does. Returns once it is dead.
    fn crash_rw_holder<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, ()>;
    /// How long after a holder's death (with TTL `ttl`) its permit or lock must be free at the
    /// latest.
    fn crash_bound(&self, ttl: Duration) -> Duration;
    /// The TTL the suite asks for.
    fn ttl(&self) -> Duration;
}

pub(super) const LONG: Duration = Duration::from_secs(20);

pub(super) fn opts(h: &dyn SemHarness) -> AcquireOptions {
    AcquireOptions::new().with_ttl(h.ttl())
}

pub(super) async fn sem_entries_are(h: &dyn SemHarness, name: &str, n: usize) {
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

/// A count other than the one of those holding and waiting, asked by another client, is
/// `Error::PermitsMismatch` from `acquire` and `try_acquire`, and leaves no entry behind; the
/// count stays fixed while anyone is there, and is free again once nobody is.
pub async fn sem_permits_mismatch_across_clients(h: &dyn SemHarness) {
    let name = "n-clients";
    let (a, b, c) = (
        h.semaphore().await,
        h.semaphore().await,
        h.semaphore().await,
    );
    let holder = a.acquire(name, 1, opts(h)).await.unwrap();
    let o = opts(h);
    let waiter = tokio::spawn(async move { b.acquire(name, 1, o).await.unwrap() });
    sem_entries_are(h, name, 2).await;
    let mismatch = |e: Error, ours: usize| {
        assert!(
            matches!(e, Error::PermitsMismatch { ref name, theirs: 1, ours: o } if name == "n-clients" && o == ours),
            "{e:?}"
        );
        assert!(!e.is_retryable(), "{e}");
    };
    mismatch(c.acquire(name, 2, opts(h)).await.unwrap_err(), 2);
    mismatch(c.try_acquire(name, 3, opts(h)).await.unwrap_err(), 3);
    sem_entries_are(h, name, 2).await;
    holder.release().await.unwrap();
    let next = tokio::time::timeout(LONG, waiter).await.unwrap().unwrap();
    // Only the former waiter is there now: the count is still its.
    mismatch(c.acquire(name, 2, opts(h)).await.unwrap_err(), 2);
    sem_entries_are(h, name, 1).await;
    next.release().await.unwrap();
    sem_entries_are(h, name, 0).await;
    let g = c.acquire(name, 2, opts(h)).await.unwrap();
    g.release().await.unwrap();
    sem_entries_are(h, name, 0).await;
}

/// An explicit `release()` gives its permit at once to the first waiter (on another client),
/// not after a TTL or a poll; the other holder keeps its permit.
pub async fn sem_release_hands_over_to_waiter(h: &dyn SemHarness) {
    let name = "release";
    let (a, b) = (h.semaphore().await, h.semaphore().await);
    let first = a.acquire(name, 2, opts(h)).await.unwrap();
    let second = a.acquire(name, 2, opts(h)).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let o = opts(h);
    let waiter = tokio::spawn(async move {
        let g = b.acquire(name, 2, o).await.unwrap();
        let _ = tx.send(Instant::now());
        g
    });
    sem_entries_are(h, name, 3).await;
    let released = Instant::now();
    first.release().await.unwrap();
    let got = tokio::time::timeout(LONG, rx).await.unwrap().unwrap();
    // Generous: not a benchmark, only a guard against a hand-over by polling or by the TTL.
    let took = got.duration_since(released);
    assert!(took < Duration::from_secs(1), "hand-over took {took:?}");
    let third = waiter.await.unwrap();
    assert!(!second.is_lost());
    sem_entries_are(h, name, 2).await;
    drop((second, third));
    sem_entries_are(h, name, 0).await;
}
