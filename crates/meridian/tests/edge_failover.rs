//! Failover at the edge, end to end over real sockets: a client that finds
//! its gateways through GeoDNS loses every gateway of its region (SIGKILL)
//! while messages stream to it, re-resolves, lands on the nearest region's
//! gateways, resumes from its cursor through them — its home core still
//! serving it — and ends with every message once, in order; its sends
//! through the other region are acknowledged and delivered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use meridian_sdk::{Client, Discovery, Rest};

mod common;

/// Two regions behind GeoDNS: us-east as a core and two gateway processes
/// (its core outlives its gateways), eu-west as `meridian dev` with two
/// gateways; GeoDNS's home is us-east, so loopback clients (no prefix)
/// are sent there while it is healthy.
struct Edge {
    regions: tempfile::TempDir,
    data: tempfile::TempDir,
    us_core: Child,
    us_gateways: Vec<Child>,
    eu_west: Child,
    geodns: Child,
    dns: SocketAddr,
    us: Rest,
    eu: Rest,
}

impl Edge {
    fn start() -> Self {
        let regions = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let gateways = common::write_geo_regions(regions.path());
        let (dir, state) = (regions.path(), data.path());
        let us_core = common::spawn_until(
            &["core", "--region", "us-east"],
            dir,
            state,
            "meridian core: site us-east",
        );
        let us_gateways = ["1", "2"]
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
        let eu_west = common::spawn_until(
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
        let (geodns, dns) = common::spawn_geodns(dir, state, "us-east", &["--dns-ttl", "1"]);
        Self {
            us: Rest::new(format!("http://{}", gateways["us-east"])),
            eu: Rest::new(format!("http://{}", gateways["eu-west"])),
            regions,
            data,
            us_core,
            us_gateways,
            eu_west,
            geodns,
            dns,
        }
    }

    /// A client of `token` that finds its gateways through GeoDNS.
    fn client(&self, token: &str, seed: u64) -> Client {
        let discovery =
            Discovery::new(self.dns, "chat.meridian.test", &Rest::new("http://unused")).unwrap();
        Client::new(&self.us, token, seed).with_discovery(discovery)
    }

    /// Runs `meridian region <verb> us-east` to its end; its output.
    async fn region(&self, verb: &str) -> String {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args([
                "region",
                verb,
                "us-east",
                "--gateways",
                "2",
                "--spread-secs",
                "2",
            ])
            .arg("--regions-dir")
            .arg(self.regions.path())
            .arg("--data-dir")
            .arg(self.data.path())
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "meridian region {verb}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let children = [&mut self.geodns, &mut self.eu_west, &mut self.us_core];
        for child in children.into_iter().chain(self.us_gateways.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_gateway_of_a_region_dies_its_clients_resume_elsewhere_losing_nothing() {
    let mut edge = Edge::start();
    let (us, eu) = (edge.us.clone(), edge.eu.clone());
    let alice = us.register("alice").await.unwrap();
    let bob = eu.register("bob").await.unwrap();
    let conv = us
        .with_token(&alice.token)
        .direct(&bob.user_id)
        .await
        .unwrap()
        .conv_id;

    let mut phone = edge.client(&alice.token, 1);
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
    for gateway in &mut edge.us_gateways {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_region_sends_its_clients_away_in_waves_and_they_lose_nothing() {
    let edge = Edge::start();
    let bob = edge.eu.register("bob").await.unwrap();
    const PHONES: usize = 12;
    let mut users = Vec::new();
    for i in 0..PHONES {
        users.push(edge.us.register(&format!("user{i}")).await.unwrap());
    }
    let members: Vec<String> = users.iter().map(|u| u.user_id.clone()).collect();
    let group = edge
        .eu
        .with_token(&bob.token)
        .create_group("everyone", &members)
        .await
        .unwrap()
        .conv_id;

    const TOTAL: usize = 400;
    let mut phones = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let mut phone = edge.client(&user.token, 10 + i as u64);
        phone.connect(50).await.expect("connect through GeoDNS");
        assert!(phone.rest().base().starts_with("http://127.0.1."));
        let group = group.clone();
        phones.push(tokio::spawn(async move {
            // Until it has every message and has been moved.
            let complete = phone
                .poll_until(Duration::from_secs(90), |c| {
                    c.received() >= TOTAL && c.rest().base().starts_with("http://127.0.2.")
                })
                .await
                .unwrap();
            let _ = phone.poll(Duration::from_millis(200)).await;
            let shown: Vec<String> = phone
                .timeline(&group)
                .iter()
                .map(|m| m.msg_id.clone())
                .collect();
            (complete, shown, phone.rest().base().to_string())
        }));
    }
    let sender = common::send_stream(&edge.eu, &bob.token, &group, TOTAL, 2);

    // The drain returns once us-east's gateways hold no client.
    let printed = edge.region("drain").await;
    println!("{printed}");
    assert!(printed.contains("holds no client connection"), "{printed}");
    // GeoDNS no longer answers with it.
    let answer = Discovery::new(edge.dns, "chat.meridian.test", &Rest::new("http://unused"))
        .unwrap()
        .gateways(true)
        .await
        .unwrap();
    assert!(
        answer
            .iter()
            .all(|g| g.base().starts_with("http://127.0.2."))
    );

    let sent = sender.await.unwrap();
    for phone in phones {
        let (complete, shown, base) = phone.await.unwrap();
        assert!(complete, "a phone has {} of {TOTAL}", shown.len());
        assert!(
            base.starts_with("http://127.0.2."),
            "moved to eu-west: {base}"
        );
        assert_eq!(shown, sent, "every message once, in order");
    }

    // Undrained, GeoDNS answers with us-east again.
    edge.region("undrain").await;
    let discovery =
        Discovery::new(edge.dns, "chat.meridian.test", &Rest::new("http://unused")).unwrap();
    let mut home = false;
    for _ in 0..100 {
        let answer = discovery.gateways(true).await.unwrap();
        if answer
            .iter()
            .all(|g| g.base().starts_with("http://127.0.1."))
        {
            home = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(home, "us-east is answered again after its checks pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_past_the_accept_rate_is_turned_away_and_comes_back_spread() {
    let regions = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let gateway = format!("127.0.1.1:{}", common::free_port());
    let text = common::region_file("us-east", &gateway, "[edge]\naccepts_per_second = 10\n");
    std::fs::write(regions.path().join("us-east.toml"), text).unwrap();
    let mut region = common::spawn_until(
        &[
            "dev",
            "--region",
            "us-east",
            "--no-dns",
            "--registrations-per-minute",
            "6000",
        ],
        regions.path(),
        data.path(),
        "meridian dev:",
    );
    let rest = Rest::new(format!("http://{gateway}"));
    const STORM: usize = 40;
    let mut tokens = Vec::new();
    for i in 0..STORM {
        tokens.push(rest.register(&format!("user{i}")).await.unwrap().token);
    }
    // Every client at once, four times the bucket.
    let storm: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let rest = rest.clone();
            tokio::spawn(async move {
                let mut client = Client::new(&rest, &token, i as u64);
                client
                    .connect(30)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for client in storm {
        client
            .await
            .unwrap()
            .expect("every client gets in, at its turn");
    }
    let (_, metrics) = common::get(&format!("http://{gateway}/metrics")).await;
    let refused = common::sample(
        &metrics,
        "meridian_gateway_connections_refused_total",
        "why=\"accept_rate\"",
    );
    assert!(
        refused >= 1.0,
        "the storm was turned away in part:\n{metrics}"
    );
    region.kill().ok();
    region.wait().ok();
}
