//! Running the examples users copy against the started services: one `cargo build
//! --examples`, then each binary from `target/debug/examples` with a timeout. An example
//! passes when it exits 0 in time; its output goes to `target/sync-examples/NAME.log` and is
//! printed when it fails.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::process;
use crate::testrun;
use crate::Result;

/// How long one example may run before it is killed and counted as failed.
const TIMEOUT: Duration = Duration::from_secs(90);

/// One run of an example binary.
struct Run {
    /// Shown in the summary and names the log file.
    label: &'static str,
    /// The binary in `target/debug/examples`.
    binary: &'static str,
    /// Its arguments, from the services' environment.
    args: fn(&[(String, String)]) -> Vec<String>,
    /// Whether it sees the services' environment (else none of the `SYNC_*` variables:
    /// the local backend, no server).
    with_services: bool,
}

/// Every run: each crate's example against the cluster, and the demo both on etcd (by URL,
/// time from NTP) and with no argument at all (local, no server).
const RUNS: &[Run] = &[
    Run {
        label: "sync-lock fenced_write",
        binary: "fenced_write",
        args: no_args,
        with_services: true,
    },
    Run {
        label: "sync-leader leader_loop",
        binary: "leader_loop",
        args: no_args,
        with_services: true,
    },
    Run {
        label: "sync-task task_queue",
        binary: "task_queue",
        args: no_args,
        with_services: true,
    },
    Run {
        label: "sync-time time_bounds",
        binary: "time_bounds",
        args: no_args,
        with_services: true,
    },
    Run {
        label: "sync-event event_groups",
        binary: "event_groups",
        args: no_args,
        with_services: true,
    },
    Run {
        label: "demo on etcd",
        binary: "demo",
        args: demo_etcd_args,
        with_services: true,
    },
    Run {
        label: "demo on local",
        binary: "demo",
        args: no_args,
        with_services: false,
    },
];

fn no_args(_: &[(String, String)]) -> Vec<String> {
    Vec::new()
}

/// `etcd://HOST:PORT,…/sync-demo` from `SYNC_ETCD_ENDPOINTS`, and `--ntp` from
/// `SYNC_NTP_SERVER`.
fn demo_etcd_args(env: &[(String, String)]) -> Vec<String> {
    let var = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let hosts: Vec<&str> = var("SYNC_ETCD_ENDPOINTS")
        .split(',')
        .map(|e| e.trim().trim_start_matches("http://"))
        .collect();
    vec![
        format!("etcd://{}/sync-demo", hosts.join(",")),
        "--ntp".to_owned(),
        var("SYNC_NTP_SERVER").to_owned(),
    ]
}

/// Examples that passed and failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Exited 0 within the timeout.
    pub(crate) passed: u64,
    /// Did not build, exited non-zero, or timed out.
    pub(crate) failed: u64,
}

/// Builds the workspace's examples (all features, as the tests were built, so this reuses
/// their artifacts) and runs each of [`RUNS`] with `env` added. A build failure counts as one
/// failed example. Prints one line per example.
pub(crate) fn run(root: &Path, env: &[(String, String)]) -> Counts {
    let mut counts = Counts::default();
    let mut build = testrun::cargo_command();
    build
        .args(["build", "--workspace", "--all-features", "--examples"])
        .current_dir(root);
    let shown = testrun::describe(&build);
    eprintln!("xtask: building the examples: {shown}");
    match process::run_foreground(&mut build) {
        Ok(status) if status.success() => {}
        Ok(status) => {
            eprintln!("xtask: FAILED: `{shown}` ({status}); no example was run");
            counts.failed += 1;
            return counts;
        }
        Err(e) => {
            eprintln!("xtask: FAILED: cannot run `{shown}`: {e}");
            counts.failed += 1;
            return counts;
        }
    }
    let bin_dir = target_dir(root).join("debug").join("examples");
    let log_dir = target_dir(root).join("sync-examples");
    if let Err(e) = fs::create_dir_all(&log_dir) {
        eprintln!("xtask: FAILED: cannot create {}: {e}", log_dir.display());
        counts.failed += 1;
        return counts;
    }
    for example in RUNS {
        if process::interrupted() {
            break;
        }
        match run_one(example, &bin_dir, &log_dir, env, TIMEOUT) {
            Ok(elapsed) => {
                counts.passed += 1;
                eprintln!("xtask: example {} ... ok ({elapsed:.1?})", example.label);
            }
            Err(why) => {
                counts.failed += 1;
                eprintln!("xtask: example {} ... FAILED: {why}", example.label);
            }
        }
    }
    eprintln!(
        "xtask: examples: {} passed, {} failed (logs in {})",
        counts.passed,
        counts.failed,
        log_dir.display()
    );
    counts
}

