//! The checkers' self-tests: clean logs pass, planted violations are counted.

use super::*;

pub(super) const MS: u64 = 1_000_000;

pub(super) fn ev(t_ms: u64, pid: u32, ev: &str) -> Event {
    Event {
        t: t_ms * MS,
        pid,
        who: format!("w{pid}"),
        ev: ev.into(),
        ..Default::default()
    }
}

pub(super) fn killed(t_ms: u64, target: u32) -> Event {
    Event {
        who: "harness".into(),
        ..ev(t_ms, 1, "killed")
    }
    .target(target)
}

pub(super) fn run(scenario: &str, mut events: Vec<Event>) -> Outcome {
    events.sort_by_key(|e| e.t);
    check(scenario, &events, Params::default())
}

/// Two workers taking turns; `second_enter` is when worker 20 enters after worker 10
/// (whose section is 100–200 ms).
fn mutex_log(second_enter: u64, second_token: u64) -> Vec<Event> {
    vec![
        ev(90, 10, "want"),
        ev(95, 20, "want"),
        ev(100, 10, "enter").token(5),
        ev(200, 10, "exit").token(5).ok(true),
        ev(second_enter, 20, "enter").token(second_token),
        ev(second_enter + 50, 20, "exit")
            .token(second_token)
            .ok(true),
    ]
}

#[test]
fn mutex_clean() {
    let o = run("mutex", mutex_log(201, 6));
    assert_eq!(o.violations, 0, "{o:?}");
    assert_eq!(o.runs, 2);
}

#[test]
fn mutex_counts_overlap() {
    let o = run("mutex", mutex_log(150, 6));
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("overlapping"), "{o:?}");
}

#[test]
fn mutex_counts_token_going_back() {
    let o = run("mutex", mutex_log(201, 5));
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("fencing token"), "{o:?}");
}

#[test]
fn mutex_allows_an_equal_token_only_to_the_same_process() {
    let log = |who: u32, token: u64| {
        vec![
            ev(90, 10, "want"),
            ev(100, 10, "enter").token(5),
            ev(200, 10, "exit").token(5).ok(true),
            ev(205, who, "want"),
            ev(210, who, "enter").token(token),
            ev(250, who, "exit").token(token).ok(true),
        ]
    };
    // A sticky take-back: the same process, its own token.
    let o = run("mutex", log(10, 5));
    assert_eq!(o.violations, 0, "{o:?}");
    // Another process with that token, or the same one with a lower token: violations.
    for (who, token) in [(20, 5), (10, 4)] {
        let o = run("mutex", log(who, token));
        assert_eq!(o.violations, 1, "pid {who} token {token}: {o:?}");
        assert!(o.details[0].contains("fencing token"), "{o:?}");
    }
}

#[test]
fn mutex_counts_stuck_client() {
    // Free from 200 ms to 200 + TTL + margin + 1 s while worker 20 waited.
    let o = run("mutex", mutex_log(200 + 6_000, 6));
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("free for"), "{o:?}");
}

#[test]
fn mutex_killed_holder_ends_at_kill_and_counts_overlap_before_it() {
    let mut log = vec![
        ev(0, 10, "want"),
        ev(1, 20, "want"),
        ev(10, 10, "enter").token(1),
        killed(500, 10),
        ev(2_600, 20, "enter").token(2),
        ev(2_700, 20, "exit").token(2).ok(true),
    ];
    assert_eq!(run("mutex", log.clone()).violations, 0);
    log[4].t = 400 * MS; // entered before the killed holder was gone
    assert_eq!(run("mutex", log).violations, 1);
}

#[test]
fn mutex_empty_log_is_a_violation() {
    assert_eq!(run("mutex", vec![ev(1, 1, "want")]).violations, 1);
}

#[test]
fn panic_is_counted() {
    let mut log = mutex_log(201, 6);
    log.push(ev(300, 10, "panic").detail("boom"));
    assert_eq!(run("mutex", log).violations, 1);
}

fn leader_log() -> Vec<Event> {
    vec![
        ev(0, 10, "campaign"),
        ev(1, 20, "campaign"),
        ev(10, 10, "elected").token(100),
        killed(1_000, 10),
        ev(3_500, 20, "elected").token(105),
        ev(4_000, 20, "resign").token(105),
    ]
}

#[test]
fn leader_clean() {
    let o = run("leader", leader_log());
    assert_eq!(o.violations, 0, "{o:?}");
}

#[test]
fn leader_counts_two_leaders_in_one_term() {
    let mut log = leader_log();
    log.push(ev(3_600, 30, "elected").token(105));
    let o = run("leader", log);
    // Same term twice; the second began while the first led; the term did not increase.
    assert!(
        o.details.iter().any(|d| d.contains("had 2 leaders")),
        "{o:?}"
    );
    assert_eq!(o.violations, 3, "{o:?}");
}

#[test]
fn leader_counts_late_revocation() {
    let log = vec![
        ev(10, 10, "elected").token(100),
        ev(500, 20, "elected").token(101),
        ev(600, 10, "revoked").token(100),
        ev(700, 20, "resign").token(101),
    ];
    let o = run("leader", log);
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("before the previous leader"), "{o:?}");
}

#[test]
fn leader_counts_slow_failover() {
    let mut log = leader_log();
    log[4].t = 1_000 * MS + 3_300 * MS; // TTL 2 s + 1 s + slack exceeded
    log[5].t = 5_000 * MS;
    let o = run("leader", log);
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("failover"), "{o:?}");
}

