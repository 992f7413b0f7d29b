//! The injected, seedable source of randomness.

use std::sync::{Arc, Mutex};

use rand::{RngCore, SeedableRng, TryRngCore};
use rand_chacha::ChaCha12Rng;

/// A seedable random source shared by a component. Cloning shares the stream.
///
/// ChaCha12 gives the same sequence for the same seed on every platform and
/// crate version, which is what makes a simulation seed replayable.
#[derive(Clone, Debug)]
pub struct Rng {
    inner: Arc<Mutex<ChaCha12Rng>>,
}

impl Rng {
    /// A generator replaying the stream of `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(ChaCha12Rng::seed_from_u64(seed))),
        }
    }

    /// A generator seeded from the operating system (production only).
    ///
    /// # Errors
    /// When the operating system has no entropy to give: tokens made from a
    /// guessable seed would be guessable, so the caller must not start.
    pub fn from_os() -> Result<Self, rand::rand_core::OsError> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut seed)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(ChaCha12Rng::from_seed(seed))),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut ChaCha12Rng) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-draw; the
        // generator state is still valid.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// A uniformly random `u64`.
    pub fn next_u64(&self) -> u64 {
        self.with(|r| r.next_u64())
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&self, buf: &mut [u8]) {
        self.with(|r| r.fill_bytes(buf));
    }

    /// A value in `0..bound` (`bound` > 0), without modulo bias worth caring about.
    pub fn below(&self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }

    /// `true` with probability `p`.
    pub fn chance(&self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let a = Rng::seeded(7);
        let b = Rng::seeded(7);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(
            xs,
            (0..8)
                .map(|_| Rng::seeded(8).next_u64())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn below_stays_in_bounds() {
        let r = Rng::seeded(1);
        assert!((0..1000).all(|_| r.below(10) < 10));
        assert_eq!(r.below(0), 0);
    }
}
