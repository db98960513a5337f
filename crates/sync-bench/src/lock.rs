//! Lock scenarios of the brief's table, each beside its baseline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, LockOptions, WatchOptions};
use futures::FutureExt;
use sync_etcd::{EtcdClient, EtcdConfig, Lease};
use sync_lock::{AcquireOptions, EtcdLock, LocalLock, Lock};

use crate::stats::{percentile_ms, sample_alternating};
use crate::{Budget, Row, Scenario, Target};

pub(crate) fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "lock.local.uncontended",
            Scenario {
                needs_etcd: false,
                needs_ntp: false,
                run: |b| local_uncontended(b).boxed(),
            },
        ),
        (
            "lock.etcd.uncontended",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| etcd_uncontended(b).boxed(),
            },
        ),
        (
            "lock.etcd.64_clients_64_names",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| etcd_throughput(b, 64, 64).boxed(),
            },
        ),
        (
            "lock.etcd.8_clients_1_name",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| etcd_throughput(b, 8, 1).boxed(),
            },
        ),
        (
            "lock.etcd.handoff_p50_under_load",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| etcd_handoff(b).boxed(),
            },
        ),
        (
            "lock.etcd.sticky_reacquire",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| etcd_sticky_reacquire(b).boxed(),
            },
        ),
        (
            "lock.etcd.sticky_handoff_p50",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| etcd_sticky_handoff(b).boxed(),
            },
        ),
    ]
}

pub(crate) fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// The key prefix of this run; child processes get it through `SYNC_BENCH_PREFIX`.
pub(crate) fn bench_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        std::env::var("SYNC_BENCH_PREFIX")
            .unwrap_or_else(|_| format!("sync-bench/{:x}", std::process::id()))
    })
}

pub(crate) fn config() -> EtcdConfig {
    let eps = std::env::var("SYNC_ETCD_ENDPOINTS").unwrap_or_default();
    EtcdConfig::new(eps.split(',').map(str::to_owned))
        .with_prefix(bench_prefix())
        .with_ttl(Duration::from_secs(10))
}

pub(crate) async fn raw_client() -> Result<Client, String> {
    let cfg = config();
    Client::connect(cfg.endpoint_urls(), None)
        .await
        .map_err(err)
}

/// The baseline named lock: `HashMap<String, Arc<tokio::sync::Mutex<()>>>`.
#[derive(Default)]
struct MapLock {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl MapLock {
    async fn lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .map
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
            .clone();
        m.lock_owned().await
    }
}

