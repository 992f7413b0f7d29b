//! The durable storage engine for `meridian-kv`, on fjall.
//!
//! fjall is an LSM tree: measured here over 2.5M inbox-style keys it sustained
//! ~90–175k keys/s with an fsync per 512-key batch, where a copy-on-write
//! B-tree (redb) managed 19–32k keys/s and slowed as the tree grew. A send
//! writes about six keys, so only the LSM leaves room for 20k sends/s.
//!
//! Each group commit from the transaction layer becomes one fjall write batch
//! committed with `PersistMode::SyncAll` (one fsync), on tokio's blocking pool
//! so the fsync does not stall the async workers. A relaxed batch (every
//! transaction in it relaxed its durability: acks) is handed to the
//! operating system only; the next fsynced batch takes it to the disk, and
//! if none follows within [`RELAXED_SYNC_WITHIN`] the engine fsyncs it then. Snapshots are fjall's MVCC
//! snapshots. fjall starts background threads, so this engine never runs in
//! the deterministic simulation (that is `kv-memory`'s job).
//!
//! This is the only crate that imports fjall.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use futures::future::BoxFuture;
use meridian_kv::KvError;
use meridian_kv::engine::{Engine, EngineBatch, EnginePair, EngineSnapshot};

/// How long a relaxed batch may stay off the disk when no fsynced batch
/// follows it: the most a machine crash can take back of acks. Bounded so
/// that a crash does not move a cursor back far enough for a retention
/// sweep to take an acknowledged message for a lost one.
pub const RELAXED_SYNC_WITHIN: Duration = Duration::from_millis(100);

/// When a group commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Each group commit is fsynced before any of its transactions is
    /// acknowledged: an acknowledged write survives a power failure. The
    /// default, and the only mode Meridian's contract holds in. (A relaxed
    /// batch is the exception its transactions asked for: fsynced with the
    /// next batch, or within [`RELAXED_SYNC_WITHIN`].)
    #[default]
    EveryCommit,
    /// Each group commit is handed to the operating system, and the journal
    /// is fsynced every interval: a crash of the machine (not of the
    /// process) loses up to that much acknowledged work. It exists to
    /// measure what durability costs (`meridian bench --sync`).
    Every(Duration),
}

/// The fjall-backed engine. Clones share the same open database.
#[derive(Clone)]
pub struct FjallEngine {
    /// Shared by the clones; the scheduled fsync of relaxed batches holds
    /// it weakly, so a closed engine is not kept open (fjall's journal
    /// fsyncs itself when the database is dropped).
    db: Arc<Database>,
    keyspace: Keyspace,
    /// One batch at a time: the transaction layer already serialises commits;
    /// this keeps a stray second writer from interleaving clear-range scans.
    write_lock: Arc<std::sync::Mutex<()>>,
    /// The first write failure, after which the engine writes nothing.
    failed: Arc<std::sync::OnceLock<String>>,
    durability: Durability,
    /// A fsync of relaxed batches is scheduled ([`RELAXED_SYNC_WITHIN`]).
    sync_scheduled: Arc<AtomicBool>,
    /// Held by every clone: the periodic fsync thread (with
    /// [`Durability::Every`]) stops once the last clone is gone.
    open: Arc<()>,
}

impl std::fmt::Debug for FjallEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallEngine").finish_non_exhaustive()
    }
}

impl FjallEngine {
    /// Opens (or creates) the engine in directory `path`, recovering its
    /// journal after a crash.
    ///
    /// # Errors
    /// I/O failures, a corrupt journal, or the directory being locked by
    /// another process.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KvError> {
        Self::open_with(path, Durability::EveryCommit)
    }

    /// [`FjallEngine::open`] with a choice of [`Durability`].
    ///
    /// # Errors
    /// As [`FjallEngine::open`].
    pub fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<Self, KvError> {
        std::fs::create_dir_all(path.as_ref()).map_err(KvError::engine)?;
        let db = Database::builder(path.as_ref())
            .open()
            .map_err(KvError::engine)?;
        let keyspace = db
            .keyspace("kv", KeyspaceCreateOptions::default)
            .map_err(KvError::engine)?;
        let engine = Self {
            db: Arc::new(db),
            keyspace,
            write_lock: Arc::new(std::sync::Mutex::new(())),
            failed: Arc::new(std::sync::OnceLock::new()),
            durability,
            sync_scheduled: Arc::new(AtomicBool::new(false)),
            open: Arc::new(()),
        };
        if let Durability::Every(interval) = durability {
            engine.fsync_every(interval)?;
        }
        Ok(engine)
    }

    /// Starts the thread that fsyncs the journal every `interval` until
    /// the last clone of this engine is dropped.
    fn fsync_every(&self, interval: Duration) -> Result<(), KvError> {
        let (db, open) = (self.db.clone(), Arc::downgrade(&self.open));
        let failed = self.failed.clone();
        #[allow(clippy::disallowed_methods, reason = "an engine owns its threads")]
        std::thread::Builder::new()
            .name("fjall-fsync".into())
            .spawn(move || {
                while open.strong_count() > 0 {
                    std::thread::sleep(interval);
                    if let Err(error) = db.persist(PersistMode::SyncAll) {
                        let _ = failed.set(error.to_string());
                        return;
                    }
                }
            })
            .map(drop)
            .map_err(KvError::engine)
    }

    /// Writes `batch`; the first failure is final. fjall poisons itself
    /// when a journal write or fsync fails, and a failed scan of a cleared
    /// range means the disk under the store is failing: either way a later
    /// write cannot be trusted to mean what it says, so none is tried.
    fn write_blocking(&self, batch: &EngineBatch) -> Result<(), KvError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reason) = self.failed.get() {
            return Err(KvError::StoreFailed {
                reason: reason.clone(),
            });
        }
        self.write_batch(batch).inspect_err(|error| {
            let _ = self.failed.set(error.to_string());
        })
    }

    fn write_batch(&self, batch: &EngineBatch) -> Result<(), KvError> {
        // A relaxed batch is handed to the operating system only: the next
        // fsynced batch takes it to the disk with it, as fjall's journal is
        // written and synced in order (and synced before it rotates).
        let persist = match self.durability {
            Durability::EveryCommit if !batch.relaxed => PersistMode::SyncAll,
            Durability::EveryCommit | Durability::Every(_) => PersistMode::Buffer,
        };
        let mut writes = self.db.batch().durability(Some(persist));
        // fjall has no range tombstone: a cleared range is removed key by
        // key. Keys the batch also names get their final state below instead
        // (fjall gives every item of a batch one sequence number, so a key
        // must appear once).
        if !batch.cleared.is_empty() {
            let snapshot = self.db.snapshot();
            for (begin, end) in &batch.cleared {
                if begin >= end {
                    continue;
                }
                for guard in snapshot.range(&self.keyspace, begin.as_slice()..end.as_slice()) {
                    let key = guard.key().map_err(KvError::engine)?;
                    if !batch.values.contains_key(key.as_ref()) {
                        writes.remove(&self.keyspace, key);
                    }
                }
            }
        }
        for (key, state) in &batch.values {
            match state {
                Some(value) => writes.insert(&self.keyspace, key.as_slice(), value.as_slice()),
                None => writes.remove(&self.keyspace, key.as_slice()),
            }
        }
        writes.commit().map_err(KvError::engine)?;
        Ok(())
    }
}

