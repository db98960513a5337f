//! etcd-only behaviour of the task backend, against the cluster that `cargo xtask test` starts
//! (`SYNC_ETCD_ENDPOINTS`): workers in other processes, crashes (SIGKILL), lease loss, claiming
//! without a herd, the key layout. Without the harness these tests are listed as ignored.
//!
//! Worker processes are this test binary run again with `SYNC_TASK_WORKER_CHILD` set: the test
//! named on its command line sees the variable and becomes a worker (see [`child_main`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sync_core::check::{eventually, within};
use sync_etcd::etcd_client::GetOptions;
use sync_etcd::{testing, EtcdClient, EtcdConfig};
use sync_task::{Command, Error, EtcdTask, Job, JobStatus, Task, TaskOptions};
use tokio::sync::mpsc;

const CHILD_VAR: &str = "SYNC_TASK_WORKER_CHILD";
const LONG: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(2);

/// What a worker process does, passed to it as JSON in [`CHILD_VAR`].
#[derive(Debug, Serialize, Deserialize)]
struct ChildSpec {
    prefix: String,
    pool: usize,
    /// The worker lease's TTL, in seconds.
    ttl: u64,
    /// After this many attempts, every further attempt hangs forever (to be killed mid-job).
    hang_after: Option<usize>,
}

/// The worker process: registers `work`, reports each attempt on stdout, runs until killed.
async fn child_main(spec: &str) -> ! {
    let spec: ChildSpec = serde_json::from_str(spec).expect("child spec");
    let cfg = EtcdConfig::new(testing::endpoints()).with_prefix(&spec.prefix);
    let opts = TaskOptions::new()
        .with_pool(spec.pool)
        .with_ttl(Duration::from_secs(spec.ttl));
    let task = EtcdTask::connect(cfg, opts).await.expect("child connects");
    let started = Arc::new(AtomicUsize::new(0));
    let hang_after = spec.hang_after;
    task.register(Command::new("work", move |input| {
        let n = started.fetch_add(1, Ordering::SeqCst);
        say(&format!("START {} {}", input.job(), input.attempt()));
        let hang = hang_after.is_some_and(|h| n >= h);
        async move {
            if hang {
                say(&format!("HANG {}", input.job()));
                std::future::pending::<()>().await;
            }
            // A little work.
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(input.payload().clone())
        }
    }))
    .await
    .expect("child registers");
    say(&format!("READY {}", task.worker_id()));
    std::future::pending::<()>().await;
    unreachable!()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n{line}");
    let _ = out.flush();
}

/// Runs [`child_main`] instead of the test if this process is a worker child.
async fn maybe_child() {
    if let Ok(spec) = std::env::var(CHILD_VAR) {
        child_main(&spec).await;
    }
}

/// A worker process and the lines it reports.
struct Worker {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
}

impl Worker {
    /// Starts a worker process running `test` in child mode; returns once it registered.
    async fn spawn(test: &str, spec: &ChildSpec) -> Worker {
        let exe = std::env::current_exe().unwrap();
        let mut child = Process::new(exe)
            .args([test, "--exact", "--include-ignored", "--nocapture"])
            .args(["--test-threads=1"])
            .env(CHILD_VAR, serde_json::to_string(spec).unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn a worker process");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let line = line.trim().to_owned();
                if ["START ", "HANG ", "READY "]
                    .iter()
                    .any(|p| line.starts_with(p))
                    && tx.send(line).is_err()
                {
                    break;
                }
            }
        });
        let mut w = Worker {
            child,
            lines: rx,
            seen: Vec::new(),
        };
        w.expect("READY", "the worker process registered").await;
        w
    }

    /// Waits for a line starting with `prefix`, failing the test after [`LONG`].
    async fn expect(&mut self, prefix: &str, what: &str) -> String {
        within(what, LONG, async {
            loop {
                match self.lines.recv().await {
                    Some(l) => {
                        self.seen.push(l.clone());
                        if l.starts_with(prefix) {
                            return l;
                        }
                    }
                    None => panic!("the worker process exited before: {what}"),
                }
            }
        })
        .await
    }

    /// Every line it reported (the process must be gone, or stopped reporting).
    fn drain(&mut self) -> Vec<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        std::mem::take(&mut self.seen)
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the worker"); // SIGKILL on Unix
        self.child.wait().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh prefix, an admin connection on it, and cleanup.
