//! syncctl against the in-process backend and bad input: needs no server.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

#[test]
fn runs_the_command_with_its_token_and_exits_with_its_status() {
    let (code, out, err) = run(&[
        "--url",
        "local",
        "lock",
        "job",
        "--",
        "sh",
        "-c",
        "echo token=$SYNC_FENCING_TOKEN name=$SYNC_NAME; exit 5",
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(out.contains("token=1 name=job"), "{out}");
    assert!(
        err.contains("acquired lock \"job\"") && err.contains("released"),
        "{err}"
    );
}

#[test]
fn a_command_killed_by_a_signal_gives_128_plus_it() {
    let (code, _, err) = run(&[
        "--url",
        "local",
        "lock",
        "job",
        "--",
        "sh",
        "-c",
        "kill -KILL $$",
    ]);
    assert_eq!(code, 128 + 9, "{err}");
}

#[test]
fn every_primitive_runs_on_local() {
    for args in [
        &["semaphore", "pool", "-n", "2", "--", "true"][..],
        &["rwlock", "cfg", "--read", "--", "true"],
        &["rwlock", "cfg", "--write", "--try", "--", "true"],
        &[
            "elect",
            "g",
            "--id",
            "me",
            "--",
            "sh",
            "-c",
            "test \"$SYNC_LEADER_TERM\" -ge 1",
        ],
    ] {
        let mut all = vec!["--url", "local"];
        all.extend_from_slice(args);
        let (code, _, err) = run(&all);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    let (code, out, _) = run(&["--url", "local", "leader", "g"]);
    assert_eq!((code, out.trim()), (0, "nobody"));
}

#[test]
fn sigint_is_forwarded_to_the_command() {
    let dir = TempDir::new("sigint");
    let (ready, stop) = (dir.path("ready"), dir.path("stop"));
    let p = Proc::spawn(
        "syncctl",
        syncctl()
            .args(["--url", "local", "lock", "job", "--"])
            .args(hold_until(&ready, &stop)),
    );
    wait_for_file(&ready, Duration::from_secs(20));
    p.signal(Signal::SIGINT);
    let (status, _, err) = p.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(128 + 2), "{err}");
    assert!(err.contains("forwarding SIGINT"), "{err}");
}

#[test]
fn bad_input_is_a_usage_error_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["lock", "x", "--", "true"], "no backend"),
        (
            &["--url", "redis://h", "lock", "x", "--", "true"],
            "unknown backend",
        ),
        (
            &["--url", "etcd://h:notaport", "lock", "x", "--", "true"],
            "port",
        ),
        (
            &["--url", "local", "lock", "x", "--ttl", "abc", "--", "true"],
            "abc",
        ),
        (
            &["--url", "local", "lock", "x", "--ttl", "0s", "--", "true"],
            "ttl",
        ),
        (&["--url", "local", "lock", "x"], "CMD"),
        (
            &[
                "--url", "local", "lock", "x", "--try", "--wait", "1s", "--", "true",
            ],
            "cannot be used",
        ),
        (&["--url", "local", "lock", "", "--", "true"], "name"),
        (&["--url", "local", "rwlock", "x", "--", "true"], "--read"),
        (
            &["--url", "local", "semaphore", "x", "-n", "0", "--", "true"],
            "permit",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        let (code, out, err) = run(args);
        assert_eq!(code, USAGE, "{args:?}: {out}{err}");
        assert!(
            err.to_lowercase().contains(&needle.to_lowercase()),
            "{args:?}: expected {needle:?} in: {err}"
        );
    }
}

#[test]
fn a_missing_command_exits_127() {
    let (code, _, err) = run(&["--url", "local", "lock", "x", "--", "/nonexistent/cmd"]);
    assert_eq!(code, NOT_FOUND, "{err}");
    assert!(err.contains("/nonexistent/cmd"), "{err}");
}

#[test]
fn an_unreachable_etcd_exits_69() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let url = format!("etcd://127.0.0.1:{port}/x");
    let (code, _, err) = run(&[
        "--url",
        &url,
        "--connect-timeout",
        "1s",
        "lock",
        "x",
        "--",
        "true",
    ]);
    assert_eq!(code, UNAVAILABLE, "{err}");
    assert!(
        err.contains(&port.to_string()),
        "the message names the endpoint: {err}"
    );
}

#[test]
fn json_events_are_one_object_per_line() {
    let (code, _, err) = run(&["--url", "local", "--json", "lock", "j", "--", "true"]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = events(&err)
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        names,
        ["acquired", "started", "exited", "released"],
        "{err}"
    );
}

