//! The lock family's workers beyond the mutex: `semaphore` and `rwlock`. Both log like
//! [`lock`](super::lock) (`want`, `enter` with the token, `exit` with ok = false when the hold
//! was lost, `error`), with the mode (`read`, `write`, `permit`) as the detail of `want` and
//! `enter`, so that one interval reader serves all their checkers.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use sync_lock::{AcquireOptions, EtcdRwLock, EtcdSemaphore, LockGuard, RwLock, Semaphore};

use super::{connect_retrying, pause, Args};
use crate::event::Log;

/// The longest a worker waits for one acquisition before logging an error and asking again.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// `semaphore`: takes one of `--permits` permits of `--name` over and over; logs `config`
/// (detail `permits N`, read by the checker) once, then `want`, `enter`, `exit`, `error`.
pub async fn semaphore(a: &Args) -> Result<(), String> {
    let log = a.log()?;
    let cfg = a.config()?;
    let name = a.or("name", "chaos").to_owned();
    let permits = a.num("permits", 3)? as usize;
    let hold = a.range_ms("hold-ms", (20, 200))?;
    let sem = connect_retrying(&log, || EtcdSemaphore::connect(cfg.clone())).await;
    log.write(log.event("config").detail(format!("permits {permits}")));
    let options = AcquireOptions::new().with_max_wait(MAX_WAIT);
    loop {
        round(
            &log,
            "permit",
            hold,
            sem.acquire(&name, permits, options.clone()),
        )
        .await;
    }
}

/// `rwlock`: reads or (one time in `--write-every`) writes `--name` over and over; logs
/// `want` and `enter` with detail `read` or `write`, then `exit`, `error`.
pub async fn rwlock(a: &Args) -> Result<(), String> {
    let log = a.log()?;
    let cfg = a.config()?;
    let name = a.or("name", "chaos").to_owned();
    let write_every = a.num("write-every", 4)?.max(1);
    let hold = a.range_ms("hold-ms", (20, 200))?;
    let locks = connect_retrying(&log, || EtcdRwLock::connect(cfg.clone())).await;
    let options = AcquireOptions::new().with_max_wait(MAX_WAIT);
    loop {
        if rand::thread_rng().gen_range(0..write_every) == 0 {
            round(&log, "write", hold, locks.write(&name, options.clone())).await;
        } else {
            round(&log, "read", hold, locks.read(&name, options.clone())).await;
        }
    }
}

/// One `want` → `enter` → hold → `exit` round, releasing at the end of the hold, or ending at
/// the moment the hold was lost.
async fn round(
    log: &Log,
    mode: &str,
    hold: (u64, u64),
    acquire: impl Future<Output = sync_lock::Result<LockGuard>>,
) {
    log.write(log.event("want").detail(mode));
    match acquire.await {
        Ok(guard) => {
            let token = guard.fencing_token();
            log.write(log.event("enter").token(token).detail(mode));
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
            log.write(log.event("error").detail(format!("{mode}: {e}")));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
