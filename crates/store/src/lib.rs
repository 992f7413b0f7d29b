//! Meridian's keyspace over `meridian-kv`: users, devices, conversations,
//! members, messages, inboxes, cursors, idempotency records, media records
//! and their check queue, the versionstamp clock, with typed access inside a caller's transaction.
//!
//! # What this crate owns
//! The key layout (see [`keys`]; documented in `docs/architecture.md`) and
//! the encoding of every stored record ([`model`]). Each function takes a
//! [`meridian_kv::Transaction`] and reads or writes a few keys; it never
//! commits, so the core composes them into one transaction per operation
//! (a send is one transaction: message, inbox entries, inbox heads,
//! idempotency record). How delivery loops wait for an inbox to grow is
//! one abstraction, [`InboxWaiter`]: the inbox feed ([`InboxFeed`], which
//! follows the committed batches of a native store to keep the tails of
//! inboxes being delivered) where the store has one, a watch on the inbox
//! head otherwise.
//!
//! # What it must not touch
//! No tonic, axum, Kafka or S3; no domain decisions (who may do what lives in
//! `meridian-core`). No engine: only the `meridian-kv` interface.

mod feed;
mod inbox_wait;
pub mod keys;
mod media;
pub mod model;
mod ops;
mod replication;

pub use feed::{FeedEntry, FeedRead, InboxFeed, InboxSubscription};
pub use inbox_wait::{Armed, InboxWait, InboxWaiter};
pub use media::*;
pub use model::*;
pub use ops::*;
pub use replication::*;

/// A database over the memory engine on a manual clock, for unit tests.
#[cfg(test)]
fn test_database() -> meridian_kv::Database {
    let clock: meridian_seams::SharedClock =
        std::sync::Arc::new(meridian_seams::clock::ManualClock::new(1_800_000_000_000));
    meridian_kv::Database::open(
        std::sync::Arc::new(meridian_kv_memory::MemoryEngine::new()),
        clock,
        meridian_seams::Rng::seeded(7),
        meridian_kv::DatabaseOptions::default(),
    )
    .expect("open")
}

/// Errors from reading or writing Meridian's records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The transactional store failed (conflicts are retried by the caller's loop).
    #[error(transparent)]
    Kv(#[from] meridian_kv::KvError),
    /// A stored record could not be decoded: corruption or an incompatible writer.
    #[error("corrupt record at {what}: {reason}")]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// Why decoding failed.
        reason: String,
    },
}

impl meridian_kv::TxnError for StoreError {
    fn as_kv(&self) -> Option<&meridian_kv::KvError> {
        match self {
            Self::Kv(e) => Some(e),
            Self::Corrupt { .. } => None,
        }
    }
}
