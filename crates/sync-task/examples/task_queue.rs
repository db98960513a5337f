//! A worker and a submitter: workers register commands by name, a submitter sends jobs and
//! awaits their results, and the jobs spread over every worker process sharing the cluster.
//!
//! ```sh
//! eval "$(cargo xtask etcd up)"
//! # Everything at once: two worker processes (this program run with `worker`) and a submitter.
//! cargo run -p sync-task --features etcd --example task_queue
//! # Or by hand, in separate terminals: as many workers as you like, then the submitter.
//! cargo run -p sync-task --features etcd --example task_queue -- worker
//! cargo run -p sync-task --features etcd --example task_queue -- submit
//! ```
//!
//! The submitter sends twelve `thumbnail` jobs (each worker says who ran it), one `flaky` job
//! that fails its first attempt and is retried with backoff, and one `reject` job whose
//! command fails for good: its typed error reaches the submitter after one attempt. A worker
//! runs until its standard input closes (press Ctrl-D, or Enter), then shuts down gracefully.
//!
//! The backend is the argument after the mode, else `SYNC_URL`, else `SYNC_ETCD_ENDPOINTS`
//! (prefix `sync-examples`), else `local`, on which the default mode runs the worker in this
//! process. Finishes in a few seconds; exits non-zero if any job does not end as described.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sync_task::{Backoff, Command, CommandError, Error as TaskError, Job, Task, TaskOptions};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The backend URL: `arg`, else `SYNC_URL`, else the cluster that `cargo xtask etcd up`
/// announces in `SYNC_ETCD_ENDPOINTS`, else `local`.
fn backend_url(arg: Option<String>) -> String {
    arg.or_else(|| std::env::var("SYNC_URL").ok())
        .or_else(|| {
            let endpoints = std::env::var("SYNC_ETCD_ENDPOINTS").ok()?;
            let hosts: Vec<&str> = endpoints
                .split(',')
                .map(|e| e.trim().trim_start_matches("http://"))
                .collect();
            Some(format!("etcd://{}/sync-examples", hosts.join(",")))
        })
        .unwrap_or_else(|| "local".to_owned())
}

/// Makes `task` a worker: registers the commands this example's jobs name.
async fn register_commands(task: &dyn Task, me: &str) -> Result<(), TaskError> {
    let who = me.to_owned();
    task.register(Command::typed("thumbnail", move |width: u32| {
        let who = who.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await; // the work
            Ok(json!({ "width": width / 2, "worker": who }))
        }
    }))
    .await?;
    task.register(Command::new("flaky", |input| async move {
        // A transient fault on the first attempt: the job is retried after its backoff.
        if input.attempt() == 1 {
            Err(CommandError::msg("upstream timed out (attempt 1)"))
        } else {
            Ok(format!("succeeded on attempt {}", input.attempt()))
        }
    }))
    .await?;
    task.register(Command::new("reject", |_input| async move {
        // A permanent error is not retried, whatever the job's attempts.
        Err::<(), _>(CommandError::permanent("the image is corrupt"))
    }))
    .await?;
    Ok(())
}

/// `worker`: runs jobs until standard input closes, then shuts down gracefully.
async fn worker(url: &str) -> Result<(), Error> {
    let me = format!("worker-{}", std::process::id());
    let task = sync_task::open(url, TaskOptions::new().with_pool(4)).await?;
    register_commands(task.as_ref(), &me).await?;
    println!("READY {me}: registered thumbnail, flaky, reject; close stdin (Ctrl-D) to stop");
    std::io::stdout().flush()?;
    // Standard input is read on a thread of its own (blocking); its end is our signal.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(());
    });
    let _ = rx.await;
    task.shutdown().await?; // running jobs finish (or go back to other workers)
    println!("{me}: shut down");
    Ok(())
}

