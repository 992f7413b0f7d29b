//! The FoundationDB backend (feature `fdb`): the same [`crate::Database`] and
//! [`crate::Transaction`] handles over a FoundationDB cluster, through the
//! `foundationdb` crate.
//!
//! FoundationDB is a transactional store itself, so it sits beside the
//! native transaction layer rather than under it: reads, conflict ranges,
//! versionstamps, atomic operations, watches and limits are FoundationDB's
//! own. [`FdbDatabase::run`] is the crate's retrying run loop (FoundationDB's
//! backoff and error classification, `commit_unknown_result` reported to the
//! closure as maybe-committed). Keys use the same tuple encoding and
//! versionstamp template as every other backend, so the store layer is
//! unchanged.
//!
//! Nothing here runs on machines without `libfdb_c`; the conformance suite
//! runs it wherever `FDB_CLUSTER_FILE` is set.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use foundationdb::options::{
    ConflictRangeType, DatabaseOption, MutationType, StreamingMode, TransactionOption,
};
use foundationdb::{FdbBindingError, FdbError, KeySelector, RetryableTransaction};

use crate::database::CommitInfo;
use crate::limits::MAX_TRANSACTION_BYTES;
use crate::runner::MaybeCommitted;
use crate::transaction::{
    KeyValue, RangeOption, Watch, check_key, check_value, split_versionstamp_template,
};
use crate::{KeyRange, KvError, TxnError, key_after};

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

