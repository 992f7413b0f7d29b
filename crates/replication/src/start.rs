//! Where a link stream starts: the source's decision, from the offsets and
//! epoch the destination recorded and the state of the log.
//!
//! 1. The log's epoch ([`LogEpochs`]), renewed first if the log shrank
//!    since last seen.
//! 2. A destination with another epoch restarts: it applies the topic
//!    again from the start. So does one whose last applied entry is not
//!    the log's entry at that offset (the log was rolled back and grew
//!    again), or is past the end (rolled back, not grown yet): the log
//!    lost entries, and its epoch is renewed first.
//! 3. A restart begins at the log's start offsets when records leave the
//!    log only once the destination applied them, else at 0.
//! 4. A start below what the log still holds is refused and alarmed: the
//!    entries in between are gone, and skipping them would lose them —
//!    unless the log dropped them by age ([`ReplicationLog::expire`]): the
//!    destination was away longer than the log keeps anything, and it
//!    resyncs (a restart from the oldest record held), counted and logged.
//!
//! [`ReplicationLog::expire`]: crate::log::ReplicationLog::expire

use std::collections::BTreeMap;

use tonic::Status;

use crate::epoch::LogEpochs;
use crate::log::{SharedLog, fingerprint};

/// Where a stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StartPoint {
    /// The epoch of the log the stream reads.
    pub(crate) epoch: u64,
    /// The destination must forget its offsets and apply from `from`.
    pub(crate) restart: bool,
    /// The first offset sent, for every partition.
    pub(crate) from: BTreeMap<u32, u64>,
}

fn unavailable(error: impl std::fmt::Display) -> Status {
    Status::unavailable(error.to_string())
}

/// Whether the destination applied entries this log no longer has, and
/// how that shows: asking for offsets past the end, or a last applied
/// entry unlike the log's at that offset.
async fn diverged(
    log: &SharedLog,
    topic: &str,
    destination: &str,
    from: &BTreeMap<u32, u64>,
    last: &BTreeMap<u32, (u64, u64)>,
    ends: &BTreeMap<u32, u64>,
) -> Result<Option<&'static str>, Status> {
    for (&partition, &offset) in from {
        let end = ends.get(&partition).copied().unwrap_or(0);
        if offset > end {
            metrics::counter!("meridian_replication_offset_ahead_total", "destination" => destination.to_string())
                .increment(1);
            tracing::error!(
                destination,
                partition,
                offset,
                end,
                "destination is ahead of this log: it lost entries"
            );
            return Ok(Some("destination ahead"));
        }
    }
    for (&partition, &(offset, hash)) in last {
        // Trimmed or expired: nothing to compare with.
        let Some(entry) = log
            .record_at(topic, partition, offset)
            .await
            .map_err(unavailable)?
        else {
            continue;
        };
        if fingerprint(&entry.value) != hash {
            tracing::error!(
                destination,
                partition,
                offset,
                "the destination applied another entry at this offset: the log was rolled back"
            );
            return Ok(Some("log rolled back"));
        }
    }
    Ok(None)
}

