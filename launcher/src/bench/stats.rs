//! Summary statistics of one series of timings, Tukey's outlier fences and a bootstrap confidence
//! interval for the ratio of two medians (the speed-up).
//!
//! The bootstrap is written out here: no maintained statistics crate offers a percentile bootstrap
//! of a ratio of medians as a library call (criterion keeps its own internal; statrs has
//! distributions, not resampling), and the whole procedure is a loop over a seeded generator. The
//! seed is fixed, so one set of timings always gives the same interval.

use serde::Serialize;

/// min, quartiles, max, mean and sample standard deviation, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    pub min_ms: f64,
    pub q1_ms: f64,
    pub median_ms: f64,
    pub q3_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub stddev_ms: f64,
    /// stddev / mean: how much the series varies relative to its size.
    pub cv: f64,
}

/// The summary of `xs` (milliseconds); `xs` must not be empty.
pub fn summarize(xs: &[f64]) -> Summary {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    let mean = s.iter().sum::<f64>() / n;
    let var = if s.len() > 1 {
        s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let stddev = var.sqrt();
    Summary {
        min_ms: s[0],
        q1_ms: quantile(&s, 0.25),
        median_ms: quantile(&s, 0.5),
        q3_ms: quantile(&s, 0.75),
        max_ms: s[s.len() - 1],
        mean_ms: mean,
        stddev_ms: stddev,
        cv: if mean > 0.0 { stddev / mean } else { 0.0 },
    }
}

/// The `q` quantile of sorted `s`, interpolated linearly between order statistics.
pub fn quantile(s: &[f64], q: f64) -> f64 {
    let pos = q * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

fn median_sorted(s: &mut [f64]) -> f64 {
    s.sort_by(f64::total_cmp);
    quantile(s, 0.5)
}

/// Indices of the values beyond 1.5 interquartile ranges from the quartiles (Tukey's fences).
pub fn outliers(xs: &[f64]) -> Vec<usize> {
    let s = summarize(xs);
    let iqr = s.q3_ms - s.q1_ms;
    let (lo, hi) = (s.q1_ms - 1.5 * iqr, s.q3_ms + 1.5 * iqr);
    (0..xs.len())
        .filter(|&i| xs[i] < lo || xs[i] > hi)
        .collect()
}

/// A speed-up: median(slow) / median(fast), with a percentile bootstrap interval.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Ratio {
    pub estimate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub confidence: f64,
}

/// median(slow) / median(fast) and its `confidence` interval from `resamples` bootstrap
/// resamples of each series (independently, with replacement).
pub fn ratio_of_medians(slow: &[f64], fast: &[f64], resamples: usize, confidence: f64) -> Ratio {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    let estimate = ratio(
        median_sorted(&mut slow.to_vec()),
        median_sorted(&mut fast.to_vec()),
    );
    let mut rng = SplitMix64(0x7468_6177_2062_656e); // "thaw ben"
    let (mut a, mut b) = (vec![0.0; slow.len()], vec![0.0; fast.len()]);
    let mut ratios = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for x in a.iter_mut() {
            *x = slow[rng.below(slow.len())];
        }
        for x in b.iter_mut() {
            *x = fast[rng.below(fast.len())];
        }
        ratios.push(ratio(median_sorted(&mut a), median_sorted(&mut b)));
    }
    ratios.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    Ratio {
        estimate,
        ci_low: quantile(&ratios, tail),
        ci_high: quantile(&ratios, 1.0 - tail),
        confidence,
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-distributed generator; enough to resample.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n ≥ 1), by Lemire's multiply-shift (bias below 2^-32 for these n).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_known_series() {
        let s = summarize(&[4.0, 1.0, 3.0, 2.0, 5.0]);
        assert_eq!((s.min_ms, s.median_ms, s.max_ms), (1.0, 3.0, 5.0));
        assert_eq!((s.q1_ms, s.q3_ms), (2.0, 4.0));
        assert_eq!(s.mean_ms, 3.0);
        assert!((s.stddev_ms - 2.5f64.sqrt()).abs() < 1e-12);
        let one = summarize(&[7.0]);
        assert_eq!((one.median_ms, one.stddev_ms, one.cv), (7.0, 0.0, 0.0));
    }

    #[test]
    fn tukey_fences_flag_the_far_value_only() {
        assert_eq!(outliers(&[10.0, 11.0, 10.5, 10.2, 30.0, 10.8]), vec![4]);
        assert!(outliers(&[1.0, 2.0, 3.0, 4.0]).is_empty());
    }

    #[test]
    fn bootstrap_interval_contains_the_estimate_and_is_reproducible() {
        let slow = [100.0, 104.0, 98.0, 101.0, 120.0, 99.0, 102.0];
        let fast = [10.0, 10.5, 9.8, 11.0, 10.1, 10.2, 9.9];
        let r = ratio_of_medians(&slow, &fast, 2000, 0.95);
        assert!((r.estimate - 101.0 / 10.1).abs() < 1e-9);
        assert!(r.ci_low <= r.estimate && r.estimate <= r.ci_high, "{r:?}");
        assert!(r.ci_low > 8.0 && r.ci_high < 12.5, "{r:?}");
        assert_eq!(r, ratio_of_medians(&slow, &fast, 2000, 0.95));
    }
}
