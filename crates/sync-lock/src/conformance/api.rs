//! Input validation and the shapes the API can be used in.

use super::*;

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
