//! Leader scenarios of the brief's table, each beside its baseline.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{ResignOptions, WatchOptions};
use futures::FutureExt;
use sync_etcd::{EtcdClient, Lease};
use sync_leader::{ElectOptions, EtcdLeader, Leader};

use crate::lock::{config, err, raw_client};
use crate::stats::{percentile_ms, sample_alternating};
use crate::{Budget, Row, Scenario, Target};

/// The hidden argument that makes this binary a leader candidate that waits to be killed.
pub(crate) const CHILD_ARG: &str = "--leader-child";
const FAILOVER_TTL: Duration = Duration::from_secs(2);

pub(crate) fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "leader.etcd.campaign_resign",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| campaign_resign(b).boxed(),
            },
        ),
        (
            "leader.etcd.handover_after_resign",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| handover(b).boxed(),
            },
        ),
        (
            "leader.etcd.failover_after_kill",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| failover(b).boxed(),
            },
        ),
    ]
}

async fn campaign_resign(b: Budget) -> Result<Row, String> {
    let ours = EtcdLeader::connect(config()).await.map_err(err)?;
    let admin = EtcdClient::connect(config()).await.map_err(err)?;
    let lease = Lease::grant(&admin, Duration::from_secs(10))
        .await
        .map_err(err)?;
    let raw = raw_client().await?;
    let opts = || ElectOptions::new().with_group("bench");
    for _ in 0..10 {
        ours.elect("me", opts())
            .await
            .map_err(err)?
            .resign()
            .await
            .map_err(err)?;
    }
    let (mut o, mut r) = (Vec::new(), Vec::new());
    for _ in 0..b.rounds {
        let id = lease.id();
        let (ours_round, raw_round) = sample_alternating(
            b.samples,
            || async {
                let e = ours.elect("me", opts()).await.map_err(err)?;
                e.resign().await.map_err(err)
            },
            || {
                let mut c = raw.clone();
                async move {
                    let resp = c
                        .campaign("sync-bench-raw/election", "me", id)
                        .await
                        .map_err(err)?;
                    let key = resp
                        .leader()
                        .cloned()
                        .ok_or("campaign returned no leader key")?;
                    c.resign(Some(ResignOptions::new().with_leader(key)))
                        .await
                        .map_err(err)
                        .map(|_| ())
                }
            },
        )
        .await?;
        o.extend(ours_round);
        r.extend(raw_round);
    }
    let (o50, o99) = (percentile_ms(&mut o, 50.0), percentile_ms(&mut o, 99.0));
    let (r50, r99) = (percentile_ms(&mut r, 50.0), percentile_ms(&mut r, 99.0));
    eprintln!("  ours p50 {o50:.3} ms p99 {o99:.3} ms; Campaign+Resign RPC p50 {r50:.3} ms p99 {r99:.3} ms");
    Ok(Row::new(
        "leader campaign+resign (p50)",
        o50,
        r50,
        "ms",
        Target::AtMost(1.0),
    ))
}

/// resign() → the next candidate's elect() returns, vs one put → its watch event.
async fn handover(b: Budget) -> Result<Row, String> {
    let a = EtcdLeader::connect(config()).await.map_err(err)?;
    let bl = std::sync::Arc::new(EtcdLeader::connect(config()).await.map_err(err)?);
    let opts = || ElectOptions::new().with_group("handover");
    let n = (b.samples / 4).max(20) * b.rounds;
    let (mut ours, mut base) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut raw = raw_client().await?;
    let mut stream = raw
        .watch("sync-bench-leader-handover", Some(WatchOptions::new()))
        .await
        .map_err(err)?;
    stream.message().await.map_err(err)?; // created
    for i in 0..n {
        let e = a.elect("a", opts()).await.map_err(err)?;
        let b2 = bl.clone();
        let next = tokio::spawn(async move {
            let e = b2.elect("b", opts()).await;
            (Instant::now(), e)
        });
        // Wait until the second candidate is queued behind the leader.
        let conn = a.connection();
        let admin = EtcdClient::of(&conn);
        let group_dir = admin.keyspace().dir("election", "handover");
        sync_etcd::testing::queued(admin, &group_dir, 2).await;
        let t0 = Instant::now();
        e.resign().await.map_err(err)?;
        let (t1, e2) = next.await.map_err(err)?;
        ours.push(t1 - t0);
        e2.map_err(err)?.resign().await.map_err(err)?;

        let t0 = Instant::now();
        raw.put("sync-bench-leader-handover", i.to_string(), None)
            .await
            .map_err(err)?;
        stream.message().await.map_err(err)?;
        base.push(t0.elapsed());
    }
    let (o50, o99) = (
        percentile_ms(&mut ours, 50.0),
        percentile_ms(&mut ours, 99.0),
    );
    let (b50, b99) = (
        percentile_ms(&mut base, 50.0),
        percentile_ms(&mut base, 99.0),
    );
    eprintln!(
        "  hand-over p50 {o50:.2} ms p99 {o99:.2} ms; put→event p50 {b50:.2} ms p99 {b99:.2} ms"
    );
    Ok(Row::new(
        "leader hand-over after resign() (p50)",
        o50,
        b50,
        "ms",
        Target::AtMost(3.0),
    ))
}

