//! Mutual exclusion, FIFO hand-over, waits and their limits.

use super::*;

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
