//! The hybrid logical clock of a core, driven by the injected clock.

use std::sync::Mutex;

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
}

/// Number of logical-counter bits in a stamp.
const LOGICAL_BITS: u32 = 22;
/// The logical counter's bits of a stamp.
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;
/// The stamps' epoch (2024-01-01T00:00:00Z), unix ms.
const HLC_EPOCH_MS: u64 = 1_704_067_200_000;

/// The HLC: every message a core accepts gets a stamp above every stamp the
/// core issued or merged before, so causally later events get larger
/// stamps. A stamp is a `u64`: 42 bits of milliseconds since 2024-01-01 UTC,
/// then a 22-bit logical counter (the layout of hlc-gen, which this clock
/// replaced: stamps already stored compare the same).
///
/// What a stamp may be merged with depends on who says it:
/// - a stamp of another region, or one this core stored (a reply's parent),
///   is merged as given, up to `max_offset_ms` ahead of the core's wall
///   time ([`Hlc::observe`], [`Hlc::next_after`]);
/// - a client's `last_seen_hlc` is clamped to the core's wall time, its
///   logical bits dropped ([`Hlc::next_for_client`]), so a client can
///   neither run the clock ahead nor use up its logical counter.
///
/// When the logical counter of a millisecond is full, the next stamp takes
/// the next millisecond (counted in `meridian_hlc_logical_overflow_total`):
/// the clock never fails to stamp.
///
/// Wall time comes from the injected [`meridian_seams::Clock`], read under
/// the lock that guards the last stamp, so read-then-stamp is atomic.
pub struct Hlc {
    clock: SharedClock,
    /// The largest stamp issued or merged (0 before any).
    last: Mutex<u64>,
    max_offset_ms: u64,
    region: String,
}

