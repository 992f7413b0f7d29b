//! The durable log of one region: one topic per destination region, split
//! into partitions by conversation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// One entry of a topic partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its position in the partition.
    pub offset: u64,
    /// The partition key (a conversation id).
    pub key: String,
    /// The encoded change.
    pub value: Bytes,
    /// When it was appended, unix ms.
    pub appended_ms: u64,
}

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRecord {
    /// The partition key.
    pub key: String,
    /// The encoded change.
    pub value: Bytes,
}

/// A log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The embedded log's store failed.
    #[error("store: {0}")]
    Store(#[from] meridian_kv::KvError),
    /// The Kafka client or broker failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A stored record could not be decoded.
    #[error("corrupt log record: {0}")]
    Corrupt(String),
    /// `append_in` on a log that does not live in the caller's store.
    #[error("this log does not live in the store")]
    NotInStore,
}

/// The topic carrying changes from `source_region` to `dest_region` (the
/// source's name is in it too, so regions sharing one local broker never
/// mix their topics). Dots separate the names: region names cannot contain
/// one, so no two region pairs share a topic.
pub fn topic_for(source_region: &str, dest_region: &str) -> String {
    format!("meridian-replication.{source_region}.{dest_region}")
}

/// The fingerprint of an entry's value: a destination records it for the
/// last entry it applied, and the source checks its log still holds that
/// entry at that offset. FNV-1a, 64 bits: stable across builds, and the
/// values are a trusted peer's, not an adversary's.
pub fn fingerprint(value: &[u8]) -> u64 {
    value.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The partition of `key` among `partitions`: FNV-1a, stable across
/// processes and builds (a conversation must always map to one partition).
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    meridian_wire::sites::fnv1a(key) % partitions.max(1)
}

/// Reads a topic from given offsets, for one link stream.
#[async_trait::async_trait]
pub trait LogReader: Send {
    /// Up to `max` records (each tagged with its partition), waiting up to
    /// `wait` for the first; empty when nothing arrived in time.
    async fn next(&mut self, max: usize, wait: Duration)
    -> Result<Vec<(u32, LogRecord)>, LogError>;
}

/// What a log holds for one topic after [`ReplicationLog::expire`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holding {
    /// Records held, over every partition.
    pub records: u64,
    /// Append time (unix ms) of the oldest record held, if any.
    pub oldest_ms: Option<u64>,
    /// Records this call dropped by age.
    pub expired: u64,
}

/// A region's durable replication log.
#[async_trait::async_trait]
pub trait ReplicationLog: Send + Sync + 'static {
    /// Partitions per topic.
    fn partitions(&self) -> u32;

    /// Makes sure the topic exists (Kafka topics are created explicitly).
    async fn ensure_topic(&self, topic: &str) -> Result<(), LogError>;

    /// Appends `records` durably, each to the partition of its key, in order
    /// per partition. On error some may have been appended (the caller
    /// retries, so a record can appear twice).
    async fn append(&self, topic: &str, records: &[AppendRecord]) -> Result<(), LogError>;

    /// Whether [`ReplicationLog::append_in`] is served: the log lives in the
    /// store whose transactions its callers run (the embedded log), so a
    /// relay can move outbox entries into it and clear them in one commit.
    fn appends_in_store(&self) -> bool {
        false
    }

    /// Appends `records` as part of `tx`, a transaction on the store this
    /// log lives in; only when [`ReplicationLog::appends_in_store`].
    async fn append_in(
        &self,
        tx: &meridian_kv::Transaction,
        topic: &str,
        records: &[AppendRecord],
    ) -> Result<(), LogError> {
        let _ = (tx, topic, records);
        Err(LogError::NotInStore)
    }

    /// A reader of `topic` starting at `from` per partition (0 when absent).
    async fn reader(
        &self,
        topic: &str,
        from: &BTreeMap<u32, u64>,
    ) -> Result<Box<dyn LogReader>, LogError>;

    /// The end offset (one past the last record) of every partition.
    async fn end_offsets(&self, topic: &str) -> Result<BTreeMap<u32, u64>, LogError>;

    /// The entry at `offset` of `partition`, if the log holds it.
    async fn record_at(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<Option<LogRecord>, LogError>;

    /// The first offset still held in every partition: records below it
    /// were trimmed (embedded: after the destination applied them) or
    /// expired (Kafka's retention).
    async fn start_offsets(&self, topic: &str) -> Result<BTreeMap<u32, u64>, LogError>;

    /// Whether records leave this log only by [`ReplicationLog::trim`],
    /// after the topic's one destination reported them applied: a
    /// destination applying a new incarnation again may then begin at the
    /// start offsets. Otherwise (retention) it begins at 0, and records
    /// gone before it read them are refused, never skipped.
    fn trims_only_applied(&self) -> bool {
        false
    }

    /// Drops `topic`'s records older than the log's age bound, applied or
    /// not, and answers what the log then holds (the embedded log: it
    /// keeps a destination's records while it is away, so this is what
    /// bounds it; Kafka's own retention does this there, so by default
    /// nothing is dropped and nothing is reported).
    async fn expire(&self, topic: &str) -> Result<Option<Holding>, LogError> {
        let _ = topic;
        Ok(None)
    }

    /// Per partition, the offset below which [`ReplicationLog::expire`]
    /// dropped records by age (0 where it never did). A destination
    /// whose next offset lies below it was away longer than the age
    /// bound: it resyncs from the oldest record held, instead of being
    /// refused.
    async fn expired_offsets(&self, topic: &str) -> Result<BTreeMap<u32, u64>, LogError> {
        let _ = topic;
        Ok(BTreeMap::new())
    }

    /// Drops records in `from..before` of a partition: the destination has
    /// applied them (and everything before `from` was trimmed already — an
    /// LSM engine walks the tombstones of a range it clears, so each trim
    /// covers only what is new). Kafka keeps its own retention, so it may
    /// ignore this.
    async fn trim(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        before: u64,
    ) -> Result<(), LogError>;
}

/// A log shared by the relay and the link server.
pub type SharedLog = Arc<dyn ReplicationLog>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_in_range() {
        assert_eq!(partition_for("conv-a", 1), 0);
        let p = partition_for("0193b0c2-7d1e-7a00-8000-000000000001@us-east", 8);
        assert!(p < 8);
        assert_eq!(
            p,
            partition_for("0193b0c2-7d1e-7a00-8000-000000000001@us-east", 8)
        );
        // Known FNV-1a value: the mapping must never change between builds.
        assert_eq!(partition_for("a", u32::MAX), 0xe40c_292c);
    }

    #[test]
    fn fingerprints_are_fnv1a_64() {
        assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fingerprint(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fingerprint(b"ab"), fingerprint(b"ba"));
    }
}
