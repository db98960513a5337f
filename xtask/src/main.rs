//! `cargo xtask`: the workspace's test harness and setup tasks.
//!
//! - `test` starts a 3-member etcd cluster, a 3-node NATS JetStream cluster and chronyd on
//!   loopback, runs every test of the workspace against them, stops them, and ends with the
//!   line `N passed, M failed`.
//!   After a full run it builds and runs the examples against the same services.
//! - `examples` runs only the examples against freshly started services.
//! - `ci` runs rustfmt and clippy, then `test`.
//! - `etcd up|down|status` keeps the same services running for work by hand.

mod bench;
mod chaos;
mod chart;
mod examples;
mod process;
mod services;
mod testrun;
mod tools;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use services::Services;

/// Errors are messages that say what failed and what to do.
pub(crate) type Result<T> = std::result::Result<T, String>;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [CARGO_TEST_ARGS] [-- TEST_ARGS]
        start a 3-member etcd cluster, a 3-node NATS JetStream cluster and
        chronyd (NTP) on loopback ports, run
        `cargo test --workspace --all-features --no-fail-fast -- --include-ignored`
        against them; with no arguments, then build the examples and run each
        against the same services (timeout 90 s each; each counts as one test);
        stop them; the last line is `N passed, M failed`.
        e.g. cargo xtask test -- -p sync-lock -- lease
  examples
        start the same services, build the examples and run each of them
        (sync-lock fenced_write, sync-leader leader_loop, sync-task task_queue,
        sync-time time_bounds, sync-event event_groups, the demo on etcd and
        on local); logs in target/sync-examples; `N passed, M failed`
  ci    cargo fmt --check, cargo clippy -D warnings, then `test`
  etcd up       start the same services detached and print `export ...` lines
                (eval \"$(cargo xtask etcd up)\" sets them in your shell)
  etcd status   health of each etcd member, NATS node and of chronyd
  etcd down     stop them and remove their directory
  bench [--quick] [--single] [--fast-timing] [--only SUBSTRING] [--scaling]
        start the same services on etcd's default raft timing (--single: a
        one-member cluster; --fast-timing: heartbeat 50 ms, election 500 ms), run
        every benchmark scenario beside its baseline in at least 3 alternating
        rounds (the median ratio and its spread), print the table and write
        target/sync-bench/report.json and report.svg; --scaling: instead, lock
        throughput and p99 wait against 1-64 clients (one name, distinct names)
        and task throughput against 1-6 worker processes, each point beside its
        baseline, into target/sync-bench/scaling.json and scaling.svg
  chaos [--quick] [--only SUBSTRING]
        build sync-chaos and run its fault scenarios (`sync-chaos run`: raft-leader
        kills, mutual exclusion, leader, task, whole-cluster outage, lying NTP server,
        partition proxy, bad input) on an etcd cluster of its own (etcd's default
        timing) with chronyd beside it; real worker processes, their logs checked, the
        table printed and target/sync-chaos/report.json written; fails on any
        violation (--quick: < 5 min)
  help  this text

