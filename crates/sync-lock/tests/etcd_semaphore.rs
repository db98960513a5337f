//! etcd-specific semaphore and read-write lock behaviour: key layout, the permit count fixed by
//! those in the queue, fences. The shared semantics are in the conformance suites.

use std::time::Duration;

use sync_etcd::testing::{self, WipeOnDrop};
use sync_lock::{
    AcquireOptions, Error, EtcdConfig, EtcdRwLock, EtcdSemaphore, Lock, RwLock, Semaphore,
};

fn opts() -> AcquireOptions {
    AcquireOptions::new().with_ttl(Duration::from_secs(3))
}

async fn setup(test: &str) -> (EtcdConfig, sync_etcd::EtcdClient, WipeOnDrop) {
    let cfg = testing::config(test);
    let admin = testing::connect(cfg.clone()).await;
    (cfg, admin.clone(), WipeOnDrop(admin))
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn permit_keys_carry_the_count_and_a_mismatch_is_typed_and_leaves_nothing() {
    let (cfg, admin, _wipe) = setup("sem_layout").await;
    let sem = EtcdSemaphore::connect(cfg).await.unwrap();
    let a = sem.acquire("pool", 2, opts()).await.unwrap();
    let keys = testing::keys_under(&admin, &admin.keyspace().dir("semaphore", "pool")).await;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].key.contains("/p2-"), "{}", keys[0].key);
    let err = sem.acquire("pool", 3, opts()).await.unwrap_err();
    assert!(
        matches!(err, Error::PermitsMismatch { ref name, theirs: 2, ours: 3 } if name == "pool"),
        "{err:?}"
    );
    let err = sem.try_acquire("pool", 1, opts()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::PermitsMismatch {
                theirs: 2,
                ours: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        testing::count_keys(&admin, &admin.keyspace().dir("semaphore", "pool")).await,
        1
    );
    let err = sem.acquire("pool", 0, opts()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err:?}");
    // Once everyone left, the count is free again.
    a.release().await.unwrap();
    let b = sem.acquire("pool", 5, opts()).await.unwrap();
    b.release().await.unwrap();
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn the_fence_names_the_holders_key_and_guards_a_write_of_ones_own() {
    use sync_etcd::etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let (cfg, admin, _wipe) = setup("fence").await;
    let locks = sync_lock::EtcdLock::connect(cfg.clone()).await.unwrap();
    let g = locks.acquire("account", opts()).await.unwrap();
    let fence = g.fence().expect("etcd guards have a fence");
    assert_eq!(fence.create_revision as u64, g.fencing_token());
    assert!(fence
        .key
        .starts_with(&admin.keyspace().dir("lock", "account")));
    let write = |value: &'static str| {
        let (admin, fence) = (admin.clone(), fence.clone());
        async move {
            let mut c = admin.raw();
            let txn = Txn::new()
                .when([Compare::create_revision(
                    fence.key.clone(),
                    CompareOp::Equal,
                    fence.create_revision,
                )])
                .and_then([TxnOp::put(
                    format!("{}balance", admin.keyspace().root()),
                    value,
                    None,
                )]);
            c.txn(txn).await.unwrap().succeeded()
        }
    };
    assert!(write("1").await, "written while held");
    g.release().await.unwrap();
    assert!(!write("2").await, "refused once released");
    let sem = EtcdSemaphore::connect(cfg.clone()).await.unwrap();
    let p = sem.acquire("s", 2, opts()).await.unwrap();
    assert_eq!(p.fence().unwrap().create_revision as u64, p.fencing_token());
    let rw = EtcdRwLock::connect(cfg).await.unwrap();
    let r = rw.read("r", opts()).await.unwrap();
    assert!(r.fence().unwrap().key.contains("/r-"));
    let local = sync_lock::LocalLock::new();
    assert!(local.acquire("x", opts()).await.unwrap().fence().is_none());
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn a_reader_behind_a_waiting_writer_waits_for_it() {
    let (cfg, admin, _wipe) = setup("rw_order").await;
    let rw = EtcdRwLock::connect(cfg).await.unwrap();
    let r1 = rw.read("doc", opts()).await.unwrap();
    let first = r1.fencing_token();
    let w = tokio::spawn({
        let rw = rw.clone();
        async move { rw.write("doc", opts()).await }
    });
    testing::queued(&admin, &admin.keyspace().dir("rwlock", "doc"), 2).await;
    assert!(
        rw.try_read("doc", opts()).await.unwrap().is_none(),
        "a writer waits ahead"
    );
    let r2 = tokio::spawn({
        let rw = rw.clone();
        async move { rw.read("doc", opts()).await }
    });
    testing::queued(&admin, &admin.keyspace().dir("rwlock", "doc"), 3).await;
    r1.release().await.unwrap();
    let w = tokio::time::timeout(Duration::from_secs(5), w)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!r2.is_finished(), "the second reader waits for the writer");
    w.release().await.unwrap();
    let r2 = tokio::time::timeout(Duration::from_secs(5), r2)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(r2.fencing_token() > first);
    r2.release().await.unwrap();
}

