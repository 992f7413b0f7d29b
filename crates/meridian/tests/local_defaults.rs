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

/// `--sync 5ms` runs, serves and says on its first lines that it is not
/// durable; a policy it does not know is refused before anything starts,
/// with the forms it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_sync_relaxed_says_not_durable_and_an_unknown_policy_is_refused() {
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    // Offset 20500: none of its ports on 127.0.0.1 (cores 7010–7030, S3
    // 9010–9030, GeoDNS 8053, all moved) is one of the other test's, which
    // runs beside it at 21000 and 22000, and all stay below the ephemeral
    // range (32768 up).
    // Were the policy taken, `dev` would serve until killed: the wait is
    // bounded so the test fails rather than hangs.
    let refused =
        tokio::process::Command::from(common::dev_command(dir.path(), 20_500, &["--sync", "5"]))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        refused.wait_with_output(),
    )
    .await
    .expect("`--sync 5` was refused, not served")
    .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("expected `commit` or `<N>ms`"),
        "the refusal names the forms: {stderr}"
    );

    let (_server, base, banner) =
        common::dev_in_with_banner(dir.path(), 20_500, &["--sync", "5ms"]);
    assert!(
        banner.iter().any(|line| line
            .starts_with("NOT DURABLE: stores fsync every 5 ms, not at every commit (--sync 5ms)")),
        "{banner:#?}"
    );
    let alice = Rest::new(&base).register("alice").await.unwrap();
    let bob = Rest::new(&base).register("bob").await.unwrap();
    let conv = Rest::new(&base)
        .with_token(&alice.token)
        .direct(&bob.user_id)
        .await
        .unwrap();
    assert!(!conv.conv_id.is_empty(), "it serves as without the flag");
}
