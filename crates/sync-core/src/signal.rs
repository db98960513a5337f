//! One-shot loss signals: how a lock guard learns it was `lost()` and a leader that it was
//! `revoked()`.
//!
//! A [`LossTrigger`] fires at most once (the first reason wins); every clone of the matching
//! [`LossSignal`] sees it, including clones made after it fired.
//!
//! ```
//! use sync_core::signal::{loss_signal, LossReason};
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let (trigger, signal) = loss_signal();
//! assert!(signal.reason().is_none());
//! trigger.fire(LossReason::Revoked);
//! trigger.fire(LossReason::Released); // ignored: the first reason wins
//! assert_eq!(signal.fired().await, LossReason::Revoked);
//! # });
//! ```

use std::fmt;

use tokio::sync::watch;

/// Why something held (a lock, a leadership, a job claim) is no longer held.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossReason {
    /// The holder released it (or resigned) itself.
    Released,
    /// Someone else took it away: an administrator or another process deleted it or revoked its
    /// lease.
    Revoked,
    /// The backend reported that the lease expired.
    LeaseExpired,
    /// The keepalive could not confirm the lease before the local deadline (the backend was
    /// unreachable, or too slow): the holder must assume that someone else may hold it now.
    KeepaliveFailed {
        /// The last error the keepalive saw, if any.
        last_error: String,
    },
    /// The handle that kept it alive was dropped or shut down.
    Shutdown,
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::Released => f.write_str("released by its holder"),
            LossReason::Revoked => f.write_str("revoked or deleted by someone else"),
            LossReason::LeaseExpired => f.write_str("its lease expired"),
            LossReason::KeepaliveFailed { last_error } if last_error.is_empty() => {
                f.write_str("the lease could not be kept alive before its deadline")
            }
            LossReason::KeepaliveFailed { last_error } => write!(
                f,
                "the lease could not be kept alive before its deadline (last error: {last_error})"
            ),
            LossReason::Shutdown => f.write_str("its keeper shut down"),
        }
    }
}

/// Creates a connected trigger and signal.
pub fn loss_signal() -> (LossTrigger, LossSignal) {
    let (tx, rx) = watch::channel(None);
    (LossTrigger { tx }, LossSignal { rx })
}

/// The firing side of a loss signal.
#[derive(Debug)]
pub struct LossTrigger {
    tx: watch::Sender<Option<LossReason>>,
}

impl LossTrigger {
    /// Fires with `reason` unless it already fired; returns whether this call fired it.
    pub fn fire(&self, reason: LossReason) -> bool {
        self.tx.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        })
    }

    /// A new signal connected to this trigger.
    pub fn signal(&self) -> LossSignal {
        LossSignal {
            rx: self.tx.subscribe(),
        }
    }

    /// Whether it fired already.
    pub fn is_fired(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Resolves when every [`LossSignal`] is gone (nobody listens any more).
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// The listening side of a loss signal; cheap to clone.
#[derive(Debug, Clone)]
pub struct LossSignal {
    rx: watch::Receiver<Option<LossReason>>,
}

impl LossSignal {
    /// The reason, if it fired.
    pub fn reason(&self) -> Option<LossReason> {
        self.rx.borrow().clone()
    }

    /// Whether it fired.
    pub fn is_fired(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// Resolves when it fires (at once if it already did). If the trigger is dropped without
    /// firing, that counts as [`LossReason::Shutdown`]: nobody can vouch for the thing any more.
    pub async fn fired(&self) -> LossReason {
        let mut rx = self.rx.clone();
        let fired = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        fired
            .or_else(|| self.reason())
            .unwrap_or(LossReason::Shutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_clones_see_the_reason_and_dropped_trigger_is_shutdown() {
        let (t, s) = loss_signal();
        let late = s.clone();
        assert!(t.fire(LossReason::LeaseExpired));
        assert!(!t.fire(LossReason::Revoked));
        assert_eq!(late.fired().await, LossReason::LeaseExpired);
        assert_eq!(t.signal().reason(), Some(LossReason::LeaseExpired));

        let (t2, s2) = loss_signal();
        let waiter = tokio::spawn(async move { s2.fired().await });
        drop(t2);
        assert_eq!(waiter.await.unwrap(), LossReason::Shutdown);
    }
}
