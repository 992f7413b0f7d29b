//! Moves outbox entries towards one destination region into this region's log.

use std::time::Duration;

use meridian_kv::Database;
use meridian_seams::Backoff;
use meridian_store as store;

use crate::log::{AppendRecord, SharedLog, topic_for};

/// Entries moved per round (one log append, one outbox clear).
const BATCH: usize = 1024;
/// Bytes moved per round: one embedded-log append is one transaction, far
/// below the 10 MB limit even when every entry carries a 64 KiB payload.
const BATCH_BYTES: usize = 1_000_000;

/// The relay for one destination region.
pub struct Relay {
    db: Database,
    log: SharedLog,
    destination: String,
    topic: String,
    /// Labels this relay's metrics.
    source: String,
    /// The newest outbox stamp cleared by this relay: reads start after it.
    cleared: Option<meridian_store::keys::Stamp>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("destination", &self.destination)
            .finish()
    }
}

impl Relay {
    /// A relay from `source`'s outbox (in `db`) towards `destination`, into `log`.
    pub fn new(db: Database, log: SharedLog, source: &str, destination: impl Into<String>) -> Self {
        let destination = destination.into();
        Self {
            topic: topic_for(source, &destination),
            source: source.to_string(),
            cleared: None,
            db,
            log,
            destination,
        }
    }

