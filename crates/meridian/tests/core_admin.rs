//! `meridian core --admin-listen`: the core's own readiness endpoint and
//! its health metrics, from the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_answers_its_own_readiness_and_health_metrics() {
    let regions = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_regions(regions.path());
    let admin = format!("127.0.0.1:{}", common::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["core", "--region", "us-east", "--admin-listen", &admin])
        .arg("--regions-dir")
        .arg(regions.path())
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn meridian core");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // The admin listener is served once the core has started.
    loop {
        let line = lines.next().expect("meridian core printed").expect("read");
        if line.starts_with("meridian core: site us-east") {
            break;
        }
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let http = reqwest::Client::new();
    let base = format!("http://{admin}");
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready");
    let healthy = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(healthy.status(), 200);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("meridian_core_ready{site=\"us-east\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meridian_core_commit_stalled{site=\"us-east\"} 0"),
        "{metrics}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
