//! Messages a second over the last minute, from a ring of per-second counts. Pure: callers
//! pass the time.

use std::time::Instant;

/// Seconds the rate is averaged over.
const WINDOW: usize = 60;

/// Counts of the last `WINDOW` seconds.
#[derive(Debug, Clone)]
pub struct Rate {
    start: Instant,
    /// Count of each second, at index `second % WINDOW`.
    buckets: [u64; WINDOW],
    /// The latest second (since `start`) counted into `buckets`.
    second: u64,
}

impl Rate {
    /// An empty rate, counting seconds from `now`.
    pub fn new(now: Instant) -> Rate {
        Rate {
            start: now,
            buckets: [0; WINDOW],
            second: 0,
        }
    }

    /// Counts `n` events at `now`.
    pub fn record(&mut self, n: u64, now: Instant) {
        let second = self.advance(now);
        self.buckets[second as usize % WINDOW] += n;
    }

    /// Events a second over the last minute up to `now`.
    pub fn per_second(&mut self, now: Instant) -> f64 {
        self.advance(now);
        self.buckets.iter().sum::<u64>() as f64 / WINDOW as f64
    }

    /// Empties the seconds between the last counted one and `now`'s; returns `now`'s.
    fn advance(&mut self, now: Instant) -> u64 {
        let second = now.saturating_duration_since(self.start).as_secs();
        if second > self.second {
            let passed = (second - self.second).min(WINDOW as u64);
            for s in second + 1 - passed..=second {
                self.buckets[s as usize % WINDOW] = 0;
            }
            self.second = second;
        }
        self.second
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn averages_the_last_minute_and_forgets_older_seconds() {
        let t0 = Instant::now();
        let mut rate = Rate::new(t0);
        rate.record(60, t0);
        rate.record(60, t0 + Duration::from_secs(30));
        assert_eq!(rate.per_second(t0 + Duration::from_secs(59)), 2.0);
        // The first second's 60 fall out of the window; the 30th's stay.
        assert_eq!(rate.per_second(t0 + Duration::from_secs(60)), 1.0);
        assert_eq!(rate.per_second(t0 + Duration::from_secs(1000)), 0.0);
        rate.record(6, t0 + Duration::from_secs(1000));
        assert_eq!(rate.per_second(t0 + Duration::from_secs(1001)), 0.1);
    }
}
