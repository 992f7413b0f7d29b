//! The committer: one task per database that turns commit requests into
//! batches (group commit, pipelined one deep), resolves conflicts, atomic
//! operations and versionstamps, writes each batch with one durable engine
//! write, publishes it to observers and fires watches — and the state it
//! shares with the database's handles (the published snapshot, the
//! resolver's memory and the registered watches).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use meridian_seams::SharedClock;

use super::atomic::{apply_add, apply_byte_max};
use super::resolver::{Resolver, Verdict};
use crate::KvError;
use crate::backend::CommitObserver;
use crate::engine::{Engine, EngineBatch, EngineSnapshot};
use crate::keys::{KeyRange, RangeSet};
use crate::types::CommitInfo;

/// Where the committed version lives, in the system keyspace (`0xff`).
const VERSION_KEY: &[u8] = b"\xff/meridian/version";

/// The observers of one database, shared by its handles and its committer.
pub(super) type Observers = Arc<std::sync::RwLock<Vec<Arc<dyn CommitObserver>>>>;

/// A mutation as a transaction buffered it, before the committer resolves
/// atomic operations and versionstamps.
#[derive(Debug, Clone)]
pub(crate) enum PendingMutation {
    Set(Vec<u8>, Vec<u8>),
    Clear(Vec<u8>),
    ClearRange(Vec<u8>, Vec<u8>),
    Add(Vec<u8>, i64),
    ByteMax(Vec<u8>, Vec<u8>),
    /// Key payload, offset of the versionstamp, value.
    VersionstampedKey(Vec<u8>, usize, Vec<u8>),
    /// Key, value payload, offset of the versionstamp.
    VersionstampedValue(Vec<u8>, Vec<u8>, usize),
}

pub(crate) struct CommitRequest {
    pub(crate) read_version: u64,
    pub(crate) read_conflicts: Vec<KeyRange>,
    pub(crate) write_conflicts: Vec<KeyRange>,
    pub(crate) mutations: Vec<PendingMutation>,
    pub(crate) watches: Vec<(Vec<u8>, oneshot::Sender<()>)>,
    /// The transaction relaxed its durability: its batch is written without
    /// waiting for the disk if every transaction in it did.
    pub(crate) relaxed: bool,
    pub(crate) reply: oneshot::Sender<Result<CommitInfo, KvError>>,
}

/// The resolver's memory and the registered watches, shared by the
/// committer and watch registration. A batch is recorded with the resolver
/// when its write starts; publishing it (moving `published`) and firing its
/// watches happen later, together, under this lock, so a watch registered
/// concurrently either sees the batch as published (and fires at once) or is
/// fired by it — never neither, and never by a batch not yet readable.
pub(super) struct Conflicts {
    resolver: Resolver,
    watches: BTreeMap<Vec<u8>, Vec<oneshot::Sender<()>>>,
    /// The newest batch the engine has written and readers can see. The
    /// resolver may already know the next one.
    published: u64,
}

impl Conflicts {
    /// Registers a watch on `key` for a transaction that read at
    /// `read_version`, firing it at once if the key changed since.
    pub(super) fn register(
        &mut self,
        read_version: u64,
        key: Vec<u8>,
        sender: oneshot::Sender<()>,
    ) {
        if self
            .resolver
            .written_between(read_version, self.published, &key)
        {
            let _ = sender.send(());
        } else {
            let waiting = self.watches.entry(key).or_default();
            waiting.retain(|s| !s.is_closed());
            waiting.push(sender);
        }
    }

    /// Fires every watch on a key in `writes`.
    fn fire<'a>(&mut self, writes: impl Iterator<Item = &'a KeyRange>) {
        if self.watches.is_empty() {
            return;
        }
        for KeyRange { begin, end } in writes {
            let keys: Vec<Vec<u8>> = self
                .watches
                .range(begin.clone()..end.clone())
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                if let Some(senders) = self.watches.remove(&key) {
                    for sender in senders {
                        let _ = sender.send(());
                    }
                }
            }
        }
    }
}

pub(super) fn lock_conflicts(conflicts: &Mutex<Conflicts>) -> std::sync::MutexGuard<'_, Conflicts> {
    conflicts.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) struct Current {
    pub(super) version: u64,
    pub(super) snapshot: Arc<dyn EngineSnapshot>,
}

pub(super) fn lock_current(current: &Mutex<Current>) -> std::sync::MutexGuard<'_, Current> {
    current.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the committer tells the database's users about its engine.
