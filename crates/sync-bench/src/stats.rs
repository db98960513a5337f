//! Percentiles and timing helpers.

use std::time::{Duration, Instant};

/// The `p`-th percentile (0..=100) of `samples`, in milliseconds.
pub(crate) fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let idx = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[idx].as_secs_f64() * 1e3
}

/// Runs `ours` and `base` `n` times each, one after the other in turn, and returns each one's
/// durations: a slow spell of the machine or the cluster (an fsync stall, another process)
/// falls on both alike instead of on whichever ran its block of samples then.
pub(crate) async fn sample_alternating<F, Fut, G, Gut>(
    n: usize,
    mut ours: F,
    mut base: G,
) -> Result<(Vec<Duration>, Vec<Duration>), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
    G: FnMut() -> Gut,
    Gut: std::future::Future<Output = Result<(), String>>,
{
    let (mut o, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        // Who goes first swaps each time, so neither always follows the other.
        for ours_now in [i % 2 == 0, i % 2 != 0] {
            let t = Instant::now();
            if ours_now {
                ours().await?;
                o.push(t.elapsed());
            } else {
                base().await?;
                b.push(t.elapsed());
            }
        }
    }
    Ok((o, b))
}

/// Runs `op` `n` times and returns each duration.
pub(crate) async fn sample<F, Fut>(n: usize, mut op: F) -> Result<Vec<Duration>, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        op().await?;
        out.push(t.elapsed());
    }
    Ok(out)
}
