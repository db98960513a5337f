//! A 3-member etcd cluster and a chronyd NTP server on loopback, in a temporary directory.
//!
//! Commands follow `shared/notes/services.md`. Ports are picked free by binding port 0.
//! [`Services`] stops everything it started when dropped (also on panic) unless it was
//! [detached](Services::detach) by `cargo xtask etcd up`.

use std::env;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
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
    timing: Timing,
    tools: Tools,
    members: Vec<Member>,
    ntp_port: u16,
    ntp_cmdport: u16,
    chronyd: Option<Proc>,
    /// Set by [`Services::detach`]: dropping then leaves the processes running.
    detached: bool,
}

/// The raft timing of the cluster's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timing {
    /// `--heartbeat-interval=50 --election-timeout=500`: failovers in ≈ 0.5–0.7 s, for a quick
    /// test suite.
    Fast,
    /// etcd's defaults (heartbeat 100 ms, election timeout 1000 ms): what users run, and what
    /// the fault scenarios must survive (elections of 1–2 s and more).
    EtcdDefault,
}

impl Timing {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Timing::Fast => &["--heartbeat-interval=50", "--election-timeout=500"],
            Timing::EtcdDefault => &[],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Timing::Fast => "fast",
            Timing::EtcdDefault => "default",
        }
    }
}

impl Services {
    /// Starts the cluster and chronyd and waits until every member is healthy and chronyd
    /// answers. On failure everything started is stopped and the error shows the logs.
    pub(crate) fn start(tools: &Tools) -> Result<Services> {
        Services::start_with(tools, MEMBERS, Timing::Fast)
    }

    /// [`start`](Services::start) with `size` etcd members (1 for `bench --single`).
    pub(crate) fn start_sized(tools: &Tools, size: usize) -> Result<Services> {
        Services::start_with(tools, size, Timing::Fast)
    }

