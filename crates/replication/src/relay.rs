//! Moves outbox entries towards one destination region into this region's log.
//!
//! Into the embedded log a round appends and clears in one commit. Into
//! Kafka a round is a produce, a wait for the broker's acknowledgement and
//! a clear; one at a time, every entry waited for the rounds before it, so
//! the relay keeps several produces in flight and clears them in order as
//! the broker acknowledges them ([`Relay::pipeline`]).

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use meridian_kv::{Database, Transaction};
use meridian_seams::Backoff;
use meridian_store as store;
use meridian_store::OutboxEntry;
use meridian_store::keys::Stamp;

use crate::log::{AppendRecord, SharedLog, topic_for};

/// Entries moved per round (one log append, one outbox clear).
const BATCH: usize = 1024;
/// Bytes moved per round: one embedded-log append is one transaction, far
/// below the 10 MB limit even when every entry carries a 64 KiB payload.
const BATCH_BYTES: usize = 1_000_000;
/// Produces in flight at once towards a log outside the store (Kafka).
/// While none fails, the idempotent producer keeps each partition in the
/// order of the produces; a failed one is produced again after those
/// behind it may have landed (see [`Relay::pipeline`]).
const PRODUCES_IN_FLIGHT: usize = 4;

/// A produce in flight: the outbox entries after `after` through `last`.
struct Produce {
    after: Option<Stamp>,
    last: Stamp,
    count: usize,
}

/// A produce and, once the log answered, its outcome.
type Flying = BoxFuture<'static, (Produce, Result<(), crate::LogError>)>;

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
            let outcome = if self.log.appends_in_store() {
                self.round().await
            } else {
                self.pipeline(&mut backoff).await
            };
            match outcome {
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

    /// The oldest outbox entries after `after`: at most [`BATCH`], and at
    /// least one, then as many as fit [`BATCH_BYTES`]. Records the backlog.
    async fn next_batch(
        &self,
        tx: &Transaction,
        after: Option<&Stamp>,
    ) -> Result<Vec<OutboxEntry>, RelayError> {
        let mut entries = store::read_outbox(tx, &self.destination, after, BATCH).await?;
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
        let depth = store::outbox_depth(tx, &self.destination).await?;
        metrics::gauge!("meridian_outbox_depth", "source" => self.source.clone(), "destination" => self.destination.clone())
            .set(depth as f64);
        Ok(entries)
    }

    /// Waits until the outbox grows past what `tx` read. `Ok(false)` when
    /// the store closed.
    async fn outbox_grown(&self, tx: Transaction) -> Result<bool, RelayError> {
        let grown = tx.watch(&store::keys::outbox_head(&self.destination));
        tx.commit().await.map_err(store::StoreError::from)?;
        match grown.await {
            Ok(()) => Ok(true),
            Err(meridian_kv::KvError::Closed) => Ok(false),
            Err(error) => Err(store::StoreError::from(error).into()),
        }
    }

    fn count_relayed(&self, count: usize) {
        metrics::counter!("meridian_relayed_total", "source" => self.source.clone(), "destination" => self.destination.clone())
            .increment(count as u64);
    }

    /// Into the embedded log: moves one batch (appended and cleared in one
    /// commit, so a round costs one group commit), or waits for the outbox
    /// to grow. `Ok(false)` when the store closed.
    async fn round(&mut self) -> Result<bool, RelayError> {
        let tx = self.db.begin();
        let entries = self.next_batch(&tx, self.cleared.as_ref()).await?;
        let Some(last) = entries.last().map(|e| e.stamp) else {
            return self.outbox_grown(tx).await;
        };
        let records = records_of(&entries);
        let (destination, after, count) = (self.destination.as_str(), self.cleared, entries.len());
        let (log, topic, records) = (&self.log, self.topic.as_str(), &records);
        self.db
            .run(|tx, _| async move {
                log.append_in(&tx, topic, records).await?;
                store::clear_outbox(&tx, destination, after.as_ref(), &last, count)
                    .map_err(RelayError::from)?;
                Ok::<_, RelayError>(())
            })
            .await?;
        self.cleared = Some(last);
        self.count_relayed(count);
        Ok(true)
    }

    /// Into a log outside the store (Kafka): up to [`PRODUCES_IN_FLIGHT`]
    /// batches produced at once; as the oldest are acknowledged, in order,
    /// their entries leave the outbox. Runs until a produce or the store
    /// fails (`Err`: the produces still in flight are abandoned, though
    /// what they queued may still land, and what was not cleared is read
    /// and produced again, which the destination's exactly-once apply
    /// absorbs; a batch behind the failed one may so land before it) or
    /// the store closes (`Ok(false)`).
    async fn pipeline(&mut self, backoff: &mut Backoff) -> Result<bool, RelayError> {
        let mut flying: FuturesOrdered<Flying> = FuturesOrdered::new();
        // The newest entry handed to a produce: the next batch starts after it.
        let mut produced = self.cleared;
        loop {
            while flying.len() < PRODUCES_IN_FLIGHT {
                let tx = self.db.begin();
                let entries = self.next_batch(&tx, produced.as_ref()).await?;
                let Some(last) = entries.last().map(|e| e.stamp) else {
                    if flying.is_empty() {
                        if !self.outbox_grown(tx).await? {
                            return Ok(false);
                        }
                        continue;
                    }
                    break;
                };
                let produce = Produce {
                    after: produced,
                    last,
                    count: entries.len(),
                };
                produced = Some(last);
                let (log, topic, records) =
                    (self.log.clone(), self.topic.clone(), records_of(&entries));
                flying.push_back(
                    async move {
                        let outcome = log.append(&topic, &records).await;
                        (produce, outcome)
                    }
                    .boxed(),
                );
            }
            let Some((oldest, outcome)) = flying.next().await else {
                continue;
            };
            outcome?;
            // Every produce acknowledged by now joins the same clear; one
            // that failed behind them ends the pipeline after it.
            let (after, mut last, mut count) = (oldest.after, oldest.last, oldest.count);
            let mut failed = None;
            while let Some(Some((next, outcome))) = flying.next().now_or_never() {
                if let Err(error) = outcome {
                    failed = Some(error);
                    break;
                }
                (last, count) = (next.last, count + next.count);
            }
            self.clear(after, last, count).await?;
            if let Some(error) = failed {
                return Err(error.into());
            }
            backoff.reset();
        }
    }

    /// Clears the entries after `after` through `last` (`count` of them),
    /// which the log holds.
    async fn clear(
        &mut self,
        after: Option<Stamp>,
        last: Stamp,
        count: usize,
    ) -> Result<(), RelayError> {
        let destination = self.destination.as_str();
        self.db
            .run(|tx, _| async move {
                // A clear lost with the machine only relays its entries
                // again, which the destination's exactly-once apply
                // absorbs: it need not wait for the disk.
                tx.relax_durability();
                store::clear_outbox(&tx, destination, after.as_ref(), &last, count)?;
                Ok::<_, store::StoreError>(())
            })
            .await?;
        self.cleared = Some(last);
        self.count_relayed(count);
        Ok(())
    }
}

