//! `meridian dev` needs nothing from the checkout: run in an empty
//! directory, it writes the built-in local regions under its data
//! directory and serves them; `--port-offset` moves every local port, so
//! two such deployments run side by side, each with its own state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use meridian_sdk::Rest;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_from_an_empty_directory_and_two_run_side_by_side() {
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Offsets far from the shipped ports (7010–9030, 8053) and from each
    // other, below the kernel's ephemeral range (32768 up), which other
    // tests' connections and port-0 binds draw from.
    let (_first, first_base) = common::dev_in(first_dir.path(), 21_000, &[]);
    let (_second, second_base) = common::dev_in(second_dir.path(), 22_000, &[]);

    assert!(
        first_dir.path().join("data/regions/us-east.toml").is_file(),
        "the built-in regions were written under the data directory"
    );
    // A shipped gateway port (8010, 8020, 8030), moved by the offset.
    let port = |base: &str| base.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    assert!(
        [29_010, 29_020, 29_030].contains(&port(&first_base)),
        "{first_base}"
    );
    assert!(
        [30_010, 30_020, 30_030].contains(&port(&second_base)),
        "{second_base}"
    );

    // Each deployment serves its own users from its own state.
    let alice = Rest::new(&first_base).register("alice").await.unwrap();
    let carol = Rest::new(&first_base).register("carol").await.unwrap();
    let bob = Rest::new(&second_base).register("bob").await.unwrap();
    let first_as_alice = Rest::new(&first_base).with_token(&alice.token);
    assert!(first_as_alice.direct(&carol.user_id).await.is_ok());
    let missing = first_as_alice.direct(&bob.user_id).await.unwrap_err();
    assert_eq!(
        missing.code(),
        Some(meridian_sdk::ErrorCode::NotFound),
        "{missing}"
    );
}
