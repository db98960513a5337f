//! The main job: every primitive, on the in-process (`local`) backend by default, needing no
//! server, or on etcd when given its URL.
//!
//! ```sh
//! cargo run -p sync-coord --example demo                   # local: no server, no protoc
//! eval "$(cargo xtask etcd up)"                            # a 3-member etcd cluster and chronyd
//! cargo run -p sync-coord --features etcd,ntp --example demo -- etcd://127.0.0.1:2379/demo
//! cargo run -p sync-coord --features etcd,ntp --example demo -- \
//!     "etcd://${SYNC_ETCD_ENDPOINTS//http:\/\//}/demo" --ntp "$SYNC_NTP_SERVER"
//! ```
//!
//! The first argument is the backend URL (`local` if none). Locks, elections, tasks and events
//! are opened with the crates' `open(url)`; semaphores and read-write locks have no
//! open-by-URL, so they are built on one `EtcdConnection` from the same URL. Time comes from
//! NTP when `--ntp HOST:PORT` is given or `SYNC_NTP_SERVER` is set (feature `ntp`), else from
//! the local system clock; the demo says which. Exits non-zero if any primitive misbehaves.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sync::prelude::*;
use tokio::sync::{mpsc, watch};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the command line asked for.
struct Args {
    url: String,
    ntp: Option<String>,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        url: "local".to_owned(),
        ntp: None,
    };
    let mut it = std::env::args().skip(1);
    let mut url = None;
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--ntp" => args.ntp = Some(it.next().ok_or("--ntp needs HOST:PORT")?),
            "-h" | "--help" => {
                println!("usage: demo [BACKEND_URL] [--ntp HOST:PORT]   (default: local)");
                std::process::exit(0);
            }
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg:?}").into()),
            _ if url.is_none() => url = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}").into()),
        }
    }
    if let Some(url) = url {
        args.url = url;
    }
    Ok(args)
}

/// Prints the error (its message, not its `Debug` form) and exits 1 on failure.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let args = parse_args()?;
    let url = args.url.as_str();
    println!("backend: {}", shown(url));
    let clock = time_source(&args).await?;
    lock_demo(url).await?;
    let (semaphores, rwlocks) = lock_family(url).await?;
    semaphore_demo(semaphores).await?;
    rwlock_demo(rwlocks).await?;
    leader_demo(url).await?;
    task_demo(url).await?;
    time_demo(clock).await?;
    event_demo(url).await?;
    println!("\ndemo finished");
    Ok(())
}

