//! A write to etcd that happens only while we hold the lock: the guard's fence (its key and
//! create revision) is the condition of our own transaction, so a holder that lost the lock
//! (paused, partitioned, its lease expired) cannot overwrite what the next holder wrote.
//!
//! Run against a local cluster:
//!
//! ```sh
//! eval "$(cargo xtask etcd up)"
//! cargo run -p sync-lock --features etcd --example fenced_write
//! ```
//!
//! (`SYNC_ETCD_ENDPOINTS` names the cluster; without it, `127.0.0.1:2379`.)

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use sync_lock::{AcquireOptions, EtcdConfig, EtcdLock, Fence, Lock};

/// Writes `value` to `key` only if `fence` still stands: returns whether it was written.
async fn fenced_put(
    client: &mut Client,
    fence: &Fence,
    key: &str,
    value: &str,
) -> Result<bool, etcd_client::Error> {
    let txn = Txn::new()
        .when([Compare::create_revision(
            fence.key.clone(),
            CompareOp::Equal,
            fence.create_revision,
        )])
        .and_then([TxnOp::put(key, value, None)]);
    Ok(client.txn(txn).await?.succeeded())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints: Vec<String> = std::env::var("SYNC_ETCD_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:2379".into())
        .split(',')
        .map(|e| e.trim_start_matches("http://").to_owned())
        .collect();
    let locks =
        EtcdLock::connect(EtcdConfig::new(endpoints.clone()).with_prefix("example")).await?;
    let mut client = Client::connect(endpoints, None).await?;

    let guard = locks
        .acquire(
            "account-42",
            AcquireOptions::new().with_ttl(Duration::from_secs(5)),
        )
        .await?;
    let fence = guard.fence().expect("etcd guards have a fence");
    println!("holding {} (token {})", fence.key, guard.fencing_token());

    let written = fenced_put(&mut client, &fence, "example/balance/42", "100").await?;
    println!(
        "write while holding: {}",
        if written { "done" } else { "refused" }
    );
    assert!(written);

    guard.release().await?;
    let late = fenced_put(&mut client, &fence, "example/balance/42", "0").await?;
    println!(
        "write after release: {}",
        if late { "done" } else { "refused" }
    );
    assert!(!late, "a released lock's fence must refuse the write");
    Ok(())
}
