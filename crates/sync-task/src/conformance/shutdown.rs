//! Shutdown: running jobs finish within the grace, then are cancelled (or handed back).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sync_core::check::{eventually, within};

use super::{opts, Counter, DropFlag, Gate, Harness, LONG};
use crate::{Command, Error, Job, JobStatus, Task};

/// `shutdown` stops new work at once but lets running jobs finish; afterwards the handle's
/// register, submit and run fail with `ShutDown`, while reads still work.
pub async fn shutdown_lets_running_jobs_finish(h: &dyn Harness) {
    let t = h.task(opts().with_shutdown_grace(LONG)).await;
    let gate = Gate::new();
    let started = Counter::default();
    let (g, s) = (gate.clone(), started.clone());
    t.register(Command::new("finishing", move |_| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            s.bump();
            g.pass().await;
            Ok("finished")
        }
    }))
    .await
    .unwrap();
    let job = t.submit(Job::new("finishing", ())).await.unwrap();
    within("job started", LONG, started.reach(1)).await;
    let stopping = Arc::new(AtomicBool::new(false));
    let shutdown = {
        let (t, stopping) = (t.clone(), stopping.clone());
        tokio::spawn(async move {
            let r = t.shutdown().await;
            stopping.store(true, Ordering::SeqCst);
            r
        })
    };
    eventually("new work refused once shutdown began", LONG, || async {
        matches!(
            t.register(Command::new("probe", |_| async { Ok(()) }))
                .await,
            Err(Error::ShutDown { .. })
        )
    })
    .await;
    let e = t.submit(Job::new("finishing", ())).await.unwrap_err();
    assert!(matches!(e, Error::ShutDown { .. }), "{e:?}");
    assert!(
        !stopping.load(Ordering::SeqCst),
        "shutdown returned while a job was still running"
    );
    let e = t
        .register(Command::new("late", |_| async { Ok(()) }))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ShutDown { .. }), "{e:?}");
    let e = t
        .run(Command::new("late", |_| async { Ok(()) }))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ShutDown { .. }), "{e:?}");
    gate.open();
    within("shutdown after the job finished", LONG, shutdown)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        within("finished job", LONG, job.wait()).await.unwrap(),
        json!("finished")
    );
    assert!(t.status(job.id()).await.unwrap().is_finished());
    assert_eq!(started.get(), 1);
}

/// A job still running when the shutdown grace ends is cancelled (its future dropped): handed
/// back to other workers without using up an attempt on distributed backends, failed with
/// `ShutDown` otherwise.
pub async fn shutdown_after_grace_cancels_running_jobs(h: &dyn Harness) {
    let grace = Duration::from_millis(300);
    let t = h.task(opts().with_shutdown_grace(grace)).await;
    let (started, dropped) = (Counter::default(), Counter::default());
    let (s, d) = (started.clone(), dropped.clone());
    t.register(Command::new("endless", move |_| {
        s.bump();
        let flag = DropFlag(d.clone());
        async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Ok("never")
        }
    }))
    .await
    .unwrap();
    let job = t.submit(Job::new("endless", ())).await.unwrap();
    within("job started", LONG, started.reach(1)).await;
    let begun = Instant::now();
    within("shutdown past its grace", LONG, t.shutdown())
        .await
        .unwrap();
    assert!(
        begun.elapsed() >= grace,
        "shutdown did not wait for its grace"
    );
    within("cancelled future dropped", LONG, dropped.reach(1)).await;
    if h.hands_back() {
        let peer = h.peer(&t).await;
        eventually("job handed back", LONG, || async {
            matches!(
                peer.status(job.id()).await.unwrap(),
                JobStatus::Pending { attempts: 0, .. }
            )
        })
        .await;
        let next = h.task(opts()).await;
        next.register(Command::new("endless", |input| async move {
            Ok(format!(
                "finished by the next worker, attempt {}",
                input.attempt()
            ))
        }))
        .await
        .unwrap();
        assert_eq!(
            within("handed-back job finished", LONG, next.wait(job.id()))
                .await
                .unwrap(),
            json!("finished by the next worker, attempt 1")
        );
    } else {
        match within("cancelled job", LONG, job.wait()).await.unwrap_err() {
            Error::ShutDown { command } => assert_eq!(command.as_deref(), Some("endless")),
            other => panic!("expected ShutDown, got {other:?}"),
        }
    }
    assert_eq!(started.get(), 1);
}
