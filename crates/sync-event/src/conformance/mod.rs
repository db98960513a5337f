//! The conformance suite: the guarantees every event backend gives, checked the same way.
//!
//! A backend provides a [`Harness`] and runs the whole suite with one macro line:
//!
//! ```text
//! sync_event::event_conformance!(local, LocalHarness::default());
//! ```
//!
//! which expands to one `#[tokio::test]` per guarantee inside a module named for the backend
//! (`local::offsets_strictly_increase`, …). Extra attributes (such as `#[ignore = "…"]` for
//! tests that need a server) follow the harness expression.
//!
//! The cases, by concern: publishing and offsets, subscribing (starts, order, back-pressure),
//! retention and truncation, consumer groups (one member each, ack wait, nack, dead letters,
//! crashes, durable position), groups working through a backlog, bad input, and cancellation at every poll
//! (`sync_core::check::cancel_at_every_poll`).

mod backlog;
mod bad_input;
mod cancel;
mod groups;
mod publish;
mod retention;
mod subscribe;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;

pub use self::backlog::*;
pub use self::bad_input::*;
pub use self::cancel::*;
pub use self::groups::*;
pub use self::publish::*;
pub use self::retention::*;
pub use self::subscribe::*;
use crate::{Event, EventOptions, EventStream, Member, Subscription};

/// What the suite needs from a backend beyond the [`EventStream`] trait.
pub trait Harness: Send + Sync {
    /// A new handle on a fresh, empty namespace of the backend under test (no topic of an
    /// earlier call is visible), with `options`; the backend's error for options it refuses.
    fn open(&self, options: EventOptions) -> BoxFuture<'_, crate::Result<Arc<dyn EventStream>>>;
    /// [`open`](Harness::open), failing the test on an error.
    fn events(&self, options: EventOptions) -> BoxFuture<'_, Arc<dyn EventStream>> {
        Box::pin(async move { self.open(options).await.expect("open a handle") })
    }
    /// Another handle on the same topics and groups as `of` (etcd: a new connection, as
    /// another process would have; local: a clone).
    fn peer<'a>(&'a self, of: &'a Arc<dyn EventStream>) -> BoxFuture<'a, Arc<dyn EventStream>>;
    /// Makes `member` vanish as a process killed with `kill -9` would: no leave, no cleanup
    /// (local: the handle is leaked; etcd: its connection is dropped without closing, and its
    /// lease left to expire). Returns once it is gone.
    fn crash(&self, member: Box<dyn Member>) -> BoxFuture<'_, ()>;
    /// The backend's size limit of one event (payload plus headers).
    fn max_event_bytes(&self) -> usize;
}

/// The timeout that fails a test waiting for something that should happen.
const LONG: Duration = Duration::from_secs(30);

/// Reads the next `n` events of `sub`, failing the test on an error or a timeout.
async fn take(sub: &mut Subscription, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let item = sync_core::check::within("the next event", LONG, sub.next()).await;
        match item {
            Some(Ok(e)) => out.push(e),
            Some(Err(e)) => panic!("subscription failed after {} events: {e}", out.len()),
            None => panic!("subscription ended after {} events", out.len()),
        }
    }
    out
}

/// Asserts that nothing arrives on `sub` for a short while.
async fn quiet(sub: &mut Subscription) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        panic!("expected no event, got {item:?}");
    }
}

fn payloads(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect()
}

fn assert_contiguous(events: &[Event]) {
    for w in events.windows(2) {
        assert_eq!(
            w[1].offset,
            w[0].offset + 1,
            "offsets must be contiguous for readers: {} then {}",
            w[0].offset,
            w[1].offset
        );
    }
}

/// Expands to one test per guarantee of the suite, in a module named for the backend.
#[macro_export]
macro_rules! event_conformance {
    ($backend:ident, $make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__core::conformance_module!($crate, $backend, $make, [$(#[$attr])*];
            offsets_strictly_increase,
            concurrent_publishers_one_order,
            payload_and_headers_round_trip,
            json_helpers_round_trip,
            topics_do_not_interfere,
            dyn_and_generic_use,
            subscribe_earliest_in_order,
            subscribe_latest_sees_only_new,
            subscribe_from_offset,
            subscribe_from_time,
            subscribers_see_one_order,
            slow_subscriber_loses_nothing,
            retention_by_count,
            publishes_in_flight_beyond_count_retention,
            retention_by_age,
            offset_older_than_retention_is_truncated,
            time_older_than_retention_is_truncated,
            lagging_subscriber_is_told_truncated,
            group_each_event_to_one_member,
            group_redeliveries_to_racing_members_once_each,
            group_ack_wait_redelivers_to_another_member,
            group_nack_redelivers,
            group_dead_letter_after_retry_limit,
            group_member_dropped_without_ack_is_redelivered,
            group_member_crash_loses_nothing,
            group_position_survives_restart,
            group_late_ack_is_delivery_lost,
            groups_are_independent,
            group_start_latest,
            group_behind_retention_is_told_truncated,
            group_far_behind_retention_gets_every_retained_event,
            group_waiting_member_is_woken_by_publish,
            group_waiting_member_is_woken_by_nack,
            group_member_leaving_mid_backlog_costs_no_attempt,
            group_member_crash_mid_backlog_costs_no_attempt,
            group_idle_member_does_not_hold_a_backlog,
            group_backlog_behind_retention_is_told_once,
            group_nack_in_backlog_redelivers_first,
            bad_topic_names_are_typed,
            oversized_event_is_typed_and_names_limit,
            bad_options_are_typed,
            cancelled_publish_at_every_poll,
            cancelled_ack_at_every_poll,
            cancelled_next_loses_nothing,
            cancelled_next_keeps_redelivery,
            cancelled_next_in_backlog_loses_nothing,
        );
    };
}
