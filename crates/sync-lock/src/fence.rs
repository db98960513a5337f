//! What a holder needs to make its own writes to the backend conditional on still holding.

/// The key that stands for a held lock, permit or leadership in etcd, and its create revision:
/// an etcd transaction of your own that compares `create_revision(key) == create_revision`
/// succeeds only while you still hold it (etcd's `IsOwner`). The create revision is also the
/// guard's fencing token.
///
/// Only the etcd backend has one ([`LockGuard::fence`](crate::LockGuard::fence) is `None` on the
/// local backend). A runnable example is `examples/fenced_write.rs`:
///
/// ```text
/// let fence = guard.fence().expect("an etcd lock");
/// let txn = Txn::new()
///     .when([Compare::create_revision(fence.key.clone(), CompareOp::Equal, fence.create_revision)])
///     .and_then([TxnOp::put("app/balance", "42", None)]);
/// let written = client.txn(txn).await?.succeeded(); // false: the lock was lost first
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Fence {
    /// The full etcd key of the holder (prefix included).
    pub key: String,
    /// The key's create revision.
    pub create_revision: i64,
}

impl Fence {
    /// A fence for `key` created at `create_revision`; for backends.
    pub fn new(key: impl Into<String>, create_revision: i64) -> Self {
        Fence {
            key: key.into(),
            create_revision,
        }
    }
}
