//! What `docs/task.md` must tell users (issue 16): the size limits, what a large backlog costs,
//! and how a raft leader change delays the re-run of a dead worker's jobs.

fn task_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/task.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

#[test]
fn task_docs_state_the_limits_and_the_leader_change_delay() {
    let doc = task_md();
    let lower = doc.to_lowercase();
    assert!(
        !doc.contains("15 000"),
        "docs/task.md still says a backlog is capped at about 15 000 jobs"
    );
    assert!(
        lower.contains("leader change") && lower.contains("extend"),
        "docs/task.md does not say that a raft leader change extends leases (so a dead worker's \
         jobs re-run later than TTL + 0.5 s)"
    );
    assert!(
        lower.contains("max_payload_bytes") && lower.contains("max_output_bytes"),
        "docs/task.md does not state the payload and output size limits"
    );
}
