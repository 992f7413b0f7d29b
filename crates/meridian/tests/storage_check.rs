//! `meridian storage-check` with the production profile and no keys in the
//! environment: the core's S3 client takes the EC2 instance profile's
//! temporary credentials through IMDSv2 (token first, then the role, then
//! its credentials) and signs with them, session token included.
//!
//! The instance metadata service cannot run off EC2, so the test serves its
//! three IMDSv2 endpoints itself, as AWS documents them, and points the SDK
//! at them with `AWS_EC2_METADATA_SERVICE_ENDPOINT`. The bucket is the real
//! embedded S3 server, checking SigV4 against the key the role hands out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse as _;
use axum::routing::{get, put};
use meridian_region::media::EmbeddedS3;
use meridian_seams::net::TokioNetwork;

mod common;

const ROLE: &str = "meridian-core-us-east";
const ACCESS_KEY_ID: &str = "ASIAMERIDIANTEST";
const SECRET: &str = "role-secret";
const TOKEN: &str = "imds-session-token";

/// IMDSv2 as EC2 serves it: every read needs the session token from `PUT
/// /latest/api/token`. Counts the credential reads.
async fn serve_imds(secret: &'static str, reads: Arc<AtomicUsize>) -> String {
    let authorized = |headers: &HeaderMap| {
        headers
            .get("x-aws-ec2-metadata-token")
            .is_some_and(|token| token == TOKEN)
    };
    let app = axum::Router::new()
        .route(
            "/latest/api/token",
            put(|headers: HeaderMap| async move {
                // The token's lifetime comes back in the same header.
                match headers.get("x-aws-ec2-metadata-token-ttl-seconds") {
                    Some(ttl) => (
                        StatusCode::OK,
                        [("x-aws-ec2-metadata-token-ttl-seconds", ttl.clone())],
                        TOKEN,
                    )
                        .into_response(),
                    None => (StatusCode::BAD_REQUEST, "no ttl").into_response(),
                }
            }),
        )
        .route(
            "/latest/meta-data/iam/security-credentials/",
            get(move |headers: HeaderMap| async move {
                if authorized(&headers) {
                    (StatusCode::OK, ROLE.to_string())
                } else {
                    (StatusCode::UNAUTHORIZED, String::new())
                }
            }),
        )
        .route(
            &format!("/latest/meta-data/iam/security-credentials/{ROLE}"),
            get(move |headers: HeaderMap| {
                let reads = reads.clone();
                async move {
                    if !authorized(&headers) {
                        return (StatusCode::UNAUTHORIZED, String::new());
                    }
                    reads.fetch_add(1, Ordering::SeqCst);
                    let body = format!(
                        r#"{{"Code":"Success","LastUpdated":"2026-12-06T00:00:00Z","Type":"AWS-HMAC","AccessKeyId":"{ACCESS_KEY_ID}","SecretAccessKey":"{secret}","Token":"role-session-token","Expiration":"2099-01-01T00:00:00Z"}}"#
                    );
                    (StatusCode::OK, body)
                }
            }),
        );
    let listener = TokioNetwork::shared()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(meridian_seams::net::AxumListener::new(listener), app).await
    });
    format!("http://{addr}")
}

/// Region files for us-east (whose bucket the embedded server holds) and
/// eu-west, production addresses unused by the check.
fn write_regions(dir: &Path, s3_endpoint: &str) {
    for name in ["us-east", "eu-west"] {
        let rest = format!("[s3]\nbucket = \"media-{name}\"\nendpoint = \"{s3_endpoint}\"\n");
        let text = common::region_file(name, "127.0.0.1:0", &rest);
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    }
}

/// Runs `meridian storage-check` as a core host would, with no key in its
/// environment and the metadata service at `imds`.
async fn storage_check(regions: &Path, imds: &str) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["storage-check", "--region", "us-east", "--regions-dir"])
        .arg(regions)
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
        .env("RUST_LOG", "error")
        .env("HOME", regions)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env_remove("MERIDIAN_S3_ACCESS_KEY_ID")
        .env_remove("MERIDIAN_S3_SECRET_ACCESS_KEY")
        .output()
        .await
        .expect("run meridian storage-check")
}

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| if path.is_dir() { files_under(&path) } else { 1 })
        .sum()
}

async fn embedded_s3(root: &Path) -> EmbeddedS3 {
    let listener = TokioNetwork::shared()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    EmbeddedS3::start(
        root,
        &["media-us-east".to_string(), "media-eu-west".to_string()],
        listener,
        ACCESS_KEY_ID,
        SECRET,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_signs_with_the_instance_profile_through_imdsv2() {
    let data = tempfile::tempdir().unwrap();
    let regions = tempfile::tempdir().unwrap();
    let s3 = embedded_s3(data.path()).await;
    write_regions(regions.path(), &s3.endpoint());
    let reads = Arc::new(AtomicUsize::new(0));
    let imds = serve_imds(SECRET, reads.clone()).await;

    let output = storage_check(regions.path(), &imds).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("credentials: the AWS chain"), "{stdout}");
    assert!(
        stdout
            .contains("us-east: bucket media-us-east: wrote, read back and deleted a probe object"),
        "{stdout}"
    );
    assert!(
        stdout.contains("eu-west: bucket media-eu-west: presigned a download"),
        "{stdout}"
    );
    assert!(
        reads.load(Ordering::SeqCst) >= 1,
        "the role's credentials were read"
    );
    // The probe object is gone again (the server may keep its folder).
    assert_eq!(
        files_under(&data.path().join("media-us-east")),
        0,
        "the probe object was deleted"
    );
    s3.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_whose_key_the_bucket_refuses_fails_the_check_and_says_so() {
    let data = tempfile::tempdir().unwrap();
    let regions = tempfile::tempdir().unwrap();
    let s3 = embedded_s3(data.path()).await;
    write_regions(regions.path(), &s3.endpoint());
    let imds = serve_imds("not-the-secret", Arc::new(AtomicUsize::new(0))).await;

    let output = storage_check(regions.path(), &imds).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("us-east: bucket media-us-east")
            && stderr.contains("writing a probe object"),
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");
    s3.stop().await;
}
