//! The window against a model of the queue in etcd: bounded, exact, and missing nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::super::records::{Entry, JobRecord, Keys};
use super::State;
use sync_etcd::{prefix_end, RangeChange, RangeKv, RangePage};

use proptest::prelude::*;
use sync_etcd::Keyspace;

/// The view's state beside a model of the queue in etcd, fed the same changes etcd's watch
/// would deliver, and pages read from the model.
struct Sim {
    keys: Keys,
    /// `q/jobs/` and `q/claims/` keys as etcd holds them.
    store: BTreeMap<Vec<u8>, RangeKv>,
    rev: i64,
    st: State,
    next: u64,
    page_limit: usize,
}

impl Sim {
    fn new(cap: usize, page_limit: usize) -> Sim {
        let mut st = State::new("w1".into(), Duration::ZERO, cap);
        st.set_command("c", true);
        Sim {
            keys: Keys::new(&Keyspace::new("p")),
            store: BTreeMap::new(),
            rev: 1,
            st,
            next: 0,
            page_limit,
        }
    }

    fn record(&self, command: &str, attempts: u32) -> Vec<u8> {
        let mut r = JobRecord::new(&crate::Job::new(command, ()), 4);
        r.attempts = attempts;
        serde_json::to_vec(&r).unwrap()
    }