pub(super) struct Vitals {
    /// Why the engine failed for good (fail-stop), once it has.
    pub(super) failure: tokio::sync::watch::Sender<Option<String>>,
    /// When (the clock's monotonic time) the write in flight began.
    pub(super) writing_since: Mutex<Option<std::time::Duration>>,
}

impl Vitals {
    fn set_writing_since(&self, since: Option<std::time::Duration>) {
        *self.writing_since.lock().unwrap_or_else(|p| p.into_inner()) = since;
    }

    pub(super) fn writing_since(&self) -> Option<std::time::Duration> {
        *self.writing_since.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a database's handles share with its committer.
pub(super) struct Started {
    /// The published version and its snapshot.
    pub(super) current: Arc<Mutex<Current>>,
    /// The resolver's memory and the registered watches.
    pub(super) conflicts: Arc<Mutex<Conflicts>>,
    /// Who sees each written batch.
    pub(super) observers: Observers,
    /// Where commit requests go.
    pub(super) commits: mpsc::Sender<CommitRequest>,
    /// Becomes true once the committer has stopped and released the engine.
    pub(super) stopped: tokio::sync::watch::Receiver<bool>,
    /// The engine's failure and the age of the write in flight.
    pub(super) vitals: Arc<Vitals>,
}

/// Reads `engine`'s committed version and starts its committer on the
/// current tokio runtime; it stops when every sender of its requests is
/// dropped.
///
/// # Errors
/// When the engine cannot read its stored version.
pub(super) fn start_committer(
    engine: Arc<dyn Engine>,
    clock: SharedClock,
    queue_depth: usize,
    max_batch_transactions: usize,
    metrics_label: &str,
) -> Result<Started, KvError> {
    let snapshot: Arc<dyn EngineSnapshot> = Arc::from(engine.snapshot());
    let version = match snapshot.get(VERSION_KEY)? {
        Some(bytes) if bytes.len() == 8 => {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&bytes);
            u64::from_be_bytes(raw)
        }
        _ => 0,
    };
    let current = Arc::new(Mutex::new(Current { version, snapshot }));
    let (commits, queue) = mpsc::channel(queue_depth);
    let conflicts = Arc::new(Mutex::new(Conflicts {
        resolver: Resolver::new(version),
        watches: BTreeMap::new(),
        published: version,
    }));
    let observers = Observers::default();
    let vitals = Arc::new(Vitals {
        failure: tokio::sync::watch::channel(None).0,
        writing_since: Mutex::new(None),
    });
    let committer = Committer {
        vitals: vitals.clone(),
        engine,
        observers: observers.clone(),
        current: current.clone(),
        conflicts: conflicts.clone(),
        clock,
        version,
        max_batch: max_batch_transactions.clamp(1, u16::MAX as usize),
        deferred: Vec::new(),
        metrics: CommitMetrics::new(metrics_label),
    };
    let (stopped_tx, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        committer.run(queue).await;
        let _ = stopped_tx.send(true);
    });
    Ok(Started {
        current,
        conflicts,
        observers,
        commits,
        stopped,
        vitals,
    })
}

/// Requests resolved between two looks at the write in flight.
const RESOLVE_STEP: usize = 32;

/// Turns commit requests into batches and hands them to the engine.
///
/// Group commit, pipelined one deep: while the engine writes (and fsyncs)
/// batch N, the requests arriving meanwhile are resolved into batch N+1 —
/// conflict checks against everything up to N, atomic operations read
/// through N's final values, versionstamps assigned. N+1 goes to the engine
/// once N is written, published and answered, so batches reach the engine,
/// become readable and are acknowledged strictly in version order.
struct Committer {
    engine: Arc<dyn Engine>,
    vitals: Arc<Vitals>,
    observers: Observers,
    current: Arc<Mutex<Current>>,
    conflicts: Arc<Mutex<Conflicts>>,
    clock: SharedClock,
    /// The newest version handed to a batch (written, or being written).
    version: u64,
    max_batch: usize,
    /// Conflicts found while a batch was being written, answered once it is
    /// published: answered at once, the retry would begin before that batch
    /// is readable and conflict again.
    deferred: Vec<oneshot::Sender<Result<CommitInfo, KvError>>>,
    metrics: CommitMetrics,
}

/// What the committer reports: the engine's write time per batch (its sum
/// over a period, divided by the period, is how busy the one serial write
/// path is) and the transactions per batch.
struct CommitMetrics {
    write_seconds: metrics::Histogram,
    batch_transactions: metrics::Histogram,
    conflicts: metrics::Counter,
}

