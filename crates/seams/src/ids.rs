//! Identifiers made from the injected clock and randomness.

use uuid::Uuid;

use crate::{Rng, SharedClock};

/// Makes time-ordered UUIDv7 ids and random tokens from the injected seams,
/// so a seeded run produces the same ids every time.
#[derive(Clone)]
pub struct Ids {
    clock: SharedClock,
    rng: Rng,
}

impl std::fmt::Debug for Ids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ids").finish_non_exhaustive()
    }
}

impl Ids {
    /// An id source over `clock` and `rng`.
    pub fn new(clock: SharedClock, rng: Rng) -> Self {
        Self { clock, rng }
    }

    /// A UUIDv7: millisecond time prefix, random remainder.
    pub fn uuid_v7(&self) -> Uuid {
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        uuid::Builder::from_unix_timestamp_millis(self.clock.wall_millis(), &random).into_uuid()
    }

    /// `len` random bytes (device tokens, nonces).
    pub fn random_bytes(&self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.rng.fill(&mut out);
        out
    }

    /// The random source itself.
    pub fn rng(&self) -> &Rng {
        &self.rng
    }

    /// The clock itself.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn ids_replay_for_a_seed_and_sort_by_time() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let a = Ids::new(clock.clone(), Rng::seeded(3));
        let b = Ids::new(clock.clone(), Rng::seeded(3));
        let first = a.uuid_v7();
        assert_eq!(first, b.uuid_v7());
        clock.advance(std::time::Duration::from_millis(1));
        let later = a.uuid_v7();
        assert!(later > first);
        assert_eq!(later.get_version_num(), 7);
    }
}