Tests get SYNC_ETCD_ENDPOINTS (http://127.0.0.1:P,... of the 3 members),
SYNC_NTP_SERVER (127.0.0.1:PORT, UDP), SYNC_ETCD_DATA_DIR and SYNC_ETCD_MEMBERS
(m1=http://127.0.0.1:P,...), SYNC_NATS_URLS (nats://127.0.0.1:P,... of the 3 NATS nodes),
SYNC_NATS_NODES (n1=nats://127.0.0.1:P,...) and SYNC_NATS_DIR (nI.conf, nI.pid: a test that
kills a node restarts it with `nats-server -c DIR/nI.conf`). etcd, etcdctl, protoc, chronyd,
nats-server and openssl are needed: as root on Debian, missing ones are installed with apt-get.";

/// Exit code after SIGINT/SIGTERM, as shells report it.
const INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    process::install_signal_handler();
    let args: Vec<String> = env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("help", &[][..]),
    };
    match command {
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        "test" => test(rest),
        "examples" => run_examples(),
        "ci" => ci(rest),
        "etcd" => etcd(rest),
        "bench" => match workspace_root().and_then(|root| bench::run(&root, rest)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask bench: error: {e}");
                ExitCode::FAILURE
            }
        },
        "chaos" => match workspace_root().and_then(|root| chaos::run(&root, rest)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("xtask chaos: violations found (see the table above)");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("xtask chaos: error: {e}");
                ExitCode::from(if process::interrupted() {
                    INTERRUPTED
                } else {
                    1
                })
            }
        },
        other => {
            eprintln!("xtask: unknown command `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `cargo xtask test`: always ends with the line `N passed, M failed`.
fn test(args: &[String]) -> ExitCode {
    let outcome = workspace_root().and_then(|root| {
        let tools = tools::ensure(true)?;
        eprintln!("xtask: starting a 3-member etcd cluster, 3 NATS nodes and chronyd on loopback");
        let services = Services::start(&tools)?;
        for (key, value) in services.env() {
            eprintln!("xtask:   {key}={value}");
        }
        let outcome = testrun::cargo_test(&root, &services.env(), args);
        // The examples run after a full run only: arguments pick a subset of the tests.
        let examples = if args.is_empty() && !process::interrupted() {
            examples::run(&root, &services.env())
        } else {
            if !args.is_empty() {
                eprintln!("xtask: examples not run (arguments picked a subset of the tests; `cargo xtask examples` runs them)");
            }
            examples::Counts::default()
        };
        drop(services); // stops them before the summary, which must be the last line
        outcome.map(|o| (o, examples))
    });
    let (passed, mut failed, ok) = match outcome {
        Ok((o, examples)) => {
            if !o.status.success() && o.counts.failed == 0 && !process::interrupted() {
                eprintln!("xtask: cargo test failed ({}) without a failing test (build error?); counted as 1 failed", o.status);
            }
            if examples != examples::Counts::default() {
                eprintln!(
                    "xtask: tests: {} passed, {} failed; examples: {} passed, {} failed",
                    o.counts.passed, o.counts.failed, examples.passed, examples.failed
                );
            }
            (
                o.counts.passed + examples.passed,
                o.counts.failed + examples.failed,
                o.status.success() && examples.failed == 0,
            )
        }
        Err(e) => {
            eprintln!("xtask: error: {e}");
            (0, 0, false)
        }
    };
    if !ok && failed == 0 {
        failed = 1;
    }
    if process::interrupted() {
        eprintln!("xtask: interrupted; services stopped");
    }
    println!("{passed} passed, {failed} failed");
    if process::interrupted() {
        ExitCode::from(INTERRUPTED)
    } else if ok && failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `cargo xtask examples`: the examples alone against fresh services; ends with the line
/// `N passed, M failed`.
fn run_examples() -> ExitCode {
    let counts = workspace_root().and_then(|root| {
        let tools = tools::ensure(true)?;
        eprintln!("xtask: starting a 3-member etcd cluster, 3 NATS nodes and chronyd on loopback");
        let services = Services::start(&tools)?;
        let counts = examples::run(&root, &services.env());
        drop(services);
        Ok(counts)
    });
    let counts = counts.unwrap_or_else(|e| {
        eprintln!("xtask: error: {e}");
        examples::Counts {
            passed: 0,
            failed: 1,
        }
    });
    if process::interrupted() {
        eprintln!("xtask: interrupted; services stopped");
    }
    println!("{} passed, {} failed", counts.passed, counts.failed);
    if process::interrupted() {
        ExitCode::from(INTERRUPTED)
    } else if counts.failed == 0 && counts.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `cargo xtask ci`: rustfmt, clippy, then `test`; stops at the first failure.
fn ci(args: &[String]) -> ExitCode {
    let checks = workspace_root().and_then(|root| {
        tools::ensure(true)?; // clippy builds etcd-client, whose build script needs protoc
        let steps: [(&[&str], &str); 2] = [
            (
                &["fmt", "--all", "--", "--check"],
                "run `cargo fmt --all` and commit the result",
            ),
            (
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--all-features",
                    "--",
                    "-D",
                    "warnings",
                ],
                "fix the warnings above",
            ),
        ];
        for (step_args, hint) in steps {
            let mut cmd = testrun::cargo_command();
            cmd.args(step_args).current_dir(&root);
            let shown = testrun::describe(&cmd);
            eprintln!("xtask ci: running {shown}");
            let status = process::run_foreground(&mut cmd)
                .map_err(|e| format!("cannot run {shown}: {e}"))?;
            if process::interrupted() {
                return Err("interrupted".into());
            }
            if !status.success() {
                return Err(format!("`{shown}` failed ({status}); {hint}"));
            }
        }
        Ok(())
    });
    match checks {
        Ok(()) => {
            eprintln!("xtask ci: format and lints are clean; running the tests");
            test(args)
        }
        Err(e) => {
            eprintln!("xtask ci: FAILED: {e}");
            ExitCode::from(if process::interrupted() {
                INTERRUPTED
            } else {
                1
            })
        }
    }
}

/// `cargo xtask etcd up|down|status`.
fn etcd(args: &[String]) -> ExitCode {
    let result = workspace_root().and_then(|root| {
        let state = state_path(&root);
        match args.first().map(String::as_str) {
            Some("up") => etcd_up(&state),
            Some("down") => etcd_down(&state),
            Some("status") => etcd_status(&state),
            _ => Err(format!("usage: cargo xtask etcd up|down|status\n\n{USAGE}")),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn etcd_up(state: &Path) -> Result<bool> {
    let tools = tools::ensure(true)?;
    if let Some(mut running) = Services::load(state, tools.clone())? {
        if running.all_running() {
            eprintln!(
                "xtask: already up (state in {}); `cargo xtask etcd down` stops them",
                state.display()
            );
            print_exports(&running);
            return Ok(true);
        }
        eprintln!(
            "xtask: stale state in {}; stopping what is left and starting afresh",
            state.display()
        );
        running.stop();
        remove_state(state)?;
    }
    eprintln!("xtask: starting a 3-member etcd cluster, 3 NATS nodes and chronyd on loopback");
    let services = Services::start(&tools)?;
    print_exports(&services);
    services.detach(state)?;
    eprintln!(
        "xtask: up; state in {}; stop with `cargo xtask etcd down`",
        state.display()
    );
    Ok(true)
}

fn etcd_down(state: &Path) -> Result<bool> {
    match Services::load(state, tools::Tools::best_effort())? {
        None => eprintln!("xtask: nothing to stop (no {})", state.display()),
        Some(mut services) => {
            services.stop();
            remove_state(state)?;
            eprintln!("xtask: stopped etcd, NATS and chronyd and removed their directory");
        }
    }
    Ok(true)
}

fn etcd_status(state: &Path) -> Result<bool> {
    let Some(mut services) = Services::load(state, tools::Tools::best_effort())? else {
        println!(
            "not up (no {}); start with `cargo xtask etcd up`",
            state.display()
        );
        return Ok(false);
    };
    let lines = services.status();
    for (_, line) in &lines {
        println!("{line}");
    }
    Ok(lines.iter().all(|(ok, _)| *ok))
}

fn print_exports(services: &Services) {
    for (key, value) in services.env() {
        println!("export {key}={}", shell_quote(&value));
    }
}

fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:,=@+".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn remove_state(state: &Path) -> Result<()> {
    match std::fs::remove_file(state) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {e}", state.display()))
        }
        _ => Ok(()),
    }
}

/// `target/sync-services/state` (honouring `CARGO_TARGET_DIR`).
fn state_path(root: &Path) -> PathBuf {
    let target =
        env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t));
    target.join("sync-services").join("state")
}

/// The workspace root: the parent of xtask's manifest directory (set by `cargo run`, else
/// the one it was built from), else what `cargo locate-project --workspace` says.
fn workspace_root() -> Result<PathBuf> {
    let is_root = |p: &Path| {
        std::fs::read_to_string(p.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"))
    };
    let candidates = [
        env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    for dir in candidates.into_iter().flatten() {
        if let Some(root) = dir.parent().filter(|r| is_root(r)) {
            return Ok(root.to_path_buf());
        }
    }
    let output = Command::new("cargo")
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .output()
        .map_err(|e| format!("cannot run cargo locate-project: {e}"))?;
    let manifest = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    match manifest.parent() {
        Some(root) if output.status.success() && is_root(root) => Ok(root.to_path_buf()),
        _ => Err("cannot find the workspace root; run `cargo xtask` inside the workspace".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(
            shell_quote("http://127.0.0.1:2379,http://127.0.0.1:2380"),
            "http://127.0.0.1:2379,http://127.0.0.1:2380"
        );
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
