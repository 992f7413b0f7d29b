//! Bad input gets typed errors; the connection and the process survive and
//! nothing else changes.

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Harness, PATIENCE, next_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_typed_errors_and_the_connection_survives() {
    let h = Harness::start().await;
    let (alice, bob, conv) = h.direct_pair().await;
    let mut socket = h.raw_ready(&alice.token).await;

    let send = |id: u64, conv: &str, payload: &str| {
        serde_json::json!({"v": 1, "type": "send", "id": id, "conv_id": conv, "client_msg_id": format!("c{id}"), "payload": payload}).to_string()
    };
    let cases: Vec<(Message, &str)> = vec![
        (Message::Text("{not json".into()), "invalid_json"),
        (
            Message::Text(r#"{"type":"teleport"}"#.into()),
            "unknown_frame",
        ),
        (
            Message::Text(r#"{"v":9,"type":"ping"}"#.into()),
            "unsupported_version",
        ),
        (
            Message::Text(r#"{"type":"send","id":1}"#.into()),
            "bad_request",
        ),
        (
            Message::Text("x".repeat(200 * 1024).into()),
            "frame_too_large",
        ),
        (
            Message::Binary(vec![0xc3, 0x28, 0xff].into()),
            "invalid_utf8",
        ),
        (
            Message::Text(send(2, "no-such-conversation", "hi").into()),
            "not_found",
        ),
        (Message::Text(send(3, &conv, "").into()), "payload_empty"),
        (
            Message::Text(send(4, &conv, &"p".repeat(64 * 1024 + 1)).into()),
            "payload_too_large",
        ),
        (Message::Text(send(5, "bad/id", "hi").into()), "bad_request"),
    ];
    for (frame, code) in cases {
        socket.send(frame).await.unwrap();
        let answer = next_json(&mut socket).await;
        assert_eq!(answer["type"], "error", "for {code}: {answer}");
        assert_eq!(answer["code"], code, "{answer}");
    }
    // The same connection still works, and none of the refusals left a trace.
    socket
        .send(Message::Text(send(6, &conv, "valid").into()))
        .await
        .unwrap();
    let mut sent = None;
    for _ in 0..10 {
        let frame = next_json(&mut socket).await;
        if frame["type"] == "sent" {
            sent = Some(frame);
            break;
        }
    }
    assert_eq!(sent.expect("sent")["id"], 6);
    let history = h
        .rest
        .with_token(&bob.token)
        .history(&conv, None, 50)
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].payload, "valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rest_requests_get_typed_errors() {
    let h = Harness::start().await;
    let http = crate::support::http();
    let base = h.rest.base().to_string();
    let response = http
        .post(format!("{base}/v1/users"))
        .header("content-type", "application/json")
        .body("{\"display_name\":")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_json");
    let response = http
        .post(format!("{base}/v1/users"))
        .header("content-type", "application/json")
        .body(serde_json::json!({"display_name": ""}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["code"],
        "invalid_name"
    );
    let response = http
        .get(format!("{base}/v1/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["code"],
        "unauthenticated"
    );
    let huge = serde_json::json!({"display_name": "x".repeat(300 * 1024)}).to_string();
    let response = http
        .post(format!("{base}/v1/users"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let openapi: serde_json::Value = http
        .get(format!("{base}/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/v1/conversations/{conv_id}/messages"]["get"].is_object());
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_hard_cap_closes_with_1009_and_the_server_survives() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let mut socket = h.raw_ready(&alice.token).await;
    let _ = socket
        .send(Message::Text("y".repeat(2 * 1024 * 1024).into()))
        .await;
    let mut close_code = None;
    while let Ok(Some(frame)) = tokio::time::timeout(PATIENCE, socket.next()).await {
        match frame {
            Ok(Message::Close(Some(frame))) => {
                close_code = Some(u16::from(frame.code));
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    assert_eq!(close_code, Some(1009));
    meridian_sdk::Session::connect(&h.rest.ws_url(), &alice.token)
        .await
        .expect("the server still serves");
}

/// Review L2: a device reusing a `client_msg_id` for another conversation
/// is refused (`bad_request`), not answered "sent" with the first send's
/// result; a retry to the same conversation still returns that result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_key_reused_for_another_conversation_is_refused() {
    let mut h = Harness::start().await;
    let (alice, _bob, conv) = h.direct_pair().await;
    let carol = h.user("carol").await;
    let other = h.direct(&alice.token, &carol.user_id).await;
    let mut client = h.client(&alice.token).await;
    let first = client.send(&conv, "once", "hello", None).await.unwrap();
    let retry = client.send(&conv, "once", "hello", None).await.unwrap();
    assert_eq!(retry.msg_id, first.msg_id, "a retry is the first send");
    let reused = client
        .send(&other, "once", "hello, carol", None)
        .await
        .unwrap_err();
    assert_eq!(
        reused.code(),
        Some(meridian_sdk::ErrorCode::BadRequest),
        "{reused}"
    );
    h.stop().await;
}
