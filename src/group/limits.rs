//! A group server's limits: message size, each sender's rate, members per group, live
//! connections, presence pushes and unread answers. Pure: the rate limiter takes the time from
//! its caller.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::backlog::Budget;
use crate::peers::PeerCaps;
use crate::protocol;

/// What a group server allows. Every limit answers with LIMITED (or TOO_LARGE) and a reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Longest message text, in bytes; at most [`protocol::MAX_TEXT`].
    pub max_text: usize,
    /// Messages per second a sender may send, with bursts of twice that; `None` is no limit.
    /// A sender is a key with security; without, a connection and, apart, its IP address.
    pub rate: Option<u32>,
    /// Members per group.
    pub max_members: usize,
    /// Connections receiving live messages, over all groups.
    pub max_connections: usize,
    /// User names one key may hold on the server, with security: so one peer cannot fill a
    /// group's member cap (members stay members, even across a restart).
    pub max_names_per_key: usize,
    /// User names one IP address may make members on the server, without security: so one
    /// peer cannot fill a group's member cap. High, for many users behind one address (a
    /// shared machine, a NAT); loopback is an address like any other.
    pub max_names_per_address: usize,
    /// PRESENCE pushes per second per group, with bursts of twice that; past it joins and
    /// leaves go unannounced (MEMBERS still shows them), so a storm of N joins costs O(N)
    /// pushes, not N²/2. `None` is no limit.
    pub presence_rate: Option<u32>,
    /// Unread answers a peer, and all peers, may leave before large requests are refused.
    pub backlog: Budget,
    /// Connections per IP address and in all, and how long one may stay without a request.
    pub peers: PeerCaps,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_text: protocol::MAX_TEXT,
            rate: None,
            max_members: 10_000,
            max_connections: 10_000,
            max_names_per_key: 16,
            max_names_per_address: 64,
            presence_rate: Some(10),
            backlog: Budget::default(),
            peers: PeerCaps::default(),
        }
    }
}

/// Token buckets, one per user: a user may send `rate` messages a second on average, and up
/// to `2 × rate` at once after a pause.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<String, Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// Takes one token for `user`; `false` when the user is over the rate.
    pub fn allow(&mut self, user: &str, rate: u32, now: Instant) -> bool {
        self.allow_n(user, rate, 1, now)
    }

    /// Takes `n` tokens for `user` (a batch of `n` messages), or none when fewer are left:
    /// `false` then. A batch larger than the burst never passes.
    pub fn allow_n(&mut self, user: &str, rate: u32, n: usize, now: Instant) -> bool {
        self.allow_all(&[user.to_string()], rate, n, now)
    }

    /// Takes `n` tokens from every one of `keys`' buckets, or none when any has fewer: `false`
    /// then. A sender known by a connection and an address is held to both.
    pub fn allow_all(&mut self, keys: &[String], rate: u32, n: usize, now: Instant) -> bool {
        let burst = f64::from(rate) * 2.0;
        for key in keys {
            let bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
                tokens: burst,
                last: now,
            });
            let refill = now.saturating_duration_since(bucket.last).as_secs_f64() * f64::from(rate);
            bucket.tokens = (bucket.tokens + refill).min(burst);
            bucket.last = now;
        }
        let n = n as f64;
        if keys.iter().any(|k| self.buckets[k].tokens < n) {
            return false;
        }
        for key in keys {
            if let Some(bucket) = self.buckets.get_mut(key) {
                bucket.tokens -= n;
            }
        }
        true
    }

    /// Forgets users idle long enough to have a full bucket again (bounds the memory).
    pub fn forget_idle(&mut self, now: Instant, idle: Duration) {
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_a_burst_then_the_rate_and_others_are_unaffected() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::default();
        let sent = (0..100)
            .filter(|_| limiter.allow("flooder", 10, t0))
            .count();
        assert_eq!(sent, 20, "a burst of twice the rate");
        assert!(
            limiter.allow("alice", 10, t0),
            "another user has her own bucket"
        );
        let later = t0 + Duration::from_millis(500);
        let sent = (0..100)
            .filter(|_| limiter.allow("flooder", 10, later))
            .count();
        assert_eq!(sent, 5, "half a second at 10/s");
        assert!(
            !limiter.allow_n("bob", 10, 21, t0),
            "a batch over the burst of 20"
        );
        assert!(limiter.allow_n("bob", 10, 15, t0));
        assert!(
            !limiter.allow_n("bob", 10, 6, t0),
            "only 5 left: the batch takes none"
        );
        assert!(limiter.allow_n("bob", 10, 5, t0));
        let both = ["conn a".to_string(), "addr 1.2.3.4".to_string()];
        assert!(limiter.allow_all(&both, 10, 20, t0));
        let other_conn = ["conn b".to_string(), "addr 1.2.3.4".to_string()];
        assert!(
            !limiter.allow_all(&other_conn, 10, 1, t0),
            "a new connection from the same address shares its bucket"
        );
        assert!(
            limiter.allow_n("conn b", 10, 20, t0),
            "and took nothing from its own"
        );
        limiter.forget_idle(later + Duration::from_secs(60), Duration::from_secs(10));
        assert!(limiter.buckets.is_empty());
    }
}