    /// [`start`](Services::start) with `size` etcd members on the given raft timing.
    pub(crate) fn start_with(tools: &Tools, size: usize, timing: Timing) -> Result<Services> {
        let mut attempt = 1;
        loop {
            let mut services = Services::spawn(tools, size, timing)?;
            let ready = services
                .wait_etcd(&(0..size).collect::<Vec<_>>(), ETCD_READY)
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
    fn spawn(tools: &Tools, size: usize, timing: Timing) -> Result<Services> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let unique = format!("{DIR_PREFIX}{}-{nanos}", std::process::id());
        let dir = env::temp_dir().join(&unique);
        let ports = free_tcp_ports(2 * size)?;
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
            timing,
            tools: tools.clone(),
            members,
            ntp_port: udp[0],
            ntp_cmdport: udp[1],
            chronyd: None,
            detached: false,
        };
        // From here on, dropping `services` stops whatever was spawned.
        for i in 0..size {
            services.members[i].proc = Some(services.spawn_member(i)?);
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
            .args(["--initial-cluster-state", "new"])
            .args(self.timing.flags());
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
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let members = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.client_url()))
            .collect::<Vec<_>>();
        vec![
            (
                "SYNC_ETCD_ENDPOINTS".into(),
                self.member_endpoints().join(","),
            ),
            (
                "SYNC_NTP_SERVER".into(),
                format!("127.0.0.1:{}", self.ntp_port),
            ),
            ("SYNC_ETCD_DATA_DIR".into(), self.dir.display().to_string()),
            ("SYNC_ETCD_MEMBERS".into(), members.join(",")),
        ]
    }

    /// Client URL of each member, in member order (m1, m2, m3).
    pub(crate) fn member_endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Crashes member `i` (SIGKILL) and waits until it is gone.
    #[allow(dead_code)] // for `bench` and `chaos`; exercised by the tests below
    pub(crate) fn kill_member(&mut self, i: usize) -> Result<()> {
        let m = self
            .members
            .get_mut(i)
            .ok_or_else(|| format!("no etcd member {i}"))?;
        if let Some(mut p) = m.proc.take() {
            p.kill();
        }
        Ok(())
    }

    /// Starts member `i` again with the same command (its data directory is kept, so it
    /// rejoins). A running member is first stopped gracefully; the old process is always
    /// waited for, since an early restart fails with "address already in use". Does not
    /// wait for the member to be healthy: see [`Services::wait_healthy`].
    #[allow(dead_code)] // for `bench` and `chaos`; exercised by the tests below
    pub(crate) fn restart_member(&mut self, i: usize) -> Result<()> {
        let m = self
            .members
            .get_mut(i)
            .ok_or_else(|| format!("no etcd member {i}"))?;
        if let Some(mut p) = m.proc.take() {
            p.terminate(GRACE);
        }
        let proc = self.spawn_member(i)?;
        self.members[i].proc = Some(proc);
        Ok(())
    }

    /// Waits up to `timeout` until the members `idx` (0-based) are healthy.
    #[allow(dead_code)] // for `bench` and `chaos`; exercised by the tests below
    pub(crate) fn wait_healthy(&mut self, idx: &[usize], timeout: Duration) -> Result<()> {
        if let Some(&i) = idx.iter().find(|&&i| i >= self.members.len()) {
            return Err(format!("no etcd member {i}"));
        }
        self.wait_etcd(idx, timeout).map_err(StartError::message)
    }

    /// Index of the member that is the raft leader now, from `etcdctl endpoint status`
    /// against the running members; `None` if no member claims it.
    pub(crate) fn leader_index(&mut self) -> Result<Option<usize>> {
        let running: Vec<String> = self
            .members
            .iter_mut()
            .filter_map(|m| m.running().then(|| m.client_url()))
            .collect();
        if running.is_empty() {
            return Ok(None);
        }
        let output = Command::new(&self.tools.etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", running.join(",")))
            .args([
                "--dial-timeout=1s",
                "--command-timeout=2s",
                "--write-out=simple",
                "endpoint",
                "status",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.tools.etcdctl.display()))?;
        // `URL, ID, VERSION, DB SIZE, IS LEADER, IS LEARNER, RAFT TERM, …` per member.
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(", ").collect();
            let url = fields.first()?.trim();
            (fields.get(4)?.trim() == "true")
                .then(|| self.members.iter().position(|m| m.client_url() == url))
                .flatten()
        }))
    }

    /// Whether every member and chronyd is running.
    pub(crate) fn all_running(&mut self) -> bool {
        self.members.iter_mut().all(Member::running)
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

    /// Leaves the processes running past this xtask process, recording them in `state`
    /// for [`Services::load`].
    pub(crate) fn detach(mut self, state: &Path) -> Result<()> {
        self.write_state(state)?;
        self.detached = true;
        Ok(())
    }

    /// Records directory, ports and pids in `state` (a simple line format).
    fn write_state(&self, state: &Path) -> Result<()> {
        let mut text = String::from(
            "# written by `cargo xtask etcd up`; `cargo xtask etcd down` stops these\n",
        );
        let _ = writeln!(text, "dir {}", self.dir.display());
        let _ = writeln!(text, "token {}", self.token);
        let _ = writeln!(text, "timing {}", self.timing.name());
        for m in &self.members {
            let pid = m.proc.as_ref().map_or(0, Proc::pid);
            let _ = writeln!(
                text,
                "member {} {} {} {pid}",
                m.name, m.client_port, m.peer_port
            );
        }
        let pid = self.chronyd.as_ref().map_or(0, Proc::pid);
        let _ = writeln!(text, "chronyd {} {} {pid}", self.ntp_port, self.ntp_cmdport);
        if let Some(parent) = state.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        fs::write(state, text).map_err(|e| format!("cannot write {}: {e}", state.display()))
    }

    /// Reads services started by an earlier `detach`; `None` if there is no state file.
    /// Dropping the result leaves the processes running: call [`Services::stop`].
    pub(crate) fn load(state: &Path, tools: Tools) -> Result<Option<Services>> {
        let text = match fs::read_to_string(state) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", state.display())),
        };
        let bad = |n: usize| {
            format!(
                "malformed line {} in {}; stop its processes by hand and delete the file",
                n + 1,
                state.display()
            )
        };
        let (mut dir, mut token, mut members, mut chronyd) = (None, None, Vec::new(), None);
        let mut timing = Timing::Fast;
        for (n, line) in text.lines().enumerate() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let num = |s: &str| s.parse::<u32>().map_err(|_| bad(n));
            let port = |s: &str| s.parse::<u16>().map_err(|_| bad(n));
            let detached = |pid: u32, name: &str| {
                (pid != 0).then(|| Proc::Detached {
                    pid,
                    name: name.to_string(),
                })
            };
            match fields.as_slice() {
                [] => {}
                [c, ..] if c.starts_with('#') => {}
                ["dir", _, ..] => {
                    dir = Some(PathBuf::from(line.trim_start()["dir".len()..].trim()))
                }
                ["token", t] => token = Some(t.to_string()),
                ["timing", "fast"] => timing = Timing::Fast,
                ["timing", "default"] => timing = Timing::EtcdDefault,
                ["member", name, client, peer, pid] => members.push(Member {
                    name: name.to_string(),
                    client_port: port(client)?,
                    peer_port: port(peer)?,
                    proc: detached(num(pid)?, "etcd"),
                }),
                ["chronyd", p, cmd, pid] => {
                    chronyd = Some((port(p)?, port(cmd)?, detached(num(pid)?, "chronyd")))
                }
                _ => return Err(bad(n)),
            }
        }
        let incomplete = || {
            format!(
                "incomplete {}; stop its processes by hand and delete it",
                state.display()
            )
        };
        let (ntp_port, ntp_cmdport, chronyd) = chronyd.ok_or_else(incomplete)?;
        Ok(Some(Services {
            dir: dir.ok_or_else(incomplete)?,
            token: token.ok_or_else(incomplete)?,
            timing,
            tools,
            members,
            ntp_port,
            ntp_cmdport,
            chronyd,
            detached: true,
        }))
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        if !self.detached {
            self.stop();
        }
    }
}

