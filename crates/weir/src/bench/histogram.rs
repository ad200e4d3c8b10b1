//! A latency histogram with bounded relative error (log-linear buckets, as HdrHistogram): each
//! power of two is split in [`SUB_BUCKETS`] equal parts, so a recorded value is off by at most
//! 1/64 (1.6 %). Values are nanoseconds; memory is fixed (64 × 64 counters).

/// Buckets per power of two.
const SUB_BUCKETS: u64 = 64;
const SUB_BITS: u32 = 6;

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    min: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: vec![0; 64 * SUB_BUCKETS as usize],
            total: 0,
            max: 0,
            min: u64::MAX,
        }
    }
}

fn index(value: u64) -> usize {
    if value < SUB_BUCKETS {
        return value as usize;
    }
    let power = 63 - value.leading_zeros(); // >= SUB_BITS
    let shift = power - SUB_BITS;
    let sub = (value >> shift) - SUB_BUCKETS; // 0..SUB_BUCKETS
    ((u64::from(shift) + 1) * SUB_BUCKETS + sub) as usize
}

/// The highest value that falls in bucket `i` (what a percentile reports: never optimistic).
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB_BUCKETS {
        return i;
    }
    let shift = i / SUB_BUCKETS - 1;
    let sub = i % SUB_BUCKETS;
    ((SUB_BUCKETS + sub + 1) << shift) - 1
}

impl Histogram {
    pub fn record(&mut self, nanos: u64) {
        let i = index(nanos).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
        self.max = self.max.max(nanos);
        self.min = self.min.min(nanos);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.min = self.min.min(other.min);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the smallest bucket bound with at least that share
    /// of the values at or below it, capped by the largest value seen.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return upper(i).min(self.max).max(self.min);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_with_small_relative_error() {
        for value in (0..100_000u64).chain([1 << 20, 123_456_789, u64::MAX / 3]) {
            let i = index(value);
            assert!(
                upper(i) >= value,
                "{value} above its bucket's bound {}",
                upper(i)
            );
            let lower = if i == 0 { 0 } else { upper(i - 1) + 1 };
            assert!(lower <= value, "{value} below its bucket {i}");
            assert!((upper(i) - lower) as f64 <= value as f64 / 64.0 + 1.0);
        }
    }

    #[test]
    fn quantiles_match_a_sorted_list() {
        let mut h = Histogram::default();
        let values: Vec<u64> = (1..=10_000u64).map(|v| v * 1_000).collect();
        for v in &values {
            h.record(*v);
        }
        for q in [0.5, 0.99, 0.999, 1.0] {
            let exact = values[((q * 10_000.0) as usize).max(1) - 1];
            let got = h.quantile(q);
            assert!(
                got >= exact && got as f64 <= exact as f64 * 1.02,
                "q {q}: {got} vs {exact}"
            );
        }
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert_eq!(h.count(), 10_000);
    }
}
