//! The media client against the embedded S3 server over real sockets:
//! presigned uploads with a plain HTTP client, and the server's refusals.

// Test code: a failed expectation should panic with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use meridian_media::{Bucket, Declared, EmbeddedS3, Rejection, S3Credentials, S3Target, inspect};
use meridian_seams::net::TokioNetwork;
use meridian_seams::{Offload, SystemClock};
use sha2::{Digest, Sha256};

const KEY_ID: &str = "test-key";
const SECRET: &str = "test-secret-0123456789";

async fn server(dir: &std::path::Path) -> (EmbeddedS3, Bucket) {
    let network = TokioNetwork::shared();
    let listener = network
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let s3 = EmbeddedS3::start(dir, &["media".into()], listener, KEY_ID, SECRET)
        .await
        .unwrap();
    let bucket = bucket_at(s3.endpoint(), SystemClock::shared());
    (s3, bucket)
}

fn bucket_at(endpoint: String, clock: meridian_seams::SharedClock) -> Bucket {
    Bucket::new(
        &S3Target {
            endpoint: Some(endpoint),
            aws_region: "us-east-1".into(),
            bucket: "media".into(),
            credentials: S3Credentials::fixed(KEY_ID, SECRET),
        },
        clock,
        &TokioNetwork::shared(),
    )
}

fn png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(800, 400, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// An HTTP client. The build's one TLS provider (aws-lc-rs) is made the
/// process default first: reqwest, built without a provider of its own,
/// takes the default even for plain `http://`.
fn http() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::new()
}

async fn put(
    presigned: &meridian_media::Presigned,
    body: Vec<u8>,
    skip: &str,
) -> reqwest::Response {
    let client = http();
    let mut request = client.put(&presigned.url).body(body);
    for (name, value) in &presigned.headers {
        if name != skip {
            request = request.header(name, value);
        }
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn presigned_upload_then_inspect_and_download() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, bucket) = server(dir.path()).await;
    bucket.check_reachable().await.unwrap();
    let bytes = png();
    let sha: [u8; 32] = Sha256::digest(&bytes).into();
    let ttl = std::time::Duration::from_secs(600);
    let slot = bucket
        .presign_put("m/one", bytes.len() as u64, "image/png", &sha, ttl)
        .await
        .unwrap();
    let signed: Vec<&str> = slot.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(slot.url.contains("X-Amz-Signature"), "{}", slot.url);
    assert!(
        slot.url.contains("content-length"),
        "size is a signed header: {}",
        slot.url
    );
    assert!(signed.contains(&"content-type"), "{signed:?}");

    // Another length than declared (sent with its true Content-Length):
    // the signature does not match.
    let mut longer = bytes.clone();
    longer.push(0);
    let refused = put(&slot, longer, "content-length").await;
    assert_eq!(refused.status(), 403);
    // Another content type than signed.
    let client = http();
    let mut request = client.put(&slot.url).body(bytes.clone());
    for (name, value) in &slot.headers {
        let value = if name == "content-type" {
            "image/gif"
        } else {
            value
        };
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.unwrap().status(), 403);
    // A tampered signature (one hex digit changed).
    let at = slot.url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let mut url = slot.url.clone();
    let flipped = if &url[at..=at] == "0" { "1" } else { "0" };
    url.replace_range(at..=at, flipped);
    let tampered = meridian_media::Presigned {
        url,
        ..slot.clone()
    };
    assert_eq!(put(&tampered, bytes.clone(), "").await.status(), 403);
    assert_eq!(bucket.head("m/one").await.unwrap(), None);

    let stored = put(&slot, bytes.clone(), "").await;
    assert_eq!(stored.status(), 200, "{:?}", stored.text().await);
    let declared = Declared {
        content_type: "image/png",
        size: bytes.len() as u64,
        sha256: &sha,
    };
    let checked = inspect(&bucket, "m/one", declared, Offload::Inline)
        .await
        .unwrap();
    let thumb = checked.thumbnail.unwrap();
    assert_eq!((thumb.width, thumb.height), (320, 160));

    let get = bucket.presign_get("m/one", ttl).await.unwrap();
    let downloaded = http().get(&get.url).send().await.unwrap();
    assert_eq!(downloaded.status(), 200);
    assert_eq!(downloaded.bytes().await.unwrap().as_ref(), bytes.as_slice());

    // The same bytes declared as a PDF are refused by the check.
    let as_pdf = Declared {
        content_type: "application/pdf",
        ..declared
    };
    let error = inspect(&bucket, "m/one", as_pdf, Offload::Inline)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            meridian_media::InspectError::Rejected(Rejection::TypeMismatch(_))
        ),
        "{error}"
    );
    let wrong_hash = Declared {
        sha256: &[0; 32],
        ..declared
    };
    let error = inspect(&bucket, "m/one", wrong_hash, Offload::Inline)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            meridian_media::InspectError::Rejected(Rejection::ChecksumMismatch)
        ),
        "{error}"
    );
    s3.stop().await;
}

#[tokio::test]
async fn expired_url_is_refused_and_a_stopped_server_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, _) = server(dir.path()).await;
    // A URL signed an hour ago for 15 minutes.
    let past = std::sync::Arc::new(SystemClock::with_skew(-3_600_000));
    let old = bucket_at(s3.endpoint(), past);
    let body = b"hello".to_vec();
    let sha: [u8; 32] = Sha256::digest(&body).into();
    let slot = old
        .presign_put(
            "m/old",
            5,
            "text/plain",
            &sha,
            std::time::Duration::from_secs(900),
        )
        .await
        .unwrap();
    let response = put(&slot, body, "").await;
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("expired"));

    let endpoint = s3.endpoint();
    s3.stop().await;
    let bucket = bucket_at(endpoint, SystemClock::shared());
    let error = bucket.check_reachable().await.unwrap_err();
    assert!(
        matches!(error, meridian_media::ObjectError::Unavailable(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_in_memory_backend_serves_the_same_protocol() {
    let network = TokioNetwork::shared();
    let listener = network
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let backend = meridian_media::memory::MemoryS3::new(&["media".into()]);
    let s3 = EmbeddedS3::start_in_memory(backend, listener, KEY_ID, SECRET, 900).unwrap();
    let bucket = bucket_at(s3.endpoint(), SystemClock::shared());
    bucket.check_reachable().await.unwrap();
    let bytes = png();
    let sha: [u8; 32] = Sha256::digest(&bytes).into();
    let ttl = std::time::Duration::from_secs(600);
    let slot = bucket
        .presign_put("m/mem", bytes.len() as u64, "image/png", &sha, ttl)
        .await
        .unwrap();
    // Other bytes of the same length: the checksum header refuses them.
    let mut other = bytes.clone();
    other[100] ^= 1;
    assert_eq!(put(&slot, other, "").await.status(), 400);
    assert_eq!(put(&slot, bytes.clone(), "").await.status(), 200);
    let declared = Declared {
        content_type: "image/png",
        size: bytes.len() as u64,
        sha256: &sha,
    };
    let checked = inspect(&bucket, "m/mem", declared, Offload::Inline)
        .await
        .unwrap();
    assert!(checked.thumbnail.is_some());
    let get = bucket.presign_get("m/mem", ttl).await.unwrap();
    let downloaded = http().get(&get.url).send().await.unwrap();
    assert_eq!(downloaded.bytes().await.unwrap().as_ref(), bytes.as_slice());
    bucket.delete("m/mem").await.unwrap();
    assert_eq!(bucket.head("m/mem").await.unwrap(), None);
    s3.stop().await;
}
