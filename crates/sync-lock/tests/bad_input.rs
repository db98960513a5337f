//! Bad input through the public API (issue 10, finding 4): malformed backend URLs and configs,
//! and TTLs and waits that are zero, sub-second or huge. Each is a typed, non-retryable error at
//! once (or a documented saturation), never a panic, a wrapped value or a key left behind.
//! The tests marked `#[ignore]` need the cluster that `cargo xtask test` starts.

use std::time::Duration;

use sync_core::duration::{MAX_TTL, UNLIMITED_WAIT};
use sync_lock::{AcquireOptions, Error, LocalLock, Lock};

use sync_core::check::{bad_ttls, no_panic};

fn assert_invalid_options<T: std::fmt::Debug>(what: &str, r: sync_lock::Result<T>) {
    match r {
        Err(e @ Error::InvalidOptions { .. }) => assert!(!e.is_retryable(), "{what}: {e}"),
        other => panic!("{what}: expected InvalidOptions, got {other:?}"),
    }
}

#[test]
fn huge_max_wait_saturates_to_no_limit() {
    assert_eq!(
        AcquireOptions::new()
            .with_max_wait(Duration::MAX)
            .max_wait(),
        None
    );
    assert_eq!(
        AcquireOptions::new()
            .with_max_wait(UNLIMITED_WAIT)
            .max_wait(),
        None
    );
    let d = Duration::from_millis(1);
    assert_eq!(AcquireOptions::new().with_max_wait(d).max_wait(), Some(d));
}

#[tokio::test]
async fn local_lock_refuses_bad_ttls_and_zero_wait_and_keeps_nothing() {
    let locks = LocalLock::new();
    for ttl in bad_ttls() {
        let l = locks.clone();
        let r = no_panic("acquire", async move {
            l.acquire("t", AcquireOptions::new().with_ttl(ttl)).await
        })
        .await;
        assert_invalid_options(&format!("acquire, ttl {ttl:?}"), r);
        let r = locks
            .try_acquire("t", AcquireOptions::new().with_ttl(ttl))
            .await;
        assert_invalid_options(&format!("try_acquire, ttl {ttl:?}"), r);
    }
    let r = locks
        .acquire("t", AcquireOptions::new().with_max_wait(Duration::ZERO))
        .await;
    assert_invalid_options("max_wait 0", r);
    let status = locks.status("t");
    assert!(!status.held && status.waiters == 0, "{status:?}");

    // The extremes that are valid work.
    let g = locks
        .acquire("t", AcquireOptions::new().with_ttl(MAX_TTL))
        .await
        .expect("the longest TTL etcd allows");
    let l = locks.clone();
    let waiter = tokio::spawn(async move {
        l.acquire("t", AcquireOptions::new().with_max_wait(Duration::MAX))
            .await
    });
    sync_core::check::eventually("the waiter queues", Duration::from_secs(5), || {
        let locks = locks.clone();
        async move { locks.status("t").waiters == 1 }
    })
    .await;
    g.release().await.unwrap();
    let g = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter with an unlimited wait gets the lock")
        .expect("no panic")
        .expect("granted");
    g.release().await.unwrap();
    let status = locks.status("t");
    assert!(!status.held && status.waiters == 0, "{status:?}");
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use std::time::Instant;
    use sync_etcd::testing;
    use sync_lock::{EtcdConfig, EtcdLock};

    use sync_core::check::{assert_refused_at_once, bad_etcd_configs, BAD_ETCD_URLS};

    fn assert_config_error<T>(what: &str, r: sync_lock::Result<T>, took: Duration) {
        assert_refused_at_once(what, r, took, "Config", |e| {
            matches!(e, Error::Config(_)) && !e.is_retryable()
        });
    }

    #[tokio::test]
    async fn open_refuses_malformed_urls_at_once() {
        for url in BAD_ETCD_URLS {
            let start = Instant::now();
            let r = no_panic(url, sync_lock::open(url)).await;
            assert_config_error(url, r, start.elapsed());
        }
    }

    #[tokio::test]
    async fn connect_refuses_malformed_configs_at_once() {
        for cfg in bad_etcd_configs() {
            let what = format!("{cfg:?}");
            let start = Instant::now();
            let r = no_panic(&what, EtcdLock::connect(cfg)).await;
            assert_config_error(&what, r, start.elapsed());
        }
    }

    #[tokio::test]
    async fn connect_error_names_the_endpoints_not_an_empty_lock() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let cfg = EtcdConfig::new([format!("127.0.0.1:{port}")])
            .with_connect_timeout(Duration::from_millis(500));
        let err = EtcdLock::connect(cfg).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        assert!(err.is_retryable(), "unreachable is worth retrying: {err:?}");
        assert!(
            msg.contains(&format!("cannot connect to etcd at 127.0.0.1:{port}")),
            "{msg}"
        );
        assert!(!msg.contains("lock \"\""), "{msg}");
    }

    #[tokio::test]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn etcd_lock_refuses_bad_ttls_at_once_and_leaves_no_key() {
        let cfg = testing::config("bad-ttl");
        let admin = testing::connect(cfg.clone()).await;
        let locks = EtcdLock::connect(cfg).await.expect("connect");
        let root = admin.keyspace().root().to_owned();
        for ttl in bad_ttls() {
            let l = locks.clone();
            let start = Instant::now();
            let r = no_panic("acquire", async move {
                l.acquire("t", AcquireOptions::new().with_ttl(ttl)).await
            })
            .await;
            assert_invalid_options(&format!("acquire, ttl {ttl:?}"), r);
            let l = locks.clone();
            let r = no_panic("try_acquire", async move {
                l.try_acquire("t", AcquireOptions::new().with_ttl(ttl))
                    .await
            })
            .await;
            assert_invalid_options(&format!("try_acquire, ttl {ttl:?}"), r);
            assert!(start.elapsed() < Duration::from_millis(100), "ttl {ttl:?}");
        }
        let r = locks
            .acquire("t", AcquireOptions::new().with_max_wait(Duration::ZERO))
            .await;
        assert_invalid_options("max_wait 0", r);
        assert_eq!(testing::count_keys(&admin, &root).await, 0);
    }

    #[tokio::test]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn etcd_lock_takes_the_extreme_valid_values() {
        let cfg = testing::config("extreme");
        let admin = testing::connect(cfg.clone()).await;
        let locks = EtcdLock::connect(cfg).await.expect("connect");
        let root = admin.keyspace().root().to_owned();
        // The longest TTL etcd grants: our bound is etcd's.
        let g = locks
            .acquire("t", AcquireOptions::new().with_ttl(MAX_TTL))
            .await
            .expect("etcd grants its longest TTL");
        assert_eq!(g.ttl(), Some(MAX_TTL));
        let lease = testing::keys_under(&admin, &root).await[0].lease;
        // An unlimited wait queues and is served.
        let l = locks.clone();
        let waiter = tokio::spawn(async move {
            l.acquire("t", AcquireOptions::new().with_max_wait(Duration::MAX))
                .await
        });
        testing::queued(&admin, &admin.keyspace().dir("lock", "t"), 2).await;
        g.release().await.unwrap();
        let g = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter with an unlimited wait gets the lock")
            .expect("no panic")
            .expect("granted");
        g.release().await.unwrap();
        // The 285-year lease would outlive the test: revoke it.
        testing::revoke(&admin, lease).await;
        assert_eq!(testing::count_keys(&admin, &root).await, 0);
    }
}
