//! Bad input through the public API (issue 10, finding 4): malformed backend URLs and configs,
//! and TTLs and waits that are zero, sub-second or huge. Each is a typed, non-retryable error at
//! once (or a documented saturation), never a panic, a wrapped value or a key left behind.
//! The tests marked `#[ignore]` need the cluster that `cargo xtask test` starts.

use std::time::Duration;

use sync_core::duration::{MAX_TTL, UNLIMITED_WAIT};
use sync_leader::{ElectOptions, Error, Leader, LocalLeader};

use sync_core::check::{bad_ttls, no_panic};

fn assert_invalid_options<T: std::fmt::Debug>(what: &str, r: sync_leader::Result<T>) {
    match r {
        Err(e @ Error::InvalidOptions { .. }) => assert!(!e.is_retryable(), "{what}: {e}"),
        other => panic!("{what}: expected InvalidOptions, got {other:?}"),
    }
}

fn opts(group: &str) -> ElectOptions {
    ElectOptions::new().with_group(group)
}

#[test]
fn huge_max_wait_saturates_to_no_limit() {
    assert_eq!(
        ElectOptions::new().with_max_wait(Duration::MAX).max_wait(),
        None
    );
    assert_eq!(
        ElectOptions::new().with_max_wait(UNLIMITED_WAIT).max_wait(),
        None
    );
    let d = Duration::from_millis(1);
    assert_eq!(ElectOptions::new().with_max_wait(d).max_wait(), Some(d));
}

#[tokio::test]
async fn local_leader_refuses_bad_ttls_and_zero_wait_and_keeps_nothing() {
    let election = LocalLeader::new();
    for ttl in bad_ttls() {
        let e = election.clone();
        let r = no_panic("elect", async move {
            e.elect("c", opts("g").with_ttl(ttl)).await
        })
        .await;
        assert_invalid_options(&format!("elect, ttl {ttl:?}"), r);
    }
    let r = election
        .elect("c", opts("g").with_max_wait(Duration::ZERO))
        .await;
    assert_invalid_options("max_wait 0", r);
    let status = election.status("g");
    assert!(status.leader.is_none() && status.waiting == 0, "{status:?}");

    // The extremes that are valid work.
    let leader = election
        .elect("a", opts("g").with_ttl(MAX_TTL))
        .await
        .expect("the longest TTL etcd allows");
    let e = election.clone();
    let heir =
        tokio::spawn(async move { e.elect("b", opts("g").with_max_wait(Duration::MAX)).await });
    sync_core::check::eventually("the heir queues", Duration::from_secs(5), || {
        let election = election.clone();
        async move { election.status("g").waiting == 1 }
    })
    .await;
    leader.resign().await.unwrap();
    let heir = tokio::time::timeout(Duration::from_secs(5), heir)
        .await
        .expect("the candidate with an unlimited wait is elected")
        .expect("no panic")
        .expect("elected");
    heir.resign().await.unwrap();
    let status = election.status("g");
    assert!(status.leader.is_none() && status.waiting == 0, "{status:?}");
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use std::time::Instant;
    use sync_etcd::testing;
    use sync_leader::{EtcdConfig, EtcdLeader};

    use sync_core::check::{assert_refused_at_once, bad_etcd_configs, BAD_ETCD_URLS};

    fn assert_config_error<T>(what: &str, r: sync_leader::Result<T>, took: Duration) {
        assert_refused_at_once(what, r, took, "Config", |e| {
            matches!(e, Error::Config(_)) && !e.is_retryable()
        });
    }

    #[tokio::test]
    async fn open_refuses_malformed_urls_at_once() {
        for url in BAD_ETCD_URLS {
            let start = Instant::now();
            let r = no_panic(url, sync_leader::open(url)).await;
            assert_config_error(url, r, start.elapsed());
        }
    }

    #[tokio::test]
    async fn connect_refuses_malformed_configs_at_once() {
        for cfg in bad_etcd_configs() {
            let what = format!("{cfg:?}");
            let start = Instant::now();
            let r = no_panic(&what, EtcdLeader::connect(cfg)).await;
            assert_config_error(&what, r, start.elapsed());
        }
    }

    #[tokio::test]
    async fn connect_error_names_the_endpoints_not_an_empty_group() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let cfg = EtcdConfig::new([format!("127.0.0.1:{port}")])
            .with_connect_timeout(Duration::from_millis(500));
        let err = EtcdLeader::connect(cfg).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        assert!(err.is_retryable(), "unreachable is worth retrying: {err:?}");
        assert!(
            msg.contains(&format!("cannot connect to etcd at 127.0.0.1:{port}")),
            "{msg}"
        );
        assert!(!msg.contains("group \"\""), "{msg}");
    }

    #[tokio::test]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn etcd_leader_refuses_bad_ttls_at_once_and_leaves_no_key() {
        let cfg = testing::config("bad-ttl");
        let admin = testing::connect(cfg.clone()).await;
        let election = EtcdLeader::connect(cfg).await.expect("connect");
        let root = admin.keyspace().root().to_owned();
        for ttl in bad_ttls() {
            let e = election.clone();
            let start = Instant::now();
            let r = no_panic("elect", async move {
                e.elect("c", opts("g").with_ttl(ttl)).await
            })
            .await;
            assert_invalid_options(&format!("elect, ttl {ttl:?}"), r);
            assert!(start.elapsed() < Duration::from_millis(100), "ttl {ttl:?}");
        }
        let r = election
            .elect("c", opts("g").with_max_wait(Duration::ZERO))
            .await;
        assert_invalid_options("max_wait 0", r);
        assert_eq!(testing::count_keys(&admin, &root).await, 0);
    }

    #[tokio::test]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn etcd_leader_takes_the_extreme_valid_values() {
        let cfg = testing::config("extreme");
        let admin = testing::connect(cfg.clone()).await;
        let election = EtcdLeader::connect(cfg).await.expect("connect");
        let root = admin.keyspace().root().to_owned();
        // The longest TTL etcd grants: our bound is etcd's.
        let leader = election
            .elect("a", opts("g").with_ttl(MAX_TTL))
            .await
            .expect("etcd grants its longest TTL");
        assert_eq!(leader.ttl(), Some(MAX_TTL));
        let lease = testing::keys_under(&admin, &root).await[0].lease;
        // An unlimited wait queues and is served.
        let e = election.clone();
        let heir =
            tokio::spawn(async move { e.elect("b", opts("g").with_max_wait(Duration::MAX)).await });
        testing::queued(&admin, &admin.keyspace().dir("election", "g"), 2).await;
        leader.resign().await.unwrap();
        let heir = tokio::time::timeout(Duration::from_secs(10), heir)
            .await
            .expect("the candidate with an unlimited wait is elected")
            .expect("no panic")
            .expect("elected");
        heir.resign().await.unwrap();
        // The 285-year lease would outlive the test: revoke it.
        testing::revoke(&admin, lease).await;
        assert_eq!(testing::count_keys(&admin, &root).await, 0);
    }
}
