//! Exponential backoff for every retry loop: reconnecting streams and
//! links, relays, workers, the transaction runner, the SDK.
//!
//! Jitter, where a loop wants it (many peers retrying the same thing at
//! once), comes from the injected [`Rng`], so a simulated run replays it.

use std::time::Duration;

use crate::Rng;

/// Delays that start at `initial` and double after each wait, up to `max`;
/// [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    jitter: Option<Rng>,
}

impl Backoff {
    /// Waits of exactly the current delay.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
            jitter: None,
        }
    }

    /// Waits drawn uniformly from half the current delay up to the whole
    /// of it, so peers that failed together do not retry together.
    #[must_use]
    pub fn with_jitter(mut self, rng: Rng) -> Self {
        self.jitter = Some(rng);
        self
    }

    /// The delay the next wait is drawn from.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The next delay to wait (jittered), doubling the current one for the
    /// wait after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = match &self.jitter {
            Some(rng) => {
                let spread = rng.below(self.current.as_micros().max(1) as u64);
                self.current / 2 + Duration::from_micros(spread / 2)
            }
            None => self.current,
        };
        self.current = (self.current * 2).min(self.max);
        delay
    }

    /// Sleeps for [`Backoff::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(10 * MS, 35 * MS);
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays, [10 * MS, 20 * MS, 35 * MS, 35 * MS]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), 10 * MS);
    }

    #[test]
    fn jittered_delays_stay_between_half_and_all_of_the_current_one() {
        let mut backoff = Backoff::new(8 * MS, 64 * MS).with_jitter(Rng::seeded(3));
        for _ in 0..20 {
            let current = backoff.current();
            let delay = backoff.next_delay();
            assert!(
                delay >= current / 2 && delay < current,
                "{delay:?} of {current:?}"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_jitter() {
        let draw = || {
            let mut backoff = Backoff::new(MS, 100 * MS).with_jitter(Rng::seeded(9));
            (0..8).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(draw(), draw());
    }
}
