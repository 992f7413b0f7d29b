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
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: std::sync::atomic::AtomicU64,
}

impl ManualClock {
    /// A manual clock reading `wall_millis` on both scales.
    pub fn new(wall_millis: u64) -> Self {
        Self {
            millis: std::sync::atomic::AtomicU64::new(wall_millis),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.millis
            .fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn wall_millis(&self) -> u64 {
        self.millis.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.wall_millis())
    }
}
