//! Task scenarios of the brief's table, each beside its baseline.
//!
//! The etcd scenario runs its workers in other processes: this binary started again with
//! [`WORKER_ARG`] ([`worker_main`]), configured through environment variables.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;
use futures::{FutureExt, StreamExt};
use sync_etcd::EtcdConfig;
use sync_task::{Command, EtcdTask, Job, LocalTask, Task, TaskOptions};
use tokio::sync::Semaphore;

use crate::stats::{percentile_ms, sample};
use crate::{Budget, Row, Scenario, Target};

/// The hidden argument that makes this binary an etcd task worker process ([`worker_main`]).
pub(crate) const WORKER_ARG: &str = "--task-worker";
/// The worker's key prefix (the parent's, so that they share jobs).
const PREFIX_VAR: &str = "SYNC_BENCH_TASK_PREFIX";
/// The worker's pool size.
const POOL_VAR: &str = "SYNC_BENCH_TASK_POOL";
/// What a worker prints on stdout once its command is registered.
const READY: &str = "READY";

/// Local pool scenario: jobs per measurement, pool size, and how many `run` calls the caller
/// keeps in flight (the baseline's caller has up to the whole batch spawned and waiting).
const LOCAL_JOBS: u64 = 100_000;
const LOCAL_POOL: usize = 10;
const LOCAL_IN_FLIGHT: usize = 64;

/// etcd scenario: worker processes, their pool size, and the jobs (baseline: puts) in flight.
const WORKERS: usize = 3;
pub(crate) const WORKER_POOL: usize = 16;
pub(crate) const IN_FLIGHT: usize = 32;
/// How long finished jobs stay readable; only while their submitter waits, here.
pub(crate) const RETENTION: Duration = Duration::from_secs(5);

