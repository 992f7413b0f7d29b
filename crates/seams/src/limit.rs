//! Token buckets by key on the injected clock: the rate limits of gateways
//! (per device, per address) and cores (fan-out per user).
//!
//! Keys spread over shards, each behind its own lock, so one busy key does
//! not serialize every other. A shard forgets the buckets that refilled
//! completely (they carry no state) when it grows past its share of
//! [`MAX_KEYS`], at most once per second: a flood of new keys costs a
//! bounded sweep, not one per call.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use crate::SharedClock;

/// Keys a limiter keeps before it sweeps full buckets.
pub const MAX_KEYS: usize = 100_000;
/// Shards of a limiter.
const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Duration,
}

#[derive(Default)]
struct Shard {
    buckets: HashMap<String, Bucket>,
    swept_at: Option<Duration>,
}

/// Token buckets: `rate` tokens per second up to `burst`, per key.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    clock: SharedClock,
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<Shard>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `rate_per_second` sustained, `burst` at once (at least 1).
    pub fn new(rate_per_second: f64, burst: f64, clock: SharedClock) -> Self {
        Self {
            rate: rate_per_second.max(0.0),
            burst: burst.max(1.0),
            clock,
            hasher: std::collections::hash_map::RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Takes one token for `key`; `false` means "over the limit".
    pub fn allow(&self, key: &str) -> bool {
        self.take(key, 1.0).is_ok()
    }

    /// Takes `cost` tokens for `key` (a cost above the burst counts as the
    /// burst, so a large request is possible at all); on refusal, how
    /// long until it would be allowed.
    ///
    /// # Errors
    /// The wait, when `key` has too few tokens.
    pub fn take(&self, key: &str, cost: f64) -> Result<(), Duration> {
        self.spend(key, cost, true)
    }

    /// Whether `key` has `cost` tokens, taking none: how long to wait if
    /// not.
    ///
    /// # Errors
    /// The wait, when `key` has too few tokens.
    pub fn peek(&self, key: &str, cost: f64) -> Result<(), Duration> {
        self.spend(key, cost, false)
    }

    fn spend(&self, key: &str, cost: f64, consume: bool) -> Result<(), Duration> {
        let cost = cost.clamp(0.0, self.burst);
        let now = self.clock.monotonic();
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        self.sweep(&mut shard, now);
        let bucket = shard.buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.saturating_sub(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= cost {
            if consume {
                bucket.tokens -= cost;
            }
            return Ok(());
        }
        let missing = cost - bucket.tokens;
        let wait = if self.rate > 0.0 {
            Duration::from_secs_f64((missing / self.rate).min(86_400.0))
        } else {
            Duration::from_secs(86_400)
        };
        Err(wait.max(Duration::from_millis(1)))
    }

    /// Forgets the full buckets of a shard past its share of keys, at most
    /// once a second.
    fn sweep(&self, shard: &mut Shard, now: Duration) {
        if shard.buckets.len() <= MAX_KEYS / SHARDS
            || shard
                .swept_at
                .is_some_and(|at| now.saturating_sub(at) < Duration::from_secs(1))
        {
            return;
        }
        shard.swept_at = Some(now);
        let (rate, burst) = (self.rate, self.burst);
        shard
            .buckets
            .retain(|_, b| b.tokens + now.saturating_sub(b.at).as_secs_f64() * rate < burst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn buckets_refill_at_their_rate_and_say_how_long_to_wait() {
        let clock = Arc::new(ManualClock::new(0));
        let limiter = RateLimiter::new(2.0, 3.0, clock.clone());
        assert!((0..3).all(|_| limiter.allow("d")));
        assert_eq!(limiter.take("d", 1.0), Err(Duration::from_millis(500)));
        assert!(limiter.allow("other"), "keys are independent");
        assert!(limiter.peek("other", 2.0).is_ok());
        assert!(limiter.peek("other", 2.0).is_ok(), "a peek takes nothing");
        clock.advance(Duration::from_millis(500));
        assert!(limiter.allow("d"));
        assert!(!limiter.allow("d"));
    }

    #[test]
    fn costs_weigh_and_a_cost_over_the_burst_takes_the_burst() {
        let clock = Arc::new(ManualClock::new(0));
        let limiter = RateLimiter::new(10.0, 100.0, clock.clone());
        assert!(limiter.take("u", 60.0).is_ok());
        assert_eq!(limiter.take("u", 60.0), Err(Duration::from_secs(2)));
        clock.advance(Duration::from_secs(2));
        assert!(limiter.take("u", 60.0).is_ok());
        clock.advance(Duration::from_secs(100));
        assert!(
            limiter.take("u", 1_000.0).is_ok(),
            "a fan-out over the burst is possible"
        );
    }
}
