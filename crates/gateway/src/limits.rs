//! Per-device rate limits: token buckets on the injected clock.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use meridian_seams::SharedClock;

use crate::GatewayConfig;

/// A token bucket: `rate` tokens per second up to `burst`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Duration,
}

/// Token buckets by key, forgotten when full (idle keys cost nothing).
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    clock: SharedClock,
    buckets: Mutex<BTreeMap<String, Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(rate_per_second: f64, burst: f64, clock: SharedClock) -> Self {
        Self {
            rate: rate_per_second,
            burst: burst.max(1.0),
            clock,
            buckets: Mutex::new(BTreeMap::new()),
        }
    }

    /// Takes one token for `key`; `false` means "over the limit".
    pub(crate) fn allow(&self, key: &str) -> bool {
        let now = self.clock.monotonic();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 100_000 {
            // Drop buckets that have refilled completely: they carry no state.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + (now - b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.saturating_sub(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Every limiter of a gateway.
pub(crate) struct Limits {
    /// Sends and receipt frames, per device.
    pub(crate) sends: RateLimiter,
    /// Authenticated REST requests, per device.
    pub(crate) requests: RateLimiter,
    pub(crate) connects: RateLimiter,
    pub(crate) registrations: RateLimiter,
}

impl Limits {
    pub(crate) fn new(config: &GatewayConfig, clock: SharedClock) -> Self {
        Self {
            sends: RateLimiter::new(config.sends_per_second, config.send_burst, clock.clone()),
            requests: RateLimiter::new(
                config.requests_per_second,
                config.request_burst,
                clock.clone(),
            ),
            connects: RateLimiter::new(
                config.connects_per_minute / 60.0,
                config.connects_per_minute.max(1.0),
                clock.clone(),
            ),
            registrations: RateLimiter::new(
                config.registrations_per_minute / 60.0,
                config.registrations_per_minute.max(1.0),
                clock,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meridian_seams::clock::ManualClock;

    use super::*;

    #[test]
    fn bucket_refuses_past_burst_and_refills() {
        let clock = Arc::new(ManualClock::new(0));
        let limiter = RateLimiter::new(2.0, 3.0, clock.clone());
        assert!((0..3).all(|_| limiter.allow("d")));
        assert!(!limiter.allow("d"));
        assert!(limiter.allow("other"), "keys are independent");
        clock.advance(Duration::from_millis(500));
        assert!(limiter.allow("d"));
        assert!(!limiter.allow("d"));
    }
}
