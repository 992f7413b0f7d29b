//! Kafka as a region's replication log, through rdkafka (librdkafka).
//!
//! One topic per destination region, keyed by conversation id; the
//! partition is chosen here ([`crate::partition_for`]), so both logs place a
//! conversation identically. The producer is idempotent (`acks=all`,
//! `enable.idempotence`): a retried produce does not duplicate, and order
//! per partition holds. Correctness never depends on Kafka transactions
//! (tansu, the local broker, has none): the relay appends, then clears the
//! outbox, and the destination's exactly-once apply absorbs a duplicate.
//!
//! rdkafka runs its own C threads, so this log never runs in the
//! deterministic simulation (the embedded log does).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::log::{AppendRecord, LogError, LogReader, LogRecord, ReplicationLog, partition_for};

/// Settings of the Kafka log.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `host:port,…` of the region's brokers.
    pub brokers: String,
    /// Partitions per topic (set when the topic is created).
    pub partitions: u32,
    /// Replication factor of created topics (3 in production, 1 locally).
    pub replication_factor: i32,
    /// How long a broker may hold a fetch waiting for data: low, because a
    /// replicated message waits this long at most.
    pub fetch_wait_max_ms: u32,
    /// librdkafka settings given to every client as they are:
    /// `security.protocol`, `ssl.*`, `sasl.*` (TLS and SASL to the
    /// brokers).
    pub security: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Security settings by name only: they may hold a password.
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("fetch_wait_max_ms", &self.fetch_wait_max_ms)
            .field("security", &self.security.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KafkaConfig {
    /// Defaults for `brokers`.
    pub fn new(brokers: impl Into<String>, partitions: u32) -> Self {
        Self {
            brokers: brokers.into(),
            partitions: partitions.max(1),
            replication_factor: 1,
            fetch_wait_max_ms: 10,
            security: BTreeMap::new(),
        }
    }

    /// A client configuration for the brokers, with the security settings
    /// (and `MERIDIAN_KAFKA_SASL_PASSWORD` as `sasl.password`, so a
    /// password need not sit in a region file).
    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.security {
            config.set(key, value);
        }
        if let Ok(password) = std::env::var("MERIDIAN_KAFKA_SASL_PASSWORD") {
            config.set("sasl.password", password);
        }
        config
    }
}

/// The log on a Kafka cluster.
#[derive(Clone)]
pub struct KafkaLog {
    config: KafkaConfig,
    producer: FutureProducer,
    admin: Arc<AdminClient<DefaultClientContext>>,
    metadata: Arc<BaseConsumer>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("brokers", &self.config.brokers)
            .finish()
    }
}

fn kafka(error: KafkaError) -> LogError {
    LogError::Kafka(error.to_string())
}

impl KafkaLog {
    /// Clients for `config.brokers` (they connect lazily).
    ///
    /// # Errors
    /// A configuration librdkafka refuses.
    pub fn new(config: KafkaConfig) -> Result<Self, LogError> {
        let producer: FutureProducer = config
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(kafka)?;
        let admin: AdminClient<DefaultClientContext> = config.client().create().map_err(kafka)?;
        let metadata: BaseConsumer = config
            .client()
            .set("group.id", "meridian-metadata")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(kafka)?;
        Ok(Self {
            config,
            producer,
            admin: Arc::new(admin),
            metadata: Arc::new(metadata),
        })
    }
}

