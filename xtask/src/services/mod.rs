//! A 3-member etcd cluster, a 3-node NATS JetStream cluster ([`nats`]) and a chronyd NTP server
//! on loopback, in a temporary directory (for `chaos`, chronyd alone; for `bench`, no NATS).
//!
//! Commands follow `shared/notes/services.md`. Ports are picked free by binding port 0.
//! [`Services`] stops everything it started when dropped (also on panic) unless it was
//! [detached](Services::detach) by `cargo xtask etcd up`.

mod nats;
mod net;
mod state;

use nats::{NatsNode, NATS_READY};
use net::{free_tcp_ports, free_udp_ports, health_summary, ntp_answers};

use std::env;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::process::{self, Proc, GRACE};
use crate::tools::Tools;
use crate::Result;

/// Number of etcd members.
const MEMBERS: usize = 3;
/// How long the cluster gets to become healthy.
const ETCD_READY: Duration = Duration::from_secs(30);
/// How long chronyd gets to answer NTP requests.
const NTP_READY: Duration = Duration::from_secs(15);
/// Start-up attempts when a process exits early (e.g. a picked port was taken meanwhile).
const ATTEMPTS: u32 = 3;
/// Raft timing of the members for the test suite: failovers in ≈ 0.5–0.7 s. (The chaos
/// scenarios run etcd's defaults, on a cluster of their own: `sync_chaos::cluster`; the bench
/// runs etcd's defaults unless asked for this.)
const FAST_TIMING: [&str; 2] = ["--heartbeat-interval=50", "--election-timeout=500"];

/// The raft timing the etcd members run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timing {
    /// [`FAST_TIMING`]: quick failovers for the test suite.
    Fast,
    /// etcd's defaults (heartbeat 100 ms, election 1000 ms): what users run.
    EtcdDefaults,
}
/// Prefix of the temporary directory's name; `stop` removes only such directories.
const DIR_PREFIX: &str = "sync-xtask-";

/// One etcd member.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    proc: Option<Proc>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::running)
    }
}

/// Why start-up failed: a process exited (worth retrying with new ports) or anything else.
enum StartError {
    Exited(String),
    Other(String),
}

impl StartError {
    fn message(self) -> String {
        match self {
            StartError::Exited(m) | StartError::Other(m) => m,
        }
    }
}

/// The running services. See the module docs.
#[derive(Debug)]
pub(crate) struct Services {
    dir: PathBuf,
    token: String,
    tools: Tools,
    members: Vec<Member>,
    ntp_port: u16,
    ntp_cmdport: u16,
    chronyd: Option<Proc>,
    /// The NATS nodes.
    nats: Vec<NatsNode>,
    /// The etcd members' raft timing.
    timing: Timing,
    /// Set by [`Services::detach`]: dropping then leaves the processes running.
    detached: bool,
}

impl Services {
    /// Starts the cluster and chronyd and waits until every member is healthy and chronyd
    /// answers. On failure everything started is stopped and the error shows the logs.
    pub(crate) fn start(tools: &Tools) -> Result<Services> {
        Services::start_with(tools, MEMBERS, nats::NODES, Timing::Fast)
    }

    /// chronyd and the NATS nodes, for `chaos` (whose scenarios start an etcd cluster of
    /// their own; `stream-nats` kills and restarts these NATS nodes).
    pub(crate) fn start_ntp(tools: &Tools) -> Result<Services> {
        Services::start_with(tools, 0, nats::NODES, Timing::Fast)
    }

    /// For `bench`: `size` etcd members (1 for `bench --single`) with `timing`, and the NATS
    /// nodes (the event scenarios need them).
    pub(crate) fn start_sized(tools: &Tools, size: usize, timing: Timing) -> Result<Services> {
        Services::start_with(tools, size, nats::NODES, timing)
    }

