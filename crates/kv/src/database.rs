//! The database handle and its committer: group commit, conflict resolution,
//! versionstamps, atomic operations and watches.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use meridian_seams::{Rng, SharedClock};

use crate::KvError;
use crate::engine::{Engine, EngineMutation, EngineSnapshot};
use crate::keys::{KeyRange, RangeSet};
use crate::resolver::{Resolver, Verdict};
use crate::runner::RetryOptions;
use crate::transaction::NativeTransaction;
use crate::transaction::apply_add;

/// Where the committed version lives, in the system keyspace (`0xff`).
const VERSION_KEY: &[u8] = b"\xff/meridian/version";

/// What a successful commit produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit version (the read version, for a read-only transaction).
    pub version: u64,
    /// The 10-byte versionstamp written into versionstamped keys and values:
    /// the commit version (8 bytes, big-endian) then the transaction's order
    /// within its batch (2 bytes). `None` for a read-only transaction.
    pub versionstamp: Option<[u8; 10]>,
}

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
    pub(crate) reply: oneshot::Sender<Result<CommitInfo, KvError>>,
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
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            max_batch_transactions: 2048,
            queue_depth: 8192,
            retry: RetryOptions::default(),
        }
    }
}

/// The resolver's memory and the registered watches, shared by the
/// committer and watch registration: recording a batch and firing its
/// watches happen under one lock, so a watch registered concurrently either
/// sees the batch as written or is fired by it — never neither.
struct Conflicts {
    resolver: Resolver,
    watches: BTreeMap<Vec<u8>, Vec<oneshot::Sender<()>>>,
}

impl Conflicts {
    /// Registers a watch on `key` for a transaction that read at
    /// `read_version`, firing it at once if the key changed since.
    fn register(&mut self, read_version: u64, key: Vec<u8>, sender: oneshot::Sender<()>) {
        if self.resolver.written_since(read_version, &key) {
            let _ = sender.send(());
        } else {
            let waiting = self.watches.entry(key).or_default();
            waiting.retain(|s| !s.is_closed());
            waiting.push(sender);
        }
    }

