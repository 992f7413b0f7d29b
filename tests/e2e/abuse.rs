//! One user trying to exhaust a region, each path refused with a typed
//! error (and a wait where one applies) while nothing is lost and others
//! are served: devices, sessions per device, fan-out, repeated receipts,
//! big deliveries, adds that would look up users elsewhere, bad tokens,
//! connection floods.

use std::collections::BTreeSet;
use std::time::Duration;

use meridian_gateway::GatewayConfig;
use meridian_sdk::ErrorCode;
use meridian_sdk::frames::{Delivered, ReceiptKind};

use crate::support::{Harness, Options, PATIENCE, next_json, send_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_holds_sixteen_active_devices() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let rest = h.rest.with_token(&alice.token);
    let mut devices = Vec::new();
    // The first device came with the account.
    for i in 1..16 {
        devices.push(rest.add_device(&format!("device {i}")).await.unwrap());
    }
    let refused = rest.add_device("one too many").await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::TooManyDevices), "{refused}");
    // Revoking one makes room.
    rest.revoke_device(&devices[0].device_id).await.unwrap();
    rest.add_device("in its place").await.unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_session_of_a_device_replaces_the_oldest() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(h.raw_ready(&alice.token).await);
    }
    let mut fifth = h.raw_ready(&alice.token).await;
    // The oldest is told why, and closed.
    let told = next_json(&mut sockets[0]).await;
    assert_eq!(told["type"], "error", "{told}");
    assert_eq!(told["code"], "session_replaced", "{told}");
    // The newest works.
    send_json(
        &mut fifth,
        serde_json::json!({"v": 1, "type": "ping", "nonce": 7}),
    )
    .await;
    assert_eq!(next_json(&mut fifth).await["type"], "pong");
    h.stop().await;
}

