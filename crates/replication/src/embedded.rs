//! The embedded log: topics kept in the region's own transactional store,
//! durable with it (fjall, fsync'd group commits). The default for
//! `meridian dev` and the deterministic simulation, where Kafka cannot run.
//!
//! | key | value |
//! |---|---|
//! | `("log", topic, partition, offset)` | `[appended_ms: u64 BE][key length: u16 BE][key][value]` |
//! | `("log_end", topic, partition)` | next offset, u64 BE |
//! | `("log_head", topic)` | counter every append bumps (watched by readers) |
//! | `("log_trimmed", topic, partition)` | offset below which records were trimmed, u64 BE |
//! | `("log_expired", topic, partition)` | offset below which records were dropped by age, u64 BE |
//!
//! Records leave the log when their destination reports them applied
//! ([`ReplicationLog::trim`]), or once older than the log's age bound
//! ([`ReplicationLog::expire`], 30 days by default: the retention of
//! everything they carry), so a destination that stays away cannot make
//! the log grow without end.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use meridian_kv::tuple::pack;
use meridian_kv::{Database, KeyRange, RangeOption, Transaction};
use meridian_seams::SharedClock;

use crate::log::{
    AppendRecord, Holding, LogError, LogReader, LogRecord, ReplicationLog, partition_for,
};

fn record_key(topic: &str, partition: u32, offset: u64) -> Vec<u8> {
    pack(&("log", topic, partition, offset))
}

fn end_key(topic: &str, partition: u32) -> Vec<u8> {
    pack(&("log_end", topic, partition))
}

fn head_key(topic: &str) -> Vec<u8> {
    pack(&("log_head", topic))
}

fn trimmed_key(topic: &str, partition: u32) -> Vec<u8> {
    pack(&("log_trimmed", topic, partition))
}

fn expired_key(topic: &str, partition: u32) -> Vec<u8> {
    pack(&("log_expired", topic, partition))
}

