//! The workers that the `sync-chaos` binary runs. They use only the primitives' public API and
//! log every event (see [`crate::event`]); the scenarios ([`crate::scenario`]) start them,
//! inject faults, and run the checkers over their logs (see [`crate::tool`]). The semaphore's
//! and the read-write lock's are in `family.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use sync_leader::{ElectOptions, EtcdLeader, Leader};
use sync_lock::{AcquireOptions, EtcdConfig, EtcdLock, Lock};
use sync_task::{Backoff, Command, EtcdTask, Job, Task, TaskOptions};
use sync_time::{NtpOptions, NtpTime, SourceVerdict, Time};
use tokio::io::AsyncBufReadExt;

use crate::event::Log;
use crate::ntp::{Behavior, NtpServer};
use crate::proxy::{Mode, Proxy};

mod family;
mod stream;

pub use family::{rwlock, semaphore};
pub use stream::{
    member as stream_member, publish as stream_publish, subscribe as stream_subscribe, ACK_WAIT,
    GROUP as STREAM_GROUP,
};

/// `--key value` arguments.
#[derive(Debug, Clone, Default)]
pub struct Args(HashMap<String, String>);

impl Args {
    /// Parses `--key value` pairs.
    pub fn parse(args: &[String]) -> Result<Args, String> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --key, got {k:?}"))?;
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            map.insert(key.to_owned(), v.clone());
        }
        Ok(Args(map))
    }

    /// A required value.
    pub fn get(&self, key: &str) -> Result<&str, String> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("--{key} is required"))
    }

    /// A value with a default.
    pub fn or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.0.get(key).map_or(default, String::as_str)
    }

    /// An optional value.
    pub fn opt(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A number, with a default.
    pub fn num(&self, key: &str, default: u64) -> Result<u64, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key} {v:?} is not a number")),
        }
    }

    /// `a-b` milliseconds, as a range.
    fn range_ms(&self, key: &str, default: (u64, u64)) -> Result<(u64, u64), String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => {
                let (a, b) = v.split_once('-').unwrap_or((v, v));
                let a = a.parse().map_err(|_| format!("--{key} {v:?}"))?;
                let b: u64 = b.parse().map_err(|_| format!("--{key} {v:?}"))?;
                Ok((a, b.max(a)))
            }
        }
    }

    /// `--dir`.
    pub fn dir(&self) -> Result<PathBuf, String> {
        Ok(PathBuf::from(self.get("dir")?))
    }

    /// This process's log in `--dir` as `--who`, logging panics.
    pub fn log(&self) -> Result<Log, String> {
        let log = Log::open(&self.dir()?, self.get("who")?).map_err(|e| e.to_string())?;
        log.log_panics();
        Ok(log)
    }

    /// `--ttl-ms` (default 2 s).
    pub fn ttl(&self) -> Result<Duration, String> {
        Ok(Duration::from_millis(self.num("ttl-ms", 2000)?))
    }

    /// The etcd config from `--endpoints`, `--prefix`, `--ttl-ms`.
    pub fn config(&self) -> Result<EtcdConfig, String> {
        Ok(EtcdConfig::new(self.get("endpoints")?.split(','))
            .with_prefix(self.get("prefix")?)
            .with_ttl(self.ttl()?)
            .with_connect_timeout(Duration::from_secs(3))
            .with_request_timeout(Duration::from_secs(2)))
    }
}

fn pause(range: (u64, u64)) -> Duration {
    Duration::from_millis(rand::thread_rng().gen_range(range.0..=range.1))
}