/// Runs one example to completion or `timeout`; on failure, kills what is left of its process
/// group and prints its log.
fn run_one(
    example: &Run,
    bin_dir: &Path,
    log_dir: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Duration> {
    let binary = bin_dir.join(example.binary);
    let log_path = log_dir.join(format!("{}.log", example.label.replace(' ', "-")));
    let log = File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("cannot share {}: {e}", log_path.display()))?;
    let mut cmd = Command::new(&binary);
    cmd.args((example.args)(env))
        .current_dir(bin_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own group: a timeout kills it and the processes it started (task_queue's workers).
        .process_group(0);
    // A user's own SYNC_URL or cluster must not redirect the examples.
    for (key, _) in std::env::vars() {
        if key.starts_with("SYNC_") {
            cmd.env_remove(key);
        }
    }
    if example.with_services {
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    process::set_foreground(child.id());
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break Ok(started.elapsed()),
            Ok(Some(status)) => break Err(format!("{status}")),
            Ok(None) if started.elapsed() > timeout || process::interrupted() => {
                process::signal_group(child.id(), "KILL");
                let _ = child.kill();
                let _ = child.wait();
                break Err(if process::interrupted() {
                    "interrupted".to_owned()
                } else {
                    format!("still running after {timeout:?}; killed")
                });
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(format!("cannot wait for it: {e}")),
        }
    };
    process::clear_foreground();
    if outcome.is_err() {
        // Whatever a failed example started and left behind (its own group) goes with it.
        process::signal_group(child.id(), "KILL");
        let shown = format!("{} {}", example.binary, (example.args)(env).join(" "));
        eprintln!(
            "xtask: ---- output of `{}` ({}) ----",
            shown.trim(),
            log_path.display()
        );
        eprintln!(
            "{}",
            fs::read_to_string(&log_path).unwrap_or_default().trim_end()
        );
        eprintln!("xtask: ---- end of output ----");
    }
    outcome
}

/// `target` (honouring `CARGO_TARGET_DIR`).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_gets_the_cluster_url_and_the_ntp_server() {
        let env = vec![
            (
                "SYNC_ETCD_ENDPOINTS".to_owned(),
                "http://127.0.0.1:1,http://127.0.0.1:2".to_owned(),
            ),
            ("SYNC_NTP_SERVER".to_owned(), "127.0.0.1:3".to_owned()),
        ];
        assert_eq!(
            demo_etcd_args(&env),
            [
                "etcd://127.0.0.1:1,127.0.0.1:2/sync-demo",
                "--ntp",
                "127.0.0.1:3"
            ]
        );
    }

    /// A directory of fake example binaries (shell scripts) and one for their logs.
    fn scripts(scripts: &[(&str, &str)]) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xtask-examples-{}", std::process::id()));
        let (bin, logs) = (dir.join("bin"), dir.join("logs"));
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&logs).unwrap();
        for (name, body) in scripts {
            let path = bin.join(name);
            fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        (bin, logs)
    }

    fn fake(binary: &'static str) -> Run {
        Run {
            label: binary,
            binary,
            args: no_args,
            with_services: true,
        }
    }

    #[test]
    fn an_example_passes_fails_or_times_out_and_its_group_is_killed() {
        let (bin, logs) = scripts(&[
            ("passes", "echo fine"),
            ("fails", "echo \"broke: $SYNC_X\"; exit 3"),
            ("hangs", "sleep 30 & echo $! > \"$0.child\"; wait"),
        ]);
        let env = vec![("SYNC_X".to_owned(), "from the services".to_owned())];
        let long = Duration::from_secs(30);
        assert!(run_one(&fake("passes"), &bin, &logs, &env, long).is_ok());

        let err = run_one(&fake("fails"), &bin, &logs, &env, long).unwrap_err();
        assert!(err.contains("exit status: 3"), "{err}");
        let log = fs::read_to_string(logs.join("fails.log")).unwrap();
        assert_eq!(log, "broke: from the services\n");

        let started = Instant::now();
        let err = run_one(
            &fake("hangs"),
            &bin,
            &logs,
            &env,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(err.contains("killed"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // The example's own child (its process group) is gone too.
        let child: u32 = fs::read_to_string(bin.join("hangs.child"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while process::alive(child, "sleep") {
            assert!(
                Instant::now() < deadline,
                "the example's child {child} survived"
            );
            thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_dir_all(bin.parent().unwrap());
    }

    #[test]
    fn every_example_binary_exists_in_the_workspace() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask sits in the workspace");
        for run in RUNS {
            let found = fs::read_dir(root.join("crates"))
                .expect("crates/")
                .filter_map(|e| e.ok())
                .any(|c| {
                    c.path()
                        .join("examples")
                        .join(format!("{}.rs", run.binary))
                        .is_file()
                });
            assert!(found, "no crates/*/examples/{}.rs", run.binary);
        }
    }
}