async fn local_uncontended(b: Budget) -> Result<Row, String> {
    let iters = b.samples * 200;
    let ours = LocalLock::new();
    let base = MapLock::default();
    let (mut best_ours, mut best_base) = (f64::MAX, f64::MAX);
    for _ in 0..b.rounds.max(2) {
        let t = Instant::now();
        for _ in 0..iters {
            // Through the trait, as docs/benchmarks.md defines the row (a free lock's future is
            // ready with nothing allocated; examples/local_lock_cost.rs compares the paths).
            let g = Lock::acquire(&ours, "bench", AcquireOptions::new())
                .await
                .map_err(err)?;
            g.release().await.map_err(err)?;
        }
        best_ours = best_ours.min(t.elapsed().as_nanos() as f64 / iters as f64);
        let t = Instant::now();
        for _ in 0..iters {
            let g = base.lock("bench").await;
            drop(g);
        }
        best_base = best_base.min(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    Ok(Row::new(
        "local lock acquire+release, uncontended",
        best_ours,
        best_base,
        "ns/op",
        Target::AtMost(1.5),
    ))
}

async fn etcd_uncontended(b: Budget) -> Result<Row, String> {
    let ours = EtcdLock::connect(config()).await.map_err(err)?;
    let admin = EtcdClient::connect(config()).await.map_err(err)?;
    let lease = Lease::grant(&admin, Duration::from_secs(10))
        .await
        .map_err(err)?;
    let mut raw = raw_client().await?;
    let (mut o, mut r) = (Vec::new(), Vec::new());
    // Warm up both paths (connections, the shared watch, the lease).
    for _ in 0..10 {
        let g = ours
            .acquire("u", AcquireOptions::new())
            .await
            .map_err(err)?;
        g.release().await.map_err(err)?;
    }
    for _ in 0..b.rounds {
        let id = lease.id();
        let (ours_round, raw_round) = sample_alternating(
            b.samples,
            || async {
                let g = ours
                    .acquire("u", AcquireOptions::new())
                    .await
                    .map_err(err)?;
                g.release().await.map_err(err)
            },
            || {
                let mut c = raw.clone();
                async move {
                    let l = c
                        .lock("sync-bench-raw/u", Some(LockOptions::new().with_lease(id)))
                        .await
                        .map_err(err)?;
                    c.unlock(l.key().to_vec()).await.map_err(err).map(|_| ())
                }
            },
        )
        .await?;
        o.extend(ours_round);
        r.extend(raw_round);
    }
    let _ = &mut raw;
    let (o50, o99) = (percentile_ms(&mut o, 50.0), percentile_ms(&mut o, 99.0));
    let (r50, r99) = (percentile_ms(&mut r, 50.0), percentile_ms(&mut r, 99.0));
    eprintln!(
        "  ours p50 {o50:.3} ms p99 {o99:.3} ms; Lock+Unlock RPC p50 {r50:.3} ms p99 {r99:.3} ms"
    );
    Ok(Row::new(
        "etcd lock acquire+release, one client (p50)",
        o50,
        r50,
        "ms",
        Target::AtMost(1.0),
    ))
}

/// `clients` tasks, each on its own connection, over `names` names; acquire+release in a loop
/// for the budget's duration. Returns operations per second.
async fn etcd_throughput(b: Budget, clients: usize, names: usize) -> Result<Row, String> {
    let mut ours = Vec::new();
    let mut raws = Vec::new();
    // Like ours, each baseline client has its own connection and its own kept-alive lease:
    // etcd's Lock RPC treats callers sharing a lease as one owner.
    let mut leases = Vec::new();
    for _ in 0..clients {
        ours.push(EtcdLock::connect(config()).await.map_err(err)?);
        raws.push(raw_client().await?);
        let keeper = EtcdClient::connect(config()).await.map_err(err)?;
        leases.push(
            Lease::grant(&keeper, Duration::from_secs(10))
                .await
                .map_err(err)?,
        );
    }
    let (mut best_o, mut best_r) = (0f64, 0f64);
    for _ in 0..b.rounds {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (i, l) in ours.iter().enumerate() {
            let (l, count, stop) = (l.clone(), count.clone(), stop.clone());
            let name = format!("t{}", i % names);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let g = l.acquire(&name, AcquireOptions::new()).await.map_err(err)?;
                    g.release().await.map_err(err)?;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, String>(())
            }));
        }
        best_o = best_o.max(run_for(b.duration, &count, &stop, tasks).await?);
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (i, c) in raws.iter().enumerate() {
            let (mut c, count, stop) = (c.clone(), count.clone(), stop.clone());
            let name = format!("sync-bench-raw/t{}", i % names);
            let id = leases[i].id();
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let l = c
                        .lock(name.clone(), Some(LockOptions::new().with_lease(id)))
                        .await
                        .map_err(err)?;
                    c.unlock(l.key().to_vec()).await.map_err(err)?;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, String>(())
            }));
        }
        best_r = best_r.max(run_for(b.duration, &count, &stop, tasks).await?);
    }
    let target = if names == 1 { 3.0 } else { 1.0 };
    Ok(Row::new(
        &format!("etcd lock, {clients} clients on {names} name(s), throughput"),
        best_o,
        best_r,
        "ops/s",
        Target::AtLeast(target),
    ))
}

pub(crate) async fn run_for(
    d: Duration,
    count: &AtomicU64,
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
) -> Result<f64, String> {
    tokio::time::sleep(d / 5).await; // warm-up, not counted
    let c0 = count.load(Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(d).await;
    let ops = count.load(Ordering::Relaxed) - c0;
    let rate = ops as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.map_err(err)??;
    }
    Ok(rate)
}

