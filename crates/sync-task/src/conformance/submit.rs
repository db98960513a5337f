//! Submitting: idempotency keys, unknown commands, bad payloads and invalid input, typed errors
//! at once and nothing stored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sync_core::check::within;

use super::{opts, Counter, Gate, Harness, LONG};
use crate::{Backoff, Command, Error, Failure, Job, JobStatus, Task, TaskExt, MAX_NAME_LEN};

/// Submitting again with the idempotency key of a live (or retained) job returns that job; the
/// command runs once.
pub async fn idempotency_key_returns_first_job(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let peer = h.peer(&t).await;
    let runs = Counter::default();
    let gate = Gate::new();
    let (r, g) = (runs.clone(), gate.clone());
    t.register(Command::typed("charge", move |cents: u64| {
        r.bump();
        let g = g.clone();
        async move {
            g.pass().await;
            Ok(format!("charged {cents}"))
        }
    }))
    .await
    .unwrap();
    let key = "order-1001/charge";
    let first = t
        .submit(Job::new("charge", 500).with_idempotency_key(key))
        .await
        .unwrap();
    let again = peer
        .submit(Job::new("charge", 999).with_idempotency_key(key))
        .await
        .unwrap();
    assert_eq!(
        again.id(),
        first.id(),
        "a duplicate submission made a new job"
    );
    gate.open();
    assert_eq!(
        within("charged", LONG, again.wait()).await.unwrap(),
        json!("charged 500")
    );
    // Still the same job once it finished (within its retention).
    let late = t
        .submit(Job::new("charge", 1).with_idempotency_key(key))
        .await
        .unwrap();
    assert_eq!(late.id(), first.id());
    assert_eq!(late.wait().await.unwrap(), json!("charged 500"));
    assert_eq!(runs.get(), 1);
    // Another key is another job.
    let other = t
        .submit(Job::new("charge", 2).with_idempotency_key("order-1002/charge"))
        .await
        .unwrap();
    assert_ne!(other.id(), first.id());
    assert_eq!(other.wait().await.unwrap(), json!("charged 2"));
}

/// Submitting a command nobody registered is a typed error, unless the job may wait for a
/// worker: then it runs once one registers.
pub async fn unknown_command_is_typed_error(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let e = t.submit(Job::new("nobody-does-this", 1)).await.unwrap_err();
    match &e {
        Error::UnknownCommand { command } => assert_eq!(command, "nobody-does-this"),
        other => panic!("expected UnknownCommand, got {other:?}"),
    }
    assert!(e.to_string().contains("nobody-does-this"));
    let e = t.call::<Value, _>("nobody-does-this", 1).await.unwrap_err();
    assert!(matches!(e, Error::UnknownCommand { .. }), "{e:?}");
    assert_eq!(h.stored_jobs(&t).await, 0, "a rejected job was stored");

    let job = t
        .submit(Job::new("late-worker", 20).with_wait_for_worker(true))
        .await
        .unwrap();
    assert!(matches!(
        job.status().await.unwrap(),
        JobStatus::Pending { attempts: 0, .. }
    ));
    t.register(Command::typed(
        "late-worker",
        |n: u32| async move { Ok(n + 1) },
    ))
    .await
    .unwrap();
    assert_eq!(
        within("late job", LONG, job.wait()).await.unwrap(),
        json!(21)
    );
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Resize {
    width: u32,
    height: u32,
}

/// A payload the command cannot deserialise fails the job at once with `BadPayload`; a payload
/// that cannot be serialised is rejected at submission.
pub async fn bad_payload_is_typed_error(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let runs = Counter::default();
    let r = runs.clone();
    t.register(Command::typed("resize", move |p: Resize| {
        r.bump();
        async move { Ok(p.width * p.height) }
    }))
    .await
    .unwrap();
    let job = t
        .submit(Job::new("resize", json!({"width": "wide"})).with_max_attempts(3))
        .await
        .unwrap();
    match within("bad payload", LONG, job.wait()).await.unwrap_err() {
        Error::BadPayload {
            command,
            job: Some(id),
            reason,
        } => {
            assert_eq!(command, "resize");
            assert_eq!(&id, job.id());
            assert!(
                reason.contains("width") || reason.contains("invalid"),
                "{reason}"
            );
        }
        other => panic!("expected BadPayload, got {other:?}"),
    }
    assert_eq!(runs.get(), 0, "the command ran on a payload it cannot read");
    assert!(matches!(
        job.status().await.unwrap(),
        JobStatus::Failed {
            attempts: 1,
            failure: Failure::BadPayload { .. }
        }
    ));
    // A good payload still works, and the output can be read back typed.
    let area: u32 = t
        .call(
            "resize",
            Resize {
                width: 3,
                height: 4,
            },
        )
        .await
        .unwrap();
    assert_eq!(area, 12);
    // Not serialisable at all (a map with non-string keys).
    let unserialisable: HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let e = t
        .submit(Job::new("resize", unserialisable))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BadPayload { job: None, .. }), "{e:?}");
    // Output that does not deserialise into what the caller asks for.
    let job = t
        .submit(Job::new(
            "resize",
            Resize {
                width: 1,
                height: 1,
            },
        ))
        .await
        .unwrap();
    let e = job.wait_as::<String>().await.unwrap_err();
    assert!(matches!(e, Error::BadPayload { job: Some(_), .. }), "{e:?}");
}

