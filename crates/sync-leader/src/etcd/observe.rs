//! `observe()` on etcd: a model of one group's range, kept up to date by a [`RangeWatch`].
//!
//! etcd's own `Observe` RPC reports the leader key's puts only, so an observer never learns that
//! nobody leads any more. Here every put and delete of the range is applied to a local copy of
//! the candidates (by create revision), and the head (the leader) is recomputed after each
//! revision: a deletion that empties the range is reported as `None`.

use std::collections::{BTreeMap, HashMap};

use sync_etcd::{EtcdClient, RangeChange, RangeEvent, RangeKv, RangeWatch, Result};

use super::leader_info;
use crate::{LeaderInfo, LeaderStream};

/// The candidates of one group, as of the last revision applied.
#[derive(Debug, Default)]
struct View {
    /// create revision → value.
    by_rev: BTreeMap<i64, Vec<u8>>,
    /// key → create revision.
    by_key: HashMap<Vec<u8>, i64>,
}

impl View {
    fn reset(&mut self, kvs: Vec<RangeKv>) {
        self.by_rev.clear();
        self.by_key.clear();
        for kv in kvs {
            self.put(kv.key, kv.create_revision, kv.value);
        }
    }

    fn put(&mut self, key: Vec<u8>, create_revision: i64, value: Vec<u8>) {
        if let Some(old) = self.by_key.insert(key, create_revision) {
            if old != create_revision {
                self.by_rev.remove(&old);
            }
        }
        self.by_rev.insert(create_revision, value);
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some(rev) = self.by_key.remove(key) {
            self.by_rev.remove(&rev);
        }
    }

    fn apply(&mut self, event: RangeEvent) {
        match event {
            RangeEvent::Changes { changes, .. } => {
                for change in changes {
                    match change {
                        RangeChange::Put(kv) => self.put(kv.key, kv.create_revision, kv.value),
                        RangeChange::Delete { key } => self.delete(&key),
                        other => tracing::warn!(?other, "unknown range change ignored"),
                    }
                }
            }
            RangeEvent::Reset { kvs, .. } => self.reset(kvs),
            other => tracing::warn!(?other, "unknown range event ignored"),
        }
    }

    /// The leader: the candidate with the smallest create revision.
    fn head(&self) -> Option<LeaderInfo> {
        self.by_rev
            .first_key_value()
            .map(|(rev, value)| leader_info(value, *rev))
    }
}

struct State {
    watch: RangeWatch,
    view: View,
    last: Option<LeaderInfo>,
    first: bool,
}

/// Reads the range `dir`, then follows it. The first item is the state read.
pub(super) async fn observe(client: EtcdClient, dir: String) -> Result<LeaderStream> {
    let (watch, snapshot) = RangeWatch::open(client, dir).await?;
    let mut view = View::default();
    view.reset(snapshot.kvs);
    let state = State {
        watch,
        last: view.head(),
        view,
        first: true,
    };
    Ok(LeaderStream::new(futures::stream::unfold(
        state,
        |mut st| async move {
            if st.first {
                st.first = false;
                let now = st.last.clone();
                return Some((now, st));
            }
            loop {
                let event = st.watch.next().await;
                st.view.apply(event);
                let now = st.view.head();
                if now != st.last {
                    st.last = now.clone();
                    return Some((now, st));
                }
            }
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::encode_value;

    #[test]
    fn head_follows_puts_and_deletes() {
        let mut v = View::default();
        assert_eq!(v.head(), None);
        v.put(b"k/b".to_vec(), 7, encode_value("b", ""));
        v.put(b"k/a".to_vec(), 5, encode_value("a", ""));
        assert_eq!(v.head(), Some(LeaderInfo::new("a", 5, "")));
        // A proclaim: same key, same create revision, new value.
        v.put(b"k/a".to_vec(), 5, encode_value("a", "addr"));
        assert_eq!(v.head(), Some(LeaderInfo::new("a", 5, "addr")));
        v.delete(b"k/a");
        assert_eq!(v.head(), Some(LeaderInfo::new("b", 7, "")));
        // Deleted and created again: the old create revision is forgotten.
        v.put(b"k/b".to_vec(), 9, encode_value("b", ""));
        assert_eq!(v.by_rev.len(), 1);
        v.delete(b"k/b");
        v.delete(b"k/unknown");
        assert_eq!(v.head(), None);
    }
}
