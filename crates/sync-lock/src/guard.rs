use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use futures::future::BoxFuture;
use sync_core::signal::{LossReason, LossSignal};

use crate::{Error, LockFuture, Result};

/// The backend side of a [`LockGuard`]: what a backend implements to release its lock.
///
/// Dropping a `RawGuard` without calling [`release`](RawGuard::release) must release the lock in
/// the background (best effort; the lease TTL is the safety net).
pub trait RawGuard: Send + Sync + fmt::Debug {
    /// Releases the lock now. Returns `Ok(false)` if it was no longer held (it was lost first),
    /// in which case nothing of anyone else's is touched.
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<bool>>;

    /// The key and create revision to condition one's own writes on, for backends that have
    /// them (etcd).
    fn fence(&self) -> Option<crate::Fence> {
        None
    }
}

/// The built-in backend's raw guard inline (no allocation on the local hot path), any other
/// boxed.
#[derive(Debug)]
pub(crate) enum Raw {
    /// The local hold: it keeps the name, released in place by [`LockGuard::release`].
    Local(crate::local::LocalRawGuard),
    /// Another backend's: its raw guard (`None` once released) and what the guard reports.
    Boxed {
        name: std::sync::Arc<str>,
        token: u64,
        ttl: Option<Duration>,
        raw: Option<Box<dyn RawGuard>>,
    },
}

/// Exclusive ownership of a named lock, until [`release`](LockGuard::release), drop, or loss.
///
/// Act on the protected resource only while the guard is not [`lost`](LockGuard::lost), and pass
/// [`fencing_token`](LockGuard::fencing_token) along with every write so the resource can refuse
/// a stale holder.
///
/// ```
/// use sync_lock::{AcquireOptions, Lock, LocalLock};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let locks = LocalLock::new();
/// let guard = locks.acquire("reports", AcquireOptions::new()).await?;
/// assert!(!guard.is_lost());
/// let token = guard.fencing_token();
/// guard.release().await?;
/// let again = locks.acquire("reports", AcquireOptions::new()).await?;
/// assert!(again.fencing_token() > token);
/// # Ok::<(), sync_lock::Error>(()) }).unwrap();
/// ```
///
/// It is kept small (72 bytes: it is moved through every acquire and release): the local hold
/// carries its own name and token, another backend's guard its name, token and TTL.
pub struct LockGuard {
    /// Set at the grant, except for the local backend's uncontended path, where it is made
    /// when first asked for (see [`LockGuard::signal`]).
    signal: OnceLock<LossSignal>,
    /// The backend's guard, and the name (the local hold keeps it: no second reference to
    /// count on the hot path).
    raw: Raw,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name())
            .field("fencing_token", &self.fencing_token())
            .field("ttl", &self.ttl())
            .field("lost", &self.signal().reason())
            .finish()
    }
}

impl LockGuard {
    /// Assembles a guard; for backends.
    pub fn new(
        name: impl Into<std::sync::Arc<str>>,
        fencing_token: u64,
        ttl: Option<Duration>,
        signal: LossSignal,
        raw: Box<dyn RawGuard>,
    ) -> Self {
        LockGuard {
            signal: OnceLock::from(signal),
            raw: Raw::Boxed {
                name: name.into(),
                token: fencing_token,
                ttl,
                raw: Some(raw),
            },
        }
    }

    /// A local guard, with its loss signal if one was made at the grant (otherwise it is made
    /// from the hold when first asked for).
    pub(crate) fn new_local(signal: Option<LossSignal>, raw: crate::local::LocalRawGuard) -> Self {
        LockGuard {
            signal: signal.map_or_else(OnceLock::new, OnceLock::from),
            raw: Raw::Local(raw),
        }
    }

    /// The loss signal, made from the local hold on first use if the grant made none.
    fn signal(&self) -> &LossSignal {
        self.signal.get_or_init(|| match &self.raw {
            // Asked after the release (only `release` itself can), the hold answers `Released`.
            Raw::Local(g) => g.0.loss_signal(),
            // Every other guard has its signal from the start: not reached, but a released
            // signal is the truthful answer if it were.
            Raw::Boxed { .. } => {
                let (t, s) = sync_core::signal::loss_signal();
                t.fire(LossReason::Released);
                s
            }
        })
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        match &self.raw {
            Raw::Local(g) => g.0.name(),
            Raw::Boxed { name, .. } => name,
        }
    }

