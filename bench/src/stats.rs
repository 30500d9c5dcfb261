//! Percentiles and rates, from plain sorted vectors: a few million samples sort in well under
//! a second, so a histogram crate would not earn its keep.

use serde_json::{json, Value};

/// Latency percentiles of a set of samples in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Percentiles {
    /// Sorts `samples_ns` and reads the percentiles (nearest rank); all zero when empty.
    pub fn of(samples_ns: &mut [u64]) -> Percentiles {
        samples_ns.sort_unstable();
        let n = samples_ns.len();
        let at = |q: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            samples_ns[rank - 1] as f64 / 1000.0
        };
        let mean = if n == 0 {
            0.0
        } else {
            samples_ns.iter().map(|&s| s as f64).sum::<f64>() / n as f64 / 1000.0
        };
        Percentiles {
            count: n,
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: at(1.0),
            mean_us: mean,
        }
    }

    /// The percentiles as JSON fields (microseconds, rounded to 0.1).
    pub fn json(&self) -> Value {
        json!({
            "samples": self.count,
            "p50_us": round1(self.p50_us),
            "p90_us": round1(self.p90_us),
            "p99_us": round1(self.p99_us),
            "p999_us": round1(self.p999_us),
            "max_us": round1(self.max_us),
            "mean_us": round1(self.mean_us),
        })
    }
}

/// `count` per second over `ns` nanoseconds, rounded to a whole number.
pub fn per_s(count: u64, ns: u64) -> f64 {
    if ns == 0 {
        return 0.0;
    }
    (count as f64 * 1e9 / ns as f64).round()
}

/// Rounds to one decimal, for JSON that reads at a glance.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Rounds to two decimals.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Merges JSON objects: fields of `extra` are added to `base`.
pub fn merge(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        b.extend(e);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=1000).rev().map(|i| i * 1000).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50_us, p.p99_us, p.max_us), (500.0, 990.0, 1000.0));
        assert_eq!(Percentiles::of(&mut []).p99_us, 0.0);
        assert_eq!(per_s(10, 1_000_000_000), 10.0);
    }
}
