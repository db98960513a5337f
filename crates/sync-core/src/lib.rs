//! Shared plumbing of the `sync` crates.
//!
//! Users rarely need this crate directly: it is what `sync-lock`, `sync-leader` and `sync-task`
//! share, so that their semantics and their etcd mechanism live in one place.
//!
//! - [`name`]: validation of lock, group and candidate names;
//! - [`signal`]: one-shot loss signals (`lost()`, `revoked()`);
//! - [`duration`]: human durations (`10s`, `500ms`) for configs and URLs;
//! - `etcd` (feature `etcd`): connection config, the lease keeper with its deadline rule, the
//!   key layout, the shared delete watch and the FIFO queue that locks and elections stand on.
//!
//! ```
//! use sync_core::name::validate_name;
//! assert!(validate_name("orders/42").is_ok());
//! assert!(validate_name("").is_err());
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod backend;
pub mod check;
pub mod duration;
pub mod name;
pub mod signal;

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