/// Empty, oversized and NUL-containing command names and idempotency keys, and impossible
/// options, are typed errors; nothing is stored.
pub async fn invalid_input_rejected(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let long = "x".repeat(MAX_NAME_LEN + 1);
    for bad in ["", long.as_str(), "a\0b"] {
        let e = t
            .register(Command::new(bad, |_| async { Ok(()) }))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
        assert!(!e.is_retryable());
        assert!(e.to_string().len() < 300, "error message too long: {e}");
        let e = t.submit(Job::new(bad, ())).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
        let e = t
            .run(Command::new(bad, |_| async { Ok(()) }))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
    }
    t.register(Command::new("valid", |_| async { Ok(()) }))
        .await
        .unwrap();
    let e = t
        .submit(Job::new("valid", ()).with_idempotency_key(""))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidName {
                what: "idempotency key",
                ..
            }
        ),
        "{e:?}"
    );
    let bad_options = [
        Job::new("valid", ()).with_max_attempts(0),
        Job::new("valid", ()).with_retention(Duration::from_millis(10)),
        Job::new("valid", ()).with_timeout(Duration::ZERO),
        Job::new("valid", ())
            .with_backoff(Backoff::new(Duration::from_secs(2), Duration::from_secs(1))),
    ];
    for job in bad_options {
        let e = t.submit(job.clone()).await.unwrap_err();
        assert!(matches!(e, Error::InvalidOptions { .. }), "{job:?}: {e:?}");
        assert!(e.to_string().contains("valid"), "{e}");
    }
    assert_eq!(h.stored_jobs(&t).await, 0, "a rejected job was stored");
    // The longest valid name, and non-ASCII names, work.
    let longest = "y".repeat(MAX_NAME_LEN);
    assert_eq!(
        t.run(Command::new(longest, |_| async { Ok(1) }))
            .await
            .unwrap(),
        json!(1)
    );
    assert_eq!(
        t.run(Command::new("名前/ünïcode 🚀", |_| async { Ok(2) }))
            .await
            .unwrap(),
        json!(2)
    );
}

/// A payload above the size limit is refused at once (before anything is sent), with an error
/// that is not retryable; nothing is stored.
pub async fn oversized_payload_is_refused_at_once(h: &dyn Harness) {
    let t = h.task(opts()).await;
    t.register(Command::typed(
        "sized",
        |s: String| async move { Ok(s.len()) },
    ))
    .await
    .unwrap();
    for bytes in [1_677_722usize, 2_621_440] {
        let big = "x".repeat(bytes);
        let started = Instant::now();
        let e = within("oversized submit", LONG, t.submit(Job::new("sized", big)))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a {bytes}-byte payload was refused only after {:?}: {e}",
            started.elapsed()
        );
        assert!(!e.is_retryable(), "{bytes}-byte payload: {e:?}");
    }
    assert_eq!(h.stored_jobs(&t).await, 0, "a refused job was stored");
}
