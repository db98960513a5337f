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
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

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
    let inner = Arc::new(Inner {
        state: AtomicU8::new(PENDING),
        reason: Mutex::new(None),
        notify: Notify::new(),
        subject: OnceLock::new(),
    });
    (
        LossTrigger {
            inner: inner.clone(),
        },
        LossSignal { inner },
    )
}

const PENDING: u8 = 0;
const FIRED: u8 = 1;
const CLOSED: u8 = 2;

/// One allocation per signal: the state, the reason, and the waiters.
#[derive(Debug)]
struct Inner {
    state: AtomicU8,
    reason: Mutex<Option<LossReason>>,
    notify: Notify,
    /// What is held, once granted: its end is reported with its name.
    subject: OnceLock<crate::telemetry::Subject>,
}

impl Inner {
    fn reason(&self) -> Option<LossReason> {
        if self.state.load(Ordering::Acquire) != FIRED {
            return None;
        }
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The firing side of a loss signal. Dropping it without firing tells waiters that nobody can
/// vouch any more ([`LossSignal::fired`] resolves with [`LossReason::Shutdown`]).
#[derive(Debug)]
pub struct LossTrigger {
    inner: Arc<Inner>,
}

impl LossTrigger {
    /// Fires with `reason` unless it already fired; returns whether this call fired it.
    pub fn fire(&self, reason: LossReason) -> bool {
        let mut slot = self.inner.reason.lock().unwrap_or_else(|p| p.into_inner());
        if self.inner.state.load(Ordering::Acquire) == FIRED {
            return false;
        }
        if let Some(subject) = self.inner.subject.get() {
            crate::telemetry::ended(subject, &reason);
        }
        *slot = Some(reason);
        self.inner.state.store(FIRED, Ordering::Release);
        drop(slot);
        self.inner.notify.notify_waiters();
        true
    }

    /// What is held, if a backend [described](LossSignal::describe) it.
    pub fn subject(&self) -> Option<&crate::telemetry::Subject> {
        self.inner.subject.get()
    }

    /// A new signal connected to this trigger.
    pub fn signal(&self) -> LossSignal {
        LossSignal {
            inner: self.inner.clone(),
        }
    }

    /// Whether it fired already.
    pub fn is_fired(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == FIRED
    }
}

impl Drop for LossTrigger {
    fn drop(&mut self) {
        let _slot = self.inner.reason.lock().unwrap_or_else(|p| p.into_inner());
        if self.inner.state.load(Ordering::Acquire) == PENDING {
            if let Some(subject) = self.inner.subject.get() {
                crate::telemetry::ended(subject, &LossReason::Shutdown);
            }
            self.inner.state.store(CLOSED, Ordering::Release);
            drop(_slot);
            self.inner.notify.notify_waiters();
        }
    }
}

/// The listening side of a loss signal; cheap to clone.
#[derive(Debug, Clone)]
pub struct LossSignal {
    inner: Arc<Inner>,
}

impl LossSignal {
    /// The reason, if it fired.
    pub fn reason(&self) -> Option<LossReason> {
        self.inner.reason()
    }

    /// Whether it fired.
    pub fn is_fired(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == FIRED
    }

    /// Writes what is held on the signal (once; later calls are ignored), so that when it
    /// fires the end is reported with the name: a loss at `warn` with its reason, and in the
    /// metrics (see [`telemetry`](crate::telemetry)).
    pub fn describe(&self, subject: crate::telemetry::Subject) {
        let _ = self.inner.subject.set(subject);
    }

    /// What is held, if described.
    pub fn subject(&self) -> Option<&crate::telemetry::Subject> {
        self.inner.subject.get()
    }

    /// Resolves when it fires (at once if it already did). If the trigger is dropped without
    /// firing, that counts as [`LossReason::Shutdown`]: nobody can vouch for the thing any more.
    pub async fn fired(&self) -> LossReason {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a fire between the check and the wait is not missed.
            notified.as_mut().enable();
            match self.inner.state.load(Ordering::Acquire) {
                FIRED => return self.inner.reason().unwrap_or(LossReason::Shutdown),
                CLOSED => return LossReason::Shutdown,
                _ => notified.await,
            }
        }
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
