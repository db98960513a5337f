//! The main job: every primitive on the in-process (`local`) backend, needing no server.
//!
//! Run it with `cargo run -p sync-coord --example demo`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sync::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    lock_demo().await?;
    semaphore_demo().await?;
    rwlock_demo().await?;
    leader_demo().await?;
    task_demo().await?;
    time_demo().await?;
    event_demo().await?;
    println!("\ndemo finished");
    Ok(())
}

async fn lock_demo() -> Result<(), Box<dyn std::error::Error>> {
    println!("== Lock: four workers take turns on one named lock ==");
    let locks: Arc<dyn Lock> = Arc::new(LocalLock::new());
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
    let set = LockSet::new(LocalLock::new());
    set.acquire("id").await?;
    set.release("id").await?;
    println!("  the seed's shape: lock.acquire(\"id\") / lock.release(\"id\") done");
    Ok(())
}

async fn semaphore_demo() -> Result<(), Box<dyn std::error::Error>> {
    println!("\n== Semaphore: eight workers share three permits ==");
    let pool: Arc<dyn Semaphore> = Arc::new(LocalSemaphore::new());
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

async fn rwlock_demo() -> Result<(), Box<dyn std::error::Error>> {
    println!("\n== Read-write lock: readers share, a writer is alone ==");
    let local = LocalRwLock::new();
    let locks: Arc<dyn RwLock> = Arc::new(local.clone());
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
        while local.status("config").1 <= i {
            tokio::time::sleep(Duration::from_millis(1)).await; // until it queued
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

async fn time_demo() -> Result<(), Box<dyn std::error::Error>> {
    println!("\n== Time: now, with an honest error bound ==");
    let clock: Arc<dyn Time> = Arc::new(LocalTime::new());
    let now = clock.now()?;
    let bounds = clock.now_bounds()?;
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    println!("  now():        {:.6} s since the Unix epoch", secs(now));
    println!(
        "  now_bounds(): [{:.6}, {:.6}] (± {:?}, the assumed error of an unsynchronised system clock)",
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

async fn leader_demo() -> Result<(), Box<dyn std::error::Error>> {
    println!("\n== Leader: three candidates, one leader; it resigns and the next takes over ==");
    let election: Arc<dyn Leader> = Arc::new(LocalLeader::new());
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
        match changes.next().await {
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

async fn task_demo() -> Result<(), Box<dyn std::error::Error>> {
    println!("\n== Task: 24 jobs on a pool of 4 workers ==");
    let task: Arc<dyn Task> = Arc::new(LocalTask::new(TaskOptions::new().with_pool(4))?);
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
    println!("  a failing command reports: {}", failed.unwrap_err());
    Ok(())
}

async fn event_demo() -> Result<(), Box<dyn std::error::Error>> {
    println!("\n== Event: a publisher, two subscribers and a group of two members ==");
    let events: Arc<dyn EventStream> = Arc::new(LocalEvents::new());
    let group = GroupOptions::new().with_ack_wait(Duration::from_secs(5));
    let members = [
        events.join("orders", "billing", group.clone()).await?,
        events.join("orders", "billing", group).await?,
    ];
    let mut early = events.subscribe("orders", Start::Earliest).await?;
    for n in 1..=6u32 {
        let offset = events.publish_json("orders", &n).await?;
        println!("  published order {n} at offset {offset}");
    }
    // A second subscriber that joins late still sees every retained event, in the same order.
    let mut late = events.subscribe("orders", Start::Earliest).await?;
    for sub in [&mut early, &mut late] {
        let mut offsets = Vec::new();
        for _ in 0..6 {
            offsets.push(sub.next().await.expect("the stream goes on")?.offset);
        }
        println!("  a subscriber saw offsets {offsets:?}");
    }
    // The group shares the work: each order goes to one member, which acks it.
    let mut handled = [Vec::new(), Vec::new()];
    while handled[0].len() + handled[1].len() < 6 {
        let (i, d) = tokio::select! {
            d = members[0].next() => (0, d?),
            d = members[1].next() => (1, d?),
        };
        handled[i].push(d.event.json::<u32>()?);
        members[i].ack(&d).await?;
    }
    println!(
        "  group billing: member 1 handled {:?}, member 2 handled {:?}",
        handled[0], handled[1]
    );
    Ok(())
}
