//! A write that happens only while we hold the lock, and a stale holder being refused.
//!
//! Holder A takes the lock `account-42` and writes a balance with a *fenced* write: an etcd
//! transaction whose condition is A's lock key (its [`Fence`]: key and create revision). Then A
//! stalls past its lease (a GC pause, a partition: here we end its session), B gets the lock
//! with a higher fencing token and writes, and when A wakes up its write is refused: the
//! condition no longer holds, so A cannot overwrite what B wrote. A fencing token alone would
//! need the storage to compare tokens; the fence makes etcd itself the judge.
//!
//! Run it against the cluster of `cargo xtask etcd up`:
//!
//! ```sh
//! eval "$(cargo xtask etcd up)"
//! cargo run -p sync-lock --features etcd --example fenced_write
//! cargo run -p sync-lock --features etcd --example fenced_write -- etcd://127.0.0.1:2379/myapp
//! ```
//!
//! The backend is the first argument, else `SYNC_URL`, else `SYNC_ETCD_ENDPOINTS` (prefix
//! `sync-examples`). Fences exist only on etcd, so `local` is refused. Exits non-zero if any
//! step does not behave as described.

use std::time::Duration;

use sync_etcd::etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use sync_etcd::EtcdClient;
use sync_lock::{AcquireOptions, EtcdConfig, EtcdConnection, EtcdLock, Fence, Lock};

type Error = Box<dyn std::error::Error>;

/// The backend URL: the first argument, else `SYNC_URL`, else the cluster that
/// `cargo xtask etcd up` announces in `SYNC_ETCD_ENDPOINTS`.
fn backend_url() -> Option<String> {
    std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SYNC_URL").ok())
        .or_else(|| {
            let endpoints = std::env::var("SYNC_ETCD_ENDPOINTS").ok()?;
            let hosts: Vec<&str> = endpoints
                .split(',')
                .map(|e| e.trim().trim_start_matches("http://"))
                .collect();
            Some(format!("etcd://{}/sync-examples", hosts.join(",")))
        })
}

/// Writes `value` to `key` only if `fence` still stands (the holder still holds): returns
/// whether it was written. One round trip; etcd decides atomically.
async fn fenced_put(
    client: &mut Client,
    fence: &Fence,
    key: &str,
    value: &str,
) -> Result<bool, Error> {
    let still_holding =
        Compare::create_revision(fence.key.clone(), CompareOp::Equal, fence.create_revision);
    let txn = Txn::new()
        .when([still_holding])
        .and_then([TxnOp::put(key, value, None)]);
    Ok(client.txn(txn).await?.succeeded())
}

async fn read(client: &mut Client, key: &str) -> Result<String, Error> {
    let resp = client.get(key, None).await?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
        .unwrap_or_default())
}

/// Fails the example (exit code 1) with `what` unless `ok`.
fn check(ok: bool, what: &str) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected: {what}").into())
    }
}

/// Prints the error (its message, not its `Debug` form) and exits 1 on failure.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fenced_write: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let url = backend_url().ok_or(
        "no backend: pass etcd://host:port/prefix, or set SYNC_URL or SYNC_ETCD_ENDPOINTS \
         (eval \"$(cargo xtask etcd up)\")",
    )?;
    if !url.starts_with("etcd") {
        return Err(format!("fences exist only on etcd; {url:?} is not an etcd:// URL").into());
    }
    // One connection for the locks and for our own writes (same TLS and credentials).
    let etcd = EtcdConnection::connect(EtcdConfig::from_url(&url)?).await?;
    println!(
        "connected to {} (keys under {:?})",
        etcd.endpoints(),
        etcd.key_root()
    );
    let locks = EtcdLock::new(etcd.clone());
    let mut client = EtcdClient::of(&etcd).raw();
    // Our data lives outside the library's key root.
    let balance = "sync-examples-data/account-42/balance";
    let opts = || AcquireOptions::new().with_max_wait(Duration::from_secs(10));

    // Holder A: its lock is bound to a session (a lease) we can end below.
    let session_a = etcd.session(Duration::from_secs(5)).await?;
    let a = locks
        .with_session(&session_a)
        .acquire("account-42", opts())
        .await?;
    let fence_a = a.fence().ok_or("an etcd guard has a fence")?;
    println!(
        "A holds account-42 (fencing token {}, key {})",
        a.fencing_token(),
        fence_a.key
    );
    let written = fenced_put(&mut client, &fence_a, balance, "100 (written by A)").await?;
    println!(
        "A writes while holding: {}",
        if written { "done" } else { "refused" }
    );
    check(written, "the holder's fenced write was refused")?;

    // A stalls past its lease. Ending its session is what the lease's expiry would do; A's
    // guard is told at once (a live holder would stop writing here).
    session_a.close().await?;
    let reason = tokio::time::timeout(Duration::from_secs(5), a.lost())
        .await
        .map_err(|_| "A's guard was not told of the loss within 5 s")?;
    println!("A's lease ended: lost() fired ({reason}); A, paused, does not notice");

    // B gets the lock next, with a higher token, and writes.
    let b = locks.acquire("account-42", opts()).await?;
    let fence_b = b.fence().ok_or("an etcd guard has a fence")?;
    println!("B holds account-42 (fencing token {})", b.fencing_token());
    check(
        b.fencing_token() > a.fencing_token(),
        "B's token is not above A's",
    )?;
    check(
        fenced_put(&mut client, &fence_b, balance, "70 (written by B)").await?,
        "B's write was refused",
    )?;
    println!("B writes while holding: done");

    // A wakes up and writes with what it believes is still its lock.
    let late = fenced_put(&mut client, &fence_a, balance, "0 (stale write by A)").await?;
    println!(
        "A, waking up, writes with its old fence: {}",
        if late { "done" } else { "refused" }
    );
    check(!late, "a stale holder's write went through")?;
    let now = read(&mut client, balance).await?;
    println!("the balance is {now:?}");
    check(now.starts_with("70"), "B's write was overwritten")?;

    // A's release reports the loss instead of pretending; B releases normally.
    match a.release().await {
        Err(e) => println!("A's release: {e}"),
        Ok(()) => return Err("A's release succeeded after its lock was lost".into()),
    }
    b.release().await?;
    let after = fenced_put(&mut client, &fence_b, balance, "released").await?;
    println!(
        "B writes after its release: {}",
        if after { "done" } else { "refused" }
    );
    check(!after, "a released lock's fence still let a write through")?;

    client.delete(balance, None).await?;
    println!("fenced_write: ok");
    Ok(())
}
