//! Helpers for tests against the NATS cluster `cargo xtask test` starts (feature
//! `conformance`): its URLs (`SYNC_NATS_URLS`), a fresh prefix per test, removing a test's
//! streams, and its nodes (`SYNC_NATS_NODES`, `SYNC_NATS_DIR`) for tests that kill one with
//! `kill -9` and restart it.
//!
//! Tests that need NATS are `#[ignore]`d, so a plain `cargo test` lists them as not run; the
//! harness runs them with `--include-ignored`, and they then fail loudly, never skip, when the
//! variable is missing or the cluster does not answer.

use std::fs::{self, OpenOptions};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::NatsConfig;
use crate::{EventOptions, NatsEvents};

/// The variable the harness sets: comma-separated `nats://127.0.0.1:PORT` URLs.
pub const URLS_VAR: &str = "SYNC_NATS_URLS";

/// The URLs from [`URLS_VAR`]. Panics with instructions if it is not set: a test that asked
/// for NATS must not pass without it.
pub fn urls() -> Vec<String> {
    match std::env::var(URLS_VAR) {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_owned()).collect(),
        _ => panic!(
            "{URLS_VAR} is not set: this test needs a real NATS cluster. Run `cargo xtask test`, \
             or `cargo xtask etcd up` (it starts NATS too) and export the variables it prints."
        ),
    }
}

/// A config for the harness's cluster under a fresh random prefix.
pub fn config(test: &str) -> NatsConfig {
    let test: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    NatsConfig::new(urls())
        .with_prefix(format!("t{test}-{:08x}", rand::random::<u32>()))
        .with_connect_timeout(Duration::from_secs(10))
}

/// Connects to the harness's cluster; panics (fails the test) with the reason if it cannot.
pub async fn connect(cfg: NatsConfig, options: EventOptions) -> NatsEvents {
    match NatsEvents::connect(cfg.clone(), options).await {
        Ok(e) => e,
        Err(e) => panic!(
            "{URLS_VAR} says NATS is at {:?}, but connecting failed: {e}",
            cfg.urls
        ),
    }
}

/// Deletes every stream (with its consumers) under `cfg`'s prefix; returns how many.
pub async fn wipe(events: &NatsEvents) -> usize {
    let prefix = format!("{}_", events.config().prefix);
    let names: Vec<String> = events
        .js()
        .stream_names()
        .filter_map(|n| async move { n.ok() })
        .filter(|n| std::future::ready(n.starts_with(&prefix)))
        .collect()
        .await;
    for n in &names {
        let _ = events.js().delete_stream(n).await;
    }
    names.len()
}

/// One node of the harness's cluster.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its server name (`n1`, …).
    pub name: String,
    /// Its client URL.
    pub url: String,
    dir: PathBuf,
}

impl Node {
    fn conf(&self) -> PathBuf {
        self.dir.join(format!("{}.conf", self.name))
    }

    /// The pid in the node's pid file.
    pub fn pid(&self) -> Option<u32> {
        fs::read_to_string(self.dir.join(format!("{}.pid", self.name)))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn http_port(&self) -> Option<u16> {
        let conf = fs::read_to_string(self.conf()).ok()?;
        conf.lines()
            .find_map(|l| l.strip_prefix("http: 127.0.0.1:"))?
            .trim()
            .parse()
            .ok()
    }

    /// `kill -9` of the node's process; waits until it is gone.
    pub fn kill9(&self) {
        let pid = self.pid().expect("the node's pid file");
        let ok = Command::new("kill").args(["-9", &pid.to_string()]).status();
        assert!(
            ok.is_ok_and(|s| s.success()),
            "kill -9 {pid} ({})",
            self.name
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "{} (pid {pid}) survived kill -9",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the node again from its configuration (same store, same ports) and waits until
    /// it reports JetStream healthy. The harness stops it at the end (from the pid file).
    pub fn restart(&self, timeout: Duration) {
        let log = self.dir.join(format!("{}.log", self.name));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("node log");
        // Not waited for: the node outlives the test, and `cargo xtask` stops it (it reads the
        // pid file the node writes).
        #[allow(clippy::zombie_processes)]
        Command::new("nats-server")
            .arg("-c")
            .arg(self.conf())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("nats-server restarts");
        let port = self
            .http_port()
            .expect("http port in the node's configuration");
        let deadline = Instant::now() + timeout;
        while !healthz(port) {
            assert!(
                Instant::now() < deadline,
                "{} not healthy {timeout:?} after restart",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !matches!(
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next()),
            Some("Z" | "X")
        )
    })
}

fn healthz(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut body = String::new();
    s.write_all(b"GET /healthz?js-enabled-only=true HTTP/1.0\r\n\r\n")
        .is_ok()
        && s.read_to_string(&mut body).is_ok()
        && body.starts_with("HTTP/1.0 200")
}

/// The nodes, from the harness's variables. Panics with instructions if they are not set.
pub fn nodes() -> Vec<Node> {
    let (Some(dir), Ok(nodes)) = (
        std::env::var_os("SYNC_NATS_DIR"),
        std::env::var("SYNC_NATS_NODES"),
    ) else {
        panic!("SYNC_NATS_DIR and SYNC_NATS_NODES are not set: run `cargo xtask test`, or `cargo xtask etcd up` and export what it prints");
    };
    let dir = PathBuf::from(dir);
    nodes
        .split(',')
        .filter_map(|n| n.split_once('='))
        .map(|(name, url)| Node {
            name: name.into(),
            url: url.into(),
            dir: dir.clone(),
        })
        .collect()
}

/// The name of the server leading `topic`'s stream (its raft leader), if known.
pub async fn stream_leader(events: &NatsEvents, topic: &str) -> Option<String> {
    let mut stream = events.existing_stream(topic).await.ok()??;
    let info = stream.info().await.ok()?;
    info.cluster.as_ref()?.leader.clone()
}
