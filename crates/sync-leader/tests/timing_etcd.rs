//! Figures, not assertions on time: how long a hand-over after `resign()` and a failover after a
//! leader process's SIGKILL take on the cluster of `cargo xtask test`, next to their baselines
//! (one put → its watch event; the lease TTL), and an uncontended campaign + resign next to
//! etcd's own Campaign + Resign RPCs.
//!
//! ```text
//! SYNC_ETCD_ENDPOINTS=http://127.0.0.1:2379,… cargo test --release -p sync-leader --features etcd \
//!     --test timing_etcd -- --include-ignored --nocapture
//! ```
//!
//! The test fails only if an election does not happen (every hand-over and failover must).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sync_etcd::etcd_client::{self, EventType, GetOptions, ResignOptions, WatchOptions};
use sync_etcd::{testing, EtcdClient, EtcdConfig};
use sync_leader::{ElectOptions, Elected, EtcdLeader, Leader};

const CHILD_VAR: &str = "SYNC_LEADER_TIMING_CHILD";
const HANDOVERS: usize = 100;
const FAILOVERS: usize = 5;
const TTL: Duration = Duration::from_secs(2);
const LONG: Duration = Duration::from_secs(30);

struct Figures(Vec<Duration>);

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut v = self.0.clone();
        v.sort_unstable();
        let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
            v.len(),
            ms(at(0.5)),
            ms(at(0.9)),
            ms(at(0.99)),
            ms(v[v.len() - 1])
        )
    }
}

impl Figures {
    fn p50(&self) -> Duration {
        let mut v = self.0.clone();
        v.sort_unstable();
        v[v.len() / 2]
    }
}

/// The child process of the failover figures: get elected, say so, wait to be killed.
async fn child_main(spec: &str) -> ! {
    let (prefix, group) = spec.split_once('\n').unwrap();
    let cfg = EtcdConfig::new(testing::endpoints()).with_prefix(prefix);
    let election = EtcdLeader::connect(cfg).await.unwrap();
    let e = election
        .elect(
            "doomed",
            ElectOptions::new().with_group(group).with_ttl(TTL),
        )
        .await
        .unwrap();
    println!("\nELECTED {} {}", e.term(), e.ttl().unwrap().as_secs_f64());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::future::pending::<()>().await;
    unreachable!()
}

async fn wait_candidates(admin: &EtcdClient, dir: &str, n: usize) {
    testing::queued(admin, dir, n).await;
}

/// Campaigns in the background; yields the office and the instant `elect` returned.
fn campaign(
    l: &EtcdLeader,
    id: &str,
    o: ElectOptions,
) -> tokio::task::JoinHandle<(Elected, Instant)> {
    let (l, id) = (l.clone(), id.to_owned());
    tokio::spawn(async move {
        let e = l.elect(&id, o).await.expect("elect");
        (e, Instant::now())
    })
}

async fn put_to_watch_event(admin: &EtcdClient) -> Figures {
    let range = format!("{}baseline/", admin.keyspace().root());
    let mut stream = admin
        .retry("watch", admin.default_budget(), |mut c| {
            let range = range.clone();
            async move {
                let r = c
                    .get(
                        range.clone(),
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    )
                    .await?;
                let rev = r.header().map(|h| h.revision()).unwrap_or(0);
                let opts = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1);
                let mut stream = c.watch(range, Some(opts)).await?;
                match stream.message().await? {
                    Some(m) if m.created() => Ok(stream),
                    _ => Err(etcd_client::Error::WatchError("not created".into())),
                }
            }
        })
        .await
        .unwrap();
    let mut samples = Vec::new();
    for i in 0..HANDOVERS {
        let key = format!("{range}{i}");
        let t0 = Instant::now();
        admin
            .retry("put", admin.default_budget(), |mut c| {
                let key = key.clone();
                async move { c.put(key, "x", None).await }
            })
            .await
            .unwrap();
        'seen: loop {
            let m = tokio::time::timeout(LONG, stream.message())
                .await
                .expect("watch event")
                .unwrap()
                .unwrap();
            for ev in m.events() {
                if ev.event_type() == EventType::Put
                    && ev.kv().map(|kv| kv.key()) == Some(key.as_bytes())
                {
                    break 'seen;
                }
            }
        }
        samples.push(t0.elapsed());
    }
    Figures(samples)
}

async fn handovers(cfg: &EtcdConfig, admin: &EtcdClient) -> Figures {
    let group = "handover";
    let dir = admin.keyspace().dir("election", group);
    let o = ElectOptions::new().with_group(group).with_ttl(TTL);
    let mut clients = [
        EtcdLeader::connect(cfg.clone()).await.unwrap(),
        EtcdLeader::connect(cfg.clone()).await.unwrap(),
    ];
    let mut current = clients[0].elect("a", o.clone()).await.unwrap();
    let mut samples = Vec::new();
    for _ in 0..HANDOVERS {
        let next = campaign(&clients[1], "b", o.clone());
        wait_candidates(admin, &dir, 2).await;
        let t0 = Instant::now();
        current.resign().await.unwrap();
        let (e, at) = tokio::time::timeout(LONG, next)
            .await
            .expect("hand-over")
            .unwrap();
        samples.push(at - t0);
        current = e;
        clients.swap(0, 1);
    }
    current.resign().await.unwrap();
    Figures(samples)
}

