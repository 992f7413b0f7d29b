//! Fail-stop: a store that fails for good stops its core instead of
//! answering every write with an error; a stalled commit makes the core
//! unready until it completes. Nothing acknowledged is lost either way.

use std::time::Duration;

use meridian_kv_memory::Fault;
use meridian_region::{HealthConfig, MemoryEngine, Readiness};

use crate::support::{Harness, Options, PATIENCE, RawSocket, send_json};

/// The next text frame as JSON; `None` once the socket closed.
async fn next_frame(socket: &mut RawSocket) -> Option<serde_json::Value> {
    use futures::StreamExt;
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a frame or the close in time");
        match message {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                return Some(serde_json::from_str(&text).expect("JSON frame"));
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | Some(Err(_)) | None => {
                return None;
            }
            Some(Ok(_)) => {}
        }
    }
}

fn on(engine: &MemoryEngine) -> Options {
    Options {
        store: Some(engine.clone()),
        ..Options::default()
    }
}

/// The engine fails as fjall does after a failed fsync. The send in flight
/// is refused (typed, not acknowledged), the core stops, and a core
/// restarted over the recovered store has the acknowledged message; the
/// refused one, sent again under its key, exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_stops_the_core_and_loses_no_acknowledged_send() {
    let engine = MemoryEngine::new();
    let mut h = Harness::start_with(on(&engine)).await;
    let (alice, bob, conv) = h.direct_pair().await;
    let mut sender = h.client(&alice.token).await;
    let before = sender.new_client_msg_id();
    sender
        .send(&conv, &before, "before", None)
        .await
        .expect("acknowledged before the failure");

    let mut socket = h.raw_ready(&alice.token).await;
    engine.inject(Fault::Poison);
    send_json(
        &mut socket,
        serde_json::json!({"v": 1, "type": "send", "id": 7, "conv_id": conv,
            "client_msg_id": "during", "payload": "during"}),
    )
    .await;
    // Never `sent`: a typed refusal, unless the core stopped first; then
    // the socket closes, as it must for every session of a stopped core.
    let mut refusal = None;
    while let Some(frame) = next_frame(&mut socket).await {
        assert_ne!(
            frame["type"], "sent",
            "acknowledged on a failed store: {frame}"
        );
        if frame["type"] == "error" && frame["id"] == 7 {
            refusal = Some(frame);
        }
    }
    if let Some(refusal) = refusal {
        assert_eq!(refusal["code"], "unavailable", "{refusal}");
    }

    let reason = tokio::time::timeout(PATIENCE, h.region().store_failed())
        .await
        .expect("the core stops when its store fails");
    assert!(reason.contains("Poison"), "{reason}");
    assert!(matches!(
        &*h.region().readiness().borrow(),
        Readiness::StoreFailed { .. }
    ));
    drop(sender);
    h.stop().await;

    // A restart recovers the store from what it made durable.
    engine.recover();
    let mut h = Harness::start_with(on(&engine)).await;
    let mut sender = h.client(&alice.token).await;
    sender
        .send(&conv, "during", "during", None)
        .await
        .expect("the refused send, again, after the restart");
    let mut receiver = h.client(&bob.token).await;
    let complete = receiver
        .poll_until(PATIENCE, |c| c.received() >= 2)
        .await
        .expect("poll");
    assert!(complete, "bob got {} of 2", receiver.received());
    let payloads: Vec<&str> = receiver
        .timeline(&conv)
        .iter()
        .map(|m| m.payload.as_str())
        .collect();
    assert_eq!(payloads, ["before", "during"]);
    assert_eq!(receiver.wire_duplicates, 0);
    h.stop().await;
}

/// A write that hangs (a stuck fsync) makes the core unready once it has
/// taken longer than the stall limit, and ready again when it completes;
/// the send waiting on it is then acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_commit_makes_the_core_unready_until_it_completes() {
    let engine = MemoryEngine::new();
    let mut h = Harness::start_with(Options {
        health: HealthConfig {
            check_every: Duration::from_millis(20),
            stall_after: Duration::from_millis(200),
            stop_on_failure: true,
        },
        ..on(&engine)
    })
    .await;
    let (alice, _bob, conv) = h.direct_pair().await;
    let mut sender = h.client(&alice.token).await;
    let mut readiness = h.region().readiness();
    assert!(readiness.borrow_and_update().is_ready());

    engine.inject(Fault::Hang);
    let send = tokio::spawn(async move {
        let id = sender.new_client_msg_id();
        sender.send(&conv, &id, "through a stall", None).await
    });
    tokio::time::timeout(
        PATIENCE,
        readiness.wait_for(|r| matches!(r, Readiness::CommitStalled { .. })),
    )
    .await
    .expect("the stall is noticed")
    .expect("the watchdog runs");

    engine.release();
    tokio::time::timeout(PATIENCE, readiness.wait_for(Readiness::is_ready))
        .await
        .expect("ready again once the write completes")
        .expect("the watchdog runs");
    let sent = tokio::time::timeout(PATIENCE, send)
        .await
        .expect("the send completes")
        .expect("the send task");
    assert!(sent.is_ok(), "acknowledged after the stall: {sent:?}");
    h.stop().await;
}
