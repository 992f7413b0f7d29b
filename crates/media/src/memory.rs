//! An in-memory S3 backend for `s3s`: the object operations Meridian uses
//! (bucket head/create, object put/get/head/delete), with the SHA-256
//! checksum of a PUT verified as S3 does. The deterministic simulation
//! serves it over simulated TCP, where `s3s-fs`'s blocking file I/O (threads)
//! would make a seed irreproducible; the protocol layer (`s3s`, SigV4
//! included) is the same as in production.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use futures::TryStreamExt;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
struct Object {
    bytes: Bytes,
    content_type: Option<String>,
}

#[derive(Debug, Default)]
struct Buckets {
    buckets: BTreeMap<String, BTreeMap<String, Object>>,
}

/// The in-memory backend; clones share the same objects.
#[derive(Debug, Clone, Default)]
pub struct MemoryS3 {
    state: Arc<Mutex<Buckets>>,
}

impl MemoryS3 {
    /// A backend holding `buckets`, empty.
    pub fn new(buckets: &[String]) -> Self {
        let state = Buckets {
            buckets: buckets
                .iter()
                .map(|name| (name.clone(), BTreeMap::new()))
                .collect(),
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Buckets) -> T) -> T {
        // A panic while holding the lock cannot leave a half-written object:
        // every mutation is a single insert or remove.
        let mut guard = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    fn object(&self, bucket: &str, key: &str) -> S3Result<Object> {
        self.with(|state| {
            let objects = state
                .buckets
                .get(bucket)
                .ok_or_else(|| s3_error!(NoSuchBucket))?;
            objects
                .get(key)
                .cloned()
                .ok_or_else(|| s3_error!(NoSuchKey))
        })
    }
}

#[async_trait::async_trait]
impl S3 for MemoryS3 {
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let exists = self.with(|state| state.buckets.contains_key(&req.input.bucket));
        if exists {
            Ok(S3Response::new(HeadBucketOutput::default()))
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.with(|state| {
            state.buckets.entry(req.input.bucket).or_default();
        });
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let Some(body) = input.body else {
            return Err(s3_error!(IncompleteBody));
        };
        let chunks: Vec<Bytes> = body
            .try_collect()
            .await
            .map_err(|_| s3_error!(IncompleteBody))?;
        let bytes = Bytes::from(chunks.concat());
        let sha256 = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes));
        if input
            .checksum_sha256
            .as_ref()
            .is_some_and(|declared| *declared != sha256)
        {
            return Err(s3_error!(BadDigest, "checksum_sha256 mismatch"));
        }
        let object = Object {
            bytes,
            content_type: input.content_type,
        };
        self.with(|state| {
            let objects = state
                .buckets
                .get_mut(&input.bucket)
                .ok_or_else(|| s3_error!(NoSuchBucket))?;
            objects.insert(input.key, object);
            Ok::<_, s3s::S3Error>(())
        })?;
        Ok(S3Response::new(PutObjectOutput {
            checksum_sha256: Some(sha256),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let object = self.object(&req.input.bucket, &req.input.key)?;
        Ok(S3Response::new(GetObjectOutput {
            content_length: Some(object.bytes.len() as i64),
            content_type: object.content_type,
            body: Some(StreamingBlob::from(s3s::Body::from(object.bytes))),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let CopySource::Bucket { bucket, key, .. } = &req.input.copy_source else {
            return Err(s3_error!(NotImplemented, "copy from an access point"));
        };
        let object = self.object(bucket, key)?;
        self.with(|state| {
            let objects = state
                .buckets
                .get_mut(&req.input.bucket)
                .ok_or_else(|| s3_error!(NoSuchBucket))?;
            objects.insert(req.input.key.clone(), object);
            Ok::<_, s3s::S3Error>(())
        })?;
        Ok(S3Response::new(CopyObjectOutput::default()))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let object = self.object(&req.input.bucket, &req.input.key)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(object.bytes.len() as i64),
            content_type: object.content_type,
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.with(|state| {
            if let Some(objects) = state.buckets.get_mut(&req.input.bucket) {
                objects.remove(&req.input.key);
            }
        });
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }
}
