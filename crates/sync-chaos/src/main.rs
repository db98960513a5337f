//! `sync-chaos run [--quick] [--only SUBSTRING] [--out DIR] [--ntp HOST:PORT]`: the fault
//! scenarios (see [`sync_chaos::scenario`]), which `cargo xtask chaos` runs; exits 0 if no
//! scenario counted a violation, 1 if one did, 2 if the harness failed, 130 if interrupted.
//!
//! `sync-chaos <command> --key value …`: a worker, tool or checker that the scenarios start
//! (see [`sync_chaos::worker`]).

use std::process::ExitCode;

use sync_chaos::scenario::{self, Options, RunError};
use sync_chaos::tool;
use sync_chaos::worker::{self, Args};

const USAGE: &str = "usage: sync-chaos run [--quick] [--only SUBSTRING] [--out DIR] [--ntp HOST:PORT]
       sync-chaos <lock|semaphore|rwlock|leader|task-worker|task-submit|stream-publish|stream-subscribe|stream-member|time|bad-input|proxy|kill|mark|check> --key value …";

/// Exit status of `run` when a scenario counted a violation.
const VIOLATIONS: u8 = 1;
/// Exit status of `run` when the harness itself failed.
const HARNESS_FAILED: u8 = 2;
/// Exit status after SIGINT/SIGTERM, as shells report it.
const INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if command == "run" {
        return run(rest);
    }
    let args = match Args::parse(rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sync-chaos: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command.as_str() {
        "kill" => tool::kill(&args),
        "mark" => tool::mark(&args),
        "check" => tool::check(&args),
        other => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("sync-chaos: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async {
                match other {
                    "lock" => worker::lock(&args).await,
                    "leader" => worker::leader(&args).await,
                    "semaphore" => worker::semaphore(&args).await,
                    "rwlock" => worker::rwlock(&args).await,
                    "stream-publish" => worker::stream_publish(&args).await,
                    "stream-subscribe" => worker::stream_subscribe(&args).await,
                    "stream-member" => worker::stream_member(&args).await,
                    "task-worker" => worker::task_worker(&args).await,
                    "task-submit" => worker::task_submit(&args).await,
                    "time" => worker::time(&args).await,
                    "bad-input" => sync_chaos::badinput::run(&args).await,
                    "proxy" => worker::proxy(&args).await,
                    other => Err(format!("unknown command {other:?}\n{USAGE}")),
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sync-chaos {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `sync-chaos run`: the scenarios.
fn run(args: &[String]) -> ExitCode {
    let opts = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sync-chaos run: {e}\n{USAGE}");
            return ExitCode::from(HARNESS_FAILED);
        }
    };
    match scenario::run(&opts) {
        Ok(rows) if rows.iter().all(|r| r.violations == 0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(VIOLATIONS),
        Err(RunError::Interrupted) => ExitCode::from(INTERRUPTED),
        Err(RunError::Failed(e)) => {
            eprintln!("sync-chaos run: error: {e}");
            ExitCode::from(HARNESS_FAILED)
        }
    }
}
