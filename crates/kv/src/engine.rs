//! The storage-engine side of the interface: what an engine must provide so
//! the transaction layer above can give it FoundationDB's semantics.
//!
//! An engine is deliberately simple: point-in-time snapshots, ordered range
//! iteration, and atomic durable batch writes. Isolation, conflict detection,
//! versionstamps, atomic operations and watches live in the transaction layer,
//! once, for every engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::KvError;

/// One key-value pair from an engine.
pub type EnginePair = (Bytes, Bytes);

/// A consistent, immutable view of the engine at one commit version.
pub trait EngineSnapshot: Send + Sync {
    /// The value of `key`, if present.
    ///
    /// # Errors
    /// Engine failures (I/O, corruption).
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, KvError>;

    /// The pairs with `begin <= key < end`, ascending or (`reverse`) descending.
    fn range<'a>(
        &'a self,
        begin: &[u8],
        end: &[u8],
        reverse: bool,
    ) -> Box<dyn Iterator<Item = Result<EnginePair, KvError>> + 'a>;
}

/// One group commit as the engine writes it: the final state of every key
/// the batch touched, already resolved (no atomic operations or
/// versionstamp placeholders remain, and a key written twice appears once).
///
/// The transaction layer builds it while resolving the batch and keeps
/// reading it (for the atomic operations of the next batch) while the engine
/// writes it, so it is shared rather than moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineBatch {
    /// Ranges `[begin, end)` cleared by the batch: every stored key in them
    /// that `values` does not name is removed.
    pub cleared: Vec<(Vec<u8>, Vec<u8>)>,
    /// The final state of each key the batch set or cleared (`None` removes
    /// it); it takes precedence over `cleared`.
    pub values: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Every transaction in the batch relaxed its durability
    /// ([`crate::Transaction::relax_durability`]): the engine may resolve
    /// the write before it reaches the disk. It must still keep the order:
    /// a later batch durable on disk means this one is too.
    pub relaxed: bool,
}

impl EngineBatch {
    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.cleared.is_empty() && self.values.is_empty()
    }

    /// What the batch says of `key`: `Some(state)` if it set, cleared or
    /// range-cleared it, `None` if the stored value stands.
    pub fn state_of(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        if let Some(value) = self.values.get(key) {
            return Some(value.as_deref());
        }
        self.cleared
            .iter()
            .any(|(begin, end)| begin.as_slice() <= key && key < end.as_slice())
            .then_some(None)
    }
}

/// A storage engine under the transaction layer.
pub trait Engine: Send + Sync + 'static {
    /// A snapshot of everything written so far.
    fn snapshot(&self) -> Box<dyn EngineSnapshot>;

    /// Applies `batch` atomically and durably: when the future resolves with
    /// `Ok`, every change survives a crash; after a crash either all of the
    /// batch is visible or none of it. The transaction layer never starts a
    /// write before the previous one resolved.
    ///
    /// A [`EngineBatch::relaxed`] batch may resolve once it is written,
    /// before it is on disk, provided it reaches the disk no later than the
    /// next batch that is not relaxed (a journal fsynced in order does).
    ///
    /// # Errors
    /// Engine failures; the transaction layer reports them to the batch's
    /// transactions as `commit_unknown_result`.
    fn write(&self, batch: Arc<EngineBatch>) -> BoxFuture<'static, Result<(), KvError>>;

    /// Why the engine can no longer be trusted with writes, once that is
    /// so; `None` while it can. After a failed write the transaction layer
    /// asks: `Some` stops the database (fail-stop, [`KvError::StoreFailed`]
    /// for every later commit), `None` makes the failure transient (its
    /// batch was `commit_unknown_result`, later batches are written).
    ///
    /// An engine whose write failed in its journal or fsync must answer
    /// `Some`: after a failed fsync the kernel may have dropped the dirty
    /// pages and report the next fsync as a success, so a retry can
    /// acknowledge writes that are not on disk.
    fn failure(&self) -> Option<String> {
        None
    }
}
