//! Running `syncctl` as a process in tests: paths, URLs for the harness's etcd, child
//! processes that are always stopped, and waiting on files with a deadline.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The exit codes of `docs/syncctl.md`.
pub const USAGE: i32 = 2;
pub const UNAVAILABLE: i32 = 69;
pub const NOT_ACQUIRED: i32 = 75;
pub const LOST: i32 = 76;
pub const NOT_FOUND: i32 = 127;

/// The binary under test.
pub fn syncctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_syncctl"));
    c.env_remove("SYNC_URL").env_remove("SYNC_PASSWORD");
    c
}

/// A fresh directory for one test's files, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "syncctl-{test}-{}-{:x}",
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&p).expect("create the test directory");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// The harness's endpoints as a syncctl URL under a fresh prefix: panics (fails the test) if
/// `SYNC_ETCD_ENDPOINTS` is not set.
pub fn etcd_url(test: &str, query: &str) -> String {
    let hosts: Vec<String> = sync_etcd::testing::endpoints()
        .iter()
        .map(|e| e.trim_start_matches("http://").to_owned())
        .collect();
    let prefix = sync_etcd::testing::unique_prefix(&format!("cli-{test}"));
    format!("etcd://{}/{prefix}?{query}", hosts.join(","))
}

/// The key prefix of an `etcd_url`.
pub fn prefix_of(url: &str) -> String {
    let after = url.split_once("//").map_or(url, |(_, r)| r);
    let path = after.split_once('/').map_or("", |(_, p)| p);
    path.split('?').next().unwrap_or("").to_owned()
}

/// An admin connection to the harness's etcd, under `prefix`; panics (fails the test) if etcd
/// is not there though the harness said it is.
pub async fn admin(prefix: &str) -> sync_etcd::EtcdClient {
    let cfg = sync_etcd::EtcdConfig::new(sync_etcd::testing::endpoints())
        .with_prefix(prefix)
        .with_connect_timeout(Duration::from_secs(10));
    sync_etcd::testing::connect(cfg).await
}

/// A running process, stopped when dropped: SIGTERM (syncctl forwards it to its command), then
/// SIGKILL after 3 s.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn syncctl");
        Proc {
            child,
            name: name.to_owned(),
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal syncctl");
    }

    /// Waits for it to exit; panics if it does not within `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for it to exit: its status, or `None` if it still runs after `limit`.
    pub fn wait_at_most(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its stdout, line by line, as they come (read on a thread of its own).
    pub fn lines(&mut self) -> std::sync::mpsc::Receiver<String> {
        use std::io::BufRead;
        let stdout = self.child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// Its stderr, line by line, as they come (read on a thread of its own).
    pub fn err_lines(&mut self) -> std::sync::mpsc::Receiver<String> {
        use std::io::BufRead;
        let stderr = self.child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// Waits until it prints the JSON event `name` on stderr (run it with `--json`); panics
    /// after `limit`. Returns the stderr receiver for later lines.
    pub fn await_event(
        &mut self,
        name: &str,
        limit: Duration,
    ) -> std::sync::mpsc::Receiver<String> {
        let rx = self.err_lines();
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_default();
                    if v["event"] == name {
                        return rx;
                    }
                    assert!(v["event"] != "error", "{}: {l}", self.name);
                }
                Err(_) => panic!("{} did not report {name:?} within {limit:?}", self.name),
            }
        }
    }

    /// Waits for it to exit and returns (status, stdout, stderr).
    pub fn finish(mut self, limit: Duration) -> (ExitStatus, String, String) {
        let status = self.wait(limit);
        let mut out = String::new();
        let mut err = String::new();
        use std::io::Read;
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, out, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(self.pid(), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs syncctl to completion with a 60 s limit: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let p = Proc::spawn("syncctl", syncctl().args(args));
    let (status, out, err) = p.finish(Duration::from_secs(60));
    (status.code().unwrap_or(-1), out, err)
}

/// Runs syncctl to completion with `input` on its stdin (60 s limit): (exit code, stdout,
/// stderr).
pub fn run_with_stdin(args: &[&str], input: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    let mut child = syncctl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn syncctl");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input).expect("write syncctl's stdin");
    drop(stdin);
    let p = Proc {
        child,
        name: "syncctl".to_owned(),
    };
    let (status, out, err) = p.finish(Duration::from_secs(60));
    (status.code().unwrap_or(-1), out, err)
}

/// The JSON objects of stdout, one per line; panics on a line that is not one.
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `syncctl --url URL --json event publish TOPIC PAYLOAD [extra…]`: the offset it printed;
/// panics unless it exits 0 with `{"topic": TOPIC, "offset": N}`.
pub fn publish(url: &str, topic: &str, payload: &str, extra: &[&str]) -> u64 {
    let mut args = vec!["--url", url, "--json", "event", "publish", topic, payload];
    args.extend_from_slice(extra);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "publish {payload:?}: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["topic"], topic, "{out}");
    v["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no offset: {out}"))
}

