//! `sync-bench --scaling`: how cost grows with load, ours beside its baseline at each point.
//!
//! - `lock.one_name` and `lock.distinct_names`: acquire+release loops of 1, 2, 4, … 64 clients
//!   (each its own connection, as the `lock.etcd.*` scenarios), all on one name or each on its
//!   own; `EtcdLock` against etcd's Lock + Unlock RPCs (each client its own kept-alive lease).
//!   Throughput (all clients together) and the p99 wait (asking → granted).
//! - `task.workers`: jobs/s through 1 … 6 worker processes (the `task.etcd.*` scenario's
//!   workers and submit+wait loops) against raw puts at the same concurrency ÷ 3.
//!
//! Each point measures ours and the baseline alternately (ours first, then the baseline first,
//! …) and reports the medians. Points are JSON objects on stdout ([`Point`]), a table on stderr.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, LockOptions};
use serde::Serialize;
use sync_etcd::{EtcdClient, Lease};
use sync_lock::{AcquireOptions, EtcdLock, Lock};
use sync_task::{EtcdTask, Job, Task, TaskOptions};

use crate::lock::{bench_prefix, config, err, raw_client};
use crate::stats::percentile_ms;
use crate::task::{self, Workers};

/// Client counts of the lock series.
const CLIENTS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Worker process counts of the task series.
const WORKERS: [usize; 6] = [1, 2, 3, 4, 5, 6];

/// One point of a series: ours and the baseline at one load.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Point {
    /// `lock.one_name`, `lock.distinct_names` or `task.workers`.
    series: &'static str,
    /// The load: clients (lock series) or worker processes (task series).
    clients: usize,
    /// Our operations (acquire+release, or jobs) per second, all clients together.
    ours_ops: f64,
    /// The baseline's operations per second (for tasks: raw puts/s ÷ 3).
    base_ops: f64,
    /// Our p99 wait from asking for the lock to being granted (lock series only).
    ours_p99_ms: Option<f64>,
    /// The baseline's p99 wait (lock series only).
    base_p99_ms: Option<f64>,
    /// What the baseline is.
    baseline: &'static str,
}

/// How long each point runs.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Measured time of each side in each alternation (after a warm-up of a fifth, ≥ 200 ms).
    duration: Duration,
    /// Alternations of ours and the baseline per point.
    alternations: usize,
}

/// Runs the series whose name contains `only` (every series without it), prints their points;
/// returns whether every point was measured.
pub(crate) async fn run(quick: bool, only: Option<&str>) -> bool {
    if std::env::var("SYNC_ETCD_ENDPOINTS").is_err() {
        eprintln!("--scaling: SYNC_ETCD_ENDPOINTS is not set (run `cargo xtask bench --scaling`)");
        return false;
    }
    let plan = if quick {
        Plan {
            duration: Duration::from_secs(2),
            alternations: 1,
        }
    } else {
        Plan {
            duration: Duration::from_secs(3),
            alternations: 3,
        }
    };
    let wanted = |s: &str| only.is_none_or(|o| s.contains(o));
    let mut points = Vec::new();
    let mut ok = true;
    let mut pool = Pool::default();
    for (series, distinct) in [("lock.one_name", false), ("lock.distinct_names", true)] {
        if !wanted(series) {
            continue;
        }
        for clients in CLIENTS {
            eprintln!("running {series} with {clients} client(s) …");
            match lock_point(&mut pool, series, clients, distinct, plan).await {
                Ok(p) => emit(&mut points, p),
                Err(e) => {
                    eprintln!("{series}, {clients} client(s): failed: {e}");
                    ok = false;
                }
            }
        }
    }
    drop(pool);
    if wanted("task.workers") {
        for workers in WORKERS {
            eprintln!("running task.workers with {workers} worker process(es) …");
            match task_point(workers, plan).await {
                Ok(p) => emit(&mut points, p),
                Err(e) => {
                    eprintln!("task.workers, {workers} worker(s): failed: {e}");
                    ok = false;
                }
            }
        }
    }
    eprintln!("\n{}", table(&points));
    ok
}

fn emit(points: &mut Vec<Point>, p: Point) {
    println!("{}", serde_json::to_string(&p).expect("a point serializes"));
    points.push(p);
}