/// The verdict line of `etcdctl endpoint health` output (etcdctl also logs retries).
fn health_summary(output: &str) -> &str {
    let lines = || output.lines().map(str::trim).filter(|l| !l.is_empty());
    lines()
        .find(|l| l.contains(" is healthy") || l.contains(" is unhealthy"))
        .or_else(|| lines().next_back())
        .unwrap_or("no output")
}

/// `n` distinct free loopback TCP ports (all bound at once so none repeats).
fn free_tcp_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("cannot bind a loopback TCP port: {e}"))?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().map_err(|e| e.to_string())?.port()))
        .collect()
}

/// `n` distinct free loopback UDP ports.
fn free_udp_ports(n: usize) -> Result<Vec<u16>> {
    let sockets = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("cannot bind a loopback UDP port: {e}"))?;
    sockets
        .iter()
        .map(|s| Ok(s.local_addr().map_err(|e| e.to_string())?.port()))
        .collect()
}

/// Sends one SNTP client request to 127.0.0.1:`port`; true on a synchronised server reply.
pub(crate) fn ntp_answers(port: u16, timeout: Duration) -> bool {
    let probe = || -> io::Result<bool> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(timeout))?;
        sock.connect(("127.0.0.1", port))?;
        let mut request = [0u8; 48];
        request[0] = 0x1b; // LI 0, version 3, mode 3 (client)
        sock.send(&request)?;
        let mut reply = [0u8; 128];
        let n = sock.recv(&mut reply)?;
        let (leap, mode, stratum) = (reply[0] >> 6, reply[0] & 0x07, reply[1]);
        Ok(n >= 48 && mode == 4 && leap != 3 && stratum != 0)
    };
    probe().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Tools {
        crate::tools::ensure(false).expect("etcd, etcdctl, protoc and chronyd must be installed")
    }

    #[test]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    fn cluster_survives_a_member_kill_and_restart() {
        let mut s = Services::start(&tools()).expect("services start");
        let dir = s.dir.clone();
        assert_eq!(s.member_endpoints().len(), MEMBERS);
        let env = s.env();
        assert!(env
            .iter()
            .any(|(k, v)| k == "SYNC_NTP_SERVER" && v.starts_with("127.0.0.1:")));

        s.kill_member(1).expect("kill m2");
        assert!(!s.members[1].running());
        s.wait_healthy(&[0, 2], Duration::from_secs(10))
            .expect("quorum of two");
        s.restart_member(1).expect("restart m2");
        s.wait_healthy(&[0, 1, 2], Duration::from_secs(30))
            .expect("m2 rejoins");
        // A graceful restart of a running member works too.
        s.restart_member(0).expect("restart m1");
        s.wait_healthy(&[0, 1, 2], Duration::from_secs(30))
            .expect("m1 rejoins");

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
