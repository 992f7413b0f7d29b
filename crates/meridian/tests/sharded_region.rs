//! A region sharded over two stores, run by `meridian dev` from region
//! files: `[store] shards = 2` gives us-east two sites (two cores, each over
//! its own data directory, at the region's ports and those + 1). Users
//! registered through one gateway land on both shards by the hash of their
//! id; a conversation between shards and another region works, and
//! survives kill -9 and a restart from the same data.

// Test code: a failed expectation should panic with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use meridian_sdk::{Client, Rest};
use meridian_wire::sites::Topology;

mod common;

/// Two free loopback ports in a row (a shard binds the region's port + 1);
/// the child binds them right after.
fn free_port_pair() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = first.local_addr().expect("addr").port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// Region files: us-east in two shards, eu-west whole. Returns us-east's
/// gateway port.
fn write_regions(dir: &Path) -> u16 {
    let mut us_gateway = 0;
    for (name, store) in [("us-east", "[store]\nshards = 2\n"), ("eu-west", "")] {
        let (gateway, core) = (free_port_pair(), free_port_pair());
        if name == "us-east" {
            us_gateway = gateway;
        }
        let text = format!(
            "name = \"{name}\"\n[listen]\ngateway = \"127.0.0.1:0\"\ncore = \"127.0.0.1:0\"\n\
             [advertise]\ngateway = \"127.0.0.1:0\"\ncore = \"127.0.0.1:0\"\n\
             [local]\ngateway = \"127.0.0.1:{gateway}\"\ncore = \"127.0.0.1:{core}\"\n{store}"
        );
        std::fs::write(dir.join(format!("{name}.toml")), text).expect("write region file");
    }
    us_gateway
}

fn start(regions: &Path, data: &Path) -> std::process::Child {
    let mut args: Vec<std::ffi::OsString> = ["dev", "--send-rate", "10000"]
        .iter()
        .map(Into::into)
        .collect();
    args.extend(["--regions-dir".into(), regions.into()]);
    args.extend(["--data-dir".into(), data.into()]);
    common::start_meridian(args).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_region_places_users_by_hash_and_keeps_their_messages() {
    let regions = tempfile::tempdir().expect("tempdir");
    let us_gateway = write_regions(regions.path());
    let data = tempfile::tempdir().expect("tempdir");
    let mut meridian = start(regions.path(), data.path());
    let topology = Topology::new([("us-east".to_string(), 2)]);
    // The second shard's gateway: any gateway serves any user.
    let us = Rest::new(format!("http://127.0.0.1:{us_gateway}"));
    let us_1 = Rest::new(format!("http://127.0.0.1:{}", us_gateway + 1));

    let mut shard_users: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for i in 0..6 {
        let user = us.register(&format!("user{i}")).await.expect("register");
        let site = topology.site_of(&user.user_id).expect("site").into_owned();
        shard_users.entry(site).or_default().push(user);
    }
    assert_eq!(
        shard_users.len(),
        2,
        "both shards got users: {shard_users:?}"
    );
    let a0 = shard_users["us-east_0"][0].clone();
    let a1 = shard_users["us-east_1"][0].clone();
    for site in ["us-east_0", "us-east_1"] {
        assert!(
            data.path().join(site).is_dir(),
            "{site} keeps its own data directory"
        );
    }

    let conv = us_1
        .with_token(&a0.token)
        .direct(&a1.user_id)
        .await
        .expect("direct across shards")
        .conv_id;
    let mut sender = Client::new(&us, &a0.token, 1);
    sender.connect(20).await.expect("connect");
    let mut sent = Vec::new();
    for i in 0..10 {
        let id = sender.new_client_msg_id();
        sent.push(
            sender
                .send(&conv, &id, &format!("m{i}"), None)
                .await
                .expect("send")
                .msg_id,
        );
    }
    let mut receiver = Client::new(&us, &a1.token, 2);
    receiver.connect(20).await.expect("connect");
    assert!(
        receiver
            .poll_until(Duration::from_secs(30), |c| c.timeline(&conv).len() >= 10)
            .await
            .expect("poll"),
        "the other shard got {} of 10",
        receiver.timeline(&conv).len()
    );
    drop((sender, receiver));

    meridian.kill().expect("SIGKILL");
    meridian.wait().expect("reap");
    let mut meridian = start(regions.path(), data.path());
    // Both shards kept their users and the conversation: history read on
    // the receiver's shard has every message, in order.
    let history = us
        .with_token(&a1.token)
        .history(&conv, None, 50)
        .await
        .expect("history after restart");
    let mut ids: Vec<String> = history.messages.iter().map(|m| m.msg_id.clone()).collect();
    ids.reverse();
    assert_eq!(ids, sent, "every message, once, in order");
    meridian.kill().expect("stop");
    meridian.wait().expect("reap");
}
