//! Media end to end: an embedded S3 server per region, uploads through
//! presigned URLs with a plain HTTP client, checks, thumbnails, sends that
//! carry media, downloads by members homed in another region, and every
//! refusal on the way.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use meridian_media::{EmbeddedS3, S3Credentials, S3Target};
use meridian_sdk::SdkError;
use meridian_sdk::frames::{PresignedView, UploadSlotView};
use meridian_seams::SharedClock;
use meridian_seams::net::TokioNetwork;
use meridian_wire::ErrorCode;
use sha2::{Digest, Sha256};

use crate::support::{PATIENCE, Regions, TestLog};

/// One embedded S3 server per region, each holding that region's bucket.
struct Buckets {
    servers: BTreeMap<String, EmbeddedS3>,
    targets: BTreeMap<String, S3Target>,
    _dir: tempfile::TempDir,
}

impl Buckets {
    async fn start(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let network = TokioNetwork::shared();
        let mut servers = BTreeMap::new();
        let mut targets = BTreeMap::new();
        for name in names {
            let bucket = format!("media-{name}");
            let listener = network
                .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .expect("bind s3");
            let server = EmbeddedS3::start(
                &dir.path().join(name),
                std::slice::from_ref(&bucket),
                listener,
                "e2e-key",
                "e2e-secret",
            )
            .await
            .expect("embedded s3");
            targets.insert(
                name.to_string(),
                S3Target {
                    endpoint: Some(server.endpoint()),
                    aws_region: "us-east-1".into(),
                    bucket,
                    credentials: S3Credentials::fixed("e2e-key", "e2e-secret"),
                },
            );
            servers.insert(name.to_string(), server);
        }
        Self {
            servers,
            targets,
            _dir: dir,
        }
    }

    async fn regions(&self, names: &[&str]) -> Regions {
        let clock: SharedClock = meridian_seams::SystemClock::shared();
        let deps =
            meridian_region::media::media_deps(&self.targets, &clock, &TokioNetwork::shared());
        Regions::start(names, TestLog::Embedded, |_, options| {
            options.media = deps.clone();
            // Tests run the retention sweep themselves.
            options.core.sweep_interval = std::time::Duration::from_secs(3600);
        })
        .await
    }
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 99]));
    let mut out = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("png");
    out
}

const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A plain HTTP request (no SDK, no AWS code) for a presigned URL.
async fn plain(request: &PresignedView, body: Option<Vec<u8>>) -> reqwest::Response {
    let http = crate::support::http();
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).expect("method");
    let mut call = http.request(method, &request.url);
    for (name, value) in &request.headers {
        call = call.header(name, value);
    }
    if let Some(body) = body {
        call = call.body(body);
    }
    call.send().await.expect("storage reachable")
}

