//! `cargo xtask chaos [--quick] [--only SUBSTRING]`: builds the `sync-chaos` binary and runs
//! its fault scenarios (`sync-chaos run`, see `crates/sync-chaos/src/scenario/`), which start an
//! etcd cluster of their own on etcd's default timing, print a table and write
//! `target/sync-chaos/report.json`. xtask adds chronyd on loopback as the `time` scenario's
//! honest NTP server and a 3-node NATS cluster for `stream-nats`, and fails if any scenario
//! counted a violation.

use std::path::Path;

use crate::services::Services;
use crate::{process, testrun, tools, Result};

/// `sync-chaos run`'s exit status when a scenario counted a violation (2: the harness failed,
/// 130: interrupted).
const VIOLATIONS: i32 = 1;

/// Runs the scenarios; whether none counted a violation.
pub(crate) fn run(root: &Path, args: &[String]) -> Result<bool> {
    let tools = tools::ensure(true)?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t));
    eprintln!("xtask chaos: building the sync-chaos binary");
    let mut build = testrun::cargo_command();
    build
        .args([
            "build",
            "--quiet",
            "--package",
            "sync-chaos",
            "--bin",
            "sync-chaos",
        ])
        .current_dir(root);
    let status = process::run_foreground(&mut build).map_err(|e| e.to_string())?;
    if process::interrupted() {
        return Err("interrupted".into());
    }
    if !status.success() {
        return Err(format!("building sync-chaos failed ({status})"));
    }
    eprintln!("xtask chaos: starting chronyd and a 3-node NATS cluster on loopback");
    let ntp = Services::start_ntp(&tools)?;
    let mut cmd = std::process::Command::new(target.join("debug").join("sync-chaos"));
    cmd.arg("run")
        .args(args)
        .arg("--out")
        .arg(target.join("sync-chaos"))
        .args(["--ntp", &ntp.ntp_server()])
        // The `stream-nats` scenario's cluster (SYNC_NATS_URLS, SYNC_NATS_NODES, SYNC_NATS_DIR).
        .envs(
            ntp.env()
                .into_iter()
                .filter(|(k, _)| k.starts_with("SYNC_NATS")),
        )
        .current_dir(root);
    let shown = testrun::describe(&cmd);
    eprintln!("xtask chaos: running {shown}");
    let status =
        process::run_foreground(&mut cmd).map_err(|e| format!("cannot run {shown}: {e}"))?;
    drop(ntp);
    match status.code() {
        Some(0) => Ok(true),
        Some(VIOLATIONS) => Ok(false),
        _ if process::interrupted() => Err("interrupted".into()),
        _ => Err(format!("`{shown}` failed ({status})")),
    }
}
