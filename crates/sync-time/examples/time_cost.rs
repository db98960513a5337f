//! What `now()` costs after a sync, and what one sync costs, against their baselines
//! (`SystemTime::now()` and a raw `sntpc` query), measured in the same run; and how long a
//! commit-wait (`wait_until_after(now())`) takes against the error bound.
//!
//! ```text
//! SYNC_NTP_SERVER=127.0.0.1:PORT cargo run --release -p sync-time --features ntp --example time_cost
//! ```
//!
//! Prints figures, asserts nothing: a quick look, not the benchmark suite (`cargo xtask bench`).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sync_time::{LocalOptions, LocalTime, NtpOptions, NtpTime, Time, TimeExt};

const NOW_CALLS: u32 = 1_000_000;
const QUERIES: u32 = 1_000;
/// Rounds per figure; baseline and ours alternate within each round, and the median round
/// counts, so a burst of load on the machine hits both alike and is voted out.
const ROUNDS: usize = 9;
/// Commit-waits per backend.
const WAITS: usize = 200;

fn per_call(total: Duration, n: u32) -> f64 {
    total.as_secs_f64() * 1e9 / f64::from(n)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per call of each closure, median over rounds, interleaved.
fn time_calls(n: u32, fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let mut rounds = vec![Vec::new(); fs.len()];
    for round in 0..=ROUNDS {
        for (i, f) in fs.iter_mut().enumerate() {
            let started = Instant::now();
            for _ in 0..n {
                f();
            }
            if round > 0 {
                // Round 0 is the warm-up.
                rounds[i].push(per_call(started.elapsed(), n));
            }
        }
    }
    rounds.into_iter().map(median).collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = std::env::var("SYNC_NTP_SERVER").unwrap_or_else(|_| {
        panic!("set SYNC_NTP_SERVER=127.0.0.1:PORT to a running chronyd (see notes/services.md)")
    });
    let addr: SocketAddr = tokio::net::lookup_host(server.as_str())
        .await
        .expect("resolve SYNC_NTP_SERVER")
        .next()
        .expect("an address for SYNC_NTP_SERVER");

    let one_query = NtpOptions::new([server.clone()])
        .with_samples(1)
        .with_resync_interval(Duration::ZERO);
    let ntp = NtpTime::connect(one_query.clone())
        .await
        .unwrap_or_else(|e| panic!("sync with {server}: {e}"));
    let dyn_ntp: Arc<dyn Time> = Arc::new(ntp.clone());
    let local = LocalTime::new();

    println!("now() after sync: ns/call, median of {ROUNDS} interleaved rounds of {NOW_CALLS}");
    let r = time_calls(
        NOW_CALLS,
        &mut [
            &mut || {
                black_box(SystemTime::now());
            },
            &mut || {
                black_box(ntp.now().unwrap());
            },
            &mut || {
                black_box(dyn_ntp.now().unwrap());
            },
            &mut || {
                black_box(ntp.now_bounds().unwrap());
            },
            &mut || {
                black_box(local.now().unwrap());
            },
        ],
    );
    let system = r[0];
    println!("  SystemTime::now()            {system:8.1}   (baseline)");
    for (name, v) in [
        ("NtpTime::now()          ", r[1]),
        ("Arc<dyn Time>::now() ntp", r[2]),
        ("NtpTime::now_bounds()   ", r[3]),
        ("LocalTime::now()        ", r[4]),
    ] {
        println!("  {name}     {v:8.1}   {:.2}x", v / system);
    }

    println!(
        "one sync vs a raw sntpc query to {server}: µs/op, median of {ROUNDS} interleaved rounds of {QUERIES}"
    );
    let socket = sntpc_net_tokio::UdpSocketWrapper::from(
        tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap(),
    );
    let four = NtpTime::connect(one_query.with_samples(4)).await.unwrap();
    let mut rounds: [Vec<f64>; 5] = Default::default();
    for round in 0..=ROUNDS {
        let started = Instant::now();
        for _ in 0..QUERIES {
            let ctx = sntpc::NtpContext::new(sntpc::StdTimestampGen::default());
            black_box(sntpc::get_time(addr, &socket, ctx).await.unwrap());
        }
        let raw_reused = per_call(started.elapsed(), QUERIES) / 1e3;
        let started = Instant::now();
        for _ in 0..QUERIES {
            let ctx = sntpc::NtpContext::new(sntpc::StdTimestampGen::default());
            let query = sntpc::get_time(addr, &socket, ctx);
            let reply = tokio::time::timeout(Duration::from_secs(1), query).await;
            black_box(reply.unwrap().unwrap());
        }
        let raw_timeout = per_call(started.elapsed(), QUERIES) / 1e3;
        let started = Instant::now();
        for _ in 0..QUERIES {
            let socket = sntpc_net_tokio::UdpSocketWrapper::from(
                tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap(),
            );
            let ctx = sntpc::NtpContext::new(sntpc::StdTimestampGen::default());
            black_box(sntpc::get_time(addr, &socket, ctx).await.unwrap());
        }
        let raw_bind = per_call(started.elapsed(), QUERIES) / 1e3;
        let started = Instant::now();
        for _ in 0..QUERIES {
            ntp.sync().await.unwrap();
        }
        let sync_one = per_call(started.elapsed(), QUERIES) / 1e3;
        let started = Instant::now();
        for _ in 0..QUERIES / 4 {
            four.sync().await.unwrap();
        }
        let sync_four = per_call(started.elapsed(), QUERIES / 4) / 1e3;
        if round > 0 {
            let figures = [raw_reused, raw_bind, sync_one, sync_four, raw_timeout];
            for (i, v) in figures.into_iter().enumerate() {
                rounds[i].push(v);
            }
        }
    }
    let [raw_reused, raw_bind, sync_one, sync_four, raw_timeout] = rounds.map(median);
    println!("  raw sntpc::get_time, socket reused      {raw_reused:8.1}   (baseline)");
    println!(
        "  raw sntpc::get_time, socket per query   {raw_bind:8.1}   {:.2}x",
        raw_bind / raw_reused
    );
    println!(
        "  raw sntpc::get_time + tokio timeout     {raw_timeout:8.1}   {:.2}x",
        raw_timeout / raw_reused
    );
    println!(
        "  NtpTime::sync(), 1 server × 1 sample    {sync_one:8.1}   {:.2}x",
        sync_one / raw_reused
    );
    println!(
        "  NtpTime::sync(), 1 server × 4 samples   {sync_four:8.1}   {:.2}x",
        sync_four / raw_reused
    );
    let status = ntp.status();
    println!(
        "after sync: offset {} ns, error {:?}",
        status.offset_nanos.unwrap_or_default(),
        status.error.unwrap_or_default()
    );

    println!("commit-wait: wait_until_after(now()), {WAITS} runs each: min / median / p99, and the error bound");
    let local_200us =
        LocalTime::with_options(LocalOptions::new().with_assumed_error(Duration::from_micros(200)));
    let local_5ms =
        LocalTime::with_options(LocalOptions::new().with_assumed_error(Duration::from_millis(5)));
    for (name, time) in [
        ("ntp (chronyd, loopback)", &ntp as &dyn Time),
        ("local, assumed ±200 µs ", &local_200us),
        ("local, assumed ±5 ms   ", &local_5ms),
    ] {
        let mut waits = Vec::with_capacity(WAITS);
        let mut errors = Vec::with_capacity(WAITS);
        for _ in 0..WAITS {
            let t = time.now().unwrap();
            errors.push(time.now_bounds().unwrap().error().as_secs_f64() * 1e6);
            let started = Instant::now();
            time.wait_until_after(t).await.unwrap();
            waits.push(started.elapsed().as_secs_f64() * 1e6);
        }
        waits.sort_by(f64::total_cmp);
        let error = median(errors);
        println!(
            "  {name}  {:8.1} / {:8.1} / {:8.1} µs   error {error:8.1} µs   median/error {:.2}",
            waits[0],
            waits[WAITS / 2],
            waits[WAITS * 99 / 100],
            waits[WAITS / 2] / error
        );
    }
}