/// A wait that outlives its lease fails with `Lost` and never holds late (a known pitfall of
/// etcd recipes): the lease of a reader waiting behind a writer, and of a permit waiter, is
/// revoked while it waits; the holder is untouched and nothing of the waiter is left.
#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn a_waiter_whose_lease_ends_fails_with_lost_and_never_holds_late() {
    let (cfg, admin, _wipe) = setup("wait_lost").await;
    let rw_dir = admin.keyspace().dir("rwlock", "doc");
    let sem_dir = admin.keyspace().dir("semaphore", "pool");
    let (a, b) = (
        EtcdRwLock::connect(cfg.clone()).await.unwrap(),
        EtcdRwLock::connect(cfg.clone()).await.unwrap(),
    );
    let (s1, s2) = (
        EtcdSemaphore::connect(cfg.clone()).await.unwrap(),
        EtcdSemaphore::connect(cfg).await.unwrap(),
    );
    let w = a.write("doc", opts()).await.unwrap();
    let p = s1.acquire("pool", 1, opts()).await.unwrap();
    let reader = tokio::spawn(async move { b.read("doc", opts()).await });
    let waiter = tokio::spawn(async move { s2.acquire("pool", 1, opts()).await });
    for (dir, task) in [(&rw_dir, reader), (&sem_dir, waiter)] {
        let keys = testing::queued(&admin, dir, 2).await;
        testing::revoke(&admin, keys[1].lease).await;
        let r = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the waiter is told within 5 s")
            .unwrap();
        assert!(matches!(r, Err(Error::Lost { .. })), "{dir}: {r:?}");
        assert_eq!(testing::keys_under(&admin, dir).await, keys[..1]);
    }
    assert!(!w.is_lost() && !p.is_lost());
    w.release().await.unwrap();
    p.release().await.unwrap();
    assert_eq!(testing::count_keys(&admin, &rw_dir).await, 0);
    assert_eq!(testing::count_keys(&admin, &sem_dir).await, 0);
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn open_semaphore_and_rwlock_from_a_url_share_across_handles() {
    let eps: Vec<String> = testing::endpoints()
        .iter()
        .map(|e| e.trim_start_matches("http://").to_owned())
        .collect();
    let prefix = testing::unique_prefix("url_family");
    let url = format!("etcd://{}/{prefix}?ttl=3s", eps.join(","));
    let (s1, s2) = (
        sync_lock::open_semaphore(&url).await.unwrap(),
        sync_lock::open_semaphore(&url).await.unwrap(),
    );
    let p1 = s1.acquire("pool", 2, AcquireOptions::new()).await.unwrap();
    assert_eq!(p1.ttl(), Some(Duration::from_secs(3)));
    let p2 = s2
        .try_acquire("pool", 2, AcquireOptions::new())
        .await
        .unwrap()
        .expect("a second permit");
    assert!(s1
        .try_acquire("pool", 2, AcquireOptions::new())
        .await
        .unwrap()
        .is_none());
    p1.release().await.unwrap();
    p2.release().await.unwrap();

    let (r1, r2) = (
        sync_lock::open_rwlock(&url).await.unwrap(),
        sync_lock::open_rwlock(&url).await.unwrap(),
    );
    let a = r1.read("doc", AcquireOptions::new()).await.unwrap();
    let b = r2.read("doc", AcquireOptions::new()).await.unwrap();
    assert!(r2
        .try_write("doc", AcquireOptions::new())
        .await
        .unwrap()
        .is_none());
    a.release().await.unwrap();
    b.release().await.unwrap();
    let w = r2
        .try_write("doc", AcquireOptions::new())
        .await
        .unwrap()
        .expect("free after the readers");
    w.release().await.unwrap();
}
