//! The gateway's rate limits: token buckets on the injected clock, per
//! device and per client address.

use meridian_seams::SharedClock;
use meridian_seams::limit::RateLimiter;

use crate::GatewayConfig;

/// Every limiter of a gateway.
pub(crate) struct Limits {
    /// Sends and receipt frames, per device.
    pub(crate) sends: RateLimiter,
    /// Authenticated REST requests, per device.
    pub(crate) requests: RateLimiter,
    pub(crate) connects: RateLimiter,
    pub(crate) registrations: RateLimiter,
    /// Failed authentications, per client address.
    pub(crate) auth_failures: RateLimiter,
    /// WebSocket upgrades, for the whole gateway (one key).
    pub(crate) accepts: RateLimiter,
    /// Upgrades refused so far: spreads the waits they are told.
    pub(crate) refused: std::sync::atomic::AtomicU64,
}

/// The most a refused upgrade is told to wait beyond the bucket's own
/// refill: refusals spread over this long come back spread too.
const REFUSAL_SPREAD_MS: u64 = 2_000;

impl Limits {
    /// Takes one upgrade from the gateway's bucket, or says how long this
    /// client should wait: the refill time plus its own share of a spread,
    /// so a storm refused together does not return together.
    pub(crate) fn accept(&self) -> Result<(), std::time::Duration> {
        self.accepts.take("gateway", 1.0).map_err(|refill| {
            let nth = self
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // A stride coprime with the spread visits every millisecond.
            let share = nth.wrapping_mul(7_919) % REFUSAL_SPREAD_MS;
            refill + std::time::Duration::from_millis(share)
        })
    }

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
                clock.clone(),
            ),
            auth_failures: RateLimiter::new(
                config.auth_failures_per_minute / 60.0,
                config.auth_failures_per_minute.max(1.0),
                clock.clone(),
            ),
            accepts: RateLimiter::new(
                config.accepts_per_second,
                config.accept_burst.max(1.0),
                clock,
            ),
            refused: std::sync::atomic::AtomicU64::new(0),
        }
    }
}
