//! The backend: [`FdbDatabase`] and [`FdbTransaction`] behind
//! `meridian-kv`'s seam, through the `foundationdb` crate.
//!
//! FoundationDB is a transactional store itself, so it sits beside the
//! native transaction layer rather than under it: reads, conflict ranges,
//! versionstamps, atomic operations, watches and limits are FoundationDB's
//! own. Retries follow FoundationDB's canonical loop: the interface's run
//! loop hands a failed attempt's error to [`FdbTransaction`]'s `retry`,
//! which calls FoundationDB's `on_error` (its backoff, its classification,
//! the transaction reset) and the loop runs the closure again on the reset
//! transaction; `commit_unknown_result` reaches the closure as
//! maybe-committed. Keys use the same tuple encoding and versionstamp
//! template as every other backend, so the store layer is unchanged.
//!
//! Nothing here runs on machines without `libfdb_c`; the conformance suite
//! runs it wherever `FDB_CLUSTER_FILE` is set.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use foundationdb::options::{
    ConflictRangeType, DatabaseOption, MutationType, StreamingMode, TransactionOption,
};
use foundationdb::{FdbError, KeySelector, TransactionCommitError};
use futures::future::BoxFuture;

use meridian_kv::backend::{Answer, Backend, BackendTransaction, later};
use meridian_kv::commit_health::CommitHealth;
use meridian_kv::limits::MAX_TRANSACTION_BYTES;
use meridian_kv::types::{
    CommitInfo, KeyValue, RangeOption, Watch, check_key, check_value, split_versionstamp_template,
};
use meridian_kv::{Database, KeyRange, KvError, key_after};
use meridian_seams::SharedClock;

/// The client network of this process. FoundationDB can start it only
/// once per process, and its guard must be dropped before the process exits
/// so the network thread stops cleanly: [`shutdown`] does that, and the
/// `meridian` binary calls it on the way out.
enum Network {
    NotStarted,
    /// Held only to be dropped by [`shutdown`].
    #[allow(dead_code)]
    Running(foundationdb::api::NetworkAutoStop),
    Failed(String),
    Stopped,
}

static NETWORK: Mutex<Network> = Mutex::new(Network::NotStarted);

/// Outstanding watches allowed per client (FoundationDB's maximum).
const MAX_WATCHES: i32 = 1_000_000;
/// A transaction's time limit, ms (the interface's 5 s), and how many times
/// the run loop retries before giving up — FoundationDB's loop has neither
/// by default.
const TIMEOUT_MS: i32 = 5_000;
const RETRY_LIMIT: i32 = 100;

/// The name the interface's errors give this backend.
const BACKEND: &str = "FoundationDB";

fn network_error(message: String) -> KvError {
    KvError::Backend {
        backend: BACKEND,
        code: 0,
        message,
        retryable: false,
        maybe_committed: false,
    }
}

fn boot_network() -> Result<(), KvError> {
    let mut network = NETWORK.lock().unwrap_or_else(|p| p.into_inner());
    match &*network {
        Network::Running(_) => return Ok(()),
        Network::Failed(reason) => {
            return Err(network_error(format!(
                "starting the FoundationDB client: {reason}"
            )));
        }
        Network::Stopped => {
            return Err(network_error(
                "the FoundationDB client was stopped and cannot start again in this process".into(),
            ));
        }
        Network::NotStarted => {}
    }
    // SAFETY: `boot` runs at most once per process (the state above is
    // `NotStarted` only before the first call, under the lock), and its
    // guard is kept until `shutdown` drops it, after which no database
    // handle is used (the binary calls it once its runtime has stopped).
    #[allow(unsafe_code)]
    let booted = unsafe {
        foundationdb::api::FdbApiBuilder::default()
            .build()
            .and_then(|api| api.boot())
    };
    match booted {
        Ok(guard) => {
            *network = Network::Running(guard);
            Ok(())
        }
        Err(error) => {
            *network = Network::Failed(error.to_string());
            Err(network_error(format!(
                "starting the FoundationDB client: {error}"
            )))
        }
    }
}

