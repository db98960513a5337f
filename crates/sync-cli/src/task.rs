//! `syncctl task submit|status|wait|worker`: jobs of `sync-task`, and a worker that runs a shell
//! command per job.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sync_task::{Command as TaskCommand, CommandError, Job, JobId, JobStatus, Task, TaskOptions};
use tokio::io::AsyncWriteExt;

use crate::backend::Connect;
use crate::exit::{self, Failure};
use crate::output::Output;
use crate::supervise::Signals;

/// The job ran and failed (its last attempt's error).
pub(crate) const JOB_FAILED: u8 = 1;

impl From<sync_task::Error> for Failure {
    fn from(e: sync_task::Error) -> Self {
        use sync_task::Error as E;
        let code = match &e {
            E::InvalidName { .. }
            | E::InvalidOptions { .. }
            | E::Config(_)
            | E::UnknownCommand { .. }
            | E::TooLarge { .. } => exit::USAGE,
            E::NotFound { .. } => exit::NOT_ACQUIRED,
            E::Backend { .. } => exit::UNAVAILABLE,
            E::Failed { .. }
            | E::Panicked { .. }
            | E::TimedOut { .. }
            | E::WorkerLost { .. }
            | E::BadPayload { .. } => JOB_FAILED,
            _ => exit::INTERNAL,
        };
        Failure::new(code, exit::full_message(&e))
    }
}

/// The `task` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TaskCmd {
    /// Submit a job of COMMAND; prints its id (with --wait, its output).
    Submit {
        /// The command's name (a worker registered it: `syncctl task worker COMMAND`).
        command: String,
        /// The payload, JSON (default `null`).
        #[arg(long, default_value = "null")]
        payload: String,
        /// Attempts before the job fails.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Time allowed for one attempt (e.g. `30s`).
        #[arg(long, value_name = "D", value_parser = crate::backend::parse_duration)]
        timeout: Option<Duration>,
        /// Idempotency key: a live job with the same key is returned instead of a new one.
        #[arg(long)]
        key: Option<String>,
        /// Accept the job even if no worker has registered COMMAND yet.
        #[arg(long)]
        wait_for_worker: bool,
        /// Wait for the job's outcome and print its output.
        #[arg(long)]
        wait: bool,
    },
    /// Where job ID is now.
    Status {
        /// The job's id.
        id: String,
    },
    /// Wait for job ID and print its output (exit 1 if it failed).
    Wait {
        /// The job's id.
        id: String,
    },
    /// Run CMD once per job of COMMAND (payload on stdin and in SYNC_JOB_PAYLOAD; stdout, JSON or
    /// text, is the output; a non-zero exit fails the attempt) until SIGINT/SIGTERM.
    Worker {
        /// The command's name.
        command: String,
        /// Jobs run at once.
        #[arg(long, default_value_t = 1)]
        pool: usize,
        /// The shell command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        argv: Vec<String>,
    },
}

async fn open(c: &Connect, options: TaskOptions) -> Result<Arc<dyn Task>, Failure> {
    Ok(match c.choose()?.etcd_or_local("task")? {
        None => Arc::new(sync_task::LocalTask::new(options)?),
        Some(cfg) => Arc::new(sync_task::EtcdTask::connect(*cfg, options).await?),
    })
}

fn status_json(id: &str, s: &JobStatus) -> Value {
    match s {
        JobStatus::Pending {
            attempts,
            last_failure,
            ..
        } => json!({ "id": id, "state": "pending", "attempts": attempts,
                     "last_failure": last_failure.as_ref().map(|f| f.to_string()) }),
        JobStatus::Running { attempt, worker } => {
            json!({ "id": id, "state": "running", "attempt": attempt, "worker": worker })
        }
        JobStatus::Succeeded { attempts, output } => {
            json!({ "id": id, "state": "succeeded", "attempts": attempts, "output": output })
        }
        JobStatus::Failed { attempts, failure } => {
            json!({ "id": id, "state": "failed", "attempts": attempts, "failure": failure.to_string() })
        }
        other => json!({ "id": id, "state": format!("{other:?}") }),
    }
}

fn human_status(v: &Value) -> String {
    let mut s = format!(
        "{} {}",
        v["id"].as_str().unwrap_or(""),
        v["state"].as_str().unwrap_or("")
    );
    for k in [
        "attempts",
        "attempt",
        "worker",
        "output",
        "failure",
        "last_failure",
    ] {
        if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
            s.push_str(&format!(" {k}={x}"));
        }
    }
    s
}

