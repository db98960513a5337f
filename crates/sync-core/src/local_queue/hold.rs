//! [`Hold`]: one hold of a name.

use std::fmt;
use std::sync::Arc;

use super::{SameName, Shared, Watch};
use crate::signal::{loss_signal, LossReason, LossSignal};

/// One hold of a name, until [`release`](Hold::release), drop or [`revoke`](super::LocalQueue::revoke).
pub struct Hold<C: Send + 'static = (), W: Watch<C> = ()> {
    pub(super) shared: Arc<Shared<C, W>>,
    pub(super) name: Arc<str>,
    pub(super) id: u64,
    pub(super) token: u64,
    pub(super) done: bool,
}

impl<C: Send + 'static, W: Watch<C>> fmt::Debug for Hold<C, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold")
            .field("name", &self.name)
            .field("token", &self.token)
            .finish()
    }
}

impl<C: Send + 'static, W: Watch<C>> Hold<C, W> {
    /// The name held.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Its token (see [`Holder::token`](super::Holder::token)).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Whether it ended through [`end`](Self::end) (or was released).
    pub fn is_ended(&self) -> bool {
        self.done
    }

    /// Releases now; returns whether it was still held (not revoked first). The signal fires
    /// with [`LossReason::Released`] and the waiters now admitted get the name.
    pub fn release(mut self) -> bool {
        self.done = true;
        self.shared
            .end_hold(&SameName(&self.name), Some(self.id), LossReason::Released)
    }

    /// Releases now, like [`release`](Self::release), but keeps the hold (its name, its token)
    /// readable until it drops; the drop then does nothing more. Returns whether it was still
    /// held: `false` if revoked first, or already ended.
    pub fn end(&mut self) -> bool {
        if self.done {
            return false;
        }
        self.done = true;
        self.shared
            .end_hold(&SameName(&self.name), Some(self.id), LossReason::Released)
    }

    /// Its loss signal: fires with [`LossReason::Released`] on release and
    /// [`LossReason::Revoked`] on [`revoke`](super::LocalQueue::revoke). Made on the first call
    /// (holds from [`try_acquire_bare`](super::LocalQueue::try_acquire_bare) have none until
    /// then); later calls share it. Asked after the hold ended, it has fired already: with
    /// `Released` if this hold released, `Revoked` otherwise (nothing else ends a hold).
    pub fn loss_signal(&self) -> LossSignal {
        let mut state = self.shared.lock();
        let holder = state
            .names
            .get_mut(&*self.name)
            .and_then(|e| e.holders.iter_mut().find(|h| h.id == self.id));
        match holder {
            Some(h) => match &h.trigger {
                Some(t) => t.signal(),
                None => {
                    let (t, s) = loss_signal();
                    h.trigger = Some(t);
                    s
                }
            },
            None => {
                drop(state);
                let (t, s) = loss_signal();
                t.fire(if self.done {
                    LossReason::Released
                } else {
                    LossReason::Revoked
                });
                s
            }
        }
    }

    /// Changes the claim while it is held, and tells the [`Watch`]; returns whether it was
    /// still held (nothing changes otherwise).
    pub fn update(&self, f: impl FnOnce(&mut C)) -> bool {
        let mut state = self.shared.lock();
        let Some(entry) = state.names.get_mut(&*self.name) else {
            return false;
        };
        match entry.holders.iter_mut().find(|h| h.id == self.id) {
            Some(h) => {
                f(&mut h.claim);
                entry.notify();
                true
            }
            None => false,
        }
    }
}

impl<C: Send + 'static, W: Watch<C>> Drop for Hold<C, W> {
    fn drop(&mut self) {
        if !self.done {
            self.shared
                .end_hold(&SameName(&self.name), Some(self.id), LossReason::Released);
        }
    }
}
