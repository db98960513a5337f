//! Drains a backlog: JOBS pending jobs are submitted while no worker runs, then WORKERS worker
//! processes start and run them all. Prints the submit rate, the drain time and rate, and each
//! worker's peak memory (its max RSS, `VmHWM`) next to its memory once registered, and the most
//! jobs its view held. Asserts only that every job ran.
//!
//! ```text
//! SYNC_ETCD_ENDPOINTS=http://127.0.0.1:2379,… \
//!   cargo run --release -p sync-task --features etcd --example etcd_backlog [JOBS] [WORKERS] [POOL]
//! ```
//!
//! Defaults: 250 000 jobs, 3 workers, a pool of 16 each. Like a production cluster with
//! `--auto-compaction`, it compacts etcd's history every 20 s (without it, the revisions of a
//! quarter of a million jobs fill etcd's memory). The worker processes are this program run
//! again with `worker PREFIX POOL`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sync_etcd::etcd_client::{EventType, WatchOptions};
use sync_etcd::{testing, EtcdConfig};
use sync_task::{Command, EtcdTask, Job, Task, TaskOptions};

fn config(prefix: &str) -> EtcdConfig {
    EtcdConfig::new(testing::endpoints()).with_prefix(prefix)
}

/// `VmHWM` (peak resident set) and `VmRSS` of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A worker process: registers `work`, reports READY with its memory, samples how many jobs
/// its view holds, and on EOF of stdin prints its figures and shuts down.
async fn worker(prefix: &str, pool: usize) {
    let task = EtcdTask::connect(config(prefix), TaskOptions::new().with_pool(pool))
        .await
        .expect("worker connects");
    task.register(Command::new(
        "work",
        |input| async move { Ok(input.attempt()) },
    ))
    .await
    .expect("worker registers");
    let (hwm, _) = memory_kib();
    println!("READY {hwm}");
    std::io::stdout().flush().unwrap();
    let viewed_max = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (task, viewed_max) = (task.clone(), viewed_max.clone());
        tokio::spawn(async move {
            loop {
                viewed_max.fetch_max(task.viewed_jobs(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await
    .unwrap();
    sampler.abort();
    let s = task.stats();
    let (hwm, rss) = memory_kib();
    println!(
        "STATS claims={} conflicts={} succeeded={} viewed_max={} peak_rss_kib={hwm} rss_kib={rss}",
        s.claims,
        s.claim_conflicts,
        s.succeeded,
        viewed_max.load(Ordering::Relaxed)
    );
    std::io::stdout().flush().unwrap();
    task.shutdown().await.unwrap();
}

struct Worker {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    ready_kib: u64,
}

impl Worker {
    fn spawn(prefix: &str, pool: usize) -> Worker {
        let mut child = Process::new(std::env::current_exe().unwrap())
            .args(["worker", prefix, &pool.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a worker");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let ready_kib = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("worker did not start: {line:?}"));
        Worker {
            child,
            out,
            ready_kib,
        }
    }

    fn stop(mut self) -> String {
        drop(self.child.stdin.take());
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        self.child.wait().unwrap();
        line.trim().to_owned()
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        return worker(&args[1], args[2].parse().unwrap()).await;
    }
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (jobs, workers, pool) = (arg(0, 250_000), arg(1, 3), arg(2, 16));
    let prefix = testing::unique_prefix("task-backlog");
    let submitter = EtcdTask::connect(config(&prefix), TaskOptions::new())
        .await
        .expect("connect");
    let client = sync_etcd::EtcdClient::of(&submitter.connection()).clone();
    let compactor = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(20)).await;
                let mut c = client.raw();
                if let Ok(r) = c.get("compaction-probe", None).await {
                    if let Some(rev) = r.header().map(|h| h.revision()) {
                        let _ = c.compact(rev, None).await;
                    }
                }
            }
        })
    };
    let started = Instant::now();
    let submitted = futures::stream::iter(0..jobs)
        .map(|i| {
            let s = submitter.clone();
            async move {
                s.submit(Job::new("work", i).with_wait_for_worker(true))
                    .await
                    .expect("submit");
            }
        })
        .buffer_unordered(256)
        .fold(0usize, |n, ()| async move { n + 1 })
        .await;
    let took = started.elapsed();
    println!(
        "submitted {submitted} jobs (no worker running) in {:.1} s: {:.0} jobs/s",
        took.as_secs_f64(),
        submitted as f64 / took.as_secs_f64()
    );
    let root = client.keyspace().kind("task");
    let count = |under: &'static str| {
        let (client, root) = (client.clone(), root.clone());
        async move { testing::count_keys(&client, &format!("{root}{under}")).await }
    };
    assert_eq!(count("q/jobs/").await, jobs, "pending jobs");

    // Count finished jobs from a watch on their results (polling a count of a quarter of a
    // million keys would load etcd 3.4, which walks the whole range for every count).
    let finished = Arc::new(AtomicUsize::new(0));
    let mut events = client
        .raw()
        .watch(
            format!("{root}results/"),
            Some(WatchOptions::new().with_prefix()),
        )
        .await
        .expect("watch results");
    let counter = {
        let finished = finished.clone();
        tokio::spawn(async move {
            while let Ok(Some(resp)) = events.message().await {
                let puts = resp
                    .events()
                    .iter()
                    .filter(|e| e.event_type() == EventType::Put)
                    .count();
                finished.fetch_add(puts, Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    let procs: Vec<Worker> = (0..workers).map(|_| Worker::spawn(&prefix, pool)).collect();
    println!(
        "{workers} worker processes (pool {pool}) registered in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let mut last = (Instant::now(), 0);
    while finished.load(Ordering::Relaxed) < jobs {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if last.0.elapsed() > Duration::from_secs(30) {
            let done = finished.load(Ordering::Relaxed);
            println!(
                "  {done} done after {:.0} s ({:.0} jobs/s over the last {:.0} s)",
                started.elapsed().as_secs_f64(),
                (done - last.1) as f64 / last.0.elapsed().as_secs_f64(),
                last.0.elapsed().as_secs_f64()
            );
            last = (Instant::now(), done);
        }
    }
    counter.abort();
    let took = started.elapsed();
    let results = count("results/").await;
    assert_eq!(count("q/jobs/").await, 0, "pending jobs left");
    println!(
        "drained {jobs} pending jobs with {workers} workers in {:.1} s: {:.0} jobs/s ({results} results)",
        took.as_secs_f64(),
        jobs as f64 / took.as_secs_f64()
    );
    for (i, w) in procs.into_iter().enumerate() {
        let ready = w.ready_kib;
        let line = w.stop();
        println!("worker {i}: rss_when_registered_kib={ready} {line}");
    }
    compactor.abort();
    testing::wipe(&client).await;
    assert_eq!(results, jobs, "every job ran and recorded its result");
}
