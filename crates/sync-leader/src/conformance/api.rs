//! Input validation and the shapes the API can be used in.

use super::*;

/// Empty, oversized and NUL-containing group names and candidate ids, and a zero TTL, are typed
/// errors; nothing is left behind.
pub async fn invalid_names_rejected(h: &dyn Harness) {
    let c = h.client().await;
    let long = "x".repeat(MAX_NAME_LEN + 1);
    for bad in ["", long.as_str(), "a\0b"] {
        let e = c.elect(bad, opts(h, "valid")).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidName {
                    kind: "candidate id",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = c.elect("valid", opts(h, bad)).await.unwrap_err();
        assert!(
            matches!(e, Error::InvalidName { kind: "group", .. }),
            "{e:?}"
        );
        assert!(!e.is_retryable());
        assert!(e.to_string().len() < 300, "error message too long: {e}");
        let e = c.leader(bad).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
        let e = c.observe(bad).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
    }
    let e = c
        .elect(
            "a",
            ElectOptions::new()
                .with_group("zero-ttl")
                .with_ttl(Duration::ZERO),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
    assert_eq!(h.candidates("zero-ttl").await, 0);
    assert_eq!(h.candidates("valid").await, 0);
    // The longest valid names, and non-ASCII ones, work.
    let longest = "y".repeat(MAX_NAME_LEN);
    let e = c.elect(&longest, opts(h, &longest)).await.unwrap();
    assert_eq!(c.leader(&longest).await.unwrap().unwrap().id, longest);
    e.resign().await.unwrap();
    let e = c.elect("候補 🚀", opts(h, "グループ/ünï")).await.unwrap();
    assert_eq!(e.id(), "候補 🚀");
    assert_eq!(e.group(), "グループ/ünï");
    e.resign().await.unwrap();
}

async fn generic_term(l: &impl Leader, group: &str, o: ElectOptions) -> u64 {
    let e = l.elect("generic", o.with_group(group)).await.unwrap();
    let t = e.term();
    e.resign().await.unwrap();
    t
}

/// `Arc<dyn Leader>`, `Box<dyn Leader>`, generic code over `impl Leader`, and `Group` all work.
pub async fn dyn_and_generic_use(h: &dyn Harness) {
    let c: Arc<dyn Leader> = h.client().await;
    let t1 = generic_term(&c, "dyn", opts(h, "dyn")).await;
    let boxed: Box<dyn Leader> = Box::new(c.clone());
    let t2 = generic_term(&boxed, "dyn", opts(h, "dyn")).await;
    assert!(t2 > t1);
    let g = Group::from_arc(c.clone(), "dyn").with_options(opts(h, "ignored"));
    assert_eq!(g.name(), "dyn");
    let e = g.elect("grouped").await.unwrap();
    assert!(e.term() > t2);
    assert_eq!(
        g.leader().await.unwrap().map(|l| l.id),
        Some("grouped".into())
    );
    let mut o = g.observe().await.unwrap();
    assert_eq!(
        next_state(&mut o, "group observer").await.map(|l| l.term),
        Some(e.term())
    );
    e.resign().await.unwrap();
    assert_eq!(next_state(&mut o, "nobody leads").await, None);
    let t3 = c
        .lead("ext", opts(h, "dyn"), |term| async move { term })
        .await
        .unwrap();
    assert!(t3 > t2);
    assert_eq!(
        next_state(&mut o, "lead() elected").await.map(|l| l.term),
        Some(t3)
    );
    assert_eq!(next_state(&mut o, "lead() resigned").await, None);
    // Work whose office is taken away is cancelled, and the loss reported.
    let err = within(
        "lead() ends on revocation",
        LONG,
        c.lead("ext", opts(h, "dyn"), |_| async move {
            h.delete_leader_key("dyn").await;
            std::future::pending::<()>().await
        }),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err:?}");
    queued(h, "dyn", 0).await;
}
