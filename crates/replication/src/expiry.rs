//! The embedded log's age bound at work: each topic this region writes is
//! expired periodically, and what it holds is reported per destination.

use crate::log::{SharedLog, topic_for};

/// Expires `topics` of `log` every `every` (the embedded log's age bound)
/// and reports what each holds, labelled by destination, until stopped.
pub async fn expire_periodically(
    log: SharedLog,
    source: String,
    destinations: Vec<String>,
    every: std::time::Duration,
    clock: meridian_seams::SharedClock,
) {
    loop {
        for destination in &destinations {
            let topic = topic_for(&source, destination);
            let labels = [
                ("source", source.clone()),
                ("destination", destination.clone()),
            ];
            match log.expire(&topic).await {
                Ok(Some(holding)) => {
                    metrics::gauge!("meridian_replication_log_records", &labels)
                        .set(holding.records as f64);
                    let age_ms = holding
                        .oldest_ms
                        .map_or(0, |oldest| clock.wall_millis().saturating_sub(oldest));
                    metrics::gauge!("meridian_replication_log_oldest_seconds", &labels)
                        .set(age_ms as f64 / 1000.0);
                    metrics::counter!("meridian_replication_log_expired_total", &labels)
                        .increment(holding.expired);
                    if holding.expired > 0 {
                        tracing::warn!(
                            %destination,
                            expired = holding.expired,
                            "replication log: records for a destination away too long dropped by age"
                        );
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, %destination, "replication log: expiry failed; retrying next round");
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}