/// The URL without its credentials, for printing.
fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}<credentials>{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The clock: NTP if asked for (`--ntp`, or `SYNC_NTP_SERVER`), else the system clock.
async fn time_source(args: &Args) -> Result<Arc<dyn Time>, Error> {
    let from_env = std::env::var("SYNC_NTP_SERVER").ok();
    match (&args.ntp, from_env) {
        (Some(server), _) => {
            let clock = sync::time::open(&format!("ntp://{server}")).await?;
            println!("time: NTP server {server} (--ntp)");
            Ok(clock)
        }
        (None, Some(server)) if cfg!(feature = "ntp") => {
            let clock = sync::time::open(&format!("ntp://{server}")).await?;
            println!("time: NTP server {server} (SYNC_NTP_SERVER)");
            Ok(clock)
        }
        (None, Some(_)) => {
            println!(
                "time: the local system clock (SYNC_NTP_SERVER is set, but this build has no \
                 `ntp` feature: add --features ntp)"
            );
            Ok(Arc::new(LocalTime::new()))
        }
        (None, None) => {
            println!("time: the local system clock (--ntp HOST:PORT or SYNC_NTP_SERVER for NTP)");
            Ok(Arc::new(LocalTime::new()))
        }
    }
}

/// Semaphores and read-write locks: local ones, or etcd ones sharing one connection made from
/// the URL (`sync::lock::open_semaphore(url)` and `open_rwlock(url)` would open one each). The
/// local read-write lock is also returned concretely, for its queue inspection.
async fn lock_family(
    url: &str,
) -> Result<(Arc<dyn Semaphore>, (Arc<dyn RwLock>, Option<LocalRwLock>)), Error> {
    if url == "local" {
        let rw = LocalRwLock::new();
        return Ok((
            Arc::new(LocalSemaphore::new()),
            (Arc::new(rw.clone()), Some(rw)),
        ));
    }
    #[cfg(feature = "etcd")]
    {
        let config = sync::lock::EtcdConfig::from_url(url)?;
        let etcd = sync::lock::EtcdConnection::connect(config).await?;
        Ok((
            Arc::new(EtcdSemaphore::new(etcd.clone())),
            (Arc::new(EtcdRwLock::new(etcd)), None),
        ))
    }
    #[cfg(not(feature = "etcd"))]
    Err(format!("{url:?} needs the etcd backend: run with --features etcd").into())
}

async fn lock_demo(url: &str) -> Result<(), Error> {
    println!("\n== Lock: four workers take turns on one named lock ==");
    let locks: Arc<dyn Lock> = sync::lock::open(url).await?;
    let inside = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 1..=4 {
        let (locks, inside) = (locks.clone(), inside.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..2 {
                let guard = locks
                    .acquire(
                        "printer",
                        AcquireOptions::new().with_max_wait(Duration::from_secs(5)),
                    )
                    .await?;
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                println!(
                    "  worker {w} holds `printer` (fencing token {})",
                    guard.fencing_token()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.store(false, Ordering::SeqCst);
                guard.release().await?;
            }
            Ok::<_, sync::lock::Error>(())
        }));
    }
    for w in workers {
        w.await??;
    }
    let guard = locks.acquire("printer", AcquireOptions::new()).await?;
    let busy = locks.try_acquire("printer", AcquireOptions::new()).await?;
    println!(
        "  try_acquire while held: {}",
        if busy.is_some() {
            "got it (bug!)"
        } else {
            "busy, as expected"
        }
    );
    drop(guard);
    let set = LockSet::new(locks.clone());
    set.acquire("id").await?;
    set.release("id").await?;
    println!("  the seed's shape: lock.acquire(\"id\") / lock.release(\"id\") done");
    Ok(())
}

