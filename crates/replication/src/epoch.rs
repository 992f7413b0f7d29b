//! Incarnations of a source's log topics. Offsets mean something only
//! within one incarnation: a topic recreated, or a store restored from a
//! backup, numbers new entries from offsets a destination already applied
//! under the old one, and resuming there would skip them silently.
//!
//! Each topic has an epoch (a random non-zero id) kept in the source
//! region's store beside the highest end offset the source has seen per
//! partition. The epoch is renewed when the log is found to have lost
//! entries: an end offset below the highest seen (the log shrank), or a
//! destination asking for offsets past the end (it applied entries this
//! log no longer has). A destination whose recorded epoch differs applies
//! the topic again from its start; apply is idempotent, so that costs time
//! and never data.
//!
//! | key | value |
//! |---|---|
//! | `("log_epoch", topic)` | epoch, u64 BE |
//! | `("log_high", topic, partition)` | highest end offset seen, u64 BE |

use std::collections::BTreeMap;

use meridian_kv::tuple::pack;
use meridian_kv::{Database, KeyRange};
use meridian_seams::Rng;

use crate::log::LogError;

fn epoch_key(topic: &str) -> Vec<u8> {
    pack(&("log_epoch", topic))
}

fn high_key(topic: &str, partition: u32) -> Vec<u8> {
    pack(&("log_high", topic, partition))
}

fn high_range(topic: &str) -> KeyRange {
    KeyRange::new(
        pack(&("log_high", topic, 0u32)),
        pack(&("log_high", topic, u32::MAX)),
    )
}

fn read_u64(raw: Option<impl AsRef<[u8]>>) -> Option<u64> {
    raw.and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
        .map(u64::from_be_bytes)
}

/// The epochs of a source region's topics, in its store.
#[derive(Clone)]
pub struct LogEpochs {
    db: Database,
    rng: Rng,
}

impl std::fmt::Debug for LogEpochs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogEpochs").finish_non_exhaustive()
    }
}

impl LogEpochs {
    /// Epochs kept in `db`, new ones drawn from `rng`.
    pub fn new(db: Database, rng: Rng) -> Self {
        Self { db, rng }
    }

    fn fresh(&self) -> u64 {
        self.rng.next_u64().max(1)
    }

    /// `topic`'s epoch, made on first use.
    ///
    /// # Errors
    /// Store failures.
    pub async fn current(&self, topic: &str) -> Result<u64, LogError> {
        let fresh = self.fresh();
        self.db
            .run(|tx, _| async move {
                if let Some(epoch) = read_u64(tx.get(&epoch_key(topic)).await?) {
                    return Ok::<_, LogError>(epoch);
                }
                tx.set(&epoch_key(topic), &fresh.to_be_bytes())?;
                Ok(fresh)
            })
            .await
    }

    /// A new epoch for `topic`: the log lost entries. Forgets the highest
    /// offsets seen (they were the old incarnation's).
    ///
    /// # Errors
    /// Store failures.
    pub async fn renew(&self, topic: &str, reason: &str) -> Result<u64, LogError> {
        let fresh = self.fresh();
        self.db
            .run(|tx, _| async move {
                tx.set(&epoch_key(topic), &fresh.to_be_bytes())?;
                tx.clear_range(&high_range(topic))?;
                Ok::<_, LogError>(())
            })
            .await?;
        metrics::counter!("meridian_replication_epochs_renewed_total", "topic" => topic.to_string(), "reason" => reason.to_string())
            .increment(1);
        tracing::error!(
            topic,
            reason,
            epoch = fresh,
            "the replication log lost entries: new epoch; its destination applies it again from the start"
        );
        Ok(fresh)
    }

    /// Records `ends` (the log's end offsets now) as seen, and answers
    /// whether any is below the highest seen before: the log shrank.
    ///
    /// # Errors
    /// Store failures.
    pub async fn shrank(&self, topic: &str, ends: &BTreeMap<u32, u64>) -> Result<bool, LogError> {
        self.db
            .run(|tx, _| async move {
                let mut shrank = false;
                for (&partition, &end) in ends {
                    let key = high_key(topic, partition);
                    let high = read_u64(tx.get(&key).await?).unwrap_or(0);
                    if end < high {
                        shrank = true;
                    } else if end > high {
                        tx.set(&key, &end.to_be_bytes())?;
                    }
                }
                Ok::<_, LogError>(shrank)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meridian_kv::DatabaseOptions;
    use meridian_seams::clock::ManualClock;

    use super::*;

    fn epochs() -> LogEpochs {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let engine = Arc::new(meridian_kv_memory::MemoryEngine::new());
        let db = Database::open(engine, clock, Rng::seeded(1), DatabaseOptions::default())
            .expect("open");
        LogEpochs::new(db, Rng::seeded(2))
    }

    #[tokio::test]
    async fn an_epoch_stays_until_renewed() {
        let epochs = epochs();
        let first = epochs.current("t").await.unwrap();
        assert_ne!(first, 0);
        assert_eq!(epochs.current("t").await.unwrap(), first);
        let second = epochs.renew("t", "test").await.unwrap();
        assert_ne!(second, first);
        assert_eq!(epochs.current("t").await.unwrap(), second);
    }

    #[tokio::test]
    async fn a_log_that_shrinks_is_noticed_until_renewed() {
        let epochs = epochs();
        let ends = |a: u64, b: u64| BTreeMap::from([(0, a), (1, b)]);
        assert!(!epochs.shrank("t", &ends(5, 3)).await.unwrap());
        assert!(!epochs.shrank("t", &ends(5, 4)).await.unwrap());
        assert!(epochs.shrank("t", &ends(5, 1)).await.unwrap());
        epochs.renew("t", "test").await.unwrap();
        assert!(!epochs.shrank("t", &ends(5, 1)).await.unwrap());
    }
}
