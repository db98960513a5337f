//! `sync-chaos <command> --key value …`: the chaos harness's worker binary. See
//! [`sync_chaos::worker`] for the commands; `cargo xtask chaos` drives it.

use std::process::ExitCode;

use sync_chaos::worker::{self, Args};

const USAGE: &str = "usage: sync-chaos <lock|leader|task-worker|task-submit|time|bad-input|proxy|kill|mark|check> --key value …";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let args = match Args::parse(rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sync-chaos: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command.as_str() {
        "kill" => worker::kill(&args),
        "mark" => worker::mark(&args),
        "check" => worker::check(&args),
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