/// An offset stored as 8 bytes big-endian; 0 when absent or malformed.
fn offset_value(raw: Option<Bytes>) -> u64 {
    raw.and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Records looked at per transaction while expiring.
const EXPIRE_PAGE: usize = 512;

/// How long records are kept unapplied by default: the retention of what
/// they carry.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

fn encode_record(appended_ms: u64, key: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + key.len() + value.len());
    out.extend_from_slice(&appended_ms.to_be_bytes());
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_record(offset: u64, raw: &Bytes) -> Result<LogRecord, LogError> {
    let corrupt = || LogError::Corrupt(format!("record at offset {offset}"));
    let appended_ms = raw
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(corrupt)?;
    let key_len = raw
        .get(8..10)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(corrupt)?;
    let key = raw
        .get(10..10 + key_len)
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or_else(corrupt)?
        .to_string();
    Ok(LogRecord {
        offset,
        key,
        value: raw.slice(10 + key_len..),
        appended_ms,
    })
}

async fn read_end(tx: &Transaction, topic: &str, partition: u32) -> Result<u64, LogError> {
    Ok(tx
        .get(&end_key(topic, partition))
        .await?
        .and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// The log in a region's store.
#[derive(Clone)]
pub struct EmbeddedLog {
    db: Database,
    clock: SharedClock,
    partitions: u32,
    max_age: Duration,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl EmbeddedLog {
    /// A log in `db` with `partitions` partitions per topic.
    pub fn new(db: Database, clock: SharedClock, partitions: u32) -> Self {
        Self {
            db,
            clock,
            partitions: partitions.max(1),
            max_age: DEFAULT_MAX_AGE,
        }
    }

    /// Keeps unapplied records for `max_age` instead of [`DEFAULT_MAX_AGE`].
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Drops one page of a partition's records appended before `cutoff_ms`
    /// and answers what it found.
    async fn expire_page(
        &self,
        topic: &str,
        partition: u32,
        cutoff_ms: u64,
    ) -> Result<ExpiredPage, LogError> {
        self.db
            .run(|tx, _| async move {
                let start = offset_value(tx.get(&trimmed_key(topic, partition)).await?);
                // A snapshot read: appends move the end all the time, and
                // records below the end it saw never change.
                let end = offset_value(tx.get_snapshot(&end_key(topic, partition)).await?);
                let page = tx
                    .get_range_snapshot(
                        &RangeOption::new(KeyRange::new(
                            record_key(topic, partition, start),
                            record_key(topic, partition, end),
                        ))
                        .limit(EXPIRE_PAGE),
                    )
                    .await?;
                let mut keep = start;
                let mut oldest_kept_ms = None;
                for (index, kv) in page.iter().enumerate() {
                    let offset = start + index as u64;
                    let appended_ms = decode_record(offset, &kv.value)?.appended_ms;
                    if appended_ms >= cutoff_ms {
                        oldest_kept_ms = Some(appended_ms);
                        break;
                    }
                    keep = offset + 1;
                }
                if keep > start {
                    tx.clear_range(&KeyRange::new(
                        record_key(topic, partition, start),
                        record_key(topic, partition, keep),
                    ))?;
                    tx.set(&trimmed_key(topic, partition), &keep.to_be_bytes())?;
                    tx.set(&expired_key(topic, partition), &keep.to_be_bytes())?;
                }
                Ok::<_, LogError>(ExpiredPage {
                    expired: keep - start,
                    held: end.saturating_sub(keep),
                    oldest_kept_ms,
                    // A full page of old records: there may be more.
                    more: keep - start == page.len() as u64 && page.len() == EXPIRE_PAGE,
                })
            })
            .await
    }
}

/// What one [`EmbeddedLog::expire_page`] did and saw.
struct ExpiredPage {
    /// Records it dropped.
    expired: u64,
    /// Records the partition still holds.
    held: u64,
    /// Append time of the first record it kept, if it reached one.
    oldest_kept_ms: Option<u64>,
    /// Whether more old records may follow.
    more: bool,
}

#[async_trait::async_trait]
impl ReplicationLog for EmbeddedLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn ensure_topic(&self, _topic: &str) -> Result<(), LogError> {
        Ok(())
    }

    async fn append(&self, topic: &str, records: &[AppendRecord]) -> Result<(), LogError> {
        if records.is_empty() {
            return Ok(());
        }
        self.db
            .run(|tx, _| async move { self.append_in(&tx, topic, records).await })
            .await
    }

    fn appends_in_store(&self) -> bool {
        true
    }

    async fn append_in(
        &self,
        tx: &Transaction,
        topic: &str,
        records: &[AppendRecord],
    ) -> Result<(), LogError> {
        if records.is_empty() {
            return Ok(());
        }
        let now = self.clock.wall_millis();
        let mut ends: BTreeMap<u32, u64> = BTreeMap::new();
        for record in records {
            let partition = partition_for(&record.key, self.partitions);
            let next = match ends.get(&partition) {
                Some(next) => *next,
                None => read_end(tx, topic, partition).await?,
            };
            tx.set(
                &record_key(topic, partition, next),
                &encode_record(now, &record.key, &record.value),
            )?;
            ends.insert(partition, next + 1);
        }
        for (partition, end) in &ends {
            tx.set(&end_key(topic, *partition), &end.to_be_bytes())?;
        }
        tx.atomic_add(&head_key(topic), 1)?;
        Ok(())
    }

    async fn reader(
        &self,
        topic: &str,
        from: &BTreeMap<u32, u64>,
    ) -> Result<Box<dyn LogReader>, LogError> {
        let positions = (0..self.partitions)
            .map(|p| (p, from.get(&p).copied().unwrap_or(0)))
            .collect();
        Ok(Box::new(EmbeddedReader {
            db: self.db.clone(),
            topic: topic.to_string(),
            positions,
            turn: 0,
        }))
    }

    async fn end_offsets(&self, topic: &str) -> Result<BTreeMap<u32, u64>, LogError> {
        let tx = self.db.begin();
        let mut out = BTreeMap::new();
        for partition in 0..self.partitions {
            let end = tx
                .get_snapshot(&end_key(topic, partition))
                .await?
                .and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
                .map_or(0, u64::from_be_bytes);
            out.insert(partition, end);
        }
        Ok(out)
    }

    async fn record_at(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<Option<LogRecord>, LogError> {
        let tx = self.db.begin();
        let raw = tx
            .get_snapshot(&record_key(topic, partition, offset))
            .await?;
        raw.map(|raw| decode_record(offset, &raw)).transpose()
    }

    async fn start_offsets(&self, topic: &str) -> Result<BTreeMap<u32, u64>, LogError> {
        let tx = self.db.begin();
        let mut out = BTreeMap::new();
        for partition in 0..self.partitions {
            let trimmed = tx
                .get_snapshot(&trimmed_key(topic, partition))
                .await?
                .and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
                .map_or(0, u64::from_be_bytes);
            out.insert(partition, trimmed);
        }
        Ok(out)
    }

    fn trims_only_applied(&self) -> bool {
        true
    }

    async fn expire(&self, topic: &str) -> Result<Option<Holding>, LogError> {
        let now = self.clock.wall_millis();
        let cutoff_ms = now.saturating_sub(self.max_age.as_millis() as u64);
        let mut holding = Holding::default();
        for partition in 0..self.partitions {
            loop {
                let page = self.expire_page(topic, partition, cutoff_ms).await?;
                holding.expired += page.expired;
                if !page.more {
                    holding.records += page.held;
                    holding.oldest_ms = match (holding.oldest_ms, page.oldest_kept_ms) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    break;
                }
            }
        }
        Ok(Some(holding))
    }

    async fn expired_offsets(&self, topic: &str) -> Result<BTreeMap<u32, u64>, LogError> {
        let tx = self.db.begin();
        let mut out = BTreeMap::new();
        for partition in 0..self.partitions {
            let expired = offset_value(tx.get_snapshot(&expired_key(topic, partition)).await?);
            out.insert(partition, expired);
        }
        Ok(out)
    }

    async fn trim(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        before: u64,
    ) -> Result<(), LogError> {
        self.db
            .run(|tx, _| async move {
                // Clear from where the last trim stopped (recorded, so a
                // trim lost with a broken link is caught up by the next one),
                // never over the tombstones of earlier trims.
                let trimmed = tx
                    .get(&trimmed_key(topic, partition))
                    .await?
                    .and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
                    .map_or(0, u64::from_be_bytes)
                    .min(from);
                if trimmed >= before {
                    return Ok(());
                }
                tx.clear_range(&KeyRange::new(
                    record_key(topic, partition, trimmed),
                    record_key(topic, partition, before),
                ))?;
                tx.set(&trimmed_key(topic, partition), &before.to_be_bytes())?;
                Ok::<_, LogError>(())
            })
            .await
    }
}

impl meridian_kv::TxnError for LogError {
    fn as_kv(&self) -> Option<&meridian_kv::KvError> {
        match self {
            Self::Store(error) => Some(error),
            _ => None,
        }
    }
}

struct EmbeddedReader {
    db: Database,
    topic: String,
    positions: BTreeMap<u32, u64>,
    /// The partition read first next time, so no partition starves another.
    turn: u32,
}

#[async_trait::async_trait]
impl LogReader for EmbeddedReader {
    async fn next(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<(u32, LogRecord)>, LogError> {
        let partitions = self.positions.len() as u32;
        let tx = self.db.begin();
        let mut out = Vec::new();
        for step in 0..partitions {
            let partition = (self.turn + step) % partitions;
            let from = self.positions.get(&partition).copied().unwrap_or(0);
            let room = max.saturating_sub(out.len());
            if room == 0 {
                break;
            }
            let range = KeyRange::new(
                record_key(&self.topic, partition, from),
                record_key(&self.topic, partition, u64::MAX),
            );
            let pairs = tx
                .get_range_snapshot(&RangeOption::new(range).limit(room))
                .await?;
            for kv in &pairs {
                let (_, _, _, offset): (String, String, u32, u64) =
                    meridian_kv::tuple::unpack(&kv.key)
                        .map_err(|e| LogError::Corrupt(e.to_string()))?;
                out.push((partition, decode_record(offset, &kv.value)?));
                self.positions.insert(partition, offset + 1);
            }
        }
        self.turn = (self.turn + 1) % partitions.max(1);
        if !out.is_empty() {
            return Ok(out);
        }
        // Nothing new: the watch fires on any append committed after this
        // transaction's reads.
        let appended = tx.watch(&head_key(&self.topic));
        tx.commit().await?;
        let _ = tokio::time::timeout(wait, appended).await;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meridian_kv::DatabaseOptions;
    use meridian_seams::Rng;
    use meridian_seams::clock::ManualClock;

    use super::*;

    fn log(partitions: u32) -> EmbeddedLog {
        log_on(Arc::new(ManualClock::new(1_700_000_000_000)), partitions)
    }

    fn log_on(clock: Arc<ManualClock>, partitions: u32) -> EmbeddedLog {
        let clock: SharedClock = clock;
        let engine = Arc::new(meridian_kv_memory::MemoryEngine::new());
        let db = Database::open(
            engine,
            clock.clone(),
            Rng::seeded(1),
            DatabaseOptions::default(),
        )
        .expect("open");
        EmbeddedLog::new(db, clock, partitions)
    }

    fn records(keys: &[&str]) -> Vec<AppendRecord> {
        keys.iter()
            .enumerate()
            .map(|(i, key)| AppendRecord {
                key: key.to_string(),
                value: Bytes::from(format!("value-{i}")),
            })
            .collect()
    }

    #[tokio::test]
    async fn appends_read_back_in_order_per_partition_from_any_offset() {
        let log = log(4);
        let keys = ["a", "b", "a", "c", "a", "b"];
        log.append("t", &records(&keys)).await.expect("append");
        log.append("t", &records(&["a"])).await.expect("append");
        let ends = log.end_offsets("t").await.expect("ends");
        assert_eq!(ends.values().sum::<u64>(), 7);
        let a = partition_for("a", 4);
        assert_eq!(
            ends[&a],
            4 + u64::from(partition_for("b", 4) == a) * 2 + u64::from(partition_for("c", 4) == a)
        );

        let mut reader = log.reader("t", &BTreeMap::new()).await.expect("reader");
        let all = reader.next(100, Duration::ZERO).await.expect("read");
        assert_eq!(all.len(), 7);
        let of_a: Vec<_> = all
            .iter()
            .filter(|(_, r)| r.key == "a")
            .map(|(_, r)| r.value.clone())
            .collect();
        assert_eq!(of_a, ["value-0", "value-2", "value-4", "value-0"]);
        for (partition, record) in &all {
            assert_eq!(*partition, partition_for(&record.key, 4));
        }

        // A reader from a recorded offset sees only what follows it.
        let from = BTreeMap::from([(a, 2u64)]);
        let mut reader = log.reader("t", &from).await.expect("reader");
        let rest = reader.next(100, Duration::ZERO).await.expect("read");
        let offsets_in_a: Vec<u64> = rest
            .iter()
            .filter(|(p, _)| *p == a)
            .map(|(_, r)| r.offset)
            .collect();
        assert_eq!(offsets_in_a.first(), Some(&2));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_append_and_trim_drops_records() {
        let log = log(1);
        let mut reader = log.reader("t", &BTreeMap::new()).await.expect("reader");
        let writer = log.clone();
        let append = tokio::spawn(async move {
            writer.append("t", &records(&["k"])).await.expect("append");
        });
        let mut got = Vec::new();
        while got.is_empty() {
            got = reader.next(10, Duration::from_secs(5)).await.expect("read");
        }
        append.await.expect("join");
        assert_eq!(got[0].1.offset, 0);
        log.append("t", &records(&["k", "k"]))
            .await
            .expect("append");
        log.trim("t", 0, 0, 2).await.expect("trim");
        let mut reader = log.reader("t", &BTreeMap::new()).await.expect("reader");
        let left = reader.next(10, Duration::ZERO).await.expect("read");
        assert_eq!(left.iter().map(|(_, r)| r.offset).collect::<Vec<_>>(), [2]);
    }

    /// Records older than the age bound leave the log whether applied or
    /// not (in pages, for more than a page of them); what is younger
    /// stays, and the offsets below which records expired are recorded.
    #[tokio::test]
    async fn records_past_the_age_bound_expire_unapplied() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let log = log_on(clock.clone(), 1).with_max_age(Duration::from_secs(3600));
        let old: Vec<&str> = vec!["k"; EXPIRE_PAGE + 88];
        log.append("t", &records(&old)).await.expect("append");
        clock.advance(Duration::from_secs(1800));
        log.append("t", &records(&["k", "k"]))
            .await
            .expect("append");
        let fresh = log.expire("t").await.expect("expire").expect("held");
        assert_eq!((fresh.expired, fresh.records), (0, old.len() as u64 + 2));
        assert_eq!(fresh.oldest_ms, Some(1_700_000_000_000));

        clock.advance(Duration::from_secs(1801));
        let held = log.expire("t").await.expect("expire").expect("held");
        assert_eq!(held.expired, old.len() as u64);
        assert_eq!(held.records, 2);
        assert_eq!(held.oldest_ms, Some(1_700_001_800_000));
        let first = old.len() as u64;
        assert_eq!(log.start_offsets("t").await.expect("starts")[&0], first);
        assert_eq!(log.expired_offsets("t").await.expect("expired")[&0], first);
        let mut reader = log.reader("t", &BTreeMap::new()).await.expect("reader");
        let left = reader.next(10, Duration::ZERO).await.expect("read");
        assert_eq!(
            left.iter().map(|(_, r)| r.offset).collect::<Vec<_>>(),
            [first, first + 1]
        );
    }
}
