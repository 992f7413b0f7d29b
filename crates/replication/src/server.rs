//! The source side of replication links: serves `Replication.Link` streams
//! from this region's log.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use meridian_identity::Peer;
use meridian_rpc::replication as pb;
use meridian_rpc::replication::replication_server::{Replication, ReplicationServer};
use meridian_seams::SharedClock;
use meridian_wire::sites::region_of_site;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::epoch::LogEpochs;
use crate::log::{LogRecord, SharedLog, topic_for};
use crate::start::{StartPoint, starting_point};

/// Most records per batch frame.
const MAX_BATCH: usize = 512;
/// Largest window a destination may ask for.
const MAX_WINDOW: u32 = 65_536;
/// Longest a stream leaves applied entries untrimmed while it is busy.
const TRIM_INTERVAL: Duration = Duration::from_millis(250);
/// Applied entries that trigger a trim at once.
const TRIM_BACKLOG: u64 = 4096;
/// How long a new link stream may take to send `open`.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Timings of the link server.
#[derive(Debug, Clone)]
pub struct LinkServerConfig {
    /// Heartbeat period while idle (destinations count three missed ones
    /// as a stalled link).
    pub heartbeat: Duration,
}

impl Default for LinkServerConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// Serves this region's log to destination regions.
#[derive(Clone)]
pub struct LinkServer {
    region: String,
    /// Regions allowed to pull (a topic exists only for known regions).
    known: Vec<String>,
    log: SharedLog,
    epochs: LogEpochs,
    clock: SharedClock,
    config: LinkServerConfig,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

impl std::fmt::Debug for LinkServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkServer")
            .field("region", &self.region)
            .finish()
    }
}

impl LinkServer {
    /// A server for `region`'s `log`, whose epochs are in `epochs`;
    /// `known` lists the peer regions.
    pub fn new(
        region: impl Into<String>,
        known: Vec<String>,
        log: SharedLog,
        epochs: LogEpochs,
        clock: SharedClock,
        config: LinkServerConfig,
    ) -> Self {
        Self {
            region: region.into(),
            known,
            log,
            epochs,
            clock,
            config,
            shutdown: None,
        }
    }

