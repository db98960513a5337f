//! Numbers for queue keys, reused once a key is surely gone.
//!
//! A queue key is `<dir><tag><lease id>-<slot>`. Were the slot a fresh number per join, every
//! acquire would leave one more deleted key under the queue's directory, and etcd (3.4 at least)
//! walks every deleted key in a range until a compaction removes it: the join's read of the
//! queue would slow down with each acquire of the name. So a slot is the smallest number not in
//! use on that lease in this process, and it serves again once its key's delete is confirmed.
//!
//! Why reuse is safe:
//! - two live keys of this process on one lease never share a slot (the set is per process and
//!   per lease, and a slot returns to it only by [`Slot::free`]);
//! - a slot is freed only after a delete of its key, guarded by the key's create revision,
//!   succeeded or found it gone; a path that cannot tell (a join that failed, a background
//!   delete that failed) drops the slot without freeing it, and that number is never used
//!   again on that lease;
//! - deletes are guarded by the create revision, so a late delete of an earlier key of the same
//!   name is a no-op on a later one, and the watch hub does not deliver a delete at or below the
//!   revision a subscriber saw the key at.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};

/// The slots in use, per lease id, in this process.
fn in_use() -> &'static Mutex<HashMap<i64, BTreeSet<u64>>> {
    static IN_USE: OnceLock<Mutex<HashMap<i64, BTreeSet<u64>>>> = OnceLock::new();
    IN_USE.get_or_init(Default::default)
}

/// One slot on one lease, in use until [`free`](Slot::free)d. Dropping it without freeing it
/// keeps the number out of use for good (its key may still exist).
#[derive(Debug)]
pub(crate) struct Slot {
    lease: i64,
    n: u64,
}

impl Slot {
    /// The smallest slot not in use on `lease`.
    pub(crate) fn take(lease: i64) -> Slot {
        let mut map = in_use().lock().unwrap_or_else(|p| p.into_inner());
        let used = map.entry(lease).or_default();
        // The first gap: the numbers in use are sorted, so slot k is free where the k-th
        // number is not k.
        let n = used
            .iter()
            .enumerate()
            .find(|&(i, &n)| i as u64 != n)
            .map_or(used.len() as u64, |(i, _)| i as u64);
        used.insert(n);
        Slot { lease, n }
    }

    /// The number.
    pub(crate) fn n(&self) -> u64 {
        self.n
    }

    /// Its key is gone (a delete guarded by its create revision succeeded or found nothing):
    /// the number may serve again.
    pub(crate) fn free(self) {
        let mut map = in_use().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(used) = map.get_mut(&self.lease) {
            used.remove(&self.n);
            if used.is_empty() {
                map.remove(&self.lease);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_smallest_free_number_and_never_one_in_use() {
        // A lease id no other test uses.
        let lease = -7_000_001;
        let a = Slot::take(lease);
        let b = Slot::take(lease);
        let c = Slot::take(lease);
        assert_eq!((a.n(), b.n(), c.n()), (0, 1, 2));
        b.free();
        let d = Slot::take(lease);
        assert_eq!(d.n(), 1, "a freed number serves again");
        // Dropped without freeing: never used again on this lease.
        let Slot { .. } = a;
        let e = Slot::take(lease);
        assert_eq!(e.n(), 3);
        // Another lease has its own numbers.
        let other = Slot::take(lease - 1);
        assert_eq!(other.n(), 0);
        for s in [c, d, e, other] {
            s.free();
        }
    }
}
