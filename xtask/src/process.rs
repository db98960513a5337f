//! Process helpers: signals via `kill`, liveness via `/proc`, and the Ctrl-C state.
//!
//! Every process xtask starts runs in its own process group (`process_group(0)`, so its
//! process group id is its pid): a Ctrl-C in the terminal reaches only xtask, which then
//! stops what it started, in order.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Set by the signal handler on SIGINT, SIGTERM or SIGHUP.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Process group of the foreground child (`cargo test`, …) to forward a signal to; 0 = none.
static FOREGROUND_GROUP: AtomicU32 = AtomicU32::new(0);

/// How long a process gets between SIGTERM and SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// Installs the handler for SIGINT, SIGTERM and SIGHUP: it records the interruption and
/// sends SIGTERM to the foreground child's process group. Cleanup then happens on the
/// main thread, which sees [`interrupted`] or the child's exit.
pub(crate) fn install_signal_handler() {
    let result = ctrlc::set_handler(|| {
        if !INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("\nxtask: interrupted; stopping what was started (press again to hurry)");
        }
        let group = FOREGROUND_GROUP.load(Ordering::SeqCst);
        if group != 0 {
            signal_group(group, "TERM");
        }
    });
    if let Err(e) = result {
        eprintln!("xtask: warning: cannot install the signal handler ({e}); a Ctrl-C may leave services running");
    }
}

/// Whether a SIGINT, SIGTERM or SIGHUP was received.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Marks `pid` (a process-group leader) as the foreground child that receives SIGTERM
/// when xtask is interrupted. If the interruption already happened, signals it now.
pub(crate) fn set_foreground(pid: u32) {
    FOREGROUND_GROUP.store(pid, Ordering::SeqCst);
    if interrupted() {
        signal_group(pid, "TERM");
    }
}

/// Forgets the foreground child.
pub(crate) fn clear_foreground() {
    FOREGROUND_GROUP.store(0, Ordering::SeqCst);
}

/// Runs `cmd` to completion in its own process group, as the foreground child.
pub(crate) fn run_foreground(cmd: &mut Command) -> std::io::Result<ExitStatus> {
    let mut child = cmd.stdin(Stdio::null()).process_group(0).spawn()?;
    set_foreground(child.id());
    let status = child.wait();
    clear_foreground();
    status
}

/// Sends `sig` (e.g. `"TERM"`, `"KILL"`) to `pid`. Uses the shell's `kill` builtin so it
/// works where procps is not installed. Returns whether the signal was delivered.
pub(crate) fn signal(pid: u32, sig: &str) -> bool {
    kill(sig, &pid.to_string())
}

/// Sends `sig` to the process group `pgid`.
pub(crate) fn signal_group(pgid: u32, sig: &str) -> bool {
    kill(sig, &format!("-{pgid}"))
}

fn kill(sig: &str, target: &str) -> bool {
    Command::new("sh")
        .args(["-c", "kill -s \"$1\" -- \"$2\"", "sh", sig, target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `pid` is a live (not zombie) process whose command line mentions `name`.
/// The name check guards against a recycled pid when reading pids back from a state file.
pub(crate) fn alive(pid: u32, name: &str) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X" | "x") | None) {
        return false;
    }
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|arg| arg.contains(name))
    })
}

/// Pids of live processes whose executable name (`/proc/PID/comm`) is exactly `name`.
pub(crate) fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
                && alive(*pid, name)
        })
        .collect()
}

/// A process xtask started: either its own child, or one started by an earlier
/// `cargo xtask etcd up` and known only by pid (and name, to detect a recycled pid).
#[derive(Debug)]
pub(crate) enum Proc {
    /// Started by this xtask process; can be waited for.
    Child(Child),
    /// Started detached by an earlier run.
    Detached {
        /// Process id, which is also its process group id.
        pid: u32,
        /// Program name expected in its command line.
        name: String,
    },
}

impl Proc {
    /// Process id (also its process group id).
    pub(crate) fn pid(&self) -> u32 {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Detached { pid, .. } => *pid,
        }
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        match self {
            Proc::Child(c) => matches!(c.try_wait(), Ok(None)),
            Proc::Detached { pid, name } => alive(*pid, name),
        }
    }

    /// Sends `sig` to the process and its group, if it is still running.
    pub(crate) fn signal(&mut self, sig: &str) {
        if self.running() {
            let pid = self.pid();
            if !signal_group(pid, sig) {
                signal(pid, sig);
            }
        }
    }

    /// Waits up to `timeout` for the process to exit; returns whether it did.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.running() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; returns once the process is gone
    /// (and reaped, for a child).
    pub(crate) fn terminate(&mut self, grace: Duration) {
        self.signal("TERM");
        if !self.wait_exit(grace) {
            eprintln!(
                "xtask: process {} ignored SIGTERM for {} s; killing it",
                self.pid(),
                grace.as_secs()
            );
            self.kill();
        }
        self.reap();
    }

    /// SIGKILL, then wait until the process is gone.
    pub(crate) fn kill(&mut self) {
        self.signal("KILL");
        if let Proc::Child(c) = self {
            let _ = c.kill();
        }
        if !self.wait_exit(Duration::from_secs(5)) {
            eprintln!(
                "xtask: warning: process {} survived SIGKILL for 5 s",
                self.pid()
            );
        }
        self.reap();
    }

    fn reap(&mut self) {
        if let Proc::Child(c) = self {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.wait();
            }
        }
    }
}
