//! A transactional, ordered key-value interface modelled on FoundationDB, and
//! the one engine-neutral transaction layer that gives every storage engine
//! FoundationDB's semantics.
//!
//! # What this crate owns
//! - [`Database`] and [`Transaction`]: serializable transactions with
//!   snapshot reads at a read version, read-your-writes, read conflict ranges
//!   checked by a resolver at commit, versionstamped keys and values, atomic
//!   add, watches, and FoundationDB's limits (10 kB keys, 100 kB values,
//!   10 MB transactions, 5 s lifetime).
//! - Group commit: concurrent commits are resolved together and handed to the
//!   engine as one atomic, durable write batch (one fsync for the batch), each
//!   transaction receiving its own commit version and versionstamp.
//! - [`Database::run`]: the retry loop. The closure may run several times and
//!   is told when an earlier attempt may have committed ([`MaybeCommitted`]),
//!   so every transaction written over this crate must be idempotent.
//! - The FoundationDB tuple encoding for keys, re-exported as [`tuple`].
//!
//! # Shape
//! Garage's: concrete handles ([`Database`], [`Transaction`]) over one
//! object-safe seam, [`backend::Backend`]. Two kinds of backend sit under it:
//! - the native layer ([`native`], opened by [`Database::open`]) over an
//!   [`engine::Engine`], because the transaction layer, not the engine,
//!   decides isolation, so the engine surface stays tiny (snapshot, range
//!   iterator, atomic batch write);
//! - a store that is transactional itself (FoundationDB, crate
//!   `meridian-kv-fdb`, through [`Database::from_backend`]).
//!
//! Files, top-down: `handle.rs` and `runner.rs` (the handles, the retry
//! loop) → `backend.rs` (the seam) → `native/` → `engine.rs`, `types.rs`,
//! `keys.rs`, `error.rs`.
//!
//! # What it must not touch
//! No storage engine or store is named here: engines implement
//! [`engine::Engine`] in crates of their own (`kv-memory`, `kv-fjall`), and
//! FoundationDB implements [`backend::Backend`] in `kv-fdb`.

pub mod backend;
pub mod commit_health;
pub mod engine;
mod error;
mod handle;
mod keys;
pub mod native;
mod runner;
pub mod types;

pub use backend::CommitObserver;
pub use error::{KvError, TxnError};
pub use foundationdb_tuple as tuple;
pub use handle::{Database, Transaction};
pub use keys::{KeyRange, key_after, prefix_range, strinc};
pub use native::{DatabaseOptions, RetryOptions};
pub use runner::MaybeCommitted;
pub use types::{CommitInfo, KeyValue, RangeOption, Watch};

/// FoundationDB's limits, enforced by every engine through the transaction layer.
pub mod limits {
    /// Largest key, in bytes.
    pub const MAX_KEY_BYTES: usize = 10_000;
    /// Largest value, in bytes.
    pub const MAX_VALUE_BYTES: usize = 100_000;
    /// Largest transaction (keys, values and conflict ranges), in bytes.
    pub const MAX_TRANSACTION_BYTES: usize = 10_000_000;
    /// How long a transaction may live from its read version to its commit.
    pub const MAX_TRANSACTION_AGE: std::time::Duration = std::time::Duration::from_secs(5);
    /// The size FoundationDB advises cutting work into.
    pub const ADVISED_TRANSACTION_BYTES: usize = 1_000_000;
}
