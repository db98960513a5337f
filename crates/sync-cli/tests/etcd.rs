//! syncctl as a process against the harness's etcd cluster (and NTP server): mutual exclusion,
//! the loss → kill timeline, signals and exit codes. Run with `cargo xtask test`.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

const NEEDS: &str = "needs etcd: run `cargo xtask test`";

/// A child that appends `start NS` and `end NS` around a 200 ms stretch to `file`.
fn stamped(file: &std::path::Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo \"start $(date +%s%N)\" >> '{f}'; sleep 0.2; echo \"end $(date +%s%N)\" >> '{f}'",
            f = file.display()
        ),
    ]
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn two_locks_on_one_name_never_overlap() {
    let _ = NEEDS;
    let url = etcd_url("overlap", "ttl=3s");
    let dir = TempDir::new("overlap");
    let procs: Vec<Proc> = (0..4)
        .map(|i| {
            Proc::spawn(
                &format!("holder {i}"),
                syncctl()
                    .args(["--url", &url, "lock", "shared", "--"])
                    .args(stamped(&dir.path(&format!("h{i}")))),
            )
        })
        .collect();
    let mut intervals = Vec::new();
    for (i, p) in procs.into_iter().enumerate() {
        let (status, _, err) = p.finish(Duration::from_secs(60));
        assert_eq!(status.code(), Some(0), "holder {i}: {err}");
        let s = stamps(&dir.path(&format!("h{i}")));
        assert_eq!(s.len(), 2, "holder {i} wrote start and end");
        intervals.push((s[0], s[1]));
    }
    intervals.sort();
    for w in intervals.windows(2) {
        assert!(
            w[0].1 < w[1].0,
            "two holders overlapped: {:?} and {:?}",
            w[0],
            w[1]
        );
        eprintln!(
            "gap between holders: {:.1} ms",
            (w[1].0 - w[0].1) as f64 / 1e6
        );
    }
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn try_on_a_held_lock_exits_75_and_wait_times_out() {
    let url = etcd_url("try", "ttl=3s");
    let dir = TempDir::new("try");
    let (ready, stop) = (dir.path("ready"), dir.path("stop"));
    let holder = Proc::spawn(
        "holder",
        syncctl()
            .args(["--url", &url, "lock", "busy", "--"])
            .args(hold_until(&ready, &stop)),
    );
    wait_for_file(&ready, Duration::from_secs(20));
    let (code, _, err) = run(&["--url", &url, "lock", "busy", "--try", "--", "true"]);
    assert_eq!(code, NOT_ACQUIRED, "{err}");
    assert!(err.contains("held by someone else"), "{err}");
    let (code, _, err) = run(&[
        "--url", &url, "lock", "busy", "--wait", "300ms", "--", "true",
    ]);
    assert_eq!(code, NOT_ACQUIRED, "{err}");
    std::fs::write(&stop, "").unwrap();
    let (status, _, err) = holder.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{err}");
    // Released: free again.
    let (code, _, err) = run(&["--url", &url, "lock", "busy", "--try", "--", "true"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn sigterm_is_forwarded_and_the_lock_released() {
    let url = etcd_url("sigterm", "ttl=3s");
    let dir = TempDir::new("sigterm");
    let ready = dir.path("ready");
    let got = dir.path("got");
    let script = format!(
        "trap 'echo TERM > \"{got}\"; exit 7' TERM; touch '{ready}'; i=0; \
         while [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
        got = got.display(),
        ready = ready.display()
    );
    let p = Proc::spawn(
        "holder",
        syncctl().args(["--url", &url, "lock", "sig", "--", "sh", "-c", &script]),
    );
    wait_for_file(&ready, Duration::from_secs(20));
    p.signal(Signal::SIGTERM);
    let (status, _, err) = p.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(7), "the child's own status: {err}");
    assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), "TERM");
    let (code, _, err) = run(&["--url", &url, "lock", "sig", "--try", "--", "true"]);
    assert_eq!(code, 0, "released after the child exited: {err}");

    // A child that does not handle it dies of it: 128 + 15.
    let ready2 = dir.path("ready2");
    let p = Proc::spawn(
        "holder",
        syncctl()
            .args(["--url", &url, "lock", "sig", "--"])
            .args(hold_until(&ready2, &dir.path("never"))),
    );
    wait_for_file(&ready2, Duration::from_secs(20));
    p.signal(Signal::SIGTERM);
    let (status, _, err) = p.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(128 + 15), "{err}");
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn sigterm_while_waiting_gives_up_the_place() {
    let url = etcd_url("waitsig", "ttl=3s");
    let dir = TempDir::new("waitsig");
    let (ready, stop) = (dir.path("ready"), dir.path("stop"));
    let holder = Proc::spawn(
        "holder",
        syncctl()
            .args(["--url", &url, "lock", "w", "--"])
            .args(hold_until(&ready, &stop)),
    );
    wait_for_file(&ready, Duration::from_secs(20));
    let waiter = Proc::spawn(
        "waiter",
        syncctl().args(["--url", &url, "--json", "lock", "w", "--", "true"]),
    );
    let rt = runtime();
    rt.block_on(async {
        let prefix = prefix_of(&url);
        let client = admin(&prefix).await;
        sync_etcd::testing::queued(&client, &format!("{prefix}/"), 2).await;
    });
    waiter.signal(Signal::SIGTERM);
    let (status, _, err) = waiter.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(128 + 15), "{err}");
    std::fs::write(&stop, "").unwrap();
    let (status, _, err) = holder.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{err}");
    rt.block_on(async {
        let prefix = prefix_of(&url);
        let client = admin(&prefix).await;
        sync_etcd::testing::queued(&client, &format!("{prefix}/"), 0).await;
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A child that writes a heartbeat every 20 ms to `file`; with `ignore_term` it ignores SIGTERM,
/// so only the SIGKILL at the end of the grace stops it.
fn heartbeat(file: &std::path::Path, ignore_term: bool) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "{}i=0; while [ $i -lt 3000 ]; do echo \"beat $(date +%s%N)\" >> '{}'; sleep 0.02; i=$((i+1)); done",
            if ignore_term { "trap '' TERM; " } else { "" },
            file.display()
        ),
    ]
}

