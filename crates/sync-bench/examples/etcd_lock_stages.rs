//! Where an uncontended `EtcdLock` acquire + release spends its time against etcd's Lock and
//! Unlock RPCs: each stage timed on its own, the stages taking turns sample by sample, p50 and
//! p90 of each, and the p50 of the first and the last tenth of the samples (a stage whose cost
//! grows with the keys written before it shows there). Needs a cluster (`cargo xtask etcd up`, then source its environment):
//!
//! ```text
//! cargo run --release -p sync-bench --example etcd_lock_stages [samples]
//! ```
//!
//! Stages: our `acquire`; our `release`; the Lock RPC; the Unlock RPC; a raw transaction of the
//! shape of our join (put on a lease with the previous key, read the queue's keys), through
//! the raw client; a raw delete of that key; the same two through our client's retry (its first attempt at the raft leader).
//!
//! Prints figures, asserts nothing: a probe, not the benchmark suite (`cargo xtask bench`).

use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, LockOptions, PutOptions, Txn, TxnOp};
use sync_etcd::{EtcdClient, EtcdConfig, Lease};
use sync_lock::{AcquireOptions, EtcdLock, Lock};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn config() -> EtcdConfig {
    let eps = std::env::var("SYNC_ETCD_ENDPOINTS")
        .expect("SYNC_ETCD_ENDPOINTS: run `cargo xtask etcd up` and source its output");
    EtcdConfig::new(eps.split(',').map(str::to_owned))
        .with_prefix(format!("sync-stages/{:x}", std::process::id()))
        .with_ttl(Duration::from_secs(10))
}

fn join_txn(key: &str, dir: &str, lease: i64) -> Txn {
    Txn::new().and_then([
        TxnOp::put(
            key,
            "pid=1",
            Some(PutOptions::new().with_lease(lease).with_prev_key()),
        ),
        TxnOp::get(dir, Some(GetOptions::new().with_prefix().with_keys_only())),
    ])
}

#[tokio::main]
async fn main() -> Res<()> {
    let samples: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let ours = EtcdLock::connect(config()).await?;
    let engine = EtcdClient::connect(config()).await?;
    let lease = Lease::grant(&engine, Duration::from_secs(10)).await?;
    let id = lease.id();
    let cfg = config();
    let mut raw = Client::connect(cfg.endpoint_urls(), None).await?;
    const NAMES: [&str; 8] = [
        "ours acquire",
        "ours release",
        "Lock RPC",
        "Unlock RPC",
        "raw join txn",
        "raw delete",
        "routed join txn",
        "routed delete",
    ];
    let mut t: Vec<Vec<Duration>> = vec![Vec::new(); NAMES.len()];
    for i in 0..samples + 10 {
        let warm = i < 10;
        let mut keep = |stage: usize, d: Duration| {
            if !warm {
                t[stage].push(d);
            }
        };
        let s = Instant::now();
        let g = ours.acquire("u", AcquireOptions::new()).await?;
        keep(0, s.elapsed());
        let s = Instant::now();
        g.release().await?;
        keep(1, s.elapsed());

        let s = Instant::now();
        let l = raw
            .lock("sync-stages-raw/u", Some(LockOptions::new().with_lease(id)))
            .await?;
        keep(2, s.elapsed());
        let s = Instant::now();
        raw.unlock(l.key().to_vec()).await?;
        keep(3, s.elapsed());

        let key = format!("sync-stages-raw/q/{i}");
        let s = Instant::now();
        raw.txn(join_txn(&key, "sync-stages-raw/q/", id)).await?;
        keep(4, s.elapsed());
        let s = Instant::now();
        raw.delete(key.clone(), None).await?;
        keep(5, s.elapsed());

        let budget = engine.default_budget();
        let s = Instant::now();
        engine
            .retry("probe join", budget, |mut c| {
                let key = key.clone();
                async move { c.txn(join_txn(&key, "sync-stages-raw/q/", id)).await }
            })
            .await?;
        keep(6, s.elapsed());
        let s = Instant::now();
        engine
            .retry("probe delete", budget, |mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await?;
        keep(7, s.elapsed());
    }
    println!(
        "stage            p50 ms   p90 ms   first tenth p50   last tenth p50   \
         ({samples} samples each, stages in turn)"
    );
    let p50 = |d: &[Duration]| {
        let mut d = d.to_vec();
        d.sort_unstable();
        d[(d.len() - 1) / 2].as_secs_f64() * 1e3
    };
    for (name, d) in NAMES.iter().zip(t.iter_mut()) {
        let tenth = (d.len() / 10).max(1);
        let (first, last) = (p50(&d[..tenth]), p50(&d[d.len() - tenth..]));
        d.sort_unstable();
        let at = |p: f64| d[((d.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        println!(
            "{name:<16} {:>7.3}  {:>7.3}  {first:>15.3}  {last:>15.3}",
            at(0.5),
            at(0.9)
        );
    }
    Ok(())
}