impl CommitMetrics {
    fn new(store: &str) -> Self {
        let store = store.to_string();
        Self {
            write_seconds: metrics::histogram!("meridian_kv_engine_write_seconds", "store" => store.clone()),
            batch_transactions: metrics::histogram!("meridian_kv_batch_transactions", "store" => store.clone()),
            conflicts: metrics::counter!("meridian_kv_conflicts_total", "store" => store),
        }
    }
}

struct Accepted {
    reply: oneshot::Sender<Result<CommitInfo, KvError>>,
    versionstamp: [u8; 10],
    read_version: u64,
    writes: Vec<KeyRange>,
    watches: Vec<(Vec<u8>, oneshot::Sender<()>)>,
}

/// The batch requests join while the engine writes the previous one.
struct OpenBatch {
    version: u64,
    changes: EngineBatch,
    accepted: Vec<Accepted>,
    /// What the transactions accepted so far wrote: a later one that read
    /// any of it conflicts.
    writes: RangeSet,
}

/// A batch the engine is writing; its resolver entry is already recorded.
struct InFlight {
    version: u64,
    /// When the engine's write began (the clock's monotonic time).
    started: Duration,
    changes: Arc<EngineBatch>,
    /// Each keeps the ranges it wrote: together, what the batch wrote.
    accepted: Vec<Accepted>,
}

fn stamp(payload: &[u8], offset: usize, versionstamp: &[u8; 10]) -> Vec<u8> {
    let mut out = payload.to_vec();
    out[offset..offset + 10].copy_from_slice(versionstamp);
    out
}

/// The value an atomic operation builds on: the open batch's, else the
/// batch being written's, else the published snapshot's.
fn read_base(
    key: &[u8],
    open: &EngineBatch,
    in_flight: Option<&EngineBatch>,
    snapshot: &dyn EngineSnapshot,
) -> Result<Option<Vec<u8>>, KvError> {
    if let Some(state) = open.state_of(key) {
        return Ok(state.map(<[u8]>::to_vec));
    }
    if let Some(state) = in_flight.and_then(|batch| batch.state_of(key)) {
        return Ok(state.map(<[u8]>::to_vec));
    }
    Ok(snapshot.get(key)?.map(|b| b.to_vec()))
}

/// Applies one mutation to the open batch's final state; returns the range
/// a versionstamped key wrote (known only now).
fn apply_mutation(
    changes: &mut EngineBatch,
    mutation: PendingMutation,
    versionstamp: &[u8; 10],
    in_flight: Option<&EngineBatch>,
    snapshot: &dyn EngineSnapshot,
) -> Result<Option<KeyRange>, KvError> {
    match mutation {
        PendingMutation::Set(key, value) => {
            changes.values.insert(key, Some(value));
        }
        PendingMutation::Clear(key) => {
            changes.values.insert(key, None);
        }
        PendingMutation::ClearRange(begin, end) => {
            if begin < end {
                for (_, state) in changes.values.range_mut(begin.clone()..end.clone()) {
                    *state = None;
                }
                changes.cleared.push((begin, end));
            }
        }
        PendingMutation::Add(key, delta) => {
            let base = read_base(&key, changes, in_flight, snapshot)?;
            let value = apply_add(base.as_deref(), delta);
            changes.values.insert(key, Some(value));
        }
        PendingMutation::ByteMax(key, value) => {
            let base = read_base(&key, changes, in_flight, snapshot)?;
            let value = apply_byte_max(base.as_deref(), &value);
            changes.values.insert(key, Some(value));
        }
        PendingMutation::VersionstampedKey(payload, offset, value) => {
            let key = stamp(&payload, offset, versionstamp);
            let written = KeyRange::single(&key);
            changes.values.insert(key, Some(value));
            return Ok(Some(written));
        }
        PendingMutation::VersionstampedValue(key, payload, offset) => {
            changes
                .values
                .insert(key, Some(stamp(&payload, offset, versionstamp)));
        }
    }
    Ok(None)
}

impl Committer {
    /// Fail-stop: the engine failed for good, so nothing more is written.
    /// Says so to the database's users, then refuses every commit until
    /// the last handle is dropped.
    async fn stop_failed(
        &mut self,
        reason: String,
        open: Option<OpenBatch>,
        mut queue: mpsc::Receiver<CommitRequest>,
    ) {
        tracing::error!(%reason, "storage engine failed: the store takes no more commits");
        self.vitals.failure.send_replace(Some(reason.clone()));
        let refusal = || KvError::StoreFailed {
            reason: reason.clone(),
        };
        abandon(open, refusal);
        while let Some(request) = queue.recv().await {
            let _ = request.reply.send(Err(refusal()));
        }
    }