#[test]
fn time_on_the_system_clock() {
    let (code, out, err) = run(&["--json", "time"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["state"], "system_clock", "{out}");
    assert!(v["error_ms"].as_f64().is_some(), "{out}");
}

/// `GET /metrics` at `addr`: the body, or `None` while nothing answers.
fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// A free loopback port's address (bound, then released for syncctl to take).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn metrics_addr_serves_what_the_run_produced_for_prometheus() {
    let addr = free_addr();
    let dir = TempDir::new("metrics");
    let (ready, stop) = (dir.path("ready"), dir.path("stop"));
    let script = hold_until(&ready, &stop);
    let mut cmd = syncctl();
    cmd.args([
        "--url",
        "local",
        "--metrics-addr",
        &addr,
        "elect",
        "jobs",
        "--id",
        "a",
        "--",
    ])
    .args(&script);
    let mut p = Proc::spawn("syncctl elect", &mut cmd);
    wait_for_file(&ready, Duration::from_secs(20));
    // While it leads: a grant of the leadership, and the is-leader gauge of its group.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        if let Some(body) = scrape(&addr) {
            if body.contains("sync_is_leader") {
                break body;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no metrics served at {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        body.contains("sync_is_leader{group=\"jobs\"} 1"),
        "is-leader gauge while leading:\n{body}"
    );
    assert!(
        body.lines().any(|l| l.starts_with("sync_grants_total{")
            && l.contains("primitive=\"leader\"")
            && l.contains("backend=\"local\"")
            && l.ends_with(" 1")),
        "one grant of the leadership:\n{body}"
    );
    assert!(body.contains("sync_wait_seconds"), "{body}");
    std::fs::write(&stop, b"").unwrap();
    assert!(p.wait(Duration::from_secs(20)).success());
}

#[test]
fn a_taken_metrics_addr_is_a_usage_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = run(&[
        "--url",
        "local",
        "--metrics-addr",
        &addr,
        "lock",
        "x",
        "--",
        "true",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot serve metrics"), "{err}");
}

#[test]
fn event_publish_on_local_prints_the_offset() {
    let (code, out, err) = run(&["--url", "local", "event", "publish", "t", "hello"]);
    assert_eq!((code, out.as_str()), (0, "1\n"), "{err}");
    let (code, out, err) = run(&[
        "--url", "local", "--json", "event", "publish", "t", "x", "--header", "k=v",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v, serde_json::json!({"topic": "t", "offset": 1}));
    let (code, out, err) = run_with_stdin(
        &["--url", "local", "event", "publish", "t", "--stdin"],
        b"payload\n",
    );
    assert_eq!((code, out.trim()), (0, "1"), "{err}");
    // An event over the local backend's 1 MiB limit: refused, the limit named.
    let big = vec![b'x'; (1 << 20) + 1];
    let (code, _, err) = run_with_stdin(
        &["--url", "local", "event", "publish", "t", "--stdin"],
        &big,
    );
    assert_eq!(code, USAGE, "{err}");
    assert!(err.contains("1048576"), "{err}");
}

#[test]
fn event_bad_input_is_a_usage_error_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["event", "publish", "t", "p"], "no backend"),
        (
            &["--url", "local", "event", "publish", "", "p"],
            "invalid topic",
        ),
        (&["--url", "local", "event", "publish", "t"], "--stdin"),
        (
            &["--url", "local", "event", "publish", "t", "p", "--stdin"],
            "cannot be used",
        ),
        (
            &[
                "--url", "local", "event", "publish", "t", "p", "--header", "novalue",
            ],
            "KEY=VALUE",
        ),
        (
            &[
                "--url", "local", "event", "publish", "t", "p", "--header", "k=1", "--header",
                "k=2",
            ],
            "twice",
        ),
        (
            &[
                "--url",
                "local",
                "event",
                "publish",
                "t",
                "p",
                "--retain-events",
                "0",
            ],
            "max_events",
        ),
        (
            &[
                "--url",
                "local",
                "event",
                "tail",
                "t",
                "--from",
                "yesterday",
            ],
            "RFC 3339",
        ),
        (
            &["--url", "local", "event", "tail", "t", "--from", "0"],
            "start at 1",
        ),
        (
            &["--url", "local", "event", "tail", "t", "--count", "0"],
            "count",
        ),
        (
            &["--url", "local", "event", "tail", "t", "--ack-wait", "1s"],
            "--group",
        ),
        (
            &["--url", "local", "event", "tail", "t", "--group", ""],
            "invalid group",
        ),
        (
            &[
                "--url",
                "nats://127.0.0.1:4222/app",
                "lock",
                "x",
                "--",
                "true",
            ],
            "serves only `syncctl event`",
        ),
        (
            &[
                "--url",
                "nats://127.0.0.1:4222/app",
                "--ca",
                "/nonexistent",
                "event",
                "publish",
                "t",
                "p",
            ],
            "without TLS",
        ),
        (
            &[
                "--url",
                "nats://127.0.0.1:4222/bad_prefix",
                "event",
                "publish",
                "t",
                "p",
            ],
            "prefix",
        ),
    ];
    for (args, needle) in cases {
        let (code, out, err) = run(args);
        assert_eq!(code, USAGE, "{args:?}: {out}{err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in: {err}"
        );
    }
}

#[test]
fn event_tail_stops_on_sigterm_with_exit_0() {
    for extra in [&[][..], &["--group", "g"]] {
        let mut args = vec![
            "--url", "local", "--json", "event", "tail", "t", "--from", "earliest",
        ];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn("tail", syncctl().args(&args));
        let expected = if extra.is_empty() {
            "subscribed"
        } else {
            "joined"
        };
        let _stderr = p.await_event(expected, Duration::from_secs(20));
        p.signal(Signal::SIGTERM);
        let (status, out, _) = p.finish(Duration::from_secs(20));
        assert_eq!(status.code(), Some(0), "{extra:?}");
        assert!(out.is_empty(), "nothing was published: {out}");
    }
}

#[test]
fn an_unreachable_nats_exits_69() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let url = format!("nats://127.0.0.1:{port}/x");
    let (code, _, err) = run(&[
        "--url",
        &url,
        "--connect-timeout",
        "1s",
        "event",
        "publish",
        "t",
        "p",
    ]);
    assert_eq!(code, UNAVAILABLE, "{err}");
    assert!(err.contains(&port.to_string()), "names the endpoint: {err}");
}
