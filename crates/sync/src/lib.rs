#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::print_stdout, clippy::print_stderr)]

#[cfg(feature = "lock")]
#[cfg_attr(docsrs, doc(cfg(feature = "lock")))]
#[doc(inline)]
pub use sync_lock as lock;

#[cfg(feature = "leader")]
#[cfg_attr(docsrs, doc(cfg(feature = "leader")))]
#[doc(inline)]
pub use sync_leader as leader;

#[cfg(feature = "task")]
#[cfg_attr(docsrs, doc(cfg(feature = "task")))]
#[doc(inline)]
pub use sync_task as task;

#[cfg(feature = "time")]
#[cfg_attr(docsrs, doc(cfg(feature = "time")))]
#[doc(inline)]
pub use sync_time as time;

#[cfg(feature = "event")]
#[cfg_attr(docsrs, doc(cfg(feature = "event")))]
#[doc(inline)]
pub use sync_event as event;

/// The traits and types most programs need: `use sync::prelude::*;`.
pub mod prelude {
    #[cfg(all(feature = "event", feature = "etcd"))]
    pub use sync_event::EtcdEvents;
    #[cfg(feature = "event")]
    pub use sync_event::{
        Delivery, Event, EventOptions, EventStream, EventStreamExt, GroupOptions, LocalEvents,
        Member, Message, Retention, Start,
    };
    #[cfg(all(feature = "leader", feature = "etcd"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "leader", feature = "etcd"))))]
    pub use sync_leader::EtcdLeader;
    #[cfg(feature = "leader")]
    #[cfg_attr(docsrs, doc(cfg(feature = "leader")))]
    pub use sync_leader::Leader;
    #[cfg(feature = "leader")]
    #[cfg_attr(docsrs, doc(cfg(feature = "leader")))]
    pub use sync_leader::{ElectOptions, Elected, LeaderInfo, LocalLeader};
    #[cfg(feature = "lock")]
    #[cfg_attr(docsrs, doc(cfg(feature = "lock")))]
    pub use sync_lock::{
        AcquireOptions, LocalLock, LocalRwLock, LocalSemaphore, Lock, LockExt, LockFuture,
        LockGuard, LockSet, RwLock, Semaphore,
    };
    #[cfg(all(feature = "lock", feature = "etcd"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "lock", feature = "etcd"))))]
    pub use sync_lock::{EtcdConfig, EtcdLock, EtcdRwLock, EtcdSemaphore};
    #[cfg(all(feature = "task", feature = "etcd"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "task", feature = "etcd"))))]
    pub use sync_task::EtcdTask;
    #[cfg(feature = "task")]
    #[cfg_attr(docsrs, doc(cfg(feature = "task")))]
    pub use sync_task::{Command, Job, JobHandle, LocalTask, Task, TaskExt, TaskOptions};
    #[cfg(feature = "time")]
    #[cfg_attr(docsrs, doc(cfg(feature = "time")))]
    pub use sync_time::{HybridClock, LocalTime, Time, TimeBounds, TimeExt};
    #[cfg(feature = "ntp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ntp")))]
    pub use sync_time::{NtpOptions, NtpTime};
}