/// A successor's child: records when it started.
fn first_stamp(file: &std::path::Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("echo \"start $(date +%s%N)\" >> '{}'", file.display()),
    ]
}

/// Runs the loss scenario: A holds `name` (via `a_url`) with a heartbeat child, B waits (via
/// `b_url`); `cut` takes A's lock away. Returns the margin: B's child's start minus the instant
/// A reported its child dead (and checks A's last heartbeat came before B's start).
fn loss_scenario(
    test: &str,
    a_url: &str,
    b_url: &str,
    ignore_term: bool,
    cut: impl FnOnce(),
) -> f64 {
    let dir = TempDir::new(test);
    let beats = dir.path("beats");
    let b_file = dir.path("b");
    let a = Proc::spawn(
        "A",
        syncctl()
            .args(["--url", a_url, "--json", "lock", "res", "--"])
            .args(heartbeat(&beats, ignore_term)),
    );
    wait_for_file(&beats, Duration::from_secs(20));
    let b = Proc::spawn(
        "B",
        syncctl()
            .args(["--url", b_url, "--json", "lock", "res", "--"])
            .args(first_stamp(&b_file)),
    );
    cut();
    let (a_status, _, a_err) = a.finish(Duration::from_secs(30));
    assert_eq!(
        a_status.code(),
        Some(LOST),
        "A exits with the lost code: {a_err}"
    );
    let killed = event_at(&a_err, "killed").expect("A reports the child stopped");
    let lost = event_at(&a_err, "lost").expect("A reports the loss");
    let (b_status, _, b_err) = b.finish(Duration::from_secs(30));
    assert_eq!(b_status.code(), Some(0), "B ran after A: {b_err}");
    let b_start = stamps(&b_file)[0];
    let last_beat = *stamps(&beats).last().expect("A's child beat");
    let margin_ms = (b_start - killed) as f64 / 1e6;
    eprintln!(
        "{test}: loss reported → child dead {:.1} ms; child dead → successor's command started {margin_ms:.1} ms; \
         last heartbeat {:.1} ms before it",
        (killed - lost) as f64 / 1e6,
        (b_start - last_beat) as f64 / 1e6
    );
    // Nothing of A's child ran after it was reported dead.
    let beats_after = stamps(&beats).iter().filter(|&&t| t > killed).count();
    assert_eq!(beats_after, 0, "A's child beat after it was reported dead");
    margin_ms
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn a_cut_link_kills_the_child_before_anyone_else_holds() {
    let rt = runtime();
    let direct = etcd_url("cut", "ttl=3s");
    let prefix = prefix_of(&direct);
    let proxy = rt.block_on(sync_etcd::testing::CutProxy::start());
    let via = proxy.config(&sync_etcd::EtcdConfig::new(["127.0.0.1:1"]));
    let a_url = format!(
        "etcd://{}/{prefix}?ttl=3s&request_timeout=500ms",
        via.endpoints[0]
    );
    // The child ignores SIGTERM: only the SIGKILL at the end of the grace stops it.
    let margin = loss_scenario("cut", &a_url, &direct, true, || {
        rt.block_on(async {
            let client = admin(&prefix).await;
            sync_etcd::testing::queued(&client, &format!("{prefix}/"), 2).await;
        });
        proxy.cut();
    });
    assert!(
        margin > 0.0,
        "the successor's command started {margin:.1} ms after A's child was killed: must be after"
    );
    eprintln!("KILL MARGIN (cut link, TTL 3 s, child ignoring SIGTERM): {margin:.1} ms");
    drop(proxy);
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn a_revoked_lease_kills_the_child() {
    let rt = runtime();
    let url = etcd_url("revoke", "ttl=3s");
    let prefix = prefix_of(&url);
    let margin = loss_scenario("revoke", &url, &url, false, || {
        rt.block_on(async {
            let client = admin(&prefix).await;
            let keys = sync_etcd::testing::queued(&client, &format!("{prefix}/"), 2).await;
            sync_etcd::testing::revoke(&client, keys[0].lease).await;
        });
    });
    // A revocation frees the lock at once for everyone: no deadline to beat, so the margin is
    // reported, not asserted (see docs/syncctl.md).
    eprintln!(
        "revoke: margin {margin:.1} ms (not guaranteed: a revocation frees the lock at once)"
    );
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn a_semaphore_admits_n_and_a_rwlock_shares_reads() {
    let url = etcd_url("family", "ttl=3s");
    let dir = TempDir::new("family");
    let (r1, r2, stop) = (dir.path("r1"), dir.path("r2"), dir.path("stop"));
    let a = Proc::spawn(
        "sem 1",
        syncctl()
            .args(["--url", &url, "semaphore", "pool", "-n", "2", "--"])
            .args(hold_until(&r1, &stop)),
    );
    let b = Proc::spawn(
        "sem 2",
        syncctl()
            .args(["--url", &url, "semaphore", "pool", "-n", "2", "--"])
            .args(hold_until(&r2, &stop)),
    );
    wait_for_file(&r1, Duration::from_secs(20));
    wait_for_file(&r2, Duration::from_secs(20));
    let (code, _, err) = run(&[
        "--url",
        &url,
        "semaphore",
        "pool",
        "-n",
        "2",
        "--try",
        "--",
        "true",
    ]);
    assert_eq!(code, NOT_ACQUIRED, "{err}");
    let (code, _, err) = run(&[
        "--url",
        &url,
        "semaphore",
        "pool",
        "-n",
        "3",
        "--try",
        "--",
        "true",
    ]);
    assert_eq!(code, USAGE, "a mismatched permit count: {err}");
    std::fs::write(&stop, "").unwrap();
    for p in [a, b] {
        let (status, _, err) = p.finish(Duration::from_secs(20));
        assert_eq!(status.code(), Some(0), "{err}");
    }

    let (w1, w2, stop2) = (dir.path("w1"), dir.path("w2"), dir.path("stop2"));
    let r_a = Proc::spawn(
        "reader 1",
        syncctl()
            .args(["--url", &url, "rwlock", "cfg", "--read", "--"])
            .args(hold_until(&w1, &stop2)),
    );
    let r_b = Proc::spawn(
        "reader 2",
        syncctl()
            .args(["--url", &url, "rwlock", "cfg", "--read", "--"])
            .args(hold_until(&w2, &stop2)),
    );
    wait_for_file(&w1, Duration::from_secs(20));
    wait_for_file(&w2, Duration::from_secs(20));
    let (code, _, err) = run(&[
        "--url", &url, "rwlock", "cfg", "--write", "--try", "--", "true",
    ]);
    assert_eq!(code, NOT_ACQUIRED, "{err}");
    std::fs::write(&stop2, "").unwrap();
    for p in [r_a, r_b] {
        let (status, _, err) = p.finish(Duration::from_secs(20));
        assert_eq!(status.code(), Some(0), "{err}");
    }
    let (code, _, err) = run(&[
        "--url", &url, "rwlock", "cfg", "--write", "--try", "--", "true",
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn leader_prints_nobody_then_the_leader_and_watch_follows() {
    let url = etcd_url("leader", "ttl=3s");
    let dir = TempDir::new("leader");
    let (code, out, err) = run(&["--url", &url, "leader", "grp"]);
    assert_eq!((code, out.trim()), (0, "nobody"), "{err}");

    let mut watch = Proc::spawn(
        "watch",
        syncctl().args(["--url", &url, "--json", "leader", "grp", "--watch"]),
    );
    let lines = watch.lines();
    let next_leader = || -> Option<String> {
        let l = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the watch prints a line for each change");
        let v: serde_json::Value = serde_json::from_str(&l).expect("JSON lines");
        v["leader"]["id"].as_str().map(str::to_owned)
    };
    assert_eq!(next_leader(), None, "the current state first: nobody");
    let (ready, stop) = (dir.path("ready"), dir.path("stop"));
    let elected = Proc::spawn(
        "elect",
        syncctl()
            .args([
                "--url", &url, "elect", "grp", "--id", "alpha", "--value", "v1", "--",
            ])
            .args(hold_until(&ready, &stop)),
    );
    wait_for_file(&ready, Duration::from_secs(20));
    let (code, out, err) = run(&["--url", &url, "leader", "grp"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("alpha (term "), "{out}");
    let (_, out, _) = run(&["--url", &url, "--json", "leader", "grp"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["leader"]["id"], "alpha", "{out}");
    assert_eq!(v["leader"]["value"], "v1", "{out}");

    std::fs::write(&stop, "").unwrap();
    let (status, _, err) = elected.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{err}");
    let (_, out, _) = run(&["--url", &url, "leader", "grp"]);
    assert_eq!(out.trim(), "nobody");
    assert_eq!(next_leader().as_deref(), Some("alpha"));
    assert_eq!(next_leader(), None, "every change, nobody included");

    watch.signal(Signal::SIGTERM);
    let (status, _, err) = watch.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{err}");
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn elect_loses_office_when_its_lease_is_revoked() {
    let url = etcd_url("elect-loss", "ttl=3s");
    let dir = TempDir::new("elect-loss");
    let beats = dir.path("beats");
    let p = Proc::spawn(
        "elect",
        syncctl()
            .args(["--url", &url, "elect", "grp", "--id", "a", "--"])
            .args(heartbeat(&beats, false)),
    );
    wait_for_file(&beats, Duration::from_secs(20));
    runtime().block_on(async {
        let prefix = prefix_of(&url);
        let client = admin(&prefix).await;
        let keys = sync_etcd::testing::queued(&client, &format!("{prefix}/"), 1).await;
        sync_etcd::testing::revoke(&client, keys[0].lease).await;
    });
    let (status, _, err) = p.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(LOST), "{err}");
    assert!(err.contains("LOST"), "{err}");
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn time_against_the_harness_ntp_server() {
    let server = std::env::var("SYNC_NTP_SERVER")
        .expect("SYNC_NTP_SERVER is not set: run `cargo xtask test` (it starts chronyd)");
    let (code, out, err) = run(&["--json", "time", "--server", &server]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["state"], "synchronized", "{out}");
    let offset = v["offset_ms"].as_f64().expect("an offset");
    assert!(
        offset.abs() < 1000.0,
        "a loopback NTP server is within 1 s: {out}"
    );
    assert_eq!(v["servers"][0]["verdict"], "selected", "{out}");
    let (code, out, _) = run(&["time", "--server", &server]);
    assert_eq!(code, 0);
    assert!(out.contains("offset") && out.contains("selected"), "{out}");
    // A server that does not answer: no time, each verdict shown, exit 69.
    let (code, out, _) = run(&["time", "--server", "127.0.0.1:9", "--timeout", "300ms"]);
    assert_eq!(code, UNAVAILABLE, "{out}");
    assert!(out.contains("FAILED"), "{out}");
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn a_task_worker_runs_a_shell_command_per_job() {
    let url = etcd_url("task", "ttl=3s");
    let worker = Proc::spawn(
        "worker",
        syncctl().args([
            "--url",
            &url,
            "task",
            "worker",
            "upper",
            "--",
            "sh",
            "-c",
            "test \"$SYNC_JOB_PAYLOAD\" != '\"fail\"' && tr a-z A-Z",
        ]),
    );
    let (code, out, err) = run(&[
        "--url",
        &url,
        "task",
        "submit",
        "upper",
        "--payload",
        "\"hello\"",
        "--wait-for-worker",
        "--wait",
    ]);
    assert_eq!((code, out.trim()), (0, "HELLO"), "{err}");
    let (code, id, err) = run(&[
        "--url",
        &url,
        "task",
        "submit",
        "upper",
        "--payload",
        "{\"a\":1}",
    ]);
    assert_eq!(code, 0, "{err}");
    let id = id.trim();
    let (code, out, err) = run(&["--url", &url, "--json", "task", "wait", id]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["output"]["A"], 1, "{out}");
    let (code, out, _) = run(&["--url", &url, "--json", "task", "status", id]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["state"], "succeeded", "{out}");
    // A failing command fails the job: exit 1.
    let (code, _, err) = run(&[
        "--url",
        &url,
        "task",
        "submit",
        "upper",
        "--payload",
        "\"fail\"",
        "--max-attempts",
        "1",
        "--wait",
    ]);
    assert_eq!(code, 1, "{err}");
    worker.signal(Signal::SIGTERM);
    let (status, _, err) = worker.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{err}");
}
