//! `meridian storage-check`: whether this host can use the media buckets
//! as a region's core does, with the credentials the core would use —
//! what an operator runs on a core host after provisioning, before trusting
//! uploads to it.
//!
//! The region's own bucket gets a probe object written, read back and
//! deleted (the core's rights on it); every other region's bucket gets a
//! download presigned (the core signs such URLs for media uploaded there;
//! signing needs credentials, not a call).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use meridian_region::config::Deployment;
use meridian_region::media::{Bucket, S3Credentials, S3Target};
use meridian_region::plan::{self, BucketPlan, Plan, PlanOptions};
use meridian_seams::SystemClock;
use meridian_seams::net::TokioNetwork;

/// `meridian storage-check`.
#[derive(clap::Args)]
pub struct StorageCheckArgs {
    /// Directory of region files.
    #[arg(long, default_value = "regions", env = "MERIDIAN_REGIONS_DIR")]
    regions_dir: PathBuf,
    /// Which addresses and credentials of the region files to use.
    #[arg(long, value_enum, default_value = "production")]
    profile: crate::deploy::Profile,
    /// The region whose core this host runs.
    #[arg(long)]
    region: String,
}

/// Runs `meridian storage-check`, printing one line per check.
///
/// # Errors
/// The first check that fails, with what the storage answered.
pub async fn run(args: StorageCheckArgs) -> anyhow::Result<()> {
    let plan = Plan::new(
        Deployment::load(&args.regions_dir)?,
        PlanOptions {
            profile: args.profile.into(),
            ..PlanOptions::default()
        },
    );
    let own = plan.deployment().region(&args.region)?.name.clone();
    let targets: Vec<(String, S3Target)> = plan
        .buckets(&[])?
        .into_iter()
        .filter_map(|(region, bucket)| match bucket {
            BucketPlan::Remote(target) => Some((region, target)),
            BucketPlan::Embedded { .. } => None,
        })
        .collect();
    let clock = SystemClock::shared();
    let network = TokioNetwork::shared();
    let own_target = targets
        .iter()
        .find(|(region, _)| *region == own)
        .map(|(_, target)| target)
        .with_context(|| format!("region {own} has no [s3] bucket"))?;
    println!("credentials: {}", describe(&own_target.credentials));
    for (region, target) in &targets {
        let bucket = Bucket::new(target, clock.clone(), &network);
        if *region == own {
            round_trip(&bucket)
                .await
                .with_context(|| format!("{region}: bucket {}", target.bucket))?;
            println!(
                "{region}: bucket {}: wrote, read back and deleted a probe object",
                target.bucket
            );
        } else {
            bucket
                .presign_get("meridian-storage-check", Duration::from_secs(60))
                .await
                .with_context(|| format!("{region}: presigning for bucket {}", target.bucket))?;
            println!("{region}: bucket {}: presigned a download", target.bucket);
        }
    }
    println!("storage check passed");
    Ok(())
}

/// Where the signing keys come from.
fn describe(credentials: &S3Credentials) -> &'static str {
    match credentials {
        S3Credentials::Static { .. } => "static keys (MERIDIAN_S3_ACCESS_KEY_ID)",
        S3Credentials::AwsChain => "the AWS chain (environment, container, instance profile)",
    }
}

/// Writes a probe object, reads it back, deletes it.
async fn round_trip(bucket: &Bucket) -> anyhow::Result<()> {
    let key = format!(
        "meridian-storage-check/{}",
        SystemClock::shared().wall_millis()
    );
    let body = format!("probe {key}").into_bytes();
    bucket
        .put(&key, body.clone(), "text/plain")
        .await
        .context("writing a probe object")?;
    let mut reader = bucket.read(&key).await.context("reading it back")?;
    let mut read = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.context("reading it back")? {
        read.extend_from_slice(&chunk);
    }
    anyhow::ensure!(read == body, "the probe object read back differs");
    bucket.delete(&key).await.context("deleting it")?;
    Ok(())
}

impl From<crate::deploy::Profile> for plan::Profile {
    fn from(profile: crate::deploy::Profile) -> Self {
        match profile {
            crate::deploy::Profile::Local => Self::Local,
            crate::deploy::Profile::Production => Self::Production,
        }
    }
}
