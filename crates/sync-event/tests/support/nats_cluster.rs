//! The harness's NATS nodes, for tests that kill and restart one (`SYNC_NATS_DIR`,
//! `SYNC_NATS_NODES`, written by `cargo xtask`).

use std::fs::{self, OpenOptions};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One node: its name (`n1`), directory and ports.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
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
        assert!(ok.is_ok_and(|s| s.success()), "kill -9 {pid} ({})", self.name);
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            assert!(Instant::now() < deadline, "{} (pid {pid}) survived kill -9", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the node again from its configuration (same store, same ports) and waits until
    /// it reports JetStream healthy. The harness stops it at the end (from the pid file).
    pub fn restart(&self, timeout: Duration) {
        let log = self.dir.join(format!("{}.log", self.name));
        let out = OpenOptions::new().create(true).append(true).open(&log).expect("node log");
        Command::new("nats-server")
            .arg("-c")
            .arg(self.conf())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("nats-server restarts");
        let port = self.http_port().expect("http port in the node's configuration");
        let deadline = Instant::now() + timeout;
        while !healthz(port) {
            assert!(Instant::now() < deadline, "{} not healthy {timeout:?} after restart", self.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !matches!(s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()), Some("Z" | "X"))
    })
}

fn healthz(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut body = String::new();
    s.write_all(b"GET /healthz?js-enabled-only=true HTTP/1.0\r\n\r\n").is_ok()
        && s.read_to_string(&mut body).is_ok()
        && body.starts_with("HTTP/1.0 200")
}

/// The nodes, from the harness's variables; `None` when they are not set.
pub fn nodes() -> Option<Vec<Node>> {
    let dir = PathBuf::from(std::env::var_os("SYNC_NATS_DIR")?);
    let nodes = std::env::var("SYNC_NATS_NODES").ok()?;
    Some(
        nodes
            .split(',')
            .filter_map(|n| n.split_once('='))
            .map(|(name, url)| Node { name: name.into(), url: url.into(), dir: dir.clone() })
            .collect(),
    )
}
