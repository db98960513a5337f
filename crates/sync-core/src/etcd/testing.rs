//! Helpers for tests that run against the real etcd started by `cargo xtask test`.
//!
//! The harness exports `SYNC_ETCD_ENDPOINTS`. Tests that need etcd are `#[ignore]`d so that a
//! plain `cargo test` lists them as not run; the harness runs them with `--include-ignored`, and
//! then they fail loudly, never skip, if the variable is missing or etcd does not answer.

use std::time::Duration;

use super::{EtcdClient, EtcdConfig};

/// The variable the harness sets: comma-separated endpoints.
pub const ENDPOINTS_VAR: &str = "SYNC_ETCD_ENDPOINTS";

/// The endpoints from [`ENDPOINTS_VAR`]. Panics with instructions if it is not set: a test that
/// asked for etcd must not pass without it.
pub fn endpoints() -> Vec<String> {
    match std::env::var(ENDPOINTS_VAR) {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_owned()).collect(),
        _ => panic!(
            "{ENDPOINTS_VAR} is not set: this test needs a real etcd. Run `cargo xtask test`, or \
             `cargo xtask etcd up` and export the variables it prints."
        ),
    }
}

/// A fresh, random key prefix, so tests never see each other's keys.
pub fn unique_prefix(test: &str) -> String {
    format!("sync-test/{test}-{:016x}", rand::random::<u64>())
}

/// A config for the harness's cluster under a fresh prefix, with a short TTL.
pub fn config(test: &str) -> EtcdConfig {
    EtcdConfig::new(endpoints())
        .with_prefix(unique_prefix(test))
        .with_ttl(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_secs(10))
}

/// Connects to the harness's cluster; panics (fails the test) with the reason if it cannot.
pub async fn connect(cfg: EtcdConfig) -> EtcdClient {
    match EtcdClient::connect(cfg.clone()).await {
        Ok(c) => c,
        Err(e) => panic!(
            "{ENDPOINTS_VAR} says etcd is at {:?}, but connecting failed: {e}",
            cfg.endpoints
        ),
    }
}

/// How many keys start with `under` (retrying transient errors, as the library does).
pub async fn count_keys(client: &EtcdClient, under: &str) -> usize {
    let under = under.to_owned();
    let r = client
        .retry("count keys", client.default_budget(), |mut c| {
            let under = under.clone();
            async move {
                c.get(
                    under,
                    Some(
                        etcd_client::GetOptions::new()
                            .with_prefix()
                            .with_count_only(),
                    ),
                )
                .await
            }
        })
        .await
        .unwrap_or_else(|e| panic!("counting keys failed: {e}"));
    r.count() as usize
}

/// Deletes every key under the client's prefix.
pub async fn wipe(client: &EtcdClient) {
    let root = client.keyspace().root().to_owned();
    let _ = client
        .retry("wipe", client.default_budget(), |mut c| {
            let root = root.clone();
            async move {
                c.delete(root, Some(etcd_client::DeleteOptions::new().with_prefix()))
                    .await
            }
        })
        .await;
}
