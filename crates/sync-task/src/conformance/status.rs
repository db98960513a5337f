//! A job's status and outcome by id, and its retention.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sync_core::check::{eventually, within};

use super::{opts, Counter, Gate, Harness, LONG};
use crate::{Command, Error, Job, JobId, JobStatus, Task};

/// A job's status and outcome can be asked for later by id, from another handle.
pub async fn status_and_wait_by_id(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let peer = h.peer(&t).await;
    let gate = Gate::new();
    let started = Counter::default();
    let (g, s) = (gate.clone(), started.clone());
    t.register(Command::typed("slow-echo", move |v: Value| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            s.bump();
            g.pass().await;
            Ok(v)
        }
    }))
    .await
    .unwrap();
    let job = t
        .submit(Job::new("slow-echo", json!({"k": [1, 2]})))
        .await
        .unwrap();
    let id: JobId = job.id().clone();
    within("job started", LONG, started.reach(1)).await;
    eventually("status shows the attempt running", LONG, || async {
        matches!(
            peer.status(&id).await.unwrap(),
            JobStatus::Running { attempt: 1, .. }
        )
    })
    .await;
    gate.open();
    assert_eq!(
        within("wait by id", LONG, peer.wait(&id)).await.unwrap(),
        json!({"k": [1, 2]})
    );
    match peer.status(&id).await.unwrap() {
        JobStatus::Succeeded { attempts, output } => {
            assert_eq!(attempts, 1);
            assert_eq!(output, json!({"k": [1, 2]}));
        }
        other => panic!("unexpected status {other:?}"),
    }
    for unknown in ["0123456789abcdef", "a/b", "", "../../x"] {
        let id = JobId::from(unknown);
        let e = peer.status(&id).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{unknown:?}: {e:?}");
        let e = peer.wait(&id).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{unknown:?}: {e:?}");
    }
}

/// A finished job is dropped after its retention: its status is `NotFound`, the backend no
/// longer stores it, and its idempotency key is free again.
pub async fn finished_jobs_expire(h: &dyn Harness) {
    let t = h.task(opts()).await;
    t.register(Command::new("short-lived", |_| async { Ok("done") }))
        .await
        .unwrap();
    let retention = Duration::from_secs(1);
    let job = t
        .submit(
            Job::new("short-lived", ())
                .with_retention(retention)
                .with_idempotency_key("once"),
        )
        .await
        .unwrap();
    assert_eq!(job.wait().await.unwrap(), json!("done"));
    let finished = Instant::now();
    assert!(
        h.stored_jobs(&t).await > 0,
        "the result was not kept at all"
    );
    assert!(job.status().await.unwrap().is_finished());
    let bound = retention + h.expiry_slack();
    eventually("the finished job expired", bound + LONG, || async {
        h.stored_jobs(&t).await == 0
    })
    .await;
    assert!(
        finished.elapsed() <= bound,
        "the job was dropped {:?} after it finished, later than retention + slack ({bound:?})",
        finished.elapsed()
    );
    assert!(matches!(
        job.status().await.unwrap_err(),
        Error::NotFound { .. }
    ));
    let fresh = t
        .submit(Job::new("short-lived", ()).with_idempotency_key("once"))
        .await
        .unwrap();
    assert_ne!(fresh.id(), job.id(), "the idempotency key outlived its job");
    fresh.wait().await.unwrap();
}
