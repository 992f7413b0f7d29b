//! The media check worker: takes completed uploads off the check queue,
//! inspects each (size, SHA-256, type sniffing, thumbnail for images) and
//! marks it `ready` or `rejected`.
//!
//! The queue lives in the store, written by the transaction that moved the
//! media to `checking`, so a check is never lost to a crash: a restarted
//! worker finds the entry again. Each outcome and the removal of its queue
//! entry commit together; running a check twice is harmless (the second
//! finds the media no longer `checking`).

use std::sync::Arc;
use std::time::Duration;

use meridian_seams::Backoff;

use meridian_media::{Declared, InspectError, inspect, thumbnail::THUMBNAIL_CONTENT_TYPE};
use meridian_store::{self as store, MediaState, MediaThumbnail};

use crate::media::{object_key, thumbnail_key, upload_key};
use crate::{CoreError, Messaging};

/// Checks taken off the queue per round.
const BATCH: usize = 8;

/// Longest wait between retries while object storage is unavailable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The worker of one core.
#[derive(Debug, Clone)]
pub struct MediaChecker {
    messaging: Arc<Messaging>,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CheckRound {
    /// Media marked ready.
    pub ready: usize,
    /// Media rejected.
    pub rejected: usize,
    /// Checks left queued because storage failed.
    pub deferred: usize,
}

enum Outcome {
    Ready(Option<MediaThumbnail>),
    Rejected { reason: String, detail: String },
}

impl MediaChecker {
    /// A worker over `messaging`'s store and buckets.
    pub fn new(messaging: Arc<Messaging>) -> Self {
        Self { messaging }
    }