    /// Runs until the store closes. Failures are logged and retried with
    /// backoff: the outbox keeps every entry until the log has it.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        while let Err(error) = self.log.ensure_topic(&self.topic).await {
            tracing::warn!(%error, topic = %self.topic, "cannot create the topic; retrying");
            backoff.wait().await;
        }
        loop {
            match self.round().await {
                Ok(true) => backoff.reset(),
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, destination = %self.destination, "relay round failed; retrying");
                    metrics::counter!("meridian_relay_errors_total", "source" => self.source.clone(), "destination" => self.destination.clone())
                        .increment(1);
                    backoff.wait().await;
                }
            }
        }
    }

    /// Moves one batch, or waits for the outbox to grow. `Ok(false)` when
    /// the store closed.
    async fn round(&mut self) -> Result<bool, RelayError> {
        let tx = self.db.begin();
        let mut entries =
            store::read_outbox(&tx, &self.destination, self.cleared.as_ref(), BATCH).await?;
        // At least one entry per round, then as many as fit the byte budget.
        let mut bytes = 0;
        let fit = entries
            .iter()
            .position(|entry| {
                bytes += entry.key.len() + entry.value.len();
                bytes > BATCH_BYTES
            })
            .map_or(entries.len(), |over| over.max(1));
        entries.truncate(fit);
        // The whole backlog: entries written and not yet relayed.
        let depth = store::outbox_depth(&tx, &self.destination).await?;
        metrics::gauge!("meridian_outbox_depth", "source" => self.source.clone(), "destination" => self.destination.clone())
            .set(depth as f64);
        let Some(last) = entries.last().map(|e| e.stamp) else {
            let grown = tx.watch(&store::keys::outbox_head(&self.destination));
            tx.commit().await.map_err(store::StoreError::from)?;
            return Ok(match grown.await {
                Ok(()) => true,
                Err(meridian_kv::KvError::Closed) => false,
                Err(error) => return Err(store::StoreError::from(error).into()),
            });
        };
        let records: Vec<AppendRecord> = entries
            .iter()
            .map(|entry| AppendRecord {
                key: entry.key.clone(),
                value: entry.value.clone(),
            })
            .collect();
        let (destination, after, count) = (self.destination.as_str(), self.cleared, entries.len());
        if self.log.appends_in_store() {
            // The log lives in this store: append and clear in one commit,
            // so the relay costs one group commit per round, not two.
            let (log, topic, records) = (&self.log, self.topic.as_str(), &records);
            self.db
                .run(|tx, _| async move {
                    log.append_in(&tx, topic, records).await?;
                    store::clear_outbox(&tx, destination, after.as_ref(), &last, count)
                        .map_err(RelayError::from)?;
                    Ok::<_, RelayError>(())
                })
                .await?;
        } else {
            self.log.append(&self.topic, &records).await?;
            // Only now may the outbox forget them; a crash before this line
            // appends them again, which the destination's apply skips.
            self.db
                .run(|tx, _| async move {
                    store::clear_outbox(&tx, destination, after.as_ref(), &last, count)?;
                    Ok::<_, store::StoreError>(())
                })
                .await?;
        }
        self.cleared = Some(last);
        metrics::counter!("meridian_relayed_total", "source" => self.source.clone(), "destination" => self.destination.clone())
            .increment(records.len() as u64);
        Ok(true)
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Log(#[from] crate::LogError),
}

impl From<meridian_kv::KvError> for RelayError {
    fn from(error: meridian_kv::KvError) -> Self {
        Self::Log(error.into())
    }
}

impl meridian_kv::TxnError for RelayError {
    fn as_kv(&self) -> Option<&meridian_kv::KvError> {
        match self {
            Self::Store(error) => meridian_kv::TxnError::as_kv(error),
            Self::Log(error) => meridian_kv::TxnError::as_kv(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meridian_kv::DatabaseOptions;
    use meridian_seams::clock::ManualClock;
    use meridian_seams::{Rng, SharedClock};
    use meridian_store::{Change, Message, Replicated};

    use super::*;
    use crate::embedded::EmbeddedLog;
    use crate::log::ReplicationLog;

    /// 300 changes carrying 60 KiB each (18 MB in all) relay into the
    /// embedded log: rounds are cut by bytes, so no append exceeds the
    /// 10 MB transaction limit.
    #[tokio::test]
    async fn large_payloads_are_relayed_in_rounds_under_the_transaction_limit() {
        let clock: SharedClock = Arc::new(ManualClock::new(1_800_000_000_000));
        let engine = Arc::new(meridian_kv_memory::MemoryEngine::new());
        let db = Database::open(
            engine,
            clock.clone(),
            Rng::seeded(3),
            DatabaseOptions::default(),
        )
        .expect("open");
        let payload = "x".repeat(60 * 1024);
        for i in 0..300 {
            let change = Replicated {
                origin_region: "us-east".into(),
                hlc: 1,
                change: Change::Message {
                    message: Message {
                        msg_id: format!("m{i}"),
                        conv_id: "conv".into(),
                        sender_user: "a@us-east".into(),
                        sender_device: "d@us-east".into(),
                        client_msg_id: format!("c{i}"),
                        hlc: 1,
                        origin_region: "us-east".into(),
                        payload: payload.clone(),
                        reply_to: None,
                        sent_ms: 0,
                        attachments: Vec::new(),
                    },
                    recipients: vec!["b@eu-west".into()],
                },
            };
            db.run(|tx, _| {
                let change = &change;
                async move { store::put_outbox(&tx, "eu-west", change) }
            })
            .await
            .expect("outbox");
        }
        let depth = store::outbox_depth(&db.begin(), "eu-west")
            .await
            .expect("depth");
        assert_eq!(depth, 300, "the depth counts what waits");
        let log = Arc::new(EmbeddedLog::new(db.clone(), clock, 1));
        let relay = tokio::spawn(Relay::new(db.clone(), log.clone(), "us-east", "eu-west").run());
        let topic = topic_for("us-east", "eu-west");
        let mut relayed = 0;
        for _ in 0..1000 {
            relayed = log.end_offsets(&topic).await.expect("ends")[&0];
            if relayed == 300 {
                break;
            }
            tokio::task::yield_now().await;
        }
        relay.abort();
        assert_eq!(relayed, 300, "every change reached the log");
        let tx = db.begin();
        let left = store::read_outbox(&tx, "eu-west", None, 10)
            .await
            .expect("read");
        assert!(left.is_empty(), "the outbox was cleared");
        let depth = store::outbox_depth(&tx, "eu-west").await.expect("depth");
        assert_eq!(depth, 0, "nothing waits any more");
    }
}
