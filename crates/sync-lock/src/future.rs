//! The future that [`Lock`](crate::Lock), [`Semaphore`](crate::Semaphore) and
//! [`RwLock`](crate::RwLock) return.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;

use crate::Result;

/// What `acquire`, `try_acquire`, `read`, `write`, … return: a future of the guard.
///
/// A backend that can answer without waiting (the local lock finding its name free, an etcd lock
/// taking back a sticky hold) answers when the method is called, and the future is ready at once
/// with nothing allocated; one that must wait returns its waiting boxed. Either way dropping the
/// future gives back whatever it took, so it stays cancel-safe.
///
/// It is a named type rather than `impl Future` so that the traits stay usable as `dyn Lock`
/// (for example behind [`open`](crate::open)).
///
/// ```
/// use sync_lock::{AcquireOptions, LocalLock, Lock, LockFuture, LockGuard};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let locks: Box<dyn Lock> = Box::new(LocalLock::new());
/// let pending: LockFuture<'_, LockGuard> = locks.acquire("a", AcquireOptions::new());
/// let guard = pending.await?;
/// guard.release().await?;
/// # Ok::<(), sync_lock::Error>(()) }).unwrap();
/// ```
#[must_use = "a LockFuture does nothing unless awaited, and dropping it gives back what it took"]
pub struct LockFuture<'a, T> {
    state: State<'a, T>,
}

enum State<'a, T> {
    /// The outcome, its error boxed: an error is rare, and a small `Ok` keeps the ready future
    /// small (for `()` one word instead of the 56 bytes of `Result<(), Error>`), so taking it
    /// out at the poll moves little.
    Ready(Option<std::result::Result<T, Box<crate::Error>>>),
    Waiting(BoxFuture<'a, Result<T>>),
}

impl<'a, T> LockFuture<'a, T> {
    /// A future that is ready with `outcome` (nothing is allocated).
    pub fn ready(outcome: Result<T>) -> Self {
        LockFuture {
            state: State::Ready(Some(outcome.map_err(Box::new))),
        }
    }

    /// A future that waits on `wait`, boxed.
    pub fn waiting(wait: impl Future<Output = Result<T>> + Send + 'a) -> Self {
        LockFuture {
            state: State::Waiting(Box::pin(wait)),
        }
    }

    /// Whether the outcome is known already (the future completes at its first poll).
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready(Some(_)))
    }
}

impl<'a, T> From<BoxFuture<'a, Result<T>>> for LockFuture<'a, T> {
    fn from(wait: BoxFuture<'a, Result<T>>) -> Self {
        LockFuture {
            state: State::Waiting(wait),
        }
    }
}

// Nothing is pinned structurally: the outcome is moved out, the waiting future is boxed.
impl<T> Unpin for LockFuture<'_, T> {}

impl<T> Future for LockFuture<'_, T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        match &mut self.get_mut().state {
            State::Ready(outcome) => match outcome.take() {
                Some(Ok(value)) => Poll::Ready(Ok(value)),
                Some(Err(e)) => Poll::Ready(Err(*e)),
                None => panic!("LockFuture polled after it completed"),
            },
            State::Waiting(wait) => wait.as_mut().poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for LockFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Ready(Some(_)) => "ready",
            State::Ready(None) => "done",
            State::Waiting(_) => "waiting",
        };
        f.debug_struct("LockFuture").field("state", &state).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[tokio::test]
    async fn a_ready_future_yields_its_outcome_and_a_waiting_one_its_wait() {
        let ready = LockFuture::ready(Ok(7));
        assert!(ready.is_ready());
        assert_eq!(ready.await.ok(), Some(7));
        let waiting = LockFuture::waiting(async {
            tokio::task::yield_now().await;
            Err::<u8, _>(Error::Timeout {
                name: "a".into(),
                waited: std::time::Duration::ZERO,
            })
        });
        assert!(!waiting.is_ready());
        assert!(matches!(waiting.await, Err(Error::Timeout { .. })));
    }
}