/// Runs a `task` subcommand.
pub(crate) async fn run(c: &Connect, cmd: TaskCmd, out: Output) -> Result<u8, Failure> {
    match cmd {
        TaskCmd::Submit {
            command,
            payload,
            max_attempts,
            timeout,
            key,
            wait_for_worker,
            wait,
        } => {
            let payload: Value = serde_json::from_str(&payload)
                .map_err(|e| Failure::usage(format!("--payload is not JSON: {e}")))?;
            let task = open(c, TaskOptions::new()).await?;
            let mut job = Job::new(command, payload).with_wait_for_worker(wait_for_worker);
            if let Some(n) = max_attempts {
                job = job.with_max_attempts(n);
            }
            if let Some(t) = timeout {
                job = job.with_timeout(t);
            }
            if let Some(k) = key {
                job = job.with_idempotency_key(k);
            }
            let handle = task.submit(job).await?;
            let id = handle.id().clone();
            if !wait {
                linger_for_release(&*task, &id).await;
                out.answer(&json!({ "id": id.as_str() }), || id.to_string());
                return Ok(exit::OK);
            }
            print_outcome(&*task, &id, out).await
        }
        TaskCmd::Status { id } => {
            let task = open(c, TaskOptions::new()).await?;
            let s = task.status(&JobId::from(id.as_str())).await?;
            let v = status_json(&id, &s);
            out.answer(&v, || human_status(&v));
            Ok(exit::OK)
        }
        TaskCmd::Wait { id } => {
            let task = open(c, TaskOptions::new()).await?;
            print_outcome(&*task, &JobId::from(id.as_str()), out).await
        }
        TaskCmd::Worker {
            command,
            pool,
            argv,
        } => worker(c, command, pool, argv, out).await,
    }
}

/// Keeps this process alive until the library's release of a just-submitted job has almost
/// certainly reached etcd.
///
/// The etcd backend's `submit` returns once the job is written with a *hold* (a key on the
/// submitter's session lease: no worker starts the job while it is there) and hands the
/// transaction that releases it to a background batcher. A process that exits at once drops
/// that transaction, and the job then waits until the session lease expires before any worker
/// runs it (with the 60 s hold this replaced, measured: 5 of 5 jobs held when syncctl exited
/// right after submit). Nothing in the public API tells a held job from a released one (both show as
/// `pending`), so this cannot wait for the event itself: it measures one round trip to etcd
/// (a status read, sent after the release) and lingers four more, between 50 ms and 2 s.
/// With `--wait` none of this is needed: the process stays until the job has run.
async fn linger_for_release(task: &dyn Task, id: &JobId) {
    let started = tokio::time::Instant::now();
    let _ = task.status(id).await;
    let round_trip = started.elapsed();
    tokio::time::sleep((round_trip * 4).clamp(Duration::from_millis(50), Duration::from_secs(2)))
        .await;
}

async fn print_outcome(task: &dyn Task, id: &JobId, out: Output) -> Result<u8, Failure> {
    let mut signals = Signals::install()?;
    let outcome = tokio::select! {
        r = task.wait(id) => r,
        sig = signals.recv() => return Ok(128 + sig as i32 as u8),
    };
    let output = outcome?;
    out.answer(
        &json!({ "id": id.as_str(), "output": output }),
        || match &output {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    );
    Ok(exit::OK)
}

async fn worker(
    c: &Connect,
    command: String,
    pool: usize,
    argv: Vec<String>,
    out: Output,
) -> Result<u8, Failure> {
    let task = open(c, TaskOptions::new().with_pool(pool)).await?;
    let argv = Arc::new(argv);
    let name = command.clone();
    let shown = command.clone();
    task.register(TaskCommand::new(command, move |input| {
        let argv = argv.clone();
        let name = name.clone();
        async move { run_job(&argv, &name, input).await }
    }))
    .await?;
    out.event("worker", json!({ "command": &shown, "pool": pool }), || {
        format!("worker for {shown:?} registered (pool {pool}); running until SIGINT/SIGTERM")
    });
    let mut signals = Signals::install()?;
    let sig = signals.recv().await;
    out.event("shutdown", json!({ "signal": sig.as_str() }), || {
        format!(
            "{}: shutting down (running jobs finish within the grace)",
            sig.as_str()
        )
    });
    task.shutdown().await?;
    Ok(exit::OK)
}

/// One attempt: CMD with the payload on stdin; its stdout is the output. A job cancelled by
/// the library (timeout, shutdown) drops this future, which kills CMD (`kill_on_drop`).
async fn run_job(
    argv: &[String],
    command: &str,
    input: sync_task::Input,
) -> Result<Value, CommandError> {
    let payload = input.payload().to_string();
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| CommandError::permanent("no command"))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("SYNC_JOB_ID", input.job().as_str())
        .env("SYNC_JOB_COMMAND", command)
        .env("SYNC_JOB_ATTEMPT", input.attempt().to_string())
        .env("SYNC_FENCING_TOKEN", input.fencing_token().to_string())
        .env("SYNC_JOB_PAYLOAD", &payload)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CommandError::permanent(format!("cannot run {program:?}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin closes it: not an error.
        let _ = stdin.write_all(payload.as_bytes()).await;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| CommandError::msg(format!("waiting for {program:?}: {e}")))?;
    if !output.status.success() {
        return Err(CommandError::msg(format!(
            "{program:?} failed: {}",
            output.status
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}