    async fn run(mut self, mut queue: mpsc::Receiver<CommitRequest>) {
        let mut incoming = Vec::with_capacity(self.max_batch);
        let mut open: Option<OpenBatch> = None;
        let mut in_flight: Option<InFlight> = None;
        let mut write: Option<BoxFuture<'static, Result<(), KvError>>> = None;
        let mut closed = false;
        loop {
            if let Some(writing) = write.as_mut() {
                // Resolve in small steps, so the finished write is noticed
                // (and its batch published) between them rather than after
                // a whole queue's worth of resolution.
                let room = (self.max_batch - open.as_ref().map_or(0, |o| o.accepted.len()))
                    .min(RESOLVE_STEP);
                tokio::select! {
                    biased;
                    outcome = writing => {
                        write = None;
                        let failed = outcome.is_err();
                        if let Some(done) = in_flight.take() {
                            self.publish(done, outcome);
                        }
                        if failed {
                            if let Some(reason) = self.engine.failure() {
                                self.stop_failed(reason, open.take(), queue).await;
                                return;
                            }
                            // The open batch was resolved on top of the failed
                            // one (atomic operations read its values); it
                            // must not reach the engine. Nothing of it was
                            // recorded or written, so its transactions retry.
                            abandon(open.take(), || KvError::NotCommitted);
                        }
                    }
                    received = queue.recv_many(&mut incoming, room), if room > 0 && !closed => {
                        if received == 0 {
                            closed = true;
                        }
                        let changes = in_flight.as_ref().map(|f| f.changes.as_ref());
                        self.resolve(&mut open, incoming.drain(..), changes);
                    }
                }
                continue;
            }
            if let Some(batch) = open.take() {
                if let Some((flight, future)) = self.start(batch) {
                    in_flight = Some(flight);
                    write = Some(future);
                }
                continue;
            }
            if closed {
                return;
            }
            if queue.recv_many(&mut incoming, self.max_batch).await == 0 {
                closed = true;
                continue;
            }
            self.resolve(&mut open, incoming.drain(..), None);
        }
    }

