//! etcd-specific election behaviour: connection errors, URL configuration, key layout, lease use,
//! loss while cut off from the cluster, and observers across disconnects and compaction.
//! Tests marked `#[ignore]` need the cluster that `cargo xtask test` starts.

use std::time::{Duration, Instant};

use futures::StreamExt;
use sync_etcd::etcd_client::{CompactionOptions, GetOptions};
use sync_etcd::{testing, EtcdClient};
use sync_leader::{
    ElectOptions, Error, EtcdConfig, EtcdLeader, Leader, LeaderInfo, LeaderStream, LossReason,
};

const LONG: Duration = Duration::from_secs(20);

async fn setup(test: &str) -> (EtcdLeader, EtcdClient, EtcdConfig) {
    let cfg = testing::config(test);
    let admin = testing::connect(cfg.clone()).await;
    let election = EtcdLeader::connect(cfg.clone()).await.expect("connect");
    (election, admin, cfg)
}

/// (key, create revision, lease, value) of every key under `prefix`.
async fn keys_under(admin: &EtcdClient, prefix: &str) -> Vec<(String, i64, i64, Vec<u8>)> {
    testing::keys_under(admin, prefix)
        .await
        .into_iter()
        .map(|k| (k.key, k.create_revision, k.lease, k.value))
        .collect()
}

