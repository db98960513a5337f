//! Shared plumbing of the `sync` crates.
//!
//! Users rarely need this crate directly: it is the small, stable part that every primitive
//! crate shares. The etcd engine (client, lease keeper, queue, watches) is `sync-etcd`.
//!
//! - [`name`]: validation of lock, group and candidate names;
//! - [`signal`]: one-shot loss signals (`lost()`, `revoked()`);
//! - [`duration`]: human durations (`10s`, `500ms`) for configs and URLs, and the TTL and timeout
//!   ranges every backend accepts;
//! - [`backend`]: the choice of a backend from a URL or a serde value;
//! - [`local_queue`]: the named FIFO queues under the in-process backends;
//! - `etcd` (feature `etcd`): the settings of an etcd connection, as data;
//! - `check` (feature `testing`): the cancel-at-every-poll harness the conformance suites use.
//!
//! ```
//! use sync_core::name::validate_name;
//! assert!(validate_name("orders/42").is_ok());
//! assert!(validate_name("").is_err());
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod backend;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod check;
pub mod duration;
pub mod endpoint;
pub mod local_queue;
pub mod name;
pub mod signal;
pub mod telemetry;

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
