//! FoundationDB as a backend of `meridian-kv`: the same [`meridian_kv::Database`]
//! and [`meridian_kv::Transaction`] handles over a FoundationDB cluster.
//!
//! # What this crate owns
//! - [`open`]: a [`meridian_kv::Database`] over a cluster file, through the
//!   `foundationdb` crate; [`shutdown`] stops the client network on the way
//!   out of the process.
//! - The mapping of FoundationDB onto the interface: reads, conflict
//!   ranges, versionstamps, atomic operations, watches and retries are
//!   FoundationDB's own (its `on_error` backoff drives
//!   [`meridian_kv::backend::Backend::retry`]); the interface's limits are
//!   checked before the cluster sees a mutation, so every backend refuses
//!   with the same typed error at the same call.
//! - The one `unsafe` block of the workspace: booting the client network.
//!
//! # What it must not touch
//! Nothing above `meridian-kv` (no store, no domain types): keys and values
//! are bytes.
//!
//! Everything is behind the feature `fdb` (libclang to build, `libfdb_c` to
//! link and run); without it the crate is empty, so the workspace builds
//! anywhere. Its conformance run (`tests/conformance.rs`) needs a test
//! cluster named by `FDB_CLUSTER_FILE`.

#[cfg(feature = "fdb")]
mod fdb;

#[cfg(feature = "fdb")]
pub use fdb::{open, shutdown};
