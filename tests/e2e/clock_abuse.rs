//! The HLC cannot be exhausted (review findings C2 and M10): a user's
//! `send` frames whose `last_seen_hlc` is 499 ms ahead with the logical
//! counter full or one below it, the report's crafted frames, are accepted
//! with a stamp clamped to the core's clock, and sends, group changes,
//! receipts and inbound replication of everyone else go on, nothing lost.

use std::sync::Arc;
use std::time::Duration;

use meridian_core::{physical_ms, stamp_at};
use meridian_sdk::frames::{ConversationView, Delivered, ReceiptKind};
use meridian_sdk::{Client, Rest, SentInfo};
use meridian_seams::Clock;
use meridian_seams::clock::ManualClock;

use crate::support::{
    Harness, Options, PATIENCE, RawSocket, Regions, TestLog, next_json, raw_ready_at, send_json,
};

/// The largest logical count of a stamp (22 bits).
const LOGICAL_MAX: u64 = (1 << 22) - 1;

/// The report's crafted stamps for a core whose clock reads `now_ms`:
/// just within the 500 ms offset with the logical counter one below full
/// (the C2 frame) and full, and at the core's own millisecond, full.
fn crafted(now_ms: u64) -> [u64; 3] {
    [
        stamp_at(now_ms + 499) + LOGICAL_MAX - 1,
        stamp_at(now_ms + 499) + LOGICAL_MAX,
        stamp_at(now_ms) + LOGICAL_MAX,
    ]
}

/// Sends one raw `send` frame claiming `last_seen_hlc` and returns its
/// answer (`sent` or `error` with the frame's id), skipping other frames.
async fn send_claiming(
    socket: &mut RawSocket,
    id: u64,
    conv: &str,
    last_seen_hlc: u64,
) -> serde_json::Value {
    send_json(
        socket,
        serde_json::json!({
            "v": 1, "type": "send", "id": id, "conv_id": conv,
            "client_msg_id": format!("crafted-{id}"), "payload": "tick",
            "last_seen_hlc": last_seen_hlc,
        }),
    )
    .await;
    loop {
        let frame = next_json(socket).await;
        if matches!(frame["type"].as_str(), Some("sent" | "error")) && frame["id"] == id {
            return frame;
        }
    }
}

/// Whether `client` has message `msg_id` of `conv`.
fn has(client: &Client, conv: &str, msg_id: &str) -> bool {
    client.timeline(conv).iter().any(|m| m.msg_id == msg_id)
}

/// The read receipts `client` got from `user_id`.
fn receipts_from(client: &Client, user_id: &str) -> usize {
    client
        .other_deliveries()
        .iter()
        .filter(|d| matches!(d, Delivered::Receipt { from_user_id, .. } if from_user_id == user_id))
        .count()
}

/// Sends one message per text through `client`; each must be accepted
/// (`when` names the moment in the failure).
async fn send_all(client: &mut Client, conv: &str, texts: &[&str], when: &str) -> Vec<SentInfo> {
    let mut sent = Vec::new();
    for text in texts {
        let id = client.new_client_msg_id();
        let message = client.send(conv, &id, text, None).await;
        sent.push(message.unwrap_or_else(|e| panic!("a send {when}: {e:?}")));
    }
    sent
}

/// Renames `group` to "new plans" and adds `member`, as the admin behind
/// `admin`; both must go through.
async fn rename_and_add(admin: &Rest, group: &str, member: &str, when: &str) -> ConversationView {
    admin
        .rename(group, "new plans")
        .await
        .unwrap_or_else(|e| panic!("a rename {when}: {e:?}"));
    admin
        .add_members(group, &[member.to_string()])
        .await
        .unwrap_or_else(|e| panic!("adding a member {when}: {e:?}"))
}

/// Nothing lost: `client` (the accomplice) receives all `count` accepted
/// crafted messages of `conv`, once.
async fn assert_all_arrive(client: &mut Client, conv: &str, count: usize) {
    let complete = client
        .poll_until(PATIENCE, |c| c.received() >= count)
        .await
        .expect("poll");
    assert!(
        complete,
        "{} of {count} crafted messages arrived",
        client.received()
    );
    assert_eq!(client.timeline(conv).len(), count);
    assert_eq!(client.wire_duplicates, 0);
}

/// The stamp of a `sent` answer: a decimal string, as `docs/protocol.md`
/// ("64-bit integers") says, so a JavaScript client reads it exactly.
fn hlc_of(answer: &serde_json::Value) -> u64 {
    let hlc = answer["hlc"].as_str().expect("hlc is a string");
    hlc.parse().expect("hlc is decimal")
}

