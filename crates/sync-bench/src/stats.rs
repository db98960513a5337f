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
