//! Three regions in one process: home regions, cross-region replication,
//! one order for every member, cut links and skewed clocks.

use std::collections::BTreeSet;
use std::time::Duration;

use meridian_sdk::Client;
use meridian_sdk::frames::{Delivered, ReceiptKind};

use crate::support::{
    PATIENCE, Regions, TestLog, assert_replies_follow_parents, order, wait_for_conversation,
};

const THREE: [&str; 3] = ["us-east", "eu-west", "ap-southeast"];

/// Runs a scenario once with each log: the embedded log and Kafka (a tansu
/// broker per region).
macro_rules! with_each_log {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded_log() {
                super::$scenario(super::TestLog::Embedded).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kafka() {
                super::$scenario(super::TestLog::Kafka).await;
            }
        }
    };
}

with_each_log!(a_message_crosses_regions_exactly_once_with_the_same_hlc_at_both_ends);
with_each_log!(a_group_across_three_regions_converges_to_one_order);
with_each_log!(a_cut_link_heals_and_everything_arrives_once_in_one_order);
with_each_log!(a_clock_ahead_keeps_order_causal_and_a_stamp_beyond_the_offset_is_refused);
with_each_log!(concurrent_membership_edits_from_three_regions_converge_everywhere);

async fn a_message_crosses_regions_exactly_once_with_the_same_hlc_at_both_ends(log: TestLog) {
    let regions = Regions::start(&THREE, log, |_, _| {}).await;
    let alice = regions.user("us-east", "alice").await;
    let bob = regions.user("eu-west", "bob").await;
    assert!(alice.user_id.ends_with("@us-east"));
    assert!(bob.user_id.ends_with("@eu-west"));
    // Any gateway serves any user: bob goes through ap-southeast's gateway.
    let conv = regions
        .rest("ap-southeast")
        .with_token(&bob.token)
        .direct(&alice.user_id)
        .await
        .expect("direct across regions")
        .conv_id;
    let mut alice_client = regions.client("us-east", &alice.token, 1).await;
    let mut bob_client = regions.client("ap-southeast", &bob.token, 2).await;

    let mut sent = Vec::new();
    for i in 0..5 {
        let id = alice_client.new_client_msg_id();
        sent.push(
            alice_client
                .send(&conv, &id, &format!("hello {i}"), None)
                .await
                .expect("send"),
        );
    }
    let complete = bob_client
        .poll_until(PATIENCE, |c| c.received() >= 5)
        .await
        .expect("poll");
    assert!(complete, "bob got {} of 5", bob_client.received());
    let timeline = bob_client.timeline(&conv);
    assert_eq!(timeline.len(), 5);
    for (message, sent) in timeline.iter().zip(&sent) {
        assert_eq!(message.msg_id, sent.msg_id);
        assert_eq!(message.hlc, sent.hlc, "one HLC at both ends");
        assert_eq!(message.origin_region, "us-east");
    }
    assert_eq!(bob_client.wire_duplicates, 0);

    // A reply from eu-west orders after what it answers, and a read receipt
    // travels back to us-east.
    let parent = sent.last().expect("sent").msg_id.clone();
    let id = bob_client.new_client_msg_id();
    let reply = bob_client
        .send(&conv, &id, "hi alice", Some(&parent))
        .await
        .expect("reply");
    assert!(reply.hlc > sent.last().expect("sent").hlc);
    bob_client
        .session()
        .expect("session")
        .receipt(&conv, std::slice::from_ref(&parent), ReceiptKind::Read)
        .await
        .expect("receipt");
    let got_both = alice_client
        .poll_until(PATIENCE, |c| {
            c.timeline(&conv).iter().any(|m| m.msg_id == reply.msg_id)
                && c.other_deliveries().iter().any(|d| {
                    matches!(d, Delivered::Receipt { msg_id, receipt: ReceiptKind::Read, .. } if *msg_id == parent)
                })
        })
        .await
        .expect("poll");
    assert!(got_both, "alice got the reply and the read receipt");
    assert!(
        bob_client
            .poll_until(PATIENCE, |c| c.timeline(&conv).len() >= 6)
            .await
            .expect("poll")
    );
    assert_eq!(order(&alice_client, &conv), order(&bob_client, &conv));
    regions.stop().await;
}

/// One sender per region, each sending `count` messages to `conv` as fast as
/// it can; every tenth answers the newest message from another region.
async fn send_burst(mut client: Client, conv: String, count: usize, tag: String) -> Client {
    for i in 0..count {
        if i % 10 == 9 {
            let _ = client.poll(Duration::from_millis(1)).await;
        }
        let parent = client
            .timeline(&conv)
            .iter()
            .rev()
            .find(|m| !m.payload.starts_with(&tag))
            .map(|m| m.msg_id.clone())
            .filter(|_| i % 10 == 9);
        let id = client.new_client_msg_id();
        client
            .send(&conv, &id, &format!("{tag} {i}"), parent.as_deref())
            .await
            .expect("send");
    }
    client
}