    fn events(&mut self, changes: Vec<RangeChange>) {
        for c in &changes {
            self.st.apply(&self.keys, self.rev, c);
        }
        self.st.trim(&self.keys);
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> RangeChange {
        let k = key.into_bytes();
        let create = self.store.get(&k).map_or(self.rev, |kv| kv.create_revision);
        let kv = RangeKv::new(k.clone(), value, create, self.rev, 0);
        self.store.insert(k, kv.clone());
        RangeChange::Put(kv)
    }

    fn delete(&mut self, key: String) -> Option<RangeChange> {
        let k = key.into_bytes();
        self.store
            .remove(&k)
            .map(|_| RangeChange::Delete { key: k })
    }

    /// Submits a job whose id sorts at `at` (submitters' clocks differ: ids do not arrive
    /// in order).
    fn submit_at(&mut self, command: &str, at: u16) {
        self.rev += 1;
        self.next += 1;
        let id = format!("{at:04x}{:08x}", self.next);
        let v = self.record(command, 0);
        let c = self.put(self.keys.job(&id), v);
        self.events(vec![c]);
    }

    fn submit(&mut self, command: &str) {
        self.submit_at(command, 0x8000);
    }

    fn jobs(&self) -> Vec<String> {
        self.store
            .keys()
            .filter_map(|k| match self.keys.parse(k) {
                Some(Entry::Job(id)) => Some(id.to_owned()),
                _ => None,
            })
            .collect()
    }

    fn claimed(&self, id: &str) -> bool {
        self.store.contains_key(self.keys.claim(id).as_bytes())
    }

    /// Another worker claims job `id` (the claim and the job's rewrite, in one revision).
    fn claim(&mut self, id: &str) {
        if self.claimed(id) || !self.store.contains_key(self.keys.job(id).as_bytes()) {
            return;
        }
        self.rev += 1;
        let a = self.put(self.keys.claim(id), b"{}".to_vec());
        let v = self.record("c", 1);
        let b = self.put(self.keys.job(id), v);
        self.events(vec![a, b]);
    }

    /// The claimer dies: its claim goes, the job stays.
    fn lose_claim(&mut self, id: &str) {
        self.rev += 1;
        let c: Vec<_> = self.delete(self.keys.claim(id)).into_iter().collect();
        self.events(c);
    }

    /// The job ends (deleted with its claim, in one revision).
    fn finish(&mut self, id: &str) {
        self.rev += 1;
        let c: Vec<_> = [
            self.delete(self.keys.job(id)),
            self.delete(self.keys.claim(id)),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.events(c);
    }

    /// Reads a page if the view wants one. Whether it did.
    fn page(&mut self) -> bool {
        let Some((from, room)) = self.st.wants_page(&self.keys) else {
            return false;
        };
        let end = prefix_end(self.keys.jobs().as_bytes());
        let limit = room.min(self.page_limit);
        let mut kvs: Vec<RangeKv> = self
            .store
            .range(from.clone()..end)
            .map(|(_, kv)| kv.clone())
            .take(limit + 1)
            .collect();
        let next = (kvs.len() > limit).then(|| {
            kvs.truncate(limit);
            let mut k = kvs[limit - 1].key.clone();
            k.push(0);
            k
        });
        let page = RangePage::new(self.rev, kvs, next);
        self.st.absorb_page(&self.keys, &from, page);
        true
    }

    /// What must hold after every step.
    fn check(&self) {
        let st = &self.st;
        assert!(
            st.unclaimed.len() <= st.cap,
            "{} > cap {}",
            st.unclaimed.len(),
            st.cap
        );
        for (id, e) in &st.jobs {
            let kv = self
                .store
                .get(self.keys.job(id).as_bytes())
                .unwrap_or_else(|| panic!("the view tracks job {id}, which is gone"));
            assert_eq!(e.mod_rev, kv.mod_revision, "stale entry for {id}");
            assert_eq!(st.unclaimed.contains(id), !self.claimed(id), "{id}");
        }
        if st.complete {
            for id in self.jobs() {
                if !self.claimed(&id) && !self.st.jobs.contains_key(&id) {
                    let kv = &self.store[self.keys.job(&id).as_bytes()];
                    let r: JobRecord = serde_json::from_slice(&kv.value).unwrap();
                    assert_ne!(
                        r.command, "c",
                        "complete, but job {id} of ours is not tracked"
                    );
                }
            }
        }
    }

    /// Works like a worker until the queue holds no job of ours; fails if that takes
    /// more than `steps`.
    fn drain(&mut self, steps: usize) {
        for _ in 0..steps {
            self.check();
            if self.page() {
                continue;
            }
            let tracked = self.st.unclaimed.iter().next().cloned();
            match tracked {
                Some(id) => self.finish(&id),
                None => {
                    let mine: Vec<String> = self
                        .jobs()
                        .into_iter()
                        .filter(|id| {
                            let r: JobRecord = serde_json::from_slice(
                                &self.store[self.keys.job(id).as_bytes()].value,
                            )
                            .unwrap();
                            r.command == "c"
                        })
                        .collect();
                    if mine.is_empty() {
                        return;
                    }
                    // Only claimed jobs are left: their claimers finish them.
                    let claimed: Vec<String> =
                        mine.iter().filter(|id| self.claimed(id)).cloned().collect();
                    assert!(
                        !claimed.is_empty(),
                        "jobs of ours are pending but the view neither tracks them nor reads a page: {mine:?}"
                    );
                    for id in claimed {
                        self.finish(&id);
                    }
                }
            }
        }
        panic!("the queue did not drain in {steps} steps");
    }
}

#[test]
fn a_large_backlog_is_read_in_pages_and_drains() {
    let mut sim = Sim::new(64, 16);
    for _ in 0..1000 {
        sim.submit("c");
    }
    // Submitted before the view read anything: left out, ahead of a pass yet to start.
    assert_eq!(sim.st.jobs.len(), 64);
    sim.drain(100_000);
    assert!(sim.jobs().is_empty());
    assert!(sim.st.complete);
}

#[test]
fn jobs_of_other_commands_are_not_held() {
    let mut sim = Sim::new(8, 4);
    for i in 0..100 {
        sim.submit(if i % 10 == 0 { "c" } else { "other" });
    }
    sim.drain(10_000);
    assert_eq!(
        sim.jobs().len(),
        90,
        "only the other command's jobs are left"
    );
    assert!(sim.st.jobs.is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    Submit(bool, u16),
    Claim(usize),
    LoseClaim(usize),
    Finish(usize),
    Page,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), any::<u16>()).prop_map(|(o, at)| Op::Submit(o, at)),
        2 => any::<usize>().prop_map(Op::Claim),
        1 => any::<usize>().prop_map(Op::LoseClaim),
        2 => any::<usize>().prop_map(Op::Finish),
        2 => Just(Op::Page),
    ]
}

