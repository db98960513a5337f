//! What the scenarios drive: the worker processes of one scenario, the fault schedule's pauses,
//! and the interruption state (SIGINT, SIGTERM, SIGHUP).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::tool;

/// Set by the signal handler.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The message of the error that a pause returns once interrupted.
pub(crate) const INTERRUPTED_MESSAGE: &str = "interrupted";

/// Records SIGINT, SIGTERM and SIGHUP instead of dying, so that the scenario in progress kills
/// its workers and the cluster stops before the runner exits.
pub(crate) fn install_signal_handler() {
    let result = ctrlc::set_handler(|| {
        if !INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("\nsync-chaos: interrupted; stopping the workers and the cluster");
        }
    });
    if let Err(e) = result {
        eprintln!("sync-chaos: warning: cannot install the signal handler ({e}); a Ctrl-C may leave workers running");
    }
}

/// Whether a SIGINT, SIGTERM or SIGHUP was received.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Runs for `d`, unless interrupted. The harness's fault schedule, not synchronisation.
/// `pause(Duration::ZERO)` only checks for an interruption.
pub(crate) fn pause(d: Duration) -> Result<(), String> {
    let end = Instant::now() + d;
    loop {
        if interrupted() {
            return Err(INTERRUPTED_MESSAGE.into());
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50).min(end - now));
    }
}

/// The worker processes of one scenario; whatever is left is killed on drop.
pub(crate) struct Workers {
    bin: PathBuf,
    pub(crate) dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Workers {
    /// No workers yet; they will run `bin` and log into `dir`.
    pub(crate) fn new(bin: &Path, dir: &Path) -> Workers {
        Workers {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            children: Vec::new(),
        }
    }

    /// Starts `sync-chaos <args> --dir DIR --who WHO` in its own process group, stderr to
    /// `WHO.stderr` in the dir.
    pub(crate) fn spawn(&mut self, who: &str, args: &[String]) -> Result<u32, String> {
        let err = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{who}.stderr")))
            .map_err(|e| e.to_string())?;
        let child = Command::new(&self.bin)
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .args(["--who", who])
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let pid = child.id();
        self.children.push((who.to_owned(), child));
        Ok(pid)
    }

    /// Starts `sync-chaos <args>` with piped stdin and stdout, not as a worker (the proxy);
    /// the caller kills it.
    pub(crate) fn spawn_piped(&self, args: &[&str]) -> Result<Child, String> {
        Command::new(&self.bin)
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))
    }

    fn pids_of(&self, prefix: &str) -> Vec<u32> {
        self.children
            .iter()
            .filter(|(w, _)| w.starts_with(prefix))
            .map(|(_, c)| c.id())
            .collect()
    }

    /// `kill -9`, logged as a harness event: the current `role` holder among the workers whose
    /// name starts with `prefix` (or a random one). Returns the victim's name.
    pub(crate) fn kill_one(&mut self, role: &str, prefix: &str) -> Result<Option<String>, String> {
        let among = self.pids_of(prefix);
        if among.is_empty() {
            return Ok(None);
        }
        let pid = tool::victim(&self.dir, role, &among)?;
        tool::kill_logged(&self.dir, pid, role)?;
        Ok(self.reap(pid))
    }

    /// Waits for the killed `pid` and forgets it; returns its name.
    fn reap(&mut self, pid: u32) -> Option<String> {
        let i = self.children.iter().position(|(_, c)| c.id() == pid)?;
        let (who, mut child) = self.children.remove(i);
        let _ = child.wait();
        Some(who)
    }

    /// `kill -9`, logged, of every worker whose name starts with `prefix`.
    pub(crate) fn kill_prefix(&mut self, prefix: &str) -> Result<(), String> {
        for pid in self.pids_of(prefix) {
            tool::kill_logged(&self.dir, pid, "")?;
            self.reap(pid);
        }
        Ok(())
    }

    /// Kills every worker, logged (so their last sections end in the log).
    pub(crate) fn kill_all(&mut self) {
        let pids: Vec<u32> = self.children.iter().map(|(_, c)| c.id()).collect();
        for pid in pids {
            if let Err(e) = tool::kill_logged(&self.dir, pid, "") {
                eprintln!("sync-chaos: {e}");
            }
            self.reap(pid);
        }
    }

    /// Waits up to `limit` for the worker `pid` to exit by itself; whether it did.
    pub(crate) fn wait_exit(&mut self, pid: u32, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !interrupted() {
            if let Some(i) = self.children.iter().position(|(_, c)| c.id() == pid) {
                if matches!(self.children[i].1.try_wait(), Ok(Some(_))) {
                    self.children.remove(i);
                    return true;
                }
            } else {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
