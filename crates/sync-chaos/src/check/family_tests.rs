//! Self-tests of the semaphore's and the read-write lock's checkers: clean logs pass, each
//! planted violation is caught.

use super::tests::{ev, killed, run, MS};
use super::*;

fn cut() -> Event {
    ev(1, 99, "cut").detail("blackhole")
}

fn config(pid: u32, permits: usize) -> Event {
    ev(0, pid, "config").detail(format!("permits {permits}"))
}

fn enter(t: u64, pid: u32, token: u64, mode: &str) -> Event {
    ev(t, pid, "enter").token(token).detail(mode)
}

fn exit(t: u64, pid: u32, token: u64) -> Event {
    ev(t, pid, "exit").token(token).ok(true)
}

/// A 2-permit semaphore: workers 10 and 20 hold 100–200 ms, worker 30 waits from 50 ms and
/// enters at `third_enter`.
fn semaphore_log(third_enter: u64) -> Vec<Event> {
    vec![
        config(10, 2),
        config(20, 2),
        config(30, 2),
        cut(),
        ev(40, 10, "want"),
        ev(41, 20, "want"),
        ev(50, 30, "want"),
        enter(100, 10, 5, "permit"),
        enter(101, 20, 6, "permit"),
        exit(200, 10, 5),
        exit(300, 20, 6),
        enter(third_enter, 30, 7, "permit"),
        exit(third_enter + 10, 30, 7),
    ]
}

#[test]
fn semaphore_clean() {
    let o = run("semaphore", semaphore_log(200));
    assert_eq!(o.violations, 0, "{o:?}");
    assert!(
        o.details.iter().any(|d| d.contains("at most 2 at once")),
        "{o:?}"
    );
}

#[test]
fn semaphore_counts_a_third_holder() {
    let o = run("semaphore", semaphore_log(150));
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("more than 2 holders"), "{o:?}");
}

#[test]
fn semaphore_counts_a_killed_holders_permit_given_away_at_once() {
    // Worker 10 is killed at 150 ms: its permit is still taken for the loss margin (200 ms at
    // a 2 s TTL), so worker 30 entering at 160 ms makes three holders.
    let mut log = semaphore_log(500);
    log.retain(|e| !(e.pid == 10 && e.ev == "exit"));
    log.push(killed(150, 10));
    assert_eq!(run("semaphore", log.clone()).violations, 0);
    let i = log
        .iter()
        .position(|e| e.pid == 30 && e.ev == "enter")
        .unwrap();
    log[i].t = 160 * MS;
    let o = run("semaphore", log);
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("more than 2 holders"), "{o:?}");
}

#[test]
fn semaphore_counts_a_permit_that_never_came_back() {
    // Worker 10 killed at 150 ms; worker 30 waits until 150 ms + TTL + margin + 1 s.
    let mut log = semaphore_log(150 + 6_000);
    log.retain(|e| !(e.pid == 10 && e.ev == "exit"));
    log.push(killed(150, 10));
    let o = run("semaphore", log.clone());
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("a permit was free"), "{o:?}");
    // A waiter (worker 40) killed at 3 s may hold its place in the queue for another TTL +
    // margin: the 3.15 s after its kill are within the bound.
    log.push(ev(60, 40, "want"));
    log.push(killed(3_000, 40));
    let o = run("semaphore", log);
    assert_eq!(o.violations, 0, "{o:?}");
}

#[test]
fn semaphore_counts_a_token_granted_twice_and_missing_config() {
    let mut log = semaphore_log(200);
    let i = log
        .iter()
        .position(|e| e.pid == 30 && e.ev == "enter")
        .unwrap();
    log[i].token = Some(5);
    let o = run("semaphore", log);
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("granted twice"), "{o:?}");
    let mut log = semaphore_log(200);
    log.retain(|e| e.ev != "config");
    assert_eq!(run("semaphore", log).violations, 1);
    let mut log = semaphore_log(200);
    log.push(config(40, 3));
    assert_eq!(run("semaphore", log).violations, 1);
}

/// Readers 10 and 20 share 100–200 ms; writer 30 waits from 150 ms, writes from
/// `write_at` to 400 ms; reader 10 reads again from 400 ms.
fn rwlock_log(write_at: u64, write_token: u64) -> Vec<Event> {
    vec![
        cut(),
        ev(90, 10, "want").detail("read"),
        ev(91, 20, "want").detail("read"),
        ev(150, 30, "want").detail("write"),
        enter(100, 10, 5, "read"),
        enter(110, 20, 6, "read"),
        exit(200, 10, 5),
        exit(210, 20, 6),
        enter(write_at, 30, write_token, "write"),
        exit(400, 30, write_token),
        ev(300, 10, "want").detail("read"),
        enter(400, 10, 8, "read"),
        exit(450, 10, 8),
    ]
}

#[test]
fn rwlock_clean() {
    let o = run("rwlock", rwlock_log(210, 7));
    assert_eq!(o.violations, 0, "{o:?}");
    assert!(
        o.details
            .iter()
            .any(|d| d.contains("at most 2 readers at once")),
        "{o:?}"
    );
}

#[test]
fn rwlock_counts_a_writer_among_readers() {
    let o = run("rwlock", rwlock_log(205, 7));
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("overlapped read"), "{o:?}");
}

#[test]
fn rwlock_counts_two_writers() {
    let mut log = rwlock_log(210, 7);
    log.push(enter(390, 40, 9, "write"));
    log.push(exit(395, 40, 9));
    let o = run("rwlock", log);
    // The overlap, and writer 40's token 9 before reader 10's token 8.
    assert!(o.details[0].contains("overlapped write"), "{o:?}");
    assert_eq!(o.violations, 2, "{o:?}");
}

#[test]
fn rwlock_counts_a_killed_writers_lock_given_away_at_once() {
    let mut log = rwlock_log(210, 7);
    log.retain(|e| !(e.pid == 30 && e.ev == "exit"));
    log.push(killed(300, 30));
    // Reader 10 enters at 400 ms, after the kill + loss margin (300 + 200 ms)…
    let i = log
        .iter()
        .rposition(|e| e.pid == 10 && e.ev == "enter")
        .unwrap();
    log[i].t = 500 * MS;
    assert_eq!(run("rwlock", log.clone()).violations, 0);
    // … not at 450 ms.
    log[i].t = 450 * MS;
    let o = run("rwlock", log);
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("overlapped read"), "{o:?}");
}

#[test]
fn rwlock_counts_token_order_and_no_sharing() {
    let o = run("rwlock", rwlock_log(210, 4));
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("out of order"), "{o:?}");
    let mut log = rwlock_log(210, 7);
    let i = log
        .iter()
        .position(|e| e.pid == 20 && e.ev == "enter")
        .unwrap();
    log[i].t = 201 * MS;
    let o = run("rwlock", log);
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("never shared"), "{o:?}");
}

#[test]
fn rwlock_counts_a_stuck_writer() {
    // Free from 210 ms while writer 30 waits until 6.21 s (TTL + margin = 5 s).
    let mut log = rwlock_log(210, 7);
    for e in &mut log {
        if e.t >= 400 * MS || (e.pid == 30 && e.ev == "enter") {
            e.t += 6_000 * MS;
        }
    }
    let o = run("rwlock", log);
    assert_eq!(o.violations, 1, "{o:?}");
    assert!(o.details[0].contains("the lock was free"), "{o:?}");
}
