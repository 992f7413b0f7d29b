//! The retry loop: one attempt (run the closure, commit) kept apart from the
//! loop that classifies the error, backs off and retries.

use std::future::Future;
use std::time::Duration;

use crate::{Database, KvError, Transaction, TxnError};

/// Told to a transaction closure: whether an earlier attempt of this same
/// transaction may have committed (its commit ended in
/// [`KvError::CommitUnknownResult`]). An idempotent closure can ignore it; one
/// that is not must check whether its effect is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaybeCommitted(pub bool);

/// Bounds on the retry loop.
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

impl Database {
    /// Runs `f` in a transaction and commits it, retrying on conflicts and
    /// other retryable errors with jittered exponential backoff.
    ///
    /// `f` may run more than once, so it must be idempotent and free of side
    /// effects outside the transaction (publish after commit, or write an
    /// outbox key in the same transaction).
    ///
    /// # Errors
    /// The closure's own non-retryable errors, non-retryable store errors, or
    /// [`KvError::RetryLimitReached`].
    pub async fn run<T, E, F, Fut>(&self, f: F) -> Result<T, E>
    where
        F: FnMut(Transaction, MaybeCommitted) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: TxnError + std::error::Error + Send + Sync + 'static,
    {
        self.run_with_info(f).await.map(|(value, _)| value)
    }

    /// [`Database::run`], also returning the commit's version and versionstamp.
    ///
    /// # Errors
    /// As [`Database::run`].
    pub async fn run_with_info<T, E, F, Fut>(&self, mut f: F) -> Result<(T, crate::CommitInfo), E>
    where
        F: FnMut(Transaction, MaybeCommitted) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: TxnError + std::error::Error + Send + Sync + 'static,
    {
        // FoundationDB runs its own retry loop (its backoff, its error
        // classification, its maybe-committed signal).
        #[cfg(feature = "fdb")]
        if let crate::handle::DbKind::Fdb(db) = &self.kind {
            return db.run(f).await;
        }
        let options = self.retry_options();
        let mut maybe_committed = MaybeCommitted(false);
        let mut backoff = options.initial_backoff;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let error = match self.attempt(&mut f, maybe_committed).await {
                Ok(done) => return Ok(done),
                Err(error) => error,
            };
            let Some(kv) = error.as_kv() else {
                return Err(error);
            };
            if !kv.is_retryable() {
                return Err(error);
            }
            if attempt >= options.max_attempts {
                return Err(KvError::RetryLimitReached {
                    attempts: attempt,
                    last: Box::new(kv.clone()),
                }
                .into());
            }
            maybe_committed.0 |= kv.is_maybe_committed();
            let jitter = self
                .rng()
                .map_or(0, |rng| rng.below(backoff.as_micros().max(1) as u64));
            tokio::time::sleep(backoff / 2 + Duration::from_micros(jitter / 2)).await;
            backoff = (backoff * 2).min(options.max_backoff);
        }
    }

    async fn attempt<T, E, F, Fut>(
        &self,
        f: &mut F,
        maybe_committed: MaybeCommitted,
    ) -> Result<(T, crate::CommitInfo), E>
    where
        F: FnMut(Transaction, MaybeCommitted) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: TxnError,
    {
        let transaction = self.begin();
        let value = f(transaction.clone(), maybe_committed).await?;
        let info = transaction.commit().await?;
        Ok((value, info))
    }
}
