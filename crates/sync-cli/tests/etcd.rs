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

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn event_publish_then_tail_from_earliest_sees_every_payload_in_order() {
    publish_then_tail_in_order(&etcd_url("ev-order", "ttl=3s"));
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn event_tail_from_an_offset_a_time_and_latest() {
    let url = etcd_url("ev-from", "ttl=3s");
    for i in 1..=5 {
        assert_eq!(publish(&url, "t", &format!("p{i}"), &[]), i);
    }
    let (code, out, err) = run(&[
        "--url", &url, "--json", "event", "tail", "t", "--from", "3", "--count", "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let got = json_lines(&out);
    let seen: Vec<(u64, &str)> = got
        .iter()
        .map(|e| {
            (
                e["offset"].as_u64().unwrap(),
                e["payload"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [(3, "p3"), (4, "p4")], "{out}");

    // From the publish time of offset 4: 4 is the first.
    let at = got[1]["published_at"].as_str().expect("a time").to_owned();
    let (code, out, err) = run(&[
        "--url", &url, "--json", "event", "tail", "t", "--from", &at, "--count", "1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_lines(&out)[0]["offset"], 4, "from {at}: {out}");

    // From latest: nothing of the past, only what comes after it subscribed.
    let mut tail = Proc::spawn(
        "tail --from latest",
        syncctl().args([
            "--url", &url, "--json", "event", "tail", "t", "--from", "latest", "--count", "1",
        ]),
    );
    let _stderr = tail.await_event("subscribed", Duration::from_secs(20));
    assert_eq!(publish(&url, "t", "new", &[]), 6);
    let (status, out, _) = tail.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    let got = json_lines(&out);
    assert_eq!(
        (got.len(), &got[0]["offset"], &got[0]["payload"]),
        (1, &6.into(), &"new".into()),
        "{out}"
    );
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn event_group_members_split_the_events_each_once() {
    let url = etcd_url("ev-group", "ttl=3s");
    for i in 1..=10 {
        publish(&url, "jobs", &format!("j{i}"), &[]);
    }
    let member = |n: &str| {
        Proc::spawn(
            "member",
            syncctl().args([
                "--url", &url, "--json", "event", "tail", "jobs", "--group", "g", "--count", n,
            ]),
        )
    };
    let (a, b) = (member("4"), member("6"));
    let mut all = Vec::new();
    for (p, n) in [(a, 4), (b, 6)] {
        let (status, out, err) = p.finish(Duration::from_secs(60));
        assert_eq!(status.code(), Some(0), "{err}");
        let got = json_lines(&out);
        assert_eq!(got.len(), n, "--count {n}: {out}");
        for e in got {
            assert_eq!(e["attempt"], 1, "first deliveries only: {e}");
            assert_eq!(
                e["payload"].as_str(),
                Some(format!("j{}", e["offset"]).as_str()),
                "{e}"
            );
            all.push(e["offset"].as_u64().unwrap());
        }
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=10).collect::<Vec<u64>>(),
        "each event to one member, once"
    );

    // The group's position is durable and acked events are not redelivered: a new member
    // (even one asking for the earliest) gets only what came after.
    publish(&url, "jobs", "j11", &[]);
    let (code, out, err) = run(&[
        "--url", &url, "--json", "event", "tail", "jobs", "--group", "g", "--from", "earliest",
        "--count", "1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_lines(&out)[0]["offset"], 11, "{out}");
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn event_start_dropped_by_retention_exits_65_and_bad_topics_exit_2() {
    let url = etcd_url("ev-trunc", "ttl=3s");
    for i in 1..=4 {
        publish(&url, "t", &format!("p{i}"), &["--retain-events", "2"]);
    }
    let (code, out, err) = run(&[
        "--url", &url, "event", "tail", "t", "--from", "1", "--count", "1",
    ]);
    assert_eq!(code, 65, "{out}{err}");
    assert!(
        err.contains("older than retention") && err.contains("first available offset is 3"),
        "{err}"
    );
    assert!(
        err.contains("--from 3"),
        "the message says how to go on: {err}"
    );
    assert!(out.is_empty(), "nothing printed: {out}");
    let (code, out, err) = run(&[
        "--url", &url, "event", "tail", "t", "--from", "earliest", "--count", "1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("3 ") && out.trim_end().ends_with(" p3"),
        "{out}"
    );

    let long = "x".repeat(100_000);
    for (topic, needle) in [("", "empty"), (long.as_str(), "long")] {
        for args in [
            &["event", "publish", topic, "p"][..],
            &["event", "tail", topic, "--count", "1"],
        ] {
            let mut all = vec!["--url", url.as_str()];
            all.extend_from_slice(args);
            let (code, _, err) = run(&all);
            assert_eq!(code, USAGE, "{err}");
            assert!(
                err.contains("invalid topic") && err.contains(needle),
                "{err}"
            );
        }
    }
}

/// A child that records `start`/`end` stamps in `file`, marks itself started in `dir`, and
/// stays until at least `peers` holders have started (at most 10 s), then 200 ms more.
fn meets_peers(dir: &std::path::Path, file: &std::path::Path, peers: usize) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo \"start $(date +%s%N)\" >> '{f}'; touch '{d}/started.'$$; n=0; \
             while [ $(ls '{d}' | grep -c '^started') -lt {peers} ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done; \
             sleep 0.2; echo \"end $(date +%s%N)\" >> '{f}'",
            f = file.display(),
            d = dir.display()
        ),
    ]
}

/// The most intervals that overlap at one instant.
fn max_overlap(intervals: &[(i128, i128)]) -> usize {
    let mut edges: Vec<(i128, i32)> = intervals
        .iter()
        .flat_map(|&(s, e)| [(s, 1), (e, -1)])
        .collect();
    // At equal instants, ends before starts.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn a_semaphore_of_two_never_runs_three_holders_at_once() {
    let url = etcd_url("sem3", "ttl=3s");
    let dir = TempDir::new("sem3");
    let marks = dir.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let procs: Vec<Proc> = (0..3)
        .map(|i| {
            Proc::spawn(
                &format!("holder {i}"),
                syncctl()
                    .args(["--url", &url, "semaphore", "pool", "-n", "2", "--"])
                    .args(meets_peers(&marks, &dir.path(&format!("h{i}")), 2)),
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
    // Each child waits for a second one: with 2 permits two run together, never three.
    assert_eq!(max_overlap(&intervals), 2, "{intervals:?}");
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn a_rwlock_writer_excludes_readers_until_it_is_done() {
    let url = etcd_url("rw-excl", "ttl=3s");
    let prefix = prefix_of(&url);
    let dir = TempDir::new("rw-excl");
    let (ready, stop, w_end, r_start) = (
        dir.path("ready"),
        dir.path("stop"),
        dir.path("w_end"),
        dir.path("r_start"),
    );
    let mut hold = hold_until(&ready, &stop);
    hold[2].push_str(&format!(
        "; echo \"end $(date +%s%N)\" > '{}'",
        w_end.display()
    ));
    let writer = Proc::spawn(
        "writer",
        syncctl()
            .args(["--url", &url, "rwlock", "cfg", "--write", "--"])
            .args(&hold),
    );
    wait_for_file(&ready, Duration::from_secs(20));
    let (code, _, err) = run(&[
        "--url", &url, "rwlock", "cfg", "--read", "--try", "--", "true",
    ]);
    assert_eq!(code, NOT_ACQUIRED, "a reader while the writer holds: {err}");
    let reader = Proc::spawn(
        "reader",
        syncctl()
            .args(["--url", &url, "rwlock", "cfg", "--read", "--"])
            .args(first_stamp(&r_start)),
    );
    runtime().block_on(async {
        let client = admin(&prefix).await;
        sync_etcd::testing::queued(&client, &format!("{prefix}/"), 2).await;
    });
    assert!(!r_start.exists(), "the reader ran while the writer held");
    std::fs::write(&stop, "").unwrap();
    for p in [writer, reader] {
        let (status, _, err) = p.finish(Duration::from_secs(20));
        assert_eq!(status.code(), Some(0), "{err}");
    }
    let (end, start) = (stamps(&w_end)[0], stamps(&r_start)[0]);
    assert!(
        start > end,
        "the reader started {} ms before the writer ended",
        (end - start) as f64 / 1e6
    );
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn a_job_submitted_before_any_worker_waits_then_runs() {
    let url = etcd_url("task-rt", "ttl=3s");
    let (code, id, err) = run(&[
        "--url",
        &url,
        "task",
        "submit",
        "echo",
        "--payload",
        "{\"n\":7}",
        "--wait-for-worker",
    ]);
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    assert!(!id.is_empty());
    let (code, out, err) = run(&["--url", &url, "--json", "task", "status", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json_lines(&out)[0]["state"],
        "pending",
        "no worker yet: {out}"
    );

    let worker = Proc::spawn(
        "worker",
        syncctl().args(["--url", &url, "task", "worker", "echo", "--", "cat"]),
    );
    let mut wait = Proc::spawn(
        "task wait",
        syncctl().args(["--url", &url, "--json", "task", "wait", &id]),
    );
    if wait.wait_at_most(Duration::from_secs(30)).is_none() {
        let (_, status, _) = run(&["--url", &url, "--json", "task", "status", &id]);
        worker.signal(Signal::SIGTERM);
        let (_, _, worker_err) = worker.finish(Duration::from_secs(30));
        panic!(
            "the job did not end within 30 s; its status: {status}; the worker said: {worker_err}"
        );
    }
    let (status, out, err) = wait.finish(Duration::from_secs(1));
    assert_eq!(status.code(), Some(0), "{err}");
    let v = &json_lines(&out)[0];
    assert_eq!(
        (&v["id"], &v["output"]["n"]),
        (&id.as_str().into(), &7.into()),
        "{out}"
    );
    let (code, out, _) = run(&["--url", &url, "--json", "task", "status", &id]);
    assert_eq!(code, 0);
    let v = &json_lines(&out)[0];
    assert_eq!(
        (&v["state"], &v["attempts"]),
        (&"succeeded".into(), &1.into()),
        "{out}"
    );
    // A job id nobody submitted: exit 75.
    let (code, _, err) = run(&["--url", &url, "task", "status", "no-such-job"]);
    assert_eq!(code, NOT_ACQUIRED, "{err}");
    worker.signal(Signal::SIGTERM);
    let (status, _, err) = worker.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{err}");
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn leader_json_names_the_term_the_leaders_command_got() {
    let url = etcd_url("leader-json", "ttl=3s");
    let dir = TempDir::new("leader-json");
    let (ready, stop, term_file) = (dir.path("ready"), dir.path("stop"), dir.path("term"));
    let mut hold = hold_until(&ready, &stop);
    hold[2] = format!(
        "echo $SYNC_LEADER_TERM > '{}'; {}",
        term_file.display(),
        hold[2]
    );
    let first = Proc::spawn(
        "elect a",
        syncctl()
            .args(["--url", &url, "elect", "grp", "--id", "a", "--"])
            .args(&hold),
    );
    wait_for_file(&ready, Duration::from_secs(20));
    let term: u64 = std::fs::read_to_string(&term_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (code, out, err) = run(&["--url", &url, "--json", "leader", "grp"]);
    assert_eq!(code, 0, "{err}");
    let v = &json_lines(&out)[0];
    assert_eq!(v["group"], "grp", "{out}");
    assert_eq!(
        (&v["leader"]["id"], &v["leader"]["term"]),
        (&"a".into(), &term.into()),
        "{out}"
    );
    std::fs::write(&stop, "").unwrap();
    let (status, _, err) = first.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{err}");
    let (code, out, _) = run(&["--url", &url, "--json", "leader", "grp"]);
    assert_eq!(code, 0);
    assert!(
        json_lines(&out)[0]["leader"].is_null(),
        "nobody after resigning: {out}"
    );
    let (code, out, err) = run(&[
        "--url",
        &url,
        "elect",
        "grp",
        "--id",
        "b",
        "--",
        "sh",
        "-c",
        "echo $SYNC_LEADER_TERM",
    ]);
    assert_eq!(code, 0, "{err}");
    let next: u64 = out.trim().parse().unwrap();
    assert!(next > term, "terms increase: {term} then {next}");
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn lock_try_on_a_free_lock_passes_increasing_tokens_and_the_childs_status() {
    let url = etcd_url("tokens", "ttl=3s");
    let mut tokens = Vec::new();
    for status in [3, 0, 42] {
        let (code, out, err) = run(&[
            "--url",
            &url,
            "lock",
            "res",
            "--try",
            "--",
            "sh",
            "-c",
            &format!("echo $SYNC_FENCING_TOKEN; exit {status}"),
        ]);
        assert_eq!(code, status, "the child's status is syncctl's: {err}");
        assert!(err.contains("released"), "released after the child: {err}");
        tokens.push(out.trim().parse::<u64>().expect("a token"));
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens strictly increase: {tokens:?}"
    );
}

#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn a_job_submitted_by_an_exiting_syncctl_runs_at_once() {
    // The library releases a submitted job in a background transaction; a syncctl that exited
    // before it landed left the job held until the submitter's session lease expired (the
    // library's 60 s submit hold, before that).
    let url = etcd_url("task-release", "ttl=3s");
    let worker = Proc::spawn(
        "worker",
        syncctl().args(["--url", &url, "task", "worker", "echo", "--", "cat"]),
    );
    for i in 0..5 {
        let (code, id, err) = run(&[
            "--url",
            &url,
            "task",
            "submit",
            "echo",
            "--payload",
            &i.to_string(),
            "--wait-for-worker",
        ]);
        assert_eq!(code, 0, "{err}");
        let mut wait = Proc::spawn(
            "task wait",
            syncctl().args(["--url", &url, "task", "wait", id.trim()]),
        );
        if wait.wait_at_most(Duration::from_secs(10)).is_none() {
            let (_, status, _) = run(&["--url", &url, "task", "status", id.trim()]);
            panic!("job {i} did not run within 10 s of its submit (status: {status})");
        }
        let (status, out, err) = wait.finish(Duration::from_secs(1));
        assert_eq!(
            (status.code(), out.trim()),
            (Some(0), i.to_string().as_str()),
            "{err}"
        );
    }
    worker.signal(Signal::SIGTERM);
    let (status, _, err) = worker.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{err}");
}