/// The leader is a child process killed with SIGKILL; we measure from the kill until the next
/// candidate (this process) is elected. The baseline is the TTL; the target TTL + 1 s.
async fn failover(b: Budget) -> Result<Row, String> {
    let runs = b.rounds.max(1) * if b.samples >= 1000 { 3 } else { 1 };
    let mut times = Vec::new();
    let mut granted_ttl = FAILOVER_TTL;
    for run in 0..runs {
        let group = format!("failover-{run}");
        let exe = std::env::current_exe().map_err(err)?;
        let mut child = Command::new(exe)
            .arg(CHILD_ARG)
            .env("SYNC_BENCH_GROUP", &group)
            .env("SYNC_BENCH_PREFIX", crate::lock::bench_prefix())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn the leader process: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find(|l| l.starts_with("ELECTED"))
        });
        let elected = tokio::time::timeout(Duration::from_secs(30), line).await;
        if !matches!(elected, Ok(Ok(Some(_)))) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the leader process was not elected within 30 s".into());
        }
        let me = EtcdLeader::connect(config()).await.map_err(err)?;
        let opts = ElectOptions::new()
            .with_group(group.clone())
            .with_ttl(FAILOVER_TTL);
        let campaign = tokio::spawn(async move {
            let e = me.elect("successor", opts).await;
            (Instant::now(), e)
        });
        // Let the successor queue up behind the leader, then kill the leader.
        let watcher = EtcdClient::connect(config()).await.map_err(err)?;
        let dir = watcher.keyspace().dir("election", &group);
        sync_etcd::testing::queued(&watcher, &dir, 2).await;
        let killed = Instant::now();
        child.kill().map_err(err)?;
        let _ = child.wait();
        let (at, e) = campaign.await.map_err(err)?;
        let e = e.map_err(err)?;
        granted_ttl = e.ttl().unwrap_or(FAILOVER_TTL);
        times.push(at - killed);
        e.resign().await.map_err(err)?;
    }
    let worst = times.iter().max().copied().unwrap_or_default();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    let p50 = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "  failover after SIGKILL: p50 {:?}, max {:?} (TTL {:?}, {} runs): {:?}",
        p50,
        worst,
        granted_ttl,
        times.len(),
        times
    );
    let ttl = granted_ttl.as_secs_f64();
    Ok(Row::new(
        "leader failover after kill -9 (worst, s) vs TTL",
        worst.as_secs_f64(),
        ttl,
        "s",
        Target::AtMost((ttl + 1.0) / ttl),
    ))
}

/// The child process of `failover`: campaign, say so, wait to be killed.
pub(crate) async fn child_main() -> ! {
    let group = std::env::var("SYNC_BENCH_GROUP").unwrap_or_else(|_| "failover".into());
    let leader = EtcdLeader::connect(config())
        .await
        .unwrap_or_else(|e| panic!("leader child: {e}"));
    let e = leader
        .elect(
            "doomed",
            ElectOptions::new().with_group(group).with_ttl(FAILOVER_TTL),
        )
        .await
        .unwrap_or_else(|e| panic!("leader child: {e}"));
    println!("ELECTED {}", e.term());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::future::pending::<()>().await;
    unreachable!()
}
