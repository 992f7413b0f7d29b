//! Receipts travel back to the sender's devices; history pages both ways.

use meridian_sdk::frames::{Delivered, ReceiptKind};

use crate::support::{Harness, PATIENCE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_for_several_messages_reach_every_sender_device() {
    let mut h = Harness::start().await;
    let (alice, bob, conv) = h.direct_pair().await;
    let alice_laptop = h.device(&alice.token, "laptop").await;
    let mut phone = h.client(&alice.token).await;
    let mut laptop = h.client(&alice_laptop.token).await;
    let ids = crate::support::send_many(&mut phone, &conv, 3, "read me").await;
    let mut reader = h.client(&bob.token).await;
    assert!(
        reader
            .poll_until(PATIENCE, |c| c.received() >= 3)
            .await
            .unwrap()
    );
    // One receipt frame naming all three: each must arrive as its own entry.
    reader
        .session()
        .unwrap()
        .receipt(&conv, &ids, ReceiptKind::Read)
        .await
        .unwrap();
    for device in [&mut phone, &mut laptop] {
        let receipts_of = |c: &meridian_sdk::Client| {
            c.other_deliveries()
                .iter()
                .filter_map(|d| match d {
                    Delivered::Receipt {
                        msg_id,
                        receipt: ReceiptKind::Read,
                        from_user_id,
                        ..
                    } if *from_user_id == bob.user_id => Some(msg_id.clone()),
                    _ => None,
                })
                .collect::<std::collections::BTreeSet<_>>()
        };
        let complete = device
            .poll_until(PATIENCE, |c| receipts_of(c).len() >= 3)
            .await
            .unwrap();
        assert!(complete, "receipts seen: {:?}", receipts_of(device));
        assert_eq!(receipts_of(device), ids.iter().cloned().collect());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_backward_forward_and_between_for_members() {
    let mut h = Harness::start().await;
    let (alice, bob, conv) = h.direct_pair().await;
    let mut client = h.client(&alice.token).await;
    let mut sent = Vec::new();
    for i in 0..7 {
        let id = client.new_client_msg_id();
        let reply_to = sent.last().cloned();
        sent.push(
            client
                .send(&conv, &id, &format!("h{i}"), reply_to.as_deref())
                .await
                .unwrap()
                .msg_id,
        );
    }
    let as_bob = h.rest.with_token(&bob.token);
    let newest = as_bob.history(&conv, None, 3).await.unwrap().messages;
    let newest_ids: Vec<_> = newest.iter().map(|m| m.msg_id.clone()).collect();
    assert_eq!(
        newest_ids,
        vec![sent[6].clone(), sent[5].clone(), sent[4].clone()]
    );
    let older = as_bob
        .history(&conv, Some(&sent[4]), 10)
        .await
        .unwrap()
        .messages;
    let older_ids: Vec<_> = older.iter().map(|m| m.msg_id.clone()).collect();
    assert_eq!(
        older_ids,
        vec![
            sent[3].clone(),
            sent[2].clone(),
            sent[1].clone(),
            sent[0].clone()
        ]
    );
    // Forward from a message, and between two, oldest first.
    let ids_of = |page: meridian_wire::frames::HistoryView| -> Vec<String> {
        page.messages.into_iter().map(|m| m.msg_id).collect()
    };
    let newer = as_bob
        .history_after(&conv, &sent[1], None, 10)
        .await
        .unwrap();
    assert_eq!(ids_of(newer), sent[2..].to_vec());
    let between = as_bob
        .history_after(&conv, &sent[1], Some(&sent[5]), 10)
        .await
        .unwrap();
    assert_eq!(ids_of(between), sent[2..5].to_vec());
    let capped = as_bob
        .history_after(&conv, &sent[1], Some(&sent[5]), 2)
        .await
        .unwrap();
    assert_eq!(ids_of(capped), sent[2..4].to_vec());
    let crossed = as_bob
        .history_after(&conv, &sent[5], Some(&sent[1]), 10)
        .await
        .unwrap();
    assert!(ids_of(crossed).is_empty());
    // A page size outside 1–200 is refused, not clamped.
    for limit in [0, 201] {
        let refused = as_bob.history(&conv, None, limit).await.unwrap_err();
        assert_eq!(refused.code(), Some(meridian_sdk::ErrorCode::BadRequest));
    }
    // Every reply orders after its parent.
    let all = as_bob.history(&conv, None, 50).await.unwrap().messages;
    for message in &all {
        if let Some(parent) = &message.reply_to {
            let parent = all
                .iter()
                .find(|m| &m.msg_id == parent)
                .expect("parent in history");
            assert!(message.hlc > parent.hlc);
        }
    }
    let unknown = as_bob
        .history(&conv, Some("no-such-message"), 10)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some(meridian_sdk::ErrorCode::NotFound));
}
