//! The retry loop: one attempt (run the closure, commit) kept apart from the
//! loop that classifies the error and asks the backend for the next attempt
//! (its backoff, its limit of attempts:
//! [`crate::backend::BackendTransaction::retry`]).

use std::future::Future;

use crate::types::CommitInfo;
use crate::{Database, Transaction, TxnError};

/// Told to a transaction closure: whether an earlier attempt of this same
/// transaction may have committed (its commit ended in
/// [`crate::KvError::CommitUnknownResult`]). An idempotent closure can ignore
/// it; one that is not must check whether its effect is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaybeCommitted(pub bool);

impl Database {
    /// Runs `f` in a transaction and commits it, retrying on conflicts and
    /// other retryable errors with the backend's backoff (the native layer:
    /// jittered exponential, [`crate::RetryOptions`]; FoundationDB: its own).
    ///
    /// `f` may run more than once, so it must be idempotent and free of side
    /// effects outside the transaction (publish after commit, or write an
    /// outbox key in the same transaction).
    ///
    /// # Errors
    /// The closure's own non-retryable errors, non-retryable store errors, or
    /// [`crate::KvError::RetryLimitReached`].
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
    pub async fn run_with_info<T, E, F, Fut>(&self, mut f: F) -> Result<(T, CommitInfo), E>
    where
        F: FnMut(Transaction, MaybeCommitted) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: TxnError + std::error::Error + Send + Sync + 'static,
    {
        let mut maybe_committed = MaybeCommitted(false);
        let mut transaction = self.begin();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let error = match Self::attempt(&transaction, &mut f, maybe_committed).await {
                Ok(done) => return Ok(done),
                Err(error) => error,
            };
            let Some(kv) = error.as_kv() else {
                return Err(error);
            };
            if !kv.is_retryable() {
                return Err(error);
            }
            maybe_committed.0 |= kv.is_maybe_committed();
            transaction = match transaction.backend().retry(kv.clone(), attempt).await {
                Ok(next) => Transaction::from_backend(next),
                Err(end) => return Err(end.into()),
            };
        }
    }

    async fn attempt<T, E, F, Fut>(
        transaction: &Transaction,
        f: &mut F,
        maybe_committed: MaybeCommitted,
    ) -> Result<(T, CommitInfo), E>
    where
        F: FnMut(Transaction, MaybeCommitted) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: TxnError,
    {
        let value = f(transaction.clone(), maybe_committed).await?;
        let info = transaction.commit().await?;
        Ok((value, info))
    }
}
