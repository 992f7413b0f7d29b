//! The native transaction layer: FoundationDB's semantics over any
//! [`Engine`] — transactions with snapshot reads at a read version,
//! read-your-writes and conflict ranges ([`transaction`]), one committer per
//! database that resolves them together and writes each batch with one
//! durable write (group commit, [`database`], [`resolver`]).
//!
//! It is the [`Backend`] of every embedded engine (fjall, memory);
//! [`Database::open`] starts it.

mod atomic;
mod committer;
mod database;
mod resolver;
mod transaction;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use meridian_seams::{Backoff, Rng, SharedClock};

pub use database::{DatabaseOptions, RetryOptions};

use crate::backend::{Answer, Backend, BackendTransaction, CommitObserver, later, ready};
use crate::engine::Engine;
use crate::keys::KeyRange;
use crate::types::{CommitInfo, KeyValue, RangeOption, Watch};
use crate::{Database, KvError};
use database::NativeDatabase;
use transaction::NativeTransaction;

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
        let native = NativeDatabase::open(engine, clock, rng, options)?;
        Ok(Self::from_backend(Arc::new(native)))
    }
}

impl Backend for NativeDatabase {
    fn begin(&self) -> Arc<dyn BackendTransaction> {
        Arc::new(NativeTransaction::begin(self))
    }

    fn committed_version(&self) -> u64 {
        NativeDatabase::committed_version(self)
    }

    fn observe_commits(&self, observer: Arc<dyn CommitObserver>) -> bool {
        NativeDatabase::observe_commits(self, observer);
        true
    }

    fn closed(&self) -> BoxFuture<'static, ()> {
        Box::pin(self.stopped())
    }

    fn failure(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        NativeDatabase::failure(self)
    }

    fn write_in_flight_for(&self) -> Option<std::time::Duration> {
        NativeDatabase::write_in_flight_for(self)
    }
}

impl BackendTransaction for NativeTransaction {
    fn read_version(&self) -> Answer<'_, u64> {
        ready(Ok(NativeTransaction::read_version(self)))
    }

    fn get<'a>(&'a self, key: &'a [u8]) -> Answer<'a, Option<Bytes>> {
        ready(self.read_key(key, false))
    }

    fn get_snapshot<'a>(&'a self, key: &'a [u8]) -> Answer<'a, Option<Bytes>> {
        ready(self.read_key(key, true))
    }

    fn get_range<'a>(&'a self, option: &'a RangeOption) -> Answer<'a, Vec<KeyValue>> {
        ready(self.read_range(option, false))
    }

    fn get_range_snapshot<'a>(&'a self, option: &'a RangeOption) -> Answer<'a, Vec<KeyValue>> {
        ready(self.read_range(option, true))
    }

    fn set(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        NativeTransaction::set(self, key, value)
    }

    fn clear(&self, key: &[u8]) -> Result<(), KvError> {
        NativeTransaction::clear(self, key)
    }

    fn clear_range(&self, range: &KeyRange) -> Result<(), KvError> {
        NativeTransaction::clear_range(self, range)
    }

    fn atomic_add(&self, key: &[u8], delta: i64) -> Result<(), KvError> {
        NativeTransaction::atomic_add(self, key, delta)
    }

    fn atomic_byte_max(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        NativeTransaction::atomic_byte_max(self, key, value)
    }

    fn set_versionstamped_key(&self, key_template: &[u8], value: &[u8]) -> Result<(), KvError> {
        NativeTransaction::set_versionstamped_key(self, key_template, value)
    }

    fn set_versionstamped_value(&self, key: &[u8], value_template: &[u8]) -> Result<(), KvError> {
        NativeTransaction::set_versionstamped_value(self, key, value_template)
    }

    fn next_user_version(&self) -> u16 {
        NativeTransaction::next_user_version(self)
    }

    fn add_read_conflict_key(&self, key: &[u8]) {
        NativeTransaction::add_read_conflict_key(self, key);
    }

    fn relax_durability(&self) {
        NativeTransaction::relax_durability(self);
    }

    fn watch(&self, key: &[u8]) -> Watch {
        NativeTransaction::watch(self, key)
    }

    fn commit(&self) -> Answer<'_, CommitInfo> {
        later(NativeTransaction::commit(self))
    }

    /// Jittered exponential backoff (the injected RNG draws the jitter, so a
    /// simulated run replays it), then a fresh transaction at the latest
    /// version, carrying the backoff on to the next retry.
    fn retry(
        &self,
        error: KvError,
        attempt: u32,
    ) -> BoxFuture<'_, Result<Arc<dyn BackendTransaction>, KvError>> {
        let db = self.database().clone();
        let options = db.retry_options();
        let mut retries = self.retries().cloned().unwrap_or_else(|| {
            Backoff::new(options.initial_backoff, options.max_backoff).with_jitter(db.rng().clone())
        });
        let max_attempts = options.max_attempts;
        Box::pin(async move {
            if attempt >= max_attempts {
                return Err(KvError::RetryLimitReached {
                    attempts: attempt,
                    last: Box::new(error),
                });
            }
            retries.wait().await;
            let next: Arc<dyn BackendTransaction> =
                Arc::new(NativeTransaction::begin_retry(&db, Some(retries)));
            Ok(next)
        })
    }
}
