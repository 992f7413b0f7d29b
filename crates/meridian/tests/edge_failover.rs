//! Failover at the edge, end to end over real sockets: a client that finds
//! its gateways through GeoDNS loses every gateway of its region (SIGKILL)
//! while messages stream to it, re-resolves, lands on the nearest region's
//! gateways, resumes from its cursor through them — its home core still
//! serving it — and ends with every message once, in order; its sends
//! through the other region are acknowledged and delivered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use meridian_sdk::{Client, Discovery, Rest};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_gateway_of_a_region_dies_its_clients_resume_elsewhere_losing_nothing() {
    let regions = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let gateways = common::write_geo_regions(regions.path());
    let (dir, state) = (regions.path(), data.path());
    // us-east as parts: its core outlives its gateways.
    let mut us_core = common::spawn_until(
        &["core", "--region", "us-east"],
        dir,
        state,
        "meridian core: site us-east",
    );
    let mut us_gateways: Vec<_> = ["1", "2"]
        .iter()
        .map(|index| {
            common::spawn_until(
                &["gateway", "--region", "us-east", "--index", index],
                dir,
                state,
                "meridian gateway: region us-east",
            )
        })
        .collect();
    let mut eu_west = common::spawn_until(
        &[
            "dev",
            "--region",
            "eu-west",
            "--gateways",
            "2",
            "--send-rate",
            "10000",
        ],
        dir,
        state,
        "meridian dev:",
    );
    // Clients on loopback match no prefix: they go home, to us-east.
    let dns: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let mut geodns = common::spawn_until(
        &[
            "geodns",
            "--listen",
            &dns.to_string(),
            "--home",
            "us-east",
            "--gateways",
            "2",
            "--dns-ttl",
            "1",
            "--check-interval-ms",
            "100",
            "--check-timeout-ms",
            "300",
        ],
        dir,
        state,
        "GeoDNS",
    );

    let us = Rest::new(format!("http://{}", gateways["us-east"]));
    let eu = Rest::new(format!("http://{}", gateways["eu-west"]));
    let alice = us.register("alice").await.unwrap();
    let bob = eu.register("bob").await.unwrap();
    let conv = us
        .with_token(&alice.token)
        .direct(&bob.user_id)
        .await
        .unwrap()
        .conv_id;

    let discovery = Discovery::new(dns, "chat.meridian.test", &Rest::new("http://unused")).unwrap();
    let mut phone = Client::new(&us, &alice.token, 1).with_discovery(discovery);
    phone.connect(50).await.expect("connect through GeoDNS");
    assert!(
        phone.rest().base().starts_with("http://127.0.1."),
        "GeoDNS sent alice home: {}",
        phone.rest().base()
    );

    const TOTAL: usize = 1000;
    let sender = common::send_stream(&eu, &bob.token, &conv, TOTAL, 2);

    // Mid-stream, every us-east gateway dies.
    let streaming = phone
        .poll_until(Duration::from_secs(60), |c| c.received() >= 50)
        .await
        .unwrap();
    assert!(
        streaming,
        "alice received {} before the kill",
        phone.received()
    );
    assert!(
        phone.received() < TOTAL && !sender.is_finished(),
        "the kill lands mid-stream"
    );
    let before = phone.connects;
    for gateway in &mut us_gateways {
        gateway.kill().unwrap();
        gateway.wait().unwrap();
    }
    let complete = phone
        .poll_until(Duration::from_secs(90), |c| c.received() >= TOTAL)
        .await
        .unwrap();
    let sent = sender.await.unwrap();
    // Anything delivered twice would follow the last new message.
    let _ = phone.poll(Duration::from_millis(300)).await;
    assert!(phone.connects > before, "alice reconnected");
    assert!(
        phone.rest().base().starts_with("http://127.0.2."),
        "alice resumed through eu-west: {}",
        phone.rest().base()
    );
    let shown: Vec<String> = phone
        .timeline(&conv)
        .iter()
        .map(|m| m.msg_id.clone())
        .collect();
    assert!(complete, "alice has {} of {TOTAL}", shown.len());
    assert_eq!(
        shown.iter().collect::<BTreeSet<_>>(),
        sent.iter().collect::<BTreeSet<_>>(),
        "every acknowledged send, nothing else"
    );
    assert_eq!(shown.len(), TOTAL, "nothing shown twice");
    assert_eq!(shown, sent, "in the order they were sent");

    // Alice's own send, through eu-west's gateway to her home core.
    let id = phone.new_client_msg_id();
    phone
        .send(&conv, &id, "from the other side", None)
        .await
        .expect("acknowledged through eu-west");

    for child in [&mut geodns, &mut eu_west, &mut us_core] {
        child.kill().ok();
        child.wait().ok();
    }
}