async fn a_group_across_three_regions_converges_to_one_order(log: TestLog) {
    let regions = Regions::start(&THREE, log, |_, _| {}).await;
    let mut users = Vec::new();
    for region in THREE {
        users.push((
            region,
            regions.user(region, &format!("user-{region}")).await,
        ));
    }
    let members: Vec<String> = users[1..].iter().map(|(_, u)| u.user_id.clone()).collect();
    let conv = regions
        .rest("us-east")
        .with_token(&users[0].1.token)
        .create_group("three regions", &members)
        .await
        .expect("group")
        .conv_id;
    let mut clients = Vec::new();
    for (i, (region, user)) in users.iter().enumerate() {
        let mut client = regions.client(region, &user.token, 10 + i as u64).await;
        wait_for_conversation(&mut client, &conv).await;
        clients.push(client);
    }
    let mut senders = Vec::new();
    for (client, (region, _)) in clients.into_iter().zip(&users) {
        senders.push(tokio::spawn(send_burst(
            client,
            conv.clone(),
            200,
            format!("from-{region}"),
        )));
    }
    let mut clients = Vec::new();
    for sender in senders {
        clients.push(sender.await.expect("sender"));
    }
    for client in &mut clients {
        let complete = client
            .poll_until(PATIENCE * 3, |c| c.timeline(&conv).len() >= 600)
            .await
            .expect("poll");
        assert!(
            complete,
            "a member has {} of 600",
            client.timeline(&conv).len()
        );
    }
    let reference = order(&clients[0], &conv);
    assert_eq!(reference.len(), 600);
    assert_eq!(reference.iter().collect::<BTreeSet<_>>().len(), 600);
    let replies = clients[0]
        .timeline(&conv)
        .iter()
        .filter(|m| m.reply_to.is_some())
        .count();
    assert!(replies > 0, "the burst included replies");
    for client in &clients {
        assert_eq!(order(client, &conv), reference, "one order everywhere");
        assert_eq!(client.timeline(&conv).len(), 600, "nothing twice");
        assert_eq!(
            client.wire_duplicates, 0,
            "nothing delivered twice on the wire"
        );
        assert_replies_follow_parents(client, &conv);
    }
    regions.stop().await;
}

async fn a_cut_link_heals_and_everything_arrives_once_in_one_order(log: TestLog) {
    let regions = Regions::start(&THREE, log, |_, _| {}).await;
    let alice = regions.user("us-east", "alice").await;
    let bob = regions.user("eu-west", "bob").await;
    let conv = regions
        .rest("us-east")
        .with_token(&alice.token)
        .direct(&bob.user_id)
        .await
        .expect("direct")
        .conv_id;
    let mut alice_client = regions.client("us-east", &alice.token, 1).await;
    let mut bob_client = regions.client("eu-west", &bob.token, 2).await;
    let mut sent = BTreeSet::new();
    let send = async |client: &mut Client, text: String| {
        let id = client.new_client_msg_id();
        client
            .send(&conv, &id, &text, None)
            .await
            .expect("send")
            .msg_id
    };
    for i in 0..30 {
        sent.insert(send(&mut alice_client, format!("before {i}")).await);
    }
    // eu-west pulls us-east's log through this path: cut it mid-stream.
    let link = regions.proxy("eu-west", "us-east");
    link.cut();
    for i in 0..40 {
        sent.insert(send(&mut alice_client, format!("during {i}")).await);
        if i % 10 == 0 {
            sent.insert(send(&mut bob_client, format!("bob during {i}")).await);
        }
    }
    // The cut closed the link's stream: the link knows it is down.
    let mut status = regions.handles["eu-west"].links["us-east"].clone();
    tokio::time::timeout(PATIENCE, status.wait_for(|s| !s.connected))
        .await
        .expect("the link noticed the cut")
        .expect("link status");
    link.heal();
    for i in 0..30 {
        sent.insert(send(&mut alice_client, format!("after {i}")).await);
    }
    for client in [&mut alice_client, &mut bob_client] {
        let complete = client
            .poll_until(PATIENCE * 2, |c| c.timeline(&conv).len() >= sent.len())
            .await
            .expect("poll");
        assert!(
            complete,
            "a device has {} of {}",
            client.timeline(&conv).len(),
            sent.len()
        );
        assert_eq!(client.timeline(&conv).len(), sent.len(), "nothing twice");
        assert_eq!(
            client.wire_duplicates, 0,
            "nothing delivered twice on the wire"
        );
        assert_eq!(
            order(client, &conv).into_iter().collect::<BTreeSet<_>>(),
            sent
        );
    }
    assert_eq!(order(&alice_client, &conv), order(&bob_client, &conv));
    regions.stop().await;
}

