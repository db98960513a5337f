//! What an uncontended `LocalLock` acquire + release costs, against the benchmark's baseline
//! (`HashMap<String, Arc<tokio::sync::Mutex<()>>>` lookup + lock + unlock): nanoseconds per
//! operation, each path measured in the same run.
//!
//! ```text
//! cargo run --release -p sync-bench --example local_lock_cost
//! ```
//!
//! To profile one path alone, name it (`concrete`, `dyn`, `lost` or `baseline`) and an
//! operation count: callgrind counts its instructions, and the difference of memcheck's
//! "total heap usage" between two counts gives its allocations per operation:
//!
//! ```text
//! valgrind --tool=callgrind target/release/examples/local_lock_cost concrete 100000
//! valgrind target/release/examples/local_lock_cost concrete 10000   # and 20000
//! ```
//!
//! Prints figures, asserts nothing: a quick look, not the benchmark suite (`cargo xtask bench`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sync_lock::{AcquireOptions, LocalLock, Lock};

/// The benchmark's baseline named lock.
#[derive(Default)]
struct MapLock {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl MapLock {
    async fn lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .map
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
            .clone();
        m.lock_owned().await
    }
}

/// The paths measured.
#[derive(Clone, Copy)]
enum Path {
    /// `LocalLock::acquire` on the concrete type, then `release`.
    Concrete,
    /// The same through `Arc<dyn Lock>`.
    Dyn,
    /// The concrete path, asking `is_lost()` before releasing (makes the loss signal).
    Lost,
    /// The baseline.
    Baseline,
}

const PATHS: [(&str, Path); 4] = [
    ("concrete", Path::Concrete),
    ("dyn", Path::Dyn),
    ("lost", Path::Lost),
    ("baseline", Path::Baseline),
];

struct Subjects {
    local: LocalLock,
    shared: Arc<dyn Lock>,
    base: MapLock,
}

async fn run(s: &Subjects, path: Path, ops: u64) {
    for _ in 0..ops {
        match path {
            Path::Concrete => {
                let g = s.local.acquire("bench", AcquireOptions::new()).await;
                g.expect("uncontended").release().await.expect("held");
            }
            Path::Dyn => {
                let g = s.shared.acquire("bench", AcquireOptions::new()).await;
                g.expect("uncontended").release().await.expect("held");
            }
            Path::Lost => {
                let g = s.local.acquire("bench", AcquireOptions::new()).await;
                let g = g.expect("uncontended");
                assert!(!std::hint::black_box(g.is_lost()));
                g.release().await.expect("held");
            }
            Path::Baseline => drop(s.base.lock("bench").await),
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let subjects = Subjects {
        local: LocalLock::new(),
        shared: Arc::new(LocalLock::new()),
        base: MapLock::default(),
    };
    if let Some(name) = args.first() {
        let Some(&(_, path)) = PATHS.iter().find(|(n, _)| n == name) else {
            eprintln!("unknown path {name:?}: one of concrete, dyn, lost, baseline");
            std::process::exit(2);
        };
        let ops = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
        run(&subjects, path, ops).await;
        return;
    }
    const OPS: u64 = 200_000;
    const ROUNDS: usize = 7;
    let mut best = [f64::MAX; PATHS.len()];
    for _ in 0..ROUNDS {
        for (i, &(_, path)) in PATHS.iter().enumerate() {
            let t = Instant::now();
            run(&subjects, path, OPS).await;
            best[i] = best[i].min(t.elapsed().as_nanos() as f64 / OPS as f64);
        }
    }
    let base = best[PATHS.len() - 1];
    eprintln!("path       ns/op  ratio to baseline (best of {ROUNDS} rounds of {OPS})");
    for (i, &(name, _)) in PATHS.iter().enumerate() {
        eprintln!("{name:<9} {:>6.1} {:>6.2}", best[i], best[i] / base);
    }
}