    /// Fires every watch on a key in `writes`.
    fn fire(&mut self, writes: &RangeSet) {
        if self.watches.is_empty() {
            return;
        }
        for (begin, end) in writes.iter() {
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

fn lock_conflicts(conflicts: &Mutex<Conflicts>) -> std::sync::MutexGuard<'_, Conflicts> {
    conflicts.lock().unwrap_or_else(|p| p.into_inner())
}

struct Current {
    version: u64,
    snapshot: Arc<dyn EngineSnapshot>,
}

struct Inner {
    current: Arc<Mutex<Current>>,
    conflicts: Arc<Mutex<Conflicts>>,
    stopped: tokio::sync::watch::Receiver<bool>,
    commits: mpsc::Sender<CommitRequest>,
    clock: SharedClock,
    rng: Rng,
    options: DatabaseOptions,
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

fn lock_current(current: &Mutex<Current>) -> std::sync::MutexGuard<'_, Current> {
    current.lock().unwrap_or_else(|p| p.into_inner())
}

impl NativeDatabase {
    /// Opens a database over `engine` and starts its committer task on the
    /// current tokio runtime. The committer stops when the last handle drops.
    ///
    /// # Errors
    /// When the engine cannot read its stored version.
    pub fn open(
        engine: Arc<dyn Engine>,
        clock: SharedClock,
        rng: Rng,
        options: DatabaseOptions,
    ) -> Result<Self, KvError> {
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
        let (commits, queue) = mpsc::channel(options.queue_depth);
        let conflicts = Arc::new(Mutex::new(Conflicts {
            resolver: Resolver::new(version),
            watches: BTreeMap::new(),
        }));
        let committer = Committer {
            engine,
            current: current.clone(),
            conflicts: conflicts.clone(),
            clock: clock.clone(),
            version,
            max_batch: options.max_batch_transactions.clamp(1, u16::MAX as usize),
        };
        let (stopped_tx, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            committer.run(queue).await;
            let _ = stopped_tx.send(true);
        });
        Ok(Self {
            inner: Arc::new(Inner {
                current,
                conflicts,
                stopped,
                commits,
                clock,
                rng,
                options,
            }),
        })
    }

    /// Drops this handle and waits until the committer has stopped and
    /// released the engine (so it can be reopened, e.g. by a test). Waits for
    /// every other clone of the handle to be dropped too.
    pub async fn close(self) {
        let mut stopped = self.inner.stopped.clone();
        drop(self);
        let _ = stopped.wait_for(|done| *done).await;
    }

    /// Starts a transaction reading at the latest committed version.
    pub fn begin(&self) -> NativeTransaction {
        let (version, snapshot) = {
            let current = lock_current(&self.inner.current);
            (current.version, current.snapshot.clone())
        };
        NativeTransaction::new(
            self.clone(),
            version,
            snapshot,
            self.inner.clock.monotonic(),
        )
    }

    /// The latest committed version.
    pub fn committed_version(&self) -> u64 {
        lock_current(&self.inner.current).version
    }

    pub(crate) fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    pub(crate) fn rng(&self) -> &Rng {
        &self.inner.rng
    }

    pub(crate) fn retry_options(&self) -> &RetryOptions {
        &self.inner.options.retry
    }

    /// Registers the watches of a transaction that wrote nothing, without
    /// queueing behind commits (a delivery loop waiting on an idle inbox
    /// must not wait for someone else's fsync).
    pub(crate) fn register_watches(
        &self,
        read_version: u64,
        watches: Vec<(Vec<u8>, oneshot::Sender<()>)>,
    ) {
        let mut conflicts = lock_conflicts(&self.inner.conflicts);
        for (key, sender) in watches {
            conflicts.register(read_version, key, sender);
        }
    }

    pub(crate) async fn submit(&self, request: CommitRequest) -> Result<(), KvError> {
        self.inner
            .commits
            .send(request)
            .await
            .map_err(|_| KvError::Closed)
    }
}

struct Committer {
    engine: Arc<dyn Engine>,
    current: Arc<Mutex<Current>>,
    conflicts: Arc<Mutex<Conflicts>>,
    clock: SharedClock,
    version: u64,
    max_batch: usize,
}

struct Accepted {
    reply: oneshot::Sender<Result<CommitInfo, KvError>>,
    versionstamp: [u8; 10],
    read_version: u64,
    writes: Vec<KeyRange>,
    watches: Vec<(Vec<u8>, oneshot::Sender<()>)>,
}

/// What the batch has written so far, for resolving atomic adds in order.
#[derive(Default)]
struct BatchOverlay {
    values: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    cleared: Vec<KeyRange>,
}

impl BatchOverlay {
    fn read(&self, key: &[u8], snapshot: &dyn EngineSnapshot) -> Result<Option<Vec<u8>>, KvError> {
        if let Some(value) = self.values.get(key) {
            return Ok(value.clone());
        }
        if self.cleared.iter().any(|r| r.contains(key)) {
            return Ok(None);
        }
        Ok(snapshot.get(key)?.map(|b| b.to_vec()))
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        let inside: Vec<Vec<u8>> = self
            .values
            .range(begin.to_vec()..end.to_vec())
            .map(|(k, _)| k.clone())
            .collect();
        for key in inside {
            self.values.insert(key, None);
        }
        self.cleared
            .push(KeyRange::new(begin.to_vec(), end.to_vec()));
    }
}

fn stamp(payload: &[u8], offset: usize, versionstamp: &[u8; 10]) -> Vec<u8> {
    let mut out = payload.to_vec();
    out[offset..offset + 10].copy_from_slice(versionstamp);
    out
}

impl Committer {
    async fn run(mut self, mut queue: mpsc::Receiver<CommitRequest>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while queue.recv_many(&mut batch, self.max_batch).await > 0 {
            self.commit_batch(std::mem::take(&mut batch)).await;
        }
    }

