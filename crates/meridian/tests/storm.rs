//! A reconnect storm, end to end over real sockets. 10,000 devices hold
//! WebSockets on one gateway of a region; that gateway is killed
//! (SIGKILL); while they are away, messages pile up for every one of them;
//! they all come back at once through the region's other gateway. The
//! gateway admits them at its accept rate and the core at its attach rate,
//! both turning the rest away with a wait the clients obey (`503` with
//! `retry_after`, `go_away` `busy`); backlogs are read in the core's
//! bounded turns. Every device ends with every message once and in order,
//! and a pair of devices on a third gateway chat through the storm.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meridian_sdk::{Client, Keepalive, Rest};
use tokio::sync::watch;

mod common;

/// Devices in the storm.
const STORM: usize = 10_000;
/// An account holds at most 16 devices.
const DEVICES_PER_ACCOUNT: usize = meridian_chaos::idle::DEVICES_PER_ACCOUNT;
/// Messages each device is sent while its gateway is gone.
const BACKLOG: usize = 3;
/// Storm clients hold their sockets; they are not exercised by pings.
const KEEPALIVE: Keepalive = Keepalive {
    interval: Duration::from_secs(30),
    timeout: Duration::from_secs(90),
    request_timeout: Duration::from_secs(30),
};

/// us-east as a core and three gateway processes on 127.0.1.1–3: storm
/// clients on the first (the second their fallback), the quiet pair and
/// the senders on the third. The core admits 1,000 attaches a second and
/// reads 8 backlogs at once, so a storm of 10,000 is shed in part.
struct Region {
    _regions: tempfile::TempDir,
    _data: tempfile::TempDir,
    core: Child,
    gateways: Vec<Child>,
    rests: Vec<Rest>,
    admins: Vec<String>,
}

