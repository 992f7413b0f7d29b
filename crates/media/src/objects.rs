//! One region's bucket through aws-sdk-s3: presigned uploads and downloads,
//! reads for the checks, thumbnail writes, deletes.
//!
//! The same code talks to AWS S3 in production and to the embedded S3
//! server (`crate::embedded`) in local runs and tests; only the endpoint and
//! credentials differ.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use meridian_seams::SharedClock;
use meridian_seams::net::SharedNetwork;

use crate::presigned::Presigned;
use crate::seam_http::SeamHttpClient;

/// Where a region's media bucket is and how to sign for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    /// `http(s)://host:port` of an S3-compatible endpoint; `None` for AWS S3.
    pub endpoint: Option<String>,
    /// The AWS region name used in signatures (`us-east-1`).
    pub aws_region: String,
    /// The bucket.
    pub bucket: String,
    /// How requests (and presigned URLs) are signed.
    pub credentials: S3Credentials,
}

/// How requests to a bucket are signed.
#[derive(Clone, PartialEq, Eq)]
pub enum S3Credentials {
    /// Fixed keys: the embedded server of local runs, S3-compatible stores.
    Static {
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
    },
    /// The AWS credential chain, first that answers: the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`),
    /// the container credentials endpoint, the EC2 instance profile
    /// (IMDSv2). Its credentials are temporary and refreshed before they
    /// expire; a presigned URL lasts the shorter of its own lifetime and
    /// what was left of the credentials that signed it.
    AwsChain,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        match self {
            Self::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .finish_non_exhaustive(),
            Self::AwsChain => f.write_str("AwsChain"),
        }
    }
}

impl S3Credentials {
    /// Fixed keys.
    pub fn fixed(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self::Static {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
        }
    }

    /// The SDK's provider of these credentials.
    fn provider(&self) -> aws_sdk_s3::config::SharedCredentialsProvider {
        use aws_config::ecs::EcsCredentialsProvider;
        use aws_config::environment::EnvironmentVariableCredentialsProvider;
        use aws_config::imds::credentials::ImdsCredentialsProvider;
        use aws_config::meta::credentials::CredentialsProviderChain;
        use aws_sdk_s3::config::SharedCredentialsProvider;
        match self {
            Self::Static {
                access_key_id,
                secret_access_key,
            } => SharedCredentialsProvider::new(Credentials::new(
                access_key_id.clone(),
                secret_access_key.clone(),
                None,
                None,
                "meridian-static-keys",
            )),
            // Not the SDK's whole default chain: no profile files, SSO or
            // credential processes on a server.
            Self::AwsChain => SharedCredentialsProvider::new(
                CredentialsProviderChain::first_try(
                    "Environment",
                    EnvironmentVariableCredentialsProvider::new(),
                )
                .or_else("EcsContainer", EcsCredentialsProvider::builder().build())
                .or_else(
                    "Ec2InstanceProfile",
                    ImdsCredentialsProvider::builder().build(),
                ),
            ),
        }
    }
}

/// An object-storage failure.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The object does not exist.
    #[error("no such object")]
    NotFound,
    /// The storage could not be reached or answered 5xx: retry later.
    #[error("object storage unavailable: {0}")]
    Unavailable(String),
    /// The storage refused the request (4xx other than 404).
    #[error("object storage refused the request: {0}")]
    Refused(String),
    /// A presigned request could not be built (bad expiry or input).
    #[error("cannot presign: {0}")]
    Presign(String),
}

impl ObjectError {
    fn from_sdk<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
        error: SdkError<E, R>,
        status: Option<u16>,
    ) -> Self {
        match &error {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
                Self::Unavailable(format!("{error:?}"))
            }
            _ => match status {
                Some(404) => Self::NotFound,
                Some(s) if s >= 500 => Self::Unavailable(format!("status {s}")),
                Some(s) => {
                    Self::Refused(format!("status {s}: {}", error.code().unwrap_or("no code")))
                }
                None => Self::Unavailable(format!("{error:?}")),
            },
        }
    }
}

