//! `bad-input`: every kind of bad input from the brief, each expected to give one typed error,
//! never a panic or a success; then the keyspace is listed to show nothing was left behind.

use std::future::Future;
use std::time::Duration;

use sync_etcd::Error as EtcdError;
use sync_leader::{ElectOptions, EtcdLeader, Leader};
use sync_lock::{AcquireOptions, EtcdConfig, EtcdLock, Lock, TlsConfig};
use sync_task::{Command, EtcdTask, Job, Task, TaskOptions};

use crate::event::Log;
use crate::secure::{SecureEtcd, APPS};
use crate::worker::Args;

/// The etcd error at the root of `e`'s source chain, if any.
pub fn etcd_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a EtcdError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<EtcdError>() {
            return Some(found);
        }
        cur = err.source();
    }
    None
}

/// Runs `case` on its own task with a deadline; logs `case` with ok = `expect` accepted its
/// error. A panic, a success or a hang is not ok.
async fn case<T, E, F>(log: &Log, name: &str, case: F, expect: fn(&E) -> bool)
where
    T: Send + 'static,
    E: std::error::Error + Send + 'static,
    F: Future<Output = Result<T, E>> + Send + 'static,
{
    case_within(log, name, Duration::from_secs(20), case, expect).await
}

/// [`case`] for input that must be refused at once, without any network round trip: an answer
/// later than [`AT_ONCE`] is not ok.
async fn quick_case<T, E, F>(log: &Log, name: &str, case: F, expect: fn(&E) -> bool)
where
    T: Send + 'static,
    E: std::error::Error + Send + 'static,
    F: Future<Output = Result<T, E>> + Send + 'static,
{
    case_within(log, name, AT_ONCE, case, expect).await
}

/// How soon a malformed URL, config or option must be refused. Generous for a loaded machine;
/// the bug it guards against took 5 s (a DNS lookup of a host with a bad port).
const AT_ONCE: Duration = Duration::from_millis(500);

async fn case_within<T, E, F>(
    log: &Log,
    name: &str,
    limit: Duration,
    case: F,
    expect: fn(&E) -> bool,
) where
    T: Send + 'static,
    E: std::error::Error + Send + 'static,
    F: Future<Output = Result<T, E>> + Send + 'static,
{
    let outcome = tokio::time::timeout(limit, tokio::spawn(case)).await;
    let (ok, detail) = match outcome {
        Err(_) => (false, format!("no answer within {limit:?}")),
        Ok(Err(join)) if join.is_panic() => (false, "PANICKED".to_owned()),
        Ok(Err(join)) => (false, format!("task failed: {join}")),
        Ok(Ok(Ok(_))) => (false, "succeeded".to_owned()),
        Ok(Ok(Err(e))) => (expect(&e), format!("{e}")),
    };
    log.write(log.event("case").ok(ok).detail(format!("{name}: {detail}")));
}

fn long_name() -> String {
    "x".repeat(sync_lock::MAX_NAME_LEN + 1)
}

/// Every bad name: empty, one byte too long, with a NUL.
fn bad_names() -> Vec<(&'static str, String)> {
    vec![
        ("empty name", String::new()),
        ("oversized name", long_name()),
        ("NUL in name", "a\0b".to_owned()),
    ]
}

fn is_auth(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(etcd_error(e), Some(EtcdError::Auth { .. }))
}

fn is_connect(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(etcd_error(e), Some(EtcdError::Connect { .. }))
}

