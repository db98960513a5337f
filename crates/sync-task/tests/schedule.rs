//! Schedules over both leader backends: one member runs at a time, the schedule moves on leader
//! loss, a run in progress is told of the loss, stop hands over. The etcd tests run against the
//! cluster that `cargo xtask test` starts (`SYNC_ETCD_ENDPOINTS`) and are listed as ignored
//! without it; one of them SIGKILLs a leader process (this test binary run again with
//! `SYNC_TASK_SCHEDULE_CHILD` set).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sync_core::check::within;
use sync_leader::{Leader, LossReason};
use sync_task::{CommandError, Error, Failure, Schedule, ScheduleHandle, ScheduleStatus};

const LONG: Duration = Duration::from_secs(30);

/// What the shared tests need from a leader backend.
trait Election: Send + Sync {
    /// A new member's connection to the backend (etcd: its own client, as another process).
    fn member(&self) -> BoxFuture<'_, Arc<dyn Leader>>;
    /// Takes the office of `group` away from its leader behind its back (etcd: revokes the
    /// leader's lease).
    fn revoke_leader<'a>(&'a self, group: &'a str) -> BoxFuture<'a, ()>;
    /// The candidacy TTL the tests ask for.
    fn ttl(&self) -> Duration;
}

/// Runs recorded by a schedule's function: (member, term), plus overlap violations.
#[derive(Default)]
struct Record {
    runs: Mutex<Vec<(String, u64)>>,
    inside: AtomicBool,
    overlaps: AtomicUsize,
}

fn recording(name: &str, every: Duration, rec: Arc<Record>) -> Schedule {
    Schedule::new(name, every, move |tick| {
        let rec = rec.clone();
        async move {
            if rec.inside.swap(true, Ordering::SeqCst) {
                rec.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            // A run cancelled (dropped) on revocation ends here too: it is no longer inside.
            let _leave = Leave(&rec.inside);
            rec.runs
                .lock()
                .unwrap()
                .push((tick.member().to_owned(), tick.term()));
            // A little work, so that runs have a duration.
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(())
        }
    })
}

/// Marks the end of a run when dropped: at its end, or when the schedule drops it.
struct Leave<'a>(&'a AtomicBool);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

async fn start_members(
    e: &dyn Election,
    schedule: &Schedule,
    n: usize,
) -> Vec<(String, ScheduleHandle)> {
    let mut members = Vec::new();
    for i in 0..n {
        let id = format!("member-{i}");
        let h = schedule
            .clone()
            .with_ttl(e.ttl())
            .start(e.member().await, id.clone())
            .expect("start the schedule");
        members.push((id, h));
    }
    members
}

fn leader_of(members: &[(String, ScheduleHandle)]) -> Vec<(String, u64)> {
    members
        .iter()
        .filter_map(|(id, h)| h.status().leading.map(|t| (id.clone(), t)))
        .collect()
}

async fn wait_runs(h: &ScheduleHandle, n: u64) -> ScheduleStatus {
    within("schedule runs", LONG, h.wait_for(|s| s.runs >= n)).await
}