fn status_of<E, R: HasStatus>(error: &SdkError<E, R>) -> Option<u16> {
    error.raw_response().map(HasStatus::status_code)
}

/// Responses whose HTTP status classifies an error.
trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

macro_rules! sdk_call {
    ($call:expr) => {
        match $call.await {
            Ok(output) => Ok(output),
            Err(error) => {
                let status = status_of(&error);
                Err(ObjectError::from_sdk(error, status))
            }
        }
    };
}

fn presigned(request: &aws_sdk_s3::presigning::PresignedRequest, expires_ms: u64) -> Presigned {
    Presigned {
        method: request.method().to_string(),
        url: request.uri().to_string(),
        headers: request
            .headers()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        expires_ms,
    }
}

/// An object's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Bytes.
    pub size: u64,
    /// The stored `Content-Type`.
    pub content_type: Option<String>,
}

/// The injected clock as the SDK's time source, so signatures (and their
/// expiry) follow the seam.
struct SeamTime(SharedClock);

impl std::fmt::Debug for SeamTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeamTime")
    }
}

impl aws_smithy_async::time::TimeSource for SeamTime {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.wall_millis())
    }
}

/// The budget of a storage call made while a client waits (a bucket's
/// health before an upload slot, the `HEAD` of `complete`): one attempt of
/// at most 1.5 s, so the request answers `media_unavailable` well inside the
/// gateway's 5 s deadline instead of timing out there while the core still
/// waits on the storage.
const REQUEST_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);

/// One bucket, through aws-sdk-s3.
#[derive(Clone)]
pub struct Bucket {
    client: aws_sdk_s3::Client,
    bucket: String,
    clock: SharedClock,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl Bucket {
    /// A client of `target`'s bucket. Calls time out after 10 s (connect:
    /// 2 s) and are tried twice, so an unreachable storage answers quickly
    /// with [`ObjectError::Unavailable`]; the calls a client waits on
    /// ([`Bucket::check_reachable`], [`Bucket::head`]) get one attempt of
    /// 1.5 s. A plain-HTTP endpoint (the
    /// embedded server) is reached through `network`, the network seam;
    /// HTTPS endpoints (AWS S3) through the SDK's own TLS client.
    pub fn new(target: &S3Target, clock: SharedClock, network: &SharedNetwork) -> Self {
        let mut config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(target.aws_region.clone()))
            .credentials_provider(target.credentials.provider())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .time_source(SeamTime(clock.clone()));
        if let Some(endpoint) = &target.endpoint {
            // S3-compatible servers serve buckets by path, not by host name.
            config = config.endpoint_url(endpoint).force_path_style(true);
            if endpoint.starts_with("http://") {
                config = config.http_client(SeamHttpClient::new(network.clone()));
            }
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket: target.bucket.clone(),
            clock,
        }
    }

