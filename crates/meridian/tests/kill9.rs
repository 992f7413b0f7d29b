//! Durability of the real binary: `kill -9` a running `meridian dev` while
//! sends are being acknowledged, restart it on the same data directory, and
//! every acknowledged message is delivered.

// Test code: a failed expectation should panic with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_sdk::{Client, Rest};

mod common;

/// Starts `meridian dev` on free ports; returns the child and its REST base URL.
fn start(data_dir: &std::path::Path) -> (Child, String) {
    let regions = concat!(env!("CARGO_MANIFEST_DIR"), "/../../regions");
    let fixed = [
        "dev",
        "--regions-dir",
        regions,
        "--region",
        "us-east",
        "--listen",
        "127.0.0.1:0",
        "--core-listen",
        "127.0.0.1:0",
        "--data-dir",
    ];
    let args = fixed
        .iter()
        .map(std::ffi::OsStr::new)
        .chain([data_dir.as_os_str()]);
    common::start_meridian(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_under_load_loses_no_acknowledged_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, base) = start(dir.path());
    let rest = Rest::new(&base);
    let alice = rest.register("alice").await.unwrap();
    let bob = rest.register("bob").await.unwrap();
    let conv = rest
        .with_token(&alice.token)
        .direct(&bob.user_id)
        .await
        .unwrap()
        .conv_id;

    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    // Counts acknowledgements so the test can wait for them without polling.
    let (progress, mut acked_count) = tokio::sync::watch::channel(0usize);
    let progress = Arc::new(progress);
    let mut senders = Vec::new();
    for writer in 0..4u64 {
        // One device per writer: the per-device send rate limit stays out of the way.
        let token = if writer == 0 {
            alice.token.clone()
        } else {
            rest.with_token(&alice.token)
                .add_device(&format!("w{writer}"))
                .await
                .unwrap()
                .token
        };
        let (rest, conv, acknowledged, progress) = (
            rest.clone(),
            conv.clone(),
            acknowledged.clone(),
            progress.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut client = Client::new(&rest, &token, writer);
            if client.connect(5).await.is_err() {
                return;
            }
            let Some(session) = client.session() else {
                return;
            };
            for i in 0.. {
                match session
                    .send(&conv, &format!("w{writer}-{i}"), "durable?", None, 0)
                    .await
                {
                    Ok(sent) => {
                        let count = {
                            let mut set = acknowledged.lock().unwrap();
                            set.insert(sent.msg_id);
                            set.len()
                        };
                        progress.send_replace(count);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the load run until enough sends were acknowledged, then kill -9.
    tokio::time::timeout(Duration::from_secs(60), acked_count.wait_for(|n| *n >= 300))
        .await
        .expect("300 sends acknowledged in time")
        .expect("senders alive");
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    for sender in senders {
        let _ = sender.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 300);

    let (mut child, base) = start(dir.path());
    let rest = Rest::new(&base);
    let mut reader = Client::new(&rest, &bob.token, 99);
    reader.connect(20).await.expect("reconnect after restart");
    let complete = reader
        .poll_until(Duration::from_secs(60), |c| {
            let got: BTreeSet<String> =
                c.timeline(&conv).iter().map(|m| m.msg_id.clone()).collect();
            acknowledged.is_subset(&got)
        })
        .await
        .unwrap();
    child.kill().ok();
    child.wait().ok();
    assert!(
        complete,
        "acknowledged sends lost: received {} of {}",
        reader.received(),
        acknowledged.len()
    );
    assert_eq!(reader.wire_duplicates, 0);
}