/// The schedule runs on one member at a time, the leader; when the leader loses its office it
/// moves to another member, in a higher term; runs never overlap.
async fn runs_on_one_member_and_moves_on_leader_loss(e: &dyn Election) {
    let rec = Arc::new(Record::default());
    let schedule = recording("moving", Duration::from_millis(50), rec.clone());
    let members = start_members(e, &schedule, 3).await;
    let first = within("a leader runs the schedule", LONG, async {
        loop {
            for (id, h) in &members {
                let s = h.status();
                if s.runs >= 3 {
                    return (id.clone(), s.leading.expect("a member that runs leads"));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        leader_of(&members),
        vec![first.clone()],
        "not exactly one leader"
    );
    for (id, h) in &members {
        if *id != first.0 {
            assert_eq!(h.status().runs, 0, "{id} ran while {} led", first.0);
        }
    }
    e.revoke_leader(schedule.group()).await;
    let old = &members.iter().find(|(id, _)| *id == first.0).unwrap().1;
    within(
        "the old leader is told",
        LONG,
        old.wait_for(|s| s.leading != Some(first.1)),
    )
    .await;
    let next = within("another member takes over", LONG, async {
        loop {
            let leaders = leader_of(&members);
            if let Some((id, term)) = leaders.into_iter().find(|(id, _)| *id != first.0) {
                return (id, term);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(next.1 > first.1, "term {} after {}", next.1, first.1);
    let new = &members.iter().find(|(id, _)| *id == next.0).unwrap().1;
    wait_runs(new, 3).await;
    for (_, h) in members {
        h.stop().await.unwrap();
    }
    assert_eq!(
        rec.overlaps.load(Ordering::SeqCst),
        0,
        "two runs overlapped"
    );
    // Every term was run by one member, and terms only grew.
    let runs = rec.runs.lock().unwrap().clone();
    let mut last = (String::new(), 0);
    for (member, term) in runs {
        assert!(term >= last.1, "term {term} ran after term {}", last.1);
        if term == last.1 {
            assert_eq!(member, last.0, "two members ran in term {term}");
        }
        last = (member, term);
    }
}

/// A run in progress when the office is lost sees `revoked()` resolve; one that ignores it is
/// cancelled (dropped) and counted as failed.
async fn run_in_progress_is_told_of_revocation(e: &dyn Election) {
    let told: Arc<Mutex<Option<LossReason>>> = Default::default();
    let t = told.clone();
    let listening = Schedule::new("listening", Duration::from_millis(20), move |tick| {
        let t = t.clone();
        async move {
            let reason = tick.revoked().await;
            *t.lock().unwrap() = Some(reason);
            Ok(())
        }
    })
    .with_ttl(e.ttl())
    .with_stop_grace(Duration::from_millis(100));
    let h = listening.start(e.member().await, "listener").unwrap();
    wait_runs(&h, 1).await;
    e.revoke_leader("listening").await;
    within("the run was told", LONG, async {
        while told.lock().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let reason = told.lock().unwrap().clone().unwrap();
    assert!(
        matches!(
            reason,
            LossReason::Revoked | LossReason::LeaseExpired | LossReason::KeepaliveFailed { .. }
        ),
        "{reason:?}"
    );
    assert_eq!(
        h.status().failures,
        0,
        "a run that reacted was counted as failed"
    );
    h.stop().await.unwrap();

    let dropped = Arc::new(AtomicBool::new(false));
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let d = dropped.clone();
    let deaf = Schedule::new("deaf", Duration::from_millis(20), move |_| {
        let flag = Flag(d.clone());
        async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Ok(())
        }
    })
    .with_ttl(e.ttl())
    .with_stop_grace(Duration::from_millis(100));
    let h = deaf.start(e.member().await, "deaf-member").unwrap();
    wait_runs(&h, 1).await;
    e.revoke_leader("deaf").await;
    let s = within(
        "the run was cancelled",
        LONG,
        h.wait_for(|s| s.failures >= 1),
    )
    .await;
    assert!(dropped.load(Ordering::SeqCst), "the run was not dropped");
    assert!(
        matches!(&s.last_failure, Some(Failure::Error { message }) if message.contains("lost")),
        "{s:?}"
    );
    // It was elected again (the only member) and hangs in a run again: stop cancels that run
    // after the grace.
    wait_runs(&h, 2).await;
    within("stop past the grace", LONG, h.stop()).await.unwrap();
}

/// Stopping the leader hands the schedule over at once (it resigns; no TTL wait); a stopped
/// member runs nothing more.
async fn stop_hands_over(e: &dyn Election) {
    let rec = Arc::new(Record::default());
    let schedule = recording("handover", Duration::from_millis(30), rec.clone())
        .with_ttl(Duration::from_secs(30));
    let a = schedule
        .clone()
        .start(e.member().await, "a")
        .expect("start a");
    wait_runs(&a, 2).await;
    let b = schedule.start(e.member().await, "b").expect("start b");
    assert_eq!(b.status().runs, 0);
    let a_runs = {
        let stopping = Instant::now();
        a.stop().await.unwrap();
        let s = wait_runs(&b, 1).await;
        // With a 30 s TTL, only a resignation can hand over this fast.
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "hand-over took {:?}",
            stopping.elapsed()
        );
        assert!(s.leading.is_some());
        rec.runs
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == "a")
            .count()
    };
    wait_runs(&b, 3).await;
    let a_after = rec
        .runs
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _)| m == "a")
        .count();
    assert_eq!(a_runs, a_after, "a stopped member ran again");
    b.stop().await.unwrap();
    assert_eq!(rec.overlaps.load(Ordering::SeqCst), 0);
}

/// Runs that fail or panic are counted; the schedule goes on.
async fn failing_runs_do_not_stop_the_schedule(e: &dyn Election) {
    let schedule = Schedule::new("flaky", Duration::from_millis(10), |tick| async move {
        match tick.run() {
            2 => panic!("run 2 panics"),
            n if n % 2 == 1 => Err(CommandError::msg(format!("run {n} fails"))),
            n => Ok(n),
        }
    })
    .with_ttl(e.ttl());
    let h = schedule.start(e.member().await, "m").unwrap();
    let s = wait_runs(&h, 6).await;
    assert!(s.failures >= 4, "{s:?}");
    assert!(s.leading.is_some(), "{s:?}");
    h.stop().await.unwrap();
}

/// Bad names and intervals are typed errors at start.
async fn invalid_schedule_rejected(e: &dyn Election) {
    let ok = |_| async { Ok(()) };
    let leader = e.member().await;
    let e1 = Schedule::new("", Duration::from_secs(1), ok)
        .start(leader.clone(), "m")
        .unwrap_err();
    assert!(matches!(e1, Error::InvalidName { .. }), "{e1:?}");
    let e2 = Schedule::new("s", Duration::ZERO, ok)
        .start(leader.clone(), "m")
        .unwrap_err();
    assert!(matches!(e2, Error::InvalidOptions { .. }), "{e2:?}");
    let e3 = Schedule::new("s", Duration::from_secs(1), ok)
        .start(leader.clone(), "a\0b")
        .unwrap_err();
    assert!(matches!(e3, Error::InvalidName { .. }), "{e3:?}");
    let e4 = Schedule::new("s", Duration::from_secs(1), ok)
        .with_ttl(Duration::from_millis(10))
        .start(leader, "m")
        .unwrap_err();
    assert!(matches!(e4, Error::InvalidOptions { .. }), "{e4:?}");
}

mod local {
    use super::*;
    use futures::FutureExt;
    use sync_leader::LocalLeader;

    #[derive(Default)]
    struct LocalElection {
        leader: LocalLeader,
    }

    impl Election for LocalElection {
        fn member(&self) -> BoxFuture<'_, Arc<dyn Leader>> {
            let l: Arc<dyn Leader> = Arc::new(self.leader.clone());
            futures::future::ready(l).boxed()
        }
        fn revoke_leader<'a>(&'a self, group: &'a str) -> BoxFuture<'a, ()> {
            assert!(self.leader.revoke(group), "nobody led {group}");
            futures::future::ready(()).boxed()
        }
        fn ttl(&self) -> Duration {
            Duration::from_secs(1)
        }
    }

    macro_rules! local_tests {
        ($($name:ident),*) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                super::$name(&LocalElection::default()).await;
            }
        )*};
    }

    local_tests!(
        runs_on_one_member_and_moves_on_leader_loss,
        run_in_progress_is_told_of_revocation,
        stop_hands_over,
        failing_runs_do_not_stop_the_schedule,
        invalid_schedule_rejected
    );
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use futures::FutureExt;
    use std::io::{BufRead, BufReader};
    use std::process::{Command as Process, Stdio};
    use sync_etcd::etcd_client::{GetOptions, SortOrder, SortTarget};
    use sync_etcd::{testing, EtcdClient, EtcdConfig};
    use sync_leader::EtcdLeader;

    const CHILD_VAR: &str = "SYNC_TASK_SCHEDULE_CHILD";

    struct EtcdElection {
        cfg: EtcdConfig,
        admin: EtcdClient,
    }

    impl EtcdElection {
        async fn new() -> Self {
            let cfg = testing::config("schedule");
            let admin = testing::connect(cfg.clone()).await;
            EtcdElection { cfg, admin }
        }
    }

    impl Drop for EtcdElection {
        fn drop(&mut self) {
            let admin = self.admin.clone();
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(testing::wipe(&admin))
            })
            .join();
        }
    }

    impl Election for EtcdElection {
        fn member(&self) -> BoxFuture<'_, Arc<dyn Leader>> {
            async move {
                let l: Arc<dyn Leader> = Arc::new(
                    EtcdLeader::connect(self.cfg.clone())
                        .await
                        .expect("connect a member"),
                );
                l
            }
            .boxed()
        }

        fn revoke_leader<'a>(&'a self, group: &'a str) -> BoxFuture<'a, ()> {
            async move {
                let dir = self.admin.keyspace().dir("election", group);
                let admin = &self.admin;
                let lease = admin
                    .retry("find the leader", admin.default_budget(), |mut c| {
                        let dir = dir.clone();
                        async move {
                            let r = c
                                .get(
                                    dir,
                                    Some(
                                        GetOptions::new()
                                            .with_prefix()
                                            .with_sort(SortTarget::Create, SortOrder::Ascend)
                                            .with_limit(1),
                                    ),
                                )
                                .await?;
                            Ok(r.kvs().first().map(|kv| kv.lease()))
                        }
                    })
                    .await
                    .unwrap()
                    .expect("somebody leads");
                admin
                    .retry(
                        "revoke the leader's lease",
                        admin.default_budget(),
                        |mut c| async move { c.lease_revoke(lease).await.map(|_| ()) },
                    )
                    .await
                    .unwrap();
            }
            .boxed()
        }

        fn ttl(&self) -> Duration {
            Duration::from_secs(2)
        }
    }

    macro_rules! etcd_tests {
        ($($name:ident),*) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[ignore = "needs etcd: run `cargo xtask test`"]
            async fn $name() {
                super::$name(&EtcdElection::new().await).await;
            }
        )*};
    }

    etcd_tests!(
        runs_on_one_member_and_moves_on_leader_loss,
        run_in_progress_is_told_of_revocation,
        stop_hands_over,
        failing_runs_do_not_stop_the_schedule,
        invalid_schedule_rejected
    );

    /// The member process of `leader_process_killed`: runs the schedule, reports each run.
    async fn child_main(prefix: &str) -> ! {
        let cfg = EtcdConfig::new(testing::endpoints()).with_prefix(prefix);
        let leader: Arc<dyn Leader> = Arc::new(EtcdLeader::connect(cfg).await.unwrap());
        let schedule = Schedule::new("killed", Duration::from_millis(50), |tick| async move {
            println!("\nRUN {}", tick.term());
            Ok(())
        })
        .with_ttl(Duration::from_secs(2));
        let _h = schedule.start(leader, "child").unwrap();
        std::future::pending::<()>().await;
        unreachable!()
    }

    /// The leader's process is SIGKILLed: the schedule moves to another member within about
    /// the TTL, in a higher term.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn leader_process_killed() {
        if let Ok(prefix) = std::env::var(CHILD_VAR) {
            child_main(&prefix).await;
        }
        let e = EtcdElection::new().await;
        let mut child = Process::new(std::env::current_exe().unwrap())
            .args([
                "etcd::leader_process_killed",
                "--exact",
                "--include-ignored",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD_VAR, &e.cfg.prefix)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the leader process");
        let stdout = child.stdout.take().unwrap();
        let first_run = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("RUN ")
                        .map(|t| t.parse::<u64>().unwrap())
                })
        });
        let child_term = within("the child process leads", LONG, first_run)
            .await
            .unwrap();
        let child_term = child_term.expect("the child exited before running the schedule");
        let schedule = Schedule::new("killed", Duration::from_millis(50), |_| async { Ok(()) })
            .with_ttl(Duration::from_secs(2));
        let h = schedule.start(e.member().await, "survivor").unwrap();
        assert_eq!(h.status().runs, 0, "two members ran at once");
        child.kill().expect("SIGKILL the leader process");
        child.wait().unwrap();
        let killed = Instant::now();
        let s = wait_runs(&h, 1).await;
        let took = killed.elapsed();
        eprintln!("schedule moved {took:?} after its leader's process was killed (TTL 2 s)");
        assert!(s.leading.unwrap() > child_term);
        assert!(took < Duration::from_secs(8), "took {took:?}");
        h.stop().await.unwrap();
    }
}
