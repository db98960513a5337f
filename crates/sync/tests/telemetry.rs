//! Spans, loss events and metrics, as a user with a `metrics` recorder and a `tracing`
//! subscriber sees them (the names are listed in `sync_core::telemetry`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// Every metric recorded, read once (reading the recorder drains it).
type Snapshot = Vec<(String, Vec<(String, String)>, DebugValue)>;
use sync::leader::{ElectOptions, Leader, LocalLeader};
use sync::lock::{AcquireOptions, LocalLock, LocalSemaphore, Lock, Semaphore};
use sync::task::{Command, Job, LocalTask, Task, TaskOptions};

/// The value of counter `name` with exactly these labels (0 if never recorded).
fn counter(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> u64 {
    find(snap, name, labels)
        .map(|v| match v {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .unwrap_or(0)
}

fn gauge(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    find(snap, name, labels).map(|v| match v {
        DebugValue::Gauge(g) => g.into_inner(),
        other => panic!("{name} is not a gauge: {other:?}"),
    })
}

fn samples(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    find(snap, name, labels)
        .map(|v| match v {
            DebugValue::Histogram(h) => h.iter().map(|x| x.into_inner()).collect(),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .unwrap_or_default()
}

fn find<'s>(snap: &'s Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<&'s DebugValue> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort_unstable();
    snap.iter()
        .find(|(n, have, _)| n == name && *have == want)
        .map(|(_, _, v)| v)
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Runs `f` on a current-thread runtime with a recorder and a subscriber of its own (both are
/// thread-local here, so tests running side by side do not see each other's figures).
fn observed<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) -> (Snapshot, Logs) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || rt.block_on(f()))
    });
    let snap = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort_unstable();
            (key.name().to_owned(), labels, value)
        })
        .collect();
    (snap, logs)
}

#[test]
fn lock_grants_refusals_holds_and_losses_are_counted_and_a_loss_is_logged_by_name() {
    let (snap, logs) = observed(|| async {
        let locks = LocalLock::new();
        let g = locks
            .acquire("billing", AcquireOptions::new())
            .await
            .unwrap();
        assert!(locks
            .try_acquire("billing", AcquireOptions::new())
            .await
            .unwrap()
            .is_none());
        tokio::time::sleep(Duration::from_millis(20)).await;
        g.release().await.unwrap();
        let g = locks
            .acquire("billing", AcquireOptions::new())
            .await
            .unwrap();
        assert!(locks.revoke("billing"));
        assert!(g.is_lost());
        // A semaphore's permits count under their own primitive.
        let sem = LocalSemaphore::new();
        let p = sem.acquire("pool", 2, AcquireOptions::new()).await.unwrap();
        drop(p);
    });
    let lock = [("primitive", "lock"), ("backend", "local")];
    assert_eq!(counter(&snap, "sync_grants_total", &lock), 2);
    let taken = [
        ("primitive", "lock"),
        ("backend", "local"),
        ("outcome", "taken"),
    ];
    assert_eq!(counter(&snap, "sync_not_granted_total", &taken), 1);
    let holds = samples(&snap, "sync_hold_seconds", &lock);
    assert_eq!(holds.len(), 2, "one release and one loss: {holds:?}");
    assert!(
        holds.iter().any(|&h| h >= 0.02),
        "the first hold lasted ≥ 20 ms: {holds:?}"
    );
    assert_eq!(samples(&snap, "sync_wait_seconds", &lock).len(), 2);
    let revoked = [
        ("primitive", "lock"),
        ("backend", "local"),
        ("reason", "revoked"),
    ];
    assert_eq!(counter(&snap, "sync_losses_total", &revoked), 1);
    let sem = [("primitive", "semaphore"), ("backend", "local")];
    assert_eq!(counter(&snap, "sync_grants_total", &sem), 1);
    assert_eq!(samples(&snap, "sync_hold_seconds", &sem).len(), 1);

    let text = logs.text();
    let lost = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("lost"))
        .unwrap_or_else(|| panic!("no loss warning in:\n{text}"));
    assert!(
        lost.contains("lock \"billing\"") && lost.contains("revoked"),
        "the loss warning names the lock and the reason: {lost}"
    );
    assert!(
        text.contains("sync.acquire") && text.contains("name=\"billing\""),
        "acquire spans carry the name:\n{text}"
    );
}

