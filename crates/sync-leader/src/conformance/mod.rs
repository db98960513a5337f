//! The conformance suite: the guarantees every leader-election backend gives, checked the same
//! way.
//!
//! A backend provides a [`Harness`] and runs the whole suite with one macro line:
//!
//! ```text
//! sync_leader::leader_conformance!(local, LocalHarness::default());
//! ```
//!
//! which expands to one `#[tokio::test]` per guarantee inside a module named for the backend
//! (`local::one_leader_among_five_in_process`, …). Extra attributes (such as `#[ignore = "…"]`
//! for tests that need a server) follow the harness expression.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;

use crate::{
    ElectOptions, Elected, Error, Group, Leader, LeaderExt, LeaderInfo, LeaderStream, LossReason,
    MAX_NAME_LEN,
};

/// What the suite needs from a backend beyond the [`Leader`] trait.
pub trait Harness: Send + Sync {
    /// A new client of the same backend: for a distributed backend a separate connection, as
    /// another process would have.
    fn client(&self) -> BoxFuture<'_, Arc<dyn Leader>>;
    /// Ends the leadership of `group`'s leader behind its back by ending what keeps it alive
    /// (etcd: revokes the leader's lease). The leader must be told through `revoked()`.
    fn revoke_lease<'a>(&'a self, group: &'a str) -> BoxFuture<'a, ()>;
    /// Deletes the leader's record of `group` behind its back (etcd: deletes the leader key).
    /// The leader must be told through `revoked()`.
    fn delete_leader_key<'a>(&'a self, group: &'a str) -> BoxFuture<'a, ()>;
    /// How many candidates (the leader included) the backend records for `group`.
    fn candidates<'a>(&'a self, group: &'a str) -> BoxFuture<'a, usize>;
    /// Makes a leader of `group`, campaigning as `id` with `ttl`, that dies without resigning
    /// (etcd: a child process that is elected and killed with SIGKILL). Returns its term once it
    /// was elected and is dead.
    fn crash_leader<'a>(&'a self, group: &'a str, id: &'a str, ttl: Duration)
        -> BoxFuture<'a, u64>;
    /// The TTL the suite asks for.
    fn ttl(&self) -> Duration;
    /// How long after a leader's death (with TTL `ttl`) another candidate must be elected at the
    /// latest.
    fn crash_bound(&self, ttl: Duration) -> Duration;
    /// How long a revocation may take to be reported.
    fn loss_bound(&self) -> Duration;
}

mod api;
mod election;
mod observe;
mod revocation;

pub use api::*;
pub use election::*;
pub use observe::*;
pub use revocation::*;

pub(crate) fn opts(h: &dyn Harness, group: &str) -> ElectOptions {
    ElectOptions::new().with_group(group).with_ttl(h.ttl())
}

pub(crate) use sync_core::check::{eventually, within};

pub(crate) const LONG: Duration = Duration::from_secs(20);

/// The next state an observer reports, failing the test if none comes in time.
pub(crate) async fn next_state(o: &mut LeaderStream, what: &str) -> Option<LeaderInfo> {
    within(what, LONG, o.next())
        .await
        .unwrap_or_else(|| panic!("the observer stream ended while waiting for: {what}"))
}

/// Waits until `group` has `n` candidates (the leader included).
pub(crate) async fn queued(h: &dyn Harness, group: &str, n: usize) {
    eventually(&format!("{n} candidates in {group}"), LONG, || async {
        h.candidates(group).await == n
    })
    .await;
}

/// Campaigns in the background; the handle yields the office once elected.
pub(crate) fn campaign(
    c: &Arc<dyn Leader>,
    id: &str,
    o: ElectOptions,
) -> tokio::task::JoinHandle<Elected> {
    let (c, id) = (c.clone(), id.to_owned());
    tokio::spawn(async move {
        c.elect(&id, o)
            .await
            .unwrap_or_else(|e| panic!("{id} could not be elected: {e}"))
    })
}

pub(crate) async fn elected(what: &str, t: tokio::task::JoinHandle<Elected>) -> Elected {
    within(what, LONG, t).await.expect("campaign panicked")
}

pub(crate) fn is_loss(reason: &LossReason) -> bool {
    matches!(
        reason,
        LossReason::Revoked | LossReason::LeaseExpired | LossReason::KeepaliveFailed { .. }
    )
}

/// Expands to one test per guarantee of the suite, in a module named for the backend.
#[macro_export]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
macro_rules! leader_conformance {
    ($backend:ident, $make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__core::conformance_module!($crate, $backend, $make, [$(#[$attr])*];
            one_leader_among_five_in_process,
            one_leader_among_five_across_clients,
            resign_hands_over_in_fifo_order,
            resign_hands_over_at_once,
            revoked_fires_on_resign,
            revoked_fires_on_lease_revocation,
            revoked_fires_on_key_deletion,
            crashed_leader_replaced_within_ttl,
            terms_strictly_increase,
            observers_see_every_change_including_none,
            leader_agrees_with_observe,
            proclaim_updates_what_observers_see,
            cancelled_elect_leaves_nothing,
            elect_timeout_leaves_nothing,
            seed_reelect_loop,
            invalid_names_rejected,
            dyn_and_generic_use,
            leader_kept_past_ttl,
            groups_do_not_interfere,
            drop_resigns,
            elect_and_resign_cancelled_at_every_poll,
            contended_elect_cancelled_at_every_poll,
            abandoned_elects_leave_no_ghost,
        );
    };
}
