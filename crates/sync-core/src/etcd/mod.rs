//! The etcd mechanism shared by the lock, leader and task backends.
//!
//! - [`EtcdConfig`]: endpoints, key prefix, TLS, auth, timeouts, lease TTL; from serde or a URL;
//! - [`EtcdClient`]: one connection, with transient-error retries bounded by a deadline;
//! - [`Lease`]: a lease kept alive on a timer whose loss is signalled before the server can
//!   expire it (the deadline rule, see `docs/etcd.md`);
//! - [`Keyspace`]: the key layout, with names encoded so that `a` never sees `a/b`;
//! - [`WatchHub`]: one long-lived delete watch per client and key range, shared by every waiter;
//! - [`Queue`]: the FIFO queue by create revision that locks and elections stand on.

mod client;
mod config;
mod endpoint;
mod error;
mod keys;
mod lease;
mod queue;
mod range_watch;
pub mod testing;
mod watch;

pub use client::EtcdClient;
pub use config::{EtcdConfig, TlsConfig};
pub use error::{Error, Result};
pub use keys::{decode_name, encode_name, Keyspace};
pub use lease::{loss_margin, renew_interval, Lease, LeasePool, RIDE_OUT};
pub use queue::{Held, Queue, QueueEntry, WaitError};
pub use range_watch::{
    prefix_end, read_page, RangeChange, RangeEvent, RangeKv, RangePage, RangeSnapshot, RangeWatch,
};
pub use watch::{KeyEvent, KeySubscription, WatchHub};

/// The raw etcd client type, for backends that need an RPC this crate does not wrap.
pub use etcd_client;