async fn next_state(o: &mut LeaderStream, what: &str) -> Option<LeaderInfo> {
    tokio::time::timeout(LONG, o.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
        .unwrap_or_else(|| panic!("the observer ended while waiting for: {what}"))
}

#[tokio::test]
async fn unreachable_endpoint_is_a_typed_error_naming_it() {
    let cfg = EtcdConfig::new(["127.0.0.1:1"]).with_connect_timeout(Duration::from_millis(500));
    let start = Instant::now();
    let err = EtcdLeader::connect(cfg).await.unwrap_err();
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
        let err = sync_leader::open(url).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{url}: {err:?}");
    }
    let err = EtcdLeader::connect(EtcdConfig::new(Vec::<String>::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn open_from_url_and_one_leader_across_handles() {
    let eps: Vec<String> = testing::endpoints()
        .iter()
        .map(|e| e.trim_start_matches("http://").to_owned())
        .collect();
    let prefix = testing::unique_prefix("leader-url");
    let url = format!("etcd://{}/{prefix}?ttl=3s", eps.join(","));
    let a = sync_leader::open(&url).await.unwrap();
    let b = sync_leader::open(&url).await.unwrap();
    let e = a.elect("a", ElectOptions::new()).await.unwrap();
    assert_eq!(e.ttl(), Some(Duration::from_secs(3)));
    let err = b
        .elect(
            "b",
            ElectOptions::new().with_max_wait(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(
        b.leader(sync_leader::DEFAULT_GROUP)
            .await
            .unwrap()
            .unwrap()
            .id,
        "a"
    );
    e.resign().await.unwrap();
    let e = b.elect("b", ElectOptions::new()).await.unwrap();
    e.resign().await.unwrap();
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn key_layout_term_lease_and_cleanup() {
    let (election, admin, cfg) = setup("leader-layout").await;
    let e1 = election
        .elect(
            "node 1",
            ElectOptions::new().with_group("a/b").with_value("addr"),
        )
        .await
        .unwrap();
    let e2 = election
        .elect("n2", ElectOptions::new().with_group("c"))
        .await
        .unwrap();
    let keys = keys_under(&admin, &format!("{}/", cfg.prefix)).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    let k1 = keys
        .iter()
        .find(|k| k.0.starts_with(&format!("{}/election/a%2Fb/", cfg.prefix)))
        .expect("the key of group a/b");
    assert_eq!(
        k1.1 as u64,
        e1.term(),
        "the term is the key's create revision"
    );
    assert_ne!(k1.2, 0, "the key is bound to a lease");
    assert_eq!(
        k1.3, b"node 1\0addr",
        "the value is the id, a NUL, the value"
    );
    assert!(
        keys.iter().all(|k| k.2 == k1.2),
        "one lease per client and TTL"
    );
    e1.resign().await.unwrap();
    e2.resign().await.unwrap();
    assert!(keys_under(&admin, &format!("{}/", cfg.prefix))
        .await
        .is_empty());
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn granted_ttl_is_reported() {
    let (election, _admin, _) = setup("leader-ttl").await;
    let e = election
        .elect("t", ElectOptions::new().with_ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    let ttl = e.ttl().expect("etcd reports a TTL");
    assert!(ttl >= Duration::from_secs(1), "{ttl:?}");
    e.resign().await.unwrap();
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn campaign_whose_lease_is_revoked_fails_instead_of_succeeding_late() {
    let (a, admin, cfg) = setup("leader-waitlease").await;
    let b = EtcdLeader::connect(cfg.clone()).await.unwrap();
    let e = a.elect("a", ElectOptions::new()).await.unwrap();
    let campaign = tokio::spawn(async move { b.elect("b", ElectOptions::new()).await });
    let dir = admin.keyspace().dir("election", sync_leader::DEFAULT_GROUP);
    let lease = testing::queued(&admin, &dir, 2).await[1].lease;
    admin
        .retry("revoke", admin.default_budget(), |mut c| async move {
            c.lease_revoke(lease).await.map(|_| ())
        })
        .await
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), campaign)
        .await
        .expect("the campaign ends")
        .unwrap();
    assert!(matches!(res, Err(Error::Lost { .. })), "{res:?}");
    assert!(e.is_leader());
    e.resign().await.unwrap();
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn leader_cut_off_is_told_before_another_is_elected() {
    let proxy = testing::CutProxy::start().await;
    let cfg = testing::config("leader-cut");
    let cut_off = EtcdLeader::connect(proxy.config(&cfg)).await.unwrap();
    let other = EtcdLeader::connect(cfg).await.unwrap();
    let e = cut_off.elect("far", ElectOptions::new()).await.unwrap();
    let ttl = e.ttl().unwrap();
    let heir = tokio::spawn(async move {
        let e = other
            .elect("near", ElectOptions::new().with_max_wait(ttl * 3))
            .await;
        (e, Instant::now())
    });
    proxy.cut();
    let cut_at = Instant::now();
    let reason = tokio::time::timeout(ttl * 2, e.revoked())
        .await
        .expect("revoked() while cut off");
    let told_at = Instant::now();
    assert!(
        matches!(reason, LossReason::KeepaliveFailed { .. }),
        "{reason:?}"
    );
    assert!(
        told_at - cut_at < ttl,
        "told after {:?}, TTL {ttl:?}",
        told_at - cut_at
    );
    let (heir, elected_at) = heir.await.unwrap();
    let heir = heir.expect("the other candidate is elected once the lease expires");
    assert!(
        elected_at > told_at,
        "elected {:?} after the cut, before the old leader was told ({:?})",
        elected_at - cut_at,
        told_at - cut_at
    );
    assert!(heir.term() > e.term());
    heir.resign().await.unwrap();
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn observer_misses_nothing_across_a_disconnect_and_recovers_from_compaction() {
    let proxy = testing::CutProxy::start().await;
    let cfg = testing::config("leader-observe-cut");
    let admin = testing::connect(cfg.clone()).await;
    let watcher = EtcdLeader::connect(proxy.config(&cfg)).await.unwrap();
    let [a, b, c] = [
        EtcdLeader::connect(cfg.clone()).await.unwrap(),
        EtcdLeader::connect(cfg.clone()).await.unwrap(),
        EtcdLeader::connect(cfg.clone()).await.unwrap(),
    ];
    let group = "g";
    let o = || ElectOptions::new().with_group(group);
    let mut seen = watcher.observe(group).await.unwrap();
    assert_eq!(next_state(&mut seen, "initial").await, None);
    let ea = a.elect("a", o()).await.unwrap();
    assert_eq!(
        next_state(&mut seen, "a").await.map(|l| l.id),
        Some("a".into())
    );

    // Cut the observer off, change leaders three times, then let it back: it reports every
    // change, in order (its watch resumes from the revision after the last it delivered).
    proxy.cut();
    let eb = tokio::spawn({
        let o = o();
        async move { b.elect("b", o).await.unwrap() }
    });
    let dir = admin.keyspace().dir("election", group);
    testing::queued(&admin, &dir, 2).await;
    ea.resign().await.unwrap();
    let eb = eb.await.unwrap();
    let b_term = eb.term();
    eb.resign().await.unwrap();
    let ec = c.elect("c", o()).await.unwrap();
    proxy.restore();
    let mut after = Vec::new();
    for what in ["b", "nobody", "c"] {
        after.push(next_state(&mut seen, what).await.map(|l| (l.id, l.term)));
    }
    assert_eq!(
        after,
        vec![
            Some(("b".to_owned(), b_term)),
            None,
            Some(("c".to_owned(), ec.term()))
        ]
    );

    // Again, but etcd compacts the missed revisions meanwhile: the observer cannot report what
    // was compacted away; it reads the group again and reports the state it finds.
    proxy.cut();
    ec.resign().await.unwrap();
    let ea = a.elect("a2", o()).await.unwrap();
    admin
        .retry("compact", admin.default_budget(), |mut c| {
            let dir = dir.clone();
            async move {
                let r = c
                    .get(dir, Some(GetOptions::new().with_count_only()))
                    .await?;
                let rev = r.header().map(|h| h.revision()).unwrap_or(0);
                c.compact(rev, Some(CompactionOptions::new().with_physical()))
                    .await
                    .map(|_| ())
            }
        })
        .await
        .unwrap();
    proxy.restore();
    let mut last = next_state(&mut seen, "the state after compaction").await;
    while last.as_ref().map(|l| l.id.as_str()) != Some("a2") {
        last = next_state(&mut seen, "a2 leads").await;
    }
    assert_eq!(last.map(|l| l.term), Some(ea.term()));
    assert_eq!(
        watcher.leader(group).await.unwrap().map(|l| l.term),
        Some(ea.term())
    );
    ea.resign().await.unwrap();
    assert_eq!(next_state(&mut seen, "nobody after compaction").await, None);
    testing::wipe(&admin).await;
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn candidacies_in_a_session_end_with_it_and_refuse_a_ttl_of_their_own() {
    let (election, admin, _cfg) = setup("leader_session").await;
    let session = election
        .connection()
        .session(Duration::from_secs(10))
        .await
        .unwrap();
    let in_session = election.with_session(&session);
    let err = in_session
        .elect(
            "n1",
            ElectOptions::new()
                .with_group("g")
                .with_ttl(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidOptions { group, reason } if group == "g" && reason.contains("session")),
        "{err:?}"
    );
    let elected = in_session
        .elect("n1", ElectOptions::new().with_group("g"))
        .await
        .unwrap();
    assert_eq!(
        election.leader("g").await.unwrap().map(|l| l.id),
        Some("n1".to_owned())
    );
    session.close().await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(2), elected.revoked())
        .await
        .expect("revoked after the session closed");
    assert_ne!(reason, LossReason::Released);
    assert_eq!(election.leader("g").await.unwrap(), None);
    assert!(keys_under(&admin, admin.keyspace().root()).await.is_empty());
}