/// Decides where the stream of `topic` for `destination` starts, given the
/// destination's recorded `epoch` (0: none) and offsets `from`.
///
/// # Errors
/// `unavailable` when the log or store fails; `failed_precondition` when
/// the start is below what the log holds.
pub(crate) async fn starting_point(
    log: &SharedLog,
    epochs: &LogEpochs,
    topic: &str,
    destination: &str,
    recorded_epoch: u64,
    from: BTreeMap<u32, u64>,
    last: &BTreeMap<u32, (u64, u64)>,
) -> Result<StartPoint, Status> {
    let ends = log.end_offsets(topic).await.map_err(unavailable)?;
    let mut epoch = epochs.current(topic).await.map_err(unavailable)?;
    if epochs.shrank(topic, &ends).await.map_err(unavailable)? {
        epoch = epochs
            .renew(topic, "log shrank")
            .await
            .map_err(unavailable)?;
    }
    let restart = if recorded_epoch != 0 && recorded_epoch != epoch {
        tracing::warn!(
            destination,
            recorded_epoch,
            epoch,
            "destination's offsets are of another epoch: restarting it"
        );
        true
    } else if let Some(reason) = diverged(log, topic, destination, &from, last, &ends).await? {
        epoch = epochs.renew(topic, reason).await.map_err(unavailable)?;
        true
    } else {
        false
    };
    let starts = log.start_offsets(topic).await.map_err(unavailable)?;
    let partitions = log.partitions();
    let from: BTreeMap<u32, u64> = (0..partitions)
        .map(|partition| {
            let offset = match (restart, log.trims_only_applied()) {
                (true, true) => starts.get(&partition).copied().unwrap_or(0),
                (true, false) => 0,
                (false, _) => from.get(&partition).copied().unwrap_or(0),
            };
            (partition, offset)
        })
        .collect();
    let expired = log.expired_offsets(topic).await.map_err(unavailable)?;
    let mut expired_unapplied = 0;
    for (partition, offset) in &from {
        let start = starts.get(partition).copied().unwrap_or(0);
        if *offset < start && expired.get(partition).copied().unwrap_or(0) >= start {
            expired_unapplied += start - offset;
        } else if *offset < start {
            metrics::counter!("meridian_replication_below_start_total", "destination" => destination.to_string())
                .increment(1);
            tracing::error!(
                destination,
                partition,
                offset,
                start,
                "destination needs entries this log no longer holds; refusing the link"
            );
            return Err(Status::failed_precondition(format!(
                "partition {partition}: next offset {offset} is below the first entry still held \
                 ({start}): the entries between are gone (expired, or trimmed after reports of \
                 another state of the destination); an operator must resolve it"
            )));
        }
    }
    if expired_unapplied > 0 {
        metrics::counter!("meridian_replication_resyncs_total", "destination" => destination.to_string())
            .increment(1);
        tracing::warn!(
            destination,
            expired_unapplied,
            "destination was away longer than the log keeps records: resyncing it from the oldest record held"
        );
        return Ok(StartPoint {
            epoch,
            restart: true,
            from: starts,
        });
    }
    Ok(StartPoint {
        epoch,
        restart,
        from,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use meridian_kv::{Database, DatabaseOptions};
    use meridian_seams::Rng;
    use meridian_seams::clock::ManualClock;

    use super::*;
    use crate::embedded::EmbeddedLog;
    use crate::log::AppendRecord;

    const TOPIC: &str = "t";

    /// A database over the memory engine on `clock`.
    fn database(clock: &Arc<ManualClock>) -> Database {
        let engine = Arc::new(meridian_kv_memory::MemoryEngine::new());
        Database::open(
            engine,
            clock.clone(),
            Rng::seeded(1),
            DatabaseOptions::default(),
        )
        .unwrap()
    }

    /// A one-partition embedded log holding `entries`, and its epochs.
    async fn log(entries: usize) -> (SharedLog, LogEpochs) {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let db = database(&clock);
        let log: SharedLog = Arc::new(EmbeddedLog::new(db.clone(), clock, 1));
        let records: Vec<AppendRecord> = (0..entries)
            .map(|i| AppendRecord {
                key: "conv".into(),
                value: Bytes::from(format!("{i}")),
            })
            .collect();
        log.append(TOPIC, &records).await.unwrap();
        (log, LogEpochs::new(db, Rng::seeded(2)))
    }

    async fn start(
        log: &(SharedLog, LogEpochs),
        epoch: u64,
        from: u64,
    ) -> Result<StartPoint, Status> {
        let from = BTreeMap::from([(0, from)]);
        starting_point(&log.0, &log.1, TOPIC, "d", epoch, from, &BTreeMap::new()).await
    }

    #[tokio::test]
    async fn a_destination_whose_last_entry_the_log_holds_no_more_restarts() {
        let log = log(10).await;
        let epoch = start(&log, 0, 0).await.unwrap().epoch;
        let entry = log.0.record_at(TOPIC, 0, 5).await.unwrap().unwrap();
        let at = |hash: u64| BTreeMap::from([(0, (5, hash))]);
        let from = || BTreeMap::from([(0, 6)]);
        let (shared, epochs) = (&log.0, &log.1);
        let same = at(fingerprint(&entry.value));
        let point = starting_point(shared, epochs, TOPIC, "d", epoch, from(), &same).await;
        assert!(!point.unwrap().restart);
        // Another entry at offset 5: the log was rolled back and grew again.
        let point = starting_point(shared, epochs, TOPIC, "d", epoch, from(), &at(1)).await;
        let point = point.unwrap();
        assert!(point.restart);
        assert_ne!(point.epoch, epoch);
    }

    #[tokio::test]
    async fn a_destination_of_this_epoch_resumes_where_it_stopped() {
        let log = log(10).await;
        let first = start(&log, 0, 4).await.unwrap();
        assert!(!first.restart);
        assert_eq!(first.from, BTreeMap::from([(0, 4)]));
        let again = start(&log, first.epoch, 10).await.unwrap();
        assert_eq!((again.epoch, again.restart), (first.epoch, false));
    }

    #[tokio::test]
    async fn a_destination_ahead_of_the_log_restarts_under_a_new_epoch() {
        let log = log(10).await;
        log.0.trim(TOPIC, 0, 0, 3).await.unwrap();
        let epoch = start(&log, 0, 10).await.unwrap().epoch;
        // It applied 15 entries of a log that now holds 10: the log lost
        // entries, and offsets 10.. will be new ones.
        let point = start(&log, epoch, 15).await.unwrap();
        assert!(point.restart);
        assert_ne!(point.epoch, epoch);
        // What was trimmed was applied before: the restart begins there.
        assert_eq!(point.from, BTreeMap::from([(0, 3)]));
    }

    #[tokio::test]
    async fn a_destination_of_another_epoch_restarts() {
        let log = log(10).await;
        let epoch = start(&log, 0, 0).await.unwrap().epoch;
        let point = start(&log, epoch ^ 1, 7).await.unwrap();
        assert_eq!((point.epoch, point.restart), (epoch, true));
        assert_eq!(point.from, BTreeMap::from([(0, 0)]));
    }

    #[tokio::test]
    async fn a_start_below_what_the_log_holds_is_refused() {
        let log = log(10).await;
        log.0.trim(TOPIC, 0, 0, 6).await.unwrap();
        let epoch = start(&log, 0, 6).await.unwrap().epoch;
        // A destination restored from an older backup wants 2..6, trimmed.
        let refused = start(&log, epoch, 2).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    }

    /// A destination away longer than the embedded log keeps records
    /// resyncs from the oldest held (a restart), where one whose entries
    /// were trimmed as applied is still refused.
    #[tokio::test]
    async fn a_destination_away_past_the_age_bound_resyncs() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let db = database(&clock);
        let embedded = EmbeddedLog::new(db.clone(), clock.clone(), 1)
            .with_max_age(std::time::Duration::from_secs(60));
        let shared: SharedLog = Arc::new(embedded);
        let record = || AppendRecord {
            key: "conv".into(),
            value: Bytes::from_static(b"x"),
        };
        shared.append(TOPIC, &vec![record(); 6]).await.unwrap();
        clock.advance(std::time::Duration::from_secs(120));
        shared.append(TOPIC, &vec![record(); 2]).await.unwrap();
        let log = (shared, LogEpochs::new(db, Rng::seeded(2)));
        let epoch = start(&log, 0, 2).await.unwrap().epoch;
        assert_eq!(log.0.expire(TOPIC).await.unwrap().unwrap().expired, 6);

        let point = start(&log, epoch, 2).await.unwrap();
        assert_eq!((point.epoch, point.restart), (epoch, true));
        assert_eq!(point.from, BTreeMap::from([(0, 6)]));

        // Trimmed as applied past the expired offset: refused as before.
        log.0.trim(TOPIC, 0, 6, 7).await.unwrap();
        let refused = start(&log, epoch, 6).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    }
}