    /// Ends every link stream when `shutdown` turns true, so a stopping
    /// server is not held open by other regions' long-lived links (they
    /// reconnect and resume from their recorded offsets).
    pub fn with_shutdown(mut self, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// The tonic service.
    pub fn into_server(self) -> ReplicationServer<Self> {
        ReplicationServer::new(self)
            .max_decoding_message_size(1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}

type LinkStream = Pin<Box<dyn Stream<Item = Result<pb::LinkDown, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for LinkServer {
    type LinkStream = LinkStream;

    async fn link(
        &self,
        request: Request<Streaming<pb::LinkUp>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        // Who opened the link decides what it may read: only the core of
        // the region a topic is destined for (checked below, with `open`).
        let peer = Peer::of(&request)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no authorization layer ran"))?;
        let mut up = request.into_inner();
        // The first frame must come promptly: a silent client would hold
        // this task forever.
        let first = tokio::time::timeout(OPEN_TIMEOUT, up.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no `open` within 10 s"))??;
        let open = match first {
            Some(pb::LinkUp {
                kind: Some(pb::link_up::Kind::Open(open)),
            }) => open,
            _ => return Err(Status::invalid_argument("a link starts with `open`")),
        };
        if !self.known.contains(&open.destination) || open.destination == self.region {
            return Err(Status::invalid_argument(format!(
                "unknown destination region `{}`",
                open.destination
            )));
        }
        // Sites of one region share its identity: `us-east_1` pulls as
        // `core.us-east`.
        if !peer.is_core_of(region_of_site(&open.destination)) {
            metrics::counter!("meridian_replication_links_refused_total", "claimed" => open.destination.clone())
                .increment(1);
            tracing::warn!(%peer, destination = %open.destination, "link opened for another region; refused");
            return Err(Status::permission_denied(format!(
                "{peer} may not pull the topic of `{}`",
                open.destination
            )));
        }
        let partitions = self.log.partitions();
        let mut from = BTreeMap::new();
        for start in &open.from {
            if start.partition >= partitions {
                return Err(Status::invalid_argument(format!(
                    "partition {} out of range (the log has {partitions})",
                    start.partition
                )));
            }
            from.insert(start.partition, start.offset);
        }
        let window = open.window.clamp(1, MAX_WINDOW) as u64;
        let topic = topic_for(&self.region, &open.destination);
        self.log
            .ensure_topic(&topic)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut last = BTreeMap::new();
        for entry in &open.last {
            if entry.partition >= partitions {
                return Err(Status::invalid_argument(format!(
                    "partition {} out of range (the log has {partitions})",
                    entry.partition
                )));
            }
            last.insert(entry.partition, (entry.offset, entry.hash));
        }
        let StartPoint {
            epoch,
            restart,
            from,
        } = starting_point(
            &self.log,
            &self.epochs,
            &topic,
            &open.destination,
            open.epoch,
            from,
            &last,
        )
        .await?;
        let reader = self
            .log
            .reader(&topic, &from)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        tracing::info!(destination = %open.destination, epoch, restart, ?from, "replication link opened");
        let (down, down_rx) = mpsc::channel(16);
        let start = pb::LinkDown {
            kind: Some(pb::link_down::Kind::Start(pb::Start {
                epoch,
                restart,
                from: from
                    .iter()
                    .map(|(&partition, &offset)| pb::PartitionOffset { partition, offset })
                    .collect(),
            })),
        };
        // Room for it: the channel is new.
        let _ = down.try_send(Ok(start));
        let pump = Pump {
            log: self.log.clone(),
            clock: self.clock.clone(),
            heartbeat: self.config.heartbeat,
            topic,
            destination: open.destination,
            window,
            sent: from.clone(),
            applied: from.clone(),
            trimmed: from,
            trimmed_at: Duration::ZERO,
            ends: BTreeMap::new(),
            ends_read_at: Duration::ZERO,
        };
        tokio::spawn(meridian_seams::shutdown::until_shutdown(
            self.shutdown.clone(),
            pump.run(reader, up, down),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(down_rx))))
    }
}

/// One link stream: reads the log within the window and follows the
/// destination's reports.
struct Pump {
    log: SharedLog,
    clock: SharedClock,
    heartbeat: Duration,
    topic: String,
    destination: String,
    window: u64,
    /// Next offset to send, per partition.
    sent: BTreeMap<u32, u64>,
    /// Next offset the destination reported applied, per partition.
    applied: BTreeMap<u32, u64>,
    /// Offset below which this stream trimmed the log, per partition.
    trimmed: BTreeMap<u32, u64>,
    /// When this stream last trimmed.
    trimmed_at: Duration,
    /// The log's end offsets as last read, and when.
    ends: BTreeMap<u32, u64>,
    ends_read_at: Duration,
}

impl Pump {
    fn in_flight(&self) -> u64 {
        self.sent
            .iter()
            .map(|(p, sent)| sent.saturating_sub(self.applied.get(p).copied().unwrap_or(0)))
            .sum()
    }

    async fn run(
        mut self,
        mut reader: Box<dyn crate::log::LogReader>,
        mut up: Streaming<pb::LinkUp>,
        down: mpsc::Sender<Result<pb::LinkDown, Status>>,
    ) {
        let mut last_frame = self.clock.monotonic();
        loop {
            // Reports first: they open the window.
            loop {
                let report = if self.in_flight() >= self.window {
                    // Window full: nothing to do but wait for a report.
                    match tokio::time::timeout(self.heartbeat, up.next()).await {
                        Ok(report) => report,
                        Err(_) => {
                            if self.send_heartbeat(&down).await.is_err() {
                                return;
                            }
                            continue;
                        }
                    }
                } else {
                    match futures::FutureExt::now_or_never(up.next()) {
                        Some(report) => report,
                        None => break,
                    }
                };
                match report {
                    Some(Ok(pb::LinkUp {
                        kind: Some(pb::link_up::Kind::Applied(applied)),
                    })) => self.on_applied(applied),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        tracing::info!(destination = %self.destination, "replication link closed");
                        return;
                    }
                }
            }
            self.trim_applied().await;
            let room = (self.window - self.in_flight()).min(MAX_BATCH as u64 * 8) as usize;
            let wait = self
                .heartbeat
                .saturating_sub(self.clock.monotonic().saturating_sub(last_frame));
            let records = match reader.next(room, wait).await {
                Ok(records) => records,
                Err(error) => {
                    tracing::warn!(%error, "reading the replication log failed; closing the link");
                    let _ = down.send(Err(Status::unavailable(error.to_string()))).await;
                    return;
                }
            };
            if records.is_empty() {
                if self.clock.monotonic().saturating_sub(last_frame) >= self.heartbeat {
                    if self.send_heartbeat(&down).await.is_err() {
                        return;
                    }
                    last_frame = self.clock.monotonic();
                }
                continue;
            }
            // End offsets cost a broker round trip with Kafka: refreshed at
            // most once per heartbeat period (a batch's own last offset is a
            // lower bound meanwhile).
            if self.clock.monotonic().saturating_sub(self.ends_read_at) >= self.heartbeat {
                self.refresh_ends().await;
            }
            let mut by_partition: BTreeMap<u32, Vec<LogRecord>> = BTreeMap::new();
            for (partition, record) in records {
                self.sent.insert(partition, record.offset.saturating_add(1));
                by_partition.entry(partition).or_default().push(record);
            }
            for (partition, records) in by_partition {
                for chunk in records.chunks(MAX_BATCH) {
                    let batch = pb::Batch {
                        partition,
                        records: chunk
                            .iter()
                            .map(|r| pb::Record {
                                offset: r.offset,
                                key: r.key.clone(),
                                value: r.value.to_vec(),
                                appended_ms: r.appended_ms,
                            })
                            .collect(),
                        log_end: self
                            .ends
                            .get(&partition)
                            .copied()
                            .unwrap_or(0)
                            .max(chunk.last().map_or(0, |r| r.offset + 1)),
                    };
                    let frame = pb::LinkDown {
                        kind: Some(pb::link_down::Kind::Batch(batch)),
                    };
                    if down.send(Ok(frame)).await.is_err() {
                        return;
                    }
                }
            }
            last_frame = self.clock.monotonic();
        }
    }

    fn on_applied(&mut self, applied: pb::Applied) {
        let previous = self.applied.get(&applied.partition).copied().unwrap_or(0);
        // Never past what this stream sent: a report beyond it (a confused or
        // stale destination) must not trim entries nobody applied.
        let sent = self.sent.get(&applied.partition).copied().unwrap_or(0);
        let offset = applied.offset.min(sent);
        if offset > previous {
            self.applied.insert(applied.partition, offset);
        }
    }

    /// Trims what the destination applied since the last trim, at most once
    /// per [`TRIM_INTERVAL`] unless [`TRIM_BACKLOG`] entries wait: a trim is
    /// a write transaction, and one per report would put a commit between
    /// every two reads of a busy link. The last applied entry stays: a
    /// reconnecting destination names it, and the log's entry there must
    /// match (`start.rs`).
    async fn trim_applied(&mut self) {
        let trimmable = |applied: u64| applied.saturating_sub(1);
        let untrimmed: u64 = self
            .applied
            .iter()
            .map(|(p, &applied)| {
                trimmable(applied).saturating_sub(self.trimmed.get(p).copied().unwrap_or(0))
            })
            .sum();
        let now = self.clock.monotonic();
        if untrimmed == 0
            || (untrimmed < TRIM_BACKLOG && now.saturating_sub(self.trimmed_at) < TRIM_INTERVAL)
        {
            return;
        }
        self.trimmed_at = now;
        let due: Vec<(u32, u64, u64)> = self
            .applied
            .iter()
            .filter_map(|(&partition, &applied)| {
                let trimmed = self.trimmed.get(&partition).copied().unwrap_or(0);
                let to = trimmable(applied);
                (to > trimmed).then_some((partition, trimmed, to))
            })
            .collect();
        for (partition, from, to) in due {
            match self.log.trim(&self.topic, partition, from, to).await {
                Ok(()) => {
                    self.trimmed.insert(partition, to);
                }
                Err(error) => tracing::warn!(%error, "trimming the replication log failed"),
            }
        }
    }

    async fn refresh_ends(&mut self) {
        match self.log.end_offsets(&self.topic).await {
            Ok(ends) => self.ends = ends,
            Err(error) => tracing::debug!(%error, "reading log end offsets failed"),
        }
        self.ends_read_at = self.clock.monotonic();
    }

    async fn send_heartbeat(
        &mut self,
        down: &mpsc::Sender<Result<pb::LinkDown, Status>>,
    ) -> Result<(), ()> {
        self.refresh_ends().await;
        let frame = pb::LinkDown {
            kind: Some(pb::link_down::Kind::Heartbeat(pb::Heartbeat {
                log_end: self
                    .ends
                    .iter()
                    .map(|(&partition, &offset)| pb::PartitionOffset { partition, offset })
                    .collect(),
                now_ms: self.clock.wall_millis(),
            })),
        };
        down.send(Ok(frame)).await.map_err(|_| ())
    }
}
