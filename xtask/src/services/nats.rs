//! A 3-node NATS JetStream cluster on loopback, beside etcd (`shared/notes/services.md`).
//!
//! Node `nI` gets three free ports (client, cluster route, http monitoring), a configuration
//! file `DIR/nI.conf`, a JetStream store `DIR/nI/` and a pid file `DIR/nI.pid`. The cluster is
//! ready when every node's `/healthz?js-enabled-only=true` says ok and its `/jsz` shows a
//! JetStream meta leader with `cluster_size` equal to the number of nodes.
//!
//! Tests may `kill -9` a node and restart it with `nats-server -c DIR/nI.conf` (the variables
//! `SYNC_NATS_DIR` and `SYNC_NATS_NODES`): the pid file then names the new process, and
//! [`Services::stop`] stops whatever process the pid file names as well as its own child.

use std::fmt::Write as _;
use std::fs;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::net::http_get;
use super::{Services, StartError};
use crate::process::{self, Proc, GRACE};
use crate::Result;

/// Number of NATS nodes started by [`Services::start`].
pub(super) const NODES: usize = 3;
/// How long the cluster gets to elect a JetStream meta leader.
pub(super) const NATS_READY: Duration = Duration::from_secs(30);
/// Name of the cluster (also in the route configuration).
const CLUSTER: &str = "sync";
/// Process name, for liveness checks of pids read from files.
const PROGRAM: &str = "nats-server";

/// One NATS server.
#[derive(Debug)]
pub(super) struct NatsNode {
    pub(super) name: String,
    pub(super) client_port: u16,
    pub(super) route_port: u16,
    pub(super) http_port: u16,
    pub(super) proc: Option<Proc>,
}

impl NatsNode {
    /// `n` nodes named `n1`, `n2`, … on `ports` (3 per node: client, route, http).
    pub(super) fn numbered(ports: &[u16]) -> Vec<NatsNode> {
        ports
            .chunks_exact(3)
            .enumerate()
            .map(|(i, p)| NatsNode {
                name: format!("n{}", i + 1),
                client_port: p[0],
                route_port: p[1],
                http_port: p[2],
                proc: None,
            })
            .collect()
    }

    /// `nats://127.0.0.1:PORT`.
    pub(super) fn client_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    fn running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::running)
    }
}

/// What `/jsz` says about the JetStream meta group: (leader name, cluster size).
fn meta_leader(http_port: u16) -> Option<(String, u64)> {
    let body = http_get(http_port, "/jsz", Duration::from_secs(1)).ok()?;
    let value: serde_json::Value = serde_json::from_str(&body).ok()?;
    let meta = value.get("meta_cluster")?;
    let leader = meta.get("leader")?.as_str()?.to_string();
    let size = meta.get("cluster_size")?.as_u64()?;
    (!leader.is_empty()).then_some((leader, size))
}

/// Whether `/healthz?js-enabled-only=true` answers `{"status":"ok"}`.
fn healthy(http_port: u16) -> bool {
    http_get(
        http_port,
        "/healthz?js-enabled-only=true",
        Duration::from_secs(1),
    )
    .is_ok_and(|body| body.contains("\"ok\""))
}

