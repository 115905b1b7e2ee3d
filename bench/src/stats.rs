//! The arithmetic of a fair comparison, kept apart from sockets so it can be tested alone:
//! medians and spreads over rounds, percentiles of latency samples, how evenly a server shared
//! itself among its connections, which native did better in a round, and one definition of
//! "ratio" so that ≥ 1 always reads "the guest is as good as native or better".

use serde::Serialize;

/// Which direction of a figure is good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Throughputs: more per second is better.
    Higher,
    /// Times and memory: less is better.
    Lower,
}

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let sorted = sorted(values);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The smallest and largest of `values`; `None` if empty.
pub fn spread(values: &[f64]) -> Option<[f64; 2]> {
    let sorted = sorted(values);
    Some([*sorted.first()?, *sorted.last()?])
}

/// The `p`-th percentile (0 < p ≤ 100) of already sorted samples, by the nearest-rank method:
/// the smallest sample that at least `p` percent of the samples do not exceed.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Guest against native such that ≥ 1 means the guest is as good or better: guest/native when
/// higher is better, native/guest when lower is better. `None` when either side is missing or
/// the division would be by zero.
pub fn ratio(better: Better, guest: Option<f64>, native: Option<f64>) -> Option<f64> {
    let (guest, native) = (guest?, native?);
    let (num, den) = match better {
        Better::Higher => (guest, native),
        Better::Lower => (native, guest),
    };
    (den > 0.0 && num.is_finite() && den.is_finite()).then(|| num / den)
}

/// How evenly connections were served: the mean round trips of the slowest tenth of the
/// connections (at least one) over the median connection's. 1 is perfectly even; a server
/// that starves some clients scores near 0. `None` with no connections or a median of 0.
pub fn fairness(per_connection: &[u64]) -> Option<f64> {
    let counts: Vec<f64> = per_connection.iter().map(|&n| n as f64).collect();
    let median = median(&counts).filter(|m| *m > 0.0)?;
    let slowest = sorted(&counts);
    let tenth = slowest.len().div_ceil(10);
    let mean = slowest[..tenth].iter().sum::<f64>() / tenth as f64;
    Some(mean / median)
}

/// The index of the best of `values` (the highest or the lowest by `better`); the first of
/// equals wins, missing values never do. `None` when all are missing.
pub fn best(better: Better, values: &[Option<f64>]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, value) in values.iter().enumerate() {
        let Some(v) = value.filter(|v| !v.is_nan()) else {
            continue;
        };
        let wins = match (best, better) {
            (None, _) => true,
            (Some((_, b)), Better::Higher) => v > b,
            (Some((_, b)), Better::Lower) => v < b,
        };
        if wins {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0), "NaN is not a sample");
    }

    #[test]
    fn spread_is_min_and_max() {
        assert_eq!(spread(&[5.0, 1.0, 9.0, 3.0]), Some([1.0, 9.0]));
        assert_eq!(spread(&[2.0]), Some([2.0, 2.0]));
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50));
        assert_eq!(percentile(&samples, 99.0), Some(99));
        assert_eq!(percentile(&samples, 100.0), Some(100));
        assert_eq!(percentile(&[42], 99.0), Some(42));
        assert_eq!(percentile(&[1, 2], 50.0), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn ratio_at_least_one_means_guest_as_good_or_better() {
        // Throughput: the guest does half as many round trips.
        assert_eq!(ratio(Better::Higher, Some(50.0), Some(100.0)), Some(0.5));
        // Start time: the guest takes twice as long.
        assert_eq!(ratio(Better::Lower, Some(20.0), Some(10.0)), Some(0.5));
        // Memory: the guest uses less.
        assert_eq!(ratio(Better::Lower, Some(1.0), Some(4.0)), Some(4.0));
        assert_eq!(ratio(Better::Higher, Some(3.0), Some(3.0)), Some(1.0));
    }

    #[test]
    fn fairness_is_the_slowest_tenth_over_the_median() {
        // Even: every connection did as much as the median.
        assert_eq!(fairness(&[100; 64]), Some(1.0));
        // 20 connections: the slowest tenth is the two slowest (10 and 30, mean 20); the
        // median is (100 + 100) / 2.
        let mut counts = vec![100u64; 18];
        counts.extend([10, 30]);
        assert_eq!(fairness(&counts), Some(0.2));
        // The spike's starved 0.3 echo, by connection order: one connection got nearly all.
        let starved = [10732, 994, 231, 116, 64, 45, 42, 77];
        // Eight connections: the slowest tenth is one connection (42); median (77+116)/2.
        assert_eq!(fairness(&starved), Some(42.0 / 96.5));
        // Fewer than ten connections: the slowest one alone.
        assert_eq!(fairness(&[5, 10, 20]), Some(0.5));
        assert_eq!(fairness(&[7]), Some(1.0));
        assert_eq!(fairness(&[]), None);
        assert_eq!(
            fairness(&[0, 0, 3]),
            None,
            "median 0: nothing to compare with"
        );
        // Order does not matter.
        assert_eq!(fairness(&[30, 100, 10, 100]), fairness(&[100, 10, 100, 30]));
    }

    #[test]
    fn the_best_value_by_direction() {
        assert_eq!(best(Better::Higher, &[Some(1.0), Some(2.0)]), Some(1));
        assert_eq!(best(Better::Lower, &[Some(1.0), Some(2.0)]), Some(0));
        assert_eq!(best(Better::Higher, &[None, Some(0.5)]), Some(1));
        assert_eq!(best(Better::Lower, &[Some(3.0), None]), Some(0));
        assert_eq!(
            best(Better::Higher, &[Some(2.0), Some(2.0)]),
            Some(0),
            "ties: first"
        );
        assert_eq!(best(Better::Higher, &[Some(f64::NAN), Some(1.0)]), Some(1));
        assert_eq!(best(Better::Higher, &[None, None]), None);
    }

    #[test]
    fn ratio_without_a_side_or_of_zero_is_none() {
        assert_eq!(ratio(Better::Higher, None, Some(1.0)), None);
        assert_eq!(ratio(Better::Higher, Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(Better::Lower, Some(0.0), Some(1.0)), None);
        assert_eq!(ratio(Better::Higher, Some(0.0), Some(1.0)), Some(0.0));
    }
}