impl std::fmt::Debug for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hlc")
            .field("max_offset_ms", &self.max_offset_ms)
            .field("region", &self.region)
            .finish_non_exhaustive()
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
    /// The clock of `region`'s core, refusing stamps more than
    /// `max_offset_ms` ahead of `clock`.
    pub fn new(clock: SharedClock, max_offset_ms: u64, region: impl Into<String>) -> Self {
        Self {
            clock,
            last: Mutex::new(0),
            max_offset_ms,
            region: region.into(),
        }
    }

    /// A new stamp, after every earlier stamp of this clock.
    pub fn next(&self) -> u64 {
        let mut last = self.lock();
        let now = self.clock.wall_millis();
        self.advance(&mut last, now, 0)
    }

    /// Merges `observed`, a stamp of another region or one this core stored
    /// (0 means "none"), and returns a new stamp strictly after it and after
    /// every earlier stamp of this clock.
    ///
    /// # Errors
    /// [`HlcError::TooFarAhead`] when `observed` is beyond the maximum offset;
    /// nothing is merged then.
    pub fn next_after(&self, observed: u64) -> Result<u64, HlcError> {
        let mut last = self.lock();
        let now = self.clock.wall_millis();
        self.check_offset(observed, now)?;
        Ok(self.advance(&mut last, now, observed))
    }

    /// The stamp of a client's send: after `known` (a stamp this core
    /// stored, such as the answered message's, merged as by
    /// [`Self::next_after`]) and after the client's `last_seen` clamped to
    /// the core's wall time with its logical bits dropped.
    ///
    /// The clamp: `last_seen` can raise the stamp only up to the core's own
    /// clock. Anything a client saw came from its home core, this one, whose
    /// clock has already passed it (until a restart: the HLC is not
    /// persisted), so a client's stamp adds nothing but a claim, and a claim
    /// must neither run the clock ahead (review finding M10) nor fill its
    /// logical counter (C2). Within the offset it is clamped rather than
    /// refused: a client a little ahead still sends. Beyond the offset it
    /// is refused, as before: that is a client bug (or this core's clock
    /// stepped back), and `clock_skew` names it. A reply's order after its
    /// parent does not rest on the client: the parent's stamp is read from
    /// the store and passed as `known`, logical bits and all.
    ///
    /// `known` of 0 means "none".
    ///
    /// # Errors
    /// [`HlcError::TooFarAhead`] when `last_seen` or `known` is beyond the
    /// maximum offset; nothing is merged then.
    pub fn next_for_client(&self, last_seen: u64, known: u64) -> Result<u64, HlcError> {
        let mut last = self.lock();
        let now = self.clock.wall_millis();
        self.check_offset(last_seen, now)?;
        self.check_offset(known, now)?;
        let clamped = stamp_at(physical_ms(last_seen).min(now));
        Ok(self.advance(&mut last, now, clamped.max(known)))
    }

    /// Merges a stamp received from another region, so every later stamp of
    /// this clock orders after it.
    ///
    /// # Errors
    /// [`HlcError::TooFarAhead`] when `observed` is beyond the maximum offset;
    /// nothing is merged then.
    pub fn observe(&self, observed: u64) -> Result<(), HlcError> {
        let mut last = self.lock();
        self.check_offset(observed, self.clock.wall_millis())?;
        *last = (*last).max(observed);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses a stamp further than the maximum offset ahead of `now`.
    fn check_offset(&self, stamp: u64, now: u64) -> Result<(), HlcError> {
        let stamp_ms = physical_ms(stamp);
        if stamp != 0 && stamp_ms > now.saturating_add(self.max_offset_ms) {
            return Err(HlcError::TooFarAhead {
                ahead_ms: stamp_ms - now,
                max_ms: self.max_offset_ms,
            });
        }
        Ok(())
    }

    /// Issues the stamp after `last` and `after`: the next logical count of
    /// the larger, or the start of wall time `now` if that is later. A full
    /// counter carries into the next millisecond (a stamp is one integer),
    /// counted when that runs ahead of wall time.
    fn advance(&self, last: &mut u64, now: u64, after: u64) -> u64 {
        let base = (*last).max(after);
        let wall = stamp_at(now);
        let next = base.saturating_add(1).max(wall);
        if base & LOGICAL_MASK == LOGICAL_MASK && next > wall {
            metrics::counter!("meridian_hlc_logical_overflow_total", "region" => self.region.clone())
                .increment(1);
        }
        *last = next;
        next
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meridian_seams::clock::ManualClock;

    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn hlc_at(now: u64) -> (Arc<ManualClock>, Hlc) {
        let clock = Arc::new(ManualClock::new(now));
        let hlc = Hlc::new(clock.clone(), 500, "test");
        (clock, hlc)
    }

    fn logical(stamp: u64) -> u64 {
        stamp & LOGICAL_MASK
    }

    #[test]
    fn stamps_grow_and_follow_observed() {
        let (_clock, hlc) = hlc_at(NOW);
        let a = hlc.next_after(0).unwrap();
        let b = hlc.next_after(0).unwrap();
        assert!(b > a);
        let remote = stamp_at(NOW + 400) + 7;
        let c = hlc.next_after(remote).unwrap();
        assert!(c > remote, "a reply orders after what it answers");
        assert_eq!(physical_ms(c), NOW + 400);
    }

    #[test]
    fn refuses_stamps_beyond_max_offset() {
        let (_clock, hlc) = hlc_at(NOW);
        let far = stamp_at(NOW + 2_000);
        assert!(matches!(
            hlc.next_after(far),
            Err(HlcError::TooFarAhead { .. })
        ));
        assert!(matches!(
            hlc.observe(far),
            Err(HlcError::TooFarAhead { .. })
        ));
        assert!(matches!(
            hlc.next_for_client(far, 0),
            Err(HlcError::TooFarAhead { .. })
        ));
        // Nothing was merged: the next stamp is still near local time.
        assert_eq!(physical_ms(hlc.next_after(0).unwrap()), NOW);
        hlc.observe(stamp_at(NOW + 300)).unwrap();
        assert_eq!(physical_ms(hlc.next_after(0).unwrap()), NOW + 300);
    }

    /// C2's crafted `last_seen_hlc`: 499 ms ahead with the logical counter
    /// one below full. It is clamped to the core's clock: the send and
    /// every later stamp, merge and replicated change go on, none ahead of
    /// the core's wall time.
    #[test]
    fn a_client_stamp_is_clamped_to_the_core_clock() {
        let (clock, hlc) = hlc_at(NOW);
        let crafted = [
            stamp_at(NOW + 499) + LOGICAL_MASK - 1,
            stamp_at(NOW + 499) + LOGICAL_MASK,
            stamp_at(NOW) + LOGICAL_MASK,
        ];
        for _ in 0..3 {
            for stamp in crafted {
                let sent = hlc.next_for_client(stamp, 0).unwrap();
                assert_eq!(physical_ms(sent), NOW, "not pushed ahead");
                assert!(logical(sent) < 100, "the logical counter is not used up");
            }
        }
        let stamp = hlc.next_after(0).unwrap();
        assert_eq!(physical_ms(stamp), NOW);
        // Inbound replication merges on: a change up to the offset ahead.
        hlc.observe(stamp_at(NOW + 400) + 3).unwrap();
        assert!(hlc.next_after(0).unwrap() > stamp_at(NOW + 400) + 3);
        // Once wall time passes, stamps follow it.
        clock.advance(std::time::Duration::from_secs(1));
        assert_eq!(
            hlc.next_for_client(crafted[0], 0).unwrap(),
            stamp_at(NOW + 1_000)
        );
    }

    /// What a client saw that is not in the future still orders before its
    /// send; a reply's parent orders before it in full, even ahead of the
    /// core's clock and with a full counter.
    #[test]
    fn a_send_follows_what_its_client_saw_and_its_parent() {
        let (_clock, hlc) = hlc_at(NOW);
        let seen = stamp_at(NOW - 10) + 7;
        assert!(hlc.next_for_client(seen, 0).unwrap() > seen);
        let parent = stamp_at(NOW + 300) + LOGICAL_MASK;
        let reply = hlc
            .next_for_client(stamp_at(NOW + 499) + 5, parent)
            .unwrap();
        assert!(reply > parent, "the reply orders after its parent");
        assert_eq!(
            reply,
            stamp_at(NOW + 301),
            "a full counter takes the next ms"
        );
        // A client stamp at the core's millisecond counts from 0 again.
        let (_clock, fresh) = hlc_at(NOW);
        assert_eq!(
            fresh.next_for_client(stamp_at(NOW) + 9, 0).unwrap(),
            stamp_at(NOW) + 1
        );
    }

    /// A full logical counter carries into the next millisecond instead of
    /// failing, whether it filled through a merge or through stamping.
    #[test]
    fn a_full_logical_counter_advances_the_millisecond() {
        let (_clock, hlc) = hlc_at(NOW);
        hlc.observe(stamp_at(NOW + 499) + LOGICAL_MASK - 1).unwrap();
        let a = hlc.next_after(0).unwrap();
        assert_eq!(a, stamp_at(NOW + 499) + LOGICAL_MASK);
        let b = hlc.next_after(0).unwrap();
        assert_eq!(b, stamp_at(NOW + 500), "the next millisecond, logical 0");
        assert_eq!(hlc.next_after(0).unwrap(), b + 1);
        // Merging a full stamp and stamping after it.
        let full = stamp_at(NOW + 499) + LOGICAL_MASK;
        hlc.observe(full).unwrap();
        assert!(hlc.next_after(full).unwrap() > full);
        // Inbound replication still merges (the link is not refused).
        hlc.observe(stamp_at(NOW + 450)).unwrap();
    }

    /// More stamps in one millisecond than the counter holds: every one
    /// issued, strictly increasing.
    #[test]
    fn a_burst_beyond_the_counter_never_fails() {
        let (_clock, hlc) = hlc_at(NOW);
        let mut previous = 0;
        for _ in 0..=LOGICAL_MASK + 2 {
            let stamp = hlc.next_after(0).unwrap();
            assert!(stamp > previous);
            previous = stamp;
        }
        assert_eq!(previous, stamp_at(NOW + 1) + 1);
    }
}