async fn semaphore_demo(pool: Arc<dyn Semaphore>) -> Result<(), Error> {
    println!("\n== Semaphore: eight workers share three permits ==");
    let (holding, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for w in 1..=8 {
        let (pool, holding, peak) = (pool.clone(), holding.clone(), peak.clone());
        workers.push(tokio::spawn(async move {
            let permit = pool
                .acquire(
                    "render-farm",
                    3,
                    AcquireOptions::new().with_max_wait(Duration::from_secs(5)),
                )
                .await?;
            let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            println!(
                "  worker {w} holds a permit of `render-farm` (fencing token {}; {now} holding)",
                permit.fencing_token()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            holding.fetch_sub(1, Ordering::SeqCst);
            permit.release().await?;
            Ok::<_, sync::lock::Error>(())
        }));
    }
    for w in workers {
        w.await??;
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 3, "{peak} holders of 3 permits at once");
    println!("  at most {peak} workers held a permit at once (measured; 3 permits)");
    Ok(())
}

async fn rwlock_demo((locks, local): (Arc<dyn RwLock>, Option<LocalRwLock>)) -> Result<(), Error> {
    println!("\n== Read-write lock: readers share, a writer is alone ==");
    let (readers, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let writing = Arc::new(AtomicBool::new(false));
    let opts = || AcquireOptions::new().with_max_wait(Duration::from_secs(5));
    // A first writer holds `config` while six requests queue behind it, in this order. First
    // come, first served: the readers before a writer share, those after it wait for it.
    let gate = locks.write("config", opts()).await?;
    let mut tasks = Vec::new();
    for (i, writer) in [false, false, true, false, false, true]
        .into_iter()
        .enumerate()
    {
        let (locks, readers, peak, writing) = (
            locks.clone(),
            readers.clone(),
            peak.clone(),
            writing.clone(),
        );
        tasks.push(tokio::spawn(async move {
            if writer {
                let guard = locks.write("config", opts()).await?;
                assert!(!writing.swap(true, Ordering::SeqCst), "two writers at once");
                let beside = readers.load(Ordering::SeqCst);
                assert_eq!(beside, 0, "a reader beside the writer");
                println!(
                    "  writer {i} holds `config` alone (fencing token {}; {beside} readers)",
                    guard.fencing_token()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
                writing.store(false, Ordering::SeqCst);
                guard.release().await?;
            } else {
                let guard = locks.read("config", opts()).await?;
                let now = readers.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                assert!(!writing.load(Ordering::SeqCst), "a writer beside a reader");
                println!("  reader {i} reads `config` ({now} reading)");
                tokio::time::sleep(Duration::from_millis(10)).await;
                readers.fetch_sub(1, Ordering::SeqCst);
                guard.release().await?;
            }
            Ok::<_, sync::lock::Error>(())
        }));
        match &local {
            // Until it queued: the local backend shows its queue.
            Some(local) => {
                while local.status("config").1 <= i {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            // etcd shows no queue through this API: give the request time to put its key
            // (one write, about a millisecond on loopback). The checks above hold whatever
            // the order; only the order printed below relies on this.
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    println!(
        "  queued behind a writer: reader 0, reader 1, writer 2, reader 3, reader 4, writer 5"
    );
    gate.release().await?;
    for t in tasks {
        t.await??;
    }
    println!(
        "  up to {} readers read `config` together (measured); each writer held it alone",
        peak.load(Ordering::SeqCst)
    );
    Ok(())
}

async fn time_demo(clock: Arc<dyn Time>) -> Result<(), Error> {
    println!("\n== Time: now, with an honest error bound ==");
    let now = clock.now()?;
    let bounds = clock.now_bounds()?;
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    println!("  now():        {:.6} s since the Unix epoch", secs(now));
    let source = match clock.status().backend {
        "local" => "the assumed error of an unsynchronised system clock",
        _ => "measured by NTP, widening with the time since the last sync",
    };
    println!(
        "  now_bounds(): [{:.6}, {:.6}] (± {:?}, {source})",
        secs(bounds.earliest()),
        secs(bounds.latest()),
        bounds.error()
    );
    let commit = clock.now()?;
    clock.wait_until_after(commit).await?;
    println!("  commit-wait: true time is now certainly after the commit timestamp");
    let hlc = HybridClock::new(clock.clone());
    let (a, b) = (hlc.now()?, hlc.now()?);
    println!("  hybrid clock: {a:?} < {b:?}: {}", a < b);
    Ok(())
}

async fn leader_demo(url: &str) -> Result<(), Error> {
    println!("\n== Leader: three candidates, one leader; it resigns and the next takes over ==");
    let election: Arc<dyn Leader> = sync::leader::open(url).await?;
    let mut changes = election.observe("scheduler").await?;
    let opts = || ElectOptions::new().with_group("scheduler");
    let mut candidates = Vec::new();
    for id in ["alpha", "beta", "gamma"] {
        let election = election.clone();
        candidates.push(tokio::spawn(async move {
            let elected = election.elect(id, opts()).await?;
            println!("  {id} is elected (term {})", elected.term());
            // Lead for a moment, then hand over.
            tokio::time::sleep(Duration::from_millis(20)).await;
            elected.resign().await?;
            println!("  {id} resigned");
            Ok::<_, sync::leader::Error>(())
        }));
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .map_err(|_| format!("the observer saw only {seen:?} lead within 10 s"))?;
        match change {
            Some(Some(info)) => {
                println!("  observer: {} leads (term {})", info.id, info.term);
                seen.push(info.id);
            }
            Some(None) => println!("  observer: nobody leads"),
            None => break,
        }
    }
    for c in candidates {
        c.await??;
    }
    println!("  now leading: {:?}", election.leader("scheduler").await?);
    Ok(())
}

async fn task_demo(url: &str) -> Result<(), Error> {
    println!("\n== Task: 24 jobs on a pool of 4 workers ==");
    let task: Arc<dyn Task> = sync::task::open(url, TaskOptions::new().with_pool(4)).await?;
    let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let per_thread = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let (r, p, t) = (running.clone(), peak.clone(), per_thread.clone());
    task.register(sync::task::Command::typed("square", move |n: u64| {
        let (r, p, t) = (r.clone(), p.clone(), t.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            let thread = format!("{:?}", std::thread::current().id());
            *t.lock().unwrap().entry(thread).or_insert(0usize) += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            r.fetch_sub(1, Ordering::SeqCst);
            Ok(n * n)
        }
    }))
    .await?;
    let mut handles = Vec::new();
    for n in 1..=24u64 {
        handles.push(task.submit(Job::new("square", n)).await?);
    }
    let mut sum = 0;
    for h in handles {
        sum += h.wait_as::<u64>().await?;
    }
    println!("  sum of squares 1..=24 = {sum}");
    println!(
        "  at most {} jobs ran at once (pool 4); jobs per runtime thread: {:?}",
        peak.load(Ordering::SeqCst),
        per_thread.lock().unwrap().values().collect::<Vec<_>>()
    );
    // The seed's shape: run a command; its error reaches the caller (a panic would too).
    let failed = task
        .run(sync::task::Command::new("atask", |_| async {
            Err::<(), _>(sync::task::CommandError::msg("disk full"))
        }))
        .await;
    match failed {
        Err(e) => println!("  a failing command reports: {e}"),
        Ok(v) => return Err(format!("a failing command returned {v}").into()),
    }
    task.shutdown().await?;
    Ok(())
}

async fn event_demo(url: &str) -> Result<(), Error> {
    println!("\n== Event: a publisher, two subscribers and a group of two members ==");
    let events: Arc<dyn EventStream> = sync::event::open(url, EventOptions::new()).await?;
    // A new group starts at the next event; on etcd its position is durable, so a second run
    // carries on after the first run's orders.
    let group = GroupOptions::new()
        .with_ack_wait(Duration::from_secs(5))
        .with_start(Start::Latest);
    let members = [
        events.join("orders", "billing", group.clone()).await?,
        events.join("orders", "billing", group).await?,
    ];
    let mut offsets = Vec::new();
    for n in 1..=6u32 {
        let offset = events.publish_json("orders", &n).await?;
        println!("  published order {n} at offset {offset}");
        offsets.push(offset);
    }
    let first = offsets[0];
    // Two subscribers, from this run's first order: both see every event, in the same order.
    for _ in 0..2 {
        let mut sub = events.subscribe("orders", Start::Offset(first)).await?;
        let mut seen = Vec::new();
        while seen.len() < 6 {
            let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await?
                .ok_or("the subscription ended")??;
            seen.push(e.offset);
        }
        println!("  a subscriber saw offsets {seen:?}");
        if seen != offsets {
            return Err(format!("a subscriber saw {seen:?}, published {offsets:?}").into());
        }
    }
    // The group shares the work: each order goes to one member, which acks it. Each member
    // runs as its own task (as it would in its own process).
    let (handled_tx, mut handled_rx) = mpsc::unbounded_channel();
    let (stop, stopped) = watch::channel(false);
    let tasks: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(i, member)| {
            let (handled, mut stopped) = (handled_tx.clone(), stopped.clone());
            tokio::spawn(async move {
                loop {
                    let d = tokio::select! {
                        d = member.next() => d?,
                        _ = stopped.changed() => break,
                    };
                    member.ack(&d).await?;
                    if d.event.offset >= first {
                        let _ = handled.send((i, d.event.json::<u32>()?));
                    } // else: left unacked by an earlier, interrupted run
                }
                member.leave().await
            })
        })
        .collect();
    let mut handled = [Vec::new(), Vec::new()];
    while handled[0].len() + handled[1].len() < 6 {
        let (i, order) = tokio::time::timeout(Duration::from_secs(20), handled_rx.recv())
            .await
            .map_err(|_| format!("the group handled only {handled:?} within 20 s"))?
            .ok_or("the members stopped")?;
        handled[i].push(order);
    }
    let _ = stop.send(true);
    for t in tasks {
        t.await??;
    }
    println!(
        "  group billing: member 1 handled {:?}, member 2 handled {:?}",
        handled[0], handled[1]
    );
    Ok(())
}
