//! The health of commits sent to a remote store (FoundationDB), as the
//! core's watchdog reads it through [`crate::backend::Backend::write_in_flight_for`].
//!
//! A local engine (the native layer) knows the one write it is doing. A
//! client of a remote cluster only sees its own commits: one that is taking
//! long, or a run of them failing while the cluster is unreachable or
//! recovering (each bounded by the transaction timeout, so no single one
//! ever looks stalled). Both count as trouble, from the start of the oldest
//! unfinished commit or of the first commit of the failing run, until a
//! commit succeeds.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use meridian_seams::SharedClock;

/// Tracks this process's commits to a remote store.
pub struct CommitHealth {
    clock: SharedClock,
    state: Mutex<State>,
    write_seconds: metrics::Histogram,
}

#[derive(Default)]
struct State {
    next: u64,
    /// Commits in flight: ticket → when it was sent.
    in_flight: BTreeMap<u64, Duration>,
    /// When the first commit of the current run of failures was sent.
    failing_since: Option<Duration>,
}

/// One commit being sent: hand it back with its outcome.
#[derive(Debug)]
#[must_use = "a commit's outcome must be recorded"]
pub struct CommitTicket {
    id: u64,
    sent: Duration,
}

impl std::fmt::Debug for CommitHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitHealth").finish_non_exhaustive()
    }
}

impl CommitHealth {
    /// Tracks the commits of `store` (the metrics label) on `clock`,
    /// recording each successful commit's time in
    /// `meridian_kv_engine_write_seconds`.
    pub fn new(store: &str, clock: SharedClock) -> Self {
        Self {
            clock,
            state: Mutex::new(State::default()),
            write_seconds: metrics::histogram!(
                "meridian_kv_engine_write_seconds",
                "store" => store.to_string()
            ),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the map inconsistent (each update
        // is one insert or remove): keep using it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A commit is being sent.
    pub fn sending(&self) -> CommitTicket {
        let sent = self.clock.monotonic();
        let mut state = self.state();
        let id = state.next;
        state.next += 1;
        state.in_flight.insert(id, sent);
        CommitTicket { id, sent }
    }

    /// The commit succeeded: the store takes commits.
    pub fn succeeded(&self, ticket: CommitTicket) {
        let took = self.clock.monotonic().saturating_sub(ticket.sent);
        let mut state = self.state();
        state.in_flight.remove(&ticket.id);
        state.failing_since = None;
        drop(state);
        self.write_seconds.record(took.as_secs_f64());
    }

    /// The commit failed (retryable or not: either way the store did not
    /// take it).
    pub fn failed(&self, ticket: CommitTicket) {
        let mut state = self.state();
        state.in_flight.remove(&ticket.id);
        let since = state
            .failing_since
            .map_or(ticket.sent, |s| s.min(ticket.sent));
        state.failing_since = Some(since);
    }

    /// How long commits have been in trouble: since the oldest commit still
    /// in flight was sent, or since the current run of failures began;
    /// `None` when neither.
    pub fn trouble_for(&self) -> Option<Duration> {
        let now = self.clock.monotonic();
        let state = self.state();
        let oldest_in_flight = state.in_flight.values().min().copied();
        [oldest_in_flight, state.failing_since]
            .into_iter()
            .flatten()
            .min()
            .map(|since| now.saturating_sub(since))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meridian_seams::clock::ManualClock;

    use super::*;

    fn health() -> (CommitHealth, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(0));
        (CommitHealth::new("test", clock.clone()), clock)
    }

    #[test]
    fn quick_commits_are_no_trouble() {
        let (health, clock) = health();
        let ticket = health.sending();
        clock.advance(Duration::from_millis(3));
        health.succeeded(ticket);
        assert_eq!(health.trouble_for(), None);
    }

    #[test]
    fn a_commit_in_flight_is_trouble_for_as_long_as_it_takes() {
        let (health, clock) = health();
        let _first = health.sending();
        clock.advance(Duration::from_secs(2));
        let _second = health.sending();
        clock.advance(Duration::from_secs(4));
        assert_eq!(health.trouble_for(), Some(Duration::from_secs(6)));
    }

    #[test]
    fn a_run_of_failures_is_trouble_from_its_first_until_a_success() {
        let (health, clock) = health();
        for _ in 0..3 {
            let ticket = health.sending();
            clock.advance(Duration::from_secs(5));
            health.failed(ticket);
        }
        // No commit is in flight; each failed within its timeout, yet the
        // store has taken nothing for 15 s.
        assert_eq!(health.trouble_for(), Some(Duration::from_secs(15)));
        let ticket = health.sending();
        clock.advance(Duration::from_millis(4));
        health.succeeded(ticket);
        assert_eq!(health.trouble_for(), None);
    }

    #[test]
    fn a_failure_after_a_success_starts_a_new_run() {
        let (health, clock) = health();
        let failed = health.sending();
        health.failed(failed);
        clock.advance(Duration::from_secs(30));
        let ok = health.sending();
        health.succeeded(ok);
        let failed = health.sending();
        clock.advance(Duration::from_secs(1));
        health.failed(failed);
        assert_eq!(health.trouble_for(), Some(Duration::from_secs(1)));
    }
}
