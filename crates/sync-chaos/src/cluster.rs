//! A 3-member etcd cluster of a test's own, on free loopback ports and etcd's **default** timing
//! (heartbeat 100 ms, election timeout 1000 ms: what users run), whose members the test can kill
//! with SIGKILL and restart. The harness's shared cluster runs a faster timing to keep the suite
//! quick; that timing hides false losses during raft elections, so failover tests use this one.
//!
//! Every process it starts is stopped when it is dropped (also on panic), and its directory is
//! removed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::secure::{free_port, need, run, scratch_dir};

/// One member: its name, ports and process.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// The cluster; see the module docs.
#[derive(Debug)]
pub struct Cluster {
    etcd: PathBuf,
    etcdctl: PathBuf,
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
    /// Extra flags for every member (e.g. a faster timing); empty for etcd's defaults.
    flags: Vec<String>,
}

impl Cluster {
    /// Starts `size` members on etcd's default timing and waits until every one is healthy.
    /// Needs `etcd` and `etcdctl` (Debian `etcd-server`, `etcd-client`).
    pub fn start(size: usize) -> Result<Cluster, String> {
        Self::start_with(size, &[])
    }

    /// As [`start`](Self::start), with extra flags for every member.
    pub fn start_with(size: usize, flags: &[&str]) -> Result<Cluster, String> {
        let dir = scratch_dir("cluster")?;
        let mut members = Vec::new();
        for i in 1..=size {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_port()?,
                peer_port: free_port()?,
                child: None,
            });
        }
        let mut cluster = Cluster {
            etcd: need("etcd", "etcd-server")?,
            etcdctl: need("etcdctl", "etcd-client")?,
            token: format!("sync-chaos-{:x}", rand::random::<u64>()),
            dir,
            members,
            flags: flags.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        let all: Vec<usize> = (0..size).collect();
        cluster.wait_healthy(&all, Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let initial = self.initial_cluster();
        let m = &self.members[i];
        let client_url = format!("http://127.0.0.1:{}", m.client_port);
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.etcd);
        cmd.args(["--name", &m.name, "--data-dir"])
            .arg(self.dir.join(&m.name))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start etcd member {}: {e}", m.name))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// The client endpoints (`127.0.0.1:PORT`), one per member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// Waits until each member in `idx` answers `endpoint health`.
    pub fn wait_healthy(&mut self, idx: &[usize], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        for &i in idx {
            loop {
                let ep = format!("http://127.0.0.1:{}", self.members[i].client_port);
                let health = run(Command::new(&self.etcdctl)
                    .env("ETCDCTL_API", "3")
                    .arg(format!("--endpoints={ep}"))
                    .args(["--dial-timeout=1s", "--command-timeout=2s"])
                    .args(["endpoint", "health"]));
                if health.is_ok() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "etcd member {} not healthy within {timeout:?}: {health:?}\n{}",
                        self.members[i].name,
                        self.log_tail(i)
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join(format!("{}.log", self.members[i].name)))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The index of the member that is the raft leader now, as the running members report it.
    pub fn leader(&self) -> Result<usize, String> {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect();
        let out = run(Command::new(&self.etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", live.join(",")))
            .args(["--dial-timeout=1s", "--command-timeout=2s"])
            .args(["endpoint", "status", "-w", "json"]))?;
        // `[{"Endpoint": "http://…", "Status": {"header": {"member_id": …}, "leader": …}}, …]`
        let status: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("bad endpoint status {out:?}: {e}"))?;
        for ep in status.as_array().into_iter().flatten() {
            let member = ep["Status"]["header"]["member_id"].as_u64();
            let leader = ep["Status"]["leader"].as_u64();
            if member.is_none() || member != leader {
                continue;
            }
            let port: Option<u16> = ep["Endpoint"]
                .as_str()
                .and_then(|e| e.rsplit(':').next())
                .and_then(|p| p.parse().ok());
            if let Some(i) = self
                .members
                .iter()
                .position(|m| Some(m.client_port) == port)
            {
                return Ok(i);
            }
        }
        Err(format!("no member reports being the leader:\n{out}"))
    }

    /// Waits until some running member is the leader, and returns it.
    pub fn wait_leader(&self, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.leader() {
                Ok(i) => return Ok(i),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Kills member `i` with SIGKILL and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts member `i` (its data directory keeps its identity) and waits until it is healthy.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.start_member(i)?;
        self.wait_healthy(&[i], Duration::from_secs(30))
    }

    /// Starts member `i` again (killing it first if it runs) without waiting: a member alone,
    /// with the others still down, cannot become healthy. See [`wait_healthy`](Self::wait_healthy).
    pub fn start_member(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        self.spawn(i)
    }

    /// The number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
