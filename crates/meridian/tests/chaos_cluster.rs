//! The chaos suite's cluster from the real binary: three regions, each a
//! core and two gateways as their own processes, every cross-region path
//! through its own proxy; a message crosses regions; cutting one region
//! pair's proxies holds that pair's traffic while the third region's
//! flows, and healing delivers it; stopping leaves no process running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use meridian_chaos::{Cluster, ClusterOptions};
use meridian_sdk::{Client, Rest};

const PATIENCE: Duration = Duration::from_secs(30);

/// A user registered at `rest`'s gateway: its id, token and a connected
/// client.
async fn user_and_client(rest: &Rest, name: &str, seed: u64) -> (String, String, Client) {
    let user = rest.register(name).await.unwrap();
    let mut client = Client::new(rest, &user.token, seed);
    client.connect(20).await.unwrap();
    (user.user_id, user.token, client)
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_run_as_processes_through_per_pair_proxies() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(ClusterOptions {
        binary: env!("CARGO_BIN_EXE_meridian").into(),
        dir: dir.path().to_path_buf(),
        gateways_per_region: 2,
    })
    .await
    .expect("the cluster starts");
    let pids = cluster.pids();
    assert_eq!(pids.len(), 9, "{pids:?}");

    let rest = |region: &str, gateway: usize| {
        Rest::new(
            cluster
                .region(region)
                .unwrap()
                .gateway_url(gateway)
                .unwrap(),
        )
    };
    let (us, eu, ap) = (
        rest("us-east", 0),
        rest("eu-west", 1),
        rest("ap-southeast", 0),
    );
    let (alice_id, alice_token, mut alice) = user_and_client(&us, "alice", 1).await;
    let (bob_id, _, mut bob) = user_and_client(&eu, "bob", 2).await;
    let (_, carol_token, mut carol) = user_and_client(&ap, "carol", 3).await;
    let to_bob = us
        .with_token(&alice_token)
        .direct(&bob_id)
        .await
        .unwrap()
        .conv_id;
    let to_alice = ap
        .with_token(&carol_token)
        .direct(&alice_id)
        .await
        .unwrap()
        .conv_id;

    let id = alice.new_client_msg_id();
    alice.send(&to_bob, &id, "across", None).await.unwrap();
    assert!(
        bob.poll_until(PATIENCE, |c| c.received() >= 1)
            .await
            .unwrap()
    );

    // The Atlantic cut: us-east and eu-west cannot reach each other, but
    // ap-southeast still reaches us-east.
    for (from, to) in [("us-east", "eu-west"), ("eu-west", "us-east")] {
        cluster.proxy(from, to).unwrap().cut();
    }
    let id = alice.new_client_msg_id();
    alice.send(&to_bob, &id, "held", None).await.unwrap();
    let id = carol.new_client_msg_id();
    carol.send(&to_alice, &id, "flows", None).await.unwrap();
    assert!(
        alice
            .poll_until(PATIENCE, |c| c.received() >= 1)
            .await
            .unwrap()
    );
    assert!(
        !bob.poll_until(Duration::from_secs(2), |c| c.received() >= 2)
            .await
            .unwrap(),
        "nothing crosses the cut"
    );
    for (from, to) in [("us-east", "eu-west"), ("eu-west", "us-east")] {
        cluster.proxy(from, to).unwrap().heal();
    }
    assert!(
        bob.poll_until(PATIENCE, |c| c.received() >= 2)
            .await
            .unwrap(),
        "what waited arrives after the heal"
    );

    cluster.stop().await;
    let running: Vec<&String> = pids
        .iter()
        .filter(|(_, pid)| alive(**pid))
        .map(|(n, _)| n)
        .collect();
    assert!(running.is_empty(), "still running: {running:?}");
}
