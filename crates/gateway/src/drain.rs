//! Draining a gateway: on the operator's order it stops taking new
//! WebSockets, answers `/readyz` 503 (so GeoDNS and load balancers stop
//! sending clients), and asks its clients to leave in waves spread over a
//! period — each client its own moment and its own wait before coming
//! back, so a region's clients do not land on the next region all at once.
//! An undrain before a client's turn keeps it.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use tokio::sync::watch;

/// The drain order: `Some(spread)` while draining.
#[derive(Debug)]
pub(crate) struct Drain {
    order: watch::Sender<Option<Duration>>,
}

/// The longest wait a client is told before it reconnects.
const MAX_RETRY_AFTER: Duration = Duration::from_millis(1000);

impl Drain {
    pub(crate) fn new() -> Self {
        Self {
            order: watch::channel(None).0,
        }
    }

    /// Orders the drain, clients leaving over `spread`.
    pub(crate) fn start(&self, spread: Duration) {
        self.order.send_replace(Some(spread));
    }

    /// Cancels it: clients whose turn has not come stay.
    pub(crate) fn stop(&self) {
        self.order.send_replace(None);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.order.borrow().is_some()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Duration>> {
        self.order.subscribe()
    }
}

/// When the client `who` leaves after a drain over `spread` began, and how
/// long it is told to wait before reconnecting: both from a hash of its
/// device, so they spread evenly and a reconnecting device keeps its place.
pub(crate) fn departure(who: &str, spread: Duration) -> (Duration, Duration) {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    who.hash(&mut hasher);
    let hash = hasher.finish();
    let fraction = |bits: u64| (bits % 10_000) as f64 / 10_000.0;
    let leave = spread.mul_f64(fraction(hash));
    let retry_after = MAX_RETRY_AFTER.mul_f64(fraction(hash >> 32));
    (leave, retry_after)
}

/// Resolves, with the wait to tell the client, once a drain is ordered
/// and `who`'s turn in it comes; never while no drain is. Keep one per
/// session (its turn is timed from when it first heard of the drain).
pub(crate) async fn my_turn(
    mut orders: watch::Receiver<Option<Duration>>,
    who: String,
) -> Duration {
    loop {
        let order = *orders.borrow_and_update();
        match order {
            None => {
                if orders.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            Some(spread) => {
                let (leave, retry_after) = departure(&who, spread);
                tokio::select! {
                    () = tokio::time::sleep(leave) => return retry_after,
                    changed = orders.changed() => {
                        if changed.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departures_spread_over_the_period_and_stay_put() {
        let spread = Duration::from_secs(30);
        let moments: Vec<Duration> = (0..1000)
            .map(|i| departure(&format!("device-{i}"), spread).0)
            .collect();
        assert!(moments.iter().all(|m| *m < spread));
        // Every tenth of the period gets some of them, none most.
        for tenth in 0..10 {
            let (from, to) = (spread * tenth / 10, spread * (tenth + 1) / 10);
            let count = moments.iter().filter(|m| **m >= from && **m < to).count();
            assert!((50..200).contains(&count), "tenth {tenth}: {count}");
        }
        assert_eq!(departure("device-7", spread), departure("device-7", spread));
        assert!(departure("device-7", spread).1 <= MAX_RETRY_AFTER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_leaves_at_its_turn_unless_undrained_first() {
        let drain = Drain::new();
        let spread = Duration::from_secs(10);
        let (leave, retry_after) = departure("phone", spread);
        let turn = tokio::spawn(my_turn(drain.subscribe(), "phone".into()));
        tokio::task::yield_now().await;
        assert!(!turn.is_finished(), "no drain, no turn");
        drain.start(spread);
        tokio::time::sleep(leave / 2).await;
        drain.stop();
        tokio::time::sleep(spread).await;
        assert!(!turn.is_finished(), "undrained before its turn: stays");
        drain.start(spread);
        assert_eq!(turn.await.unwrap(), retry_after);
    }
}
