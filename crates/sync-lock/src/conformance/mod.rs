//! The conformance suite: the guarantees every lock backend gives, checked the same way.
//!
//! A backend provides a [`Harness`] and runs the whole suite with one macro line:
//!
//! ```text
//! sync_lock::lock_conformance!(local, LocalHarness::default());
//! ```
//!
//! which expands to one `#[tokio::test]` per guarantee inside a module named for the backend
//! (`local::mutual_exclusion_in_process`, …). Extra attributes (such as `#[ignore = "…"]` for
//! tests that need a server) follow the harness expression.
//!
//! The semaphore and read-write lock suites are the same over a [`SemHarness`], run with
//! `sync_lock::semaphore_conformance!(local, LocalHarness::default());` (cases `sem_…` in
//! `semaphore.rs` and `semaphore_faults.rs`, `rw_…` in `rwlock.rs` and `rwlock_faults.rs`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::{AcquireOptions, Error, Lock, LockExt, LockSet, LossReason, MAX_NAME_LEN};

/// What the suite needs from a backend beyond the [`Lock`] trait.
pub trait Harness: Send + Sync {
    /// A new client of the same backend: for a distributed backend a separate connection, as
    /// another process would have.
    fn client(&self) -> BoxFuture<'_, Arc<dyn Lock>>;
    /// Takes `name` away from its current holder behind its back (etcd: revokes the holder's
    /// lease); the holder must be told through `lost()`.
    fn revoke_holder<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()>;
    /// How many holders plus waiters the backend records for `name`.
    fn entries<'a>(&'a self, name: &'a str) -> BoxFuture<'a, usize>;
    /// Makes a holder of `name` that dies without releasing it (etcd: a child process that
    /// acquires it and is killed with SIGKILL). Returns once the holder held it and is dead.
    fn crash_holder<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, ()>;
    /// The TTL the suite asks for.
    fn ttl(&self) -> Duration;
    /// How long after a holder's death (with TTL `ttl`) the lock must be free at the latest.
    fn crash_bound(&self, ttl: Duration) -> Duration;
    /// How long a loss may take to be reported after a revocation.
    fn loss_bound(&self) -> Duration;
    /// Whether a sticky release with nobody waiting keeps the lock's place (etcd: its key stays
    /// parked, counted by [`entries`](Self::entries), and a take-back keeps the fencing token).
    /// Backends whose acquire costs no round trip anyway (local) leave it `false`: their sticky
    /// acquires behave as plain ones, and the sticky cases check that.
    fn parks_sticky_locks(&self) -> bool {
        false
    }
}

mod api;
mod cancel;
mod exclusion;
mod loss;
mod rwlock;
mod rwlock_faults;
mod semaphore;
mod semaphore_faults;
mod sticky;

pub use api::*;
pub use cancel::*;
pub use exclusion::*;
pub use loss::*;
pub use rwlock::*;
pub use rwlock_faults::*;
pub use semaphore::*;
pub use semaphore_faults::*;
pub use sticky::*;

fn opts(h: &dyn Harness) -> AcquireOptions {
    AcquireOptions::new().with_ttl(h.ttl())
}

use sync_core::check::{eventually, within};

const LONG: Duration = Duration::from_secs(20);

/// Expands to one test per guarantee of the suite, in a module named for the backend.
#[macro_export]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
macro_rules! lock_conformance {
    ($backend:ident, $make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__core::conformance_module!($crate, $backend, $make, [$(#[$attr])*];
            mutual_exclusion_in_process,
            mutual_exclusion_across_clients,
            fifo_order,
            try_acquire_on_held_lock,
            wait_timeout,
            cancelled_acquire_leaves_nothing,
            acquire_dropped_unpolled_gives_back_what_it_took,
            release_then_reacquire,
            drop_releases,
            crashed_holder_frees_lock,
            fencing_tokens_increase,
            back_to_back_acquires_keep_their_grant,
            lost_fires_on_revoke,
            held_past_ttl_without_loss,
            names_do_not_interfere,
            invalid_input_rejected,
            dyn_and_generic_use,
            lockset_seed_shape,
            many_names_in_parallel,
            release_hands_over_to_waiter,
            acquire_and_release_cancelled_at_every_poll,
            contended_acquire_cancelled_at_every_poll,
            try_acquire_cancelled_at_every_poll,
            abandoned_acquires_leave_no_ghost,
            sticky_reacquire_without_waiter,
            sticky_contender_gets_parked_lock,
            sticky_exclusion_under_races,
            sticky_lost_lock_not_taken_back,
            sticky_acquire_cancelled_at_every_poll,
        );
    };
}

/// Expands to one test per semaphore and rwlock guarantee, in a module named for the backend.
#[macro_export]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
macro_rules! semaphore_conformance {
    ($backend:ident, $make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__core::conformance_module!($crate, $backend, $make, [$(#[$attr])*];
            sem_at_most_n_holders,
            sem_fifo_no_barging,
            sem_try_acquire_semantics,
            sem_wait_timeout_leaves_nothing,
            sem_drop_releases_and_hands_over,
            sem_fencing_tokens_increase,
            sem_zero_permits_rejected,
            sem_permits_mismatch,
            sem_invalid_input_rejected,
            sem_names_do_not_interfere,
            sem_dyn_and_generic_use,
            sem_lost_fires_on_revoke,
            sem_crashed_holder_frees_permit,
            sem_acquire_cancelled_at_every_poll,
            sem_contended_acquire_cancelled_at_every_poll,
            sem_try_acquire_cancelled_at_every_poll,
            sem_permits_mismatch_across_clients,
            sem_release_hands_over_to_waiter,
            sem_invalid_wait_and_ttl_rejected,
            sem_new_acquirer_gets_permit_after_lost,
            sem_mismatched_acquire_cancelled_at_every_poll,
            sem_held_past_ttl_without_loss,
            rw_readers_share,
            rw_writer_alone,
            rw_reader_behind_waiting_writer_waits,
            rw_mutual_exclusion_under_contention,
            rw_try_semantics,
            rw_wait_timeout_leaves_nothing,
            rw_drop_hands_over_to_readers,
            rw_invalid_input_rejected,
            rw_fencing_tokens_increase,
            rw_names_do_not_interfere,
            rw_contended_write_cancelled_at_every_poll,
            rw_contended_read_cancelled_at_every_poll,
            rw_try_read_cancelled_at_every_poll,
            rw_try_write_cancelled_at_every_poll,
            rw_lost_fires_on_revoke_read,
            rw_lost_fires_on_revoke_write,
            rw_crashed_writer_frees_lock,
            rw_writer_not_starved_by_arriving_readers,
            rw_release_hands_over,
            rw_exclusion_across_two_clients,
            rw_invalid_wait_and_ttl_rejected,
            rw_readers_behind_a_writer_that_gave_up_join_the_readers,
            rw_held_past_ttl_without_loss,
        );
    };
}