struct Env {
    cfg: EtcdConfig,
    client: EtcdClient,
}

impl Env {
    async fn new() -> Env {
        let cfg = testing::config("task");
        let client = testing::connect(cfg.clone()).await;
        Env { cfg, client }
    }

    async fn task(&self, options: TaskOptions) -> EtcdTask {
        EtcdTask::connect(self.cfg.clone(), options.with_ttl(TTL))
            .await
            .expect("connect")
    }

    fn spec(&self, pool: usize, hang_after: Option<usize>) -> ChildSpec {
        ChildSpec {
            prefix: self.cfg.prefix.clone(),
            pool,
            ttl: TTL.as_secs(),
            hang_after,
        }
    }

    /// How many bytes of keys and values are stored under `under` (read in pages).
    async fn bytes_under(&self, under: &str) -> usize {
        let prefix = format!("{}{under}", self.client.keyspace().kind("task"));
        let end = sync_etcd::prefix_end(prefix.as_bytes());
        let (mut from, mut total) = (prefix.into_bytes(), 0);
        loop {
            let page = sync_etcd::read_page(&self.client, &from, &end, 1000, 0)
                .await
                .expect("read a page");
            total += page
                .kvs
                .iter()
                .map(|kv| kv.key.len() + kv.value.len())
                .sum::<usize>();
            match page.next {
                Some(next) => from = next,
                None => return total,
            }
        }
    }

    async fn count(&self, under: &str) -> usize {
        let root = self.client.keyspace().kind("task");
        testing::count_keys(&self.client, &format!("{root}{under}")).await
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(testing::wipe(&client))
        })
        .join();
    }
}

mod etcd {
    use super::*;