/// Hand-over latency (release → the next holder's acquire returns) while another task writes
/// 1000 puts/s to other keys; baseline: one put → its event on an open watch.
async fn etcd_handoff(b: Budget) -> Result<Row, String> {
    let mut load_client = raw_client().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                i += 1;
                let _ = load_client
                    .put(format!("sync-bench-load/{}", i % 100), "x", None)
                    .await;
            }
        })
    };
    let a = EtcdLock::connect(config()).await.map_err(err)?;
    let bl = Arc::new(EtcdLock::connect(config()).await.map_err(err)?);
    let admin = EtcdClient::connect(config()).await.map_err(err)?;
    let dir = admin.keyspace().dir("lock", "h");
    let n = (b.samples / 4).max(20) * b.rounds;
    let mut ours = Vec::with_capacity(n);
    let mut base = Vec::with_capacity(n);
    let mut raw = raw_client().await?;
    let mut stream = raw
        .watch("sync-bench-handoff", Some(WatchOptions::new()))
        .await
        .map_err(err)?;
    stream.message().await.map_err(err)?; // created
    for i in 0..n {
        let g = a.acquire("h", AcquireOptions::new()).await.map_err(err)?;
        let b2 = bl.clone();
        let waiter = tokio::spawn(async move {
            let g = b2.acquire("h", AcquireOptions::new()).await;
            (Instant::now(), g)
        });
        sync_etcd::testing::queued(&admin, &dir, 2).await;
        let t0 = Instant::now();
        g.release().await.map_err(err)?;
        let (t1, g2) = waiter.await.map_err(err)?;
        ours.push(t1 - t0);
        g2.map_err(err)?.release().await.map_err(err)?;

        let t0 = Instant::now();
        raw.put("sync-bench-handoff", i.to_string(), None)
            .await
            .map_err(err)?;
        stream.message().await.map_err(err)?;
        base.push(t0.elapsed());
    }
    drop(stream);
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let (o50, o99) = (
        percentile_ms(&mut ours, 50.0),
        percentile_ms(&mut ours, 99.0),
    );
    let (b50, b99) = (
        percentile_ms(&mut base, 50.0),
        percentile_ms(&mut base, 99.0),
    );
    eprintln!("  hand-over p50 {o50:.2} ms p99 {o99:.2} ms; put→event p50 {b50:.2} ms p99 {b99:.2} ms (1000 puts/s to other keys)");
    Ok(Row::new(
        "etcd lock hand-off under 1000 puts/s (p50)",
        o50,
        b50,
        "ms",
        Target::AtMost(2.0),
    ))
}

/// The moonshot's absolute budget for a sticky re-acquire with nobody waiting.
const STICKY_BUDGET_NS: f64 = 1_000.0;

/// A sticky acquire + release of a parked etcd lock, nobody else waiting: no round trip. The
/// "baseline" is the moonshot's absolute budget, 1 µs per acquire + release (the pair is
/// stricter than the re-acquire alone, which is printed too); the plain etcd acquire + release
/// of the same client is printed for scale.
async fn etcd_sticky_reacquire(b: Budget) -> Result<Row, String> {
    let locks = EtcdLock::connect(config()).await.map_err(err)?;
    let sticky = AcquireOptions::new().with_sticky(true);
    let iters = b.samples * 200;
    // The first acquire makes the key; the release parks it.
    let first = locks.acquire("s", sticky.clone()).await.map_err(err)?;
    let token = first.fencing_token();
    first.release().await.map_err(err)?;
    let (mut best_pair, mut best_acquire) = (f64::MAX, f64::MAX);
    for _ in 0..b.rounds.max(2) {
        let t = Instant::now();
        for _ in 0..iters {
            let g = locks.acquire("s", sticky.clone()).await.map_err(err)?;
            g.release().await.map_err(err)?;
        }
        best_pair = best_pair.min(t.elapsed().as_nanos() as f64 / iters as f64);
        let mut held = Duration::ZERO;
        for _ in 0..iters {
            let t = Instant::now();
            let g = locks.acquire("s", sticky.clone()).await.map_err(err)?;
            held += t.elapsed();
            if g.fencing_token() != token {
                return Err(format!(
                    "a sticky re-acquire made a new key (token {} after {token}): the parked \
                     key was lost or handed over, so the figure would not be the in-memory path",
                    g.fencing_token()
                ));
            }
            g.release().await.map_err(err)?;
        }
        best_acquire = best_acquire.min(held.as_nanos() as f64 / iters as f64);
    }
    let plain = {
        let t = Instant::now();
        for _ in 0..20 {
            let g = locks
                .acquire("p", AcquireOptions::new())
                .await
                .map_err(err)?;
            g.release().await.map_err(err)?;
        }
        t.elapsed().as_secs_f64() * 1e3 / 20.0
    };
    eprintln!(
        "  sticky acquire+release {best_pair:.0} ns, re-acquire alone {best_acquire:.0} ns \
         ({iters} each, best of rounds); plain etcd acquire+release {plain:.3} ms"
    );
    Ok(Row::new(
        "etcd sticky re-acquire+release, nobody waiting (vs 1 µs budget)",
        best_pair,
        STICKY_BUDGET_NS,
        "ns/op",
        Target::AtMost(1.0),
    ))
}

