//! Running the command while something is held: its own process group, signals forwarded, and
//! the loss → SIGTERM → SIGKILL timeline.
//!
//! The deadline rule (`docs/etcd.md`): the library fires the loss signal no later than
//! `deadline - loss_margin(ttl)`, where `deadline` is the earliest instant the server can expire
//! the lease. syncctl sends SIGTERM to the child's process group at once, and SIGKILL after
//! [`kill_grace`] = half the margin, so the group is dead `margin / 2` before the earliest
//! instant anyone else can be granted the lock (and the server expires leases only on a
//! 500 ms tick after that, and a successor learns of it only through a raft round and a watch
//! event on top).

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;
use sync_core::signal::{LossReason, LossSignal};
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::{self, Failure};
use crate::output::{millis, Output};

/// How long a child that got SIGTERM on a loss has before SIGKILL: half of the library's loss
/// margin for the granted TTL (100 ms at TTL 3 s, 333 ms at 10 s, 1 s from 30 s up); 1 s on
/// backends without a TTL (`local`, which only loses a lock to a deletion).
pub(crate) fn kill_grace(ttl: Option<Duration>) -> Duration {
    match ttl {
        Some(ttl) => sync_etcd::loss_margin(ttl) / 2,
        None => Duration::from_secs(1),
    }
}

/// How the run ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The child exited on its own (or on a signal we forwarded).
    Exited(ExitStatus),
    /// The hold was lost; the child's group was stopped.
    Lost(LossReason),
}

/// The terminating signals syncctl forwards to the child (and which abort a wait).
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> Result<Self, Failure> {
        let make = |k| {
            signal(k)
                .map_err(|e| Failure::new(exit::INTERNAL, format!("cannot handle signals: {e}")))
        };
        Ok(Signals {
            int: make(SignalKind::interrupt())?,
            term: make(SignalKind::terminate())?,
            hup: make(SignalKind::hangup())?,
        })
    }

    /// The next terminating signal received.
    pub(crate) async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.hup.recv() => Signal::SIGHUP,
        }
    }
}

/// Starts `argv` in a process group of its own with `env` added.
fn spawn(argv: &[String], env: &[(String, String)]) -> Result<tokio::process::Child, Failure> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Failure::usage("no command given after `--`"))?;
    Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .spawn()
        .map_err(|e| {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => exit::NOT_FOUND,
                std::io::ErrorKind::PermissionDenied => exit::CANNOT_EXECUTE,
                _ => exit::INTERNAL,
            };
            Failure::new(code, format!("cannot run {program:?}: {e}"))
        })
}

fn signal_group(pgid: Pid, sig: Signal) {
    // ESRCH: nobody left in the group.
    let _ = killpg(pgid, sig);
}

/// Runs `argv` until it exits or `loss` fires; see the module docs for the timeline.
pub(crate) async fn run(
    argv: &[String],
    env: &[(String, String)],
    loss: &LossSignal,
    grace: Duration,
    signals: &mut Signals,
    out: Output,
) -> Result<Ended, Failure> {
    let mut child = spawn(argv, env)?;
    let pid = child
        .id()
        .ok_or_else(|| Failure::new(exit::INTERNAL, "the child vanished"))?;
    let pgid = Pid::from_raw(pid as i32);
    out.event("started", json!({ "pid": pid }), || {
        format!("started {:?} as pid {pid} (process group {pid})", argv[0])
    });
    let reason = loop {
        tokio::select! {
            biased;
            status = child.wait() => {
                let status = status.map_err(|e| Failure::new(exit::INTERNAL, format!("waiting for the child: {e}")))?;
                // What the child left behind in its group must not outlive the hold.
                signal_group(pgid, Signal::SIGKILL);
                out.event("exited", json!({ "status": exit::child_code(status) }), || {
                    format!("command exited: {status}")
                });
                return Ok(Ended::Exited(status));
            }
            reason = loss.fired() => break reason,
            sig = signals.recv() => {
                out.event("forwarded", json!({ "signal": sig.as_str() }), || {
                    format!("forwarding {} to process group {pid}", sig.as_str())
                });
                signal_group(pgid, sig);
            }
        }
    };
    signal_group(pgid, Signal::SIGTERM);
    out.event(
        "lost",
        json!({ "reason": reason.to_string(), "grace_ms": millis(grace) }),
        || format!("LOST ({reason}): sent SIGTERM to process group {pid}, SIGKILL in {grace:?}"),
    );
    let exited_on_term = tokio::time::timeout(grace, child.wait()).await.is_ok();
    signal_group(pgid, Signal::SIGKILL);
    let status = child
        .wait()
        .await
        .map_err(|e| Failure::new(exit::INTERNAL, format!("waiting for the child: {e}")))?;
    out.event(
        "killed",
        json!({ "status": exit::child_code(status), "exited_on_sigterm": exited_on_term }),
        || format!("command stopped after the loss: {status}"),
    );
    Ok(Ended::Lost(reason))
}
