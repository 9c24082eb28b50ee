//! The storm's arithmetic, pure: latency samples and their exact quantiles, rates, and
//! repeated idempotency keys.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;

/// Most latency samples kept per series (a sample is 8 bytes); later ones are counted only.
pub const SAMPLES_MAX: usize = 4_000_000;

/// Latencies, every one kept (up to [`SAMPLES_MAX`]), in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    micros: Vec<u64>,
    /// Samples past the bound, not kept.
    dropped: u64,
}

/// The quantiles of a series, by nearest rank on every sample: exact, not estimated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Samples {
    pub fn push(&mut self, took: Duration) {
        if self.micros.len() < SAMPLES_MAX {
            self.micros
                .push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        } else {
            self.dropped += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// `None` when there is no sample.
    pub fn quantiles(&self) -> Option<Quantiles> {
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        let ms = |p: f64| nearest_rank(&sorted, p).map(|us| us as f64 / 1_000.0);
        Some(Quantiles {
            count: sorted.len() as u64,
            p50_ms: ms(50.0)?,
            p99_ms: ms(99.0)?,
            max_ms: ms(100.0)?,
        })
    }
}

/// The `p`-th percentile (0 < p ≤ 100) of sorted values by nearest rank: the smallest value
/// with at least p% of the values at or below it. `None` for no values.
pub fn nearest_rank(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() || p.is_nan() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// How many keys are repeats of a key seen before (`n` copies of one key count `n - 1`).
pub fn repeats<'a>(keys: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut seen = HashSet::new();
    keys.into_iter().filter(|k| !seen.insert(*k)).count() as u64
}

/// `count` per second over `over`; `None` over no time.
pub fn per_sec(count: u64, over: Duration) -> Option<f64> {
    let secs = over.as_secs_f64();
    (secs > 0.0).then(|| count as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_the_nearest_rank_of_every_sample() {
        let one_to_hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&one_to_hundred, 50.0), Some(50));
        assert_eq!(nearest_rank(&one_to_hundred, 99.0), Some(99));
        assert_eq!(nearest_rank(&one_to_hundred, 100.0), Some(100));
        assert_eq!(nearest_rank(&one_to_hundred, 0.0), Some(1));
        assert_eq!(nearest_rank(&[7], 99.0), Some(7));
        assert_eq!(nearest_rank(&[], 50.0), None);
        assert_eq!(nearest_rank(&[1, 2, 3], f64::NAN), None);
        // Ten values: p50 is the 5th, p99 the 10th (ceil(9.9)).
        let ten = [10, 20, 30, 40, 50, 60, 70, 80, 90, 1_000];
        assert_eq!(nearest_rank(&ten, 50.0), Some(50));
        assert_eq!(nearest_rank(&ten, 99.0), Some(1_000));
        // 1,000 values: p99 is the 990th, one slow outlier does not move it.
        let mut thousand: Vec<u64> = (1..=999).collect();
        thousand.push(1_000_000);
        assert_eq!(nearest_rank(&thousand, 99.0), Some(990));
    }

    #[test]
    fn samples_give_quantiles_in_milliseconds_in_any_order() {
        let mut s = Samples::default();
        assert_eq!(s.quantiles(), None);
        for ms in [5, 1, 4, 2, 3] {
            s.push(Duration::from_millis(ms));
        }
        s.push(Duration::from_micros(1_500));
        let q = s.quantiles().unwrap();
        assert_eq!(q.count, 6);
        assert_eq!(q.p50_ms, 2.0);
        assert_eq!(q.p99_ms, 5.0);
        assert_eq!(q.max_ms, 5.0);
    }

    #[test]
    fn repeated_keys_and_rates_are_counted() {
        assert_eq!(repeats(["a", "b", "c"]), 0);
        assert_eq!(repeats(["a", "b", "a", "a", "b"]), 3);
        assert_eq!(repeats(std::iter::empty()), 0);
        assert_eq!(per_sec(10, Duration::from_millis(500)), Some(20.0));
        assert_eq!(per_sec(10, Duration::ZERO), None);
    }
}