/// A contender's hand-over from a parked sticky key: the parked owner sees the contender's
/// join on its watch and deletes its key, and the contender sees the delete. Ours: the
/// contender's acquire of the parked lock minus its acquire of a free one (its own join, which
/// every acquire pays), p50 of each; baseline: one put → its event on an open watch.
async fn etcd_sticky_handoff(b: Budget) -> Result<Row, String> {
    let a = EtcdLock::connect(config()).await.map_err(err)?;
    let c = EtcdLock::connect(config()).await.map_err(err)?;
    let admin = EtcdClient::connect(config()).await.map_err(err)?;
    let sticky = AcquireOptions::new().with_sticky(true);
    let n = (b.samples / 4).max(20) * b.rounds;
    let (mut parked, mut free, mut base) = (Vec::new(), Vec::new(), Vec::new());
    let mut raw = raw_client().await?;
    let mut stream = raw
        .watch("sync-bench-sticky-handoff", Some(WatchOptions::new()))
        .await
        .map_err(err)?;
    stream.message().await.map_err(err)?; // created

    // Warm up both clients' watches of the queue.
    for _ in 0..5 {
        c.acquire("sh", AcquireOptions::new())
            .await
            .map_err(err)?
            .release()
            .await
            .map_err(err)?;
    }
    let dir = admin.keyspace().dir("lock", "sh");
    for i in 0..n {
        // Parked: a takes it sticky and releases; its key stays, its keeper watches.
        let g = a.acquire("sh", sticky.clone()).await.map_err(err)?;
        g.release().await.map_err(err)?;
        sync_etcd::testing::queued(&admin, &dir, 1).await;
        // Let the keeper's watch start (it starts right after the grant, off the acquire's
        // path): a contender arriving within the first round trip after a grant is seen by
        // the keeper's read instead, one round trip later.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t0 = Instant::now();
        let g = c.acquire("sh", AcquireOptions::new()).await.map_err(err)?;
        parked.push(t0.elapsed());
        g.release().await.map_err(err)?;
        sync_etcd::testing::queued(&admin, &dir, 0).await;
        // Free: the same contender on a free lock: its join alone.
        let t0 = Instant::now();
        let g = c.acquire("sh", AcquireOptions::new()).await.map_err(err)?;
        free.push(t0.elapsed());
        g.release().await.map_err(err)?;

        let t0 = Instant::now();
        raw.put("sync-bench-sticky-handoff", i.to_string(), None)
            .await
            .map_err(err)?;
        stream.message().await.map_err(err)?;
        base.push(t0.elapsed());
    }
    let (p50, p99) = (
        percentile_ms(&mut parked, 50.0),
        percentile_ms(&mut parked, 99.0),
    );
    let f50 = percentile_ms(&mut free, 50.0);
    let (b50, b99) = (
        percentile_ms(&mut base, 50.0),
        percentile_ms(&mut base, 99.0),
    );
    let handoff = (p50 - f50).max(0.0);
    eprintln!(
        "  contender acquire of a parked lock p50 {p50:.2} ms p99 {p99:.2} ms, of a free lock \
         p50 {f50:.2} ms: hand-over {handoff:.2} ms; put→event p50 {b50:.2} ms p99 {b99:.2} ms"
    );
    Ok(Row::new(
        "etcd sticky lock: contender's extra wait for a parked key (p50)",
        handoff,
        b50,
        "ms",
        Target::AtMost(2.0),
    ))
}