    /// Resolves `requests` into the open batch, refusing those that conflict.
    fn resolve(
        &mut self,
        open: &mut Option<OpenBatch>,
        requests: impl Iterator<Item = CommitRequest>,
        in_flight: Option<&EngineBatch>,
    ) {
        let snapshot = lock_current(&self.current).snapshot.clone();
        for request in requests {
            let batch = open.get_or_insert_with(|| OpenBatch {
                version: self.version + 1,
                changes: EngineBatch {
                    // Until a transaction that needs the disk joins.
                    relaxed: true,
                    ..EngineBatch::default()
                },
                accepted: Vec::new(),
                writes: RangeSet::default(),
            });
            let verdict = lock_conflicts(&self.conflicts)
                .resolver
                .check(request.read_version, &request.read_conflicts);
            let conflicts_in_batch = request
                .read_conflicts
                .iter()
                .any(|read| batch.writes.intersects(read));
            let refusal = match verdict {
                Verdict::TooOld => Some(KvError::TransactionTooOld),
                Verdict::Conflict => Some(KvError::NotCommitted),
                Verdict::Commit if conflicts_in_batch => Some(KvError::NotCommitted),
                Verdict::Commit => None,
            };
            if matches!(refusal, Some(KvError::NotCommitted)) {
                self.metrics.conflicts.increment(1);
            }
            match refusal {
                Some(KvError::NotCommitted) if in_flight.is_some() => {
                    self.deferred.push(request.reply);
                    continue;
                }
                Some(error) => {
                    let _ = request.reply.send(Err(error));
                    continue;
                }
                None => {}
            }
            let order = batch.accepted.len() as u16;
            let mut versionstamp = [0u8; 10];
            versionstamp[..8].copy_from_slice(&batch.version.to_be_bytes());
            versionstamp[8..].copy_from_slice(&order.to_be_bytes());
            let mut writes = request.write_conflicts;
            let mut failure = None;
            for mutation in request.mutations {
                match apply_mutation(
                    &mut batch.changes,
                    mutation,
                    &versionstamp,
                    in_flight,
                    snapshot.as_ref(),
                ) {
                    Ok(written) => writes.extend(written),
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            if let Some(error) = failure {
                // Reading the base of an atomic operation failed: the engine
                // is unwell, and this request's changes are half in the
                // batch. Abandon the whole open batch (nothing of it was
                // recorded or written).
                let _ = request.reply.send(Err(error));
                abandon(open.take(), || KvError::NotCommitted);
                continue;
            }
            for range in &writes {
                batch.writes.insert(range);
            }
            batch.changes.relaxed &= request.relaxed;
            batch.accepted.push(Accepted {
                reply: request.reply,
                versionstamp,
                read_version: request.read_version,
                writes,
                watches: request.watches,
            });
        }
    }

    /// Seals the open batch: records its writes with the resolver (so the
    /// next batch is checked against them) and starts the engine's write.
    fn start(
        &mut self,
        mut batch: OpenBatch,
    ) -> Option<(InFlight, BoxFuture<'static, Result<(), KvError>>)> {
        if batch.accepted.is_empty() {
            return None;
        }
        if batch.changes.is_empty() {
            // Only watches: nothing to write, no version consumed, no fsync.
            let mut conflicts = lock_conflicts(&self.conflicts);
            for tx in batch.accepted {
                for (key, sender) in tx.watches {
                    conflicts.register(tx.read_version, key, sender);
                }
                let _ = tx.reply.send(Ok(CommitInfo {
                    version: conflicts.published,
                    versionstamp: None,
                }));
            }
            return None;
        }
        // Whatever the write's outcome, this version may exist: never hand
        // it out again, and treat its writes as committed when resolving.
        self.version = batch.version;
        batch.changes.values.insert(
            VERSION_KEY.to_vec(),
            Some(batch.version.to_be_bytes().to_vec()),
        );
        let now = self.clock.monotonic();
        lock_conflicts(&self.conflicts)
            .resolver
            .record(batch.version, now, batch.writes);
        let changes = Arc::new(batch.changes);
        self.vitals.set_writing_since(Some(now));
        let future = self.engine.write(changes.clone());
        Some((
            InFlight {
                version: batch.version,
                started: now,
                changes,
                accepted: batch.accepted,
            },
            future,
        ))
    }

    /// A written batch becomes readable, fires its watches and is answered.
    fn publish(&mut self, batch: InFlight, outcome: Result<(), KvError>) {
        self.vitals.set_writing_since(None);
        let written = self.clock.monotonic().saturating_sub(batch.started);
        self.metrics.write_seconds.record(written.as_secs_f64());
        self.metrics
            .batch_transactions
            .record(batch.accepted.len() as f64);
        {
            let mut current = lock_current(&self.current);
            current.version = batch.version;
            current.snapshot = Arc::from(self.engine.snapshot());
        }
        for observer in self
            .observers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            match &outcome {
                Ok(()) => observer.committed(batch.version, &batch.changes),
                Err(_) => observer.outcome_unknown(),
            }
        }
        let mut accepted = batch.accepted;
        // Fire and register under one lock (see `Conflicts`). Watches
        // registered by this batch fire at once if the key changed after the
        // transaction's read version: in an earlier batch, or by another
        // transaction of this one (which commits at the same version but is
        // unordered with respect to the watcher's reads).
        let mut conflicts = lock_conflicts(&self.conflicts);
        conflicts.published = batch.version;
        conflicts.fire(accepted.iter().flat_map(|tx| &tx.writes));
        if accepted.iter().any(|tx| !tx.watches.is_empty()) {
            let written_by: Vec<Vec<KeyRange>> =
                accepted.iter().map(|a| a.writes.clone()).collect();
            for (index, tx) in accepted.iter_mut().enumerate() {
                for (key, sender) in tx.watches.drain(..) {
                    let changed_in_batch = written_by.iter().enumerate().any(|(other, writes)| {
                        other != index && writes.iter().any(|w| w.contains(&key))
                    });
                    if changed_in_batch {
                        let _ = sender.send(());
                    } else {
                        conflicts.register(tx.read_version, key, sender);
                    }
                }
            }
        }
        drop(conflicts);
        for tx in accepted {
            let result = match &outcome {
                Ok(()) => Ok(CommitInfo {
                    version: batch.version,
                    versionstamp: Some(tx.versionstamp),
                }),
                Err(error) => Err(KvError::CommitUnknownResult {
                    reason: error.to_string(),
                }),
            };
            let _ = tx.reply.send(result);
        }
        for refused in self.deferred.drain(..) {
            let _ = refused.send(Err(KvError::NotCommitted));
        }
    }
}

/// Refuses every transaction of a batch that will not be written.
fn abandon(batch: Option<OpenBatch>, error: impl Fn() -> KvError) {
    for tx in batch.into_iter().flat_map(|b| b.accepted) {
        let _ = tx.reply.send(Err(error()));
    }
}
