//! The public handles, [`Database`] and [`Transaction`]: one interface over
//! the backends — the native transaction layer over an [`crate::engine::Engine`]
//! (fjall, memory) and, with the `fdb` feature, FoundationDB itself.
//!
//! Everything above this crate (the store, the core) is written once against
//! these two types, so the embedded backends' tests cover that code for
//! FoundationDB too.

use std::sync::Arc;

use bytes::Bytes;
use meridian_seams::{Rng, SharedClock};

use crate::database::{CommitInfo, CommitObserver, DatabaseOptions, NativeDatabase};
use crate::engine::Engine;
use crate::runner::RetryOptions;
use crate::transaction::{KeyValue, NativeTransaction, RangeOption, Watch};
use crate::{KeyRange, KvError};

#[derive(Clone)]
pub(crate) enum DbKind {
    Native(NativeDatabase),
    #[cfg(feature = "fdb")]
    Fdb(Arc<crate::fdb::FdbDatabase>),
}

/// A handle to a transactional database. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pub(crate) kind: DbKind,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            DbKind::Native(db) => db.fmt(f),
            #[cfg(feature = "fdb")]
            DbKind::Fdb(_) => f.write_str("Database(FoundationDB)"),
        }
    }
}

impl Database {
    /// Opens a database over `engine` (the native transaction layer) and
    /// starts its committer task on the current tokio runtime. The committer
    /// stops when the last handle drops.
    ///
    /// # Errors
    /// When the engine cannot read its stored version.
    pub fn open(
        engine: Arc<dyn Engine>,
        clock: SharedClock,
        rng: Rng,
        options: DatabaseOptions,
    ) -> Result<Self, KvError> {
        Ok(Self {
            kind: DbKind::Native(NativeDatabase::open(engine, clock, rng, options)?),
        })
    }

    /// Opens the FoundationDB cluster of `cluster_file` (the default cluster
    /// file when `None`), booting the client network on first use.
    ///
    /// # Errors
    /// When the client cannot start or the cluster file cannot be read.
    #[cfg(feature = "fdb")]
    pub fn open_fdb(cluster_file: Option<&str>) -> Result<Self, KvError> {
        Ok(Self {
            kind: DbKind::Fdb(Arc::new(crate::fdb::FdbDatabase::open(cluster_file)?)),
        })
    }

    /// Drops this handle and waits until the backend has released its
    /// resources (for the native layer: the committer stopped and the engine
    /// can be reopened). Waits for every other clone to be dropped too.
    pub async fn close(self) {
        match self.kind {
            DbKind::Native(db) => db.close().await,
            #[cfg(feature = "fdb")]
            DbKind::Fdb(_) => {}
        }
    }

    /// Starts a transaction.
    pub fn begin(&self) -> Transaction {
        match &self.kind {
            DbKind::Native(db) => Transaction {
                kind: TxKind::Native(db.begin()),
            },
            #[cfg(feature = "fdb")]
            DbKind::Fdb(db) => Transaction {
                kind: TxKind::Fdb(db.begin()),
            },
        }
    }

    /// The latest committed version (native backends; FoundationDB's is
    /// read per transaction, so this is 0 there).
    pub fn committed_version(&self) -> u64 {
        match &self.kind {
            DbKind::Native(db) => db.committed_version(),
            #[cfg(feature = "fdb")]
            DbKind::Fdb(_) => 0,
        }
    }

    /// Adds `observer` of every batch this process commits, in commit
    /// order, if the backend commits through this process's committer (the
    /// native layer). Returns false on FoundationDB: other processes commit
    /// to the same cluster, so no process sees every commit.
    pub fn observe_commits(&self, observer: Arc<dyn CommitObserver>) -> bool {
        match &self.kind {
            DbKind::Native(db) => {
                db.observe_commits(observer);
                true
            }
            #[cfg(feature = "fdb")]
            DbKind::Fdb(_) => false,
        }
    }

    pub(crate) fn native(&self) -> Option<&NativeDatabase> {
        match &self.kind {
            DbKind::Native(db) => Some(db),
            #[cfg(feature = "fdb")]
            DbKind::Fdb(_) => None,
        }
    }

    pub(crate) fn retry_options(&self) -> RetryOptions {
        self.native()
            .map(|db| db.retry_options().clone())
            .unwrap_or_default()
    }

    pub(crate) fn rng(&self) -> Option<&Rng> {
        self.native().map(NativeDatabase::rng)
    }
}

#[derive(Clone)]
pub(crate) enum TxKind {
    Native(NativeTransaction),
    #[cfg(feature = "fdb")]
    Fdb(crate::fdb::FdbTransaction),
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
    pub(crate) kind: TxKind,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            TxKind::Native(tx) => tx.fmt(f),
            #[cfg(feature = "fdb")]
            TxKind::Fdb(_) => f.write_str("Transaction(FoundationDB)"),
        }
    }
}

/// Forwards a call to the backend's transaction.
macro_rules! forward {
    ($self:ident, $tx:ident => $call:expr) => {
        match &$self.kind {
            TxKind::Native($tx) => $call,
            #[cfg(feature = "fdb")]
            TxKind::Fdb($tx) => $call,
        }
    };
}

