//! The injected clock.

use std::sync::Arc;
use std::time::Duration;

/// Wall time and monotonic time, injected everywhere logic needs "now".
///
/// Wall time is for timestamps that leave the process (HLC physical part,
/// retention cut-offs, "last seen"); monotonic time is for measuring
/// elapsed durations (transaction age, rate limits, timeouts).
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn wall_millis(&self) -> u64;
    /// Time elapsed since an arbitrary, fixed origin; never goes backwards.
    fn monotonic(&self) -> Duration;
}

/// A clock shared between components.
pub type SharedClock = Arc<dyn Clock>;

/// The real clock: the operating system's wall clock and tokio's monotonic
/// instant (which the simulation's runtime also drives, so `monotonic` works
/// under both).
#[derive(Debug)]
pub struct SystemClock {
    origin: tokio::time::Instant,
    /// Added to the wall clock; lets a test or a chaos run skew one region.
    skew_millis: std::sync::atomic::AtomicI64,
}

impl SystemClock {
    /// A clock reading the system's time.
    #[allow(clippy::disallowed_methods)] // this is the seam
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            skew_millis: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// A clock whose wall time runs `skew_millis` ahead (negative: behind).
    pub fn with_skew(skew_millis: i64) -> Self {
        let clock = Self::new();
        clock.set_skew_millis(skew_millis);
        clock
    }

    /// Moves the wall clock to run `skew_millis` ahead of the system's
    /// (negative: behind), as a clock that jumped would.
    pub fn set_skew_millis(&self, skew_millis: i64) {
        self.skew_millis
            .store(skew_millis, std::sync::atomic::Ordering::Relaxed);
    }

    /// The shared form most constructors take.
    pub fn shared() -> SharedClock {
        Arc::new(Self::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // this is the seam
    fn wall_millis(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        now.saturating_add(self.skew_millis.load(std::sync::atomic::Ordering::Relaxed))
            .max(0) as u64
    }

    #[allow(clippy::disallowed_methods)] // this is the seam
    fn monotonic(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.origin)
    }
}

/// A clock that only moves when told to: for unit tests of time-dependent rules.
///
/// [`ManualClock::advance`] moves both scales (time passing);
/// [`ManualClock::jump_wall`] moves the wall clock alone (a clock that was
/// set, as a VM restore, a bad RTC or an NTP step would).
#[derive(Debug, Default)]
pub struct ManualClock {
    /// Monotonic milliseconds (also the wall time, before any jump).
    millis: std::sync::atomic::AtomicU64,
    /// Added to `millis` for the wall time only.
    wall_offset_millis: std::sync::atomic::AtomicI64,
}

impl ManualClock {
    /// A manual clock reading `wall_millis` on both scales.
    pub fn new(wall_millis: u64) -> Self {
        Self {
            millis: std::sync::atomic::AtomicU64::new(wall_millis),
            wall_offset_millis: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Moves the clock forward: wall and monotonic time both pass `by`.
    pub fn advance(&self, by: Duration) {
        self.millis
            .fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the wall clock alone by `by_millis` (negative: backwards);
    /// monotonic time does not move.
    pub fn jump_wall(&self, by_millis: i64) {
        self.wall_offset_millis
            .fetch_add(by_millis, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn wall_millis(&self) -> u64 {
        let millis = self.millis.load(std::sync::atomic::Ordering::SeqCst) as i64;
        millis
            .saturating_add(
                self.wall_offset_millis
                    .load(std::sync::atomic::Ordering::SeqCst),
            )
            .max(0) as u64
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.millis.load(std::sync::atomic::Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_jump_leaves_monotonic_time_alone() {
        let clock = ManualClock::new(1_000);
        clock.advance(Duration::from_millis(500));
        assert_eq!(clock.wall_millis(), 1_500);
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
        clock.jump_wall(10_000);
        assert_eq!(clock.wall_millis(), 11_500);
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
        clock.jump_wall(-20_000);
        assert_eq!(clock.wall_millis(), 0, "the wall clock stops at the epoch");
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
    }
}
