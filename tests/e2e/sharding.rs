//! A region sharded over two stores: each shard is a site with its own core
//! and store, users are placed by a hash of their id, and everything that
//! crosses shards travels over replication like traffic between regions.

use std::collections::BTreeSet;

use meridian_wire::sites::{Topology, region_of_site};

use crate::support::{PATIENCE, Regions, TestLog, order, wait_for_conversation};

/// us-east in two shards, eu-west whole.
const SITES: [&str; 3] = ["us-east_0", "us-east_1", "eu-west"];

fn topology() -> Topology {
    Topology::new([("us-east".to_string(), 2)])
}

async fn start() -> Regions {
    Regions::start(&SITES, TestLog::Embedded, |site, options| {
        options.core.topology = topology();
        options.gateway.topology = topology();
        options.gateway.region = region_of_site(site).to_string();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_placed_by_hash_and_cross_shard_traffic_arrives_once_in_one_order() {
    let regions = start().await;
    let topology = topology();
    // Registrations through one gateway of us-east land on both shards,
    // each user on the shard its id hashes to.
    let mut by_site: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for i in 0..6 {
        let user = regions.user("us-east_0", &format!("user{i}")).await;
        assert!(user.user_id.ends_with("@us-east"), "{}", user.user_id);
        let site = topology.site_of(&user.user_id).expect("site").into_owned();
        by_site.entry(site).or_default().push(user);
    }
    assert_eq!(
        by_site.keys().cloned().collect::<Vec<_>>(),
        vec!["us-east_0".to_string(), "us-east_1".to_string()],
        "both shards got users"
    );
    let a0 = by_site["us-east_0"][0].clone();
    let a1 = by_site["us-east_1"][0].clone();
    let b = regions.user("eu-west", "bob").await;

    // A direct conversation across the two shards, opened through the
    // other shard's gateway (any gateway serves any user).
    let direct = regions
        .rest("us-east_1")
        .with_token(&a0.token)
        .direct(&a1.user_id)
        .await
        .expect("direct across shards")
        .conv_id;
    let mut a0_client = regions.client("us-east_1", &a0.token, 1).await;
    let mut a1_client = regions.client("us-east_0", &a1.token, 2).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let id = a0_client.new_client_msg_id();
        sent.push(
            a0_client
                .send(&direct, &id, &format!("hello {i}"), None)
                .await
                .expect("send"),
        );
    }
    assert!(
        a1_client
            .poll_until(PATIENCE, |c| c.timeline(&direct).len() >= 5)
            .await
            .expect("poll"),
        "a1 got {} of 5",
        a1_client.timeline(&direct).len()
    );
    let timeline = a1_client.timeline(&direct);
    assert_eq!(timeline.len(), 5, "nothing twice");
    for (message, sent) in timeline.iter().zip(&sent) {
        assert_eq!(message.msg_id, sent.msg_id);
        assert_eq!(message.hlc, sent.hlc, "one HLC on both shards");
        assert_eq!(message.origin_region, "us-east_0", "stamped by its site");
    }

    // A group over both shards and another region: a sender on each
    // converges to one order everywhere.
    let members = vec![a0.user_id.clone(), b.user_id.clone()];
    let group = regions
        .rest("us-east_0")
        .with_token(&a1.token)
        .create_group("shards", &members)
        .await
        .expect("group")
        .conv_id;
    assert!(topology.site_of(&group).is_some_and(|s| s == "us-east_1"));
    let mut b_client = regions.client("eu-west", &b.token, 3).await;
    for client in [&mut a0_client, &mut a1_client, &mut b_client] {
        wait_for_conversation(client, &group).await;
    }
    let mut clients = vec![a0_client, a1_client, b_client];
    for (n, client) in clients.iter_mut().enumerate() {
        for i in 0..20 {
            let id = client.new_client_msg_id();
            client
                .send(&group, &id, &format!("from {n}: {i}"), None)
                .await
                .expect("group send");
        }
    }
    for client in &mut clients {
        let complete = client
            .poll_until(PATIENCE, |c| c.timeline(&group).len() >= 60)
            .await
            .expect("poll");
        assert!(
            complete,
            "a member has {} of 60",
            client.timeline(&group).len()
        );
    }
    let reference = order(&clients[0], &group);
    assert_eq!(reference.iter().collect::<BTreeSet<_>>().len(), 60);
    for client in &clients {
        assert_eq!(order(client, &group), reference, "one order everywhere");
        assert_eq!(client.timeline(&group).len(), 60, "nothing twice");
        assert_eq!(client.wire_duplicates, 0);
    }
    regions.stop().await;
}
