//! Time scenarios of the brief's table, each beside its baseline, against the NTP server in
//! `SYNC_NTP_SERVER` (chronyd on loopback, started by `cargo xtask bench`).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use sync_time::{NtpOptions, NtpTime, Time};

use crate::stats::percentile_ms;
use crate::{Budget, Row, Scenario, Target};

pub(crate) fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "time.ntp.now_after_sync",
            Scenario {
                needs_etcd: false,
                needs_ntp: true,
                run: |b| now_after_sync(b).boxed(),
            },
        ),
        (
            "time.ntp.one_sync_single_query",
            Scenario {
                needs_etcd: false,
                needs_ntp: true,
                run: |b| one_sync(b).boxed(),
            },
        ),
    ]
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn server() -> Result<String, String> {
    std::env::var("SYNC_NTP_SERVER").map_err(|_| "SYNC_NTP_SERVER is not set".to_owned())
}

/// One server, one sample per sync, no background re-sync: a sync is exactly one query.
fn single_query(server: &str) -> NtpOptions {
    NtpOptions::new([server])
        .with_samples(1)
        .with_resync_interval(Duration::ZERO)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// ns per call of `f` over `n` calls.
fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        f();
    }
    started.elapsed().as_secs_f64() * 1e9 / f64::from(n)
}

/// `now()` of a synchronized `NtpTime` (default options, background re-sync on) against
/// `SystemTime::now()`: ns per call, alternating rounds of many calls, the median round.
async fn now_after_sync(b: Budget) -> Result<Row, String> {
    let server = server()?;
    let ntp = NtpTime::connect(NtpOptions::new([server.as_str()]))
        .await
        .map_err(|e| format!("sync with {server}: {e}"))?;
    ntp.now().map_err(err)?;
    let calls = u32::try_from(b.samples * 10_000).unwrap_or(u32::MAX);
    let rounds = b.rounds * 3;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    let mut failed = None;
    // Round 0 warms up and is not counted.
    for round in 0..=rounds {
        let o = per_call(calls, || {
            if let Err(e) = black_box(ntp.now()) {
                failed.get_or_insert(e);
            }
        });
        let s = per_call(calls, || {
            black_box(SystemTime::now());
        });
        if round > 0 {
            ours.push(o);
            base.push(s);
        }
        // Let the runtime's other tasks (the background re-sync) run between rounds.
        tokio::task::yield_now().await;
    }
    if let Some(e) = failed {
        return Err(format!("now() failed: {e}"));
    }
    let (o, s) = (median(&ours), median(&base));
    let range = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0f64, f64::max);
        format!("{min:.1}..{max:.1}")
    };
    eprintln!(
        "  ns/call, median of {rounds} rounds of {calls} calls: NtpTime::now() {o:.1} (rounds \
         {}); SystemTime::now() {s:.1} (rounds {})",
        range(&ours),
        range(&base)
    );
    Ok(Row::new(
        "ntp now() after sync",
        o,
        s,
        "ns",
        Target::AtMost(3.0),
    ))
}

/// One `sync()` of an `NtpTime` with one server and one sample against one raw
/// `sntpc::get_time` on a kept socket (ours keeps its socket too): µs per sync, p50 over many,
/// alternating blocks of each.
async fn one_sync(b: Budget) -> Result<Row, String> {
    let server = server()?;
    let addr: SocketAddr = tokio::net::lookup_host(server.as_str())
        .await
        .map_err(|e| format!("resolve {server}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {server}"))?;
    let ntp = NtpTime::connect(single_query(&server))
        .await
        .map_err(|e| format!("sync with {server}: {e}"))?;
    let socket = sntpc_net_tokio::UdpSocketWrapper::from(
        tokio::net::UdpSocket::bind(if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })
        .await
        .map_err(err)?,
    );
    let raw = || async {
        let ctx = sntpc::NtpContext::new(sntpc::StdTimestampGen::default());
        sntpc::get_time(addr, &socket, ctx)
            .await
            .map(|r| {
                black_box(r);
            })
            .map_err(|e| format!("raw sntpc query to {server}: {e:?}"))
    };
    // Warm up both.
    for _ in 0..20 {
        ntp.sync().await.map_err(err)?;
        raw().await?;
    }
    let block = 50;
    let blocks = (b.samples * b.rounds * 5).div_ceil(block).max(2);
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for i in 0..blocks {
        for side in [i % 2, 1 - i % 2] {
            for _ in 0..block {
                let t = Instant::now();
                if side == 0 {
                    ntp.sync().await.map_err(err)?;
                    ours.push(t.elapsed());
                } else {
                    raw().await?;
                    base.push(t.elapsed());
                }
            }
        }
    }
    let n = ours.len();
    let us = |v: &mut Vec<Duration>, p: f64| percentile_ms(v, p) * 1e3;
    let (o50, o99) = (us(&mut ours, 50.0), us(&mut ours, 99.0));
    let (r50, r99) = (us(&mut base, 50.0), us(&mut base, 99.0));
    eprintln!(
        "  {n} syncs each: NtpTime::sync() (1 server, 1 sample) p50 {o50:.1} µs p99 {o99:.1} µs; \
         raw sntpc::get_time p50 {r50:.1} µs p99 {r99:.1} µs"
    );
    Ok(Row::new(
        "one ntp sync, single query (p50)",
        o50,
        r50,
        "µs",
        Target::AtMost(1.2),
    ))
}
