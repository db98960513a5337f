//! Throughput of the local pool: 100k trivial jobs on a pool of 10, beside the baseline of
//! `tokio::spawn` bounded by `Semaphore(10)`, in the same run. Prints figures; asserts nothing.
//!
//! ```text
//! [IN_FLIGHT=16] [ONLY=baseline|run|submit] \
//!   cargo run --release -p sync-task --example local_throughput [JOBS] [ROUNDS]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sync_task::{Command, Job, LocalTask, Task, TaskOptions};
use tokio::sync::Semaphore;

const POOL: usize = 10;
/// How many `run`/`submit` calls the caller keeps in flight (`IN_FLIGHT`, default 16).
fn in_flight() -> usize {
    std::env::var("IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

fn trivial(i: u64) -> u64 {
    std::hint::black_box(i.wrapping_mul(31))
}

async fn baseline(jobs: u64) -> Duration {
    let sem = Arc::new(Semaphore::new(POOL));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(jobs as usize);
    for i in 0..jobs {
        let permit = sem.clone().acquire_owned().await.unwrap();
        handles.push(tokio::spawn(async move {
            let r = trivial(i);
            drop(permit);
            r
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed()
}

async fn ours_run(jobs: u64) -> Duration {
    let task = LocalTask::new(TaskOptions::new().with_pool(POOL)).unwrap();
    let cmd = Command::new("trivial", |input| async move {
        Ok(trivial(u64::from(input.attempt())))
    });
    let start = Instant::now();
    let done = futures::stream::iter(0..jobs)
        .map(|_| task.run(cmd.clone()))
        .buffer_unordered(in_flight())
        .fold(0u64, |n, r| async move {
            r.unwrap();
            n + 1
        })
        .await;
    assert_eq!(done, jobs);
    start.elapsed()
}

async fn ours_submit(jobs: u64) -> Duration {
    let task = LocalTask::new(TaskOptions::new().with_pool(POOL)).unwrap();
    task.register(Command::typed(
        "trivial",
        |i: u64| async move { Ok(trivial(i)) },
    ))
    .await
    .unwrap();
    let start = Instant::now();
    let t = &task;
    let done = futures::stream::iter(0..jobs)
        .map(|i| async move { t.submit(Job::new("trivial", i)).await?.wait().await })
        .buffer_unordered(in_flight())
        .fold(0u64, |n, r| async move {
            r.unwrap();
            n + 1
        })
        .await;
    assert_eq!(done, jobs);
    start.elapsed()
}

fn rate(jobs: u64, d: Duration) -> f64 {
    jobs as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let jobs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let (mut base, mut run, mut submit) = (Vec::new(), Vec::new(), Vec::new());
    // Each measurement runs on a runtime worker thread, as a service's code would.
    // `ONLY=baseline|run|submit` measures one of them (for profiling).
    let only = std::env::var("ONLY").unwrap_or_default();
    let on = |what: &str| only.is_empty() || only == what;
    for _ in 0..rounds {
        if on("baseline") {
            base.push(rate(jobs, tokio::spawn(baseline(jobs)).await.unwrap()));
        }
        if on("run") {
            run.push(rate(jobs, tokio::spawn(ours_run(jobs)).await.unwrap()));
        }
        if on("submit") {
            submit.push(rate(jobs, tokio::spawn(ours_submit(jobs)).await.unwrap()));
        }
    }
    if !only.is_empty() {
        let v = [base, run, submit].concat();
        println!("{only}: {:.0} jobs/s", median(v));
        return;
    }
    let (b, r, s) = (median(base), median(run), median(submit));
    println!("local pool, {jobs} trivial jobs, pool {POOL}, median of {rounds} rounds:");
    println!("  baseline tokio::spawn + Semaphore({POOL}): {b:>12.0} jobs/s");
    println!(
        "  LocalTask::run(Command):                {r:>12.0} jobs/s  ({:.2}x baseline)",
        r / b
    );
    println!(
        "  LocalTask::submit + wait (job records): {s:>12.0} jobs/s  ({:.2}x baseline)",
        s / b
    );
}
