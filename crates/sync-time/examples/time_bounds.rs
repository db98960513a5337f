//! Time with an honest error bound, against an NTP server: what the bounds say, how to decide
//! whether a moment has *certainly* passed, commit-wait, and hybrid logical clocks.
//!
//! ```sh
//! eval "$(cargo xtask etcd up)"   # starts chronyd too and sets SYNC_NTP_SERVER
//! cargo run -p sync-time --features ntp --example time_bounds
//! cargo run -p sync-time --features ntp --example time_bounds -- ntp://127.0.0.1:123,10.0.0.2:123
//! cargo run -p sync-time --features ntp --example time_bounds -- 'local?assumed_error=5ms'
//! ```
//!
//! The backend is the first argument (any `sync_time::open` URL), else `ntp://$SYNC_NTP_SERVER`,
//! else `local` (the system clock with an assumed error). Finishes in well under a second;
//! exits non-zero if a bound, a comparison or the commit-wait does not hold.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sync_time::{HybridClock, SourceVerdict, Time, TimeExt};

type Error = Box<dyn std::error::Error>;

/// The time backend URL: the first argument, else the NTP server `cargo xtask etcd up`
/// announces in `SYNC_NTP_SERVER`, else `local`.
fn time_url() -> String {
    std::env::args()
        .nth(1)
        .or_else(|| Some(format!("ntp://{}", std::env::var("SYNC_NTP_SERVER").ok()?)))
        .unwrap_or_else(|| "local".to_owned())
}

/// Seconds since the Unix epoch, for printing.
fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn check(ok: bool, what: &str) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected: {what}").into())
    }
}

/// Prints the error (its message, not its `Debug` form) and exits 1 on failure.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("time_bounds: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let url = time_url();
    // For NTP, `open` performs the first sync (it fails if no server answers) and keeps
    // re-syncing in the background; `now()` and `now_bounds()` never touch the network.
    let time: Arc<dyn Time> = sync_time::open(&url).await?;
    let status = time.status();
    println!(
        "time from {url}: backend {}, {:?}, {:?}",
        status.backend, status.state, status.verification
    );
    for source in &status.sources {
        match &source.verdict {
            SourceVerdict::Selected { offset_nanos, delay, error, samples } => println!(
                "  server {}: selected, offset {:+.3} ms, delay {delay:?}, error {error:?}, {samples} samples",
                source.name,
                *offset_nanos as f64 / 1e6
            ),
            other => println!("  server {}: {other:?}", source.name),
        }
    }

    // 1. The bounds: true time lies in [earliest, latest]; now() is the midpoint.
    let bounds = time.now_bounds()?;
    let now = time.now()?;
    println!(
        "now {:.6} s, bounds [{:.6}, {:.6}] (± {:?})",
        secs(now),
        secs(bounds.earliest()),
        secs(bounds.latest()),
        bounds.error()
    );
    check(
        bounds.earliest() <= bounds.latest(),
        "earliest after latest",
    )?;

    // 2. Deciding on deadlines: "certainly passed", "certainly not yet", or "can't tell yet".
    //    A lease that expires at `t` may be taken over only once `after(t)` says so.
    let margin = bounds.error() * 2 + Duration::from_millis(1);
    let (past, future) = (now - margin, now + margin);
    println!(
        "2 error bounds ago: after() = {}; 2 bounds ahead: before() = {}; within the bounds: \
         after() = {}, before() = {} (can't tell yet)",
        time.after(past)?,
        time.before(future)?,
        bounds.is_after(bounds.midpoint()),
        bounds.is_before(bounds.midpoint())
    );
    check(
        time.after(past)? && time.before(future)?,
        "a moment outside the bounds was judged uncertain",
    )?;

    // 3. Commit-wait (Spanner): stamp a commit with now(), then wait until that stamp has
    //    certainly passed before telling anyone it committed. Any transaction that starts after
    //    the acknowledgement, on any node with a correct clock, then gets a later timestamp.
    let commit_ts = time.now()?;
    let started = Instant::now();
    time.wait_until_after(commit_ts).await?;
    let waited = started.elapsed();
    let error = time.now_bounds()?.error();
    println!("commit-wait: waited {waited:?} for an error bound of {error:?}; the commit is now certainly in the past");
    check(
        time.after(commit_ts)?,
        "after(commit_ts) false after the commit-wait",
    )?;
    check(
        waited <= error * 2 + Duration::from_millis(50),
        "the commit-wait took far longer than the bound",
    )?;

    // 4. Hybrid logical clocks: timestamps that order events across nodes even when their
    //    clocks disagree. Node B merges what A sent; B's next event sorts after A's.
    let (a, b) = (
        HybridClock::new(time.clone()),
        HybridClock::new(time.clone()),
    );
    let sent = a.now()?;
    let received = b.update(sent)?;
    let next = b.now()?;
    println!("hybrid clock: A sent {sent}, B received at {received}, B's next event {next}");
    check(
        sent < received && received < next,
        "hybrid timestamps out of order",
    )?;

    println!("time_bounds: ok");
    Ok(())
}
