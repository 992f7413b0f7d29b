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

/// One cluster at a time: two starting at once in one process race for
/// the ports each found free.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster of the test, its files in `dir`.
async fn start_cluster(dir: &std::path::Path) -> Cluster {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Cluster::start(ClusterOptions {
        binary: env!("CARGO_BIN_EXE_meridian").into(),
        dir: dir.to_path_buf(),
        gateways_per_region: 2,
        small_disk: None,
        kafka: false,
    })
    .await
    .expect("the cluster starts")
}

/// A REST client of gateway `gateway` of `region`.
fn rest(cluster: &Cluster, region: &str, gateway: usize) -> Rest {
    Rest::new(
        cluster
            .region(region)
            .unwrap()
            .gateway_url(gateway)
            .unwrap(),
    )
}

/// The direct conversation `token`'s user opens with `peer`.
async fn direct(rest: &Rest, token: &str, peer: &str) -> String {
    rest.with_token(token).direct(peer).await.unwrap().conv_id
}

fn alive(pid: u32) -> bool {
    meridian_chaos::cluster::process_state(pid).is_some_and(|state| state != 'Z')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_run_as_processes_through_per_pair_proxies() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path()).await;
    let pids = cluster.pids();
    assert_eq!(pids.len(), 9, "{pids:?}");

    let (us, eu, ap) = (
        rest(&cluster, "us-east", 0),
        rest(&cluster, "eu-west", 1),
        rest(&cluster, "ap-southeast", 0),
    );
    let (alice_id, alice_token, mut alice) = user_and_client(&us, "alice", 1).await;
    let (bob_id, _, mut bob) = user_and_client(&eu, "bob", 2).await;
    let (_, carol_token, mut carol) = user_and_client(&ap, "carol", 3).await;
    let to_bob = direct(&us, &alice_token, &bob_id).await;
    let to_alice = direct(&ap, &carol_token, &alice_id).await;

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

/// The process faults through `meridian_chaos::faults`: eu-west's core
/// killed (a send to its user waits in us-east's log) and restarted, then
/// us-east's first gateway frozen (a client on the second gateway still
/// sends) and resumed; everything arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_frozen_processes_come_back_through_the_faults() {
    use meridian_chaos::FaultKind;
    use meridian_chaos::cluster::process_state;
    use meridian_chaos::faults::{heal, inject};

    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_cluster(dir.path()).await;
    let us = rest(&cluster, "us-east", 1);
    let eu = rest(&cluster, "eu-west", 0);
    let (_, alice_token, mut alice) = user_and_client(&us, "alice", 1).await;
    let (bob_id, _, mut bob) = user_and_client(&eu, "bob", 2).await;
    let to_bob = direct(&us, &alice_token, &bob_id).await;

    let kill = FaultKind::CoreKill {
        region: "eu-west".into(),
        restart_after: 1.0,
    };
    inject(&mut cluster, &kill, 7).await.unwrap();
    assert!(cluster.core_pid("eu-west").is_none());
    let id = alice.new_client_msg_id();
    alice
        .send(&to_bob, &id, "while eu-west is down", None)
        .await
        .unwrap();
    heal(&mut cluster, &kill).await.unwrap();
    assert!(
        bob.poll_until(PATIENCE, |c| c.received() >= 1)
            .await
            .unwrap(),
        "the message waited for eu-west's core"
    );

    let freeze = FaultKind::GatewayFreeze {
        region: "us-east".into(),
        gateway: 0,
        seconds: 1.0,
    };
    inject(&mut cluster, &freeze, 7).await.unwrap();
    let frozen = cluster.gateway_pid("us-east", 0).unwrap();
    assert_eq!(
        process_state(frozen),
        Some('T'),
        "SIGSTOP stopped the gateway"
    );
    // alice is on gateway 1, which still serves.
    let id = alice.new_client_msg_id();
    alice
        .send(&to_bob, &id, "around the frozen gateway", None)
        .await
        .unwrap();
    heal(&mut cluster, &freeze).await.unwrap();
    assert_ne!(process_state(frozen), Some('T'), "SIGCONT resumed it");
    assert!(
        bob.poll_until(PATIENCE, |c| c.received() >= 2)
            .await
            .unwrap()
    );
    assert_eq!(bob.wire_duplicates, 0);
    let gateway = rest(&cluster, "us-east", 0);
    assert!(
        gateway.register("after-the-thaw").await.is_ok(),
        "the thawed gateway serves"
    );
    cluster.stop().await;
}