/// A crafted send's answer: accepted, stamped no later than the core's
/// clock read after it (`now_ms`).
fn assert_clamped(answer: &serde_json::Value, now_ms: u64) {
    assert_eq!(
        answer["type"], "sent",
        "a crafted stamp is clamped, not refused: {answer}"
    );
    let hlc = hlc_of(answer);
    assert!(
        physical_ms(hlc) <= now_ms,
        "the stamp {hlc} runs ahead of the core's clock ({now_ms})"
    );
}

/// One region whose clock stands still, so the old outage (until wall time
/// passed the crafted stamp) would never end: after the crafted frames,
/// other users' sends, replies, receipts, a rename and an added member all
/// go through, and a stamp beyond the offset is still `clock_skew`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_stamps_stop_no_send_receipt_or_group_change() {
    let now = meridian_seams::SystemClock::new().wall_millis();
    let clock = Arc::new(ManualClock::new(now));
    let mut h = Harness::start_with(Options {
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    let mallory = h.user("mallory").await;
    let accomplice = h.user("accomplice").await;
    let bait = h.direct(&mallory.token, &accomplice.user_id).await;
    let (alice, bob, dm) = h.direct_pair().await;
    let carol = h.user("carol").await;
    let dave = h.user("dave").await;
    let group = h
        .rest
        .with_token(&alice.token)
        .create_group("plans", std::slice::from_ref(&carol.user_id))
        .await
        .expect("create group")
        .conv_id;

    let mut raw = raw_ready_at(&h.rest, &mallory.token).await;
    let mut answers = Vec::new();
    for (id, stamp) in (1..).zip(crafted(now).into_iter().cycle().take(6)) {
        answers.push(send_claiming(&mut raw, id, &bait, stamp).await);
    }

    // Everyone else goes on, right after.
    let mut alice_client = h.client(&alice.token).await;
    let mut bob_client = h.client(&bob.token).await;
    let sent = send_all(
        &mut alice_client,
        &dm,
        &["one", "two"],
        "after the crafted frames",
    )
    .await;
    assert!(
        bob_client
            .poll_until(PATIENCE, |c| c.received() >= 2)
            .await
            .expect("poll")
    );
    let id = bob_client.new_client_msg_id();
    let reply = bob_client
        .send(&dm, &id, "re: two", Some(&sent[1].msg_id))
        .await
        .expect("bob's reply after the crafted frames");
    assert!(reply.hlc > sent[1].hlc, "the reply orders after its parent");
    let ids: Vec<String> = sent.iter().map(|s| s.msg_id.clone()).collect();
    let session = bob_client.session().expect("session");
    session
        .receipt(&dm, &ids, ReceiptKind::Read)
        .await
        .expect("receipt");
    assert!(
        alice_client
            .poll_until(PATIENCE, |c| {
                has(c, &dm, &reply.msg_id) && receipts_from(c, &bob.user_id) >= 2
            })
            .await
            .expect("poll"),
        "alice got bob's reply and both receipts"
    );
    let as_alice = h.rest.with_token(&alice.token);
    let view = rename_and_add(&as_alice, &group, &dave.user_id, "after the crafted frames").await;
    assert_eq!((view.name.as_str(), view.members.len()), ("new plans", 3));

    // The crafted sends themselves: accepted, stamped at the core's
    // standing millisecond, the logical counter far from full.
    for answer in &answers {
        assert_clamped(answer, now);
        assert!(hlc_of(answer) & LOGICAL_MAX < 1_000, "{answer}");
    }
    // A stamp beyond the offset is a client bug: still refused.
    let beyond = send_claiming(&mut raw, 99, &bait, stamp_at(now + 60_000)).await;
    assert_eq!(
        (beyond["type"].as_str(), beyond["code"].as_str()),
        (Some("error"), Some("clock_skew")),
        "{beyond}"
    );

    // Nothing lost: the accomplice has every accepted crafted message once,
    // bob has alice's two.
    let mut accomplice_client = h.client(&accomplice.token).await;
    assert_all_arrive(&mut accomplice_client, &bait, answers.len()).await;
    assert!(
        bob_client
            .poll_until(PATIENCE, |c| has(c, &dm, &reply.msg_id))
            .await
            .expect("poll")
    );
    assert_eq!(bob_client.timeline(&dm).len(), 3);
    assert_eq!(bob_client.wire_duplicates, 0);
    h.stop().await;
}

/// Two regions with real clocks; mallory (us-east) keeps sending the
/// crafted frames four times as often as the report needs, and meanwhile
/// us-east sends, takes eu-west's messages in (inbound replication), sends
/// receipts back and changes a group with a member in eu-west.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_stamps_stop_no_replication_while_they_keep_coming() {
    let regions = Regions::start(&["us-east", "eu-west"], TestLog::Embedded, |_, _| {}).await;
    let mallory = regions.user("us-east", "mallory").await;
    let accomplice = regions.user("us-east", "accomplice").await;
    let alice = regions.user("us-east", "alice").await;
    let bob = regions.user("eu-west", "bob").await;
    let carol = regions.user("us-east", "carol").await;
    let us_east = regions.rest("us-east");
    let bait = us_east
        .with_token(&mallory.token)
        .direct(&accomplice.user_id)
        .await
        .expect("direct")
        .conv_id;
    let dm = us_east
        .with_token(&alice.token)
        .direct(&bob.user_id)
        .await
        .expect("direct")
        .conv_id;
    let group = us_east
        .with_token(&alice.token)
        .create_group("plans", std::slice::from_ref(&bob.user_id))
        .await
        .expect("create group")
        .conv_id;
    let mut alice_client = regions.client("us-east", &alice.token, 1).await;
    let mut bob_client = regions.client("eu-west", &bob.token, 2).await;

    // The attack: the crafted frames every 250 ms, until told to stop.
    let clock = regions.clocks["us-east"].clone();
    let mut raw = raw_ready_at(&us_east, &mallory.token).await;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let (started, attack_on) = tokio::sync::oneshot::channel::<()>();
    let attack = {
        let bait = bait.clone();
        tokio::spawn(async move {
            let (mut answers, mut started, mut id) = (Vec::new(), Some(started), 0);
            loop {
                for stamp in &crafted(clock.wall_millis())[..2] {
                    id += 1;
                    let answer = send_claiming(&mut raw, id, &bait, *stamp).await;
                    answers.push((answer, clock.wall_millis()));
                }
                if answers.len() >= 4
                    && let Some(started) = started.take()
                {
                    let _ = started.send(());
                }
                tokio::select! {
                    _ = &mut stopped => return answers,
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        })
    };
    attack_on
        .await
        .expect("the attack is on (two rounds answered)");

    let sent = send_all(&mut alice_client, &dm, &["one", "two"], "during the attack").await;
    let from_bob: Vec<String> = send_all(&mut bob_client, &dm, &["three", "four"], "in eu-west")
        .await
        .into_iter()
        .map(|s| s.msg_id)
        .collect();
    assert!(
        alice_client
            .poll_until(PATIENCE, |c| from_bob.iter().all(|id| has(c, &dm, id)))
            .await
            .expect("poll"),
        "eu-west's messages reach us-east during the attack (inbound replication)"
    );
    alice_client
        .session()
        .expect("session")
        .receipt(&dm, &from_bob, ReceiptKind::Read)
        .await
        .expect("receipt");
    let as_alice = us_east.with_token(&alice.token);
    rename_and_add(&as_alice, &group, &carol.user_id, "during the attack").await;
    assert!(
        bob_client
            .poll_until(PATIENCE, |c| {
                sent.iter().all(|s| has(c, &dm, &s.msg_id)) && receipts_from(c, &alice.user_id) >= 2
            })
            .await
            .expect("poll"),
        "eu-west got alice's messages and receipts: {} messages, {} receipts",
        bob_client.timeline(&dm).len(),
        receipts_from(&bob_client, &alice.user_id)
    );
    let as_bob = regions.rest("eu-west").with_token(&bob.token);
    let mut view = as_bob.conversation(&group).await.expect("group at eu-west");
    for _ in 0..100 {
        if view.version >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        view = as_bob.conversation(&group).await.expect("group at eu-west");
    }
    assert_eq!(
        (view.name.as_str(), view.members.len()),
        ("new plans", 3),
        "the group change reached eu-west"
    );

    let _ = stop.send(());
    let answers = attack.await.expect("attack task");
    assert!(answers.len() >= 4, "{} crafted frames", answers.len());
    for (answer, now) in &answers {
        assert_clamped(answer, *now);
    }
    // Nothing lost: every accepted crafted message reached the accomplice
    // once, and us-east has all four messages of the direct conversation.
    let mut accomplice_client = regions.client("us-east", &accomplice.token, 3).await;
    assert_all_arrive(&mut accomplice_client, &bait, answers.len()).await;
    assert_eq!(alice_client.timeline(&dm).len(), 4);
    assert_eq!(alice_client.wire_duplicates + bob_client.wire_duplicates, 0);
    regions.stop().await;
}
