//! A deterministic in-memory storage engine for `meridian-kv`.
//!
//! It starts no threads and never sleeps, so it can run inside the
//! deterministic simulation. Its contents are an immutable ordered map
//! (`imbl::OrdMap`), so a snapshot is an O(1) clone. A [`MemoryEngine`] clone
//! shares the same contents: the simulation keeps one across a simulated crash
//! of its host, which therefore loses exactly the commits that had not reached
//! the engine — the durability contract of the fsync'd engine — and, with
//! [`MemoryEngine::lose_unsynced`], the relaxed batches no later batch took
//! to the disk, as a crash of the machine under fjall would.
//!
//! Faults can be injected ([`Fault`]) to exercise `commit_unknown_result`.
//!
//! Must not depend on anything but `meridian-kv` and its data structures.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use imbl::OrdMap;
use meridian_kv::KvError;
use meridian_kv::engine::{Engine, EngineBatch, EnginePair, EngineSnapshot};

/// A fault to inject into the next engine writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Apply the batch, then report failure: the commit's result is unknown
    /// to the caller although it is durable.
    ApplyThenFail,
    /// Report failure without applying anything.
    FailWithoutApplying,
    /// Fail for good, as fjall after a failed fsync: this write and every
    /// later one fail without applying, and [`Engine::failure`] says so.
    Poison,
    /// Hang, as a write stuck in a dying disk's fsync: the write applies
    /// only when [`MemoryEngine::release`] is called, and completes then.
    Hang,
}

#[derive(Debug)]
struct InjectedFault(Fault);

impl std::fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "injected fault: {:?}", self.0)
    }
}

impl std::error::Error for InjectedFault {}

#[derive(Default)]
struct State {
    data: OrdMap<Bytes, Bytes>,
    /// What a crash of the machine keeps: `data` as of the last batch that
    /// was not relaxed (each such batch takes the relaxed ones before it).
    on_disk: OrdMap<Bytes, Bytes>,
    faults: VecDeque<Fault>,
    writes: u64,
    poisoned: bool,
    /// Writes hung by [`Fault::Hang`], waiting for [`MemoryEngine::release`].
    hung: Vec<futures::channel::oneshot::Sender<()>>,
}

/// The in-memory engine. Clones share contents.
#[derive(Clone, Default)]
pub struct MemoryEngine {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEngine").finish_non_exhaustive()
    }
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next batch writes fail as `fault` says, in order.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// The engine as a restarted process finds it after a failure
    /// ([`Fault::Poison`]): what was written stands, and writes work again
    /// (fjall recovering its journal on a disk that works again).
    pub fn recover(&self) {
        let mut state = self.lock();
        state.poisoned = false;
        state.faults.clear();
    }

    /// The engine as a machine that crashed finds it: the relaxed batches
    /// written since the last batch that was not relaxed are gone
    /// ([`EngineBatch::relaxed`]); everything before stands.
    pub fn lose_unsynced(&self) {
        let mut state = self.lock();
        state.data = state.on_disk.clone();
    }

    /// Whether the engine failed for good ([`Fault::Poison`]) and has not
    /// been [recovered](Self::recover) since.
    pub fn is_poisoned(&self) -> bool {
        self.lock().poisoned
    }

    /// Lets every hung write ([`Fault::Hang`]) complete.
    pub fn release(&self) {
        for hung in std::mem::take(&mut self.lock().hung) {
            let _ = hung.send(());
        }
    }

    /// How many batches were written (one per group commit).
    pub fn batches_written(&self) -> u64 {
        self.lock().writes
    }

    /// Number of keys stored (system keys included).
    pub fn len(&self) -> usize {
        self.lock().data.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct MemorySnapshot(OrdMap<Bytes, Bytes>);

impl EngineSnapshot for MemorySnapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        Ok(self.0.get(key).cloned())
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
        let range = self
            .0
            .range(Bytes::copy_from_slice(begin)..Bytes::copy_from_slice(end))
            .map(|(k, v)| Ok((k.clone(), v.clone())));
        if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        }
    }
}

fn apply(data: &mut OrdMap<Bytes, Bytes>, batch: &EngineBatch) {
    for (begin, end) in &batch.cleared {
        if begin < end {
            let doomed: Vec<Bytes> = data
                .range(Bytes::copy_from_slice(begin)..Bytes::copy_from_slice(end))
                .map(|(k, _)| k.clone())
                .filter(|k| !batch.values.contains_key(k.as_ref()))
                .collect();
            for key in doomed {
                data.remove(&key);
            }
        }
    }
    for (key, state) in &batch.values {
        match state {
            Some(value) => {
                data.insert(Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
            }
            None => {
                data.remove(key.as_slice());
            }
        }
    }
}

impl State {
    /// Applies `batch` to a copy of the data and makes it current (earlier
    /// snapshots keep the old map), counting the write.
    fn write(&mut self, batch: &EngineBatch) {
        let mut data = self.data.clone();
        apply(&mut data, batch);
        if !batch.relaxed {
            self.on_disk = data.clone();
        }
        self.data = data;
        self.writes += 1;
    }
}

impl Engine for MemoryEngine {
    fn snapshot(&self) -> Box<dyn EngineSnapshot> {
        Box::new(MemorySnapshot(self.lock().data.clone()))
    }

    fn write(&self, batch: Arc<EngineBatch>) -> BoxFuture<'static, Result<(), KvError>> {
        let mut state = self.lock();
        let fault = if state.poisoned {
            Some(Fault::Poison)
        } else {
            state.faults.pop_front()
        };
        state.poisoned |= fault == Some(Fault::Poison);
        if fault == Some(Fault::Hang) {
            let (release, released) = futures::channel::oneshot::channel();
            state.hung.push(release);
            let engine = self.clone();
            return Box::pin(async move {
                let _ = released.await;
                engine.lock().write(&batch);
                Ok(())
            });
        }
        if fault.is_none() || fault == Some(Fault::ApplyThenFail) {
            state.write(&batch);
        }
        let outcome = match fault {
            None => Ok(()),
            Some(fault) => Err(KvError::engine(InjectedFault(fault))),
        };
        // The write completes one scheduling turn later, as a real one would
        // (never at once): the committer then resolves the next batch while
        // this one is "being written", so the simulation exercises that
        // pipeline too. Still no thread and no timer.
        let mut yielded = false;
        Box::pin(futures::future::poll_fn(move |cx| {
            if yielded {
                std::task::Poll::Ready(outcome.clone())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        }))
    }

    fn failure(&self) -> Option<String> {
        self.lock()
            .poisoned
            .then(|| InjectedFault(Fault::Poison).to_string())
    }
}