/// Retries `connect` until it works, logging each failure: a worker may start while the
/// cluster is down.
async fn connect_retrying<T, E: std::fmt::Display, F, Fut>(log: &Log, mut connect: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    loop {
        match connect().await {
            Ok(v) => return v,
            Err(e) => {
                log.write(log.event("connect_error").detail(e.to_string()));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// `lock`: acquires one lock over and over (sticky acquires with `--sticky 1`: a released lock
/// stays parked while nobody waits); logs `want`, `enter` (token), `exit` (ok = false when the
/// lock was lost, at the moment `lost()` fired), `error`.
pub async fn lock(a: &Args) -> Result<(), String> {
    let log = a.log()?;
    let cfg = a.config()?;
    let name = a.or("name", "chaos").to_owned();
    let hold = a.range_ms("hold-ms", (5, 50))?;
    let locks = connect_retrying(&log, || EtcdLock::connect(cfg.clone())).await;
    let options = AcquireOptions::new()
        .with_max_wait(Duration::from_secs(60))
        .with_sticky(a.num("sticky", 0)? == 1);
    loop {
        log.ev("want");
        match locks.acquire(&name, options.clone()).await {
            Ok(guard) => {
                let token = guard.fencing_token();
                log.write(log.event("enter").token(token));
                tokio::select! {
                    _ = tokio::time::sleep(pause(hold)) => {
                        log.write(log.event("exit").token(token).ok(true));
                        if let Err(e) = guard.release().await {
                            log.write(log.event("release_error").token(token).detail(e.to_string()));
                        }
                    }
                    reason = guard.lost() => {
                        log.write(log.event("exit").token(token).ok(false).detail(reason.to_string()));
                    }
                }
            }
            Err(e) => {
                log.write(log.event("error").detail(e.to_string()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `leader`: campaigns over and over; logs `campaign`, `elected` (term), `revoked` (at the
/// moment `revoked()` fired) or `resign` (before resigning), `error`.
pub async fn leader(a: &Args) -> Result<(), String> {
    let log = a.log()?;
    let cfg = a.config()?;
    let group = a.or("group", "chaos").to_owned();
    let hold = a.range_ms("hold-ms", (300, 1500))?;
    let id = a.get("who")?.to_owned();
    let election = connect_retrying(&log, || EtcdLeader::connect(cfg.clone())).await;
    let options = ElectOptions::new()
        .with_group(&group)
        .with_max_wait(Duration::from_secs(60));
    loop {
        log.ev("campaign");
        match election.elect(&id, options.clone()).await {
            Ok(elected) => {
                let term = elected.term();
                log.write(log.event("elected").token(term));
                tokio::select! {
                    _ = tokio::time::sleep(pause(hold)) => {
                        log.write(log.event("resign").token(term));
                        if let Err(e) = elected.resign().await {
                            log.write(log.event("resign_error").token(term).detail(e.to_string()));
                        }
                    }
                    reason = elected.revoked() => {
                        log.write(log.event("revoked").token(term).detail(reason.to_string()));
                    }
                }
            }
            Err(e) => {
                log.write(log.event("error").detail(e.to_string()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `task-worker`: runs command `chaos` (payload n → result n, a few ms of work); logs
/// `start` and `done` per job number.
pub async fn task_worker(a: &Args) -> Result<(), String> {
    let log = a.log()?;
    let cfg = a.config()?;
    let options = TaskOptions::new()
        .with_pool(a.num("pool", 4)? as usize)
        .with_ttl(a.ttl()?);
    let task = connect_retrying(&log, || EtcdTask::connect(cfg.clone(), options.clone())).await;
    let work = a.range_ms("work-ms", (1, 20))?;
    let l = log.clone();
    let command = Command::typed("chaos", move |n: u64| {
        let l = l.clone();
        async move {
            l.write(l.event("start").job(n));
            tokio::time::sleep(pause(work)).await;
            l.write(l.event("done").job(n));
            Ok(n)
        }
    });
    connect_retrying(&log, || task.register(command.clone())).await;
    log.ev("registered");
    std::future::pending::<()>().await;
    Ok(())
}

/// `task-submit`: submits `--jobs` jobs (payload = job number), then waits for each; logs
/// `submitted` and `finished` (ok = the right result) per job, then `all_finished`.
pub async fn task_submit(a: &Args) -> Result<(), String> {
    let log = a.log()?;
    let cfg = a.config()?;
    let jobs = a.num("jobs", 1000)?;
    let run = a.or("run", "r");
    let task: Arc<dyn Task> = Arc::new(
        connect_retrying(&log, || EtcdTask::connect(cfg.clone(), TaskOptions::new())).await,
    );
    let handles = futures::stream::iter(0..jobs)
        .map(|n| {
            let task = task.clone();
            let log = log.clone();
            let key = format!("{run}-job-{n}");
            async move {
                let job = Job::new("chaos", n)
                    .with_idempotency_key(key)
                    .with_wait_for_worker(true)
                    .with_max_attempts(50)
                    .with_backoff(Backoff::new(
                        Duration::from_millis(20),
                        Duration::from_millis(500),
                    ));
                loop {
                    match task.submit(job.clone()).await {
                        Ok(h) => {
                            log.write(log.event("submitted").job(n));
                            return (n, h);
                        }
                        Err(e) => {
                            log.write(log.event("submit_error").job(n).detail(e.to_string()));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    futures::stream::iter(handles)
        .map(|(n, h)| {
            let log = log.clone();
            async move {
                loop {
                    match h.wait_as::<u64>().await {
                        Ok(v) => {
                            log.write(log.event("finished").job(n).ok(v == n));
                            return;
                        }
                        Err(e) if e.is_retryable() => {
                            log.write(log.event("wait_error").job(n).detail(e.to_string()));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => {
                            log.write(log.event("finished").job(n).ok(false).detail(e.to_string()));
                            return;
                        }
                    }
                }
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    log.ev("all_finished");
    Ok(())
}

/// `time`: for each kind of liar, syncs from honest servers (chronyd if `--ntp` is given, and
/// two of ours) plus the liar(s); logs `bounds` (ok = `now_bounds()` contained the system
/// clock, which every honest server here serves) and `liar` (ok = the liar was not selected).
pub async fn time(a: &Args) -> Result<(), String> {
    let log = a.log()?;
    let rounds = a.num("rounds", 3)?;
    let liars: Vec<Vec<Behavior>> = vec![
        vec![Behavior::Skewed(5_000_000_000)],
        vec![Behavior::Skewed(-30_000_000_000)],
        vec![Behavior::Skewed(250_000_000)],
        vec![Behavior::KissOfDeath],
        vec![Behavior::Unsynchronized],
        vec![Behavior::Garbage],
        vec![Behavior::WrongOrigin],
        vec![Behavior::Silent],
        // Two liars that agree with each other, outvoted by three honest servers.
        vec![
            Behavior::Skewed(10_000_000_000),
            Behavior::Skewed(10_000_000_000),
        ],
    ];
    let mut honest = Vec::new();
    for _ in 0..2 {
        honest.push(
            NtpServer::start(Behavior::Skewed(0))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    for set in liars {
        let mut servers: Vec<String> = honest.iter().map(NtpServer::server).collect();
        if let Some(chrony) = a.0.get("ntp") {
            servers.push(chrony.clone());
        }
        let mut lying = Vec::new();
        for b in &set {
            let s = NtpServer::start(*b).await.map_err(|e| e.to_string())?;
            servers.push(s.server());
            lying.push((s, b.name()));
        }
        let options = NtpOptions::new(servers)
            .with_samples(3)
            .with_query_timeout(Duration::from_millis(300))
            .with_resync_interval(Duration::ZERO);
        let time = match NtpTime::connect(options).await {
            Ok(t) => t,
            Err(e) => {
                log.write(log.event("sync_failed").detail(format!("{set:?}: {e}")));
                continue;
            }
        };
        for round in 0..rounds {
            if round > 0 {
                if let Err(e) = time.sync().await {
                    log.write(log.event("sync_failed").detail(format!("{set:?}: {e}")));
                    continue;
                }
            }
            for _ in 0..20 {
                let before = std::time::SystemTime::now();
                let bounds = time.now_bounds();
                let after = std::time::SystemTime::now();
                let (ok, detail) = match bounds {
                    Ok(b) => (
                        b.earliest() <= after && b.latest() >= before,
                        format!("{set:?}: bounds ±{:?}", b.error()),
                    ),
                    Err(e) => (false, format!("{set:?}: {e}")),
                };
                log.write(log.event("bounds").ok(ok).detail(detail));
            }
            let status = time.status();
            for (server, name) in &lying {
                let verdict = status
                    .sources
                    .iter()
                    .find(|s| s.name == server.server())
                    .map(|s| s.verdict.clone());
                let rejected = !matches!(verdict, Some(SourceVerdict::Selected { .. }) | None);
                log.write(
                    log.event("liar")
                        .ok(rejected)
                        .detail(format!("{name}: {verdict:?}")),
                );
            }
        }
    }
    Ok(())
}

/// `proxy`: a fault-injecting proxy to `--upstream`; prints `listening ADDR`, then obeys
/// `open`/`heal`, `blackhole`, `reset` and `quit` lines on stdin, logging `cut` and `heal`.
pub async fn proxy(a: &Args) -> Result<(), String> {
    let log = a.log()?;
    let upstream = a
        .get("upstream")?
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| format!("--upstream: {e}"))?;
    let proxy = Proxy::start(upstream).await.map_err(|e| e.to_string())?;
    println!("listening {}", proxy.addr());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim();
        if line == "quit" {
            break;
        }
        match line.parse::<Mode>() {
            Ok(Mode::Open) => {
                proxy.set(Mode::Open);
                log.ev("heal");
            }
            Ok(m) => {
                proxy.set(m);
                log.write(log.event("cut").detail(format!("{m:?}")));
            }
            Err(e) => eprintln!("sync-chaos proxy: {e}"),
        }
        println!("ok {line}");
    }
    Ok(())
}