fn task_log() -> Vec<Event> {
    vec![
        ev(1, 1, "submitted").job(0),
        ev(2, 1, "submitted").job(1),
        ev(3, 2, "done").job(0),
        ev(4, 3, "done").job(0),
        ev(5, 3, "done").job(1),
        ev(6, 1, "finished").job(0).ok(true),
        ev(7, 1, "finished").job(1).ok(true),
    ]
}

#[test]
fn tasks_clean_with_a_duplicate_noted() {
    let o = run("task", task_log());
    assert_eq!(o.violations, 0, "{o:?}");
    assert!(o.details[0].contains("1 duplicate"), "{o:?}");
}

#[test]
fn tasks_count_lost_and_wrong() {
    let mut log = task_log();
    log.pop(); // job 1 never finished
    log.push(ev(8, 1, "submitted").job(2));
    log.push(ev(9, 1, "finished").job(2).ok(false));
    let o = run("task", log);
    assert_eq!(o.violations, 2, "{o:?}");
}

fn outage_log(told_at: u64, back_grant: u64) -> Vec<Event> {
    let mark = |t: u64, e: &str| Event {
        who: "harness".into(),
        ..ev(t, 1, e)
    };
    vec![
        ev(0, 10, "want"),
        ev(10, 10, "enter").token(1),
        mark(1_000, "cluster_down"),
        ev(told_at, 10, "exit").token(1).ok(false),
        mark(9_000, "cluster_up"),
        ev(9_100, 10, "want"),
        ev(back_grant, 10, "enter").token(9),
        ev(back_grant + 10, 10, "exit").token(9).ok(true),
    ]
}

#[test]
fn outage_clean() {
    let o = run("outage", outage_log(2_600, 11_000));
    assert_eq!(o.violations, 0, "{o:?}");
}

#[test]
fn outage_counts_late_notice_and_no_recovery() {
    let o = run("outage", outage_log(3_500, 11_000));
    assert_eq!(o.violations, 1, "{o:?}");
    let mut log = outage_log(2_600, 11_000);
    log.truncate(6); // never granted again
    let o = run("outage", log);
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(
        o.details.iter().any(|d| d.contains("did not recover")),
        "{o:?}"
    );
}

fn raft_log(elections_ms: &[u64], loss_at: Option<(u64, &str)>) -> Vec<Event> {
    let mark = |t: u64, e: &str| Event {
        who: "harness".into(),
        ..ev(t, 1, e)
    };
    let mut log = vec![ev(10, 10, "enter").token(1), ev(20, 20, "elected").token(2)];
    for (i, e) in elections_ms.iter().enumerate() {
        let t = 1_000 + i as u64 * 10_000;
        log.push(mark(t, "raft_kill"));
        log.push(mark(t + e, "raft_elected"));
    }
    if let Some((t, ev_name)) = loss_at {
        let e = if ev_name == "revoked" {
            ev(t, 20, "revoked").token(2)
        } else {
            ev(t, 10, "exit").token(1).ok(false)
        };
        log.push(e);
    }
    log
}

#[test]
fn raft_kills_clean_and_planted_losses() {
    let fast = [1_200, 1_500, 2_000, 1_100, 1_900];
    assert_eq!(run("raft-kills", raft_log(&fast, None)).violations, 0);
    // A loss 3 s after the third kill, whose election took 2 s: caught.
    let o = run("raft-kills", raft_log(&fast, Some((24_000, "exit"))));
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("lock lost"), "{o:?}");
    let o = run("raft-kills", raft_log(&fast, Some((24_000, "revoked"))));
    assert_eq!(o.violations, 1, "{o:?}");
    // The same loss after a 2.9 s election is inconclusive, but then only four rounds
    // count: a sixth, fast round makes it clean.
    let slow = [1_200, 1_500, 2_900, 1_100, 1_900, 1_300];
    let o = run("raft-kills", raft_log(&slow, Some((24_000, "exit"))));
    assert_eq!(o.violations, 0, "{o:?}");
    let o = run("raft-kills", raft_log(&slow[..5], None));
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("too few"), "{o:?}");
    // A loss before any kill is a violation.
    let o = run("raft-kills", raft_log(&fast, Some((500, "exit"))));
    assert_eq!(o.violations, 1, "{o:?}");
}

#[test]
fn time_checker() {
    let clean = vec![
        ev(1, 1, "bounds").ok(true),
        ev(2, 1, "liar").ok(true).detail("skew"),
    ];
    assert_eq!(run("time", clean.clone()).violations, 0);
    let mut bad = clean;
    bad.push(ev(3, 1, "bounds").ok(false));
    bad.push(ev(4, 1, "liar").ok(false));
    bad.push(ev(5, 1, "sync_failed"));
    assert_eq!(run("time", bad).violations, 3);
}

#[test]
fn bad_input_checker() {
    let clean = vec![
        ev(1, 1, "case").ok(true).detail("empty name"),
        ev(2, 1, "keys_left").token(0),
    ];
    assert_eq!(run("bad-input", clean).violations, 0);
    let bad = vec![
        ev(1, 1, "case").ok(false).detail("empty name: Ok"),
        ev(2, 1, "keys_left").token(3),
    ];
    assert_eq!(run("bad-input", bad).violations, 2);
    assert_eq!(run("bad-input", vec![]).violations, 2);
}

#[test]
fn partition_checker() {
    let mut log = mutex_log(201, 6);
    assert_eq!(run("partition", log.clone()).violations, 1, "no cut logged");
    log.push(ev(150, 99, "cut").detail("blackhole"));
    assert_eq!(run("partition", log.clone()).violations, 0);
    log.push(ev(220, 10, "elected").token(7));
    log.push(ev(230, 20, "elected").token(8));
    assert_eq!(run("partition", log).violations, 1);
}
