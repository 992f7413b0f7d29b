//! The database handle of the native layer: opens an engine, starts its
//! committer, hands out read points and takes commit requests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use meridian_seams::{Rng, SharedClock};

use super::committer::{
    CommitRequest, Conflicts, Current, Observers, Started, Vitals, lock_conflicts, lock_current,
    start_committer,
};
use crate::KvError;
use crate::backend::CommitObserver;
use crate::engine::{Engine, EngineSnapshot};

/// Bounds on the native layer's retries ([`crate::Database::run`]).
#[derive(Debug, Clone)]
pub struct RetryOptions {
    /// Attempts before giving up with [`KvError::RetryLimitReached`].
    pub max_attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            max_attempts: 100,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(100),
        }
    }
}

/// Tuning for the committer.
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    /// Most transactions resolved and written together in one batch.
    pub max_batch_transactions: usize,
    /// Commits waiting for the committer before `commit` waits too.
    pub queue_depth: usize,
    /// The retry loop's bounds.
    pub retry: RetryOptions,
    /// The `store` label of the committer's metrics (a core's site name),
    /// so several databases in one process report apart.
    pub metrics_label: String,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            max_batch_transactions: 2048,
            queue_depth: 8192,
            retry: RetryOptions::default(),
            metrics_label: "default".to_string(),
        }
    }
}

struct Inner {
    current: Arc<Mutex<Current>>,
    conflicts: Arc<Mutex<Conflicts>>,
    stopped: tokio::sync::watch::Receiver<bool>,
    commits: mpsc::Sender<CommitRequest>,
    clock: SharedClock,
    rng: Rng,
    options: DatabaseOptions,
    observers: Observers,
    vitals: Arc<Vitals>,
}

/// A handle to a transactional database over some [`Engine`]. Cheap to clone.
#[derive(Clone)]
pub(crate) struct NativeDatabase {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NativeDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

impl NativeDatabase {
    /// Opens a database over `engine` and starts its committer task on the
    /// current tokio runtime. The committer stops when the last handle drops.
    ///
    /// # Errors
    /// When the engine cannot read its stored version.
    pub(super) fn open(
        engine: Arc<dyn Engine>,
        clock: SharedClock,
        rng: Rng,
        options: DatabaseOptions,
    ) -> Result<Self, KvError> {
        let Started {
            current,
            conflicts,
            observers,
            commits,
            stopped,
            vitals,
        } = start_committer(
            engine,
            clock.clone(),
            options.queue_depth,
            options.max_batch_transactions,
            &options.metrics_label,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                current,
                conflicts,
                stopped,
                commits,
                clock,
                rng,
                options,
                observers,
                vitals,
            }),
        })
    }

    /// Why the engine failed for good, once it has.
    pub(super) fn failure(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.inner.vitals.failure.subscribe()
    }

    /// How long the write in flight has taken so far, if one is.
    pub(super) fn write_in_flight_for(&self) -> Option<std::time::Duration> {
        let since = self.inner.vitals.writing_since()?;
        Some(self.inner.clock.monotonic().saturating_sub(since))
    }

    /// Adds an observer of every batch committed from now on.
    pub(super) fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        self.inner
            .observers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(observer);
    }

    /// Resolves once the committer has stopped and released the engine (so
    /// it can be reopened, e.g. by a test), which happens when every handle
    /// is gone.
    pub(super) fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopped = self.inner.stopped.clone();
        async move {
            let _ = stopped.wait_for(|done| *done).await;
        }
    }

    /// The latest committed version and its snapshot, where a transaction
    /// starting now reads.
    pub(super) fn read_point(&self) -> (u64, Arc<dyn EngineSnapshot>) {
        let current = lock_current(&self.inner.current);
        (current.version, current.snapshot.clone())
    }

    /// The latest committed version.
    pub(super) fn committed_version(&self) -> u64 {
        lock_current(&self.inner.current).version
    }

    pub(super) fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    pub(super) fn rng(&self) -> &Rng {
        &self.inner.rng
    }

    pub(super) fn retry_options(&self) -> &RetryOptions {
        &self.inner.options.retry
    }

    /// Registers the watches of a transaction that wrote nothing, without
    /// queueing behind commits (a delivery loop waiting on an idle inbox
    /// must not wait for someone else's fsync).
    pub(super) fn register_watches(
        &self,
        read_version: u64,
        watches: Vec<(Vec<u8>, oneshot::Sender<()>)>,
    ) {
        let mut conflicts = lock_conflicts(&self.inner.conflicts);
        for (key, sender) in watches {
            conflicts.register(read_version, key, sender);
        }
    }

    pub(super) async fn submit(&self, request: CommitRequest) -> Result<(), KvError> {
        self.inner
            .commits
            .send(request)
            .await
            .map_err(|_| KvError::Closed)
    }
}