    async fn commit_batch(&mut self, requests: Vec<CommitRequest>) {
        let version = self.version + 1;
        let snapshot = lock_current(&self.current).snapshot.clone();
        let mut overlay = BatchOverlay::default();
        let mut engine_batch = Vec::new();
        let mut accepted: Vec<Accepted> = Vec::new();
        // What the transactions accepted so far in this batch wrote: a later
        // one that read any of it conflicts.
        let mut batch_writes = RangeSet::default();
        for request in requests {
            let verdict = lock_conflicts(&self.conflicts)
                .resolver
                .check(request.read_version, &request.read_conflicts);
            let conflicts_in_batch = request
                .read_conflicts
                .iter()
                .any(|read| batch_writes.intersects(read));
            let refusal = match verdict {
                Verdict::TooOld => Some(KvError::TransactionTooOld),
                Verdict::Conflict => Some(KvError::NotCommitted),
                Verdict::Commit if conflicts_in_batch => Some(KvError::NotCommitted),
                Verdict::Commit => None,
            };
            if let Some(error) = refusal {
                let _ = request.reply.send(Err(error));
                continue;
            }
            let order = accepted.len() as u16;
            let mut versionstamp = [0u8; 10];
            versionstamp[..8].copy_from_slice(&version.to_be_bytes());
            versionstamp[8..].copy_from_slice(&order.to_be_bytes());
            let mut writes = request.write_conflicts;
            for mutation in request.mutations {
                match self.resolve(mutation, &versionstamp, &mut overlay, snapshot.as_ref()) {
                    Ok((resolved, written)) => {
                        engine_batch.push(resolved);
                        writes.extend(written);
                    }
                    Err(error) => {
                        // Reading the base of an atomic add failed: the engine
                        // is unwell; this batch cannot be trusted to be whole.
                        let _ = request.reply.send(Err(error));
                        for done in accepted {
                            let _ = done.reply.send(Err(KvError::CommitUnknownResult {
                                reason: "the batch was abandoned".into(),
                            }));
                        }
                        return;
                    }
                }
            }
            for range in &writes {
                batch_writes.insert(range);
            }
            accepted.push(Accepted {
                reply: request.reply,
                versionstamp,
                read_version: request.read_version,
                writes,
                watches: request.watches,
            });
        }
        if accepted.is_empty() {
            return;
        }
        if engine_batch.is_empty() {
            // Only watches: nothing to write, no version consumed, no fsync
            // (a delivery loop waiting on an idle inbox costs nothing).
            for tx in accepted {
                let mut conflicts = lock_conflicts(&self.conflicts);
                for (key, sender) in tx.watches {
                    conflicts.register(tx.read_version, key, sender);
                }
                drop(conflicts);
                let _ = tx.reply.send(Ok(CommitInfo {
                    version: self.version,
                    versionstamp: None,
                }));
            }
            return;
        }
        engine_batch.push(EngineMutation::Set(
            VERSION_KEY.to_vec(),
            version.to_be_bytes().to_vec(),
        ));
        let outcome = self.engine.write(engine_batch).await;
        // Whether or not the write reached the disk, this version may exist:
        // never hand it out again, and treat its writes as committed when
        // resolving later transactions.
        self.version = version;
        {
            let mut current = lock_current(&self.current);
            current.version = version;
            current.snapshot = Arc::from(self.engine.snapshot());
        }
        let now = self.clock.monotonic();
        // Fire, register and record under one lock (see `Conflicts`).
        // Watches registered by this batch fire at once if the key changed
        // after the transaction's read version: in an earlier batch, or by
        // another transaction of this one (which commits at the same version
        // but is unordered with respect to the watcher's reads).
        let mut conflicts = lock_conflicts(&self.conflicts);
        conflicts.fire(&batch_writes);
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
        conflicts.resolver.record(version, now, batch_writes);
        drop(conflicts);
        for tx in accepted {
            let result = match &outcome {
                Ok(()) => Ok(CommitInfo {
                    version,
                    versionstamp: Some(tx.versionstamp),
                }),
                Err(error) => Err(KvError::CommitUnknownResult {
                    reason: error.to_string(),
                }),
            };
            let _ = tx.reply.send(result);
        }
    }

    fn resolve(
        &self,
        mutation: PendingMutation,
        versionstamp: &[u8; 10],
        overlay: &mut BatchOverlay,
        snapshot: &dyn EngineSnapshot,
    ) -> Result<(EngineMutation, Option<KeyRange>), KvError> {
        Ok(match mutation {
            PendingMutation::Set(key, value) => {
                overlay.values.insert(key.clone(), Some(value.clone()));
                (EngineMutation::Set(key, value), None)
            }
            PendingMutation::Clear(key) => {
                overlay.values.insert(key.clone(), None);
                (EngineMutation::Clear(key), None)
            }
            PendingMutation::ClearRange(begin, end) => {
                overlay.clear_range(&begin, &end);
                (EngineMutation::ClearRange(begin, end), None)
            }
            PendingMutation::Add(key, delta) => {
                let base = overlay.read(&key, snapshot)?;
                let value = apply_add(base.as_deref(), delta);
                overlay.values.insert(key.clone(), Some(value.clone()));
                (EngineMutation::Set(key, value), None)
            }
            PendingMutation::ByteMax(key, value) => {
                let base = overlay.read(&key, snapshot)?;
                let value = crate::transaction::apply_byte_max(base.as_deref(), &value);
                overlay.values.insert(key.clone(), Some(value.clone()));
                (EngineMutation::Set(key, value), None)
            }
            PendingMutation::VersionstampedKey(payload, offset, value) => {
                let key = stamp(&payload, offset, versionstamp);
                overlay.values.insert(key.clone(), Some(value.clone()));
                let written = KeyRange::single(&key);
                (EngineMutation::Set(key, value), Some(written))
            }
            PendingMutation::VersionstampedValue(key, payload, offset) => {
                let value = stamp(&payload, offset, versionstamp);
                overlay.values.insert(key.clone(), Some(value.clone()));
                (EngineMutation::Set(key, value), None)
            }
        })
    }
}
