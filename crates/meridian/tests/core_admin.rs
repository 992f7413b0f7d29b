//! `--admin-listen` of `meridian core` and `meridian gateway`: their own
//! readiness endpoints and metrics, from the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_answers_its_own_readiness_and_health_metrics() {
    let regions = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_regions(regions.path());
    let admin = format!("127.0.0.1:{}", common::free_port());
    // The admin listener is served once the core has started.
    let mut child = common::spawn_until(
        &["core", "--region", "us-east", "--admin-listen", &admin],
        regions.path(),
        data.path(),
        "meridian core: site us-east",
    );
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let http = reqwest::Client::new();
    let base = format!("http://{admin}");
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready");
    let healthy = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(healthy.status(), 200);
    let (_, metrics) = common::get(&format!("{base}/metrics")).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_an_admin_listener_serves_its_metrics_there_only() {
    let regions = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_regions(regions.path());
    let mut core = common::spawn_until(
        &["core", "--region", "us-east"],
        regions.path(),
        data.path(),
        "meridian core: site us-east",
    );
    let admin = format!("127.0.0.1:{}", common::free_port());
    let mut gateway = common::spawn_until(
        &["gateway", "--region", "us-east", "--admin-listen", &admin],
        regions.path(),
        data.path(),
        "meridian gateway: region us-east",
    );
    let region_file = std::fs::read_to_string(regions.path().join("us-east.toml")).unwrap();
    let client_port = region_file
        .lines()
        .skip_while(|line| *line != "[local]")
        .find_map(|line| line.strip_prefix("gateway = \"127.0.0.1:"))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the local gateway port");
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let http = reqwest::Client::new();
    let base = format!("http://{admin}");
    // Ready once its session stream to the core is up: polled, bounded.
    let mut ready = None;
    for _ in 0..200 {
        let answer = http.get(format!("{base}/readyz")).send().await.unwrap();
        if answer.status() == 200 {
            ready = Some(answer.text().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ready = ready.expect("the gateway became ready within 10 s");
    assert!(ready.starts_with("ready us-east"), "{ready}");
    let (_, metrics) = common::get(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("meridian_gateway_core_stream_up{core_region=\"us-east\"} 1"),
        "{metrics}"
    );
    // The client port, which the internet reaches, serves no metrics.
    let public = http
        .get(format!("http://127.0.0.1:{client_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let public_ready = http
        .get(format!("http://127.0.0.1:{client_port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(public_ready.status(), 200, "the balancer's check stays");
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    core.kill().unwrap();
    core.wait().unwrap();
}
