//! The core's own health: whether its store still takes commits and
//! whether a commit has stalled, published as a readiness value (for the
//! core's `/readyz` and the process running it, which stops the core when
//! its store failed) and as alarm metrics.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::Messaging;

/// Whether the core should be sent traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Its store takes commits and none is stalled.
    Ready,
    /// The engine has been writing one commit for longer than the stall
    /// limit (a hung fsync, a full or failing disk): not ready, still up,
    /// ready again if the write completes.
    CommitStalled {
        /// How long the write has taken so far.
        for_: Duration,
    },
    /// The store failed for good and refuses every commit (fail-stop):
    /// the core must stop and its process restart.
    StoreFailed {
        /// The engine's failure.
        reason: String,
    },
}

impl Readiness {
    /// Whether traffic may be sent to the core.
    pub fn is_ready(&self) -> bool {
        *self == Self::Ready
    }
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ready => f.write_str("ready"),
            Self::CommitStalled { for_ } => {
                write!(f, "a commit has been writing for {} ms", for_.as_millis())
            }
            Self::StoreFailed { reason } => write!(f, "store failed: {reason}"),
        }
    }
}

/// How the watchdog looks at the store.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// How often it looks.
    pub check_every: Duration,
    /// A commit writing for longer than this raises the stall alarm. A
    /// group commit normally takes one fsync, milliseconds; five seconds
    /// is FoundationDB's whole transaction lifetime.
    pub stall_after: Duration,
    /// Whether the core stops serving once its store failed (fail-stop).
    /// Off only in the simulation, whose supervisor crashes the failed
    /// core's host instead: a core stopping itself there does not replay
    /// deterministically (`docs/simulation.md`).
    pub stop_on_failure: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            check_every: Duration::from_secs(1),
            stall_after: Duration::from_secs(5),
            stop_on_failure: true,
        }
    }
}

/// Watches the core's store: the readiness it publishes, and the task that
/// keeps it current (run it until the core stops).
pub fn watchdog(
    messaging: Arc<Messaging>,
    config: HealthConfig,
) -> (
    watch::Receiver<Readiness>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (readiness, receiver) = watch::channel(Readiness::Ready);
    let task = async move {
        let site = messaging.config().region.clone();
        let metrics = HealthMetrics::new(&site);
        let db = messaging.db().clone();
        let mut failure = db.failure();
        loop {
            let now = assess(
                failure.borrow_and_update().clone(),
                db.write_in_flight_for(),
                &config,
            );
            metrics.record(&now, db.write_in_flight_for());
            let changed = readiness.send_if_modified(|current| {
                let changed = *current != now && !same_stall(current, &now);
                if changed {
                    *current = now.clone();
                }
                changed
            });
            if changed {
                match &now {
                    Readiness::Ready => tracing::info!(%site, "core ready again"),
                    Readiness::CommitStalled { .. } => {
                        tracing::error!(%site, readiness = %now, "commit stalled: core not ready");
                    }
                    Readiness::StoreFailed { .. } => {
                        tracing::error!(%site, readiness = %now, "store failed: stopping the core");
                    }
                }
            }
            if matches!(now, Readiness::StoreFailed { .. }) {
                return;
            }
            tokio::select! {
                _ = failure.changed() => {}
                () = tokio::time::sleep(config.check_every) => {}
            }
        }
    };
    (receiver, task)
}

/// Two stalls differ only in their length: not a change of readiness.
fn same_stall(a: &Readiness, b: &Readiness) -> bool {
    matches!(
        (a, b),
        (
            Readiness::CommitStalled { .. },
            Readiness::CommitStalled { .. }
        )
    )
}

/// The readiness that a store failure and the age of the write in flight
/// add up to.
fn assess(
    failure: Option<String>,
    writing_for: Option<Duration>,
    config: &HealthConfig,
) -> Readiness {
    if let Some(reason) = failure {
        return Readiness::StoreFailed { reason };
    }
    match writing_for {
        Some(for_) if for_ >= config.stall_after => Readiness::CommitStalled { for_ },
        _ => Readiness::Ready,
    }
}

/// The alarm gauges of one site.
struct HealthMetrics {
    ready: metrics::Gauge,
    stalled: metrics::Gauge,
    failed: metrics::Gauge,
    writing_seconds: metrics::Gauge,
}

impl HealthMetrics {
    fn new(site: &str) -> Self {
        let site = site.to_string();
        Self {
            ready: metrics::gauge!("meridian_core_ready", "site" => site.clone()),
            stalled: metrics::gauge!("meridian_core_commit_stalled", "site" => site.clone()),
            failed: metrics::gauge!("meridian_core_store_failed", "site" => site.clone()),
            writing_seconds: metrics::gauge!("meridian_core_commit_writing_seconds", "site" => site),
        }
    }

    fn record(&self, readiness: &Readiness, writing_for: Option<Duration>) {
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        self.ready.set(flag(readiness.is_ready()));
        self.stalled
            .set(flag(matches!(readiness, Readiness::CommitStalled { .. })));
        self.failed
            .set(flag(matches!(readiness, Readiness::StoreFailed { .. })));
        self.writing_seconds
            .set(writing_for.unwrap_or_default().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_store_outranks_a_stall() {
        let config = HealthConfig::default();
        assert_eq!(
            assess(
                Some("fsync failed".into()),
                Some(Duration::from_secs(60)),
                &config
            ),
            Readiness::StoreFailed {
                reason: "fsync failed".into()
            }
        );
    }

    #[test]
    fn a_write_is_stalled_from_the_limit_on() {
        let config = HealthConfig {
            check_every: Duration::from_secs(1),
            stall_after: Duration::from_secs(5),
            stop_on_failure: true,
        };
        assert_eq!(assess(None, None, &config), Readiness::Ready);
        assert_eq!(
            assess(None, Some(Duration::from_millis(4_999)), &config),
            Readiness::Ready
        );
        assert_eq!(
            assess(None, Some(Duration::from_secs(5)), &config),
            Readiness::CommitStalled {
                for_: Duration::from_secs(5)
            }
        );
        assert!(!assess(None, Some(Duration::from_secs(9)), &config).is_ready());
    }
}