/// The log records of outbox `entries`, in order.
fn records_of(entries: &[OutboxEntry]) -> Vec<AppendRecord> {
    entries
        .iter()
        .map(|entry| AppendRecord {
            key: entry.key.clone(),
            value: entry.value.clone(),
        })
        .collect()
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
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use meridian_kv::DatabaseOptions;
    use meridian_seams::clock::ManualClock;
    use meridian_seams::{Rng, SharedClock};
    use meridian_store::{Change, Message, Replicated};

    use super::*;
    use crate::LogError;
    use crate::embedded::EmbeddedLog;
    use crate::log::{LogReader, LogRecord, ReplicationLog};

    fn open() -> (Database, SharedClock) {
        let clock: SharedClock = Arc::new(ManualClock::new(1_800_000_000_000));
        let engine = Arc::new(meridian_kv_memory::MemoryEngine::new());
        let db = Database::open(
            engine,
            clock.clone(),
            Rng::seeded(3),
            DatabaseOptions::default(),
        )
        .expect("open");
        (db, clock)
    }

    /// Writes `count` messages to eu-west's outbox, in `conversations`
    /// conversations, each carrying `payload`; their ids are `m<i>`.
    async fn fill_outbox(db: &Database, count: usize, conversations: usize, payload: &str) {
        for i in 0..count {
            let change = Replicated {
                origin_region: "us-east".into(),
                hlc: 1,
                change: Change::Message {
                    message: Message {
                        msg_id: format!("m{i}"),
                        conv_id: format!("conv{}", i % conversations),
                        sender_user: "a@us-east".into(),
                        sender_device: "d@us-east".into(),
                        client_msg_id: format!("c{i}"),
                        hlc: 1,
                        origin_region: "us-east".into(),
                        payload: payload.to_string(),
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
    }

    /// Waits, on the store's watches, until the outbox towards eu-west is
    /// empty (failing after 60 s rather than hanging).
    async fn until_outbox_empty(db: &Database) {
        tokio::time::timeout(Duration::from_secs(60), outbox_emptied(db))
            .await
            .expect("the outbox emptied within 60 s");
    }

    async fn outbox_emptied(db: &Database) {
        loop {
            let tx = db.begin();
            if store::outbox_depth(&tx, "eu-west").await.expect("depth") == 0 {
                return;
            }
            let relayed = tx.watch(&store::keys::outbox_relayed("eu-west"));
            tx.commit().await.expect("watch");
            relayed.await.expect("relayed moved");
        }
    }

    /// 300 changes carrying 60 KiB each (18 MB in all) relay into the
    /// embedded log: rounds are cut by bytes, so no append exceeds the
    /// 10 MB transaction limit.
    #[tokio::test]
    async fn large_payloads_are_relayed_in_rounds_under_the_transaction_limit() {
        let (db, clock) = open();
        fill_outbox(&db, 300, 1, &"x".repeat(60 * 1024)).await;
        let depth = store::outbox_depth(&db.begin(), "eu-west")
            .await
            .expect("depth");
        assert_eq!(depth, 300, "the depth counts what waits");
        let log = Arc::new(EmbeddedLog::new(db.clone(), clock, 1));
        let relay = tokio::spawn(Relay::new(db.clone(), log.clone(), "us-east", "eu-west").run());
        until_outbox_empty(&db).await;
        relay.abort();
        let topic = topic_for("us-east", "eu-west");
        let relayed = log.end_offsets(&topic).await.expect("ends")[&0];
        assert_eq!(relayed, 300, "every change reached the log");
        let tx = db.begin();
        let left = store::read_outbox(&tx, "eu-west", None, 10)
            .await
            .expect("read");
        assert!(left.is_empty(), "the outbox was cleared");
    }

    /// The embedded log standing for one outside the store (Kafka): each
    /// append is a transaction of its own, answered after a turn of the
    /// scheduler; append number `fail_at` (from 1) stores the first half of
    /// its records and then fails, as a produce can.
    struct OutsideLog {
        inner: EmbeddedLog,
        appends: AtomicUsize,
        fail_at: usize,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl ReplicationLog for OutsideLog {
        fn partitions(&self) -> u32 {
            self.inner.partitions()
        }

        async fn ensure_topic(&self, topic: &str) -> Result<(), LogError> {
            self.inner.ensure_topic(topic).await
        }

        async fn append(&self, topic: &str, records: &[AppendRecord]) -> Result<(), LogError> {
            let number = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
            let flying = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(flying, Ordering::SeqCst);
            tokio::task::yield_now().await;
            let outcome = if number == self.fail_at {
                let half = &records[..records.len() / 2];
                self.inner.append(topic, half).await?;
                Err(LogError::Kafka("injected: the produce timed out".into()))
            } else {
                self.inner.append(topic, records).await
            };
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            outcome
        }

        async fn reader(
            &self,
            topic: &str,
            from: &BTreeMap<u32, u64>,
        ) -> Result<Box<dyn LogReader>, LogError> {
            self.inner.reader(topic, from).await
        }

        async fn end_offsets(&self, topic: &str) -> Result<BTreeMap<u32, u64>, LogError> {
            self.inner.end_offsets(topic).await
        }

        async fn record_at(
            &self,
            topic: &str,
            partition: u32,
            offset: u64,
        ) -> Result<Option<LogRecord>, LogError> {
            self.inner.record_at(topic, partition, offset).await
        }

        async fn start_offsets(&self, topic: &str) -> Result<BTreeMap<u32, u64>, LogError> {
            self.inner.start_offsets(topic).await
        }

        async fn trim(
            &self,
            topic: &str,
            partition: u32,
            from: u64,
            before: u64,
        ) -> Result<(), LogError> {
            self.inner.trim(topic, partition, from, before).await
        }
    }

    /// Into a log outside the store, the relay keeps several produces in
    /// flight; when one fails, what was not cleared is produced again, so
    /// every change reaches the log (some twice, which the destination's
    /// apply absorbs) and the outbox ends empty.
    /// (The failure costs the relay's first backoff, 50 ms of real time.)
    #[tokio::test]
    async fn produces_are_pipelined_and_a_failed_one_is_produced_again() {
        let (db, clock) = open();
        let count = 3 * BATCH + 100;
        fill_outbox(&db, count, 7, "hello").await;
        let log = Arc::new(OutsideLog {
            inner: EmbeddedLog::new(db.clone(), clock, 4),
            appends: AtomicUsize::new(0),
            fail_at: 2,
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
        });
        let relay = tokio::spawn(Relay::new(db.clone(), log.clone(), "us-east", "eu-west").run());
        until_outbox_empty(&db).await;
        relay.abort();

        assert!(
            log.most_in_flight.load(Ordering::SeqCst) >= 2,
            "produces overlapped: at most {} in flight",
            log.most_in_flight.load(Ordering::SeqCst)
        );
        assert!(
            log.appends.load(Ordering::SeqCst) > 4,
            "the failed produce was retried"
        );
        let topic = topic_for("us-east", "eu-west");
        let ends = log.end_offsets(&topic).await.expect("ends");
        let mut present = BTreeSet::new();
        for (&partition, &end) in &ends {
            for offset in 0..end {
                let record = log
                    .record_at(&topic, partition, offset)
                    .await
                    .expect("read")
                    .expect("held");
                let replicated = store::decode_replicated(&record.value).expect("decodes");
                if let Change::Message { message, .. } = replicated.change {
                    present.insert(message.msg_id);
                }
            }
        }
        let expected: BTreeSet<String> = (0..count).map(|i| format!("m{i}")).collect();
        assert_eq!(present, expected, "every change reached the log");
        let relayed = db
            .begin()
            .get(&store::keys::outbox_relayed("eu-west"))
            .await
            .expect("read")
            .expect("counted");
        let relayed = i64::from_le_bytes(relayed.as_ref().try_into().expect("8 bytes"));
        assert_eq!(
            relayed, count as i64,
            "each entry cleared once, counted once"
        );
        let tx = db.begin();
        let left = store::read_outbox(&tx, "eu-west", None, 10)
            .await
            .expect("read");
        assert!(left.is_empty(), "the outbox was cleared");
    }
}