    /// The configuration override of a call a client waits on.
    fn request_budget() -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default()
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(REQUEST_CONNECT_TIMEOUT)
                    .operation_attempt_timeout(REQUEST_ATTEMPT_TIMEOUT)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(1))
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.bucket
    }

    fn presigning(&self, ttl: Duration) -> Result<(PresigningConfig, u64), ObjectError> {
        let now_ms = self.clock.wall_millis();
        let config = PresigningConfig::builder()
            .start_time(UNIX_EPOCH + Duration::from_millis(now_ms))
            .expires_in(ttl)
            .build()
            .map_err(|e| ObjectError::Presign(e.to_string()))?;
        Ok((config, now_ms + ttl.as_millis() as u64))
    }

    /// A presigned PUT of `key` bound to its size, type and SHA-256: the
    /// storage refuses a body of another length, another `Content-Type`
    /// (both are signed headers) or other bytes (the checksum header).
    ///
    /// # Errors
    /// [`ObjectError::Presign`] for an expiry beyond a week.
    pub async fn presign_put(
        &self,
        key: &str,
        size: u64,
        content_type: &str,
        sha256: &[u8; 32],
        ttl: Duration,
    ) -> Result<Presigned, ObjectError> {
        use base64::Engine as _;
        let (config, expires_ms) = self.presigning(ttl)?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .content_type(content_type)
            .checksum_sha256(base64::engine::general_purpose::STANDARD.encode(sha256))
            .presigned(config)
            .await
            .map_err(|e| ObjectError::Presign(format!("{e:?}")))?;
        Ok(presigned(&request, expires_ms))
    }

    /// A presigned GET of `key`.
    ///
    /// # Errors
    /// [`ObjectError::Presign`] for an expiry beyond a week.
    pub async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Presigned, ObjectError> {
        let (config, expires_ms) = self.presigning(ttl)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| ObjectError::Presign(format!("{e:?}")))?;
        Ok(presigned(&request, expires_ms))
    }

    /// Whether the bucket answers: a cheap `HeadBucket` (one attempt of
    /// 1.5 s).
    ///
    /// # Errors
    /// [`ObjectError::Unavailable`] when the storage cannot be reached.
    pub async fn check_reachable(&self) -> Result<(), ObjectError> {
        sdk_call!(
            self.client
                .head_bucket()
                .bucket(&self.bucket)
                .customize()
                .config_override(Self::request_budget())
                .send()
        )?;
        Ok(())
    }

    /// Creates the bucket when it does not exist (local runs).
    ///
    /// # Errors
    /// When the storage refuses or cannot be reached.
    pub async fn ensure_exists(&self) -> Result<(), ObjectError> {
        match self.check_reachable().await {
            Ok(()) => Ok(()),
            Err(ObjectError::NotFound) => {
                sdk_call!(self.client.create_bucket().bucket(&self.bucket).send())?;
                Ok(())
            }
            Err(other) => Err(other),
        }
    }

    /// The object's metadata, or `None` when it does not exist (one
    /// attempt of 1.5 s).
    ///
    /// # Errors
    /// When the storage fails.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        match sdk_call!(
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .customize()
                .config_override(Self::request_budget())
                .send()
        ) {
            Ok(out) => Ok(Some(ObjectMeta {
                size: out
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                content_type: out.content_type().map(str::to_string),
            })),
            Err(ObjectError::NotFound) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Streams the object's bytes.
    ///
    /// # Errors
    /// [`ObjectError::NotFound`], or a storage failure.
    pub async fn read(&self, key: &str) -> Result<ObjectReader, ObjectError> {
        let out = sdk_call!(
            self.client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
        )?;
        Ok(ObjectReader { body: out.body })
    }

    /// Writes a small object (thumbnails).
    ///
    /// # Errors
    /// When the storage fails.
    pub async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), ObjectError> {
        sdk_call!(
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(content_type)
                .body(ByteStream::from(bytes))
                .send()
        )?;
        Ok(())
    }

    /// Copies `from` to `to` inside the bucket (server side).
    ///
    /// # Errors
    /// [`ObjectError::NotFound`] when `from` does not exist; storage failures.
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), ObjectError> {
        sdk_call!(
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .copy_source(format!("{}/{from}", self.bucket))
                .key(to)
                .send()
        )?;
        Ok(())
    }

    /// Deletes an object (absent objects are not an error).
    ///
    /// # Errors
    /// When the storage fails.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match sdk_call!(
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
        ) {
            Ok(_) | Err(ObjectError::NotFound) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

/// An object's bytes, chunk by chunk.
#[derive(Debug)]
pub struct ObjectReader {
    body: ByteStream,
}

impl ObjectReader {
    /// The next chunk, or `None` at the end.
    ///
    /// # Errors
    /// [`ObjectError::Unavailable`] when the transfer breaks.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ObjectError> {
        match self.body.next().await {
            None => Ok(None),
            Some(Ok(bytes)) => Ok(Some(bytes)),
            Some(Err(e)) => Err(ObjectError::Unavailable(e.to_string())),
        }
    }
}

/// Every region's bucket, by region name: presigning a download uses the
/// bucket of the region where the media was uploaded.
pub type Buckets = Arc<std::collections::BTreeMap<String, Bucket>>;