struct FjallSnapshot {
    snapshot: fjall::Snapshot,
    keyspace: Keyspace,
}

impl EngineSnapshot for FjallSnapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        Ok(self
            .snapshot
            .get(&self.keyspace, key)
            .map_err(KvError::engine)?
            .map(|v| Bytes::copy_from_slice(&v)))
    }

    fn range<'a>(
        &'a self,
        begin: &[u8],
        end: &[u8],
        reverse: bool,
    ) -> Box<dyn Iterator<Item = Result<EnginePair, KvError>> + 'a> {
        if begin >= end {
            return Box::new(std::iter::empty());
        }
        let iter = self.snapshot.range(&self.keyspace, begin..end);
        let convert = |guard: fjall::Guard| {
            guard
                .into_inner()
                .map(|(k, v)| (Bytes::copy_from_slice(&k), Bytes::copy_from_slice(&v)))
                .map_err(KvError::engine)
        };
        if reverse {
            Box::new(iter.rev().map(convert))
        } else {
            Box::new(iter.map(convert))
        }
    }
}

impl FjallEngine {
    /// Makes sure the journal is fsynced within [`RELAXED_SYNC_WITHIN`]
    /// of a relaxed batch just written, which no fsynced batch may follow.
    /// One fsync at most per interval, however many relaxed batches.
    fn sync_relaxed_soon(&self) {
        if self.sync_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let (db, scheduled) = (Arc::downgrade(&self.db), self.sync_scheduled.clone());
        let failed = self.failed.clone();
        tokio::spawn(async move {
            // Cleared even if the task is cancelled (a runtime shutting
            // down), so a later relaxed batch schedules its own fsync.
            let clear = ClearOnDrop(scheduled);
            tokio::time::sleep(RELAXED_SYNC_WITHIN).await;
            // Before the fsync: a relaxed batch written while it runs may
            // miss it, and must schedule the next.
            drop(clear);
            // Gone: dropping the database fsynced its journal.
            let Some(db) = db.upgrade() else {
                return;
            };
            // The engine owns its fsync work, as for its writes.
            #[allow(clippy::disallowed_methods)]
            let synced = tokio::task::spawn_blocking(move || {
                db.persist(PersistMode::SyncAll)
                    .map_err(|error| error.to_string())
            })
            .await;
            // A failed fsync may have dropped dirty pages: no later write
            // can be trusted (`Engine::failure`).
            if let Ok(Err(reason)) = synced {
                let _ = failed.set(reason);
            }
        });
    }
}

/// Clears a flag when dropped.
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Engine for FjallEngine {
    fn snapshot(&self) -> Box<dyn EngineSnapshot> {
        Box::new(FjallSnapshot {
            snapshot: self.db.snapshot(),
            keyspace: self.keyspace.clone(),
        })
    }

    fn write(&self, batch: Arc<EngineBatch>) -> BoxFuture<'static, Result<(), KvError>> {
        let engine = self.clone();
        // Scheduled once the batch is written: scheduled before, the fsync
        // could run ahead of a slow write and leave it unsynced.
        let relaxed =
            (batch.relaxed && self.durability == Durability::EveryCommit).then(|| self.clone());
        // Started now, not when first polled: the committer resolves the
        // next batch while this one is written. The engine owns its fsync
        // thread work; fjall never runs under simulation (the memory engine
        // does).
        #[allow(clippy::disallowed_methods)]
        let task = tokio::task::spawn_blocking(move || engine.write_blocking(&batch));
        Box::pin(async move {
            task.await.map_err(|join| KvError::CommitUnknownResult {
                reason: format!("engine write task failed: {join}"),
            })??;
            if let Some(engine) = relaxed {
                engine.sync_relaxed_soon();
            }
            Ok(())
        })
    }

    fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }
}