impl Transaction {
    /// The version this transaction reads at.
    ///
    /// # Errors
    /// Backend failures (FoundationDB fetches it from the cluster).
    pub async fn read_version(&self) -> Result<u64, KvError> {
        match &self.kind {
            TxKind::Native(tx) => Ok(tx.read_version()),
            #[cfg(feature = "fdb")]
            TxKind::Fdb(tx) => tx.read_version().await,
        }
    }

    /// Reads `key`, adding a read conflict on it.
    ///
    /// # Errors
    /// Backend failures or [`KvError::TransactionTooOld`].
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        forward!(self, tx => tx.get(key).await)
    }

    /// [`Transaction::get`] without a read conflict.
    ///
    /// # Errors
    /// As [`Transaction::get`].
    pub async fn get_snapshot(&self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        forward!(self, tx => tx.get_snapshot(key).await)
    }

    /// Reads a range (forward or reverse, up to a limit), adding a read
    /// conflict on the part of the range actually read.
    ///
    /// # Errors
    /// Backend failures, [`KvError::InvertedRange`], [`KvError::TransactionTooOld`].
    pub async fn get_range(&self, option: &RangeOption) -> Result<Vec<KeyValue>, KvError> {
        forward!(self, tx => tx.get_range(option).await)
    }

    /// [`Transaction::get_range`] without a read conflict.
    ///
    /// # Errors
    /// As [`Transaction::get_range`].
    pub async fn get_range_snapshot(&self, option: &RangeOption) -> Result<Vec<KeyValue>, KvError> {
        forward!(self, tx => tx.get_range_snapshot(option).await)
    }

    /// Writes `value` at `key`.
    ///
    /// # Errors
    /// [`KvError::KeyTooLarge`], [`KvError::ValueTooLarge`],
    /// [`KvError::KeyOutsideLegalRange`], [`KvError::TransactionTooLarge`].
    pub fn set(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        forward!(self, tx => tx.set(key, value))
    }

    /// Removes `key`.
    ///
    /// # Errors
    /// As [`Transaction::set`].
    pub fn clear(&self, key: &[u8]) -> Result<(), KvError> {
        forward!(self, tx => tx.clear(key))
    }

    /// Removes every key in `range`.
    ///
    /// # Errors
    /// [`KvError::InvertedRange`], [`KvError::TransactionTooLarge`].
    pub fn clear_range(&self, range: &KeyRange) -> Result<(), KvError> {
        forward!(self, tx => tx.clear_range(range))
    }

    /// Adds `delta` to the little-endian integer at `key` (missing = 0),
    /// without a read conflict: concurrent adds never conflict.
    ///
    /// # Errors
    /// As [`Transaction::set`].
    pub fn atomic_add(&self, key: &[u8], delta: i64) -> Result<(), KvError> {
        forward!(self, tx => tx.atomic_add(key, delta))
    }

    /// Sets `key` to the larger (bytewise) of its value and `value`, without
    /// a read conflict.
    ///
    /// # Errors
    /// As [`Transaction::set`].
    pub fn atomic_byte_max(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        forward!(self, tx => tx.atomic_byte_max(key, value))
    }

    /// Writes `value` at a key completed at commit with the commit's
    /// versionstamp (FoundationDB's template: payload, then the 4-byte
    /// little-endian offset of the 10-byte placeholder).
    ///
    /// # Errors
    /// [`KvError::InvalidVersionstampOffset`] and the limits of [`Transaction::set`].
    pub fn set_versionstamped_key(&self, key_template: &[u8], value: &[u8]) -> Result<(), KvError> {
        forward!(self, tx => tx.set_versionstamped_key(key_template, value))
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
        forward!(self, tx => tx.set_versionstamped_value(key, value_template))
    }

    /// A fresh user version (the 2 bytes after the commit versionstamp that
    /// order several versionstamped writes of one transaction).
    pub fn next_user_version(&self) -> u16 {
        forward!(self, tx => tx.next_user_version())
    }

    /// Adds a read conflict on `key` without reading it.
    pub fn add_read_conflict_key(&self, key: &[u8]) {
        forward!(self, tx => tx.add_read_conflict_key(key))
    }

    /// A future that resolves once a transaction committed after this one
    /// writes `key`. The watch is registered when this transaction commits.
    pub fn watch(&self, key: &[u8]) -> Watch {
        forward!(self, tx => tx.watch(key))
    }

    /// Commits the transaction (a transaction run by [`Database::run`] is
    /// committed by the run loop instead).
    ///
    /// # Errors
    /// [`KvError::NotCommitted`] on a conflict, [`KvError::TransactionTooOld`],
    /// [`KvError::CommitUnknownResult`] when the outcome is unknown,
    /// [`KvError::Closed`], and FoundationDB's own errors.
    pub async fn commit(&self) -> Result<CommitInfo, KvError> {
        forward!(self, tx => tx.commit().await)
    }
}
