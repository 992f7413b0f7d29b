//! The simulated clock: turmoil's virtual time, optionally skewed per host.

use std::time::Duration;

use meridian_seams::Clock;

/// Wall time = the simulation's epoch plus virtual elapsed time plus a skew;
/// monotonic time = virtual elapsed time. Both advance only as the
/// simulation does, so a seed replays exactly.
#[derive(Debug, Clone)]
pub struct SimClock {
    epoch_ms: u64,
    skew_ms: i64,
}

impl SimClock {
    /// A clock starting at `epoch_ms` (unix ms), `skew_ms` ahead of the truth.
    pub fn new(epoch_ms: u64, skew_ms: i64) -> Self {
        Self { epoch_ms, skew_ms }
    }

    fn elapsed() -> Duration {
        turmoil::sim_elapsed().unwrap_or_default()
    }
}

impl Clock for SimClock {
    fn wall_millis(&self) -> u64 {
        let now = self.epoch_ms as i64 + Self::elapsed().as_millis() as i64 + self.skew_ms;
        now.max(0) as u64
    }

    fn monotonic(&self) -> Duration {
        Self::elapsed()
    }
}
