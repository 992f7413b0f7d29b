//! A source region restored from a backup: its replication log rolls back
//! to fewer entries than its peer already applied, and then numbers new
//! entries from offsets that peer has seen. Everything sent after the
//! restore still arrives (the log's new epoch restarts the peer's apply);
//! before epochs, the link resumed at the peer's old offset and skipped it.

// Test code: a failed expectation should panic with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use meridian_sdk::{Client, Rest};

mod common;

/// Copies the directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Sends `count` messages from `client`; their ids.
async fn send(client: &mut Client, conv: &str, count: usize, prefix: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for i in 0..count {
        let id = client.new_client_msg_id();
        let sent = client
            .send(conv, &id, &format!("{prefix} {i}"), None)
            .await
            .expect("send");
        ids.insert(sent.msg_id);
    }
    ids
}

/// Waits until Bob's `phone` holds every one of `ids` in `conv`.
async fn arrives(phone: &mut Client, conv: &str, ids: &BTreeSet<String>) -> bool {
    let conv = conv.to_string();
    phone
        .poll_until(Duration::from_secs(60), |client| {
            let have: BTreeSet<String> = client
                .timeline(&conv)
                .iter()
                .map(|m| m.msg_id.clone())
                .collect();
            ids.is_subset(&have)
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_restored_from_a_backup_delivers_what_it_sends_after() {
    let regions = tempfile::tempdir().expect("tempdir");
    common::write_regions(regions.path());
    let data = tempfile::tempdir().expect("tempdir");
    let start = |region: &str| common::start_region(regions.path(), region, data.path(), &[]);
    let (mut us_east, us_url) = start("us-east");
    let (mut eu_west, eu_url) = start("eu-west");
    let (us, eu) = (Rest::new(&us_url), Rest::new(&eu_url));
    let alice = us.register("alice").await.unwrap();
    let bob = eu.register("bob").await.unwrap();
    let conv = us
        .with_token(&alice.token)
        .direct(&bob.user_id)
        .await
        .unwrap()
        .conv_id;
    let mut phone = Client::new(&eu, &bob.token, 2);
    phone.connect(20).await.expect("connect");

    let mut sender = Client::new(&us, &alice.token, 1);
    sender.connect(20).await.expect("connect");
    let before_backup = send(&mut sender, &conv, 5, "before the backup").await;
    assert!(arrives(&mut phone, &conv, &before_backup).await);

    // The backup: us-east stopped, its directory copied.
    drop(sender);
    us_east.kill().unwrap();
    us_east.wait().unwrap();
    let live = data.path().join("us-east");
    let backup = data.path().join("us-east-backup");
    copy_dir(&live, &backup);

    // More traffic, which eu-west applies: its offsets move past what the
    // backup's log holds.
    let (restarted, us_url) = start("us-east");
    us_east = restarted;
    let us = Rest::new(&us_url);
    let mut sender = Client::new(&us, &alice.token, 3);
    sender.connect(20).await.expect("connect");
    let lost_with_the_restore = send(&mut sender, &conv, 5, "after the backup").await;
    assert!(arrives(&mut phone, &conv, &lost_with_the_restore).await);

    // The restore: us-east's store (and its log) rolled back.
    drop(sender);
    us_east.kill().unwrap();
    us_east.wait().unwrap();
    std::fs::remove_dir_all(&live).unwrap();
    copy_dir(&backup, &live);
    let (restarted, us_url) = start("us-east");
    us_east = restarted;
    let us = Rest::new(&us_url);
    let mut sender = Client::new(&us, &alice.token, 4);
    sender.connect(20).await.expect("connect");
    let after_restore = send(&mut sender, &conv, 7, "after the restore").await;
    let delivered = arrives(&mut phone, &conv, &after_restore).await;
    let have: BTreeSet<String> = phone
        .timeline(&conv)
        .iter()
        .map(|m| m.msg_id.clone())
        .collect();
    us_east.kill().ok();
    us_east.wait().ok();
    eu_west.kill().ok();
    eu_west.wait().ok();
    assert!(
        delivered,
        "sent after the restore, never delivered: {:?}",
        after_restore.difference(&have).collect::<Vec<_>>()
    );
}
