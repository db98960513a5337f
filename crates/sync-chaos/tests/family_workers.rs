//! The semaphore's and the read-write lock's chaos workers against the harness's etcd: four
//! processes take and give back in a loop, the current holder is killed with `kill -9`, and the
//! checkers find no violation in their logs (and enough activity to have judged something).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sync_chaos::check::{check_rwlock, check_semaphore, Outcome, Params};
use sync_chaos::event::{self, Event};
use sync_chaos::tool;
use sync_etcd::testing::{self, WipeOnDrop};

/// The workers of one test; killed (and reaped) on drop, even when the test fails.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits (polling the logs every 50 ms, failing after 30 s) until `done` holds for the events.
fn wait_for(dir: &Path, what: &str, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (events, _) = event::read_dir(dir).expect("read the logs");
        if done(&events) {
            return events;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn enters(events: &[Event]) -> usize {
    events.iter().filter(|e| e.ev == "enter").count()
}

/// Runs four `sync-chaos <args>` workers, kills the current holder once 20 holds happened,
/// stops everyone once 20 more did, and returns the events.
async fn run_workers(test: &str, args: &[&str]) -> Vec<Event> {
    let cfg = testing::config(test);
    let _wipe = WipeOnDrop(testing::connect(cfg.clone()).await);
    let dir: PathBuf = std::env::temp_dir().join(testing::unique_prefix(test).replace('/', "-"));
    std::fs::create_dir_all(&dir).expect("create the log directory");
    let mut workers = Workers(Vec::new());
    for i in 0..4 {
        let child = Command::new(env!("CARGO_BIN_EXE_sync-chaos"))
            .args(args)
            .args(["--endpoints", &cfg.endpoints.join(",")])
            .args(["--prefix", &cfg.prefix, "--ttl-ms", "2000"])
            .arg("--dir")
            .arg(&dir)
            .args(["--who", &format!("w-{i}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start a worker");
        workers.0.push(child);
    }
    let pids: Vec<u32> = workers.0.iter().map(Child::id).collect();
    let events = tokio::task::block_in_place(|| {
        let before = enters(&wait_for(&dir, "20 holds", |e| enters(e) >= 20));
        let victim = tool::victim(&dir, "holder", &pids).expect("a victim");
        tool::kill_logged(&dir, victim, "holder").expect("kill -9 the holder");
        wait_for(&dir, "20 holds after the kill", |e| {
            enters(e) >= before + 20
        });
        for &pid in &pids {
            let _ = tool::kill_logged(&dir, pid, "");
        }
        event::read_dir(&dir).expect("read the logs").0
    });
    drop(workers);
    let _ = std::fs::remove_dir_all(&dir);
    events
}

fn judge(events: &[Event], check: fn(&mut Outcome, &[Event], Params)) -> Outcome {
    let mut out = Outcome::new("family", events);
    check(&mut out, events, Params::default());
    assert_eq!(out.violations, 0, "{out:#?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn semaphore_workers_never_exceed_the_permits() {
    let args = ["semaphore", "--permits", "2", "--hold-ms", "20-100"];
    let events = run_workers("chaos_semaphore_workers", &args).await;
    let out = judge(&events, check_semaphore);
    assert!(
        out.details.iter().any(|d| d.contains("at most 2 at once")),
        "{out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn rwlock_workers_share_reads_and_write_alone() {
    let args = ["rwlock", "--write-every", "4", "--hold-ms", "20-100"];
    let events = run_workers("chaos_rwlock_workers", &args).await;
    let out = judge(&events, check_rwlock);
    assert!(
        events
            .iter()
            .any(|e| e.ev == "enter" && e.detail.as_deref() == Some("write")),
        "{out:#?}"
    );
}