/// Stops the FoundationDB client network, if it runs: call once, after
/// every database handle is gone, before the process exits.
pub fn shutdown() {
    let mut network = NETWORK.lock().unwrap_or_else(|p| p.into_inner());
    if let Network::Running(_) = &*network {
        // Dropping the guard stops the network thread and waits for it.
        *network = Network::Stopped;
    }
}

/// A FoundationDB error as the interface's error: the typed limit errors
/// where FoundationDB has one, otherwise its code with its own retry
/// classification.
fn kv_error(error: FdbError) -> KvError {
    match error.code() {
        2101 => KvError::TransactionTooLarge { size: 0 },
        2102 => KvError::KeyTooLarge { size: 0 },
        2103 => KvError::ValueTooLarge { size: 0 },
        code => KvError::Backend {
            backend: BACKEND,
            code,
            message: error.message().to_string(),
            retryable: error.is_retryable(),
            maybe_committed: error.is_maybe_committed(),
        },
    }
}

/// Opens the FoundationDB cluster of `cluster_file` (the default cluster
/// file when `None`), booting the client network on first use. Its
/// commits are timed on `clock` and recorded under `metrics_label`
/// (`meridian_kv_engine_write_seconds{store}`), and their health is what
/// [`Backend::write_in_flight_for`] reports to the core's watchdog.
///
/// # Errors
/// When the client cannot start or the cluster file cannot be read.
pub fn open(
    cluster_file: Option<&str>,
    metrics_label: &str,
    clock: SharedClock,
) -> Result<Database, KvError> {
    boot_network()?;
    let db = foundationdb::Database::new(cluster_file).map_err(kv_error)?;
    // Every delivery loop waiting on an idle inbox holds a watch: the
    // default cap of 10,000 per client is far below a gateway's sessions.
    db.set_option(DatabaseOption::MaxWatches(MAX_WATCHES))
        .map_err(kv_error)?;
    Ok(Database::from_backend(Arc::new(FdbDatabase {
        db,
        health: Arc::new(CommitHealth::new(metrics_label, clock)),
    })))
}

/// A FoundationDB cluster.
struct FdbDatabase {
    db: foundationdb::Database,
    /// This process's commits: their time and whether the cluster takes
    /// them.
    health: Arc<CommitHealth>,
}

impl std::fmt::Debug for FdbDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Database(FoundationDB)")
    }
}

impl Backend for FdbDatabase {
    fn begin(&self) -> Arc<dyn BackendTransaction> {
        let slot = match self.db.create_trx() {
            // The interface's 5 s limit and a bound on attempts:
            // FoundationDB's loop has neither by default. Both survive the
            // resets of `on_error`.
            Ok(trx) => match trx
                .set_option(TransactionOption::Timeout(TIMEOUT_MS))
                .and_then(|()| trx.set_option(TransactionOption::RetryLimit(RETRY_LIMIT)))
            {
                Ok(()) => Slot::Open(trx),
                Err(error) => Slot::Failed(error),
            },
            Err(error) => Slot::Failed(error),
        };
        Arc::new(FdbTransaction::new(slot, self.health.clone()))
    }

    fn write_in_flight_for(&self) -> Option<std::time::Duration> {
        self.health.trouble_for()
    }
}

/// Where a FoundationDB transaction is in its life.
enum Slot {
    /// Taking reads and writes.
    Open(foundationdb::Transaction),
    /// Its commit failed: `on_error` decides whether it is retried.
    CommitFailed(TransactionCommitError),
    /// Committed, or handed to `on_error`.
    Done,
    /// Creating it failed; every operation reports this.
    Failed(FdbError),
}

/// A FoundationDB transaction behind the interface's [`meridian_kv::Transaction`].
struct FdbTransaction {
    slot: Mutex<Slot>,
    next_user_version: AtomicU16,
    /// Bytes of mutations so far: the limits are checked here, before the
    /// cluster sees them, so every backend refuses with the same typed error
    /// at the same call (FoundationDB would report them at commit).
    size: AtomicUsize,
    /// The database's commit health, told of this transaction's commit.
    health: Arc<CommitHealth>,
}

impl std::fmt::Debug for FdbTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transaction(FoundationDB)")
    }
}

