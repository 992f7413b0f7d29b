//! Delivery: multi-device fan-out, offline catch-up, idempotent sends.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{Harness, Options, PATIENCE, next_json, send_json, send_many};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_two_devices_each_receive_every_message_once() {
    every_device_receives_every_message_once(Harness::start().await).await;
}

/// The same, with delivery watching the inbox head (FoundationDB's way)
/// instead of following the native store's inbox feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_delivery_works_watching_the_inbox_head() {
    let h = Harness::start_with(Options::watching_inbox_head()).await;
    every_device_receives_every_message_once(h).await;
}

async fn every_device_receives_every_message_once(mut h: Harness) {
    let (alice, bob, conv) = h.direct_pair().await;
    let alice2 = h.device(&alice.token, "laptop").await;
    let bob2 = h.device(&bob.token, "laptop").await;
    let mut devices = vec![
        h.client(&alice.token).await,
        h.client(&alice2.token).await,
        h.client(&bob.token).await,
        h.client(&bob2.token).await,
    ];
    let mut sent = BTreeSet::new();
    for round in 0..10 {
        for sender in [0, 2] {
            sent.extend(send_many(&mut devices[sender], &conv, 1, &format!("round {round}")).await);
        }
    }
    assert_eq!(sent.len(), 20);
    for device in &mut devices {
        let complete = device
            .poll_until(PATIENCE, |c| c.received() >= 20)
            .await
            .unwrap();
        assert!(complete, "a device got {} of 20", device.received());
    }
    let reference: Vec<String> = devices[0]
        .timeline(&conv)
        .iter()
        .map(|m| m.msg_id.clone())
        .collect();
    assert_eq!(reference.iter().cloned().collect::<BTreeSet<_>>(), sent);
    for device in &devices {
        assert_eq!(device.received(), 20, "exactly once per device");
        assert_eq!(device.wire_duplicates, 0);
        let order: Vec<String> = device
            .timeline(&conv)
            .iter()
            .map(|m| m.msg_id.clone())
            .collect();
        assert_eq!(order, reference, "every device shows one order");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_device_catches_up_in_order_exactly_once() {
    offline_device_catches_up(Harness::start().await).await;
}

/// The same, with delivery watching the inbox head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_catch_up_works_watching_the_inbox_head() {
    let h = Harness::start_with(Options::watching_inbox_head()).await;
    offline_device_catches_up(h).await;
}

async fn offline_device_catches_up(mut h: Harness) {
    let (alice, bob, conv) = h.direct_pair().await;
    let bob_tablet = h.device(&bob.token, "tablet").await;
    let mut sender = h.client(&alice.token).await;
    let mut tablet = h.client(&bob_tablet.token).await;
    let start_cursor = tablet.session().unwrap().cursor.clone();
    tablet.disconnect();

    let sent = send_many(&mut sender, &conv, 50, "offline").await;

    let mut tablet = h.client(&bob_tablet.token).await;
    assert_eq!(
        tablet.session().unwrap().cursor,
        start_cursor,
        "resumes from the stored cursor"
    );
    let mut arrivals = Vec::new();
    while arrivals.len() < 50 {
        let batch = tokio::time::timeout(PATIENCE, tablet.poll(PATIENCE))
            .await
            .unwrap()
            .unwrap();
        arrivals.extend(batch.into_iter().map(|m| m.msg_id));
    }
    assert_eq!(arrivals, sent, "all 50, in order, nothing twice");
    assert_eq!(tablet.wire_duplicates, 0);

    // The acks moved the stored cursor: once the last ack has committed, a
    // new connection starts after it and nothing is delivered again.
    let last_acked = tablet.last_acked.clone().expect("acked");
    tablet.disconnect();
    let mut stored = String::new();
    for _ in 0..200 {
        let mut again = h.client(&bob_tablet.token).await;
        stored = again.session().unwrap().cursor.clone();
        if stored == last_acked {
            let redelivered = again.poll(Duration::from_millis(300)).await.unwrap();
            assert!(redelivered.is_empty(), "acknowledged messages came again");
            break;
        }
        again.disconnect();
    }
    assert_eq!(stored, last_acked, "the stored cursor reached the last ack");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_msg_id_sent_three_times_makes_one_message() {
    let mut h = Harness::start().await;
    let (alice, bob, conv) = h.direct_pair().await;
    let mut client = h.client(&alice.token).await;
    let first = client.send(&conv, "retry-me", "once", None).await.unwrap();
    let second = client.send(&conv, "retry-me", "once", None).await.unwrap();
    client.disconnect();
    let third = client.send(&conv, "retry-me", "once", None).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        first, third,
        "the retry across a reconnect returns the first result"
    );
    let history = h
        .rest
        .with_token(&bob.token)
        .history(&conv, None, 50)
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 1);
    let mut receiver = h.client(&bob.token).await;
    assert!(
        receiver
            .poll_until(PATIENCE, |c| c.received() >= 1)
            .await
            .unwrap()
    );
    receiver.poll(Duration::from_millis(200)).await.unwrap();
    assert_eq!(receiver.received(), 1);
    h.stop().await;
}

/// A device whose deliveries never stop is still heard. Bob comes online to
/// 300 waiting messages of 60 KiB each (18 MB, more than the socket's
/// buffers hold, so the gateway's writes wait on his reading) and reads them
/// slowly; the send he wrote to Carol after his first delivery reaches her
/// long before his backlog is through. (The session takes one client frame
/// after every burst it writes; this checks the outcome, not that rule: a
/// queue that momentarily runs empty lets a frame in either way.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_flooded_with_deliveries_is_still_read() {
    let mut h = Harness::start().await;
    let (alice, bob, conv) = h.direct_pair().await;
    let carol = h.user("carol").await;
    let to_carol = h.direct(&bob.token, &carol.user_id).await;
    let mut flooder = h.client(&alice.token).await;
    let bulk = "x".repeat(60 * 1024);
    for i in 0..300 {
        let id = flooder.new_client_msg_id();
        flooder
            .send(&conv, &id, &bulk, None)
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
    }
    flooder.disconnect();
    let mut listener = h.client(&carol.token).await;

    let mut bob_socket = h.raw_ready(&bob.token).await;
    let first = next_json(&mut bob_socket).await;
    assert_eq!(first["type"], "deliver", "{first}");
    send_json(
        &mut bob_socket,
        serde_json::json!({"v": 1, "type": "send", "id": 1, "conv_id": to_carol, "client_msg_id": "heard-1", "payload": "heard"}),
    )
    .await;

    // Bob takes one frame per look at Carol's side; his send must reach her
    // while most of his backlog still waits.
    let mut bob_frames = 1;
    loop {
        listener
            .poll(Duration::from_millis(50))
            .await
            .expect("Carol polls");
        if listener
            .timeline(&to_carol)
            .iter()
            .any(|message| message.payload == "heard")
        {
            break;
        }
        assert!(
            bob_frames < 100,
            "Bob's send was not read while his deliveries streamed ({bob_frames} frames read)"
        );
        next_json(&mut bob_socket).await;
        bob_frames += 1;
    }
    drop(bob_socket);
    h.stop().await;
}