proptest! {
    /// Whatever happens to the queue and in whatever order pages are read: the window
    /// never holds more than its cap of unclaimed jobs, holds only jobs that exist as they
    /// are, and every job of ours is eventually seen and run.
    #[test]
    fn the_window_is_bounded_exact_and_misses_nothing(
        cap in 1usize..24,
        page in 1usize..12,
        ops in proptest::collection::vec(op(), 0..300),
    ) {
        let mut sim = Sim::new(cap.max(4), page);
        for op in ops {
            let jobs = sim.jobs();
            let pick = |i: usize| (!jobs.is_empty()).then(|| jobs[i % jobs.len()].clone());
            match op {
                Op::Submit(ours, at) => sim.submit_at(if ours { "c" } else { "other" }, at),
                Op::Claim(i) => if let Some(id) = pick(i) { sim.claim(&id) },
                Op::LoseClaim(i) => if let Some(id) = pick(i) { sim.lose_claim(&id) },
                Op::Finish(i) => if let Some(id) = pick(i) { sim.finish(&id) },
                Op::Page => { sim.page(); }
            }
            sim.check();
        }
        sim.drain(100_000);
    }
}

#[test]
fn ranks_are_a_permutation_and_spread_over_workers() {
    let workers: BTreeSet<String> = (0..3).map(|i| format!("w{i}")).collect();
    let mut first = HashMap::new();
    for j in 0..300 {
        let id = format!("job{j}");
        let mut ranks = Vec::new();
        for w in &workers {
            let st = State {
                me: w.clone(),
                workers: [("c".to_owned(), workers.clone())].into(),
                ..State::default()
            };
            ranks.push(st.rank(&id, "c"));
        }
        ranks.sort();
        assert_eq!(ranks, vec![0, 1, 2], "ranks of {id} are not a permutation");
        let st = State {
            me: "w0".into(),
            workers: [("c".to_owned(), workers.clone())].into(),
            ..State::default()
        };
        *first.entry(st.rank(&id, "c")).or_insert(0) += 1;
    }
    // w0 is first in line for roughly a third of the jobs.
    let firsts = first[&0];
    assert!((60..140).contains(&firsts), "w0 first for {firsts} of 300");
}

