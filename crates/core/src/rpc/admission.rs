//! The core's admission of device sessions, so that a reconnect storm
//! (a gateway tier lost, a region drained into this one) is served at the
//! rate the store can take instead of queued without bound in front of it.
//!
//! Two budgets, both shared by every gateway stream of the core:
//! - **Attaches**: a token bucket of new sessions per second. An attach
//!   past it is shed: the session is ended at once with a wait (the
//!   bucket's refill plus the device's own share of a spread), which its
//!   gateway passes on as `go_away` `busy`.
//! - **Backlog reads** ("syncs"): a session reads its inbox from the store
//!   when it attaches and whenever it is behind what the inbox feed holds;
//!   at most `sync_slots` such reads run at once, one batch each, taken in
//!   turn (the semaphore is fair), so a device with a long backlog is served
//!   in bounded batches at the store's pace while live deliveries (from the
//!   feed) never wait for a slot. When `max_waiting_syncs` sessions already
//!   wait for a slot, further attaches are shed too: waiting is bounded.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meridian_seams::SharedClock;
use meridian_seams::limit::RateLimiter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::CoreConfig;

/// How widely shed attaches are told to come back, beyond the refill: a
/// storm shed at once returns spread over this long.
const SHED_SPREAD: Duration = Duration::from_secs(2);

/// The session budgets of one core.
pub(crate) struct Admission {
    attaches: RateLimiter,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Why an attach was shed, and how long its device should wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shed {
    pub(crate) why: &'static str,
    pub(crate) retry_after: Duration,
}

impl Admission {
    pub(crate) fn new(config: &CoreConfig, clock: SharedClock) -> Self {
        Self {
            attaches: RateLimiter::new(
                config.attaches_per_second,
                config.attaches_per_second,
                clock,
            ),
            slots: Arc::new(Semaphore::new(config.sync_slots.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting: config.max_waiting_syncs,
        }
    }

    /// Admits a new session of `device`, or says how long it should wait.
    pub(crate) fn admit(&self, device: &str) -> Result<(), Shed> {
        // The share is worked out only for a shed attach: most are admitted.
        if self.waiting.load(Ordering::Acquire) >= self.max_waiting {
            return Err(Shed {
                why: "sync_queue",
                retry_after: Duration::from_millis(250) + spread_share(device),
            });
        }
        self.attaches.take("attaches", 1.0).map_err(|refill| Shed {
            why: "attach_rate",
            retry_after: refill + spread_share(device),
        })
    }

    /// Waits for a backlog-read slot; the read holds it until dropped.
    pub(crate) async fn sync_slot(&self) -> OwnedSemaphorePermit {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return permit;
        }
        let waiting = Waiting::enter(&self.waiting);
        let permit = self.slots.clone().acquire_owned().await;
        drop(waiting);
        // The semaphore is never closed.
        permit.unwrap_or_else(|_| unreachable!("the sync semaphore is never closed"))
    }

    /// Sessions waiting for a backlog-read slot now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// One session counted as waiting for a slot while it lives (a delivery
/// task aborted mid-wait is uncounted too).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        let now = count.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!("meridian_core_sync_waiting").set(now as f64);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!("meridian_core_sync_waiting").set(now as f64);
    }
}

/// `device`'s fixed share of [`SHED_SPREAD`]: the same device is told the
/// same offset each time, different devices spread evenly (a fixed hash,
/// so the deterministic simulation replays it).
fn spread_share(device: &str) -> Duration {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(device);
    let spread = SHED_SPREAD.as_millis() as u64;
    Duration::from_millis(hash % spread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_seams::clock::ManualClock;

    fn admission(rate: f64, slots: usize, max_waiting: usize) -> (Admission, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000));
        let mut config = CoreConfig::new("test");
        config.attaches_per_second = rate;
        config.sync_slots = slots;
        config.max_waiting_syncs = max_waiting;
        (Admission::new(&config, clock.clone()), clock)
    }

    #[test]
    fn attaches_past_the_rate_are_shed_with_the_refill_and_a_spread() {
        let (admission, clock) = admission(2.0, 4, 100);
        assert_eq!(admission.admit("d1"), Ok(()));
        assert_eq!(admission.admit("d2"), Ok(()));
        let shed = admission.admit("d3").unwrap_err();
        assert_eq!(shed.why, "attach_rate");
        assert!(shed.retry_after >= Duration::from_millis(500));
        assert!(shed.retry_after < Duration::from_millis(500) + SHED_SPREAD);
        clock.advance(Duration::from_millis(500));
        assert_eq!(admission.admit("d3"), Ok(()));
    }

    #[test]
    fn shed_devices_are_told_different_waits() {
        let waits: std::collections::BTreeSet<Duration> = (0..50)
            .map(|i| spread_share(&format!("device-{i}")))
            .collect();
        assert!(waits.len() > 40, "{} distinct waits of 50", waits.len());
    }

    #[tokio::test]
    async fn backlog_reads_wait_in_turn_and_a_full_queue_sheds_attaches() {
        let (admission, _clock) = admission(1_000.0, 1, 2);
        let admission = Arc::new(admission);
        let first = admission.sync_slot().await;
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let admission = admission.clone();
            waiters.push(tokio::spawn(async move {
                drop(admission.sync_slot().await);
            }));
        }
        while admission.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        let shed = admission.admit("late").unwrap_err();
        assert_eq!(shed.why, "sync_queue");
        drop(first);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(admission.waiting(), 0);
        assert_eq!(admission.admit("late"), Ok(()));
    }

    #[tokio::test]
    async fn an_aborted_wait_is_no_longer_counted() {
        let (admission, _clock) = admission(1_000.0, 1, 10);
        let admission = Arc::new(admission);
        let _held = admission.sync_slot().await;
        let waiter = {
            let admission = admission.clone();
            tokio::spawn(async move { drop(admission.sync_slot().await) })
        };
        while admission.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(admission.waiting(), 0);
    }
}
