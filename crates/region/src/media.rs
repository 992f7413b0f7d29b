//! Media wiring: every region's bucket as the core sees it, and the
//! embedded S3 server of local runs. Re-exports the media types a caller
//! wires with ([`S3Target`], [`Bucket`], [`EmbeddedS3`], and [`MemoryS3`],
//! the in-memory backend of simulated S3 hosts).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use meridian_core::MediaDeps;
pub use meridian_media::memory::MemoryS3;
pub use meridian_media::{Bucket, EmbeddedS3, S3Credentials, S3Target};
use meridian_seams::net::SharedNetwork;
use meridian_seams::{Offload, SharedClock};

use crate::config::RegionConfig;

/// The access key of the embedded S3 servers of local runs.
pub const LOCAL_ACCESS_KEY_ID: &str = "meridian-local";

/// The secret of the embedded S3 servers of local runs (loopback only),
/// unless `MERIDIAN_S3_SECRET_ACCESS_KEY` says otherwise.
pub const LOCAL_SECRET_ACCESS_KEY: &str = "meridian-local-secret";

/// The credentials of production buckets: `MERIDIAN_S3_ACCESS_KEY_ID` and
/// `MERIDIAN_S3_SECRET_ACCESS_KEY` when both are set (an S3-compatible
/// store's keys), else the AWS credential chain (environment, container,
/// EC2 instance profile).
pub fn production_credentials() -> S3Credentials {
    let key = std::env::var("MERIDIAN_S3_ACCESS_KEY_ID").ok();
    let secret = std::env::var("MERIDIAN_S3_SECRET_ACCESS_KEY").ok();
    match key.zip(secret) {
        Some((key, secret)) => S3Credentials::fixed(key, secret),
        None => S3Credentials::AwsChain,
    }
}

/// The local secret (overridable through the environment).
pub fn local_secret() -> String {
    std::env::var("MERIDIAN_S3_SECRET_ACCESS_KEY")
        .unwrap_or_else(|_| LOCAL_SECRET_ACCESS_KEY.to_string())
}

/// A region's bucket served by a local embedded server at `endpoint`,
/// reached at the region's `[s3] endpoint` instead when it names one (a
/// proxy in front of the server: the chaos suite's way to take a region's
/// storage down).
pub fn local_target(region: &RegionConfig, endpoint: String) -> Option<S3Target> {
    let s3 = region.s3.as_ref()?;
    Some(S3Target {
        endpoint: Some(s3.endpoint.clone().unwrap_or(endpoint)),
        aws_region: s3.signing_region(),
        bucket: s3.bucket.clone(),
        credentials: S3Credentials::fixed(LOCAL_ACCESS_KEY_ID, local_secret()),
    })
}

/// Starts `region`'s embedded S3 server on `listen` with its data under
/// `dir`, holding the region's bucket.
///
/// # Errors
/// When the region has no `[s3]`, or the address or directory is unusable.
pub async fn start_embedded_s3(
    region: &RegionConfig,
    listen: SocketAddr,
    dir: &Path,
    network: &SharedNetwork,
) -> anyhow::Result<(EmbeddedS3, S3Target)> {
    let s3 = region
        .s3
        .as_ref()
        .with_context(|| format!("region {} has no [s3] bucket", region.name))?;
    let listener = network
        .bind(listen)
        .await
        .with_context(|| format!("binding the embedded S3 server on {listen}"))?;
    let server = EmbeddedS3::start(
        dir,
        std::slice::from_ref(&s3.bucket),
        listener,
        LOCAL_ACCESS_KEY_ID,
        &local_secret(),
    )
    .await
    .with_context(|| format!("starting region {}'s embedded S3 server", region.name))?;
    let target = local_target(region, server.endpoint())
        .with_context(|| format!("region {} has no [s3] bucket", region.name))?;
    Ok((server, target))
}

/// The media dependencies of a core: a client of every region's bucket.
pub fn media_deps(
    targets: &BTreeMap<String, S3Target>,
    clock: &SharedClock,
    network: &SharedNetwork,
) -> MediaDeps {
    MediaDeps {
        buckets: targets
            .iter()
            .map(|(region, target)| (region.clone(), Bucket::new(target, clock.clone(), network)))
            .collect(),
        offload: Offload::BlockingPool,
    }
}
