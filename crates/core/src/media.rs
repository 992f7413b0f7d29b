//! Media rules: who may upload, attach and download what.
//!
//! - An upload slot is issued by the uploader's home core; the media id
//!   (`"{uuid}@{region}"`) names the region whose bucket holds the bytes.
//! - `complete` queues the check (a worker: hashing, sniffing and thumbnails
//!   read the whole object, far too slow for a send transaction) and waits a
//!   little for its result.
//! - A send may carry only ready media its sender uploaded; the message
//!   records each attachment's description, so it replicates with the
//!   message.
//! - A download URL is presigned by the caller's home core, for members of
//!   a conversation whose message carries the media, against the bucket of
//!   the media's origin region (bytes are never copied between regions).

use std::time::Duration;

use meridian_media::{Bucket, Presigned, types};
use meridian_seams::Offload;
use meridian_store::{self as store, Attachment, Media, MediaState};
use meridian_wire::ErrorCode;

use crate::peers::region_of;
use crate::validate;
use crate::{Caller, CoreError, Messaging};

/// A new upload slot.
#[derive(Debug, Clone)]
pub struct UploadSlot {
    /// The record (state `pending`).
    pub media: Media,
    /// The presigned PUT.
    pub upload: Presigned,
}

/// Download URLs for one attachment.
#[derive(Debug, Clone)]
pub struct MediaDownload {
    /// The attachment as the message carries it.
    pub attachment: Attachment,
    /// The presigned GET of the content.
    pub download: Presigned,
    /// The presigned GET of the thumbnail, for images.
    pub thumbnail: Option<Presigned>,
}

/// The object key of a media's content: its uuid, without the region.
pub fn object_key(media_id: &str) -> String {
    let uuid = media_id.split('@').next().unwrap_or(media_id);
    format!("media/{uuid}")
}

/// The object key a media's presigned PUT writes. The check copies it to
/// [`object_key`], which no URL can write, before reading it: bytes replaced
/// through a still-valid upload URL after the check never reach anyone.
pub fn upload_key(media_id: &str) -> String {
    let uuid = media_id.split('@').next().unwrap_or(media_id);
    format!("uploads/{uuid}")
}

/// The object key of a media's thumbnail.
pub fn thumbnail_key(media_id: &str) -> String {
    format!("{}.thumb.jpg", object_key(media_id))
}

fn refused(code: ErrorCode, message: impl Into<String>) -> CoreError {
    CoreError::refused(code, message)
}

fn unavailable(error: impl std::fmt::Display) -> CoreError {
    tracing::warn!(%error, "object storage unavailable");
    refused(
        ErrorCode::MediaUnavailable,
        "media storage is unavailable; retry later (text messages are unaffected)",
    )
}

/// Parses a hex SHA-256.
fn parse_sha256(text: &str) -> Result<[u8; 32], CoreError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| {
        refused(
            ErrorCode::BadRequest,
            "sha256 must be 64 hexadecimal characters",
        )
    })?;
    Ok(out)
}

/// Whether `media` is past its life at `now_ms`: the retention period
/// after the last message that carried it (or after its upload, if none
/// did); uploads never completed, and rejected ones, `grace_ms` after their
/// upload URL expired.
pub fn media_expired(media: &Media, now_ms: u64, retention_ms: u64, grace_ms: u64) -> bool {
    let until = match media.state {
        MediaState::Ready | MediaState::Checking => media
            .last_attached_ms
            .unwrap_or(media.created_ms)
            .max(media.created_ms)
            .saturating_add(retention_ms),
        MediaState::Pending | MediaState::Rejected { .. } => {
            media.upload_expires_ms.saturating_add(grace_ms)
        }
        MediaState::Expired => 0,
    };
    until < now_ms
}

impl Messaging {
    /// This region's bucket, or `media_unavailable` when none is configured.
    pub(crate) fn local_bucket(&self) -> Result<&Bucket, CoreError> {
        self.media()
            .buckets
            .get(self.home_region())
            .ok_or_else(|| unavailable("no bucket configured for this region"))
    }

    /// The executor for CPU-heavy media work.
    pub(crate) fn media_offload(&self) -> Offload {
        self.media().offload
    }

    /// Takes an upload slot and its bytes from the caller's daily quota
    /// (the bytes only when the slot is granted).
    ///
    /// # Errors
    /// `rate_limited` with the wait, past either quota.
    fn charge_upload(&self, caller: &Caller, size: u64) -> Result<(), CoreError> {
        let limited = |what: &str, retry_after: std::time::Duration| {
            metrics::counter!("meridian_core_media_quota_limited_total").increment(1);
            CoreError::Limited {
                message: format!(
                    "your daily {what} quota is spent; retry in {} s",
                    retry_after.as_secs().max(1)
                ),
                retry_after,
            }
        };
        self.upload_bytes
            .peek(&caller.user_id, size as f64)
            .map_err(|wait| limited("upload bytes", wait))?;
        self.uploads
            .take(&caller.user_id, 1.0)
            .map_err(|wait| limited("upload", wait))?;
        let _ = self.upload_bytes.take(&caller.user_id, size as f64);
        Ok(())
    }