/// The points as a table: one line per point, with ours ÷ baseline.
fn table(points: &[Point]) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let mut out = format!(
        "{:<20} {:>7} {:>10} {:>10} {:>7} {:>12} {:>12}\n",
        "series", "clients", "ours/s", "base/s", "ratio", "ours p99 ms", "base p99 ms"
    );
    for p in points {
        out += &format!(
            "{:<20} {:>7} {:>10.0} {:>10.0} {:>7.2} {:>12} {:>12}\n",
            p.series,
            p.clients,
            p.ours_ops,
            p.base_ops,
            p.ours_ops / p.base_ops,
            ms(p.ours_p99_ms),
            ms(p.base_p99_ms)
        );
    }
    out
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Connections kept across the lock points, grown to the largest client count asked for: per
/// client our lock, a raw client and its own kept-alive lease (etcd's Lock RPC treats callers
/// sharing a lease as one owner).
#[derive(Default)]
struct Pool {
    ours: Vec<EtcdLock>,
    raws: Vec<Client>,
    leases: Vec<Arc<Lease>>,
}

impl Pool {
    async fn grow(&mut self, clients: usize) -> Result<(), String> {
        while self.ours.len() < clients {
            self.ours
                .push(EtcdLock::connect(config()).await.map_err(err)?);
            self.raws.push(raw_client().await?);
            let keeper = EtcdClient::connect(config()).await.map_err(err)?;
            self.leases.push(
                Lease::grant(&keeper, Duration::from_secs(10))
                    .await
                    .map_err(err)?,
            );
        }
        Ok(())
    }
}

/// Where a measurement is: warming up, measuring, or over.
const WARM: u8 = 0;
const MEASURING: u8 = 1;
const OVER: u8 = 2;