#[test]
fn the_is_leader_gauge_follows_election_resignation_and_revocation() {
    let (snap, logs) = observed(|| async {
        let election = LocalLeader::new();
        let first = election
            .elect("a", ElectOptions::new().with_group("jobs"))
            .await
            .unwrap();
        first.resign().await.unwrap();
        let second = election
            .elect("b", ElectOptions::new().with_group("jobs"))
            .await
            .unwrap();
        let other = election
            .elect("c", ElectOptions::new().with_group("reports"))
            .await
            .unwrap();
        assert!(election.revoke("jobs"));
        assert!(!second.is_leader());
        drop(other);
    });
    let leader = [("primitive", "leader"), ("backend", "local")];
    assert_eq!(counter(&snap, "sync_grants_total", &leader), 3);
    assert_eq!(
        gauge(&snap, "sync_is_leader", &[("group", "jobs")]),
        Some(0.0)
    );
    assert_eq!(
        gauge(&snap, "sync_is_leader", &[("group", "reports")]),
        Some(0.0)
    );
    let revoked = [
        ("primitive", "leader"),
        ("backend", "local"),
        ("reason", "revoked"),
    ];
    assert_eq!(counter(&snap, "sync_losses_total", &revoked), 1);
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("leader \"jobs\"") && l.contains("revoked")),
        "the revocation is logged with the group:\n{text}"
    );
}

#[test]
fn the_is_leader_gauge_is_one_while_leading() {
    let (snap, _) = observed(|| async {
        let election = LocalLeader::new();
        let elected = election
            .elect("a", ElectOptions::new().with_group("g"))
            .await
            .unwrap();
        assert_eq!(elected.term(), 1);
        // Still leading when the recorder is read: the gauge says so.
        std::mem::forget(elected);
    });
    assert_eq!(gauge(&snap, "sync_is_leader", &[("group", "g")]), Some(1.0));
}

#[test]
fn task_jobs_are_counted_by_state_and_attempts_timed() {
    let (snap, logs) = observed(|| async {
        let task = LocalTask::new(TaskOptions::new().with_pool(2)).unwrap();
        task.register(Command::typed("double", |n: u64| async move { Ok(n * 2) }))
            .await
            .unwrap();
        for n in 0..5u64 {
            let h = task.submit(Job::new("double", n)).await.unwrap();
            assert_eq!(h.wait_as::<u64>().await.unwrap(), n * 2);
        }
    });
    let state = |s| counter(&snap, "sync_task_jobs_total", &[("state", s)]);
    assert_eq!(state("submitted"), 5);
    assert_eq!(state("attempted"), 5);
    assert_eq!(state("succeeded"), 5);
    assert_eq!(
        samples(&snap, "sync_task_attempt_seconds", &[("outcome", "ok")]).len(),
        5
    );
    assert!(logs.text().contains("sync.attempt"), "{}", logs.text());
}

/// etcd: keepalives are timed, and a link cut under a held lock ends in a warning from the lease
/// keeper naming the lock it endangers, then the lock's own loss.
#[cfg(feature = "etcd")]
#[test]
#[ignore = "needs etcd: run `cargo xtask test`"]
fn etcd_keepalives_are_timed_and_a_cut_link_names_the_lock_it_loses() {
    use sync::lock::EtcdLock;
    use sync_etcd::testing::{self, CutProxy, WipeOnDrop};
    let ttl = Duration::from_secs(3);
    let (snap, logs) = observed(|| async move {
        let cfg = testing::config("telemetry");
        let _wipe = WipeOnDrop(testing::connect(cfg.clone()).await);
        let proxy = CutProxy::start().await;
        let locks = EtcdLock::connect(proxy.config(&cfg)).await.unwrap();
        let guard = locks
            .acquire("ledger", AcquireOptions::new().with_ttl(ttl))
            .await
            .unwrap();
        // TTL 3 s renews every 100 ms: a few round trips to time.
        tokio::time::sleep(Duration::from_millis(600)).await;
        proxy.cut();
        tokio::time::timeout(ttl * 2, guard.lost())
            .await
            .expect("the lock is reported lost within 2×TTL of the cut");
    });
    let rtts = samples(&snap, "sync_lease_keepalive_seconds", &[]);
    assert!(rtts.len() >= 2, "keepalive round trips timed: {rtts:?}");
    assert!(gauge(&snap, "sync_lease_margin_seconds", &[]).is_some());
    assert_eq!(
        counter(
            &snap,
            "sync_losses_total",
            &[
                ("primitive", "lock"),
                ("backend", "etcd"),
                ("reason", "keepalive_failed")
            ]
        ),
        1
    );
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("keepalive lapsed") && l.contains("lock \"ledger\"")),
        "the keeper's warning names the lock it endangers:\n{text}"
    );
}
