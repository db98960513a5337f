//! Throughput of the etcd backend: jobs through 3 worker processes, beside the baseline of raw
//! etcd puts at the same concurrency ÷ 3 (a job costs three writes: submit, claim, finish), in
//! the same run on the same cluster. Prints figures; asserts nothing.
//!
//! ```text
//! SYNC_ETCD_ENDPOINTS=http://127.0.0.1:2379,… \
//!   cargo run --release -p sync-task --features etcd --example task_throughput [JOBS] [IN_FLIGHT]
//! ```
//!
//! The worker processes are this program run again with `worker PREFIX POOL`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sync_etcd::{testing, EtcdClient, EtcdConfig};
use sync_task::{Command, EtcdTask, Job, Task, TaskOptions};

const WORKERS: usize = 3;

fn config(prefix: &str) -> EtcdConfig {
    EtcdConfig::new(testing::endpoints()).with_prefix(prefix)
}

/// A worker process: registers `echo`, reports READY, and on EOF of stdin prints its stats.
async fn worker(prefix: &str, pool: usize) {
    let task = EtcdTask::connect(config(prefix), TaskOptions::new().with_pool(pool))
        .await
        .expect("worker connects");
    // Returns when it started (µs since the epoch), for the latency breakdown.
    task.register(Command::new("echo", |_| async move { Ok(now_us()) }))
        .await
        .expect("worker registers");
    println!("READY");
    std::io::stdout().flush().unwrap();
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
    let s = task.stats();
    println!(
        "STATS claims={} conflicts={} succeeded={}",
        s.claims, s.claim_conflicts, s.succeeded
    );
    task.shutdown().await.unwrap();
}

struct Worker {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
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
        assert_eq!(line.trim(), "READY", "worker did not start");
        Worker { child, out }
    }

    fn stop(mut self) -> String {
        drop(self.child.stdin.take());
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        self.child.wait().unwrap();
        line.trim().to_owned()
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Runs `jobs` jobs; returns the time taken and the mean (submit → start, start → result
/// seen) in ms.
async fn jobs_through(task: &EtcdTask, jobs: usize, in_flight: usize) -> (Duration, f64, f64) {
    let start = Instant::now();
    let (n, to_start, to_done) = futures::stream::iter(0..jobs)
        .map(|_| async move {
            let submitted = now_us();
            let began = task.submit(Job::new("echo", ())).await?.wait().await?;
            let began = began.as_u64().unwrap_or(submitted);
            Ok::<_, sync_task::Error>((
                began.saturating_sub(submitted),
                now_us().saturating_sub(began),
            ))
        })
        .buffer_unordered(in_flight)
        .fold((0usize, 0u64, 0u64), |(n, a, b), r| async move {
            let (x, y) = r.expect("job failed");
            (n + 1, a + x, b + y)
        })
        .await;
    assert_eq!(n, jobs);
    let ms = |us: u64| us as f64 / n as f64 / 1000.0;
    (start.elapsed(), ms(to_start), ms(to_done))
}

/// `puts` puts of job-sized values by `in_flight` concurrent loops.
async fn raw_puts(client: &EtcdClient, puts: usize, in_flight: usize) -> Duration {
    let value = vec![b'x'; 200];
    let root = client.keyspace().kind("raw");
    let start = Instant::now();
    futures::stream::iter(0..puts)
        .map(|i| {
            let (mut c, v, k) = (client.raw(), value.clone(), format!("{root}{i}"));
            async move { c.put(k, v, None).await.expect("put") }
        })
        .buffer_unordered(in_flight)
        .for_each(|_| async {})
        .await;
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        return worker(&args[1], args[2].parse().unwrap()).await;
    }
    let jobs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let in_flight: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let prefix = testing::unique_prefix("task-throughput");
    let pool = in_flight.div_ceil(WORKERS).max(1) * 2;
    let workers: Vec<Worker> = (0..WORKERS).map(|_| Worker::spawn(&prefix, pool)).collect();
    let task = EtcdTask::connect(config(&prefix), TaskOptions::new())
        .await
        .expect("connect");
    let client = EtcdClient::of(&task.connection()).clone();
    // Warm up connections, leases and views.
    jobs_through(&task, 200, in_flight).await;
    raw_puts(&client, 600, in_flight).await;

    let mut ours = Vec::new();
    let mut base = Vec::new();
    let mut phases = Vec::new();
    for _ in 0..3 {
        let (took, to_start, to_done) = jobs_through(&task, jobs, in_flight).await;
        ours.push(jobs as f64 / took.as_secs_f64());
        phases.push(format!(
            "{to_start:.1} ms to start, {to_done:.1} ms start to result"
        ));
        let puts = jobs * 3;
        base.push(puts as f64 / raw_puts(&client, puts, in_flight).await.as_secs_f64() / 3.0);
    }
    let stats: Vec<String> = workers.into_iter().map(Worker::stop).collect();
    testing::wipe(&client).await;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (o, b) = (median(ours), median(base));
    println!(
        "etcd task, {} members, {WORKERS} worker processes (pool {pool}), {jobs} jobs x 3 rounds, \
         {in_flight} in flight (submit + wait each):",
        testing::endpoints().len()
    );
    println!("  EtcdTask jobs:                         {o:>8.0} jobs/s");
    println!(
        "  baseline raw puts at {in_flight} in flight / 3:  {b:>8.0} jobs/s  (ours: {:.2}x)",
        o / b
    );
    println!("  mean latency per round: {}", phases.join("; "));
    for (i, s) in stats.iter().enumerate() {
        println!("  worker {i}: {s}");
    }
}