/// Runs `loops` copies of `op` (given the loop's index; it returns the operation's wait) for
/// `d` after a warm-up; returns the completed operations per second and the p99 wait (ms) of
/// the same operations, those that completed inside the measured time (with 64 clients on one
/// name a wait can be longer than a quick run's measured time, so its start is not required to
/// be inside it).
async fn measure<F, Fut>(d: Duration, loops: usize, op: F) -> Result<(f64, f64), String>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Duration, String>> + Send,
{
    let count = Arc::new(AtomicU64::new(0));
    let phase = Arc::new(AtomicU8::new(WARM));
    let tasks: Vec<_> = (0..loops)
        .map(|i| {
            let (op, count, phase) = (op.clone(), count.clone(), phase.clone());
            tokio::spawn(async move {
                let mut waits = Vec::new();
                loop {
                    if phase.load(Ordering::Relaxed) == OVER {
                        return Ok::<_, String>(waits);
                    }
                    let wait = op(i).await?;
                    count.fetch_add(1, Ordering::Relaxed);
                    if phase.load(Ordering::Relaxed) == MEASURING {
                        waits.push(wait);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep((d / 5).max(Duration::from_millis(200))).await;
    phase.store(MEASURING, Ordering::Relaxed);
    let c0 = count.load(Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(d).await;
    let ops = count.load(Ordering::Relaxed) - c0;
    let rate = ops as f64 / t.elapsed().as_secs_f64();
    phase.store(OVER, Ordering::Relaxed);
    let joined = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(tasks))
        .await
        .map_err(|_| "the client loops did not stop within 60 s".to_owned())?;
    let mut waits = Vec::new();
    for r in joined {
        waits.extend(r.map_err(err)??);
    }
    Ok((rate, percentile_ms(&mut waits, 99.0)))
}

/// One lock point: `clients` loops over one name or a name each, ours and the Lock RPC
/// alternately.
async fn lock_point(
    pool: &mut Pool,
    series: &'static str,
    clients: usize,
    distinct: bool,
    plan: Plan,
) -> Result<Point, String> {
    pool.grow(clients).await?;
    // Names of their own per point, so that no earlier point's queue is in the way.
    let name = move |i: usize| {
        let n = if distinct { i } else { 0 };
        format!("scale-{series}-{clients}-{n}")
    };
    let ours_op = {
        let locks: Arc<Vec<EtcdLock>> = Arc::new(pool.ours[..clients].to_vec());
        move |i: usize| {
            let (locks, name) = (locks.clone(), name(i));
            async move {
                let t = Instant::now();
                let g = locks[i]
                    .acquire(&name, AcquireOptions::new())
                    .await
                    .map_err(err)?;
                let wait = t.elapsed();
                g.release().await.map_err(err)?;
                Ok(wait)
            }
        }
    };
    let base_op = {
        let raws: Arc<Vec<Client>> = Arc::new(pool.raws[..clients].to_vec());
        let ids: Arc<Vec<i64>> = Arc::new(pool.leases[..clients].iter().map(|l| l.id()).collect());
        let prefix = format!("{}/raw-scale", bench_prefix());
        move |i: usize| {
            let mut c = raws[i].clone();
            let id = ids[i];
            let key = format!("{prefix}/{}", name(i));
            async move {
                let t = Instant::now();
                let l = c
                    .lock(key, Some(LockOptions::new().with_lease(id)))
                    .await
                    .map_err(err)?;
                let wait = t.elapsed();
                c.unlock(l.key().to_vec()).await.map_err(err)?;
                Ok(wait)
            }
        }
    };
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for a in 0..plan.alternations {
        if a % 2 == 0 {
            ours.push(measure(plan.duration, clients, ours_op.clone()).await?);
            base.push(measure(plan.duration, clients, base_op.clone()).await?);
        } else {
            base.push(measure(plan.duration, clients, base_op.clone()).await?);
            ours.push(measure(plan.duration, clients, ours_op.clone()).await?);
        }
    }
    let ops = |v: &[(f64, f64)]| median(&v.iter().map(|p| p.0).collect::<Vec<_>>());
    let p99 = |v: &[(f64, f64)]| median(&v.iter().map(|p| p.1).collect::<Vec<_>>());
    Ok(Point {
        series,
        clients,
        ours_ops: ops(&ours),
        base_ops: ops(&base),
        ours_p99_ms: Some(p99(&ours)),
        base_p99_ms: Some(p99(&base)),
        baseline: "etcd Lock + Unlock RPCs",
    })
}

/// One task point: `workers` worker processes (pool [`task::WORKER_POOL`] each) and
/// [`task::IN_FLIGHT`] submit+wait loops here, against raw puts at [`task::IN_FLIGHT`] in
/// flight over as many connections (one per worker process and the submitter's), ÷ 3.
async fn task_point(workers: usize, plan: Plan) -> Result<Point, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(err)?
        .subsec_nanos();
    let prefix = format!("{}/scale-task-{workers}-{nanos:x}", bench_prefix());
    let procs = Workers::start(workers, &prefix, task::WORKER_POOL).await?;
    let cfg = task::etcd_config(&prefix);
    let submitter = EtcdTask::connect(cfg.clone(), TaskOptions::new())
        .await
        .map_err(err)?;
    let mut raws: Vec<Client> = Vec::new();
    for _ in 0..=workers {
        raws.push(
            Client::connect(cfg.endpoint_urls(), None)
                .await
                .map_err(err)?,
        );
    }
    let job = move |i: usize, n: u64| {
        let s = submitter.clone();
        async move {
            let job = Job::new("bench", (i, n)).with_retention(task::RETENTION);
            let out = s
                .submit(job)
                .await
                .map_err(err)?
                .wait()
                .await
                .map_err(err)?;
            if out != serde_json::json!([i, n]) {
                return Err(format!("job ({i}, {n}) returned {out}"));
            }
            Ok(())
        }
    };
    let put = {
        let (raws, raw_prefix) = (raws.clone(), format!("{prefix}-raw"));
        move |i: usize, n: u64| {
            let mut c = raws[i % raws.len()].clone();
            let key = format!("{raw_prefix}/{i}");
            async move {
                c.put(key, n.to_string(), None).await.map_err(err)?;
                Ok(())
            }
        }
    };
    let result = async {
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for a in 0..plan.alternations {
            let (d, n) = (plan.duration, task::IN_FLIGHT);
            if a % 2 == 0 {
                ours.push(task::throughput(d, n, job.clone()).await?);
                base.push(task::throughput(d, n, put.clone()).await?);
            } else {
                base.push(task::throughput(d, n, put.clone()).await?);
                ours.push(task::throughput(d, n, job.clone()).await?);
            }
        }
        Ok::<_, String>((median(&ours), median(&base)))
    }
    .await;
    drop(procs);
    let _ = raws[0]
        .clone()
        .delete(
            prefix.clone(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await;
    let (ours, puts) = result?;
    Ok(Point {
        series: "task.workers",
        clients: workers,
        ours_ops: ours,
        base_ops: puts / 3.0,
        ours_p99_ms: None,
        base_p99_ms: None,
        baseline: "raw puts ÷ 3",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_serializes_to_the_shape_xtask_reads() {
        let p = Point {
            series: "lock.one_name",
            clients: 8,
            ours_ops: 300.0,
            base_ops: 100.0,
            ours_p99_ms: Some(40.5),
            base_p99_ms: None,
            baseline: "etcd Lock + Unlock RPCs",
        };
        let v: serde_json::Value = serde_json::to_value(&p).unwrap();
        assert_eq!(v["series"], "lock.one_name");
        assert_eq!(v["clients"], 8);
        assert_eq!(v["ours_ops"], 300.0);
        assert_eq!(v["base_ops"], 100.0);
        assert_eq!(v["ours_p99_ms"], 40.5);
        assert!(v["base_p99_ms"].is_null());
        // Not a report row: xtask tells the two apart by `series` against `scenario`.
        assert!(v.get("scenario").is_none());
        let t = table(&[p]);
        assert!(t.contains("lock.one_name") && t.contains("3.00") && t.contains("40.5"));
    }

    #[test]
    fn medians_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
