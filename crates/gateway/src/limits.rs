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
                clock.clone(),
            ),
            auth_failures: RateLimiter::new(
                config.auth_failures_per_minute / 60.0,
                config.auth_failures_per_minute.max(1.0),
                clock,
            ),
        }
    }
}
