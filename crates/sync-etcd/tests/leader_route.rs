//! Requests go first to the raft leader (see `EtcdClient::leader_endpoint`): the route finds the
//! leader, follows it when leadership moves, and never dials a member at an address the user did
//! not configure.

use std::time::{Duration, Instant};

use etcd_client::Client;
use sync_etcd::testing;
use sync_etcd::{EtcdClient, EtcdConfig};

/// The tests here move leadership or depend on it staying put: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Each configured endpoint with its member id, and the leader's id, asked of every member.
async fn members() -> (Vec<(String, u64)>, u64) {
    let mut out = Vec::new();
    let mut leader = 0;
    for ep in testing::endpoints() {
        let mut c = Client::connect([ep.as_str()], None).await.unwrap();
        let status = c.status().await.unwrap();
        out.push((ep, status.header().unwrap().member_id()));
        leader = status.leader();
    }
    (out, leader)
}

fn host_port(url: &str) -> &str {
    url.split_once("://")
        .map_or(url, |(_, r)| r)
        .trim_end_matches('/')
}

/// Waits until `etcd`'s route is `want` (compared as host:port), for at most `limit`.
async fn route_becomes(etcd: &EtcdClient, want: &str, limit: Duration) -> Option<String> {
    let end = Instant::now() + limit;
    loop {
        let now = etcd.leader_endpoint();
        if now.as_deref().map(host_port) == Some(host_port(want)) || Instant::now() > end {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn requests_go_to_the_leader_and_follow_it_when_it_moves() {
    let _serial = SERIAL.lock().await;
    let etcd = testing::connect(testing::config("leader_route")).await;
    let (eps, leader) = members().await;
    let leader_ep = &eps.iter().find(|(_, id)| *id == leader).unwrap().0;
    let found = route_becomes(&etcd, leader_ep, Duration::from_secs(10)).await;
    assert_eq!(
        found.as_deref().map(host_port),
        Some(host_port(leader_ep)),
        "the route should find the leader {leader_ep}"
    );

    // Move leadership to another member; requests keep working throughout, and the route
    // follows within a check interval (5 s) and some slack.
    let (target_ep, target) = eps.iter().find(|(_, id)| *id != leader).unwrap().clone();
    let mut admin = Client::connect([leader_ep.as_str()], None).await.unwrap();
    admin.move_leader(target).await.unwrap();
    let moved = Instant::now();
    let mut raw = etcd.raw();
    loop {
        // Through the library's retrying path: no request fails because the leader moved.
        let key = format!("{}/probe", etcd.keyspace().root());
        etcd.retry("probe", etcd.default_budget(), |mut c| {
            let key = key.clone();
            async move { c.put(key, "x", None).await }
        })
        .await
        .expect("a put while leadership moves");
        if etcd.leader_endpoint().as_deref().map(host_port) == Some(host_port(&target_ep)) {
            break;
        }
        assert!(
            moved.elapsed() < Duration::from_secs(15),
            "the route still says {:?}, 15 s after leadership moved to {target_ep}",
            etcd.leader_endpoint()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = raw
        .delete(
            etcd.keyspace().root(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await;
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn a_leader_at_an_address_not_configured_is_never_dialled() {
    let _serial = SERIAL.lock().await;
    let (eps, leader) = members().await;
    let followers: Vec<String> = eps
        .iter()
        .filter(|(_, id)| *id != leader)
        .map(|(ep, _)| ep.clone())
        .collect();
    let cfg = EtcdConfig::new(followers.clone())
        .with_prefix(testing::unique_prefix("leader_route_unlisted"))
        .with_connect_timeout(Duration::from_secs(10));
    let etcd = testing::connect(cfg).await;
    // The first check runs right after connect; watch the route for a while.
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        // Unless leadership happened to move to one of the configured followers meanwhile.
        let route = etcd.leader_endpoint();
        if let Some(r) = &route {
            assert!(
                followers.iter().any(|f| host_port(f) == host_port(r)),
                "the route dialled {r}, which is not among the configured {followers:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // If leadership moved to a configured member meanwhile, the loop above has checked all
    // there is to check; otherwise nothing may have been dialled.
    if members().await.1 == leader {
        assert_eq!(etcd.leader_endpoint(), None);
    }
}