    /// A worker process is SIGKILLed in the middle of a job: its claim expires with its lease
    /// and another worker runs the job again (attempt 2), about a TTL later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn crashed_worker_job_runs_again() {
        maybe_child().await;
        let env = Env::new().await;
        let mut victim =
            Worker::spawn("etcd::crashed_worker_job_runs_again", &env.spec(1, Some(0))).await;
        let submitter = env.task(TaskOptions::new()).await;
        let job = submitter
            .submit(Job::new("work", json!("precious")))
            .await
            .unwrap();
        victim.expect("HANG", "the victim started the job").await;
        assert!(matches!(
            job.status().await.unwrap(),
            JobStatus::Running { attempt: 1, .. }
        ));
        let rescuer = env.task(TaskOptions::new()).await;
        rescuer
            .register(Command::new("work", |input| async move {
                Ok(json!({"attempt": input.attempt(), "payload": input.payload()}))
            }))
            .await
            .unwrap();
        victim.kill();
        let killed = Instant::now();
        let out = within("the job ran again elsewhere", LONG, job.wait())
            .await
            .unwrap();
        assert_eq!(out, json!({"attempt": 2, "payload": "precious"}));
        let took = killed.elapsed();
        eprintln!("crashed worker's job finished elsewhere {took:?} after the kill (TTL {TTL:?})");
        assert!(
            took < TTL + Duration::from_secs(5),
            "the crashed worker's job waited {took:?}, far past its TTL"
        );
        assert_eq!(rescuer.stats().claims, 1);
    }

    /// If the worker of a job's last attempt dies, the job fails for good with `WorkerLost`
    /// (it is not run a time too many, and not left pending).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn worker_lost_on_last_attempt_fails_job() {
        maybe_child().await;
        let env = Env::new().await;
        let mut victim = Worker::spawn(
            "etcd::worker_lost_on_last_attempt_fails_job",
            &env.spec(1, Some(0)),
        )
        .await;
        let submitter = env.task(TaskOptions::new()).await;
        let job = submitter
            .submit(Job::new("work", 1).with_max_attempts(1))
            .await
            .unwrap();
        victim.expect("HANG", "the victim started the job").await;
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let rescuer = env.task(TaskOptions::new()).await;
        rescuer
            .register(Command::new("work", move |_| {
                r.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            }))
            .await
            .unwrap();
        victim.kill();
        match within("the job failed for good", LONG, job.wait())
            .await
            .unwrap_err()
        {
            Error::WorkerLost {
                command, attempts, ..
            } => {
                assert_eq!(command, "work");
                assert_eq!(attempts, 1);
            }
            other => panic!("expected WorkerLost, got {other:?}"),
        }
        assert_eq!(runs.load(Ordering::SeqCst), 0, "a last attempt ran twice");
    }

    /// 1000 jobs over 3 worker processes; one is SIGKILLed in the middle of jobs. Every job
    /// completes with its own output (none lost); jobs run twice only if they were in flight
    /// on the killed worker (counted and printed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn thousand_jobs_three_workers_one_killed() {
        maybe_child().await;
        const JOBS: usize = 1000;
        const POOL: usize = 8;
        let env = Env::new().await;
        let test = "etcd::thousand_jobs_three_workers_one_killed";
        // A 5 s lease: on a loaded machine a 2 s one may lapse on a healthy worker, whose
        // jobs would then run twice too (correct, but not what this test counts).
        let spec = |hang_after| ChildSpec {
            ttl: 5,
            ..env.spec(POOL, hang_after)
        };
        let mut workers = vec![
            Worker::spawn(test, &spec(Some(120))).await,
            Worker::spawn(test, &spec(None)).await,
            Worker::spawn(test, &spec(None)).await,
        ];
        let submitter = env.task(TaskOptions::new()).await;
        let started = Instant::now();
        let handles: Vec<_> = futures::stream::iter(0..JOBS)
            .map(|i| {
                let s = submitter.clone();
                async move { s.submit(Job::new("work", i).with_max_attempts(5)).await }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        // Kill the victim as soon as it hangs in a job (mid-job).
        let hung = workers[0].expect("HANG", "the victim hung in a job").await;
        workers[0].kill();
        eprintln!("killed the victim while it ran a job ({hung})");
        let results: Vec<_> = futures::stream::iter(handles)
            .map(|h| async move { (h.wait().await, h) })
            .buffer_unordered(64)
            .collect()
            .await;
        let elapsed = started.elapsed();
        let mut seen = vec![false; JOBS];
        for (r, h) in &results {
            let i = r
                .as_ref()
                .unwrap_or_else(|e| panic!("job {} failed: {e}", h.id()))
                .as_u64()
                .unwrap() as usize;
            assert!(!seen[i], "two jobs returned the output of job {i}");
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s), "a job was lost");
        // Count the attempts each worker reported.
        let mut starts: HashMap<String, usize> = HashMap::new();
        let mut hung_ids = Vec::new();
        for w in &mut workers {
            for line in w.drain() {
                let mut parts = line.split(' ');
                match (parts.next(), parts.next()) {
                    (Some("START"), Some(id)) => *starts.entry(id.to_owned()).or_default() += 1,
                    (Some("HANG"), Some(id)) => hung_ids.push(id.to_owned()),
                    _ => {}
                }
            }
        }
        let duplicates: usize = starts.values().map(|c| c - 1).sum();
        eprintln!(
            "{JOBS} jobs, 3 worker processes (pool {POOL}), one killed mid-job: all completed in \
             {elapsed:?}; {} distinct jobs started, {duplicates} started more than once; {} were \
             in flight on the killed worker",
            starts.len(),
            hung_ids.len()
        );
        assert_eq!(starts.len(), JOBS, "workers reported {} jobs", starts.len());
        assert!(duplicates >= 1, "the job killed mid-way did not run again");
        assert!(
            duplicates <= POOL,
            "{duplicates} duplicates, more than the killed worker could have had in flight"
        );
        let status = submitter.status(results[0].1.id()).await.unwrap();
        assert!(status.is_finished());
    }

    /// Revoking a worker's lease behind its back cancels the job it runs (the future is
    /// dropped: it must not act on a claim it lost); the worker registers again on a new lease
    /// and the job runs again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn lost_lease_cancels_running_job() {
        let env = Env::new().await;
        let w = env.task(TaskOptions::new().with_pool(1)).await;
        let dropped = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let (d, st) = (dropped.clone(), started.clone());
        struct Flag(Arc<AtomicUsize>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        w.register(Command::new("long", move |input| {
            let flag = Flag(d.clone());
            let started = st.clone();
            async move {
                let _flag = flag;
                started.fetch_add(1, Ordering::SeqCst);
                if input.attempt() == 1 {
                    std::future::pending::<()>().await;
                }
                Ok(input.attempt())
            }
        }))
        .await
        .unwrap();
        let job = w.submit(Job::new("long", ())).await.unwrap();
        let claim_key = format!(
            "{}q/claims/{}",
            env.client.keyspace().kind("task"),
            job.id()
        );
        let mut c = env.client.raw();
        let lease = within("job claimed", LONG, async {
            loop {
                let r = c.get(claim_key.clone(), None).await.unwrap();
                if let Some(kv) = r.kvs().first() {
                    return kv.lease();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        // Revoke only once the attempt runs: a claim can land while the submit's release is
        // still in flight, and the attempt starts after it (docs/task.md, *Transactions*).
        eventually("attempt 1 started", LONG, || async {
            started.load(Ordering::SeqCst) == 1
        })
        .await;
        c.lease_revoke(lease).await.unwrap();
        assert_eq!(
            within("job ran again", LONG, job.wait()).await.unwrap(),
            json!(2)
        );
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
        // The worker counts the success once the reply to its result write is in; the waiter
        // may see the write (through its watch) first.
        eventually("the worker counted the success", LONG, || async {
            w.stats().succeeded == 1
        })
        .await;
        let s = w.stats();
        assert_eq!((s.claims, s.lost, s.succeeded), (2, 1, 1), "{s:?}");
        // Registered again on a new lease: still a worker.
        assert_eq!(
            env.count(&format!("q/workers/long/{}", w.worker_id()))
                .await,
            1
        );
    }

    /// Jobs submitted before any worker existed are found by the first worker (from its first
    /// read of the queue, not from watch events).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn worker_finds_jobs_submitted_before_it_started() {
        let env = Env::new().await;
        let submitter = env.task(TaskOptions::new()).await;
        let mut jobs = Vec::new();
        for i in 0..20 {
            jobs.push(
                submitter
                    .submit(Job::new("later", i).with_wait_for_worker(true))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(env.count("q/jobs/").await, 20);
        let w = env.task(TaskOptions::new()).await;
        w.register(Command::typed("later", |i: u32| async move { Ok(i * 10) }))
            .await
            .unwrap();
        for (i, job) in jobs.iter().enumerate() {
            assert_eq!(
                within("queued job", LONG, job.wait_as::<u32>())
                    .await
                    .unwrap(),
                i as u32 * 10
            );
        }
    }

    /// The submitter's `wait` takes a job's end from the result watch: outputs small and large
    /// (above the 64 KiB a watch event's result is kept in memory for, then read), failures,
    /// and jobs waited for long after they ended (their result event kept meanwhile) all come
    /// back exactly; a wait from another handle (no subscription of its own) agrees.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn waits_get_outputs_of_every_size_from_the_result_watch() {
        let env = Env::new().await;
        let w = env.task(TaskOptions::new().with_pool(4)).await;
        w.register(Command::typed("sized", |n: usize| async move {
            if n == 0 {
                return Err(sync_task::CommandError::permanent("zero"));
            }
            Ok("x".repeat(n))
        }))
        .await
        .unwrap();
        let submitter = env.task(TaskOptions::new()).await;
        let sizes = [1usize, 1000, 64 * 1024 - 100, 64 * 1024 + 1, 300_000];
        for &n in &sizes {
            let job = submitter.submit(Job::new("sized", n)).await.unwrap();
            let out: String = within("sized job", LONG, job.wait_as()).await.unwrap();
            assert_eq!(out.len(), n, "output of {n} bytes");
        }
        // Submitted together, waited for once all ended: the events were kept until then.
        let mut jobs = Vec::new();
        for &n in &sizes {
            jobs.push((n, submitter.submit(Job::new("sized", n)).await.unwrap()));
        }
        let last = submitter.submit(Job::new("sized", 0usize)).await.unwrap();
        for (_, job) in &jobs {
            within("job ends", LONG, async {
                while !job.status().await.unwrap().is_finished() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
        }
        for (n, job) in &jobs {
            let out: String = within("ended job", LONG, job.wait_as()).await.unwrap();
            assert_eq!(out.len(), *n, "output of {n} bytes, waited for late");
            let other: String = within("other handle", LONG, w.wait(job.id()))
                .await
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(other, out);
        }
        let err = within("failed job", LONG, last.wait()).await.unwrap_err();
        assert!(
            matches!(err, sync_task::Error::Failed { .. }),
            "a permanent error comes back typed: {err:?}"
        );
    }

    /// What a finished job leaves in etcd: only its result and idempotency key, on an expiring
    /// lease; a shut-down worker leaves nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn key_layout_and_cleanup() {
        let env = Env::new().await;
        let w = env.task(TaskOptions::new()).await;
        w.register(Command::new("tidy", |_| async { Ok("ok") }))
            .await
            .unwrap();
        assert_eq!(env.count("q/workers/").await, 1);
        let job = w
            .submit(Job::new("tidy", ()).with_idempotency_key("k1"))
            .await
            .unwrap();
        job.wait().await.unwrap();
        for (range, want) in [
            ("q/jobs/", 0),
            ("q/claims/", 0),
            ("payloads/", 0),
            ("results/", 1),
            ("idem/", 1),
        ] {
            assert_eq!(env.count(range).await, want, "keys under {range}");
        }
        let mut c = env.client.raw();
        let root = env.client.keyspace().kind("task");
        for range in ["results/", "idem/"] {
            let r = c
                .get(
                    format!("{root}{range}"),
                    Some(GetOptions::new().with_prefix()),
                )
                .await
                .unwrap();
            let lease = r.kvs()[0].lease();
            assert_ne!(lease, 0, "{range} key has no lease: it would never expire");
            let ttl = c.lease_time_to_live(lease, None).await.unwrap().ttl();
            assert!(
                (1..=3600 + 360).contains(&ttl),
                "{range} key's lease has {ttl}s left"
            );
        }
        w.shutdown().await.unwrap();
        assert_eq!(env.count("q/workers/").await, 0);
        assert_eq!(w.stored_jobs().await.unwrap(), 2);
    }

    /// Idle workers do not all race for each new job: with the rendezvous-ranked spread the
    /// claim transactions that lose are few; with the spread off (a herd) they are many. Both
    /// figures are printed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn claiming_does_not_herd() {
        const JOBS: usize = 150;
        async fn conflicts(spread: Duration) -> (u64, u64) {
            let env = Env::new().await;
            let mut workers = Vec::new();
            for _ in 0..3 {
                let w = env
                    .task(TaskOptions::new().with_pool(4).with_claim_spread(spread))
                    .await;
                w.register(Command::new("quick", |_| async { Ok(()) }))
                    .await
                    .unwrap();
                workers.push(w);
            }
            let submitter = env.task(TaskOptions::new()).await;
            // One job at a time: every worker is idle when it appears.
            for _ in 0..JOBS {
                let job = submitter.submit(Job::new("quick", ())).await.unwrap();
                within("quick job", LONG, job.wait()).await.unwrap();
            }
            let mut claims = 0;
            let mut lost = 0;
            for w in &workers {
                let s = w.stats();
                claims += s.claims;
                lost += s.claim_conflicts;
                w.shutdown().await.unwrap();
            }
            (claims, lost)
        }
        let (claims, ours) = conflicts(TaskOptions::new().claim_spread()).await;
        let (herd_claims, herd) = conflicts(Duration::ZERO).await;
        eprintln!(
            "{JOBS} jobs over 3 idle workers: lost claim races with the ranked spread: {ours} \
             ({:.2}/job); with every worker racing: {herd} ({:.2}/job)",
            ours as f64 / JOBS as f64,
            herd as f64 / JOBS as f64
        );
        assert_eq!(claims as usize, JOBS);
        assert_eq!(herd_claims as usize, JOBS);
        assert!(
            ours * 4 < herd && (ours as usize) < JOBS / 3,
            "{ours} lost claim races for {JOBS} jobs ({herd} when herding): the workers herd"
        );
    }

    /// `running()` counts attempts that run: 0 on an idle worker (the dispatcher waiting for a
    /// job holds a pool slot, but runs nothing), then one per attempt in progress.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn running_counts_attempts_that_run() {
        let env = Env::new().await;
        let w = env.task(TaskOptions::new().with_pool(3)).await;
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        w.register(Command::new("gated", move |_| {
            let g = g.clone();
            s.fetch_add(1, Ordering::SeqCst);
            async move {
                let _ = g.acquire().await.map(|p| p.forget());
                Ok(())
            }
        }))
        .await
        .unwrap();
        let idle_zero = |w: EtcdTask| async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while w.running() != 0 {
                assert!(
                    Instant::now() < deadline,
                    "an idle worker says {} attempt(s) run",
                    w.running()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        idle_zero(w.clone()).await;
        let a = w.submit(Job::new("gated", 1)).await.unwrap();
        let b = w.submit(Job::new("gated", 2)).await.unwrap();
        within("two attempts started", LONG, async {
            while started.load(Ordering::SeqCst) < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert_eq!(w.running(), 2);
        gate.add_permits(2);
        a.wait().await.unwrap();
        b.wait().await.unwrap();
        idle_zero(w.clone()).await;
    }

    /// A backlog past the old ceiling (a worker read the whole queue in one response, limited to
    /// 4 MiB: 25 000 pending jobs made `register` fail): jobs submitted while no worker runs are
    /// all run once workers start; a new worker's `register` succeeds, and what each worker
    /// holds in memory stays bounded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn backlog_past_old_ceiling_drains() {
        const JOBS: usize = 25_000;
        let env = Env::new().await;
        let submitter = env.task(TaskOptions::new()).await;
        let began = Instant::now();
        let submitted: usize = futures::stream::iter(0..JOBS)
            .map(|i| {
                let s = submitter.clone();
                async move {
                    s.submit(Job::new("backlog", i).with_wait_for_worker(true))
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(128)
            .fold(0, |n, ()| async move { n + 1 })
            .await;
        assert_eq!(submitted, JOBS);
        eprintln!("{JOBS} pending jobs submitted in {:?}", began.elapsed());
        assert_eq!(env.count("q/jobs/").await, JOBS);
        let bytes = env.bytes_under("q/").await;
        eprintln!("the queue holds {bytes} bytes of keys and values");
        assert!(
            bytes > 4 * 1024 * 1024 * 5 / 4,
            "the backlog ({bytes} bytes) is not well past one 4 MiB response"
        );
        let done = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        let began = Instant::now();
        for _ in 0..3 {
            let w = env
                .task(
                    TaskOptions::new()
                        .with_pool(16)
                        .with_ttl(Duration::from_secs(10)),
                )
                .await;
            let d = done.clone();
            w.register(Command::new("backlog", move |_| {
                d.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            }))
            .await
            .expect("a worker registers in front of a large backlog");
            workers.push(w);
        }
        let cap = 4096 + 3 * 16;
        within("the backlog drained", Duration::from_secs(600), async {
            loop {
                for w in &workers {
                    assert!(
                        w.viewed_jobs() <= cap,
                        "a worker holds {} jobs in memory",
                        w.viewed_jobs()
                    );
                }
                if done.load(Ordering::SeqCst) >= JOBS && env.count("q/jobs/").await == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .await;
        let took = began.elapsed();
        eprintln!(
            "{JOBS} pending jobs drained by 3 workers in {took:?} ({:.0} jobs/s)",
            JOBS as f64 / took.as_secs_f64()
        );
        assert!(done.load(Ordering::SeqCst) >= JOBS);
        assert_eq!(env.count("results/").await, JOBS);
        for w in &workers {
            w.shutdown().await.unwrap();
        }
    }

    /// Connection failures and bad options are typed errors naming the endpoint.
    #[tokio::test]
    async fn connect_errors_are_typed() {
        let cfg = EtcdConfig::new(["127.0.0.1:1"]).with_connect_timeout(Duration::from_millis(300));
        let e = EtcdTask::connect(cfg.clone(), TaskOptions::new())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Backend { .. }), "{e:?}");
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
        let e = EtcdTask::connect(cfg, TaskOptions::new().with_pool(0))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
        let e = sync_task::open(
            "etcd://127.0.0.1:1/x?connect_timeout=300ms",
            TaskOptions::new(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    }

    /// `open` with an etcd URL gives a working distributed handle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn open_by_url() {
        let env = Env::new().await;
        let hosts: Vec<String> = env
            .cfg
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://").to_owned())
            .collect();
        let url = format!("etcd://{}/{}?ttl=2s", hosts.join(","), env.cfg.prefix);
        let t = sync_task::open(&url, TaskOptions::new()).await.unwrap();
        let out = t
            .run(Command::new("hello", |_| async { Ok("world") }))
            .await
            .unwrap();
        assert_eq!(out, json!("world"));
        assert_eq!(env.count("results/").await, 1);
    }

    /// Batched claims: jobs claimable at the same moment are claimed in one transaction (their
    /// claims share one create revision), each runs once; when the worker holding such a batch
    /// is SIGKILLed, every job of it comes back (its claims expire together with the lease),
    /// is claimed again in one transaction by the other worker, and runs there once, as
    /// attempt 2.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd: run `cargo xtask test`"]
    async fn jobs_claimed_together_come_back_together_after_a_kill() {
        maybe_child().await;
        const JOBS: usize = 8;
        let env = Env::new().await;
        let submitter = env.task(TaskOptions::new()).await;
        let mut jobs = Vec::new();
        for i in 0..JOBS {
            let job = Job::new("work", i).with_wait_for_worker(true);
            jobs.push(submitter.submit(job).await.unwrap());
        }
        // Every attempt on the victim hangs: it holds all eight when it is killed.
        let mut victim = Worker::spawn(
            "etcd::jobs_claimed_together_come_back_together_after_a_kill",
            &env.spec(JOBS, Some(0)),
        )
        .await;
        let victim_id = victim
            .seen
            .iter()
            .find_map(|l| l.strip_prefix("READY "))
            .expect("the READY line")
            .to_owned();
        for _ in 0..JOBS {
            victim.expect("HANG", "the victim started every job").await;
        }
        let claims = claims_of(&env).await;
        assert_eq!(claims.len(), JOBS, "{claims:?}");
        assert!(claims.iter().all(|(w, _)| *w == victim_id), "{claims:?}");
        let revs: std::collections::BTreeSet<i64> = claims.iter().map(|(_, r)| *r).collect();
        assert_eq!(
            revs.len(),
            1,
            "the {JOBS} jobs claimable at once were not claimed in one transaction: {claims:?}"
        );

        let runs: Arc<std::sync::Mutex<HashMap<u64, usize>>> = Default::default();
        let started = Arc::new(tokio::sync::watch::Sender::new(0usize));
        let gate = Arc::new(tokio::sync::watch::Sender::new(false));
        let rescuer = env.task(TaskOptions::new().with_pool(JOBS)).await;
        let (r, s, g) = (runs.clone(), started.clone(), gate.clone());
        rescuer
            .register(Command::new("work", move |input| {
                let n = input.payload().as_u64().expect("a number");
                *r.lock().unwrap().entry(n).or_default() += 1;
                s.send_modify(|c| *c += 1);
                let mut open = g.subscribe();
                async move {
                    let _ = open.wait_for(|o| *o).await;
                    Ok(json!({"attempt": input.attempt(), "payload": n}))
                }
            }))
            .await
            .unwrap();
        victim.kill();
        within("the rescuer started every job of the batch", LONG, async {
            let _ = started.subscribe().wait_for(|c| *c >= JOBS).await;
        })
        .await;
        let claims = claims_of(&env).await;
        assert_eq!(claims.len(), JOBS, "{claims:?}");
        assert!(
            claims.iter().all(|(w, _)| w == rescuer.worker_id()),
            "{claims:?}"
        );
        let again: std::collections::BTreeSet<i64> = claims.iter().map(|(_, r)| *r).collect();
        assert_eq!(
            again.len(),
            1,
            "the jobs that came back together were not claimed again in one transaction: {claims:?}"
        );
        assert!(again.iter().next() > revs.iter().next(), "fencing order");
        gate.send_replace(true);
        for (i, job) in jobs.iter().enumerate() {
            assert_eq!(
                within("a job of the killed batch", LONG, job.wait())
                    .await
                    .unwrap(),
                json!({"attempt": 2, "payload": i}),
                "job {i}"
            );
        }
        let runs = runs.lock().unwrap().clone();
        assert_eq!(runs.len(), JOBS, "{runs:?}");
        assert!(
            runs.values().all(|&c| c == 1),
            "a job ran twice on the rescuer: {runs:?}"
        );
        assert_eq!(rescuer.stats().claims, JOBS as u64);
        eventually("every job's keys are gone but its result", LONG, || async {
            env.count("q/jobs/").await + env.count("q/claims/").await + env.count("q/holds/").await
                == 0
        })
        .await;
    }

    /// The claims stored now: (worker, create revision) of each.
    async fn claims_of(env: &Env) -> Vec<(String, i64)> {
        let prefix = format!("{}q/claims/", env.client.keyspace().kind("task"));
        let end = sync_etcd::prefix_end(prefix.as_bytes());
        let page = sync_etcd::read_page(&env.client, prefix.as_bytes(), &end, 1000, 0)
            .await
            .expect("read the claims");
        page.kvs
            .iter()
            .map(|kv| {
                let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
                (
                    v["worker"].as_str().unwrap_or_default().to_owned(),
                    kv.create_revision,
                )
            })
            .collect()
    }
}
