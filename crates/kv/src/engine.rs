//! The storage-engine side of the interface: what an engine must provide so
//! the transaction layer above can give it FoundationDB's semantics.
//!
//! An engine is deliberately simple: point-in-time snapshots, ordered range
//! iteration, and atomic durable batch writes. Isolation, conflict detection,
//! versionstamps, atomic operations and watches live in the transaction layer,
//! once, for every engine.

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

/// One change in an engine write batch, already resolved (no atomic ops or
/// versionstamp placeholders remain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineMutation {
    /// Write `value` at `key`.
    Set(Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Clear(Vec<u8>),
    /// Remove every key in `[begin, end)`.
    ClearRange(Vec<u8>, Vec<u8>),
}

/// A storage engine under the transaction layer.
pub trait Engine: Send + Sync + 'static {
    /// A snapshot of everything written so far.
    fn snapshot(&self) -> Box<dyn EngineSnapshot>;

    /// Applies `batch` atomically and durably: when the future resolves with
    /// `Ok`, every mutation survives a crash; after a crash either all of the
    /// batch is visible or none of it.
    ///
    /// # Errors
    /// Engine failures; the transaction layer reports them to the batch's
    /// transactions as `commit_unknown_result`.
    fn write(&self, batch: Vec<EngineMutation>) -> BoxFuture<'static, Result<(), KvError>>;
}