/// The Prometheus text of this test process, with a recorder installed once.
fn metrics_text() -> String {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("recorder")
        })
        .render()
}

fn refused_from(text: &str, source: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.starts_with("meridian_hlc_refused_total")
                && l.contains(&format!("source=\"{source}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

async fn a_clock_ahead_keeps_order_causal_and_a_stamp_beyond_the_offset_is_refused(log: TestLog) {
    let _ = metrics_text();
    let regions = Regions::start(&["us-east", "ap-southeast"], log, |_, options| {
        options.core.max_clock_offset = Duration::from_secs(3);
    })
    .await;
    regions.clocks["ap-southeast"].set_skew_millis(2_000);
    let ahead = regions.user("ap-southeast", "ahead").await;
    let behind = regions.user("us-east", "behind").await;
    let conv = regions
        .rest("ap-southeast")
        .with_token(&ahead.token)
        .direct(&behind.user_id)
        .await
        .expect("direct")
        .conv_id;
    let mut ahead_client = regions.client("ap-southeast", &ahead.token, 1).await;
    let mut behind_client = regions.client("us-east", &behind.token, 2).await;

    // A message stamped 2 s in us-east's future is within the offset: it is
    // applied, and us-east's clock moves past it, so the reply orders after.
    let id = ahead_client.new_client_msg_id();
    let first = ahead_client
        .send(&conv, &id, "from the future", None)
        .await
        .expect("send");
    assert!(
        behind_client
            .poll_until(PATIENCE, |c| c.received() >= 1)
            .await
            .expect("poll")
    );
    let id = behind_client.new_client_msg_id();
    let reply = behind_client
        .send(&conv, &id, "reply", Some(&first.msg_id))
        .await
        .expect("reply");
    assert!(reply.hlc > first.hlc, "the reply orders after its parent");
    let id = behind_client.new_client_msg_id();
    let unrelated = behind_client
        .send(&conv, &id, "later", None)
        .await
        .expect("send");
    assert!(unrelated.hlc > first.hlc, "us-east merged the remote stamp");

    // The clock jumps to 6 s ahead: beyond the 3 s offset. us-east refuses
    // the change, counts it, and does not apply it...
    let refused_before = refused_from(&metrics_text(), "ap-southeast");
    regions.clocks["ap-southeast"].set_skew_millis(6_000);
    let id = ahead_client.new_client_msg_id();
    let far = ahead_client
        .send(&conv, &id, "too far ahead", None)
        .await
        .expect("send");
    let link = regions.handles["us-east"].links["ap-southeast"].clone();
    let mut watched = link.clone();
    tokio::time::timeout(PATIENCE, watched.wait_for(|s| s.refused >= 1))
        .await
        .expect("refused in time")
        .expect("link status");
    assert!(
        refused_from(&metrics_text(), "ap-southeast") > refused_before,
        "counted in the metric"
    );
    // Not in us-east's store: the history there does not hold it.
    let history = regions
        .rest("us-east")
        .with_token(&behind.token)
        .history(&conv, None, 50)
        .await
        .expect("history");
    assert!(
        !history.messages.iter().any(|m| m.msg_id == far.msg_id),
        "never silently applied"
    );
    assert!(
        history.messages.iter().any(|m| m.msg_id == first.msg_id),
        "the history read works (it holds what was applied)"
    );
    // ...until the clocks agree again: then it arrives, exactly once.
    regions.clocks["ap-southeast"].set_skew_millis(0);
    // The client that saw the skewed stamps sends again at once through
    // its corrected region: refused with `clock_skew` until real time
    // reaches what it saw (3 s here), which the SDK waits out (found by the
    // chaos suite's clock-skew scenario, where such sends were dropped).
    let id = ahead_client.new_client_msg_id();
    let after = ahead_client
        .send(&conv, &id, "after the correction", None)
        .await
        .expect("the SDK waits out clock_skew");
    assert!(after.hlc > far.hlc, "ordered after what the client saw");
    let arrived = behind_client
        .poll_until(PATIENCE, |c| {
            c.timeline(&conv).iter().any(|m| m.msg_id == far.msg_id)
        })
        .await
        .expect("poll");
    assert!(
        arrived,
        "the refused message is applied once the clocks agree"
    );
    assert_eq!(behind_client.wire_duplicates, 0);

    // A client's last-seen stamp a minute ahead is refused with a typed error.
    let session = behind_client.session().expect("session");
    let minute_ahead = meridian_core::stamp_at(meridian_core::physical_ms(far.hlc) + 60_000);
    let error = session
        .send(&conv, "probe-1", "probe", None, minute_ahead)
        .await
        .expect_err("refused");
    assert_eq!(error.code(), Some(meridian_sdk::ErrorCode::ClockSkew));
    assert!(refused_from(&metrics_text(), "client") >= 1);
    regions.stop().await;
}

/// Membership edits asked for at the same time through three regions'
/// gateways (an admin in us-east adding and renaming, members in eu-west and
/// ap-southeast leaving) converge: every region ends with the same members,
/// name and version (the owner region orders them; the others apply its
/// versions).
async fn concurrent_membership_edits_from_three_regions_converge_everywhere(log: TestLog) {
    let regions = Regions::start(&THREE, log, |_, _| {}).await;
    let admin = regions.user("us-east", "admin").await;
    let leaver_eu = regions.user("eu-west", "leaver-eu").await;
    let leaver_ap = regions.user("ap-southeast", "leaver-ap").await;
    let joiner_eu = regions.user("eu-west", "joiner-eu").await;
    let joiner_ap = regions.user("ap-southeast", "joiner-ap").await;
    let conv = regions
        .rest("us-east")
        .with_token(&admin.token)
        .create_group(
            "before",
            &[leaver_eu.user_id.clone(), leaver_ap.user_id.clone()],
        )
        .await
        .expect("group")
        .conv_id;
    // The leavers' regions must know the group before they can leave it.
    for (region, user) in [("eu-west", &leaver_eu), ("ap-southeast", &leaver_ap)] {
        let mut client = regions.client(region, &user.token, 7).await;
        wait_for_conversation(&mut client, &conv).await;
    }
    let admin_rest = regions.rest("eu-west").with_token(&admin.token);
    let eu_rest = regions.rest("eu-west").with_token(&leaver_eu.token);
    let ap_rest = regions.rest("ap-southeast").with_token(&leaver_ap.token);
    let joiners = [joiner_eu.user_id.clone(), joiner_ap.user_id.clone()];
    let (added, renamed, left_eu, left_ap) = tokio::join!(
        admin_rest.add_members(&conv, &joiners),
        admin_rest.rename(&conv, "after"),
        eu_rest.remove_member(&conv, &leaver_eu.user_id),
        ap_rest.remove_member(&conv, &leaver_ap.user_id),
    );
    added.expect("add");
    renamed.expect("rename");
    left_eu.expect("leave through eu-west");
    left_ap.expect("leave through ap-southeast");

    let expected: BTreeSet<String> = [&admin, &joiner_eu, &joiner_ap]
        .iter()
        .map(|u| u.user_id.clone())
        .collect();
    // Each remaining member reads the group from its own home region.
    let mut views = Vec::new();
    for (region, user) in [
        ("us-east", &admin),
        ("eu-west", &joiner_eu),
        ("ap-southeast", &joiner_ap),
    ] {
        let rest = regions.rest(region).with_token(&user.token);
        let converged = async {
            loop {
                if let Ok(view) = rest.conversation(&conv).await
                    && view
                        .members
                        .iter()
                        .map(|m| m.user_id.clone())
                        .collect::<BTreeSet<_>>()
                        == expected
                    && view.name == "after"
                {
                    return view;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let view = tokio::time::timeout(PATIENCE, converged)
            .await
            .unwrap_or_else(|_| panic!("{region} did not converge"));
        views.push((region, view));
    }
    let (_, reference) = &views[0];
    assert_eq!(
        reference.version, 5,
        "created, added, renamed, two left: five versions"
    );
    for (region, view) in &views {
        assert_eq!(
            view.version, reference.version,
            "{region}: one version everywhere"
        );
        let roles: Vec<(String, String)> = view
            .members
            .iter()
            .map(|m| (m.user_id.clone(), m.role.clone()))
            .collect();
        let reference_roles: Vec<(String, String)> = reference
            .members
            .iter()
            .map(|m| (m.user_id.clone(), m.role.clone()))
            .collect();
        assert_eq!(roles, reference_roles, "{region}: same members and roles");
    }
    // The leavers' regions learned they left: no longer members there.
    for (region, user) in [("eu-west", &leaver_eu), ("ap-southeast", &leaver_ap)] {
        let rest = regions.rest(region).with_token(&user.token);
        let refused = async {
            loop {
                match rest.conversation(&conv).await {
                    Err(error) if error.code() == Some(meridian_sdk::ErrorCode::NotFound) => {
                        return;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        };
        tokio::time::timeout(PATIENCE, refused)
            .await
            .unwrap_or_else(|_| panic!("{region} still lets the leaver read the group"));
    }
    regions.stop().await;
}