/// `submit`: sends the jobs, waits for every result and checks each.
async fn submit(task: Arc<dyn Task>) -> Result<(), Error> {
    let started = Instant::now();
    // `with_wait_for_worker`: the jobs wait for a worker to register the command instead of
    // failing with `UnknownCommand` (workers may start after the submitter).
    let job = |command: &str, payload: Value| {
        Job::new(command, payload)
            .with_wait_for_worker(true)
            .with_retention(Duration::from_secs(60)) // finished jobs expire from etcd
    };
    let mut thumbnails = Vec::new();
    for width in (1..=12).map(|i| i * 160) {
        thumbnails.push((width, task.submit(job("thumbnail", json!(width))).await?));
    }
    let flaky = task
        .submit(
            job("flaky", Value::Null)
                .with_max_attempts(3)
                .with_backoff(Backoff::new(
                    Duration::from_millis(50),
                    Duration::from_secs(1),
                )),
        )
        .await?;
    let reject = task
        .submit(job("reject", Value::Null).with_max_attempts(3))
        .await?;
    println!("submitted 14 jobs in {:?}", started.elapsed());

    let limit = Duration::from_secs(30);
    let mut per_worker: BTreeMap<String, u32> = BTreeMap::new();
    for (width, handle) in thumbnails {
        let out = tokio::time::timeout(limit, handle.wait()).await??;
        let worker = out["worker"].as_str().unwrap_or("?").to_owned();
        println!("  thumbnail {width} -> {} (ran on {worker})", out["width"]);
        if out["width"] != json!(width / 2) {
            return Err(format!("thumbnail {width} gave {out}").into());
        }
        *per_worker.entry(worker).or_default() += 1;
    }
    println!("  jobs per worker: {per_worker:?}");

    let out = tokio::time::timeout(limit, flaky.wait()).await??;
    println!("  flaky -> {out} (status: {:?})", flaky.status().await?);
    if out != json!("succeeded on attempt 2") {
        return Err(format!("the flaky job gave {out}").into());
    }

    match tokio::time::timeout(limit, reject.wait()).await? {
        Err(e @ TaskError::Failed { attempts: 1, .. }) => println!("  reject -> error: {e}"),
        other => {
            return Err(format!("the reject job should fail once for good, got {other:?}").into())
        }
    }
    println!("all 14 jobs ended as expected in {:?}", started.elapsed());
    Ok(())
}

/// Starts this program again as a worker process and waits for its READY line.
fn spawn_worker(url: &str) -> Result<Child, Error> {
    let mut child = Process::new(std::env::current_exe()?)
        .args(["worker", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    while !line.starts_with("READY") {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            let status = child.wait()?;
            return Err(format!("the worker exited before it was ready ({status})").into());
        }
    }
    print!("started {}", line.trim_start_matches("READY "));
    // Keep forwarding its output (its shutdown line) to ours.
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            println!("{line}");
        }
    });
    Ok(child)
}

/// Prints the error (its message, not its `Debug` form) and exits 1 on failure.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("task_queue: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "both".to_owned());
    let (mode, url) = match mode.as_str() {
        "worker" | "submit" | "both" => (mode.clone(), backend_url(args.next())),
        _ => ("both".to_owned(), backend_url(Some(mode))), // `task_queue URL`
    };
    println!(
        "mode {mode}, backend {}",
        sync_core::backend::redact_url(&url)
    );
    let local = url == "local";
    match mode.as_str() {
        "worker" if local => Err("a `local` worker serves only its own process; use etcd".into()),
        "worker" => worker(&url).await,
        "submit" if local => Err("a `local` submitter has no workers; use etcd".into()),
        "submit" => submit(sync_task::open(&url, TaskOptions::new()).await?).await,
        _ if local => {
            // One process: the same handle is worker and submitter.
            let task = sync_task::open(&url, TaskOptions::new().with_pool(4)).await?;
            register_commands(task.as_ref(), "in-process").await?;
            submit(task).await?;
            println!("task_queue: ok");
            Ok(())
        }
        _ => {
            let mut workers = vec![spawn_worker(&url)?, spawn_worker(&url)?];
            let outcome = submit(sync_task::open(&url, TaskOptions::new()).await?).await;
            for w in &mut workers {
                drop(w.stdin.take()); // closing its stdin asks it to shut down
            }
            for w in &mut workers {
                let status = w.wait()?;
                if !status.success() && outcome.is_ok() {
                    return Err(format!("a worker exited with {status}").into());
                }
            }
            outcome?;
            println!("task_queue: ok");
            Ok(())
        }
    }
}
