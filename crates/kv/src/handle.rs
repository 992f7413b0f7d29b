//! The public handles, [`Database`] and [`Transaction`]: one interface over
//! every backend (the seam is [`crate::backend`]), the native transaction
//! layer over an engine (fjall, memory) or FoundationDB.
//!
//! Everything above this crate (the store, the core) is written once against
//! these two types, so the embedded backends' tests cover that code for
//! FoundationDB too.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{Backend, BackendTransaction, CommitObserver};
use crate::types::{CommitInfo, KeyValue, RangeOption, Watch};
use crate::{KeyRange, KvError};

/// A handle to a transactional database. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.backend.fmt(f)
    }
}

impl Database {
    /// A database over `backend`. The native layer opens with
    /// [`Database::open`]; other backends (FoundationDB) come from their
    /// own crates.
    pub fn from_backend(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    /// Drops this handle and waits until the backend has released its
    /// resources (for the native layer: the committer stopped and the engine
    /// can be reopened). Waits for every other clone to be dropped too.
    pub async fn close(self) {
        let closed = self.backend.closed();
        drop(self);
        closed.await;
    }

    /// Starts a transaction.
    pub fn begin(&self) -> Transaction {
        Transaction::from_backend(self.backend.begin())
    }

    /// The latest committed version (native backends; FoundationDB's is
    /// read per transaction, so this is 0 there).
    pub fn committed_version(&self) -> u64 {
        self.backend.committed_version()
    }

    /// Adds `observer` of every batch this process commits, in commit
    /// order, if the backend commits through this process's committer (the
    /// native layer). Returns false on FoundationDB: other processes commit
    /// to the same cluster, so no process sees every commit.
    pub fn observe_commits(&self, observer: Arc<dyn CommitObserver>) -> bool {
        self.backend.observe_commits(observer)
    }

    /// Why the store failed for good, once it has (fail-stop: every later
    /// commit is refused with [`KvError::StoreFailed`]). Always `None` on
    /// FoundationDB.
    pub fn failure(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.backend.failure()
    }

    /// How long the commit the engine is writing has taken so far; `None`
    /// when no write is in flight, or on FoundationDB.
    pub fn write_in_flight_for(&self) -> Option<std::time::Duration> {
        self.backend.write_in_flight_for()
    }
}

/// A transaction; cheap to clone (clones share it), which is how
/// [`Database::run`] hands it to a closure that may run several times.
///
/// Reads see a consistent snapshot at the read version plus this
/// transaction's own writes. Non-snapshot reads add read conflict ranges:
/// if another transaction commits a write into one of them after the read
/// version, this one fails with [`KvError::NotCommitted`] and is retried.
#[derive(Clone)]
pub struct Transaction {
    inner: Arc<dyn BackendTransaction>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Transaction {
    /// The handle of a backend's transaction.
    pub fn from_backend(inner: Arc<dyn BackendTransaction>) -> Self {
        Self { inner }
    }

    pub(crate) fn backend(&self) -> &Arc<dyn BackendTransaction> {
        &self.inner
    }

    /// The version this transaction reads at.
    ///
    /// # Errors
    /// Backend failures (FoundationDB fetches it from the cluster).
    pub async fn read_version(&self) -> Result<u64, KvError> {
        self.inner.read_version().await
    }

    /// Reads `key`, adding a read conflict on it.
    ///
    /// # Errors
    /// Backend failures or [`KvError::TransactionTooOld`].
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        self.inner.get(key).await
    }

    /// [`Transaction::get`] without a read conflict.
    ///
    /// # Errors
    /// As [`Transaction::get`].
    pub async fn get_snapshot(&self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        self.inner.get_snapshot(key).await
    }

    /// Reads a range (forward or reverse, up to a limit), adding a read
    /// conflict on the part of the range actually read.
    ///
    /// # Errors
    /// Backend failures, [`KvError::InvertedRange`], [`KvError::TransactionTooOld`].
    pub async fn get_range(&self, option: &RangeOption) -> Result<Vec<KeyValue>, KvError> {
        self.inner.get_range(option).await
    }

