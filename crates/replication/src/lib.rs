//! The cross-region replication bus.
//!
//! A change that must reach another region is written by the core to the
//! outbox (`meridian-store`) in the same transaction as the change itself.
//! From there this crate carries it:
//!
//! 1. [`relay::Relay`] moves outbox entries, per destination region, into this
//!    region's durable [`log::ReplicationLog`] — Kafka ([`kafka`], one topic
//!    per destination, keyed by conversation) or the [`embedded::EmbeddedLog`]
//!    kept in the region's own store — and then removes them from the outbox.
//!    A crash between the two appends an entry twice: transport is
//!    at-least-once.
//! 2. [`server::LinkServer`] serves the `Replication.Link` stream: a
//!    destination region pulls its topic from the offsets it last applied,
//!    with a window of entries in flight.
//! 3. [`link::Link`] runs in the destination: it pulls from one source
//!    region, hands each batch to an [`Applier`] (the destination core), which
//!    applies it and records the next offset **in the same transaction**, and
//!    reconnects with backoff, resuming from the recorded offsets. Applying is
//!    idempotent, so the effect is exactly-once.
//! 4. [`epoch::LogEpochs`] names each incarnation of a source's log: offsets
//!    are recorded with the epoch they belong to, and a log that lost
//!    entries (recreated, restored) gets a new one, so its destination
//!    applies it again rather than skip what is new. Reads of entries the
//!    log no longer holds, and gaps, are refused and alarmed, never skipped.
//! 5. [`expiry::expire_periodically`] bounds the embedded log by age: a
//!    destination away longer than that finds its records gone and
//!    resyncs from the oldest held, counted and logged (`start.rs`).
//!
//! # What it must not touch
//! No domain rules: it never decodes a change (the [`Applier`] does). No
//! sockets except through `meridian-seams`' network.

pub mod embedded;
pub mod epoch;
pub mod expiry;
pub mod kafka;
pub mod link;
pub mod log;
pub mod relay;
pub mod server;
mod start;

use std::collections::BTreeMap;

pub use epoch::LogEpochs;
pub use log::{
    LogError, LogRecord, ReplicationLog, SharedLog, fingerprint, partition_for, topic_for,
};

/// What applying a batch achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The next offset to apply in the partition (everything before it is
    /// applied and recorded).
    pub next_offset: u64,
    /// Set when an entry was refused (a clock stamp beyond the maximum
    /// offset): nothing from it on was applied, and the link retries later.
    pub refused: Option<String>,
    /// Set when the log skipped offsets (`(expected, got)`): nothing from
    /// the gap on was applied; skipping it would lose the entries missing.
    pub gap: Option<(u64, u64)>,
}

/// Where a destination stands with a source's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// The epoch of the log the offsets belong to (0: none recorded).
    pub epoch: u64,
    /// The next offset to apply, per partition.
    pub offsets: BTreeMap<u32, u64>,
    /// The [`log::fingerprint`] of the last entry applied (at the next
    /// offset - 1), per partition where it was recorded.
    pub last: BTreeMap<u32, u64>,
}

/// Why a batch could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

/// The destination side of replication: a core that applies what arrives.
#[async_trait::async_trait]
pub trait Applier: Send + Sync + 'static {
    /// The epoch and next offset per partition of `source_region`'s topic
    /// for this region, as recorded by earlier applies.
    async fn applied_state(&self, source_region: &str) -> Result<AppliedState, ApplyError>;

    /// Records that what follows comes from `epoch` of the source's log;
    /// with `restart`, forgets the offsets recorded before and records
    /// these (the log is another incarnation).
    async fn start_epoch(
        &self,
        source_region: &str,
        epoch: u64,
        restart: Option<&BTreeMap<u32, u64>>,
    ) -> Result<(), ApplyError>;

    /// Applies `records` (consecutive offsets of one partition) in one
    /// transaction that also records the next offset; records before the
    /// recorded offset are skipped, so a replayed batch changes nothing.
    async fn apply(
        &self,
        source_region: &str,
        partition: u32,
        records: &[LogRecord],
    ) -> Result<ApplyOutcome, ApplyError>;
}
