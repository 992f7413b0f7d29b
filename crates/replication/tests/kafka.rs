//! The Kafka log against a real Kafka-protocol broker (tansu, started here).

// Test code: a failed expectation should panic with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use meridian_replication::kafka::{KafkaConfig, KafkaLog};
use meridian_replication::log::AppendRecord;
use meridian_replication::{ReplicationLog, partition_for};
use meridian_testbed::Broker;

fn records(keys: &[&str], tag: &str) -> Vec<AppendRecord> {
    keys.iter()
        .enumerate()
        .map(|(i, key)| AppendRecord {
            key: key.to_string(),
            value: Bytes::from(format!("{tag}-{i}")),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_read_back_per_partition_from_any_offset() {
    let broker = Broker::start(&meridian_seams::net::TokioNetwork::shared())
        .await
        .expect("tansu");
    let log = KafkaLog::new(KafkaConfig::new(broker.bootstrap(), 3)).expect("clients");
    let topic = &meridian_replication::topic_for("a", "b");
    log.ensure_topic(topic).await.expect("create");
    log.ensure_topic(topic)
        .await
        .expect("creating again is fine");
    let keys = ["conv-1", "conv-2", "conv-1", "conv-3", "conv-1"];
    log.append(topic, &records(&keys, "first"))
        .await
        .expect("append");
    log.append(topic, &records(&["conv-1"], "second"))
        .await
        .expect("append");

    let ends = log.end_offsets(topic).await.expect("ends");
    assert_eq!(ends.values().sum::<u64>(), 6);

    let mut reader = log.reader(topic, &BTreeMap::new()).await.expect("reader");
    let mut all = Vec::new();
    while all.len() < 6 {
        let batch = reader
            .next(100, Duration::from_secs(10))
            .await
            .expect("read");
        assert!(!batch.is_empty(), "records arrive");
        all.extend(batch);
    }
    let conv1: Vec<&[u8]> = all
        .iter()
        .filter(|(_, r)| r.key == "conv-1")
        .map(|(_, r)| r.value.as_ref())
        .collect();
    assert_eq!(
        conv1,
        [b"first-0".as_ref(), b"first-2", b"first-4", b"second-0"]
    );
    for (partition, record) in &all {
        assert_eq!(*partition, partition_for(&record.key, 3));
        assert!(record.appended_ms > 0);
    }

    // A reader from a recorded offset starts exactly there (tansu's SQLite
    // storage: memory:// loses records when a consumer starts past 0).
    let p = partition_for("conv-1", 3);
    let from = BTreeMap::from([(p, 2u64)]);
    let mut reader = log.reader(topic, &from).await.expect("reader");
    let mut of_p = Vec::new();
    let expected = ends[&p] - 2;
    while (of_p.len() as u64) < expected {
        let batch = reader
            .next(100, Duration::from_secs(10))
            .await
            .expect("read");
        assert!(!batch.is_empty(), "records arrive");
        of_p.extend(
            batch
                .into_iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, r)| r.offset),
        );
    }
    assert_eq!(of_p.first(), Some(&2));
}