    /// Issues an upload slot: a media record in state `pending` and a
    /// presigned PUT bound to the declared size, type and SHA-256.
    ///
    /// # Errors
    /// `media_too_large`, `unsupported_media_type`, `bad_request`;
    /// `media_unavailable` when the bucket does not answer (checked first,
    /// so a client is not handed a URL that cannot work); `rate_limited`
    /// past the caller's daily upload quotas.
    pub async fn create_upload(
        &self,
        caller: &Caller,
        size: u64,
        content_type: &str,
        sha256: &str,
    ) -> Result<UploadSlot, CoreError> {
        self.require_homed_here(caller)?;
        let limits = &self.config().media;
        if size == 0 {
            return Err(refused(
                ErrorCode::BadRequest,
                "size must be at least 1 byte",
            ));
        }
        if size > limits.max_bytes {
            return Err(refused(
                ErrorCode::MediaTooLarge,
                format!("{size} bytes exceeds the {} byte limit", limits.max_bytes),
            ));
        }
        let Some(content_type) = types::normalize(content_type) else {
            return Err(refused(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "content type {content_type:?} is not accepted; allowed: {}",
                    types::ALLOWED_TYPES.join(", ")
                ),
            ));
        };
        let digest = parse_sha256(sha256)?;
        let bucket = self.local_bucket()?;
        bucket.check_reachable().await.map_err(unavailable)?;
        self.charge_upload(caller, size)?;
        let media_id = self.new_local_id();
        let upload = bucket
            .presign_put(
                &upload_key(&media_id),
                size,
                content_type,
                &digest,
                limits.upload_ttl,
            )
            .await
            .map_err(unavailable)?;
        let media = Media {
            id: media_id,
            owner_user: caller.user_id.clone(),
            content_type: content_type.to_string(),
            size,
            sha256: hex::encode(digest),
            created_ms: self.ids().clock().wall_millis(),
            upload_expires_ms: upload.expires_ms,
            state: MediaState::Pending,
            thumbnail: None,
            last_attached_ms: None,
        };
        self.db()
            .run(|tx, _| {
                let media = &media;
                async move {
                    store::put_media(&tx, media)?;
                    Ok::<_, CoreError>(())
                }
            })
            .await?;
        metrics::counter!("meridian_media_upload_slots_total").increment(1);
        Ok(UploadSlot { media, upload })
    }

    /// The caller's own upload, or `not_found` (another user's media is not
    /// revealed).
    async fn own_media(&self, caller: &Caller, media_id: &str) -> Result<Media, CoreError> {
        validate::id("media_id", media_id)?;
        self.require_homed_here(caller)?;
        let found = self
            .db()
            .run(|tx, _| async move { Ok::<_, CoreError>(store::get_media(&tx, media_id).await?) })
            .await?;
        match found {
            Some(media) if media.owner_user == caller.user_id => Ok(media),
            _ => Err(refused(ErrorCode::NotFound, format!("no media {media_id}"))),
        }
    }

    /// The caller's upload as it stands.
    ///
    /// # Errors
    /// `not_found`, store failures.
    pub async fn get_media(&self, caller: &Caller, media_id: &str) -> Result<Media, CoreError> {
        self.own_media(caller, media_id).await
    }

    /// The uploader says the upload is done: queue its check (once) and
    /// wait up to `complete_wait` for the result. Answers the record: `ready`,
    /// `rejected` with its reason, or `checking` when the check takes longer
    /// (call again, or just send: a send waits for nothing and says
    /// `media_not_ready`).
    ///
    /// # Errors
    /// `media_not_uploaded` when nothing is in the bucket yet (upload, then
    /// call again); `media_unavailable`; `not_found`.
    pub async fn complete_upload(
        &self,
        caller: &Caller,
        media_id: &str,
    ) -> Result<Media, CoreError> {
        // `complete_wait` bounds the whole call, the storage's HEAD
        // included, so it answers inside the gateway's deadline.
        let started = self.ids().clock().monotonic();
        let media = self.own_media(caller, media_id).await?;
        if media.state == MediaState::Pending {
            let bucket = self.local_bucket()?;
            let stored = bucket
                .head(&upload_key(media_id))
                .await
                .map_err(unavailable)?;
            if stored.is_none() {
                return Err(refused(
                    ErrorCode::MediaNotUploaded,
                    format!("nothing was uploaded for {media_id} yet"),
                ));
            }
            self.db()
                .run(|tx, _| async move {
                    if let Some(mut media) = store::get_media(&tx, media_id).await?
                        && media.state == MediaState::Pending
                    {
                        media.state = MediaState::Checking;
                        store::put_media(&tx, &media)?;
                        store::enqueue_media_check(&tx, media_id)?;
                    }
                    Ok::<_, CoreError>(())
                })
                .await?;
        }
        let spent = self.ids().clock().monotonic().saturating_sub(started);
        self.wait_checked(
            media_id,
            self.config().media.complete_wait.saturating_sub(spent),
        )
        .await
    }

    /// Waits until the check of `media_id` ends or `wait` passes; returns
    /// the record as it then stands.
    async fn wait_checked(&self, media_id: &str, wait: Duration) -> Result<Media, CoreError> {
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            let tx = self.db().begin();
            let media = store::get_media(&tx, media_id)
                .await?
                .ok_or_else(|| refused(ErrorCode::NotFound, format!("no media {media_id}")))?;
            if !matches!(media.state, MediaState::Pending | MediaState::Checking) {
                return Ok(media);
            }
            let changed = tx.watch(&meridian_store::keys::media(media_id));
            tx.commit().await?;
            tokio::select! {
                biased;
                fired = changed => fired?,
                () = &mut deadline => return Ok(media),
            }
        }
    }

    /// Checks the attachments of a send inside its transaction and returns
    /// what the message records; marks each media as attached now (its
    /// retention counts from its last use).
    pub(crate) async fn attach(
        &self,
        tx: &meridian_kv::Transaction,
        caller: &Caller,
        media_ids: &[String],
        now_ms: u64,
    ) -> Result<Vec<Attachment>, CoreError> {
        let mut attachments = Vec::with_capacity(media_ids.len());
        for media_id in media_ids {
            let mut media = match store::get_media(tx, media_id).await? {
                Some(media) if media.owner_user == caller.user_id => media,
                _ => {
                    return Err(refused(
                        ErrorCode::NotFound,
                        format!("no media {media_id} uploaded by the sender"),
                    ));
                }
            };
            match &media.state {
                MediaState::Ready => {}
                MediaState::Rejected { reason, detail } => {
                    return Err(refused(
                        ErrorCode::MediaRejected,
                        format!("media {media_id} was rejected ({reason}): {detail}"),
                    ));
                }
                MediaState::Expired => {
                    return Err(refused(
                        ErrorCode::NotFound,
                        format!("media {media_id} has expired"),
                    ));
                }
                MediaState::Pending | MediaState::Checking => {
                    return Err(refused(
                        ErrorCode::MediaNotReady,
                        format!("media {media_id} is not checked yet; complete the upload first"),
                    ));
                }
            }
            attachments.push(media.attachment());
            media.last_attached_ms = Some(now_ms);
            store::put_media(tx, &media)?;
        }
        Ok(attachments)
    }

    /// Validates a send's media ids before its transaction.
    pub(crate) fn validate_attachments(&self, media_ids: &[String]) -> Result<(), CoreError> {
        let max = self.config().media.max_attachments;
        if media_ids.len() > max {
            return Err(refused(
                ErrorCode::BadRequest,
                format!("a message carries at most {max} attachments"),
            ));
        }
        for (i, media_id) in media_ids.iter().enumerate() {
            validate::id("attachment", media_id)?;
            if media_ids[..i].contains(media_id) {
                return Err(refused(
                    ErrorCode::BadRequest,
                    format!("attachment {media_id} is listed twice"),
                ));
            }
        }
        Ok(())
    }

    /// Presigned download URLs for an attachment of message `msg_id` in
    /// `conv_id`, for a member of that conversation.
    ///
    /// # Errors
    /// `not_found` (a non-member, no such message, or it does not carry the
    /// media: pruned by retention included), `media_unavailable`.
    pub async fn media_download(
        &self,
        caller: &Caller,
        conv_id: &str,
        msg_id: &str,
        media_id: &str,
    ) -> Result<MediaDownload, CoreError> {
        self.require_homed_here(caller)?;
        validate::id("conv_id", conv_id)?;
        validate::id("msg_id", msg_id)?;
        validate::id("media_id", media_id)?;
        let attachment = self
            .db()
            .run(|tx, _| async move {
                Self::require_member(&tx, conv_id, &caller.user_id).await?;
                let not_found = || {
                    refused(
                        ErrorCode::NotFound,
                        format!("message {msg_id} in {conv_id} carries no media {media_id}"),
                    )
                };
                let position = store::message_position(&tx, conv_id, msg_id)
                    .await?
                    .ok_or_else(not_found)?;
                let message = store::get_message(&tx, conv_id, &position)
                    .await?
                    .ok_or_else(not_found)?;
                message
                    .attachments
                    .into_iter()
                    .find(|a| a.media_id == media_id)
                    .ok_or_else(not_found)
            })
            .await?;
        let origin = region_of(media_id).unwrap_or(self.home_region());
        let bucket = self
            .media()
            .buckets
            .get(origin)
            .ok_or_else(|| unavailable(format!("no bucket known for region {origin}")))?;
        let ttl = self.config().media.download_ttl;
        let download = bucket
            .presign_get(&object_key(media_id), ttl)
            .await
            .map_err(unavailable)?;
        let thumbnail = match &attachment.thumbnail {
            Some(_) => Some(
                bucket
                    .presign_get(&thumbnail_key(media_id), ttl)
                    .await
                    .map_err(unavailable)?,
            ),
            None => None,
        };
        Ok(MediaDownload {
            attachment,
            download,
            thumbnail,
        })
    }
}
