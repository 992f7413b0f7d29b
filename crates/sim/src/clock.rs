//! The simulated clock: turmoil's virtual time, with a skew the driver can
//! change mid-run (clock jumps).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use meridian_seams::Clock;

/// Wall time = the simulation's epoch plus virtual elapsed time plus a skew;
/// monotonic time = virtual elapsed time. Both advance only as the
/// simulation does, so a seed replays exactly. Clones share the skew.
#[derive(Debug, Clone)]
pub struct SimClock {
    epoch_ms: u64,
    skew_ms: Arc<AtomicI64>,
}

impl SimClock {
    /// A clock starting at `epoch_ms` (unix ms), `skew_ms` ahead of the truth.
    pub fn new(epoch_ms: u64, skew_ms: i64) -> Self {
        Self {
            epoch_ms,
            skew_ms: Arc::new(AtomicI64::new(skew_ms)),
        }
    }

    /// Makes the wall clock run `skew_ms` ahead (negative: behind) from now
    /// on: a clock jump, forwards or backwards.
    pub fn set_skew(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::SeqCst);
    }

    fn elapsed() -> Duration {
        turmoil::sim_elapsed().unwrap_or_default()
    }
}

impl Clock for SimClock {
    fn wall_millis(&self) -> u64 {
        let skew = self.skew_ms.load(Ordering::SeqCst);
        let now = self.epoch_ms as i64 + Self::elapsed().as_millis() as i64 + skew;
        now.max(0) as u64
    }

    fn monotonic(&self) -> Duration {
        Self::elapsed()
    }
}
