//! Authorization: membership, tokens, and whose cursor a device may move.

use futures::StreamExt;
use meridian_sdk::{ErrorCode, SdkError, Session};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Harness, PATIENCE, next_json, send_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_cannot_send_read_or_list() {
    let mut h = Harness::start().await;
    let (alice, bob, conv) = h.direct_pair().await;
    let carol = h.user("carol").await;
    let mut alice_client = h.client(&alice.token).await;
    crate::support::send_many(&mut alice_client, &conv, 1, "private").await;

    let mut carol_client = h.client(&carol.token).await;
    let id = carol_client.new_client_msg_id();
    let refused = carol_client
        .send(&conv, &id, "intrusion", None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::NotFound));
    let as_carol = h.rest.with_token(&carol.token);
    let history = as_carol.history(&conv, None, 10).await.unwrap_err();
    assert!(matches!(
        history,
        SdkError::Api {
            status: 404,
            code: ErrorCode::NotFound,
            ..
        }
    ));
    assert_eq!(
        as_carol.members(&conv).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    // Outside a conversation, it is answered as one that does not exist:
    // same status and code, the message differing only by the id.
    let ghost = "dm-00000000000000000000000000000000";
    let (real, none) = (
        as_carol.conversation(&conv).await.unwrap_err(),
        as_carol.conversation(ghost).await.unwrap_err(),
    );
    let answer = |e: &SdkError, id: &str| match e {
        SdkError::Api {
            status,
            code,
            message,
        } => (*status, *code, message.replace(id, "ID")),
        other => panic!("not an API answer: {other}"),
    };
    assert_eq!(answer(&real, &conv), answer(&none, ghost));
    let messages = h
        .rest
        .with_token(&bob.token)
        .history(&conv, None, 10)
        .await
        .unwrap()
        .messages;
    assert_eq!(messages.len(), 1, "the refused send left nothing behind");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_forged_and_revoked_tokens_are_refused() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let ws = h.rest.ws_url();
    for bad in ["", "garbage", "no-dot-here", "x.y"] {
        let refused = Session::connect(&ws, bad).await.err().expect("refused");
        assert_eq!(
            refused.code(),
            Some(ErrorCode::InvalidToken),
            "token {bad:?}"
        );
    }
    let forged = format!("{}.{}", alice.device_id, "A".repeat(43));
    assert_eq!(
        Session::connect(&ws, &forged)
            .await
            .err()
            .and_then(|e| e.code()),
        Some(ErrorCode::InvalidToken)
    );
    let rest_refusal = h
        .rest
        .with_token(&forged)
        .direct(&alice.user_id)
        .await
        .unwrap_err();
    assert!(matches!(
        rest_refusal,
        SdkError::Api {
            status: 401,
            code: ErrorCode::InvalidToken,
            ..
        }
    ));

    let phone = h.device(&alice.token, "phone").await;
    Session::connect(&ws, &phone.token)
        .await
        .expect("valid before revocation");
    h.rest
        .with_token(&alice.token)
        .revoke_device(&phone.device_id)
        .await
        .unwrap();
    assert_eq!(
        Session::connect(&ws, &phone.token)
            .await
            .err()
            .and_then(|e| e.code()),
        Some(ErrorCode::TokenRevoked)
    );
    let rest_refusal = h
        .rest
        .with_token(&phone.token)
        .add_device("again")
        .await
        .unwrap_err();
    assert_eq!(rest_refusal.code(), Some(ErrorCode::TokenRevoked));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_device_ends_its_live_session() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let phone = h.device(&alice.token, "phone").await;
    let mut socket = h.raw_ready(&phone.token).await;
    h.rest
        .with_token(&alice.token)
        .revoke_device(&phone.device_id)
        .await
        .unwrap();
    let notice = next_json(&mut socket).await;
    assert_eq!(notice["type"], "error");
    assert_eq!(notice["code"], "token_revoked");
    let closed = tokio::time::timeout(PATIENCE, socket.next()).await.unwrap();
    assert!(
        matches!(closed, Some(Ok(Message::Close(Some(ref f)))) if u16::from(f.code) == 1008),
        "{closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_ack_for_another_device() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let other = h.device(&alice.token, "other").await;
    let mut socket = h.raw_ready(&alice.token).await;
    let ack = serde_json::json!({"type": "ack", "cursor": "00", "device_id": other.device_id});
    send_json(&mut socket, ack).await;
    let refusal = next_json(&mut socket).await;
    assert_eq!(refusal["type"], "error");
    assert_eq!(refusal["code"], "forbidden");
    // A cursor never delivered to this device is refused too.
    send_json(
        &mut socket,
        serde_json::json!({"type": "ack", "cursor": "ff".repeat(12)}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["code"], "bad_cursor");
}
