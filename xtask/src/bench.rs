//! `cargo xtask bench [--quick] [--only SUBSTRING] [--single] [--fast-timing] [--scaling]`:
//! starts the services, runs the `sync-bench` scenarios (each beside its baseline in the same
//! run), and writes their rows to `target/sync-bench/report.json` and a chart to `report.svg`.
//! With `--scaling` it runs the scaling series instead (throughput against clients and worker
//! processes) and writes `target/sync-bench/scaling.json` and `scaling.svg`.
//!
//! etcd runs its default raft timing (heartbeat 100 ms, election 1000 ms), what users run;
//! `--fast-timing` gives it the test suite's 50/500 ms instead.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

use crate::services::{Services, Timing};
use crate::{process, testrun, tools, Result};

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let tools = tools::ensure(true)?;
    let single = args.iter().any(|a| a == "--single");
    // Passed on to sync-bench, which then prints scaling points instead of report rows.
    let scaling = args.iter().any(|a| a == "--scaling");
    let timing = if args.iter().any(|a| a == "--fast-timing") {
        Timing::Fast
    } else {
        Timing::EtcdDefaults
    };
    let args: Vec<&String> = args
        .iter()
        .filter(|a| *a != "--single" && *a != "--fast-timing")
        .collect();
    let size = if single { 1 } else { 3 };
    let shown_timing = match timing {
        Timing::Fast => "fast raft timing (heartbeat 50 ms, election 500 ms)",
        Timing::EtcdDefaults => "etcd's default raft timing (heartbeat 100 ms, election 1000 ms)",
    };
    eprintln!(
        "xtask bench: starting a {size}-member etcd cluster ({shown_timing}), a 3-node NATS \
         cluster and chronyd on loopback"
    );
    let services = Services::start_sized(&tools, size, timing)?;
    let mut cmd = testrun::cargo_command();
    cmd.args([
        "run",
        "--quiet",
        "--release",
        "--package",
        "sync-bench",
        "--",
    ])
    .args(args)
    .current_dir(root)
    .stdin(Stdio::null())
    .process_group(0)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in services.env() {
        cmd.env(k, v);
    }
    let shown = testrun::describe(&cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    process::set_foreground(child.id());
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut rows: Vec<serde_json::Value> = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
        if !line.starts_with('{') {
            println!("{line}");
        } else {
            match serde_json::from_str(&line) {
                Ok(row) => rows.push(row),
                Err(e) => eprintln!("xtask bench: warning: a row that is not JSON ({e}): {line}"),
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {shown}: {e}"))?;
    process::clear_foreground();
    drop(services);
    let dir = root.join("target").join("sync-bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if scaling {
        write_scaling(&dir, &rows)?;
    } else {
        write_report(&dir, &rows)?;
    }
    if !status.success() {
        return Err(format!("{shown} failed ({status})"));
    }
    Ok(())
}

fn write(path: &Path, text: String) -> Result<()> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `report.json` (the rows) and `report.svg` (their bar chart).
fn write_report(dir: &Path, rows: &[serde_json::Value]) -> Result<()> {
    let report = dir.join("report.json");
    let json = serde_json::to_string_pretty(rows).map_err(|e| e.to_string())?;
    write(&report, json + "\n")?;
    eprintln!(
        "xtask bench: {} rows written to {}",
        rows.len(),
        report.display()
    );
    let chart = dir.join("report.svg");
    let bars = crate::chart::bars(rows);
    write(
        &chart,
        crate::chart::svg(&bars, "sync: benchmarks against their baselines"),
    )?;
    eprintln!("xtask bench: chart written to {}", chart.display());
    Ok(())
}

/// `scaling.json` (the points) and `scaling.svg` (their line charts); rows that are not points
/// are left out of both, with a warning.
fn write_scaling(dir: &Path, rows: &[serde_json::Value]) -> Result<()> {
    let points: Vec<&serde_json::Value> =
        rows.iter().filter(|r| r.get("series").is_some()).collect();
    if points.len() < rows.len() {
        eprintln!(
            "xtask bench: warning: {} rows without `series` left out of the scaling points",
            rows.len() - points.len()
        );
    }
    let path = dir.join("scaling.json");
    let json = serde_json::to_string_pretty(&points).map_err(|e| e.to_string())?;
    write(&path, json + "\n")?;
    eprintln!(
        "xtask bench: {} points written to {}",
        points.len(),
        path.display()
    );
    let chart = dir.join("scaling.svg");
    let drawn = crate::chart::points(rows);
    write(
        &chart,
        crate::chart::scaling_svg(
            &drawn,
            "sync: how cost grows with load, ours and the baseline",
        ),
    )?;
    eprintln!("xtask bench: chart written to {}", chart.display());
    Ok(())
}
