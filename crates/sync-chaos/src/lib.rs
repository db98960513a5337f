//! Fault injection for the `sync` workspace: the fault scenarios behind `cargo xtask chaos`,
//! their worker processes, tools and checkers.
//!
//! - [`event`]: JSON-lines event logs stamped with `CLOCK_MONOTONIC` (comparable across
//!   processes);
//! - [`check`]: one checker per scenario, counting violations;
//! - [`proxy`]: a TCP proxy on loopback that forwards, blackholes or resets;
//! - [`scenario`]: the fault scenarios (`sync-chaos run`, which `cargo xtask chaos` runs);
//! - [`ntp`]: an NTP server that lies;
//! - [`secure`]: a single-member etcd with TLS and authentication, for tests;
//! - [`tool`]: the harness's `kill -9`, marks and checker runs;
//! - [`worker`]: the workers the `sync-chaos` binary runs, using only the crates' public API.

pub mod badinput;
pub mod check;
pub mod cluster;
pub mod event;
pub mod ntp;
pub mod proxy;
pub mod scenario;
pub mod secure;
pub mod tool;
pub mod worker;