impl Services {
    /// Writes node `i`'s configuration and starts it.
    pub(super) fn spawn_nats(&self, i: usize) -> Result<Proc> {
        let node = &self.nats[i];
        let routes = self
            .nats
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.route_port))
            .collect::<Vec<_>>()
            .join(", ");
        let dir = self.dir.display();
        let conf = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
             pid_file: \"{dir}/{name}.pid\"\njetstream {{ store_dir: \"{dir}/{name}\" }}\n\
             cluster {{\n  name: {CLUSTER}\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
            name = node.name,
            client = node.client_port,
            http = node.http_port,
            route = node.route_port,
        );
        let path = self.dir.join(format!("{}.conf", node.name));
        fs::write(&path, conf).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mut cmd = Command::new(&self.tools.nats_server);
        cmd.arg("-c").arg(&path);
        self.spawn_logged(cmd, &format!("{}.log", node.name), PROGRAM)
    }

    /// Waits until every node is healthy and the meta group has a leader and every node.
    pub(super) fn wait_nats(&mut self, timeout: Duration) -> std::result::Result<(), StartError> {
        if self.nats.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let size = self.nats.len() as u64;
        loop {
            if process::interrupted() {
                return Err(StartError::Other("interrupted".into()));
            }
            let mut last = Vec::new();
            for node in &mut self.nats {
                if !node.running() {
                    return Err(StartError::Exited(format!(
                        "nats-server {} exited during start-up",
                        node.name
                    )));
                }
                let meta = meta_leader(node.http_port);
                let ok = healthy(node.http_port) && meta.as_ref().is_some_and(|(_, s)| *s == size);
                last.push((ok, node.name.clone(), meta));
            }
            if last.iter().all(|(ok, ..)| *ok) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut shown = String::new();
                for (ok, name, meta) in last {
                    let _ = writeln!(
                        shown,
                        "  {name}: healthy={ok}, meta (leader, size) {meta:?}"
                    );
                }
                return Err(StartError::Other(format!(
                    "NATS JetStream did not elect a meta leader of {size} within {} s:\n{shown}",
                    timeout.as_secs()
                )));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops every node: its own process, and any other one its pid file names (a node a
    /// test killed and restarted).
    pub(super) fn stop_nats(&mut self) {
        for i in 0..self.nats.len() {
            let pid_file = self.dir.join(format!("{}.pid", self.nats[i].name));
            if let Some(mut p) = self.nats[i].proc.take() {
                p.terminate(GRACE);
            }
            let restarted = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .filter(|pid| process::alive(*pid, PROGRAM));
            if let Some(pid) = restarted {
                Proc::Detached {
                    pid,
                    name: PROGRAM.into(),
                }
                .terminate(GRACE);
            }
        }
    }

    /// The pid of node `i`: from its pid file if a live process is there (a restarted node),
    /// else of the process we started.
    fn nats_pid(&self, i: usize) -> Option<u32> {
        let pid_file = self.dir.join(format!("{}.pid", self.nats[i].name));
        fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .filter(|pid| process::alive(*pid, PROGRAM))
            .or_else(|| self.nats[i].proc.as_ref().map(Proc::pid))
    }

    /// Whether every node runs (a restarted one counts).
    pub(super) fn nats_running(&mut self) -> bool {
        (0..self.nats.len()).all(|i| {
            self.nats_pid(i)
                .is_some_and(|pid| process::alive(pid, PROGRAM))
        })
    }

    /// One status line per node.
    pub(super) fn nats_status(&mut self) -> Vec<(bool, String)> {
        let size = self.nats.len() as u64;
        (0..self.nats.len())
            .map(|i| {
                let node = &self.nats[i];
                let url = node.client_url();
                let pid = self.nats_pid(i).unwrap_or(0);
                if pid == 0 || !process::alive(pid, PROGRAM) {
                    return (
                        false,
                        format!("nats {} {url} pid {pid}: NOT RUNNING", node.name),
                    );
                }
                let meta = meta_leader(node.http_port);
                let ok = healthy(node.http_port) && meta.as_ref().is_some_and(|m| m.1 == size);
                let verdict = if ok { "healthy" } else { "UNHEALTHY" };
                let meta = meta.map_or("no meta leader".into(), |(l, s)| {
                    format!("meta leader {l}, cluster size {s}")
                });
                (
                    ok,
                    format!("nats {} {url} pid {pid}: {verdict} ({meta})", node.name),
                )
            })
            .collect()
    }

    /// Variables for the tests (none without NATS nodes):
    /// - `SYNC_NATS_URLS`: `nats://127.0.0.1:P,...`, the client URL of every node
    /// - `SYNC_NATS_NODES`: `n1=nats://127.0.0.1:P,...` (node name = client URL)
    /// - `SYNC_NATS_DIR`: the directory holding `nI.conf`, `nI.pid`, `nI.log`, `nI/` (store)
    pub(super) fn nats_env(&self) -> Vec<(String, String)> {
        if self.nats.is_empty() {
            return Vec::new();
        }
        let urls: Vec<String> = self.nats.iter().map(NatsNode::client_url).collect();
        let nodes: Vec<String> = self
            .nats
            .iter()
            .map(|n| format!("{}={}", n.name, n.client_url()))
            .collect();
        vec![
            ("SYNC_NATS_URLS".into(), urls.join(",")),
            ("SYNC_NATS_NODES".into(), nodes.join(",")),
            ("SYNC_NATS_DIR".into(), self.dir.display().to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs nats-server: run `cargo xtask test`"]
    fn nats_cluster_starts_with_a_meta_leader_and_stops() {
        let tools = crate::tools::ensure(false).expect("the services' programs are installed");
        let mut s = Services::start(&tools).expect("services start");
        assert_eq!(s.nats.len(), NODES);
        assert!(s.nats_status().iter().all(|(ok, _)| *ok));
        let env = s.env();
        let urls = env
            .iter()
            .find(|(k, _)| k == "SYNC_NATS_URLS")
            .map(|(_, v)| v.clone())
            .expect("SYNC_NATS_URLS");
        assert_eq!(urls.split(',').count(), NODES);
        let pids: Vec<u32> = (0..NODES).filter_map(|i| s.nats_pid(i)).collect();
        assert_eq!(pids.len(), NODES);
        s.stop();
        for pid in pids {
            assert!(
                !process::alive(pid, PROGRAM),
                "nats-server {pid} still running"
            );
        }
    }
}