    /// `size` etcd members with `timing`, `nats` NATS nodes and chronyd.
    fn start_with(tools: &Tools, size: usize, nats: usize, timing: Timing) -> Result<Services> {
        let mut attempt = 1;
        loop {
            let mut services = Services::spawn(tools, size, nats, timing)?;
            let ready = services
                .wait_etcd(&(0..size).collect::<Vec<_>>(), ETCD_READY)
                .and_then(|()| services.wait_nats(NATS_READY))
                .and_then(|()| services.wait_ntp(NTP_READY));
            match ready {
                Ok(()) => return Ok(services),
                Err(StartError::Exited(m)) if attempt < ATTEMPTS && !process::interrupted() => {
                    eprintln!(
                        "xtask: {m}; retrying with other ports\n{}",
                        services.log_tails()
                    );
                }
                Err(e) => {
                    let message = match &e {
                        StartError::Other(m) if m == "interrupted" => e.message(),
                        _ => format!("{}\n{}", e.message(), services.log_tails()),
                    };
                    services.stop();
                    return Err(message);
                }
            }
            services.stop();
            attempt += 1;
        }
    }

    /// Creates the directory, picks ports and spawns every process, without waiting.
    fn spawn(tools: &Tools, size: usize, nats: usize, timing: Timing) -> Result<Services> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let unique = format!("{DIR_PREFIX}{}-{nanos}", std::process::id());
        let dir = env::temp_dir().join(&unique);
        let ports = free_tcp_ports(2 * size + 3 * nats)?;
        let udp = free_udp_ports(2)?;
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{}", i + 1),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                proc: None,
            })
            .collect();
        let mut services = Services {
            dir,
            token: unique,
            tools: tools.clone(),
            members,
            ntp_port: udp[0],
            ntp_cmdport: udp[1],
            chronyd: None,
            nats: NatsNode::numbered(&ports[2 * size..]),
            timing,
            detached: false,
        };
        // From here on, dropping `services` stops whatever was spawned.
        for i in 0..size {
            services.members[i].proc = Some(services.spawn_member(i)?);
        }
        for i in 0..nats {
            services.nats[i].proc = Some(services.spawn_nats(i)?);
        }
        services.chronyd = Some(services.spawn_chronyd()?);
        Ok(services)
    }

    fn spawn_member(&self, i: usize) -> Result<Proc> {
        let m = &self.members[i];
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = Command::new(&self.tools.etcd);
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args(["--listen-client-urls", &m.client_url()])
            .args(["--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"]);
        if self.timing == Timing::Fast {
            cmd.args(FAST_TIMING);
        }
        // ETCD_* variables would silently add configuration.
        for (key, _) in env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD") {
                cmd.env_remove(key);
            }
        }
        self.spawn_logged(cmd, &format!("{}.log", m.name), "etcd")
    }

    fn spawn_chronyd(&self) -> Result<Proc> {
        let dir = self.dir.display();
        // `-x` never touches the system clock. No driftfile: with `-x` it is useless, and
        // chronyd (running as _chrony after dropping root) cannot write it here. The Unix
        // command socket is disabled (`bindcmdaddress /`); chronyc uses the UDP cmdport.
        let conf = format!(
            "port {}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\n\
             cmdport {}\nbindcmdaddress 127.0.0.1\nbindcmdaddress /\n\
             pidfile {dir}/chronyd.pid\nlogdir {dir}\n",
            self.ntp_port, self.ntp_cmdport
        );
        let conf_path = self.dir.join("chrony.conf");
        fs::write(&conf_path, conf)
            .map_err(|e| format!("cannot write {}: {e}", conf_path.display()))?;
        let mut cmd = Command::new(&self.tools.chronyd);
        cmd.args(["-d", "-x", "-f"]).arg(&conf_path);
        if !crate::tools::is_root() {
            cmd.arg("-U");
        }
        self.spawn_logged(cmd, "chronyd.log", "chronyd")
    }

    /// Spawns `cmd` in its own process group, in the directory, with its output appended
    /// to `log` there.
    fn spawn_logged(&self, mut cmd: Command, log: &str, what: &str) -> Result<Proc> {
        let path = self.dir.join(log);
        let open = || OpenOptions::new().create(true).append(true).open(&path);
        let (out, err) = open()
            .and_then(|f| Ok((f.try_clone()?, f)))
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let child = cmd
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {what} ({}): {e}",
                    cmd.get_program().to_string_lossy()
                )
            })?;
        Ok(Proc::Child(child))
    }

    /// Waits until every member in `idx` answers `etcdctl endpoint health`.
    fn wait_etcd(
        &mut self,
        idx: &[usize],
        timeout: Duration,
    ) -> std::result::Result<(), StartError> {
        if idx.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let endpoints: Vec<String> = idx.iter().map(|&i| self.members[i].client_url()).collect();
        loop {
            if process::interrupted() {
                return Err(StartError::Other("interrupted".into()));
            }
            for &i in idx {
                if !self.members[i].running() {
                    return Err(StartError::Exited(format!(
                        "etcd member {} exited during start-up",
                        self.members[i].name
                    )));
                }
            }
            let (healthy, output) = self.etcd_health(&endpoints);
            if healthy {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartError::Other(format!(
                    "etcd did not become healthy within {} s; last `etcdctl endpoint health`:\n{}",
                    timeout.as_secs(),
                    output.trim_end()
                )));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `etcdctl endpoint health` against `endpoints`: (all healthy, its output).
    fn etcd_health(&self, endpoints: &[String]) -> (bool, String) {
        let output = Command::new(&self.tools.etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args([
                "--dial-timeout=1s",
                "--command-timeout=2s",
                "endpoint",
                "health",
            ])
            .stdin(Stdio::null())
            .output();
        match output {
            Ok(o) => (
                o.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            ),
            Err(e) => (
                false,
                format!("cannot run {}: {e}", self.tools.etcdctl.display()),
            ),
        }
    }

    /// Waits until chronyd answers an SNTP request with a synchronised reply.
    fn wait_ntp(&mut self, timeout: Duration) -> std::result::Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            if process::interrupted() {
                return Err(StartError::Other("interrupted".into()));
            }
            if !self.chronyd.as_mut().is_some_and(Proc::running) {
                return Err(StartError::Exited("chronyd exited during start-up".into()));
            }
            if ntp_answers(self.ntp_port, Duration::from_millis(300)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartError::Other(format!(
                    "chronyd did not answer NTP on 127.0.0.1:{} within {} s",
                    self.ntp_port,
                    timeout.as_secs()
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of every log, for error messages.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        let logs = self
            .members
            .iter()
            .map(|m| format!("{}.log", m.name))
            .chain(self.nats.iter().map(|n| format!("{}.log", n.name)))
            .chain(["chronyd.log".to_string()]);
        for log in logs {
            let path = self.dir.join(&log);
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            let _ = writeln!(out, "--- last lines of {} ---", path.display());
            for line in tail {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    /// Variables for the tests:
    /// - `SYNC_ETCD_ENDPOINTS`: client URLs, comma-separated (`http://127.0.0.1:P,...`)
    /// - `SYNC_NTP_SERVER`: `127.0.0.1:PORT` of chronyd (UDP)
    /// - `SYNC_ETCD_DATA_DIR`: the temporary directory (member data in `DIR/m1`, ...)
    /// - `SYNC_ETCD_MEMBERS`: `m1=http://127.0.0.1:P,...` (member name = client URL)
    /// - with NATS, `SYNC_NATS_URLS`, `SYNC_NATS_NODES`, `SYNC_NATS_DIR` (see [`nats`])
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let members = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.client_url()))
            .collect::<Vec<_>>();
        let mut env = vec![
            (
                "SYNC_ETCD_ENDPOINTS".into(),
                self.member_endpoints().join(","),
            ),
            ("SYNC_NTP_SERVER".into(), self.ntp_server()),
            ("SYNC_ETCD_DATA_DIR".into(), self.dir.display().to_string()),
            ("SYNC_ETCD_MEMBERS".into(), members.join(",")),
        ];
        env.extend(self.nats_env());
        env
    }

    /// `127.0.0.1:PORT` of chronyd (UDP).
    pub(crate) fn ntp_server(&self) -> String {
        format!("127.0.0.1:{}", self.ntp_port)
    }

    /// Client URL of each member, in member order (m1, m2, m3).
    pub(crate) fn member_endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Whether every member, NATS node and chronyd is running.
    pub(crate) fn all_running(&mut self) -> bool {
        self.members.iter_mut().all(Member::running)
            && self.nats_running()
            && self.chronyd.as_mut().is_some_and(Proc::running)
    }

    /// Stops every process (SIGTERM, up to 5 s, then SIGKILL; waits for each) and removes
    /// the temporary directory. Idempotent.
    ///
    /// Members stop one after the other: a leader stopping on SIGTERM first hands its
    /// leadership to a connected peer, and if that peer is itself shutting down the hand-over
    /// times out after about 5 s. One at a time, the transfer goes to a live peer (or, for
    /// the last member, is skipped), so each member exits within a fraction of a second.
    pub(crate) fn stop(&mut self) {
        let mut chronyd = self.chronyd.take();
        if let Some(p) = &mut chronyd {
            p.signal("TERM");
        }
        for m in &mut self.members {
            if let Some(mut p) = m.proc.take() {
                p.terminate(GRACE);
            }
        }
        self.stop_nats();
        if let Some(mut p) = chronyd {
            p.terminate(GRACE);
        }
        let is_ours = self
            .dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(DIR_PREFIX));
        if is_ours && self.dir.exists() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("xtask: warning: cannot remove {}: {e}", self.dir.display());
            }
        }
    }

    /// One line per process: (healthy, description).
    pub(crate) fn status(&mut self) -> Vec<(bool, String)> {
        let mut lines = Vec::new();
        for i in 0..self.members.len() {
            let url = self.members[i].client_url();
            let pid = self.members[i].proc.as_ref().map_or(0, Proc::pid);
            let line = if self.members[i].running() {
                let (healthy, output) = self.etcd_health(std::slice::from_ref(&url));
                let verdict = if healthy { "healthy" } else { "UNHEALTHY" };
                (
                    healthy,
                    format!(
                        "etcd {} {url} pid {pid}: {verdict} ({})",
                        self.members[i].name,
                        health_summary(&output)
                    ),
                )
            } else {
                (
                    false,
                    format!("etcd {} {url} pid {pid}: NOT RUNNING", self.members[i].name),
                )
            };
            lines.push(line);
        }
        lines.extend(self.nats_status());
        let pid = self.chronyd.as_ref().map_or(0, Proc::pid);
        let addr = format!("127.0.0.1:{}", self.ntp_port);
        lines.push(if !self.chronyd.as_mut().is_some_and(Proc::running) {
            (false, format!("chronyd {addr} pid {pid}: NOT RUNNING"))
        } else if ntp_answers(self.ntp_port, Duration::from_secs(1)) {
            (
                true,
                format!("chronyd {addr} pid {pid}: running, answers NTP"),
            )
        } else {
            (
                false,
                format!("chronyd {addr} pid {pid}: running, but NOT answering NTP"),
            )
        });
        lines
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        if !self.detached {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Tools {
        crate::tools::ensure(false).expect("etcd, etcdctl, protoc and chronyd must be installed")
    }

    #[test]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    fn services_start_and_stop_everything() {
        let mut s = Services::start(&tools()).expect("services start");
        let dir = s.dir.clone();
        assert_eq!(s.member_endpoints().len(), MEMBERS);
        let env = s.env();
        assert!(env
            .iter()
            .any(|(k, v)| k == "SYNC_NTP_SERVER" && v.starts_with("127.0.0.1:")));
        assert!(s.all_running());

        let pids: Vec<u32> = s
            .members
            .iter()
            .filter_map(|m| m.proc.as_ref().map(Proc::pid))
            .collect();
        s.stop();
        assert!(!dir.exists(), "stop removes the directory");
        for pid in pids {
            assert!(
                !process::alive(pid, "etcd"),
                "etcd {pid} still running after stop"
            );
        }
    }

    #[test]
    #[ignore = "needs chronyd: run `cargo xtask test`"]
    fn ntp_alone_for_chaos() {
        let mut s = Services::start_ntp(&tools()).expect("chronyd starts");
        assert!(s.member_endpoints().is_empty());
        let port: u16 = s.ntp_server()["127.0.0.1:".len()..].parse().unwrap();
        assert!(net::ntp_answers(port, Duration::from_secs(1)));
        assert!(s.all_running());
        s.stop();
        assert!(!s.all_running());
    }

    #[test]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    fn state_file_round_trips() {
        let s = Services::start(&tools()).expect("services start");
        let state = s.dir.with_extension("state");
        let dir = s.dir.clone();
        s.write_state(&state).expect("write state");
        let mut loaded = Services::load(&state, tools())
            .expect("readable")
            .expect("present");
        assert_eq!(loaded.dir, dir);
        assert!(loaded.all_running());
        assert!(loaded.status().iter().all(|(ok, _)| *ok));
        loaded.stop();
        assert!(!loaded.all_running());
        assert!(!dir.exists());
        fs::remove_file(&state).expect("remove state");
        drop(s); // reaps the children
    }
}
