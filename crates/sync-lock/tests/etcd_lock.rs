//! etcd-specific lock behaviour: connection errors, URL configuration, key layout, lease use.
//! Tests marked `#[ignore]` need the cluster that `cargo xtask test` starts.

use std::time::{Duration, Instant};

use sync_core::check::eventually;
use sync_etcd::{testing, EtcdClient};
use sync_lock::{AcquireOptions, Error, EtcdConfig, EtcdLock, Lock, LossReason};

async fn setup(test: &str) -> (EtcdLock, EtcdClient, EtcdConfig) {
    let cfg = testing::config(test);
    let admin = testing::connect(cfg.clone()).await;
    let lock = EtcdLock::connect(cfg.clone()).await.expect("connect");
    (lock, admin, cfg)
}

async fn keys_under(admin: &EtcdClient, prefix: &str) -> Vec<(String, i64, i64)> {
    testing::keys_under(admin, prefix)
        .await
        .into_iter()
        .map(|k| (k.key, k.create_revision, k.lease))
        .collect()
}

#[tokio::test]
async fn unreachable_endpoint_is_a_typed_error_naming_it() {
    let cfg = EtcdConfig::new(["127.0.0.1:1"]).with_connect_timeout(Duration::from_millis(500));
    let start = Instant::now();
    let err = EtcdLock::connect(cfg).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        err.to_string()
            .contains("cannot connect to etcd at 127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_urls_and_configs_are_typed_errors() {
    for url in [
        "etcd://",
        "etcd://h:1?ttl=0s",
        "etcd://h:1?nonsense=1",
        "etcds://h:1",
        "mysql://h",
    ] {
        let err = sync_lock::open(url).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{url}: {err:?}");
    }
    let err = EtcdLock::connect(EtcdConfig::new(Vec::<String>::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn open_from_url_and_exclude_across_handles() {
    let eps: Vec<String> = testing::endpoints()
        .iter()
        .map(|e| e.trim_start_matches("http://").to_owned())
        .collect();
    let prefix = testing::unique_prefix("url");
    let url = format!("etcd://{}/{prefix}?ttl=3s", eps.join(","));
    let a = sync_lock::open(&url).await.unwrap();
    let b = sync_lock::open(&url).await.unwrap();
    let g = a.acquire("x", AcquireOptions::new()).await.unwrap();
    assert_eq!(g.ttl(), Some(Duration::from_secs(3)));
    assert!(b
        .try_acquire("x", AcquireOptions::new())
        .await
        .unwrap()
        .is_none());
    g.release().await.unwrap();
    let g = b
        .try_acquire("x", AcquireOptions::new())
        .await
        .unwrap()
        .unwrap();
    g.release().await.unwrap();
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn key_layout_lease_and_cleanup() {
    let (lock, admin, cfg) = setup("layout").await;
    let g1 = lock.acquire("a/b", AcquireOptions::new()).await.unwrap();
    let g2 = lock.acquire("c", AcquireOptions::new()).await.unwrap();
    let keys = keys_under(&admin, &format!("{}/", cfg.prefix)).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    let k1 = keys
        .iter()
        .find(|k| k.0.starts_with(&format!("{}/lock/a%2Fb/", cfg.prefix)))
        .expect("the key of a/b");
    assert_eq!(
        k1.1 as u64,
        g1.fencing_token(),
        "token is the key's create revision"
    );
    assert_ne!(k1.2, 0, "the key is bound to a lease");
    assert!(
        keys.iter().all(|k| k.2 == k1.2),
        "one lease per client and TTL"
    );
    g1.release().await.unwrap();
    g2.release().await.unwrap();
    assert!(keys_under(&admin, &format!("{}/", cfg.prefix))
        .await
        .is_empty());
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn granted_ttl_is_reported() {
    let (lock, _admin, _) = setup("ttl").await;
    let g = lock
        .acquire("t", AcquireOptions::new().with_ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    let ttl = g.ttl().expect("etcd reports a TTL");
    assert!(ttl >= Duration::from_secs(1), "{ttl:?}");
    g.release().await.unwrap();
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn lost_fires_when_key_is_deleted_behind_the_back() {
    let (lock, admin, cfg) = setup("delkey").await;
    let g = lock.acquire("k", AcquireOptions::new()).await.unwrap();
    let mut c = admin.raw();
    c.delete(
        format!("{}/lock/k/", cfg.prefix),
        Some(sync_etcd::etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), g.lost())
        .await
        .expect("lost() after the key was deleted");
    assert_eq!(reason, LossReason::Revoked);
    assert!(matches!(g.release().await, Err(Error::Lost { .. })));
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn waiter_whose_lease_is_revoked_fails_instead_of_succeeding_late() {
    let (a, admin, cfg) = setup("waitlease").await;
    let b = EtcdLock::connect(cfg.clone()).await.unwrap();
    let g = a.acquire("w", AcquireOptions::new()).await.unwrap();
    let waiting = tokio::spawn(async move { b.acquire("w", AcquireOptions::new()).await });
    // Wait for the waiter's key, then revoke its lease.
    let dir = format!("{}/lock/w/", cfg.prefix);
    let lease = testing::queued(&admin, &dir, 2).await[1].lease;
    testing::revoke(&admin, lease).await;
    let res = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiter ends")
        .unwrap();
    assert!(matches!(res, Err(Error::Lost { .. })), "{res:?}");
    assert!(!g.is_lost());
    g.release().await.unwrap();
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn holder_told_of_loss_when_its_keepalive_cannot_reach_etcd() {
    // A client whose only endpoint is a proxy we control: cutting it stops the keepalive.
    let proxy = testing::CutProxy::start().await;
    let cfg = testing::config("cut");
    let lock = EtcdLock::connect(proxy.config(&cfg)).await.unwrap();
    let other = EtcdLock::connect(cfg).await.unwrap();
    let g = lock.acquire("p", AcquireOptions::new()).await.unwrap();
    let ttl = g.ttl().unwrap();
    proxy.cut();
    let cut_at = Instant::now();
    let reason = tokio::time::timeout(ttl * 2, g.lost())
        .await
        .expect("lost() while cut off");
    let told_after = cut_at.elapsed();
    assert!(
        matches!(reason, LossReason::KeepaliveFailed { .. }),
        "{reason:?}"
    );
    assert!(told_after < ttl, "told after {told_after:?}, TTL {ttl:?}");
    // Another client gets the lock only after the server expires the lease: later than the
    // holder was told.
    let g2 = other
        .acquire("p", AcquireOptions::new().with_max_wait(ttl * 3))
        .await
        .unwrap();
    let granted_after = cut_at.elapsed();
    assert!(
        granted_after > told_after,
        "granted {granted_after:?} before the holder was told {told_after:?}"
    );
    g2.release().await.unwrap();
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn acquire_right_after_the_lease_was_revoked_gets_a_fresh_lease() {
    let (lock, admin, cfg) = setup("freshlease").await;
    let g = lock.acquire("a", AcquireOptions::new()).await.unwrap();
    let lease = keys_under(&admin, &format!("{}/", cfg.prefix)).await[0].2;
    testing::revoke(&admin, lease).await;
    // Before the keeper's next keepalive notices, the pooled lease is already gone at the
    // server: the next acquire must not fail for it.
    let g2 = lock
        .acquire("b", AcquireOptions::new())
        .await
        .expect("acquire with a fresh lease");
    let keys = keys_under(&admin, &format!("{}/", cfg.prefix)).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_ne!(keys[0].2, lease, "a fresh lease was granted");
    let reason = tokio::time::timeout(Duration::from_secs(5), g.lost())
        .await
        .expect("the first guard is told of the loss");
    assert!(
        matches!(reason, LossReason::Revoked | LossReason::LeaseExpired),
        "{reason:?}"
    );
    g2.release().await.unwrap();
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn locks_in_a_session_end_with_it_and_refuse_a_ttl_of_their_own() {
    let (lock, admin, _cfg) = setup("lock_session").await;
    let session = lock
        .connection()
        .session(Duration::from_secs(10))
        .await
        .unwrap();
    let in_session = lock.with_session(&session);
    let err = in_session
        .acquire("a", AcquireOptions::new().with_ttl(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidOptions { name, reason } if name == "a" && reason.contains("session")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let a = in_session
        .acquire("a", AcquireOptions::new())
        .await
        .unwrap();
    let b = in_session
        .try_acquire("b", AcquireOptions::new())
        .await
        .unwrap()
        .unwrap();
    // Outside the session, the same names are taken.
    assert!(lock
        .try_acquire("a", AcquireOptions::new())
        .await
        .unwrap()
        .is_none());
    session.close().await.unwrap();
    for g in [&a, &b] {
        let reason = tokio::time::timeout(Duration::from_secs(2), g.lost())
            .await
            .expect("lost after the session closed");
        assert_ne!(reason, LossReason::Released);
    }
    let err = in_session
        .acquire("c", AcquireOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err:?}");
    assert!(keys_under(&admin, admin.keyspace().root()).await.is_empty());
    // The locks outside the session are unaffected.
    let g = lock.acquire("a", AcquireOptions::new()).await.unwrap();
    g.release().await.unwrap();
}

/// A parked sticky key deleted behind its holder's back (by an administrator, say) is not handed
/// out again once the deletion is heard: at most one take-back in the moment before, which then
/// reports the loss; the next acquire makes a new key.
#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn sticky_parked_key_deleted_is_not_taken_back() {
    let (lock, admin, _cfg) = setup("lock_sticky_deleted").await;
    let sticky = AcquireOptions::new().with_sticky(true);
    let g = lock.acquire("a", sticky.clone()).await.unwrap();
    let (t0, fence) = (g.fencing_token(), g.fence().expect("an etcd fence"));
    g.release().await.unwrap();
    let keys = keys_under(&admin, admin.keyspace().root()).await;
    assert_eq!(keys.len(), 1, "not parked: {keys:?}");
    assert_eq!(
        (keys[0].0.as_str(), keys[0].1),
        (fence.key.as_str(), fence.create_revision)
    );
    let mut raw = admin.raw();
    assert_eq!(
        raw.delete(fence.key.clone(), None).await.unwrap().deleted(),
        1
    );
    let mut stale = 0;
    let fresh = loop {
        let g = tokio::time::timeout(Duration::from_secs(5), lock.acquire("a", sticky.clone()))
            .await
            .expect("a sticky acquire of a free lock")
            .unwrap();
        if g.fencing_token() != t0 {
            break g;
        }
        stale += 1;
        assert_eq!(
            stale, 1,
            "the deleted key was handed out again after its loss was heard"
        );
        let reason = tokio::time::timeout(Duration::from_secs(5), g.lost())
            .await
            .expect("a stale take-back reports the deletion");
        assert_eq!(reason, LossReason::Revoked);
    };
    assert!(fresh.fencing_token() > t0);
    fresh.release().await.unwrap();
    let keys = keys_under(&admin, admin.keyspace().root()).await;
    assert_eq!(keys.len(), 1, "the new key is parked: {keys:?}");
    drop(lock);
    eventually(
        "dropping the lock to remove its parked key",
        Duration::from_secs(5),
        || async { keys_under(&admin, admin.keyspace().root()).await.is_empty() },
    )
    .await;
}

/// A sticky key parked in a session goes when the session ends, and is not taken back.
#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn sticky_parked_key_ends_with_its_session() {
    let (lock, admin, _cfg) = setup("lock_sticky_session").await;
    let session = lock
        .connection()
        .session(Duration::from_secs(10))
        .await
        .unwrap();
    let in_session = lock.with_session(&session);
    let sticky = AcquireOptions::new().with_sticky(true);
    let g = in_session.acquire("a", sticky.clone()).await.unwrap();
    let t0 = g.fencing_token();
    g.release().await.unwrap();
    let g = in_session.acquire("a", sticky.clone()).await.unwrap();
    assert_eq!(g.fencing_token(), t0, "not taken back from the parked key");
    g.release().await.unwrap();
    // The handle without the session has its own keys: it waits like anyone.
    assert!(lock
        .try_acquire("a", sticky.clone())
        .await
        .unwrap()
        .is_none());
    // Its try was a contender: the parked key goes, and the next acquire makes a new one.
    eventually(
        "a contender's try to remove the parked key",
        Duration::from_secs(5),
        || async { keys_under(&admin, admin.keyspace().root()).await.is_empty() },
    )
    .await;
    let g = in_session.acquire("a", sticky.clone()).await.unwrap();
    assert!(g.fencing_token() > t0);
    g.release().await.unwrap();
    session.close().await.unwrap();
    let err = in_session.acquire("a", sticky.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err:?}");
    assert!(keys_under(&admin, admin.keyspace().root()).await.is_empty());
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn two_handles_on_one_session_exclude_each_other() {
    // Two handles made apart (not clones) on one connection, both in one session: one lease.
    // Their keys must differ, or the second acquire would take over the first's key and hold
    // the lock beside it.
    let (lock, _admin, _cfg) = setup("lock_two_handles_session").await;
    let connection = lock.connection();
    let session = connection.session(Duration::from_secs(10)).await.unwrap();
    let a = EtcdLock::new(connection.clone()).with_session(&session);
    let b = EtcdLock::new(connection.clone()).with_session(&session);
    for _ in 0..3 {
        let held = a.acquire("shared", AcquireOptions::new()).await.unwrap();
        assert!(
            b.try_acquire("shared", AcquireOptions::new())
                .await
                .unwrap()
                .is_none(),
            "the second handle got a lock the first holds"
        );
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.acquire("shared", AcquireOptions::new()).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the second handle did not wait");
        assert!(!held.is_lost());
        held.release().await.unwrap();
        let next = waiting.await.unwrap().unwrap();
        assert!(!next.is_lost());
        next.release().await.unwrap();
    }
    session.close().await.unwrap();
}