    /// Checks forever: drains the queue, then waits for the queue head to
    /// move. Backs off while object storage is unavailable.
    pub async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_millis(200), MAX_BACKOFF);
        loop {
            match self.round().await {
                Ok(round) if round.deferred > 0 => {
                    backoff.wait().await;
                }
                Ok(round) if round.ready + round.rejected > 0 => {
                    backoff.reset();
                }
                Ok(_) => {
                    backoff.reset();
                    if let Err(error) = self.wait_for_work().await {
                        tracing::warn!(%error, "media checker: waiting failed");
                        tokio::time::sleep(backoff.current()).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "media checker: round failed; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    /// Waits until something is queued (or a minute passes).
    async fn wait_for_work(&self) -> Result<(), CoreError> {
        let tx = self.messaging.db().begin();
        if !store::read_media_checks(&tx, 1).await?.is_empty() {
            return Ok(());
        }
        let queued = tx.watch(&meridian_store::keys::media_check_head());
        tx.commit().await?;
        let _ = tokio::time::timeout(Duration::from_secs(60), queued).await;
        Ok(())
    }

    /// Checks up to [`BATCH`] queued uploads.
    ///
    /// # Errors
    /// Store failures.
    pub async fn round(&self) -> Result<CheckRound, CoreError> {
        let queued =
            self.messaging
                .db()
                .run(|tx, _| async move {
                    Ok::<_, CoreError>(store::read_media_checks(&tx, BATCH).await?)
                })
                .await?;
        let mut round = CheckRound::default();
        for (queue_key, media_id) in queued {
            match self.check(&media_id).await {
                Ok(Some(outcome)) => {
                    match &outcome {
                        Outcome::Ready(_) => {
                            round.ready += 1;
                            metrics::counter!("meridian_media_ready_total").increment(1);
                        }
                        Outcome::Rejected { .. } => round.rejected += 1,
                    }
                    self.record(&queue_key, &media_id, Some(outcome)).await?;
                }
                // Nothing to do (already checked, or gone): drop the entry.
                Ok(None) => self.record(&queue_key, &media_id, None).await?,
                Err(error) => {
                    tracing::warn!(%error, media = %media_id, "media check deferred");
                    round.deferred += 1;
                    // Keep queue order: later entries wait for this one.
                    break;
                }
            }
        }
        Ok(round)
    }

    /// Inspects one upload; `None` when it is no longer awaiting a check.
    async fn check(&self, media_id: &str) -> Result<Option<Outcome>, CheckError> {
        let media = self
            .messaging
            .db()
            .run(|tx, _| async move { Ok::<_, CoreError>(store::get_media(&tx, media_id).await?) })
            .await?;
        let Some(media) = media.filter(|m| m.state == MediaState::Checking) else {
            return Ok(None);
        };
        let mut sha256 = [0u8; 32];
        if hex::decode_to_slice(&media.sha256, &mut sha256).is_err() {
            return Ok(Some(Outcome::Rejected {
                reason: "checksum_mismatch".into(),
                detail: "stored sha256 is malformed".into(),
            }));
        }
        let bucket = self.messaging.local_bucket()?;
        let key = object_key(media_id);
        // Freeze the upload where no presigned URL can write, then check
        // the frozen copy (a re-run after a crash finds the copy made).
        match bucket.copy(&upload_key(media_id), &key).await {
            Ok(()) => {}
            Err(meridian_media::ObjectError::NotFound) => {}
            Err(meridian_media::ObjectError::Refused(detail)) => {
                return Ok(Some(refused_by_storage(&detail)));
            }
            Err(error) => return Err(CheckError::Storage(error)),
        }
        let declared = Declared {
            content_type: &media.content_type,
            size: media.size,
            sha256: &sha256,
        };
        let outcome = inspect(bucket, &key, declared, self.messaging.media_offload()).await;
        if !matches!(outcome, Err(InspectError::Storage(_)))
            && let Err(error) = bucket.delete(&upload_key(media_id)).await
        {
            tracing::warn!(%error, media = %media_id, "upload copy not deleted; the sweep will");
        }
        match outcome {
            Ok(inspection) => {
                let thumbnail = match inspection.thumbnail {
                    Some(thumb) => {
                        let stored = MediaThumbnail {
                            width: thumb.width,
                            height: thumb.height,
                            size: thumb.jpeg.len() as u64,
                        };
                        bucket
                            .put(&thumbnail_key(media_id), thumb.jpeg, THUMBNAIL_CONTENT_TYPE)
                            .await
                            .map_err(CheckError::Storage)?;
                        Some(stored)
                    }
                    None => None,
                };
                Ok(Some(Outcome::Ready(thumbnail)))
            }
            Err(InspectError::Rejected(rejection)) => {
                // The bytes can never be sent: free the space now.
                if let Err(error) = bucket.delete(&key).await {
                    tracing::warn!(%error, media = %media_id, "rejected upload not deleted; the sweep will");
                }
                metrics::counter!("meridian_media_rejected_total", "reason" => rejection.code())
                    .increment(1);
                Ok(Some(Outcome::Rejected {
                    reason: rejection.code().to_string(),
                    detail: rejection.to_string(),
                }))
            }
            // A refusal does not clear by waiting: reject this upload
            // rather than hold every later one behind it.
            Err(InspectError::Storage(meridian_media::ObjectError::Refused(detail))) => {
                Ok(Some(refused_by_storage(&detail)))
            }
            Err(InspectError::Storage(error)) => Err(CheckError::Storage(error)),
            Err(other) => Err(CheckError::Storage(
                meridian_media::ObjectError::Unavailable(other.to_string()),
            )),
        }
    }

    /// Records an outcome and drops the queue entry, in one transaction.
    async fn record(
        &self,
        queue_key: &[u8],
        media_id: &str,
        outcome: Option<Outcome>,
    ) -> Result<(), CoreError> {
        let outcome = &outcome;
        self.messaging
            .db()
            .run(|tx, _| async move {
                store::clear_media_check(&tx, queue_key)?;
                let Some(outcome) = outcome else {
                    return Ok::<_, CoreError>(());
                };
                if let Some(mut media) = store::get_media(&tx, media_id).await?
                    && media.state == MediaState::Checking
                {
                    match outcome {
                        Outcome::Ready(thumbnail) => {
                            media.state = MediaState::Ready;
                            media.thumbnail = thumbnail.clone();
                        }
                        Outcome::Rejected { reason, detail } => {
                            media.state = MediaState::Rejected {
                                reason: reason.clone(),
                                detail: detail.clone(),
                            };
                        }
                    }
                    store::put_media(&tx, &media)?;
                }
                Ok(())
            })
            .await
    }
}

fn refused_by_storage(detail: &str) -> Outcome {
    tracing::warn!(%detail, "media check: object storage refused; rejecting the upload");
    metrics::counter!("meridian_media_rejected_total", "reason" => "storage_refused").increment(1);
    Outcome::Rejected {
        reason: "storage_refused".into(),
        detail: format!("object storage refused the check: {detail}"),
    }
}

/// Why a check could not finish now.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Storage(meridian_media::ObjectError),
}
