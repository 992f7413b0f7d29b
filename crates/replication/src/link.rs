//! The destination side of a replication link: pulls one source region's
//! topic for this region and applies it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_rpc::replication as pb;
use meridian_rpc::replication::replication_client::ReplicationClient;
use meridian_seams::net::{SharedNetwork, tonic_channel};
use meridian_seams::{Backoff, Rng, SharedClock};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::log::LogRecord;
use crate::{AppliedState, Applier, ApplyError};

/// Most frames applied in one round (frames waiting when a round starts are
/// applied together).
const MAX_FRAMES_PER_ROUND: usize = 256;

/// Timings and sizes of a link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Entries the source may have in flight.
    pub window: u32,
    /// No frame for this long (heartbeats come every second) means the link
    /// is stalled: it is dropped and re-opened.
    pub stall_timeout: Duration,
    /// HTTP/2 keepalive on the connection.
    pub keepalive: Duration,
    /// First reconnection delay; doubles up to `max_backoff`, with jitter.
    pub min_backoff: Duration,
    /// Longest reconnection delay.
    pub max_backoff: Duration,
    /// Delay before retrying a refused entry (a clock stamp too far ahead).
    pub refused_retry: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            window: 8192,
            stall_timeout: Duration::from_secs(4),
            keepalive: Duration::from_secs(5),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            refused_retry: Duration::from_secs(1),
        }
    }
}

/// What a link reports about itself (for tests, `/readyz` and tools).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// A stream to the source is open.
    pub connected: bool,
    /// Next offset applied, per partition.
    pub applied: BTreeMap<u32, u64>,
    /// The source's log end, per partition, as last reported.
    pub log_end: BTreeMap<u32, u64>,
    /// Entries refused so far (clock stamps beyond the maximum offset),
    /// each counted once however often it is retried.
    pub refused: u64,
    /// The (partition, offset) refused last.
    pub refused_at: Option<(u32, u64)>,
}

impl LinkStatus {
    /// Entries in the source's log not applied here yet.
    pub fn lag_entries(&self) -> u64 {
        self.log_end
            .iter()
            .map(|(p, end)| end.saturating_sub(self.applied.get(p).copied().unwrap_or(0)))
            .sum()
    }
}

/// A link from `source` into this region.
pub struct Link {
    source: String,
    destination: String,
    address: String,
    network: SharedNetwork,
    clock: SharedClock,
    rng: Rng,
    applier: Arc<dyn Applier>,
    config: LinkConfig,
    tls: Option<tonic::transport::ClientTlsConfig>,
    status: watch::Sender<LinkStatus>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("source", &self.source)
            .field("destination", &self.destination)
            .finish()
    }
}

enum Ended {
    /// The stream broke or stalled: reconnect after a backoff.
    Broken(String),
    /// An entry was refused: retry from the recorded offsets after a backoff.
    Refused(String),
}

