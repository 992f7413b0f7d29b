//! Moves outbox entries towards one destination region into this region's log.

use std::time::Duration;

use meridian_kv::Database;
use meridian_store as store;

use crate::log::{AppendRecord, SharedLog, topic_for};

/// Entries moved per round (one log append, one outbox clear).
const BATCH: usize = 1024;

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
        let mut backoff = Duration::from_millis(50);
        while let Err(error) = self.log.ensure_topic(&self.topic).await {
            tracing::warn!(%error, topic = %self.topic, "cannot create the topic; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        loop {
            match self.round().await {
                Ok(true) => backoff = Duration::from_millis(50),
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, destination = %self.destination, "relay round failed; retrying");
                    metrics::counter!("meridian_relay_errors_total", "source" => self.source.clone(), "destination" => self.destination.clone())
                        .increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Moves one batch, or waits for the outbox to grow. `Ok(false)` when
    /// the store closed.
    async fn round(&mut self) -> Result<bool, RelayError> {
        let tx = self.db.begin();
        let entries =
            store::read_outbox(&tx, &self.destination, self.cleared.as_ref(), BATCH).await?;
        let Some(last) = entries.last().map(|e| e.stamp) else {
            let grown = tx.watch(&store::keys::outbox_head(&self.destination));
            tx.commit().await.map_err(store::StoreError::from)?;
            metrics::gauge!("meridian_outbox_depth", "source" => self.source.clone(), "destination" => self.destination.clone())
                .set(0.0);
            return Ok(match grown.await {
                Ok(()) => true,
                Err(meridian_kv::KvError::Closed) => false,
                Err(error) => return Err(store::StoreError::from(error).into()),
            });
        };
        metrics::gauge!("meridian_outbox_depth", "source" => self.source.clone(), "destination" => self.destination.clone())
            .set(entries.len() as f64);
        let records: Vec<AppendRecord> = entries
            .iter()
            .map(|entry| AppendRecord {
                key: entry.key.clone(),
                value: entry.value.clone(),
            })
            .collect();
        self.log.append(&self.topic, &records).await?;
        // Only now may the outbox forget them; a crash before this line
        // appends them again, which the destination's apply skips.
        let (destination, after) = (self.destination.as_str(), self.cleared);
        self.db
            .run(|tx, _| async move {
                store::clear_outbox(&tx, destination, after.as_ref(), &last)?;
                Ok::<_, store::StoreError>(())
            })
            .await?;
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
