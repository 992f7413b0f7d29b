//! The hybrid logical clock of a core, on hlc-gen driven by the injected clock.

use std::sync::Mutex;

use hlc_gen::{HlcGenerator, HlcTimestamp};
use meridian_seams::SharedClock;

/// An HLC stamp refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HlcError {
    /// The stamp is further ahead of local time than the maximum clock offset.
    #[error("timestamp {ahead_ms} ms ahead of local time exceeds the {max_ms} ms maximum offset")]
    TooFarAhead {
        /// How far ahead.
        ahead_ms: u64,
        /// The configured maximum.
        max_ms: u64,
    },
    /// The stamp does not decode to a valid time.
    #[error("malformed timestamp")]
    Malformed,
}

/// Number of logical-counter bits in hlc-gen's `u64` form.
const LOGICAL_BITS: u32 = 22;
/// hlc-gen's epoch (2024-01-01T00:00:00Z), unix ms.
const HLC_EPOCH_MS: u64 = 1_704_067_200_000;

/// The HLC: every message a core accepts gets `next()`, and every timestamp
/// a core receives (from a client's last-seen or another region) is merged
/// with `observe()` first, so causally later events get larger stamps.
///
/// hlc-gen reads its physical time from a manual source, which this type
/// sets from the injected [`meridian_seams::Clock`] under one lock so the
/// set-then-stamp pair is atomic.
pub struct Hlc {
    clock: SharedClock,
    generator: Mutex<HlcGenerator<hlc_gen::source::ManualClock>>,
    max_offset_ms: u64,
}

impl std::fmt::Debug for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hlc")
            .field("max_offset_ms", &self.max_offset_ms)
            .finish()
    }
}

/// The unix milliseconds of an HLC stamp.
pub fn physical_ms(stamp: u64) -> u64 {
    (stamp >> LOGICAL_BITS) + HLC_EPOCH_MS
}

/// The smallest stamp at unix time `unix_ms`.
pub fn stamp_at(unix_ms: u64) -> u64 {
    unix_ms.saturating_sub(HLC_EPOCH_MS) << LOGICAL_BITS
}

impl Hlc {
    /// A clock refusing stamps more than `max_offset_ms` ahead of `clock`.
    pub fn new(clock: SharedClock, max_offset_ms: u64) -> Self {
        let generator = HlcGenerator::manual(max_offset_ms as usize);
        generator.set_current_timestamp(clock.wall_millis() as i64);
        Self {
            clock,
            generator: Mutex::new(generator),
            max_offset_ms,
        }
    }

    /// Merges a received stamp (0 means "none") and returns a new stamp
    /// strictly after it and after every earlier stamp of this clock.
    ///
    /// # Errors
    /// [`HlcError::TooFarAhead`] when `observed` is beyond the maximum offset;
    /// nothing is merged then.
    pub fn next_after(&self, observed: u64) -> Result<u64, HlcError> {
        let generator = self.generator.lock().unwrap_or_else(|p| p.into_inner());
        self.merge(&generator, observed)?;
        generator
            .next_timestamp()
            .map(|stamp| stamp.as_u64())
            .ok_or(HlcError::Malformed)
    }

    /// Merges a stamp received from another region, so every later stamp of
    /// this clock orders after it.
    ///
    /// # Errors
    /// [`HlcError::TooFarAhead`] when `observed` is beyond the maximum offset;
    /// nothing is merged then.
    pub fn observe(&self, observed: u64) -> Result<(), HlcError> {
        let generator = self.generator.lock().unwrap_or_else(|p| p.into_inner());
        self.merge(&generator, observed)
    }

    fn merge(
        &self,
        generator: &HlcGenerator<hlc_gen::source::ManualClock>,
        observed: u64,
    ) -> Result<(), HlcError> {
        let now = self.clock.wall_millis();
        generator.set_current_timestamp(now as i64);
        if observed == 0 {
            return Ok(());
        }
        let observed_ms = physical_ms(observed);
        if observed_ms > now + self.max_offset_ms {
            return Err(HlcError::TooFarAhead {
                ahead_ms: observed_ms - now,
                max_ms: self.max_offset_ms,
            });
        }
        let incoming =
            HlcTimestamp::from_parts(observed_ms as i64, observed & ((1 << LOGICAL_BITS) - 1))
                .map_err(|_| HlcError::Malformed)?;
        generator
            .update(&incoming)
            .map_err(|_| HlcError::TooFarAhead {
                ahead_ms: observed_ms.saturating_sub(now),
                max_ms: self.max_offset_ms,
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meridian_seams::clock::ManualClock;

    use super::*;

    #[test]
    fn stamps_grow_and_follow_observed() {
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let hlc = Hlc::new(clock.clone(), 500);
        let a = hlc.next_after(0).unwrap();
        let b = hlc.next_after(0).unwrap();
        assert!(b > a);
        let remote = stamp_at(1_800_000_000_400) + 7;
        let c = hlc.next_after(remote).unwrap();
        assert!(c > remote, "a reply orders after what it answers");
        assert_eq!(physical_ms(c), 1_800_000_000_400);
    }

    #[test]
    fn refuses_stamps_beyond_max_offset() {
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let hlc = Hlc::new(clock, 500);
        let far = stamp_at(1_800_000_002_000);
        assert!(matches!(
            hlc.next_after(far),
            Err(HlcError::TooFarAhead { .. })
        ));
        assert!(matches!(
            hlc.observe(far),
            Err(HlcError::TooFarAhead { .. })
        ));
        // Nothing was merged: the next stamp is still near local time.
        assert_eq!(physical_ms(hlc.next_after(0).unwrap()), 1_800_000_000_000);
        hlc.observe(stamp_at(1_800_000_000_300)).unwrap();
        assert_eq!(physical_ms(hlc.next_after(0).unwrap()), 1_800_000_000_300);
    }
}