impl Link {
    /// A link pulling `source`'s topic for `destination` from the core at
    /// `address`, applying through `applier`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: impl Into<String>,
        destination: impl Into<String>,
        address: impl Into<String>,
        network: SharedNetwork,
        clock: SharedClock,
        rng: Rng,
        applier: Arc<dyn Applier>,
        config: LinkConfig,
    ) -> Self {
        Self {
            source: source.into(),
            destination: destination.into(),
            address: address.into(),
            network,
            clock,
            rng,
            applier,
            config,
            tls: None,
            status: watch::channel(LinkStatus::default()).0,
        }
    }

    /// Connects under TLS: `tls` names the source's core identity and
    /// carries this region's core certificate.
    pub fn with_tls(mut self, tls: Option<tonic::transport::ClientTlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// Follows this link's status.
    pub fn status(&self) -> watch::Receiver<LinkStatus> {
        self.status.subscribe()
    }

    /// Runs until the task is dropped: connect, pull and apply; on any
    /// failure wait (jittered exponential backoff) and resume from the
    /// offsets recorded by the last applies.
    pub async fn run(self) {
        let mut backoff = Backoff::new(self.config.min_backoff, self.config.max_backoff)
            .with_jitter(self.rng.clone());
        loop {
            let ended = self.session().await;
            // A session that got as far as streaming resets the backoff.
            let was_connected = self.status.borrow().connected;
            self.status.send_modify(|s| s.connected = false);
            self.record_up(false);
            if was_connected {
                backoff.reset();
            }
            let (reason, refused) = match ended {
                Ended::Broken(reason) => (reason, false),
                Ended::Refused(reason) => (reason, true),
            };
            if refused {
                tracing::warn!(source = %self.source, %reason, "replicated entry refused; retrying later");
            } else {
                tracing::info!(source = %self.source, %reason, "replication link down; reconnecting");
                metrics::counter!("meridian_link_reconnects_total", "source" => self.source.clone(), "destination" => self.destination.clone())
                    .increment(1);
            }
            if refused {
                // The stamp becomes acceptable only as this region's clock
                // advances (or the source's is fixed): check once a second.
                tokio::time::sleep(self.config.refused_retry).await;
                continue;
            }
            backoff.wait().await;
        }
    }

    async fn session(&self) -> Ended {
        let recorded = match self.applier.applied_state(&self.source).await {
            Ok(recorded) => recorded,
            Err(ApplyError(e)) => return Ended::Broken(format!("reading applied offsets: {e}")),
        };
        let from = &recorded.offsets;
        self.status.send_modify(|s| s.applied = from.clone());
        let channel = match tonic_channel(
            self.network.clone(),
            &self.address,
            self.config.keepalive,
            self.tls.clone(),
        ) {
            Ok(channel) => channel,
            Err(e) => return Ended::Broken(format!("bad address {}: {e}", self.address)),
        };
        let mut client = ReplicationClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(1024 * 1024);
        let (up, up_rx) = mpsc::channel(64);
        let open = pb::LinkUp {
            kind: Some(pb::link_up::Kind::Open(pb::Open {
                destination: self.destination.clone(),
                from: from
                    .iter()
                    .map(|(&partition, &offset)| pb::PartitionOffset { partition, offset })
                    .collect(),
                window: self.config.window,
                epoch: recorded.epoch,
                last: recorded
                    .last
                    .iter()
                    .filter_map(|(&partition, &hash)| {
                        let next = recorded.offsets.get(&partition).copied()?;
                        Some(pb::Fingerprint {
                            partition,
                            offset: next.checked_sub(1)?,
                            hash,
                        })
                    })
                    .collect(),
            })),
        };
        if up.send(open).await.is_err() {
            return Ended::Broken("stream closed".into());
        }
        let opened = tokio::time::timeout(
            self.config.stall_timeout,
            client.link(ReceiverStream::new(up_rx)),
        )
        .await;
        let mut down = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Ended::Broken(format!("open refused: {status}")),
            Err(_) => return Ended::Broken("open timed out".into()),
        };
        let start = match self.next_frame(&mut down).await {
            Ok(pb::LinkDown {
                kind: Some(pb::link_down::Kind::Start(start)),
            }) => start,
            Ok(_) => return Ended::Broken("the source's first frame is not `start`".into()),
            Err(ended) => return ended,
        };
        if let Err(ended) = self.begin(&recorded, start).await {
            return ended;
        }
        // Connected only once the source streams: a source that answers
        // and fails at once must not reset the backoff.
        self.status.send_modify(|s| s.connected = true);
        self.record_up(true);
        loop {
            let frame = match self.next_frame(&mut down).await {
                Ok(frame) => frame,
                Err(ended) => return ended,
            };
            // Frames that arrived while the last round applied are applied
            // together: one transaction per partition, the partitions at
            // once, so a busy link costs a few group commits per round
            // rather than one per frame.
            let mut batches = Vec::new();
            let mut next = Some(frame);
            let mut ended = None;
            while let Some(frame) = next.take() {
                match frame.kind {
                    Some(pb::link_down::Kind::Batch(batch)) => batches.push(batch),
                    Some(pb::link_down::Kind::Start(_)) => {
                        ended = Some(Ended::Broken("a second `start` frame".into()));
                        break;
                    }
                    Some(pb::link_down::Kind::Heartbeat(heartbeat)) => {
                        self.status.send_modify(|s| {
                            for end in &heartbeat.log_end {
                                s.log_end.insert(end.partition, end.offset);
                            }
                        });
                        if batches.is_empty() {
                            self.record_lag(None);
                        }
                    }
                    None => {}
                }
                if batches.len() >= MAX_FRAMES_PER_ROUND {
                    break;
                }
                match futures::FutureExt::now_or_never(down.message()) {
                    None => {}
                    Some(Ok(Some(frame))) => next = Some(frame),
                    Some(Ok(None)) => {
                        ended = Some(Ended::Broken("source closed the stream".into()))
                    }
                    Some(Err(status)) => {
                        ended = Some(Ended::Broken(format!("stream failed: {status}")));
                    }
                }
            }
            if !batches.is_empty()
                && let Err(ended) = self.apply_batches(batches, &up).await
            {
                return ended;
            }
            if let Some(ended) = ended {
                return ended;
            }
        }
    }

    /// The next frame from the source, within the stall timeout.
    async fn next_frame(
        &self,
        down: &mut tonic::Streaming<pb::LinkDown>,
    ) -> Result<pb::LinkDown, Ended> {
        match tokio::time::timeout(self.config.stall_timeout, down.message()).await {
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) => Err(Ended::Broken("source closed the stream".into())),
            Ok(Err(status)) => Err(Ended::Broken(format!("stream failed: {status}"))),
            Err(_) => Err(Ended::Broken("stalled: no frame from the source".into())),
        }
    }

    /// Takes the source's `start`: its epoch recorded, and with a restart
    /// the recorded offsets replaced by where the stream starts (the log is
    /// another incarnation: everything in it is applied again, which
    /// changes nothing already applied).
    async fn begin(&self, recorded: &AppliedState, start: pb::Start) -> Result<(), Ended> {
        let from: BTreeMap<u32, u64> = start.from.iter().map(|p| (p.partition, p.offset)).collect();
        let restart = start.restart.then_some(&from);
        if restart.is_none() && start.epoch == recorded.epoch {
            return Ok(());
        }
        self.applier
            .start_epoch(&self.source, start.epoch, restart)
            .await
            .map_err(|ApplyError(e)| Ended::Broken(format!("recording the source's epoch: {e}")))?;
        if start.restart {
            metrics::counter!("meridian_replication_restarts_total", "source" => self.source.clone(), "destination" => self.destination.clone())
                .increment(1);
            tracing::warn!(source = %self.source, old_epoch = recorded.epoch, epoch = start.epoch, ?from, "the source's log is another incarnation: applying it again");
            self.status.send_modify(|s| s.applied = from);
        }
        Ok(())
    }

    /// Applies `batches` (in arrival order, possibly several per partition):
    /// each partition's records in one call, the partitions concurrently
    /// (they are independent: a conversation lives on one partition), then
    /// reports every partition's progress to the source.
    async fn apply_batches(
        &self,
        batches: Vec<pb::Batch>,
        up: &mpsc::Sender<pb::LinkUp>,
    ) -> Result<(), Ended> {
        let mut by_partition: BTreeMap<u32, (Vec<LogRecord>, u64)> = BTreeMap::new();
        for batch in batches {
            let (records, log_end) = by_partition.entry(batch.partition).or_default();
            *log_end = (*log_end).max(batch.log_end);
            records.extend(batch.records.into_iter().map(|r| LogRecord {
                offset: r.offset,
                key: r.key,
                value: r.value.into(),
                appended_ms: r.appended_ms,
            }));
        }
        let applies = by_partition
            .iter()
            .map(|(&partition, (records, _))| async move {
                (
                    partition,
                    self.applier.apply(&self.source, partition, records).await,
                )
            });
        let outcomes = futures::future::join_all(applies).await;
        let mut refused = None;
        let mut broken = None;
        let mut newest_appended: Option<u64> = None;
        for (partition, outcome) in outcomes {
            let (records, log_end) = &by_partition[&partition];
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(ApplyError(e)) => {
                    // Other partitions' applies stand (each recorded its
                    // offset); the link reconnects from what was recorded.
                    broken.get_or_insert(format!("apply failed: {e}"));
                    continue;
                }
            };
            let applied_count = records
                .iter()
                .filter(|r| r.offset < outcome.next_offset)
                .count();
            metrics::counter!("meridian_replication_applied_total", "source" => self.source.clone(), "destination" => self.destination.clone())
                .increment(applied_count as u64);
            self.status.send_modify(|s| {
                s.applied.insert(partition, outcome.next_offset);
                let end = s.log_end.entry(partition).or_default();
                *end = (*end).max(*log_end);
                if outcome.refused.is_some()
                    && s.refused_at != Some((partition, outcome.next_offset))
                {
                    s.refused += 1;
                    s.refused_at = Some((partition, outcome.next_offset));
                }
            });
            if outcome.refused.is_none()
                && let Some(last) = records.last()
            {
                newest_appended = Some(newest_appended.unwrap_or(0).max(last.appended_ms));
            }
            let report = pb::LinkUp {
                kind: Some(pb::link_up::Kind::Applied(pb::Applied {
                    partition,
                    offset: outcome.next_offset,
                })),
            };
            if up.send(report).await.is_err() {
                return Err(Ended::Broken("stream closed".into()));
            }
            if let Some(reason) = outcome.refused {
                refused.get_or_insert(reason);
            }
            if let Some((expected, got)) = outcome.gap {
                broken.get_or_insert(format!(
                    "partition {partition}: the log skipped offsets {expected}..{got}"
                ));
            }
        }
        self.record_lag(newest_appended);
        if let Some(reason) = broken {
            return Err(Ended::Broken(reason));
        }
        match refused {
            Some(reason) => Err(Ended::Refused(reason)),
            None => Ok(()),
        }
    }

    /// `meridian_replication_link_up`: 1 while the link streams. The lag
    /// gauges only move while frames arrive, so this is the one to alert on
    /// when a link is down.
    fn record_up(&self, up: bool) {
        let labels = [
            ("source", self.source.clone()),
            ("destination", self.destination.clone()),
        ];
        metrics::gauge!("meridian_replication_link_up", &labels).set(if up { 1.0 } else { 0.0 });
    }

    fn record_lag(&self, newest_applied_appended_ms: Option<u64>) {
        let status = self.status.borrow();
        let entries = status.lag_entries();
        let labels = [
            ("source", self.source.clone()),
            ("destination", self.destination.clone()),
        ];
        metrics::gauge!("meridian_replication_lag_entries", &labels).set(entries as f64);
        if let Some(appended) = newest_applied_appended_ms {
            let ms = self.clock.wall_millis().saturating_sub(appended);
            metrics::gauge!("meridian_replication_lag_ms", &labels).set(ms as f64);
        } else if entries == 0 {
            metrics::gauge!("meridian_replication_lag_ms", &labels).set(0.0);
        }
    }
}