/// A claim of a held job starts only on a release: the hold deleted alone, with our claim
/// standing. A withdrawal (claim, job and hold deleted in one revision, the hold last) never
/// reads as one, whether the view saw the claim before the waiter registered or after.
#[test]
fn a_held_claim_starts_on_release_only() {
    let keys = Keys::new(&Keyspace::new("p"));
    let kv = |key: String, rev: i64| RangeKv::new(key.into_bytes(), b"{}".to_vec(), rev, rev, 0);
    let put = |key: String, rev: i64| RangeChange::Put(kv(key, rev));
    let del = |key: String| RangeChange::Delete {
        key: key.into_bytes(),
    };
    let record = serde_json::to_vec(&JobRecord::new(&crate::Job::new("c", ()), 4)).unwrap();
    let job = |id: &str, rev: i64| {
        RangeChange::Put(RangeKv::new(
            keys.job(id).into_bytes(),
            record.clone(),
            rev,
            rev,
            0,
        ))
    };
    let fresh = || {
        let mut st = State::new("w1".into(), Duration::ZERO, 64);
        st.set_command("c", true);
        st
    };
    let outcome = |rx: &mut tokio::sync::oneshot::Receiver<bool>| rx.try_recv().ok();

    for seen_claim_first in [true, false] {
        // Released: the hold goes alone.
        let mut st = fresh();
        st.apply(&keys, 2, &job("a", 2));
        st.apply(&keys, 2, &put(keys.hold("a"), 2));
        if seen_claim_first {
            st.apply(&keys, 3, &put(keys.claim("a"), 3));
        }
        let mut rx = st.hold_ended("a", 3);
        assert_eq!(outcome(&mut rx), None, "ended before the release");
        if !seen_claim_first {
            st.apply(&keys, 3, &put(keys.claim("a"), 3));
            assert_eq!(outcome(&mut rx), None, "ended at the claim");
        }
        st.apply(&keys, 4, &del(keys.hold("a")));
        assert_eq!(
            outcome(&mut rx),
            Some(true),
            "a release was not seen as one"
        );

        // Withdrawn: claim, job and hold go in one revision.
        let mut st = fresh();
        st.apply(&keys, 2, &job("b", 2));
        st.apply(&keys, 2, &put(keys.hold("b"), 2));
        if seen_claim_first {
            st.apply(&keys, 3, &put(keys.claim("b"), 3));
        }
        let mut rx = st.hold_ended("b", 3);
        if !seen_claim_first {
            st.apply(&keys, 3, &put(keys.claim("b"), 3));
        }
        for c in [
            del(keys.claim("b")),
            del(keys.job("b")),
            del(keys.hold("b")),
        ] {
            st.apply(&keys, 4, &c);
        }
        assert_eq!(
            outcome(&mut rx),
            Some(false),
            "a withdrawal was taken for a release"
        );
    }

    // Registered after the view saw the release: at once.
    let mut st = fresh();
    st.apply(&keys, 2, &job("c", 2));
    st.apply(&keys, 2, &put(keys.hold("c"), 2));
    st.apply(&keys, 3, &put(keys.claim("c"), 3));
    st.apply(&keys, 4, &del(keys.hold("c")));
    assert_eq!(outcome(&mut st.hold_ended("c", 3)), Some(true));
    // Registered after the view saw the withdrawal (the claim gone, the view past it).
    let mut st = fresh();
    st.apply(&keys, 2, &job("d", 2));
    st.apply(&keys, 2, &put(keys.hold("d"), 2));
    st.apply(&keys, 3, &put(keys.claim("d"), 3));
    for c in [
        del(keys.claim("d")),
        del(keys.job("d")),
        del(keys.hold("d")),
    ] {
        st.apply(&keys, 4, &c);
    }
    assert_eq!(outcome(&mut st.hold_ended("d", 3)), Some(false));
    // A snapshot after the hold's end: released if our claim is in it, not if it is not.
    let mut st = fresh();
    st.apply(&keys, 2, &put(keys.hold("e"), 2));
    st.apply(&keys, 2, &put(keys.hold("f"), 2));
    let (mut e, mut f) = (st.hold_ended("e", 3), st.hold_ended("f", 3));
    st.reset(&keys, 9, &[kv(keys.claim("e"), 3)]);
    assert_eq!(
        (outcome(&mut e), outcome(&mut f)),
        (Some(true), Some(false))
    );
}

/// A held job is claimable (its claim goes out in parallel with the release), but not again
/// after a claim of it waited too long, until its hold is gone.
#[test]
fn held_jobs_are_claimable_until_a_claim_waited_too_long() {
    let mut sim = Sim::new(8, 8);
    sim.submit("c");
    let id = sim.jobs()[0].clone();
    sim.rev += 1;
    let h = sim.put(sim.keys.hold(&id), Vec::new());
    sim.events(vec![h]);
    let now = tokio::time::Instant::now;
    assert!(matches!(sim.st.next(now()), super::Next::Claim(p) if p.id == id));
    sim.st.await_hold(&id);
    sim.st.release(&id, None);
    assert!(matches!(sim.st.next(now()), super::Next::Idle));
    sim.rev += 1;
    let d: Vec<_> = sim.delete(sim.keys.hold(&id)).into_iter().collect();
    sim.events(d);
    assert!(matches!(sim.st.next(now()), super::Next::Claim(p) if p.id == id));
}
