//! The one seam between the handles ([`crate::Database`],
//! [`crate::Transaction`]) and what is under them: the native transaction
//! layer over an [`crate::engine::Engine`] (this crate's `native` module),
//! or a store that is transactional itself (FoundationDB, crate
//! `meridian-kv-fdb`).
//!
//! Both traits are object safe, so the handles are concrete types over
//! `Arc<dyn …>` and everything above this crate is written once. A backend
//! keeps the interface's semantics (documented on the handles): reads see a
//! snapshot at the read version plus the transaction's own writes,
//! non-snapshot reads conflict, the limits of [`crate::limits`] are refused
//! with the same typed errors (the checks in [`crate::types`]), and commits
//! are durable once answered.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, Either, Ready};

use crate::KvError;
use crate::engine::EngineBatch;
use crate::keys::KeyRange;
use crate::types::{CommitInfo, KeyValue, RangeOption, Watch};

/// A backend's answer: ready at once (the native layer reads its snapshot
/// in memory, so a read costs no allocation) or later (a network round trip).
pub type Answer<'a, T> = Either<Ready<Result<T, KvError>>, BoxFuture<'a, Result<T, KvError>>>;

/// An answer that is ready now.
pub fn ready<'a, T>(result: Result<T, KvError>) -> Answer<'a, T> {
    Either::Left(futures::future::ready(result))
}

/// An answer that comes later.
pub fn later<'a, T>(
    future: impl std::future::Future<Output = Result<T, KvError>> + Send + 'a,
) -> Answer<'a, T> {
    Either::Right(Box::pin(future))
}

/// A database backend.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Starts a transaction.
    fn begin(&self) -> Arc<dyn BackendTransaction>;

    /// The latest committed version, where this process knows it (the
    /// native layer); 0 where versions are read per transaction.
    fn committed_version(&self) -> u64 {
        0
    }

    /// Adds `observer` of every batch this process commits, in commit
    /// order, if every commit goes through this process (the native
    /// layer's committer). Returns false where other processes commit too
    /// (FoundationDB), so no process sees every commit.
    fn observe_commits(&self, observer: Arc<dyn CommitObserver>) -> bool {
        let _ = observer;
        false
    }

    /// Waits until the backend has released its resources once every
    /// handle is gone (the native layer: its committer stopped, so the
    /// engine can be reopened).
    fn closed(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    /// Why the store failed for good, once it has: the native layer's
    /// engine stopped (fail-stop). Never on FoundationDB, whose cluster
    /// recovers from failed disks itself.
    fn failure(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        tokio::sync::watch::channel(None).1
    }

    /// How long commits have been in trouble: the native layer, how long
    /// the commit being written has taken so far; a remote store
    /// (FoundationDB), since the oldest commit still in flight or the first
    /// of an unbroken run of failed ones ([`crate::commit_health`]).
    /// `None` when none is.
    fn write_in_flight_for(&self) -> Option<std::time::Duration> {
        None
    }
}

/// One transaction of a [`Backend`]. The handle [`crate::Transaction`]
/// forwards to it; its documentation is the contract.
#[allow(missing_docs)]
pub trait BackendTransaction: Send + Sync + std::fmt::Debug {
    fn read_version(&self) -> Answer<'_, u64>;
    fn get<'a>(&'a self, key: &'a [u8]) -> Answer<'a, Option<Bytes>>;
    fn get_snapshot<'a>(&'a self, key: &'a [u8]) -> Answer<'a, Option<Bytes>>;
    fn get_range<'a>(&'a self, option: &'a RangeOption) -> Answer<'a, Vec<KeyValue>>;
    fn get_range_snapshot<'a>(&'a self, option: &'a RangeOption) -> Answer<'a, Vec<KeyValue>>;
    fn set(&self, key: &[u8], value: &[u8]) -> Result<(), KvError>;
    fn clear(&self, key: &[u8]) -> Result<(), KvError>;
    fn clear_range(&self, range: &KeyRange) -> Result<(), KvError>;
    fn atomic_add(&self, key: &[u8], delta: i64) -> Result<(), KvError>;
    fn atomic_byte_max(&self, key: &[u8], value: &[u8]) -> Result<(), KvError>;
    fn set_versionstamped_key(&self, key_template: &[u8], value: &[u8]) -> Result<(), KvError>;
    fn set_versionstamped_value(&self, key: &[u8], value_template: &[u8]) -> Result<(), KvError>;
    fn next_user_version(&self) -> u16;
    fn add_read_conflict_key(&self, key: &[u8]);
    fn watch(&self, key: &[u8]) -> Watch;
    fn commit(&self) -> Answer<'_, CommitInfo>;
    /// A backend whose every commit is durable anyway (FoundationDB) keeps
    /// the default, which does nothing.
    fn relax_durability(&self) {}

    /// Called by the run loop ([`crate::Database::run`]) when attempt number
    /// `attempt` (from 1) of this transaction failed with `error`, which
    /// [`KvError::is_retryable`] says may pass on a retry: waits as the
    /// backend's retry policy says and returns the transaction for the next
    /// attempt, or the error that ends the loop (a limit of attempts).
    fn retry(
        &self,
        error: KvError,
        attempt: u32,
    ) -> BoxFuture<'_, Result<Arc<dyn BackendTransaction>, KvError>>;
}

/// Sees every batch the committer writes, in version order: after the batch
/// is durable and readable, before its watches fire and its transactions are
/// answered. What an observer builds from the batches is therefore complete
/// and in order by the time anyone woken by the batch looks.
///
/// It runs on the committer, the one serial path of every commit: it must be
/// quick and must not block.
pub trait CommitObserver: Send + Sync {
    /// Batch `version` was written: `changes` holds each key's final state
    /// (versionstamps filled in) and the ranges it cleared.
    fn committed(&self, version: u64, changes: &EngineBatch);
    /// A batch's write failed with an unknown outcome: it may or may not be
    /// stored, so anything followed up to now may be incomplete.
    fn outcome_unknown(&self);
}