    /// [`Transaction::get_range`] without a read conflict.
    ///
    /// # Errors
    /// As [`Transaction::get_range`].
    pub async fn get_range_snapshot(&self, option: &RangeOption) -> Result<Vec<KeyValue>, KvError> {
        self.inner.get_range_snapshot(option).await
    }

    /// Writes `value` at `key`.
    ///
    /// # Errors
    /// [`KvError::KeyTooLarge`], [`KvError::ValueTooLarge`],
    /// [`KvError::KeyOutsideLegalRange`], [`KvError::TransactionTooLarge`].
    pub fn set(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.inner.set(key, value)
    }

    /// Removes `key`.
    ///
    /// # Errors
    /// As [`Transaction::set`].
    pub fn clear(&self, key: &[u8]) -> Result<(), KvError> {
        self.inner.clear(key)
    }

    /// Removes every key in `range`.
    ///
    /// # Errors
    /// [`KvError::InvertedRange`], [`KvError::TransactionTooLarge`].
    pub fn clear_range(&self, range: &KeyRange) -> Result<(), KvError> {
        self.inner.clear_range(range)
    }

    /// Adds `delta` to the little-endian integer at `key` (missing = 0),
    /// without a read conflict: concurrent adds never conflict.
    ///
    /// # Errors
    /// As [`Transaction::set`].
    pub fn atomic_add(&self, key: &[u8], delta: i64) -> Result<(), KvError> {
        self.inner.atomic_add(key, delta)
    }

    /// Sets `key` to the larger (bytewise) of its value and `value`, without
    /// a read conflict.
    ///
    /// # Errors
    /// As [`Transaction::set`].
    pub fn atomic_byte_max(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.inner.atomic_byte_max(key, value)
    }

    /// Writes `value` at a key completed at commit with the commit's
    /// versionstamp (FoundationDB's template: payload, then the 4-byte
    /// little-endian offset of the 10-byte placeholder).
    ///
    /// # Errors
    /// [`KvError::InvalidVersionstampOffset`] and the limits of [`Transaction::set`].
    pub fn set_versionstamped_key(&self, key_template: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.inner.set_versionstamped_key(key_template, value)
    }

    /// Writes at `key` a value completed at commit with the versionstamp.
    ///
    /// # Errors
    /// As [`Transaction::set_versionstamped_key`].
    pub fn set_versionstamped_value(
        &self,
        key: &[u8],
        value_template: &[u8],
    ) -> Result<(), KvError> {
        self.inner.set_versionstamped_value(key, value_template)
    }

    /// A fresh user version (the 2 bytes after the commit versionstamp that
    /// order several versionstamped writes of one transaction).
    pub fn next_user_version(&self) -> u16 {
        self.inner.next_user_version()
    }

    /// Adds a read conflict on `key` without reading it.
    pub fn add_read_conflict_key(&self, key: &[u8]) {
        self.inner.add_read_conflict_key(key)
    }

    /// A future that resolves once a transaction committed after this one
    /// writes `key`. The watch is registered when this transaction commits.
    pub fn watch(&self, key: &[u8]) -> Watch {
        self.inner.watch(key)
    }

    /// Lets this transaction's commit be acknowledged once it is written,
    /// before it reaches the disk: it reaches the disk with the next commit
    /// that is not relaxed (commits reach the disk in order), or when the
    /// engine's journal is next synced. A crash of the machine may lose it;
    /// a crash of the process alone does not. Only for writes whose loss is
    /// harmless because they are repeated (a device's cursor, which a lost
    /// write only moves back, so already delivered messages are delivered
    /// again and the client drops them by id). A backend whose every commit
    /// is durable ignores it.
    pub fn relax_durability(&self) {
        self.inner.relax_durability();
    }

    /// Commits the transaction (a transaction run by [`Database::run`] is
    /// committed by the run loop instead).
    ///
    /// # Errors
    /// [`KvError::NotCommitted`] on a conflict, [`KvError::TransactionTooOld`],
    /// [`KvError::CommitUnknownResult`] when the outcome is unknown,
    /// [`KvError::Closed`], and FoundationDB's own errors.
    pub async fn commit(&self) -> Result<CommitInfo, KvError> {
        self.inner.commit().await
    }
}
