//! Exactly-once apply across a crash: two regions as separate `meridian dev`
//! processes; the destination region is killed with SIGKILL while it applies
//! a stream of replicated messages, and restarted on the same data. Nothing
//! is missing, and nothing was applied twice (a device that reads its whole
//! inbox only afterwards sees every message exactly once on the wire).

// Test code: a failed expectation should panic with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use meridian_sdk::{Client, Rest};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_destination_mid_apply_neither_loses_nor_duplicates_embedded_log() {
    killing_the_destination_mid_apply(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_destination_mid_apply_neither_loses_nor_duplicates_kafka() {
    let us = meridian_testbed::Broker::start(&meridian_seams::net::TokioNetwork::shared())
        .await
        .expect("tansu");
    let eu = meridian_testbed::Broker::start(&meridian_seams::net::TokioNetwork::shared())
        .await
        .expect("tansu");
    killing_the_destination_mid_apply(&[
        "--log".into(),
        "kafka".into(),
        "--brokers".into(),
        format!("us-east={}", us.bootstrap()),
        "--brokers".into(),
        format!("eu-west={}", eu.bootstrap()),
    ])
    .await;
}

async fn killing_the_destination_mid_apply(log: &[String]) {
    let regions = tempfile::tempdir().expect("tempdir");
    common::write_regions(regions.path());
    let data = tempfile::tempdir().expect("tempdir");
    let (mut us_east, us_url) = common::start_region(regions.path(), "us-east", data.path(), log);
    let (mut eu_west, eu_url) = common::start_region(regions.path(), "eu-west", data.path(), log);
    let us = Rest::new(&us_url);
    let eu = Rest::new(&eu_url);
    let alice = us.register("alice").await.unwrap();
    let bob = eu.register("bob").await.unwrap();
    // Bob's tablet stays offline until the end: its inbox is read once.
    let tablet = eu
        .with_token(&bob.token)
        .add_device("tablet")
        .await
        .unwrap();
    let conv = us
        .with_token(&alice.token)
        .direct(&bob.user_id)
        .await
        .unwrap()
        .conv_id;

    const TOTAL: usize = 2000;
    let sender = common::send_stream(&us, &alice.token, &conv, TOTAL, 1);

    // Once eu-west is visibly applying, kill it.
    let mut phone = Client::new(&eu, &bob.token, 2);
    phone.connect(20).await.expect("connect");
    let applying = phone
        .poll_until(Duration::from_secs(60), |c| c.received() >= 300)
        .await
        .unwrap();
    assert!(
        applying,
        "eu-west applied only {} messages",
        phone.received()
    );
    assert!(
        !sender.is_finished(),
        "the kill lands while changes stream in"
    );
    eu_west.kill().expect("SIGKILL");
    eu_west.wait().expect("reap");
    let sent: BTreeSet<String> = sender.await.expect("sender").into_iter().collect();
    assert_eq!(
        sent.len(),
        TOTAL,
        "us-east accepted every send while eu-west was down"
    );
    drop(phone);

    let (restarted, eu_url) = common::start_region(regions.path(), "eu-west", data.path(), log);
    eu_west = restarted;
    let eu = Rest::new(&eu_url);
    let mut tablet_client = Client::new(&eu, &tablet.token, 3);
    tablet_client.connect(20).await.expect("reconnect");
    let complete = tablet_client
        .poll_until(Duration::from_secs(90), |c| c.received() >= TOTAL)
        .await
        .unwrap();
    // A duplicate would arrive after the last new message: keep reading a
    // little longer before counting.
    let _ = tablet_client.poll(Duration::from_millis(500)).await;
    let received: BTreeSet<String> = tablet_client
        .timeline(&conv)
        .iter()
        .map(|m| m.msg_id.clone())
        .collect();
    us_east.kill().ok();
    us_east.wait().ok();
    eu_west.kill().ok();
    eu_west.wait().ok();
    assert!(
        complete,
        "missing after restart: {} of {TOTAL}",
        received.len()
    );
    assert_eq!(received, sent, "exactly the acknowledged sends");
    assert_eq!(
        tablet_client.wire_duplicates, 0,
        "an inbox entry was applied twice"
    );
}