async fn campaign_resign(cfg: &EtcdConfig, admin: &EtcdClient) -> (Figures, Figures) {
    let ours = EtcdLeader::connect(cfg.clone()).await.unwrap();
    let o = ElectOptions::new().with_group("uncontended").with_ttl(TTL);
    // Warm up: the lease and the shared watch are made once per client.
    ours.elect("w", o.clone())
        .await
        .unwrap()
        .resign()
        .await
        .unwrap();
    let mut mine = Vec::new();
    for _ in 0..HANDOVERS {
        let t0 = Instant::now();
        let e = ours.elect("me", o.clone()).await.unwrap();
        e.resign().await.unwrap();
        mine.push(t0.elapsed());
    }
    let budget = admin.default_budget();
    let lease = admin
        .retry("grant", budget, |mut c| async move {
            c.lease_grant(60, None).await.map(|r| r.id())
        })
        .await
        .unwrap();
    let name = format!("{}rpc-election", admin.keyspace().root());
    let mut rpc = Vec::new();
    for _ in 0..HANDOVERS {
        let t0 = Instant::now();
        let key = admin
            .retry("campaign", budget, |mut c| {
                let name = name.clone();
                async move {
                    let r = c.campaign(name, "me", lease).await?;
                    Ok(r.leader().expect("a leader key").clone())
                }
            })
            .await
            .unwrap();
        admin
            .retry("resign", budget, |mut c| {
                let key = key.clone();
                async move {
                    c.resign(Some(ResignOptions::new().with_leader(key)))
                        .await
                        .map(|_| ())
                }
            })
            .await
            .unwrap();
        rpc.push(t0.elapsed());
    }
    admin
        .retry("revoke", budget, |mut c| async move {
            c.lease_revoke(lease).await.map(|_| ())
        })
        .await
        .unwrap();
    (Figures(mine), Figures(rpc))
}

async fn failovers(cfg: &EtcdConfig, admin: &EtcdClient) -> (Figures, f64) {
    let heir = EtcdLeader::connect(cfg.clone()).await.unwrap();
    let mut samples = Vec::new();
    let mut granted = 0.0;
    for i in 0..FAILOVERS {
        let group = format!("failover-{i}");
        let dir = admin.keyspace().dir("election", &group);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "handover_and_failover_times",
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_VAR, format!("{}\n{group}", cfg.prefix))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the leader process");
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find_map(|l| l.strip_prefix("ELECTED ").map(str::to_owned))
        });
        let line = tokio::time::timeout(LONG, line).await;
        let Ok(Ok(Some(line))) = line else {
            let _ = child.kill();
            panic!("the leader process was not elected: {line:?}");
        };
        granted = line.split(' ').nth(1).unwrap().parse().unwrap();
        let next = campaign(
            &heir,
            "heir",
            ElectOptions::new().with_group(&group).with_ttl(TTL),
        );
        wait_candidates(admin, &dir, 2).await;
        let t0 = Instant::now();
        child.kill().expect("SIGKILL the leader");
        child.wait().unwrap();
        let (e, at) = tokio::time::timeout(LONG, next)
            .await
            .expect("failover")
            .unwrap();
        samples.push(at - t0);
        e.resign().await.unwrap();
    }
    (Figures(samples), granted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs etcd: run `cargo xtask test` (add --nocapture to see the figures)"]
async fn handover_and_failover_times() {
    if let Ok(spec) = std::env::var(CHILD_VAR) {
        child_main(&spec).await;
    }
    let cfg = testing::config("leader-timing");
    let admin = testing::connect(cfg.clone()).await;

    let baseline = put_to_watch_event(&admin).await;
    let handover = handovers(&cfg, &admin).await;
    let (mine, rpc) = campaign_resign(&cfg, &admin).await;
    let (failover, granted) = failovers(&cfg, &admin).await;
    testing::wipe(&admin).await;

    let ratio = |a: &Figures, b: &Figures| a.p50().as_secs_f64() / b.p50().as_secs_f64();
    println!("etcd at {}", cfg.endpoints.join(","));
    println!("baseline put -> watch event:       {baseline}");
    println!(
        "hand-over after resign():          {handover} (p50 {:.2}x the baseline)",
        ratio(&handover, &baseline)
    );
    println!(
        "elect + resign, uncontended:       {mine} (p50 {:.2}x etcd's RPCs)",
        ratio(&mine, &rpc)
    );
    println!("etcd Campaign + Resign RPCs:       {rpc}");
    println!("failover after SIGKILL (TTL {granted}s): {failover}");
}