/// A core whose users may reach six inboxes at once, a hundredth per
/// second after that.
fn small_fanout(config: &mut meridian_core::CoreConfig) {
    config.fanout_burst = 6.0;
    config.fanout_per_second = 0.01;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_is_limited_per_user_across_devices_with_a_wait() {
    let mut h = Harness::start_with(Options {
        core: Some(small_fanout),
        ..Options::default()
    })
    .await;
    let (alice, bob, conv) = h.direct_pair().await;
    let tablet = h.device(&alice.token, "tablet").await;
    let mut phone = h.client(&alice.token).await;
    let mut second = h.client(&tablet.token).await;
    // A direct message reaches two inboxes: three sends fit, from any device.
    crate::support::send_many(&mut phone, &conv, 2, "phone").await;
    crate::support::send_many(&mut second, &conv, 1, "tablet").await;
    let session = phone.session().unwrap();
    let refused = session
        .send(&conv, "over", "over the fan-out", None, 0)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::RateLimited), "{refused}");
    // Bob is not limited by Alice's spending, and got all three.
    let mut reader = h.client(&bob.token).await;
    assert!(
        reader
            .poll_until(PATIENCE, |c| c.received() >= 3)
            .await
            .unwrap()
    );
    crate::support::send_many(&mut reader, &conv, 1, "bob").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_repeated_reaches_the_sender_once() {
    let mut h = Harness::start().await;
    let (alice, bob, conv) = h.direct_pair().await;
    let mut sender = h.client(&alice.token).await;
    let ids = crate::support::send_many(&mut sender, &conv, 2, "read me").await;
    let mut reader = h.client(&bob.token).await;
    assert!(
        reader
            .poll_until(PATIENCE, |c| c.received() >= 2)
            .await
            .unwrap()
    );
    let session = reader.session().unwrap();
    let repeated = vec![ids[0].clone(), ids[0].clone(), ids[0].clone()];
    for _ in 0..3 {
        session
            .receipt(&conv, &repeated, ReceiptKind::Read)
            .await
            .unwrap();
    }
    session
        .receipt(&conv, &ids[1..], ReceiptKind::Read)
        .await
        .unwrap();
    let receipts = |c: &meridian_sdk::Client| -> Vec<String> {
        c.other_deliveries()
            .iter()
            .filter_map(|d| match d {
                Delivered::Receipt { msg_id, .. } => Some(msg_id.clone()),
                _ => None,
            })
            .collect()
    };
    // Receipts are applied concurrently: both arrive, in either order.
    let both = |c: &meridian_sdk::Client| ids.iter().all(|id| receipts(c).contains(id));
    assert!(sender.poll_until(PATIENCE, both).await.unwrap());
    // A repeat would arrive right after: keep reading a little before counting.
    let _ = sender.poll(Duration::from_millis(500)).await;
    let mut seen = receipts(&sender);
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected, "each receipt exactly once");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_are_delivered_in_frames_of_bounded_size() {
    let mut h = Harness::start().await;
    let (alice, bob, conv) = h.direct_pair().await;
    let mut sender = h.client(&alice.token).await;
    let big = "x".repeat(60 * 1024);
    let mut sent = BTreeSet::new();
    for i in 0..12 {
        let id = sender.new_client_msg_id();
        let info = sender
            .send(&conv, &id, &format!("{i}{big}"), None)
            .await
            .unwrap();
        sent.insert(info.msg_id);
    }
    // Bob connects to twelve waiting 60 KiB messages: one batch read, but
    // frames of at most 256 KiB of protobuf (four of these, five at most).
    let mut socket = h.raw_ready(&bob.token).await;
    let mut received = BTreeSet::new();
    while received.len() < sent.len() {
        let frame = tokio::time::timeout(PATIENCE, next_json(&mut socket))
            .await
            .expect("deliveries in time");
        if frame["type"] != "deliver" {
            continue;
        }
        let items = frame["items"].as_array().expect("items");
        assert!(
            items.len() <= 5,
            "a deliver frame of {} messages",
            items.len()
        );
        for item in items {
            received.insert(
                item["message"]["msg_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        let cursor = frame["through"].as_str().expect("through").to_string();
        send_json(
            &mut socket,
            serde_json::json!({"v": 1, "type": "ack", "cursor": cursor}),
        )
        .await;
    }
    assert_eq!(received, sent);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_members_checks_the_admin_before_asking_other_regions() {
    let h = Harness::start().await;
    let (owner, member) = (h.user("owner").await, h.user("member").await);
    let group = h
        .rest
        .with_token(&owner.token)
        .create_group("g", std::slice::from_ref(&member.user_id))
        .await
        .unwrap();
    // Ids of a region this deployment has never heard of: looking them up
    // first would answer `not_found`; the member is no admin.
    let strangers: Vec<String> = (0..50)
        .map(|i| format!("0193b0c2-7d1e-7a00-8000-{i:012}@elsewhere"))
        .collect();
    let refused = h
        .rest
        .with_token(&member.token)
        .add_members(&group.conv_id, &strangers)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_from_one_address_wait_before_reaching_a_core() {
    let mut gateway = GatewayConfig::new("us-east");
    gateway.registrations_per_minute = 100_000.0;
    gateway.auth_failures_per_minute = 3.0;
    let h = Harness::start_with(Options {
        gateway: Some(gateway),
        ..Options::default()
    })
    .await;
    let alice = h.user("alice").await;
    let forged = format!("{}x", alice.token);
    for _ in 0..3 {
        let refused = h
            .rest
            .with_token(&forged)
            .add_device("x")
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::InvalidToken), "{refused}");
    }
    // The fourth attempt waits, as does a fresh guess from the address.
    let response = crate::support::http()
        .get(format!("{}/v1/devices", h.rest.base()))
        .bearer_auth("nope@us-east.guess")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let wait: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header");
    assert!((1..=20).contains(&wait), "retry after {wait} s");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert!(
        body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{body}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_gateway_answers_unavailable_and_keeps_its_connections() {
    let mut gateway = GatewayConfig::new("us-east");
    gateway.registrations_per_minute = 100_000.0;
    gateway.max_connections = 2;
    let h = Harness::start_with(Options {
        gateway: Some(gateway),
        ..Options::default()
    })
    .await;
    let alice = h.user("alice").await;
    let mut first = h.raw_ready(&alice.token).await;
    let _second = h.raw_ready(&alice.token).await;
    let refused = tokio_tungstenite::connect_async(h.rest.ws_url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!(
            "a third connection was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    // The two open ones still work.
    send_json(
        &mut first,
        serde_json::json!({"v": 1, "type": "ping", "nonce": 7}),
    )
    .await;
    assert_eq!(next_json(&mut first).await["type"], "pong");
    drop(first);
    // Closing one frees its slot.
    let reopened = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if tokio_tungstenite::connect_async(h.rest.ws_url())
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "the slot was never given back");
    h.stop().await;
}
