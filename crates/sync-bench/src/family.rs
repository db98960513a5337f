//! The lock family beyond the mutex (semaphore, read-write lock) on etcd, each beside etcd's own
//! Lock RPC in the same run: ours on `EtcdSemaphore`/`EtcdRwLock`, the baseline on
//! `Lock`+`Unlock` with one kept-alive lease per client (callers sharing a lease are one owner
//! to the Lock RPC).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, LockOptions};
use futures::FutureExt;
use sync_etcd::{EtcdClient, Lease};
use sync_lock::{AcquireOptions, EtcdRwLock, EtcdSemaphore, RwLock, Semaphore};

use crate::lock::{config, err, raw_client, run_for};
use crate::stats::{percentile_ms, sample, sample_alternating};
use crate::{Budget, Row, Scenario, Target};

/// Permits of the semaphore scenarios.
const PERMITS: usize = 4;

pub(crate) fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "semaphore.etcd.uncontended",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| semaphore_uncontended(b).boxed(),
            },
        ),
        (
            "semaphore.etcd.16_clients_4_permits",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| semaphore_throughput(b, 16).boxed(),
            },
        ),
        (
            "rwlock.etcd.8_readers_1_writer",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| rwlock_throughput(b, 8).boxed(),
            },
        ),
    ]
}

/// `n` baseline clients, each with its own connection and its own kept-alive lease.
async fn raw_clients(n: usize) -> Result<Vec<(Client, Arc<Lease>)>, String> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let keeper = EtcdClient::connect(config()).await.map_err(err)?;
        let lease = Lease::grant(&keeper, Duration::from_secs(10))
            .await
            .map_err(err)?;
        v.push((raw_client().await?, lease));
    }
    Ok(v)
}

/// The Lock RPC's acquire+release of `name` under `lease`.
async fn raw_lock_unlock(mut c: Client, name: String, lease: i64) -> Result<(), String> {
    let l = c
        .lock(name, Some(LockOptions::new().with_lease(lease)))
        .await
        .map_err(err)?;
    c.unlock(l.key().to_vec()).await.map_err(err).map(|_| ())
}

/// Operations per second of `clients` tasks running `op(i)` in a loop for `d`.
async fn throughput<F, Fut>(d: Duration, clients: usize, op: F) -> Result<f64, String>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..clients)
        .map(|i| {
            let (op, count, stop) = (op.clone(), count.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    op(i).await?;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    run_for(d, &count, &stop, tasks).await
}

async fn semaphore_uncontended(b: Budget) -> Result<Row, String> {
    let ours = EtcdSemaphore::connect(config()).await.map_err(err)?;
    let (raw, lease) = raw_clients(1).await?.remove(0);
    let once = || async {
        let g = ours
            .acquire("su", PERMITS, AcquireOptions::new())
            .await
            .map_err(err)?;
        g.release().await.map_err(err)
    };
    // Warm up both paths (connections, the shared watch, the lease).
    sample(10, once).await?;
    sample(10, || {
        raw_lock_unlock(raw.clone(), "sync-bench-raw/su".into(), lease.id())
    })
    .await?;
    let (mut o, mut r) = (Vec::new(), Vec::new());
    for _ in 0..b.rounds {
        let (ours_round, raw_round) = sample_alternating(b.samples, once, || {
            raw_lock_unlock(raw.clone(), "sync-bench-raw/su".into(), lease.id())
        })
        .await?;
        o.extend(ours_round);
        r.extend(raw_round);
    }
    let (o50, o99) = (percentile_ms(&mut o, 50.0), percentile_ms(&mut o, 99.0));
    let (r50, r99) = (percentile_ms(&mut r, 50.0), percentile_ms(&mut r, 99.0));
    eprintln!(
        "  ours p50 {o50:.3} ms p99 {o99:.3} ms; Lock+Unlock RPC p50 {r50:.3} ms p99 {r99:.3} ms"
    );
    Ok(Row::new(
        "etcd semaphore acquire+release, one client (p50)",
        o50,
        r50,
        "ms",
        Target::AtMost(1.0),
    ))
}

/// `clients` clients on one `PERMITS`-permit semaphore; baseline: the same clients spread over
/// `PERMITS` names through the Lock RPC (the same number of holders at once).
async fn semaphore_throughput(b: Budget, clients: usize) -> Result<Row, String> {
    let mut ours = Vec::with_capacity(clients);
    for _ in 0..clients {
        ours.push(EtcdSemaphore::connect(config()).await.map_err(err)?);
    }
    let ours = Arc::new(ours);
    let raws = Arc::new(raw_clients(clients).await?);
    let (mut best_o, mut best_r) = (0f64, 0f64);
    for _ in 0..b.rounds {
        let s = ours.clone();
        let rate = throughput(b.duration, clients, move |i| {
            let s = s[i].clone();
            async move {
                let g = s
                    .acquire("st", PERMITS, AcquireOptions::new())
                    .await
                    .map_err(err)?;
                g.release().await.map_err(err)
            }
        })
        .await?;
        best_o = best_o.max(rate);
        let r = raws.clone();
        let rate = throughput(b.duration, clients, move |i| {
            let (c, lease) = (r[i].0.clone(), r[i].1.id());
            raw_lock_unlock(c, format!("sync-bench-raw/st{}", i % PERMITS), lease)
        })
        .await?;
        best_r = best_r.max(rate);
    }
    Ok(Row::new(
        &format!("etcd semaphore, {clients} clients on {PERMITS} permits, throughput"),
        best_o,
        best_r,
        "ops/s",
        Target::AtLeast(1.0),
    ))
}

/// `readers` readers and one writer on one name; baseline: the same number of clients on one
/// name through the Lock RPC. Counts reads and writes alike.
async fn rwlock_throughput(b: Budget, readers: usize) -> Result<Row, String> {
    let clients = readers + 1;
    let mut ours = Vec::with_capacity(clients);
    for _ in 0..clients {
        ours.push(EtcdRwLock::connect(config()).await.map_err(err)?);
    }
    let ours = Arc::new(ours);
    let raws = Arc::new(raw_clients(clients).await?);
    let writes = Arc::new(AtomicU64::new(0));
    let (mut best_o, mut best_r) = (0f64, 0f64);
    for _ in 0..b.rounds {
        let (l, w) = (ours.clone(), writes.clone());
        let rate = throughput(b.duration, clients, move |i| {
            let (l, w) = (l[i].clone(), w.clone());
            async move {
                if i == readers {
                    let g = l.write("rw", AcquireOptions::new()).await.map_err(err)?;
                    g.release().await.map_err(err)?;
                    w.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                } else {
                    let g = l.read("rw", AcquireOptions::new()).await.map_err(err)?;
                    g.release().await.map_err(err)
                }
            }
        })
        .await?;
        best_o = best_o.max(rate);
        let r = raws.clone();
        let rate = throughput(b.duration, clients, move |i| {
            let (c, lease) = (r[i].0.clone(), r[i].1.id());
            raw_lock_unlock(c, "sync-bench-raw/rw".into(), lease)
        })
        .await?;
        best_r = best_r.max(rate);
    }
    eprintln!(
        "  ours: {} writes in all rounds (the writer is not starved)",
        writes.load(Ordering::Relaxed)
    );
    Ok(Row::new(
        &format!("etcd rwlock, {readers} readers + 1 writer on 1 name, throughput"),
        best_o,
        best_r,
        "ops/s",
        Target::AtLeast(3.0),
    ))
}
