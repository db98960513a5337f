//! Retries and timeouts: failed, panicking and timed-out attempts, backoff, the final state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use sync_core::check::{eventually, within};

use super::{fast, opts, Counter, DropFlag, Harness, LONG};
use crate::{Backoff, Command, CommandError, Error, Failure, Job, JobStatus, Task, TaskOptions};

/// A command that keeps failing ends in the failed state after its last attempt, with its last
/// error, reported by `wait` (typed) and by `status`.
pub async fn final_failed_state_after_last_attempt(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let runs = Counter::default();
    let r = runs.clone();
    t.register(Command::new("always-fails", move |input| {
        r.bump();
        async move { Err::<(), _>(CommandError::msg(format!("boom {}", input.attempt()))) }
    }))
    .await
    .unwrap();
    let job = t
        .submit(fast(Job::new("always-fails", ())).with_max_attempts(2))
        .await
        .unwrap();
    let e = within("failed job", LONG, job.wait()).await.unwrap_err();
    match &e {
        Error::Failed {
            command,
            job: id,
            attempts,
            message,
        } => {
            assert_eq!(command, "always-fails");
            assert_eq!(id, job.id());
            assert_eq!(*attempts, 2);
            assert_eq!(message, "boom 2");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(e.is_retryable());
    assert!(e.to_string().contains(job.id().as_str()), "{e}");
    assert_eq!(runs.get(), 2);
    match job.status().await.unwrap() {
        JobStatus::Failed {
            attempts: 2,
            failure: Failure::Error { message },
        } => assert_eq!(message, "boom 2"),
        other => panic!("unexpected status {other:?}"),
    }
}

/// A panicking command fails its attempt with `Panicked` (retried like an error); the pool
/// survives and runs the next job.
pub async fn panic_becomes_error(h: &dyn Harness) {
    let t = h.task(TaskOptions::new().with_pool(1)).await;
    let runs = Counter::default();
    let r = runs.clone();
    t.register(Command::new("panics", move |input| {
        r.bump();
        async move {
            if input.attempt() < 2 {
                panic!("kaboom in attempt {}", input.attempt());
            }
            Ok::<_, CommandError>(input.attempt())
        }
    }))
    .await
    .unwrap();
    t.register(Command::new(
        "panics-early",
        |_| -> futures::future::Ready<Result<(), CommandError>> {
            panic!("kaboom before any future")
        },
    ))
    .await
    .unwrap();
    // Retried after the panic, then succeeds.
    let job = t.submit(fast(Job::new("panics", ()))).await.unwrap();
    assert_eq!(within("retried", LONG, job.wait()).await.unwrap(), json!(2));
    assert_eq!(runs.get(), 2);
    // The last attempt panics: typed error with the message.
    let job = t
        .submit(Job::new("panics-early", ()).with_max_attempts(1))
        .await
        .unwrap();
    match within("panicked", LONG, job.wait()).await.unwrap_err() {
        Error::Panicked {
            command, message, ..
        } => {
            assert_eq!(command, "panics-early");
            assert!(message.contains("kaboom before any future"), "{message}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    let e = t
        .run(Command::new("panics-in-run", |_| async {
            if true {
                panic!("kaboom in run");
            }
            Ok(())
        }))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Panicked { .. }), "{e:?}");
    // The pool (of one) still works.
    let ok = t.run(Command::new("after", |_| async { Ok(7) })).await;
    assert_eq!(ok.unwrap(), json!(7));
}

/// Failed attempts are retried after exponentially growing pauses; the command sees its
/// attempt number, and a fencing token that increases from one attempt to the next.
pub async fn retries_with_exponential_backoff(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let times: Arc<Mutex<Vec<(u32, Instant)>>> = Default::default();
    let fences: Arc<Mutex<Vec<u64>>> = Default::default();
    let (tm, fc) = (times.clone(), fences.clone());
    t.register(Command::new("third-time-lucky", move |input| {
        tm.lock().unwrap().push((input.attempt(), Instant::now()));
        fc.lock().unwrap().push(input.fencing_token());
        async move {
            if input.attempt() < 3 {
                Err(CommandError::msg("not yet"))
            } else {
                Ok(input.attempt())
            }
        }
    }))
    .await
    .unwrap();
    let backoff = Backoff::new(Duration::from_millis(150), Duration::from_secs(5));
    let job = t
        .submit(
            Job::new("third-time-lucky", ())
                .with_max_attempts(4)
                .with_backoff(backoff),
        )
        .await
        .unwrap();
    assert_eq!(
        within("retried job", LONG, job.wait()).await.unwrap(),
        json!(3)
    );
    let times = times.lock().unwrap().clone();
    let attempts: Vec<u32> = times.iter().map(|(a, _)| *a).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    let gap1 = times[1].1 - times[0].1;
    let gap2 = times[2].1 - times[1].1;
    assert!(gap1 >= backoff.delay(1), "first pause {gap1:?}");
    assert!(gap2 >= backoff.delay(2), "second pause {gap2:?}");
    let fences = fences.lock().unwrap().clone();
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens do not increase from one attempt to the next: {fences:?}"
    );
    assert!(matches!(
        job.status().await.unwrap(),
        JobStatus::Succeeded { attempts: 3, .. }
    ));
}

/// An error marked permanent is not retried.
pub async fn permanent_error_not_retried(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let runs = Counter::default();
    let r = runs.clone();
    t.register(Command::new("no-such-user", move |_| {
        r.bump();
        async { Err::<(), _>(CommandError::permanent("user 7 does not exist")) }
    }))
    .await
    .unwrap();
    let job = t
        .submit(fast(Job::new("no-such-user", ())).with_max_attempts(5))
        .await
        .unwrap();
    let e = within("failed job", LONG, job.wait()).await.unwrap_err();
    assert!(matches!(e, Error::Failed { attempts: 1, .. }), "{e:?}");
    assert_eq!(runs.get(), 1);
}

/// An attempt that runs past the job's timeout is cancelled (its future dropped) and counts as
/// failed; the last one fails the job with `TimedOut`.
pub async fn timeout_cancels_attempt(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let (started, dropped) = (Counter::default(), Counter::default());
    let (s, d) = (started.clone(), dropped.clone());
    t.register(Command::new("hangs", move |_| {
        s.bump();
        let flag = DropFlag(d.clone());
        async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Ok(())
        }
    }))
    .await
    .unwrap();
    let timeout = Duration::from_millis(200);
    let job = t
        .submit(
            fast(Job::new("hangs", ()))
                .with_max_attempts(2)
                .with_timeout(timeout),
        )
        .await
        .unwrap();
    match within("timed-out job", LONG, job.wait()).await.unwrap_err() {
        Error::TimedOut {
            attempts, after, ..
        } => {
            assert_eq!(attempts, 2);
            assert_eq!(after, timeout);
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert_eq!(started.get(), 2);
    within("cancelled futures dropped", LONG, dropped.reach(2)).await;
}

/// A timeout below a millisecond is rounded up to whole milliseconds, the same on every backend
/// (never down to zero).
pub async fn sub_millisecond_timeout_rounds_up(h: &dyn Harness) {
    let t = h.task(opts()).await;
    t.register(Command::new("never-ends", |_| async {
        std::future::pending::<()>().await;
        Ok(())
    }))
    .await
    .unwrap();
    let job = t
        .submit(
            Job::new("never-ends", ())
                .with_max_attempts(1)
                .with_timeout(Duration::from_micros(999)),
        )
        .await
        .unwrap();
    match within("timed-out job", LONG, job.wait()).await.unwrap_err() {
        Error::TimedOut { after, .. } => assert_eq!(after, Duration::from_millis(1)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
}

/// Nothing a caller passes panics a task or leaves a job stuck: a backoff of `Duration::MAX`
/// saturates (the retry is scheduled far ahead, not at once, and the job is pending, not stuck
/// running); a `Duration::MAX` timeout, the longest retention and `u32::MAX` attempts run
/// normally; a shutdown with an unbounded grace returns once nothing runs.
pub async fn extreme_options_never_panic_or_stick(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let runs = Counter::default();
    let r = runs.clone();
    t.register(Command::new("fails-slowly-retried", move |_| {
        r.bump();
        async { Err::<(), _>(CommandError::msg("not now")) }
    }))
    .await
    .unwrap();
    let job = t
        .submit(
            Job::new("fails-slowly-retried", ())
                .with_max_attempts(2)
                .with_backoff(Backoff::new(Duration::MAX, Duration::MAX)),
        )
        .await
        .unwrap();
    let far = std::time::SystemTime::now() + Duration::from_secs(300 * 24 * 3600);
    eventually(
        "the failed attempt's retry is scheduled far ahead (pending, not stuck running, not retried at once)",
        LONG,
        || async {
            matches!(
                job.status().await.unwrap(),
                JobStatus::Pending { attempts: 1, not_before: Some(at), .. } if at > far
            )
        },
    )
    .await;
    assert_eq!(runs.get(), 1, "the retry did not wait for its backoff");

    t.register(Command::new("extreme-ok", |input| async move {
        Ok(input.attempt())
    }))
    .await
    .unwrap();
    let job = t
        .submit(
            Job::new("extreme-ok", ())
                .with_timeout(Duration::MAX)
                .with_retention(crate::MAX_RETENTION)
                .with_max_attempts(u32::MAX)
                .with_backoff(Backoff::new(Duration::ZERO, Duration::MAX)),
        )
        .await
        .unwrap();
    assert_eq!(
        within("job with extreme options", LONG, job.wait())
            .await
            .unwrap(),
        json!(1)
    );

    let s = h.task(opts().with_shutdown_grace(Duration::MAX)).await;
    s.register(Command::new("before-shutdown", |_| async { Ok(()) }))
        .await
        .unwrap();
    s.submit(Job::new("before-shutdown", ()))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    within("shutdown with an unbounded grace", LONG, s.shutdown())
        .await
        .unwrap();
}