fn network_error(message: String) -> KvError {
    KvError::Fdb {
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
pub(crate) fn kv_error(error: FdbError) -> KvError {
    match error.code() {
        2101 => KvError::TransactionTooLarge { size: 0 },
        2102 => KvError::KeyTooLarge { size: 0 },
        2103 => KvError::ValueTooLarge { size: 0 },
        code => KvError::Fdb {
            code,
            message: error.message().to_string(),
            retryable: error.is_retryable(),
            maybe_committed: error.is_maybe_committed(),
        },
    }
}

/// A FoundationDB cluster.
pub(crate) struct FdbDatabase {
    db: foundationdb::Database,
}

impl FdbDatabase {
    pub(crate) fn open(cluster_file: Option<&str>) -> Result<Self, KvError> {
        boot_network()?;
        let db = foundationdb::Database::new(cluster_file).map_err(kv_error)?;
        // Every delivery loop waiting on an idle inbox holds a watch: the
        // default cap of 10,000 per client is far below a gateway's sessions.
        db.set_option(DatabaseOption::MaxWatches(MAX_WATCHES))
            .map_err(kv_error)?;
        Ok(Self { db })
    }

    /// A transaction outside the run loop (committed by its owner).
    pub(crate) fn begin(&self) -> FdbTransaction {
        let handle = match self.db.create_trx() {
            Ok(trx) => Handle::Manual(Arc::new(Mutex::new(Some(trx)))),
            Err(error) => Handle::Failed(error),
        };
        FdbTransaction::new(handle)
    }

    /// Runs `f` in FoundationDB's retry loop.
    pub(crate) async fn run<T, E, F, Fut>(&self, f: F) -> Result<(T, CommitInfo), E>
    where
        F: FnMut(crate::Transaction, MaybeCommitted) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: TxnError + std::error::Error + Send + Sync + 'static,
    {
        // The crate's loop takes an `Fn`; the closure is only ever called
        // by one attempt at a time, so a lock adapts the `FnMut`.
        let f = Mutex::new(f);
        let outcome = self
            .db
            .run(|trx, maybe_committed| {
                // Both options survive the loop's resets; setting them again
                // on each attempt is harmless.
                let limited = trx
                    .set_option(TransactionOption::Timeout(TIMEOUT_MS))
                    .and_then(|()| trx.set_option(TransactionOption::RetryLimit(RETRY_LIMIT)));
                let versionstamp = trx.get_versionstamp();
                let tx = crate::Transaction {
                    kind: crate::handle::TxKind::Fdb(FdbTransaction::new(Handle::Retryable(trx))),
                };
                let attempt = {
                    let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                    (f)(tx, MaybeCommitted(maybe_committed.into()))
                };
                async move {
                    limited?;
                    match attempt.await {
                        Ok(value) => Ok((value, versionstamp)),
                        Err(error) => Err(binding_error(error)),
                    }
                }
            })
            .await;
        match outcome {
            Ok((value, versionstamp)) => {
                // Ready after the commit; an error means nothing was
                // versionstamped (a read-only transaction).
                let versionstamp = versionstamp
                    .await
                    .ok()
                    .and_then(|raw| <[u8; 10]>::try_from(&raw[..]).ok());
                let version = versionstamp.map_or(0, |vs| {
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(&vs[..8]);
                    u64::from_be_bytes(raw)
                });
                Ok((
                    value,
                    CommitInfo {
                        version,
                        versionstamp,
                    },
                ))
            }
            Err(FdbBindingError::CustomError(boxed)) => match boxed.downcast::<E>() {
                Ok(error) => Err(*error),
                Err(other) => Err(E::from(KvError::engine(BoxedError(other.to_string())))),
            },
            Err(other) => Err(E::from(match other.get_fdb_error() {
                Some(error) => kv_error(error),
                None => KvError::engine(BoxedError(other.to_string())),
            })),
        }
    }
}

#[derive(Debug)]
struct BoxedError(String);

impl std::fmt::Display for BoxedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BoxedError {}

/// The closure's error as the run loop's: FoundationDB errors go back as
/// themselves (so the loop retries what FoundationDB says is retryable);
/// anything else ends the loop and is handed back unchanged.
fn binding_error<E>(error: E) -> FdbBindingError
where
    E: TxnError + std::error::Error + Send + Sync + 'static,
{
    if let Some(KvError::Fdb { code, .. }) = error.as_kv() {
        return FdbBindingError::from(FdbError::from_code(*code));
    }
    FdbBindingError::new_custom_error(Box::new(error))
}

#[derive(Clone)]
enum Handle {
    /// Inside the run loop, which commits it.
    Retryable(RetryableTransaction),
    /// From `begin`, committed by its owner (taken out at commit).
    Manual(Arc<Mutex<Option<foundationdb::Transaction>>>),
    /// Creating it failed; every operation reports this.
    Failed(FdbError),
}

/// A FoundationDB transaction behind the interface's [`crate::Transaction`].
#[derive(Clone)]
pub(crate) struct FdbTransaction {
    handle: Handle,
    next_user_version: Arc<AtomicU16>,
    /// Bytes of mutations so far: the limits are checked here, before the
    /// cluster sees them, so every backend refuses with the same typed error
    /// at the same call (FoundationDB would report them at commit).
    size: Arc<AtomicUsize>,
}

impl FdbTransaction {
    fn new(handle: Handle) -> Self {
        Self {
            handle,
            next_user_version: Arc::new(AtomicU16::new(0)),
            size: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Checks a mutation of `key` and `value` against FoundationDB's limits
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

    /// Calls `op` on the transaction. Operations return futures that do not
    /// borrow it, so no lock is held across an await.
    fn with<R>(&self, op: impl FnOnce(&foundationdb::Transaction) -> R) -> Result<R, KvError> {
        match &self.handle {
            Handle::Retryable(trx) => Ok(op(trx)),
            Handle::Manual(slot) => {
                let guard = slot.lock().unwrap_or_else(|p| p.into_inner());
                guard.as_ref().map(op).ok_or(KvError::Closed)
            }
            Handle::Failed(error) => Err(kv_error(*error)),
        }
    }

    pub(crate) async fn read_version(&self) -> Result<u64, KvError> {
        let version = self.with(|trx| trx.get_read_version())?.await;
        version.map(|v| v.max(0) as u64).map_err(kv_error)
    }

    async fn read(&self, key: &[u8], snapshot: bool) -> Result<Option<Bytes>, KvError> {
        let value = self.with(|trx| trx.get(key, snapshot))?.await;
        value
            .map(|slice| slice.map(|v| Bytes::copy_from_slice(&v)))
            .map_err(kv_error)
    }

    pub(crate) async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        self.read(key, false).await
    }

    pub(crate) async fn get_snapshot(&self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        self.read(key, true).await
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

    pub(crate) async fn get_range(&self, option: &RangeOption) -> Result<Vec<KeyValue>, KvError> {
        self.range(option, false).await
    }

    pub(crate) async fn get_range_snapshot(
        &self,
        option: &RangeOption,
    ) -> Result<Vec<KeyValue>, KvError> {
        self.range(option, true).await
    }

    pub(crate) fn set(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.admit(key, value)?;
        self.with(|trx| trx.set(key, value))
    }

    pub(crate) fn clear(&self, key: &[u8]) -> Result<(), KvError> {
        self.admit(key, &[])?;
        self.with(|trx| trx.clear(key))
    }

    pub(crate) fn clear_range(&self, range: &KeyRange) -> Result<(), KvError> {
        if range.begin > range.end {
            return Err(KvError::InvertedRange);
        }
        self.with(|trx| trx.clear_range(&range.begin, &range.end))
    }

    pub(crate) fn atomic_add(&self, key: &[u8], delta: i64) -> Result<(), KvError> {
        self.admit(key, &delta.to_le_bytes())?;
        self.with(|trx| trx.atomic_op(key, &delta.to_le_bytes(), MutationType::Add))
    }

    pub(crate) fn atomic_byte_max(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.admit(key, value)?;
        self.with(|trx| trx.atomic_op(key, value, MutationType::ByteMax))
    }

    pub(crate) fn set_versionstamped_key(
        &self,
        key_template: &[u8],
        value: &[u8],
    ) -> Result<(), KvError> {
        let (key, _) = split_versionstamp_template(key_template)?;
        self.admit(&key, value)?;
        self.with(|trx| trx.atomic_op(key_template, value, MutationType::SetVersionstampedKey))
    }

    pub(crate) fn set_versionstamped_value(
        &self,
        key: &[u8],
        value_template: &[u8],
    ) -> Result<(), KvError> {
        let (value, _) = split_versionstamp_template(value_template)?;
        self.admit(key, &value)?;
        self.with(|trx| trx.atomic_op(key, value_template, MutationType::SetVersionstampedValue))
    }

    pub(crate) fn next_user_version(&self) -> u16 {
        self.next_user_version.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn add_read_conflict_key(&self, key: &[u8]) {
        let end = key_after(key);
        let _ = self.with(|trx| trx.add_conflict_range(key, &end, ConflictRangeType::Read));
    }

    pub(crate) fn watch(&self, key: &[u8]) -> Watch {
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

    pub(crate) async fn commit(&self) -> Result<CommitInfo, KvError> {
        let Handle::Manual(slot) = &self.handle else {
            return match &self.handle {
                Handle::Failed(error) => Err(kv_error(*error)),
                // The run loop commits its own transactions.
                _ => Ok(CommitInfo {
                    version: 0,
                    versionstamp: None,
                }),
            };
        };
        let trx = slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or(KvError::Closed)?;
        let versionstamp = trx.get_versionstamp();
        let committed = trx.commit().await.map_err(|e| kv_error(*e))?;
        let version = committed.committed_version().map_err(kv_error)?.max(0) as u64;
        let versionstamp = versionstamp
            .await
            .ok()
            .and_then(|raw| <[u8; 10]>::try_from(&raw[..]).ok());
        Ok(CommitInfo {
            version,
            versionstamp,
        })
    }
}