/// Waits until `path` exists; panics after `limit`. Polls the event with a deadline.
pub fn wait_for_file(path: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The numbers (nanoseconds since the epoch) in a file of `date +%s%N` lines.
pub fn stamps(path: &Path) -> Vec<i128> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect()
}

/// A shell command that signals it started (`ready`), then waits for `stop` (at most 60 s).
pub fn hold_until(ready: &Path, stop: &Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "touch '{}'; i=0; while [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
            ready.display(),
            stop.display()
        ),
    ]
}

/// The JSON events syncctl printed on stderr with `--json`.
pub fn events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `at_unix_ns` of the first event named `name`.
pub fn event_at(stderr: &str, name: &str) -> Option<i128> {
    events(stderr)
        .iter()
        .find(|e| e["event"] == name)
        .and_then(|e| e["at_unix_ns"].as_i64().map(i128::from))
}

/// Publishes five events (headers, `--stdin`, a payload with a newline) to `url` and tails them
/// from the earliest: the offsets `publish` printed, in order, with their payloads and headers.
/// The same case for every backend a URL names (etcd, NATS).
pub fn publish_then_tail_in_order(url: &str) {
    let topic = "orders";
    let mut offsets = vec![publish(
        url,
        topic,
        "one",
        &["--header", "k=v", "--header", "n=1"],
    )];
    for p in ["two", "three\nlines"] {
        offsets.push(publish(url, topic, p, &[]));
    }
    let (code, out, err) = run_with_stdin(
        &["--url", url, "--json", "event", "publish", topic, "--stdin"],
        b"from stdin\xff",
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    offsets.push(v["offset"].as_u64().expect("an offset"));
    offsets.push(publish(url, topic, "five", &[]));
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets strictly increase: {offsets:?}"
    );

    let (code, out, err) = run(&[
        "--url", url, "--json", "event", "tail", topic, "--from", "earliest", "--count", "5",
    ]);
    assert_eq!(code, 0, "{err}");
    let got = json_lines(&out);
    let seen: Vec<u64> = got.iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(
        seen, offsets,
        "the offsets publish printed, in order: {out}"
    );
    let payloads: Vec<&str> = got
        .iter()
        .map(|e| e["payload"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        payloads,
        ["one", "two", "three\nlines", "", "five"],
        "{out}"
    );
    assert_eq!(
        got[3]["payload_hex"], "66726f6d20737464696eff",
        "bytes that are not UTF-8 come as hex: {out}"
    );
    assert_eq!(got[0]["headers"], serde_json::json!({"k": "v", "n": "1"}));
    assert_eq!(got[0]["topic"], topic);

    // Human output: one line per event, the newline escaped.
    let (code, out, err) = run(&[
        "--url", url, "event", "tail", topic, "--from", "earliest", "--count", "3",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with(&format!("{} ", offsets[0])), "{out}");
    assert!(lines[0].ends_with(" [k=v n=1] one"), "{out}");
    assert!(lines[2].ends_with(" [] three\\nlines"), "{out}");
}