impl Region {
    fn start() -> Self {
        let regions = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let (port, admin) = (common::free_port(), common::free_port());
        let extra = format!(
            "[edge]\ngateway_admin_port = {admin}\n\
             [admission]\nattaches_per_second = 1000\nsync_slots = 8\n{}",
            common::tls_table("us-east")
        );
        let text = common::region_file("us-east", &format!("127.0.1.1:{port}"), &extra);
        std::fs::write(regions.path().join("us-east.toml"), text).unwrap();
        common::certs_init(regions.path());
        let (dir, state) = (regions.path(), data.path());
        let core = common::spawn_until(
            &["core", "--region", "us-east"],
            dir,
            state,
            "meridian core: site us-east",
        );
        let gateways = ["1", "2", "3"]
            .iter()
            .map(|index| {
                common::spawn_until(
                    &[
                        "gateway",
                        "--region",
                        "us-east",
                        "--index",
                        index,
                        "--registrations-per-minute",
                        "1000000",
                        "--send-rate",
                        "10000",
                    ],
                    dir,
                    state,
                    "meridian gateway: region us-east",
                )
            })
            .collect();
        Self {
            rests: (1..=3)
                .map(|i| Rest::new(format!("http://127.0.1.{i}:{port}")))
                .collect(),
            admins: (1..=3)
                .map(|i| format!("http://127.0.1.{i}:{admin}"))
                .collect(),
            _regions: regions,
            _data: data,
            core,
            gateways,
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.core).chain(self.gateways.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `STORM` device tokens, 16 to an account, and the accounts' user ids.
async fn register(rest: &Rest) -> (Vec<String>, Vec<String>) {
    let registered = meridian_chaos::idle::register_accounts(rest.base(), STORM, "storm", 8)
        .await
        .unwrap();
    let users = registered.iter().map(|(user, _)| user.clone()).collect();
    let tokens = registered.into_iter().flat_map(|(_, t)| t).collect();
    (tokens, users)
}

/// What one storm device ends with.
struct Outcome {
    /// Its conversation's messages as it shows them.
    shown: Vec<String>,
    /// The gateway it ended on.
    base: String,
    /// Sessions it opened.
    connects: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_clients_losing_their_gateway_come_back_shed_in_turn_losing_nothing() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut region = Region::start();
    let [first, second, third] = [0, 1, 2].map(|i| region.rests[i].clone());
    let (tokens, users) = register(&third).await;
    let bob = third.register("bob").await.unwrap();
    let bob_rest = third.with_token(&bob.token);
    // Groups of bob and 99 storm accounts: each send reaches 1,584 devices.
    let mut groups = Vec::new();
    for members in users.chunks(99) {
        let group = bob_rest.create_group("storm", members).await.unwrap();
        groups.push(group.conv_id);
    }
    let group_of = |device: usize| groups[device / DEVICES_PER_ACCOUNT / 99].clone();

    // Every storm device on the first gateway (then the second its
    // fallback), polling until it has all 1 + BACKLOG messages through the second.
    let caught_up = Arc::new(AtomicUsize::new(0));
    let (done_tx, done) = watch::channel(false);
    let devices: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let client = Client::new(&first, token, i as u64).with_keepalive(KEEPALIVE);
            let (group, caught_up, mut done) = (group_of(i), caught_up.clone(), done.clone());
            let fallback = second.clone();
            let second = second.base().to_string();
            tokio::spawn(async move {
                // On the first gateway (however long the core's admission
                // makes it wait), and only then told of the second.
                let mut client = client;
                client
                    .connect(1_000)
                    .await
                    .expect("attached through the first");
                let mut client = client.with_fallbacks(std::slice::from_ref(&fallback));
                let mut counted = false;
                loop {
                    let _ = client.poll(Duration::from_millis(500)).await;
                    if client.received() >= 1 && !counted {
                        counted = true;
                        caught_up.fetch_add(1, Ordering::SeqCst);
                    }
                    let finished = client.received() > BACKLOG
                        && client.rest().base() == second
                        && *done.borrow_and_update();
                    if finished {
                        break;
                    }
                }
                Outcome {
                    shown: client
                        .timeline(&group)
                        .iter()
                        .map(|m| m.msg_id.clone())
                        .collect(),
                    base: client.rest().base().to_string(),
                    connects: client.connects,
                }
            })
        })
        .collect();
    // One message each, to know every device is attached and caught up.
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); groups.len()];
    let mut sender = Client::new(&third, &bob.token, 1);
    sender.connect(20).await.unwrap();
    for (conv, sent) in groups.iter().zip(&mut sent) {
        let id = sender.new_client_msg_id();
        sent.push(sender.send(conv, &id, "before", None).await.unwrap().msg_id);
    }
    while caught_up.load(Ordering::SeqCst) < STORM {
        sender.poll(Duration::from_millis(200)).await.unwrap();
    }

    // The quiet pair on the third gateway, chatting through the storm.
    let carol = third.register("carol").await.unwrap();
    let dave = third.register("dave").await.unwrap();
    let pair = third
        .with_token(&carol.token)
        .direct(&dave.user_id)
        .await
        .unwrap()
        .conv_id;
    let mut dave_phone = Client::new(&third, &dave.token, 2);
    dave_phone.connect(20).await.unwrap();
    let chat = common::send_stream(&third, &carol.token, &pair, 50, 3);

    // The storm: the first gateway dies with 10,000 sockets; messages pile
    // up for every device while they come back.
    region.gateways[0].kill().unwrap();
    region.gateways[0].wait().unwrap();
    for _ in 0..BACKLOG {
        for (conv, sent) in groups.iter().zip(&mut sent) {
            let id = sender.new_client_msg_id();
            sent.push(
                sender
                    .send(conv, &id, "backlog", None)
                    .await
                    .unwrap()
                    .msg_id,
            );
        }
    }
    done_tx.send(true).unwrap();

    let chatted = chat.await.unwrap();
    let heard = dave_phone
        .poll_until(Duration::from_secs(120), |c| c.received() >= chatted.len())
        .await
        .unwrap();
    assert!(
        heard,
        "dave heard {} of 50 during the storm",
        dave_phone.received()
    );
    let dave_shown: Vec<String> = dave_phone
        .timeline(&pair)
        .iter()
        .map(|m| m.msg_id.clone())
        .collect();
    assert_eq!(dave_shown, chatted, "the quiet pair lost nothing");

    let mut reconnected = 0;
    for (i, device) in devices.into_iter().enumerate() {
        let outcome = tokio::time::timeout(Duration::from_secs(300), device)
            .await
            .expect("every device catches up")
            .unwrap();
        let expected = &sent[i / DEVICES_PER_ACCOUNT / 99];
        assert_eq!(
            &outcome.shown, expected,
            "device {i}: every message once, in order"
        );
        assert_eq!(outcome.base, second.base(), "device {i} moved");
        reconnected += usize::from(outcome.connects >= 2);
    }
    assert_eq!(reconnected, STORM);

    // Some of the storm was turned away with a wait, and came back.
    let (_, metrics) = common::get(&format!("{}/metrics", region.admins[1])).await;
    let shed = common::sample(&metrics, "meridian_gateway_sessions_shed_total", "");
    let refused = common::sample(
        &metrics,
        "meridian_gateway_connections_refused_total",
        "accept_rate",
    );
    println!("storm of {STORM}: {shed} sessions shed by the core, {refused} upgrades refused");
    assert!(shed >= 1.0, "the core shed part of the storm:\n{metrics}");
}