impl KafkaLog {
    /// A reader of `partitions` of `topic` from `from` (0 when absent).
    async fn reader_of(
        &self,
        topic: &str,
        from: &BTreeMap<u32, u64>,
        partitions: &[u32],
    ) -> Result<Box<dyn LogReader>, LogError> {
        let consumer: StreamConsumer = self
            .config
            .client()
            .set("group.id", format!("meridian-link-{topic}"))
            .set("enable.auto.commit", "false")
            // A recorded offset the broker no longer has (a topic recreated,
            // records expired) must stop the link with an error, never
            // silently restart elsewhere in the partition.
            .set("auto.offset.reset", "error")
            .set(
                "fetch.wait.max.ms",
                self.config.fetch_wait_max_ms.to_string(),
            )
            .create()
            .map_err(kafka)?;
        let mut assignment = TopicPartitionList::new();
        for &partition in partitions {
            let offset = from.get(&partition).copied().unwrap_or(0);
            assignment
                .add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64))
                .map_err(kafka)?;
        }
        consumer.assign(&assignment).map_err(kafka)?;
        Ok(Box::new(KafkaReader { consumer }))
    }

    /// Every partition's (first held, end) offsets.
    async fn watermarks(&self, topic: &str) -> Result<BTreeMap<u32, (u64, u64)>, LogError> {
        let metadata = self.metadata.clone();
        let topic = topic.to_string();
        let partitions = self.config.partitions;
        // librdkafka's watermark query blocks; Kafka never runs in the
        // simulation, so a blocking thread is fine here.
        #[allow(clippy::disallowed_methods)]
        tokio::task::spawn_blocking(move || {
            let mut out = BTreeMap::new();
            for partition in 0..partitions {
                let (low, high) = metadata
                    .fetch_watermarks(&topic, partition as i32, Duration::from_secs(5))
                    .map_err(kafka)?;
                out.insert(partition, (low.max(0) as u64, high.max(0) as u64));
            }
            Ok(out)
        })
        .await
        .map_err(|e| LogError::Kafka(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl ReplicationLog for KafkaLog {
    fn partitions(&self) -> u32 {
        self.config.partitions
    }

    async fn ensure_topic(&self, topic: &str) -> Result<(), LogError> {
        let new = NewTopic::new(
            topic,
            self.config.partitions as i32,
            TopicReplication::Fixed(self.config.replication_factor),
        )
        // A week: a destination region may be away that long and resume.
        .set("retention.ms", "604800000");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .admin
            .create_topics([&new], &options)
            .await
            .map_err(kafka)?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(LogError::Kafka(format!("creating topic {name}: {code}")));
                }
            }
        }
        Ok(())
    }

    async fn append(&self, topic: &str, records: &[AppendRecord]) -> Result<(), LogError> {
        let partitions = self.config.partitions;
        let sends = records.iter().map(|record| {
            let partition = partition_for(&record.key, partitions) as i32;
            self.producer.send(
                FutureRecord::to(topic)
                    .partition(partition)
                    .key(record.key.as_bytes())
                    .payload(record.value.as_ref()),
                Duration::from_secs(30),
            )
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(error, _)| kafka(error))?;
        }
        Ok(())
    }

    async fn reader(
        &self,
        topic: &str,
        from: &BTreeMap<u32, u64>,
    ) -> Result<Box<dyn LogReader>, LogError> {
        let partitions: Vec<u32> = (0..self.config.partitions).collect();
        self.reader_of(topic, from, &partitions).await
    }

    async fn end_offsets(&self, topic: &str) -> Result<BTreeMap<u32, u64>, LogError> {
        Ok(self
            .watermarks(topic)
            .await?
            .into_iter()
            .map(|(partition, (_, high))| (partition, high))
            .collect())
    }

    async fn record_at(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<Option<LogRecord>, LogError> {
        let Some(&(low, high)) = self.watermarks(topic).await?.get(&partition) else {
            return Ok(None);
        };
        if offset < low || offset >= high {
            return Ok(None);
        }
        let mut reader = self
            .reader_of(topic, &BTreeMap::from([(partition, offset)]), &[partition])
            .await?;
        let records = reader.next(1, Duration::from_secs(5)).await?;
        Ok(records
            .into_iter()
            .map(|(_, record)| record)
            .find(|record| record.offset == offset))
    }

    async fn start_offsets(&self, topic: &str) -> Result<BTreeMap<u32, u64>, LogError> {
        Ok(self
            .watermarks(topic)
            .await?
            .into_iter()
            .map(|(partition, (low, _))| (partition, low))
            .collect())
    }

    async fn trim(
        &self,
        _topic: &str,
        _partition: u32,
        _from: u64,
        _before: u64,
    ) -> Result<(), LogError> {
        // The topic's retention drops old records.
        Ok(())
    }
}

struct KafkaReader {
    consumer: StreamConsumer,
}

impl KafkaReader {
    fn record(message: &rdkafka::message::BorrowedMessage<'_>) -> (u32, LogRecord) {
        let appended_ms = message.timestamp().to_millis().unwrap_or(0).max(0) as u64;
        (
            message.partition().max(0) as u32,
            LogRecord {
                offset: message.offset().max(0) as u64,
                key: message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                appended_ms,
            },
        )
    }
}

#[async_trait::async_trait]
impl LogReader for KafkaReader {
    async fn next(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<(u32, LogRecord)>, LogError> {
        let mut out = Vec::new();
        match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => return Ok(out),
            Ok(Err(error)) => return Err(kafka(error)),
            Ok(Ok(message)) => out.push(Self::record(&message)),
        }
        // Take whatever else is already here, without waiting.
        while out.len() < max {
            match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                Ok(Ok(message)) => out.push(Self::record(&message)),
                Ok(Err(error)) => return Err(kafka(error)),
                Err(_) => break,
            }
        }
        Ok(out)
    }
}