fn code_of(error: SdkError) -> (u16, ErrorCode) {
    match error {
        SdkError::Api { status, code, .. } => (status, code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn upload(rest: &meridian_sdk::Rest, bytes: &[u8], content_type: &str) -> UploadSlotView {
    let slot = rest
        .create_upload(bytes.len() as u64, content_type, &sha256_hex(bytes))
        .await
        .expect("upload slot");
    let put = plain(&slot.upload, Some(bytes.to_vec())).await;
    assert_eq!(put.status(), 200, "presigned PUT: {:?}", put.text().await);
    slot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_sent_in_us_east_is_downloaded_with_its_thumbnail_in_eu_west() {
    let buckets = Buckets::start(&["us-east", "eu-west"]).await;
    let regions = buckets.regions(&["us-east", "eu-west"]).await;
    let alice = regions.user("us-east", "alice").await;
    let bob = regions.user("eu-west", "bob").await;
    let carol = regions.user("eu-west", "carol").await;
    let alice_rest = regions.rest("us-east").with_token(&alice.token);
    let bob_rest = regions.rest("eu-west").with_token(&bob.token);
    let conv = alice_rest
        .direct(&bob.user_id)
        .await
        .expect("direct")
        .conv_id;

    let image = png(1200, 600);
    let slot = upload(&alice_rest, &image, "image/png").await;
    assert!(slot.media.media_id.ends_with("@us-east"));
    assert_eq!(slot.media.state, "pending");
    assert!(slot.upload.expires_ms > 0);
    let media = alice_rest
        .complete_upload(&slot.media.media_id)
        .await
        .expect("complete");
    assert_eq!(media.state, "ready", "{media:?}");
    let thumb = media.thumbnail.clone().expect("thumbnail");
    assert_eq!((thumb.width, thumb.height), (320, 160));

    // The upload URL is still valid: other bytes written through it after
    // the check never reach a recipient (the checked copy is frozen).
    let mut swapped = image.clone();
    let last = swapped.len() - 1;
    swapped[last] ^= 0xff;
    let _ = plain(&slot.upload, Some(swapped)).await;

    let mut alice_client = regions.client("us-east", &alice.token, 1).await;
    let mut bob_client = regions.client("eu-west", &bob.token, 2).await;
    let client_msg_id = alice_client.new_client_msg_id();
    let sent = alice_client
        .session()
        .expect("session")
        .send_with_attachments(
            &conv,
            &client_msg_id,
            "",
            None,
            0,
            std::slice::from_ref(&slot.media.media_id),
        )
        .await
        .expect("send with attachment");
    let arrived = bob_client
        .poll_until(PATIENCE, |c| {
            c.timeline(&conv).iter().any(|m| m.msg_id == sent.msg_id)
        })
        .await
        .expect("poll");
    assert!(arrived, "the message reached eu-west");
    let delivered = bob_client
        .timeline(&conv)
        .into_iter()
        .find(|m| m.msg_id == sent.msg_id)
        .expect("delivered")
        .clone();
    assert_eq!(delivered.attachments.len(), 1);
    let attachment = &delivered.attachments[0];
    assert_eq!(attachment.media_id, slot.media.media_id);
    assert_eq!(attachment.content_type, "image/png");
    assert_eq!(attachment.sha256, sha256_hex(&image));
    assert_eq!(attachment.thumbnail.as_ref(), Some(&thumb));

    // Bob (homed in eu-west) downloads from us-east's bucket.
    let download = bob_rest
        .media_download(&conv, &sent.msg_id, &slot.media.media_id)
        .await
        .expect("download urls");
    assert!(download.download.url.contains("media-us-east"));
    let body = plain(&download.download, None).await;
    assert_eq!(body.status(), 200);
    assert_eq!(
        body.bytes().await.expect("bytes").as_ref(),
        image.as_slice()
    );
    let thumb_url = download.thumbnail.expect("thumbnail url");
    let thumb_bytes = plain(&thumb_url, None)
        .await
        .bytes()
        .await
        .expect("thumbnail");
    let decoded = image::load_from_memory_with_format(&thumb_bytes, image::ImageFormat::Jpeg)
        .expect("thumbnail is a JPEG");
    assert_eq!((decoded.width(), decoded.height()), (320, 160));

    // A download URL names its object: changing the key breaks the signature.
    let mut forged = download.download.clone();
    forged.url = forged.url.replace("/media/", "/media/x");
    assert_eq!(plain(&forged, None).await.status(), 403);

    // Carol is not a member: refused. An id the message does not carry: 404.
    let carol_rest = regions.rest("eu-west").with_token(&carol.token);
    let refused = carol_rest
        .media_download(&conv, &sent.msg_id, &slot.media.media_id)
        .await
        .expect_err("non-member");
    assert_eq!(code_of(refused), (404, ErrorCode::NotFound));
    let missing = bob_rest
        .media_download(
            &conv,
            &sent.msg_id,
            "01234567-89ab-cdef-0123-456789abcdef@us-east",
        )
        .await
        .expect_err("not carried");
    assert_eq!(code_of(missing), (404, ErrorCode::NotFound));
    regions.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_a_stopped_storage_leaves_text_working() {
    let mut buckets = Buckets::start(&["us-east"]).await;
    let regions = buckets.regions(&["us-east"]).await;
    let alice = regions.user("us-east", "alice").await;
    let bob = regions.user("us-east", "bob").await;
    let alice_rest = regions.rest("us-east").with_token(&alice.token);
    let bob_rest = regions.rest("us-east").with_token(&bob.token);
    let conv = alice_rest
        .direct(&bob.user_id)
        .await
        .expect("direct")
        .conv_id;

    // Refused at the slot: too large, a type off the allow-list, a bad hash.
    let too_large = alice_rest
        .create_upload(101 * 1024 * 1024, "video/mp4", &sha256_hex(b"x"))
        .await
        .expect_err("too large");
    assert_eq!(code_of(too_large), (422, ErrorCode::MediaTooLarge));
    let wrong_type = alice_rest
        .create_upload(10, "application/x-msdownload", &sha256_hex(b"x"))
        .await
        .expect_err("type");
    assert_eq!(code_of(wrong_type), (422, ErrorCode::UnsupportedMediaType));
    let bad_hash = alice_rest
        .create_upload(10, "image/png", "not-hex")
        .await
        .expect_err("hash");
    assert_eq!(code_of(bad_hash), (400, ErrorCode::BadRequest));

    // Refused by the storage: more bytes than declared, a tampered URL.
    let image = png(64, 64);
    let slot = alice_rest
        .create_upload(image.len() as u64, "image/png", &sha256_hex(&image))
        .await
        .expect("slot");
    let http = crate::support::http();
    let mut longer = image.clone();
    longer.extend_from_slice(b"trailing");
    let mut put = http.put(&slot.upload.url).body(longer);
    for (name, value) in &slot.upload.headers {
        if name != "content-length" {
            put = put.header(name, value);
        }
    }
    assert_eq!(
        put.send().await.expect("put").status(),
        403,
        "size is signed"
    );
    let mut tampered = slot.upload.clone();
    tampered.url = tampered
        .url
        .replace("X-Amz-Expires=900", "X-Amz-Expires=9000");
    assert_eq!(plain(&tampered, Some(image.clone())).await.status(), 403);

    // Completing before uploading, and sending media not yet checked.
    let early = alice_rest
        .complete_upload(&slot.media.media_id)
        .await
        .expect_err("nothing uploaded");
    assert_eq!(code_of(early), (409, ErrorCode::MediaNotUploaded));
    let mut alice_client = regions.client("us-east", &alice.token, 1).await;
    let mut bob_client = regions.client("us-east", &bob.token, 2).await;
    let attach = |id: &str| vec![id.to_string()];
    let client_msg_id = alice_client.new_client_msg_id();
    let not_ready = alice_client
        .session()
        .expect("session")
        .send_with_attachments(
            &conv,
            &client_msg_id,
            "",
            None,
            0,
            &attach(&slot.media.media_id),
        )
        .await
        .expect_err("not checked");
    assert!(
        not_ready.code() == Some(ErrorCode::MediaNotReady),
        "{not_ready:?}"
    );

    // A PDF declared as a PNG passes the storage (size and hash match) and
    // is rejected by the check; it can never be sent.
    let disguised = upload(&alice_rest, PDF, "image/png").await;
    let rejected = alice_rest
        .complete_upload(&disguised.media.media_id)
        .await
        .expect("complete");
    assert_eq!(rejected.state, "rejected");
    assert_eq!(rejected.reason.as_deref(), Some("type_mismatch"));
    let client_msg_id = alice_client.new_client_msg_id();
    let refused = alice_client
        .session()
        .expect("session")
        .send_with_attachments(
            &conv,
            &client_msg_id,
            "",
            None,
            0,
            &attach(&disguised.media.media_id),
        )
        .await
        .expect_err("rejected media");
    assert!(
        refused.code() == Some(ErrorCode::MediaRejected),
        "{refused:?}"
    );

    // Bob cannot attach (or even see) alice's upload.
    let good = upload(&alice_rest, PDF, "application/pdf").await;
    assert_eq!(
        alice_rest
            .complete_upload(&good.media.media_id)
            .await
            .expect("complete")
            .state,
        "ready"
    );
    let hidden = bob_rest
        .media(&good.media.media_id)
        .await
        .expect_err("not bob's");
    assert_eq!(code_of(hidden), (404, ErrorCode::NotFound));
    let client_msg_id = bob_client.new_client_msg_id();
    let stolen = bob_client
        .session()
        .expect("session")
        .send_with_attachments(
            &conv,
            &client_msg_id,
            "",
            None,
            0,
            &attach(&good.media.media_id),
        )
        .await
        .expect_err("not bob's media");
    assert!(stolen.code() == Some(ErrorCode::NotFound), "{stolen:?}");

    // The storage stops: upload slots are refused with 503, text goes on.
    let server = buckets.servers.remove("us-east").expect("server");
    server.stop().await;
    let down = alice_rest
        .create_upload(image.len() as u64, "image/png", &sha256_hex(&image))
        .await
        .expect_err("storage down");
    assert_eq!(code_of(down), (503, ErrorCode::MediaUnavailable));
    let client_msg_id = alice_client.new_client_msg_id();
    let text = alice_client
        .send(&conv, &client_msg_id, "still here", None)
        .await
        .expect("text send");
    let arrived = bob_client
        .poll_until(PATIENCE, |c| {
            c.timeline(&conv).iter().any(|m| m.msg_id == text.msg_id)
        })
        .await
        .expect("poll");
    assert!(arrived, "text messaging works without object storage");
    regions.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_expires_with_its_messages() {
    let buckets = Buckets::start(&["us-east"]).await;
    let regions = buckets.regions(&["us-east"]).await;
    let alice = regions.user("us-east", "alice").await;
    let bob = regions.user("us-east", "bob").await;
    let alice_rest = regions.rest("us-east").with_token(&alice.token);
    let bob_rest = regions.rest("us-east").with_token(&bob.token);
    let conv = alice_rest
        .direct(&bob.user_id)
        .await
        .expect("direct")
        .conv_id;
    let image = png(400, 400);
    let sent_media = upload(&alice_rest, &image, "image/png").await;
    assert_eq!(
        alice_rest
            .complete_upload(&sent_media.media.media_id)
            .await
            .expect("complete")
            .state,
        "ready"
    );
    // An upload that was never completed.
    let abandoned = upload(&alice_rest, PDF, "application/pdf").await;
    let mut alice_client = regions.client("us-east", &alice.token, 1).await;
    let client_msg_id = alice_client.new_client_msg_id();
    let sent = alice_client
        .session()
        .expect("session")
        .send_with_attachments(
            &conv,
            &client_msg_id,
            "look",
            None,
            0,
            std::slice::from_ref(&sent_media.media.media_id),
        )
        .await
        .expect("send");
    let bucket = meridian_media::Bucket::new(
        &buckets.targets["us-east"],
        meridian_seams::SystemClock::shared(),
        &TokioNetwork::shared(),
    );
    let key = |id: &str| meridian_core::media::object_key(id);
    assert!(
        bucket
            .head(&key(&sent_media.media.media_id))
            .await
            .expect("head")
            .is_some()
    );

    // A sweep now deletes nothing.
    let region = &regions.handles["us-east"];
    let sweeper = meridian_core::retention::Sweeper::new(region.messaging.clone());
    assert_eq!(sweeper.sweep_once().await.expect("sweep").media_deleted, 0);

    // 31 days later both are gone, with the message that carried one. The
    // skew moves the wall clock alone, which a running sweeper takes for a
    // clock jump and prunes nothing (`a_forward_wall_clock_jump_prunes_nothing`
    // in retention.rs); a sweeper started after it, as after a restart,
    // trusts the wall clock.
    regions.clocks["us-east"].set_skew_millis(31 * 24 * 3600 * 1000);
    let sweeper = meridian_core::retention::Sweeper::new(region.messaging.clone());
    let report = sweeper.sweep_once().await.expect("sweep");
    assert_eq!(report.media_deleted, 2, "{report:?}");
    let upload = |id: &str| meridian_core::media::upload_key(id);
    for id in [&sent_media.media.media_id, &abandoned.media.media_id] {
        assert_eq!(bucket.head(&key(id)).await.expect("head"), None, "{id}");
        assert_eq!(bucket.head(&upload(id)).await.expect("head"), None, "{id}");
    }
    assert_eq!(
        bucket
            .head(&meridian_core::media::thumbnail_key(
                &sent_media.media.media_id
            ))
            .await
            .expect("head"),
        None
    );
    let gone = bob_rest
        .media_download(&conv, &sent.msg_id, &sent_media.media.media_id)
        .await
        .expect_err("pruned");
    assert_eq!(code_of(gone), (404, ErrorCode::NotFound));
    let record = alice_rest
        .media(&sent_media.media.media_id)
        .await
        .expect_err("record gone");
    assert_eq!(code_of(record), (404, ErrorCode::NotFound));
    regions.stop().await;
}