pub(crate) fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "task.local.100k_jobs_pool_10",
            Scenario {
                needs_etcd: false,
                needs_ntp: false,
                run: |b| local_pool(b).boxed(),
            },
        ),
        (
            "task.etcd.3_worker_processes",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| etcd_workers(b).boxed(),
            },
        ),
    ]
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn rates(v: &[f64]) -> String {
    v.iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn trivial(i: u64) -> u64 {
    std::hint::black_box(i.wrapping_mul(31))
}

/// The baseline: `tokio::spawn` per job, at most [`LOCAL_POOL`] running (a permit each).
async fn semaphore_pool(jobs: u64) -> Result<f64, String> {
    let sem = Arc::new(Semaphore::new(LOCAL_POOL));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(jobs as usize);
    for i in 0..jobs {
        let permit = sem.clone().acquire_owned().await.map_err(err)?;
        handles.push(tokio::spawn(async move {
            let r = trivial(i);
            drop(permit);
            r
        }));
    }
    for h in handles {
        h.await.map_err(err)?;
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

/// Ours: `LocalTask::run(Command)` (the seed's call), [`LOCAL_IN_FLIGHT`] calls at a time.
async fn local_run(jobs: u64) -> Result<f64, String> {
    let task = LocalTask::new(TaskOptions::new().with_pool(LOCAL_POOL)).map_err(err)?;
    let cmd = Command::new("trivial", |input| async move {
        Ok(trivial(u64::from(input.attempt())))
    });
    let started = Instant::now();
    let mut done = 0u64;
    let mut results = futures::stream::iter(0..jobs)
        .map(|_| task.run(cmd.clone()))
        .buffer_unordered(LOCAL_IN_FLIGHT);
    while let Some(r) = results.next().await {
        r.map_err(err)?;
        done += 1;
    }
    if done != jobs {
        return Err(format!("{done} of {jobs} jobs ran"));
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

/// For comparison only: `submit` + `wait` (job records with ids and status).
async fn local_submit(jobs: u64) -> Result<f64, String> {
    let task = LocalTask::new(TaskOptions::new().with_pool(LOCAL_POOL)).map_err(err)?;
    task.register(Command::typed(
        "trivial",
        |i: u64| async move { Ok(trivial(i)) },
    ))
    .await
    .map_err(err)?;
    let t = &task;
    let started = Instant::now();
    let mut results = futures::stream::iter(0..jobs)
        .map(|i| async move { t.submit(Job::new("trivial", i)).await?.wait().await })
        .buffer_unordered(LOCAL_IN_FLIGHT);
    while let Some(r) = results.next().await {
        r.map_err(err)?;
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

/// 100k trivial jobs on a pool of 10: `LocalTask::run` against `tokio::spawn` bounded by
/// `Semaphore(10)`, alternating, each measurement on a runtime worker thread; the median round.
async fn local_pool(b: Budget) -> Result<Row, String> {
    // Cheap (a fraction of a second a round) and noisy: many rounds even when quick.
    let rounds = b.rounds * 4 + 1;
    let (mut ours, mut base, mut submit) = (Vec::new(), Vec::new(), Vec::new());
    // Round 0 warms up and is not counted.
    for round in 0..=rounds {
        let (o, s, r);
        if round % 2 == 0 {
            r = tokio::spawn(semaphore_pool(LOCAL_JOBS))
                .await
                .map_err(err)??;
            o = tokio::spawn(local_run(LOCAL_JOBS)).await.map_err(err)??;
        } else {
            o = tokio::spawn(local_run(LOCAL_JOBS)).await.map_err(err)??;
            r = tokio::spawn(semaphore_pool(LOCAL_JOBS))
                .await
                .map_err(err)??;
        }
        s = tokio::spawn(local_submit(LOCAL_JOBS))
            .await
            .map_err(err)??;
        if round > 0 {
            ours.push(o);
            base.push(r);
            submit.push(s);
        }
    }
    let (o, r, s) = (median(&ours), median(&base), median(&submit));
    eprintln!(
        "  jobs/s, median of {rounds} rounds: LocalTask::run {o:.0} [{}]; tokio::spawn + \
         Semaphore({LOCAL_POOL}) {r:.0} [{}]; for comparison submit+wait {s:.0} ({:.2}x)",
        rates(&ours),
        rates(&base),
        s / r
    );
    Ok(Row::new(
        "local task pool, 100k trivial jobs, pool 10",
        o,
        r,
        "jobs/s",
        Target::AtLeast(0.8),
    ))
}

pub(crate) fn etcd_config(prefix: &str) -> EtcdConfig {
    let eps = std::env::var("SYNC_ETCD_ENDPOINTS").unwrap_or_default();
    EtcdConfig::new(eps.split(',').map(str::to_owned))
        .with_prefix(prefix)
        .with_ttl(Duration::from_secs(10))
}

/// A worker process: connects with the prefix and pool from the environment, registers `bench`
/// (returns its payload), says [`READY`] on stdout, and runs until killed or until its stdin
/// closes (the parent is gone).
pub(crate) async fn worker_main() -> ! {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let fail = |what: &str, e: String| -> ! {
        eprintln!("sync-bench task worker {}: {what}: {e}", std::process::id());
        std::process::exit(1)
    };
    let prefix = std::env::var(PREFIX_VAR).unwrap_or_else(|e| fail(PREFIX_VAR, err(e)));
    let pool = std::env::var(POOL_VAR)
        .map_err(err)
        .and_then(|p| p.parse::<usize>().map_err(err))
        .unwrap_or_else(|e| fail(POOL_VAR, e));
    let task = EtcdTask::connect(etcd_config(&prefix), TaskOptions::new().with_pool(pool))
        .await
        .unwrap_or_else(|e| fail("connect", err(e)));
    task.register(Command::new("bench", |input| async move {
        Ok(input.payload().clone())
    }))
    .await
    .unwrap_or_else(|e| fail("register", err(e)));
    println!("{READY}");
    std::future::pending::<()>().await;
    unreachable!()
}

/// Worker processes, killed (SIGKILL) and reaped when dropped, whatever happened.
pub(crate) struct Workers(Vec<Child>);

impl Workers {
    /// Starts `n` workers on `prefix` and returns once each has registered.
    pub(crate) async fn start(n: usize, prefix: &str, pool: usize) -> Result<Workers, String> {
        let exe = std::env::current_exe().map_err(err)?;
        let mut workers = Workers(Vec::new());
        let mut outs = Vec::new();
        for _ in 0..n {
            let mut child = Process::new(&exe)
                .arg(WORKER_ARG)
                .env(PREFIX_VAR, prefix)
                .env(POOL_VAR, pool.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start a worker process: {e}"))?;
            outs.push(child.stdout.take().expect("stdout is piped"));
            workers.0.push(child);
        }
        let ready = tokio::task::spawn_blocking(move || {
            for out in outs {
                let mut line = String::new();
                BufReader::new(out).read_line(&mut line).map_err(err)?;
                if line.trim() != READY {
                    return Err("a worker process exited before it registered".to_owned());
                }
            }
            Ok(())
        });
        tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .map_err(|_| "the worker processes did not register within 30 s".to_owned())?
            .map_err(err)??;
        Ok(workers)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// Runs `loops` copies of `op` (given the loop's index) until the budget's duration has passed
/// after a warm-up; returns completed operations per second.
pub(crate) async fn throughput<F, Fut>(d: Duration, loops: usize, op: F) -> Result<f64, String>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..loops)
        .map(|i| {
            let (op, count, stop) = (op.clone(), count.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    op(i, n).await?;
                    n += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    let measured = async {
        tokio::time::sleep((d / 5).max(Duration::from_millis(200))).await; // warm-up
        let c0 = count.load(Ordering::Relaxed);
        let t = Instant::now();
        tokio::time::sleep(d).await;
        (count.load(Ordering::Relaxed) - c0) as f64 / t.elapsed().as_secs_f64()
    };
    // A loop that fails ends the measurement at once.
    let mut tasks = futures::future::select_all(tasks);
    let rate = tokio::select! {
        rate = measured => rate,
        (failed, _, rest) = &mut tasks => {
            stop.store(true, Ordering::Relaxed);
            for t in rest {
                t.abort();
            }
            return Err(match failed {
                Ok(Err(e)) => e,
                Ok(Ok(())) => "a loop ended early".to_owned(),
                Err(e) => err(e),
            });
        }
    };
    stop.store(true, Ordering::Relaxed);
    let rest = tasks.into_inner();
    let joined = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(rest))
        .await
        .map_err(|_| "the loops did not stop within 30 s".to_owned())?;
    for r in joined {
        r.map_err(err)??;
    }
    Ok(rate)
}

/// What the etcd cluster did, summed over its members (from each member's `/metrics`): gRPC
/// requests by method, raft proposals committed (per member), and watch events sent.
#[derive(Debug, Default, Clone, Copy)]
struct ClusterCounts {
    txn: f64,
    range: f64,
    put: f64,
    lease_grant: f64,
    /// Watch events sent to clients, all members.
    events: f64,
    /// Raft proposals committed, the highest of the members.
    proposals: f64,
}

impl ClusterCounts {
    /// Reads every member's counters. Only loopback `http://` endpoints (the harness's).
    async fn read(endpoints: &[String]) -> Result<ClusterCounts, String> {
        let mut c = ClusterCounts::default();
        for ep in endpoints {
            let addr = ep
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
            let body = metrics(&addr).await?;
            for line in body.lines().filter(|l| !l.starts_with('#')) {
                let Some((name, value)) = line.rsplit_once(' ') else {
                    continue;
                };
                let Ok(v) = value.parse::<f64>() else {
                    continue;
                };
                if name.starts_with("grpc_server_started_total{") {
                    let method = |m: &str| name.contains(&format!("grpc_method=\"{m}\""));
                    if method("Txn") {
                        c.txn += v;
                    } else if method("Range") {
                        c.range += v;
                    } else if method("Put") {
                        c.put += v;
                    } else if method("LeaseGrant") {
                        c.lease_grant += v;
                    }
                } else if name == "etcd_debugging_mvcc_events_total" {
                    c.events += v;
                } else if name == "etcd_server_proposals_committed_total" {
                    c.proposals = c.proposals.max(v);
                }
            }
        }
        Ok(c)
    }

    /// `self - before`, each divided by `n`.
    fn per(self, before: ClusterCounts, n: f64) -> String {
        format!(
            "{:.2} txn, {:.2} range, {:.2} put, {:.3} lease grants, {:.2} raft entries, {:.1} watch events",
            (self.txn - before.txn) / n,
            (self.range - before.range) / n,
            (self.put - before.put) / n,
            (self.lease_grant - before.lease_grant) / n,
            (self.proposals - before.proposals) / n,
            (self.events - before.events) / n,
        )
    }
}

/// `GET /metrics` from an etcd member at `addr` (host:port), over plain HTTP/1.0.
async fn metrics(addr: &str) -> Result<String, String> {
    use std::io::Write;
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || {
        let fail = |e: std::io::Error| format!("metrics of {addr}: {e}");
        let mut s = std::net::TcpStream::connect(&addr).map_err(fail)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(fail)?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .map_err(fail)?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).map_err(fail)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    })
    .await
    .map_err(err)?
}

/// The cluster's revision now.
async fn revision(c: &Client, key: &str) -> Result<i64, String> {
    let r = c.clone().get(key, None).await.map_err(err)?;
    Ok(r.header().map(|h| h.revision()).unwrap_or(0))
}

/// Jobs through the etcd backend with 3 worker processes ([`IN_FLIGHT`] submit+wait loops in
/// this process) against raw puts at the same concurrency, ÷ 3 (a job is at least three writes:
/// submit, claim, result).
async fn etcd_workers(b: Budget) -> Result<Row, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(err)?
        .subsec_nanos();
    let prefix = format!("sync-bench/{:x}/task-{nanos:x}", std::process::id());
    let workers = Workers::start(WORKERS, &prefix, WORKER_POOL).await?;
    let submitter = EtcdTask::connect(etcd_config(&prefix), TaskOptions::new())
        .await
        .map_err(err)?;
    // As many connections as ours uses: one per worker process and the submitter's.
    let cfg = etcd_config(&prefix);
    let mut raws: Vec<Client> = Vec::new();
    for _ in 0..=WORKERS {
        raws.push(
            Client::connect(cfg.endpoint_urls(), None)
                .await
                .map_err(err)?,
        );
    }
    // One job: submit, wait for its output, check it. One baseline operation: a put.
    let done = Arc::new(AtomicU64::new(0));
    let job = {
        let (s, done) = (submitter.clone(), done.clone());
        move |i: usize, n: u64| {
            let (s, done) = (s.clone(), done.clone());
            async move {
                let job = Job::new("bench", (i, n)).with_retention(RETENTION);
                let handle = s.submit(job).await.map_err(err)?;
                let out = handle.wait().await.map_err(err)?;
                if out != serde_json::json!([i, n]) {
                    return Err(format!("job ({i}, {n}) returned {out}"));
                }
                done.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
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
        let endpoints: Vec<String> = std::env::var("SYNC_ETCD_ENDPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(str::to_owned)
            .collect();
        for _ in 0..b.rounds {
            // What one job costs the cluster (jobs still in flight at the end count as not
            // done: a slight overestimate).
            let (c0, r0, d0) = (
                ClusterCounts::read(&endpoints).await,
                revision(&raws[0], &prefix).await?,
                done.load(Ordering::Relaxed),
            );
            ours.push(throughput(b.duration, IN_FLIGHT, job.clone()).await?);
            let (c1, r1, d1) = (
                ClusterCounts::read(&endpoints).await,
                revision(&raws[0], &prefix).await?,
                done.load(Ordering::Relaxed),
            );
            let n = (d1 - d0).max(1) as f64;
            match (c0, c1) {
                (Ok(c0), Ok(c1)) => eprintln!(
                    "  per job ({n} jobs): {:.2} revisions; {} (requests summed over the members)",
                    (r1 - r0) as f64 / n,
                    c1.per(c0, n)
                ),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!(
                        "  per job ({n} jobs): {:.2} revisions; no metrics: {e}",
                        (r1 - r0) as f64 / n
                    )
                }
            }
            base.push(throughput(b.duration, IN_FLIGHT, put.clone()).await?);
        }
        // For the record: one at a time, how many sequential puts a job takes.
        let n = (b.samples / 5).max(20);
        let mut seq = 0u64;
        let mut one = sample(n, || {
            seq += 1;
            job(usize::MAX, seq)
        })
        .await?;
        let mut one_put = sample(n, || put(0, 0)).await?;
        let (j50, p50) = (
            percentile_ms(&mut one, 50.0),
            percentile_ms(&mut one_put, 50.0),
        );
        eprintln!(
            "  one at a time: a job p50 {j50:.2} ms (p99 {:.2} ms), a put p50 {p50:.2} ms: a job \
             takes ≈ {:.1} sequential puts",
            percentile_ms(&mut one, 99.0),
            j50 / p50
        );
        Ok::<_, String>((ours, base))
    }
    .await;
    drop(workers);
    let _ = raws[0]
        .clone()
        .delete(
            prefix.clone(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await;
    let (ours, base) = result?;
    let (o, r) = (median(&ours), median(&base));
    eprintln!(
        "  jobs/s with {WORKERS} worker processes (pool {WORKER_POOL}), {IN_FLIGHT} submit+wait \
         in flight: {o:.0} [{}]; raw puts/s at {IN_FLIGHT} in flight: {r:.0} [{}], ÷ 3 = {:.0}",
        rates(&ours),
        rates(&base),
        r / 3.0
    );
    Ok(Row::new(
        "etcd task, 3 worker processes, throughput",
        o,
        r / 3.0,
        "jobs/s",
        Target::AtLeast(0.5),
    ))
}