/// Runs every case against `--endpoints`/`--prefix` and, unless `--secure false`, against a
/// TLS + auth etcd of its own.
pub async fn run(a: &Args) -> Result<(), String> {
    let log = a.log()?;
    let cfg = a.config()?;
    let locks = EtcdLock::connect(cfg.clone())
        .await
        .map_err(|e| e.to_string())?;
    let election = EtcdLeader::new(locks.connection());
    let task = EtcdTask::new(locks.connection(), TaskOptions::new()).map_err(|e| e.to_string())?;

    for (what, name) in bad_names() {
        let l = locks.clone();
        let n = name.clone();
        case(
            &log,
            &format!("lock acquire, {what}"),
            async move { l.acquire(&n, AcquireOptions::new()).await },
            |e| matches!(e, sync_lock::Error::InvalidName { .. }),
        )
        .await;
        let l = locks.clone();
        let n = name.clone();
        case(
            &log,
            &format!("lock try_acquire, {what}"),
            async move { l.try_acquire(&n, AcquireOptions::new()).await },
            |e| matches!(e, sync_lock::Error::InvalidName { .. }),
        )
        .await;
        let el = election.clone();
        let n = name.clone();
        case(
            &log,
            &format!("leader group, {what}"),
            async move {
                el.elect("candidate", ElectOptions::new().with_group(n))
                    .await
            },
            |e| matches!(e, sync_leader::Error::InvalidName { .. }),
        )
        .await;
        let el = election.clone();
        let n = name.clone();
        case(
            &log,
            &format!("leader candidate id, {what}"),
            async move { el.elect(&n, ElectOptions::new().with_group("g")).await },
            |e| matches!(e, sync_leader::Error::InvalidName { .. }),
        )
        .await;
        let t = task.clone();
        let n = name.clone();
        case(
            &log,
            &format!("task submit, {what}"),
            async move { t.submit(Job::new(n, 1)).await },
            |e| matches!(e, sync_task::Error::InvalidName { .. }),
        )
        .await;
        let t = task.clone();
        let n = name.clone();
        case(
            &log,
            &format!("task register, {what}"),
            async move {
                t.register(Command::typed(n, |x: u64| async move { Ok(x) }))
                    .await
            },
            |e| matches!(e, sync_task::Error::InvalidName { .. }),
        )
        .await;
    }

    let l = locks.clone();
    case(
        &log,
        "lock zero TTL",
        async move {
            l.acquire("zero-ttl", AcquireOptions::new().with_ttl(Duration::ZERO))
                .await
        },
        |e| matches!(e, sync_lock::Error::InvalidOptions { .. }),
    )
    .await;
    let el = election.clone();
    case(
        &log,
        "leader zero TTL",
        async move {
            el.elect(
                "c",
                ElectOptions::new()
                    .with_group("zero-ttl")
                    .with_ttl(Duration::ZERO),
            )
            .await
        },
        |e| matches!(e, sync_leader::Error::InvalidOptions { .. }),
    )
    .await;
    let c = locks.connection();
    case(
        &log,
        "task zero TTL",
        async move { EtcdTask::new(c, TaskOptions::new().with_ttl(Duration::ZERO)) },
        |e| {
            matches!(
                e,
                sync_task::Error::InvalidOptions { .. } | sync_task::Error::Config(_)
            )
        },
    )
    .await;
    let zero = cfg.clone().with_ttl(Duration::ZERO);
    case(
        &log,
        "config zero TTL",
        async move { EtcdLock::connect(zero).await },
        |e| matches!(e, sync_lock::Error::Config(_)),
    )
    .await;
    duration_cases(&log, &locks, &election, &task, &cfg).await;
    url_cases(&log, &cfg).await;

    // Nothing listens on a port we just had and closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let unreachable = EtcdConfig::new([format!("127.0.0.1:{port}")])
        .with_prefix(cfg.prefix.clone())
        .with_connect_timeout(Duration::from_secs(1));
    // Retryable, typed as a connection error, and named by its endpoints (not `lock ""`).
    let u = unreachable.clone();
    case(
        &log,
        "lock, unreachable endpoint",
        async move { EtcdLock::connect(u).await },
        |e| {
            e.is_retryable()
                && is_connect(e)
                && matches!(e, sync_lock::Error::Connect { .. })
                && e.to_string()
                    .contains("cannot connect to etcd at 127.0.0.1:")
        },
    )
    .await;
    let u = unreachable.clone();
    case(
        &log,
        "leader, unreachable endpoint",
        async move { EtcdLeader::connect(u).await },
        |e| {
            e.is_retryable()
                && is_connect(e)
                && matches!(e, sync_leader::Error::Connect { .. })
                && e.to_string()
                    .contains("cannot connect to etcd at 127.0.0.1:")
        },
    )
    .await;
    let u = unreachable;
    case(
        &log,
        "task, unreachable endpoint",
        async move { EtcdTask::connect(u, TaskOptions::new()).await },
        |e| e.is_retryable() && is_connect(e),
    )
    .await;

    if a.or("secure", "true") == "true" {
        secure_cases(&log).await?;
    }

    // Keys left under our prefix on the shared cluster.
    let root = locks.connection().key_root().to_owned();
    let mut raw = sync_etcd::EtcdClient::of(&locks.connection()).raw();
    let keys = raw
        .get(
            root.clone(),
            Some(
                sync_etcd::etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = keys
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    log.write(
        log.event("keys_left")
            .token(names.len() as u64)
            .detail(format!("under {root}: {names:?}")),
    );
    Ok(())
}

/// TTLs no backend accepts besides zero (which has its cases in [`run`]): sub-second, one
/// nanosecond past etcd's longest lease TTL, and `Duration::MAX` (which overflowed the lease
/// keeper's arithmetic).
fn bad_ttls() -> Vec<(&'static str, Duration)> {
    vec![
        ("sub-second TTL", Duration::from_millis(500)),
        (
            "TTL past etcd's longest",
            sync_core::duration::MAX_TTL + Duration::from_nanos(1),
        ),
        ("Duration::MAX TTL", Duration::MAX),
    ]
}

/// Every duration a user passes in code: TTLs, maximum waits, timeouts. Each is refused at
/// once, before any request (so nothing can be left behind).
async fn duration_cases(
    log: &Log,
    locks: &EtcdLock,
    election: &EtcdLeader,
    task: &EtcdTask,
    cfg: &EtcdConfig,
) {
    for (what, ttl) in bad_ttls() {
        let l = locks.clone();
        quick_case(
            log,
            &format!("lock acquire, {what}"),
            async move {
                l.acquire("bad-ttl", AcquireOptions::new().with_ttl(ttl))
                    .await
            },
            |e| matches!(e, sync_lock::Error::InvalidOptions { .. }) && !e.is_retryable(),
        )
        .await;
        let l = locks.clone();
        quick_case(
            log,
            &format!("lock try_acquire, {what}"),
            async move {
                l.try_acquire("bad-ttl", AcquireOptions::new().with_ttl(ttl))
                    .await
            },
            |e| matches!(e, sync_lock::Error::InvalidOptions { .. }) && !e.is_retryable(),
        )
        .await;
        let el = election.clone();
        quick_case(
            log,
            &format!("leader elect, {what}"),
            async move {
                el.elect("c", ElectOptions::new().with_group("bad-ttl").with_ttl(ttl))
                    .await
            },
            |e| matches!(e, sync_leader::Error::InvalidOptions { .. }) && !e.is_retryable(),
        )
        .await;
        let c = task.connection();
        quick_case(
            log,
            &format!("task, {what}"),
            async move { EtcdTask::new(c, TaskOptions::new().with_ttl(ttl)) },
            |e| {
                matches!(
                    e,
                    sync_task::Error::InvalidOptions { .. } | sync_task::Error::Config(_)
                )
            },
        )
        .await;
        let c = cfg.clone().with_ttl(ttl);
        quick_case(
            log,
            &format!("config, {what}"),
            async move { EtcdLock::connect(c).await },
            |e| matches!(e, sync_lock::Error::Config(_)) && !e.is_retryable(),
        )
        .await;
    }
    let l = locks.clone();
    quick_case(
        log,
        "lock acquire, zero maximum wait",
        async move {
            l.acquire(
                "bad-wait",
                AcquireOptions::new().with_max_wait(Duration::ZERO),
            )
            .await
        },
        |e| matches!(e, sync_lock::Error::InvalidOptions { .. }),
    )
    .await;
    let el = election.clone();
    quick_case(
        log,
        "leader elect, zero maximum wait",
        async move {
            el.elect(
                "c",
                ElectOptions::new()
                    .with_group("bad-wait")
                    .with_max_wait(Duration::ZERO),
            )
            .await
        },
        |e| matches!(e, sync_leader::Error::InvalidOptions { .. }),
    )
    .await;
    for (what, d) in [("zero", Duration::ZERO), ("Duration::MAX", Duration::MAX)] {
        let c = cfg.clone().with_connect_timeout(d);
        quick_case(
            log,
            &format!("config, {what} connect timeout"),
            async move { EtcdLock::connect(c).await },
            |e| matches!(e, sync_lock::Error::Config(_)),
        )
        .await;
        let c = cfg.clone().with_request_timeout(d);
        quick_case(
            log,
            &format!("config, {what} request timeout"),
            async move { EtcdLeader::connect(c).await },
            |e| matches!(e, sync_leader::Error::Config(_)),
        )
        .await;
    }
}

/// Malformed URLs and endpoints (finding 4 of issue 10, with `localhost` where the finding's
/// host would have been looked up in DNS): each a non-retryable configuration error at once.
async fn url_cases(log: &Log, cfg: &EtcdConfig) {
    let prefix = cfg.prefix.clone();
    for bad in [
        "[::1",
        "a b:1",
        "127.0.0.1:1%zz",
        "localhost:notaport",
        ":2379",
        "127.0.0.1:99999",
        "127.0.0.1:0",
        "::1:2379",
    ] {
        let url = format!("etcd://{bad}/{prefix}");
        quick_case(
            log,
            &format!("lock open {url:?}"),
            async move { sync_lock::open(&url).await },
            |e| matches!(e, sync_lock::Error::Config(_)) && !e.is_retryable(),
        )
        .await;
        let url = format!("etcd://{bad}/{prefix}");
        quick_case(
            log,
            &format!("leader open {url:?}"),
            async move { sync_leader::open(&url).await },
            |e| matches!(e, sync_leader::Error::Config(_)) && !e.is_retryable(),
        )
        .await;
        let c = EtcdConfig::new([bad]).with_prefix(prefix.clone());
        quick_case(
            log,
            &format!("lock connect, endpoint {bad:?}"),
            async move { EtcdLock::connect(c).await },
            |e| matches!(e, sync_lock::Error::Config(_)) && !e.is_retryable(),
        )
        .await;
    }
    for query in [
        "ttl=18446744073709551615s",
        "ttl=0.5s",
        "request_timeout=0s",
        "connect_timeout=1000h",
        "ttl=1s%",
    ] {
        let url = format!("etcd://127.0.0.1:2379/{prefix}?{query}");
        quick_case(
            log,
            &format!("lock open {url:?}"),
            async move { sync_lock::open(&url).await },
            |e| matches!(e, sync_lock::Error::Config(_)) && !e.is_retryable(),
        )
        .await;
    }
}

async fn secure_cases(log: &Log) -> Result<(), String> {
    let etcd = tokio::task::spawn_blocking(SecureEtcd::start)
        .await
        .map_err(|e| e.to_string())??;
    let (app, password) = APPS[0];
    let good = etcd.config(app).with_auth(app, password);

    let mut wrong_ca = good.clone();
    wrong_ca.tls = Some(
        TlsConfig::with_ca(&etcd.wrong_ca).with_client_cert(&etcd.client_cert, &etcd.client_key),
    );
    case(
        log,
        "wrong TLS CA",
        async move { EtcdLock::connect(wrong_ca).await },
        |e| matches!(etcd_error(e), Some(EtcdError::Tls { .. })),
    )
    .await;
    let mut no_cert = good.clone();
    no_cert.tls = Some(TlsConfig::with_ca(&etcd.ca));
    case(
        log,
        "no TLS client certificate",
        async move { EtcdLock::connect(no_cert).await },
        |e| matches!(etcd_error(e), Some(EtcdError::Tls { .. })),
    )
    .await;
    let wrong_pw = etcd.config(app).with_auth(app, "not-the-password");
    case(
        log,
        "wrong password",
        async move { EtcdLock::connect(wrong_pw).await },
        |e| is_auth(e),
    )
    .await;
    let anonymous = etcd.config(app);
    case(
        log,
        "auth enabled, no credentials",
        async move { EtcdLock::connect(anonymous).await },
        |e| is_auth(e),
    )
    .await;

    let left = etcd.keys(&format!("{app}/"))?;
    log.write(
        log.event("keys_left")
            .token(left.len() as u64)
            .detail(format!("TLS etcd under {app}/: {left:?}")),
    );
    drop(etcd);
    Ok(())
}