    /// A number that strictly increases from one holder of this lock to the next. A sticky
    /// take-back of a parked lock ([`AcquireOptions::with_sticky`](crate::AcquireOptions::with_sticky))
    /// keeps the token of the hold before it: nobody else held the lock in between.
    pub fn fencing_token(&self) -> u64 {
        match &self.raw {
            Raw::Local(g) => g.0.token(),
            Raw::Boxed { token, .. } => *token,
        }
    }

    /// The TTL the backend granted (etcd may raise the one asked for); `None` for backends
    /// without one.
    pub fn ttl(&self) -> Option<Duration> {
        match &self.raw {
            Raw::Local(_) => None,
            Raw::Boxed { ttl, .. } => *ttl,
        }
    }

    /// Resolves when the lock can no longer be vouched for: its lease expired or could not be
    /// renewed in time, or someone deleted it. It resolves before anyone else can be granted the
    /// lock (see `docs/etcd.md`); stop acting on the resource at once.
    pub async fn lost(&self) -> LossReason {
        self.signal().fired().await
    }

    /// Whether it was lost.
    pub fn is_lost(&self) -> bool {
        self.signal().is_fired()
    }

    /// The key and create revision to make writes of your own conditional on still holding
    /// (etcd); `None` on backends without one. See [`Fence`](crate::Fence).
    pub fn fence(&self) -> Option<crate::Fence> {
        match &self.raw {
            Raw::Local(_) => None,
            Raw::Boxed { raw, .. } => raw.as_ref()?.fence(),
        }
    }

    /// A cloneable handle on the loss signal, to hand to the task doing the work.
    pub fn loss_signal(&self) -> LossSignal {
        self.signal().clone()
    }

    /// Releases the lock now. Fails with [`Error::Lost`] if it had been lost before (nothing
    /// is released then, and nobody else's lock is touched).
    ///
    /// A backend that releases without a round trip (the local one) has released when this
    /// returns, and the future is ready with nothing allocated; dropping the future unpolled
    /// still releases the lock (as dropping the guard does).
    pub fn release(mut self) -> LockFuture<'static, ()> {
        // A signal nobody asked for has not fired: a loss shows in `still_held` then.
        let lost_before = self.signal.get().and_then(LossSignal::reason);
        match &mut self.raw {
            Raw::Local(g) => {
                let still_held = g.release_now();
                LockFuture::ready(self.released(lost_before, still_held))
            }
            Raw::Boxed { raw, .. } => match raw.take() {
                Some(raw) => {
                    let releasing = raw.release();
                    LockFuture::waiting(async move {
                        let still_held = releasing.await?;
                        self.released(lost_before, still_held)
                    })
                }
                // `release` consumes the guard, so it runs once.
                None => LockFuture::ready(self.released(lost_before, false)),
            },
        }
    }

    /// The outcome of a release: whether the lock was lost before (`lost_before`, or the
    /// backend found it no longer held).
    fn released(&self, lost_before: Option<LossReason>, still_held: bool) -> Result<()> {
        tracing::debug!(lock = %self.name(), token = self.fencing_token(), "lock released");
        match lost_before {
            Some(reason) => Err(Error::Lost {
                name: self.name().to_owned(),
                reason,
            }),
            None if !still_held => Err(Error::Lost {
                name: self.name().to_owned(),
                reason: self
                    .signal
                    .get()
                    .and_then(LossSignal::reason)
                    .unwrap_or(LossReason::Revoked),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let released = match &self.raw {
            Raw::Local(g) => g.0.is_ended(),
            Raw::Boxed { raw, .. } => raw.is_none(),
        };
        if !released {
            tracing::debug!(lock = %self.name(), token = self.fencing_token(), "lock guard dropped: releasing in the background");
        }
        // Dropping the raw guard releases in the background.
    }
}

impl sync_core::telemetry::Grant for LockGuard {
    fn token(&self) -> u64 {
        self.fencing_token()
    }

    fn signal(&self) -> &LossSignal {
        LockGuard::signal(self)
    }
}
