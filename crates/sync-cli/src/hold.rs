//! `lock`, `semaphore`, `rwlock` and `elect`: take something, run the command while holding it,
//! give it back.

use std::future::Future;
use std::time::Duration;

use serde_json::json;
use sync_core::signal::LossSignal;

use crate::backend::Closer;
use crate::exit::{self, Failure};
use crate::output::{millis, Output};
use crate::supervise::{self, Ended, Signals};

/// What is held while the command runs.
pub(crate) enum Held {
    Guard(sync_lock::LockGuard),
    Elected(sync_leader::Elected),
}

impl Held {
    fn token(&self) -> u64 {
        match self {
            Held::Guard(g) => g.fencing_token(),
            Held::Elected(e) => e.term(),
        }
    }

    fn ttl(&self) -> Option<Duration> {
        match self {
            Held::Guard(g) => g.ttl(),
            Held::Elected(e) => e.ttl(),
        }
    }

    fn loss(&self) -> LossSignal {
        match self {
            Held::Guard(g) => g.loss_signal(),
            Held::Elected(e) => e.revoked_signal(),
        }
    }

    async fn release(self) -> Result<(), Failure> {
        match self {
            Held::Guard(g) => Ok(g.release().await?),
            Held::Elected(e) => Ok(e.resign().await?),
        }
    }
}

/// What to report and which environment to give the child.
pub(crate) struct Plan<'a> {
    /// `lock`, `semaphore`, `rwlock` or `elect`.
    pub(crate) kind: &'static str,
    pub(crate) name: &'a str,
    pub(crate) command: &'a [String],
    pub(crate) out: Output,
}

/// Acquires with `acquire` (a terminating signal aborts the wait: exit 128 + signal), runs the
/// command, releases, closes the run's session with `closer` (whatever the outcome), and
/// returns the exit code.
pub(crate) async fn run<F>(plan: Plan<'_>, closer: Closer, acquire: F) -> Result<u8, Failure>
where
    F: Future<Output = Result<Option<Held>, Failure>>,
{
    let code = hold(plan, acquire).await;
    closer.close().await;
    code
}

async fn hold<F>(plan: Plan<'_>, acquire: F) -> Result<u8, Failure>
where
    F: Future<Output = Result<Option<Held>, Failure>>,
{
    let Plan {
        kind,
        name,
        command,
        out,
    } = plan;
    let mut signals = Signals::install()?;
    let started = tokio::time::Instant::now();
    let held = tokio::select! {
        held = acquire => held?,
        sig = signals.recv() => {
            out.event("interrupted", json!({ "signal": sig.as_str() }), || {
                format!("{} while waiting for {kind} {name:?}", sig.as_str())
            });
            return Ok(128 + sig as i32 as u8);
        }
    };
    let Some(held) = held else {
        return Err(Failure::new(
            exit::NOT_ACQUIRED,
            format!("{kind} {name:?} is held by someone else (--try)"),
        ));
    };
    let token = held.token();
    let ttl = held.ttl();
    let grace = supervise::kill_grace(ttl);
    out.event(
        "acquired",
        json!({
            "kind": kind, "name": name, "fencing_token": token,
            "ttl_ms": ttl.map(millis), "waited_ms": millis(started.elapsed()),
            "kill_grace_ms": millis(grace),
        }),
        || {
            format!(
                "acquired {kind} {name:?} (fencing token {token}, ttl {}) after {:?}",
                ttl.map_or_else(|| "none".to_owned(), |t| format!("{t:?}")),
                started.elapsed()
            )
        },
    );
    let mut env = vec![
        ("SYNC_FENCING_TOKEN".to_owned(), token.to_string()),
        ("SYNC_NAME".to_owned(), name.to_owned()),
    ];
    if kind == "elect" {
        env.push(("SYNC_LEADER_TERM".to_owned(), token.to_string()));
    }
    let loss = held.loss();
    let ended = supervise::run(command, &env, &loss, grace, &mut signals, out).await;
    match ended {
        Ok(Ended::Exited(status)) => {
            let code = exit::child_code(status);
            match held.release().await {
                Ok(()) => {
                    out.event("released", json!({ "kind": kind, "name": name }), || {
                        format!("released {kind} {name:?}")
                    });
                    Ok(code)
                }
                Err(f) if f.code == exit::LOST => Err(Failure::new(
                    exit::LOST,
                    format!(
                        "{kind} {name:?} was lost as the command exited ({status}): {}",
                        f.message
                    ),
                )),
                // Could not release (backend unreachable): the lease expires by itself.
                Err(f) => {
                    out.failure(f.code, &format!("release failed, the TTL frees it: {f}"));
                    Ok(code)
                }
            }
        }
        Ok(Ended::Lost(reason)) => {
            // Nothing is released (nothing of anyone else's is touched).
            drop(held);
            Err(Failure::new(
                exit::LOST,
                format!("{kind} {name:?} was lost ({reason}); the command was stopped"),
            ))
        }
        Err(f) => {
            let _ = held.release().await;
            Err(f)
        }
    }
}