impl FdbTransaction {
    fn new(slot: Slot, health: Arc<CommitHealth>) -> Self {
        Self {
            health,
            slot: Mutex::new(slot),
            next_user_version: AtomicU16::new(0),
            size: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a mutation of `key` and `value` against the interface's limits
    /// and counts it towards the transaction size.
    fn admit(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        check_value(value)?;
        let added = key.len() + value.len();
        let size = self.size.fetch_add(added, Ordering::Relaxed) + added;
        if size > MAX_TRANSACTION_BYTES {
            return Err(KvError::TransactionTooLarge { size });
        }
        Ok(())
    }

    /// Calls `op` on the open transaction. Operations return futures that
    /// do not borrow it, so no lock is held across an await.
    fn with<R>(&self, op: impl FnOnce(&foundationdb::Transaction) -> R) -> Result<R, KvError> {
        match &*self.lock() {
            Slot::Open(trx) => Ok(op(trx)),
            Slot::Failed(error) => Err(kv_error(*error)),
            Slot::CommitFailed(_) | Slot::Done => Err(KvError::Closed),
        }
    }

    async fn read(&self, key: &[u8], snapshot: bool) -> Result<Option<Bytes>, KvError> {
        let value = self.with(|trx| trx.get(key, snapshot))?.await;
        value
            .map(|slice| slice.map(|v| Bytes::copy_from_slice(&v)))
            .map_err(kv_error)
    }

    async fn range(&self, option: &RangeOption, snapshot: bool) -> Result<Vec<KeyValue>, KvError> {
        let range = &option.range;
        if range.begin > range.end {
            return Err(KvError::InvertedRange);
        }
        let mut out = Vec::new();
        let mut next = Some(foundationdb::RangeOption {
            begin: KeySelector::first_greater_or_equal(range.begin.clone()),
            end: KeySelector::first_greater_or_equal(range.end.clone()),
            limit: (option.limit > 0).then_some(option.limit),
            reverse: option.reverse,
            mode: StreamingMode::WantAll,
            ..foundationdb::RangeOption::default()
        });
        let mut iteration = 1;
        while let Some(request) = next.take() {
            let batch = self
                .with(|trx| trx.get_range(&request, iteration, snapshot))?
                .await
                .map_err(kv_error)?;
            out.extend(batch.iter().map(|kv| KeyValue {
                key: Bytes::copy_from_slice(kv.key()),
                value: Bytes::copy_from_slice(kv.value()),
            }));
            next = request.next_range(&batch);
            iteration += 1;
        }
        Ok(out)
    }

    async fn commit_now(&self) -> Result<CommitInfo, KvError> {
        let slot = std::mem::replace(&mut *self.lock(), Slot::Done);
        let trx = match slot {
            Slot::Open(trx) => trx,
            Slot::Failed(error) => return Err(kv_error(error)),
            Slot::CommitFailed(_) | Slot::Done => return Err(KvError::Closed),
        };
        let versionstamp = trx.get_versionstamp();
        let ticket = self.health.sending();
        let committed = match trx.commit().await {
            Ok(committed) => {
                self.health.succeeded(ticket);
                committed
            }
            Err(failed) => {
                self.health.failed(ticket);
                let error = kv_error(*failed);
                *self.lock() = Slot::CommitFailed(failed);
                return Err(error);
            }
        };
        let version = committed.committed_version().map_err(kv_error)?.max(0) as u64;
        // Ready after the commit; an error means nothing was versionstamped
        // (a read-only transaction).
        let versionstamp = versionstamp
            .await
            .ok()
            .and_then(|raw| <[u8; 10]>::try_from(&raw[..]).ok());
        Ok(CommitInfo {
            version,
            versionstamp,
        })
    }

    /// FoundationDB's `on_error`: its backoff, then the transaction reset for
    /// the next attempt, or the error when it is not retryable or the retry
    /// limit is reached.
    async fn on_error(&self, error: KvError) -> Result<Arc<dyn BackendTransaction>, KvError> {
        let KvError::Backend { code, .. } = &error else {
            return Err(error);
        };
        let code = *code;
        let slot = std::mem::replace(&mut *self.lock(), Slot::Done);
        let reset = match slot {
            Slot::Open(trx) => trx.on_error(FdbError::from_code(code)).await,
            Slot::CommitFailed(failed) => failed.on_error().await,
            Slot::Failed(_) | Slot::Done => return Err(error),
        };
        let trx = reset.map_err(kv_error)?;
        Ok(Arc::new(Self::new(Slot::Open(trx), self.health.clone())))
    }
}

impl BackendTransaction for FdbTransaction {
    fn read_version(&self) -> Answer<'_, u64> {
        later(async {
            let version = self.with(|trx| trx.get_read_version())?.await;
            version.map(|v| v.max(0) as u64).map_err(kv_error)
        })
    }

    fn get<'a>(&'a self, key: &'a [u8]) -> Answer<'a, Option<Bytes>> {
        later(self.read(key, false))
    }

    fn get_snapshot<'a>(&'a self, key: &'a [u8]) -> Answer<'a, Option<Bytes>> {
        later(self.read(key, true))
    }

    fn get_range<'a>(&'a self, option: &'a RangeOption) -> Answer<'a, Vec<KeyValue>> {
        later(self.range(option, false))
    }

    fn get_range_snapshot<'a>(&'a self, option: &'a RangeOption) -> Answer<'a, Vec<KeyValue>> {
        later(self.range(option, true))
    }

    fn set(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.admit(key, value)?;
        self.with(|trx| trx.set(key, value))
    }

    fn clear(&self, key: &[u8]) -> Result<(), KvError> {
        self.admit(key, &[])?;
        self.with(|trx| trx.clear(key))
    }

    fn clear_range(&self, range: &KeyRange) -> Result<(), KvError> {
        if range.begin > range.end {
            return Err(KvError::InvertedRange);
        }
        self.with(|trx| trx.clear_range(&range.begin, &range.end))
    }

    fn atomic_add(&self, key: &[u8], delta: i64) -> Result<(), KvError> {
        self.admit(key, &delta.to_le_bytes())?;
        self.with(|trx| trx.atomic_op(key, &delta.to_le_bytes(), MutationType::Add))
    }

    fn atomic_byte_max(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.admit(key, value)?;
        self.with(|trx| trx.atomic_op(key, value, MutationType::ByteMax))
    }

    fn set_versionstamped_key(&self, key_template: &[u8], value: &[u8]) -> Result<(), KvError> {
        let (key, _) = split_versionstamp_template(key_template)?;
        self.admit(&key, value)?;
        self.with(|trx| trx.atomic_op(key_template, value, MutationType::SetVersionstampedKey))
    }

    fn set_versionstamped_value(&self, key: &[u8], value_template: &[u8]) -> Result<(), KvError> {
        let (value, _) = split_versionstamp_template(value_template)?;
        self.admit(key, &value)?;
        self.with(|trx| trx.atomic_op(key, value_template, MutationType::SetVersionstampedValue))
    }

    fn next_user_version(&self) -> u16 {
        self.next_user_version.fetch_add(1, Ordering::Relaxed)
    }

    fn add_read_conflict_key(&self, key: &[u8]) {
        let end = key_after(key);
        let _ = self.with(|trx| trx.add_conflict_range(key, &end, ConflictRangeType::Read));
    }

    fn watch(&self, key: &[u8]) -> Watch {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        if let Ok(fired) = self.with(|trx| trx.watch(key)) {
            // FoundationDB's watch future outlives the transaction; a task
            // turns it into the interface's `Watch` (FoundationDB never runs
            // inside the simulation, so a task is fine). A failed watch
            // (too many, a cluster error) wakes the waiter too: it reads
            // again, which is always safe, rather than waiting forever. A
            // dropped `Watch` drops FoundationDB's future, which cancels it.
            let mut sender = sender;
            tokio::spawn(async move {
                tokio::select! {
                    _ = fired => {
                        let _ = sender.send(());
                    }
                    () = sender.closed() => {}
                }
            });
        } else {
            // No watch could be set: wake at once so the caller reads again.
            let _ = sender.send(());
        }
        Watch::from_receiver(receiver)
    }

    fn commit(&self) -> Answer<'_, CommitInfo> {
        later(self.commit_now())
    }

    fn retry(
        &self,
        error: KvError,
        _attempt: u32,
    ) -> BoxFuture<'_, Result<Arc<dyn BackendTransaction>, KvError>> {
        Box::pin(self.on_error(error))
    }
}
