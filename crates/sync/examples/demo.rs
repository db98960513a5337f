//! The main job: every primitive on the in-process (`local`) backend, needing no server.
//!
//! Run it with `cargo run -p sync --example demo`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sync::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    lock_demo().await?;
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
