#![doc = include_str!("../README.md")]
//!
//! ## The pieces
//!
//! - [`EtcdConfig`]: endpoints, key prefix, TLS, auth, timeouts, lease TTL; from serde or a URL;
//! - [`EtcdConnection`]: what a user shares between primitives: one connection, and its
//!   [`Session`]s (a lease you can see, bind your own keys to, and watch through `lost()`);
//! - [`EtcdClient`]: the engine's connection, with transient-error retries bounded by a deadline
//!   (its API shows etcd-client's types: it is for building primitives);
//! - [`Lease`]: a lease kept alive on a timer whose loss is signalled before the server can
//!   expire it (the deadline rule, see `docs/etcd.md`);
//! - [`Keyspace`]: the key layout, with names encoded so that `a` never sees `a/b`;
//! - [`WatchHub`] and [`RangeWatch`]: shared, never-behind watches;
//! - [`Contender`]: join a FIFO queue, wait for its head within a max wait, and hold it with a
//!   loss signal and a fencing token, cancel-safe on every path. Locks and elections are thin
//!   adapters over it.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod client;
mod connection;
mod contender;
mod error;
mod keys;
mod leader_route;
mod lease;
mod queue;
mod range_watch;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod watch;

pub use client::EtcdClient;
pub use connection::{EtcdConnection, Session};
pub use contender::{Claim, ContendError, Contender};
pub use error::{Error, Result};
pub use keys::{decode_name, encode_name, Keyspace};
pub use lease::{loss_margin, renew_interval, Lease, LeasePool, RIDE_OUT};
pub use queue::{Admission, Held, Queue, QueueEntry, WaitError};
pub use range_watch::{
    prefix_end, read_page, RangeChange, RangeEvent, RangeKv, RangePage, RangeSnapshot, RangeWatch,
};
pub use sync_core::etcd::{ConfigError, EtcdConfig, TlsConfig};
pub use watch::{open_prefix_watch, KeyEvent, KeySubscription, WatchHub};

/// The raw etcd client crate, for primitives that need an RPC this crate does not wrap.
pub use etcd_client;
