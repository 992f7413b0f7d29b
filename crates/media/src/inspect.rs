//! The check of an uploaded object, in one pass over its bytes: its size and
//! SHA-256 against what was declared, its first bytes against its declared
//! type, and for images a thumbnail.

use meridian_seams::Offload;
use sha2::{Digest, Sha256};

use crate::objects::{Bucket, ObjectError};
use crate::thumbnail::{Thumbnail, make_thumbnail};
use crate::types::{SNIFF_BYTES, TypeMismatch, check_content, thumbnailable};

/// Largest image a thumbnail is made from (held in memory to decode); a
/// larger image is accepted without a thumbnail.
pub const MAX_THUMBNAIL_SOURCE: u64 = 32 * 1024 * 1024;

/// What the uploader declared when asking for the upload slot.
#[derive(Debug, Clone, Copy)]
pub struct Declared<'a> {
    /// Normalized content type.
    pub content_type: &'a str,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: &'a [u8; 32],
}

/// Why an upload is refused for good (retrying cannot help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The object does not exist: never uploaded.
    #[error("nothing was uploaded")]
    NotUploaded,
    /// Its length is not the declared size.
    #[error("uploaded {actual} bytes, declared {declared}")]
    SizeMismatch {
        /// Declared.
        declared: u64,
        /// Stored.
        actual: u64,
    },
    /// Its SHA-256 is not the declared one.
    #[error("content does not match the declared sha256")]
    ChecksumMismatch,
    /// Its bytes are not of the declared type.
    #[error(transparent)]
    TypeMismatch(#[from] TypeMismatch),
    /// It claims to be an image but does not decode.
    #[error("{0}")]
    Undecodable(String),
}

impl Rejection {
    /// A stable code for the reason (`media_type_mismatch`…), shown to clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotUploaded => "not_uploaded",
            Self::SizeMismatch { .. } => "size_mismatch",
            Self::ChecksumMismatch => "checksum_mismatch",
            Self::TypeMismatch(_) => "type_mismatch",
            Self::Undecodable(_) => "undecodable_image",
        }
    }
}

/// Why an inspection did not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The upload is refused.
    #[error("upload refused: {0}")]
    Rejected(#[from] Rejection),
    /// The storage failed: try again later.
    #[error(transparent)]
    Storage(#[from] ObjectError),
}

/// The result of a passed inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// For images: the thumbnail, not yet stored.
    pub thumbnail: Option<Thumbnail>,
}

/// Reads the object at `key` once and checks it against `declared`.
///
/// # Errors
/// [`InspectError::Rejected`] when the object is not what was declared;
/// [`InspectError::Storage`] when it cannot be read (retry).
pub async fn inspect(
    bucket: &Bucket,
    key: &str,
    declared: Declared<'_>,
    offload: Offload,
) -> Result<Inspection, InspectError> {
    let Some(meta) = bucket.head(key).await? else {
        return Err(Rejection::NotUploaded.into());
    };
    if meta.size != declared.size {
        return Err(Rejection::SizeMismatch {
            declared: declared.size,
            actual: meta.size,
        }
        .into());
    }
    let keep_all = thumbnailable(declared.content_type) && declared.size <= MAX_THUMBNAIL_SOURCE;
    let mut reader = bucket.read(key).await?;
    let mut hasher = Sha256::new();
    let mut kept: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    let mut sniffed = false;
    while let Some(chunk) = reader.next_chunk().await? {
        total += chunk.len() as u64;
        if total > declared.size {
            // The object changed under us (overwritten by a longer upload).
            return Err(Rejection::SizeMismatch {
                declared: declared.size,
                actual: total,
            }
            .into());
        }
        hasher.update(&chunk);
        if keep_all || kept.len() < SNIFF_BYTES {
            kept.extend_from_slice(&chunk);
        }
        if !sniffed && kept.len() >= SNIFF_BYTES {
            check_content(declared.content_type, &kept).map_err(Rejection::from)?;
            sniffed = true;
        }
    }
    if total != declared.size {
        return Err(Rejection::SizeMismatch {
            declared: declared.size,
            actual: total,
        }
        .into());
    }
    if !sniffed {
        check_content(declared.content_type, &kept).map_err(Rejection::from)?;
    }
    if hasher.finalize().as_slice() != declared.sha256 {
        return Err(Rejection::ChecksumMismatch.into());
    }
    if !keep_all {
        return Ok(Inspection { thumbnail: None });
    }
    let content_type = declared.content_type.to_string();
    let made = offload
        // A decoder panic on crafted bytes must reject this upload, not end
        // the worker that checks every other one.
        .run(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                make_thumbnail(&kept, &content_type)
            }))
        })
        .await
        .map_err(|e| ObjectError::Unavailable(e.to_string()))?;
    match made {
        Ok(Ok(thumbnail)) => Ok(Inspection { thumbnail }),
        Ok(Err(error)) => Err(Rejection::Undecodable(error.to_string()).into()),
        Err(_) => Err(Rejection::Undecodable("the image decoder failed".into()).into()),
    }
}
