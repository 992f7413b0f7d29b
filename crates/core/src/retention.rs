//! The retention sweep: records the versionstamp clock, then prunes inbox
//! entries every device has passed or that are older than retention (moving
//! the inbox floor so a lagging device is told `gap`), history older than
//! retention, and this region's media past theirs (objects and record).

use std::sync::Arc;

use meridian_store::keys::{STAMP_ZERO, Stamp};
use meridian_store::{self as store};

use crate::hlc::stamp_at;
use crate::media::{media_expired, object_key, thumbnail_key, upload_key};
use crate::{CoreError, Messaging};
use meridian_store::MediaState;

/// Users or conversations listed per page. Each user's inbox is pruned in a
/// transaction of its own, and each page of conversations in one transaction,
/// keeping every transaction well under FoundationDB's advised 1 MB and 5 s.
const CHUNK: usize = 50;

/// Inbox entries one sweep step removes. Each step is its own transaction,
/// so it joins one group commit beside live sends and adds a fraction of a
/// millisecond to it, instead of holding the one commit path for the whole
/// inbox (a minute of traffic at 5,000 msg/s is ~600,000 entries).
const PRUNE_STEP: usize = 256;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Users whose inbox was examined.
    pub users: usize,
    /// Users whose floor moved (some device will get `gap`).
    pub floors_moved: usize,
    /// Conversations whose history was examined.
    pub conversations: usize,
    /// Media of this region deleted (objects and record) past retention.
    pub media_deleted: usize,
}

/// Runs retention for one core.
#[derive(Debug, Clone)]
pub struct Sweeper {
    messaging: Arc<Messaging>,
}

impl Sweeper {
    /// A sweeper over `messaging`'s store and configuration.
    pub fn new(messaging: Arc<Messaging>) -> Self {
        Self { messaging }
    }

    /// Sweeps forever at the configured interval.
    pub async fn run(self) {
        let interval = self.messaging.config().sweep_interval;
        loop {
            if let Err(error) = self.sweep_once().await {
                tracing::warn!(%error, "retention sweep failed; retrying next interval");
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// One full sweep.
    ///
    /// # Errors
    /// Store failures (the next sweep resumes; every step is idempotent).
    pub async fn sweep_once(&self) -> Result<SweepReport, CoreError> {
        let db = self.messaging.db();
        let now = self.messaging.ids().clock().wall_millis();
        let retention_ms = self.messaging.config().retention.as_millis() as u64;
        let cutoff_ms = now.saturating_sub(retention_ms);
        db.run(|tx, _| async move {
            store::record_vclock(&tx, now)?;
            // Keep one retention period of ticks (plus slack) to look up cut-offs.
            store::prune_vclock(&tx, cutoff_ms.saturating_sub(retention_ms))?;
            Ok::<_, CoreError>(())
        })
        .await?;
        let cutoff =
            db.run(|tx, _| async move {
                Ok::<_, CoreError>(store::vclock_before(&tx, cutoff_ms).await?)
            })
            .await?
            .unwrap_or(STAMP_ZERO);
        let mut report = SweepReport::default();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let from = after.take();
            let (users, last) = db
                .run(|tx, _| {
                    let from = from.as_deref();
                    async move { Ok::<_, CoreError>(store::list_user_ids(&tx, from, CHUNK).await?) }
                })
                .await?;
            for user in &users {
                report.users += 1;
                if self.sweep_inbox(user, &cutoff).await? {
                    report.floors_moved += 1;
                }
            }
            match last {
                Some(key) if users.len() == CHUNK => after = Some(key),
                _ => break,
            }
        }
        let history_cut = stamp_at(cutoff_ms);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let from = after.take();
            let (convs, last) = db
                .run(|tx, _| {
                    let from = from.as_deref();
                    async move {
                        Ok::<_, CoreError>(store::list_conversation_ids(&tx, from, CHUNK).await?)
                    }
                })
                .await?;
            db.run(|tx, _| {
                let convs = &convs;
                async move {
                    for conv in convs {
                        store::prune_history(&tx, conv, history_cut).await?;
                    }
                    Ok::<_, CoreError>(())
                }
            })
            .await?;
            report.conversations += convs.len();
            match last {
                Some(key) if convs.len() == CHUNK => after = Some(key),
                _ => break,
            }
        }
        report.media_deleted = self.sweep_media(now).await?;
        Ok(report)
    }

    /// Deletes this region's media past retention. Each is first marked
    /// `expired` in a transaction (which conflicts with a send attaching it
    /// at that moment, so no message is accepted with media about to go),
    /// then its objects are deleted, then its record. A storage failure
    /// ends this pass; the next sweep resumes.
    async fn sweep_media(&self, now: u64) -> Result<usize, CoreError> {
        let Ok(bucket) = self.messaging.local_bucket() else {
            return Ok(0);
        };
        let config = self.messaging.config();
        let retention_ms = config.retention.as_millis() as u64;
        let grace_ms = config.media.abandoned_grace.as_millis() as u64;
        let db = self.messaging.db();
        let mut deleted = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let from = after.take();
            let (page, last) = db
                .run(|tx, _| {
                    let from = from.as_deref();
                    async move { Ok::<_, CoreError>(store::media_page(&tx, from, CHUNK).await?) }
                })
                .await?;
            for media in &page {
                if !media_expired(media, now, retention_ms, grace_ms) {
                    continue;
                }
                let id = media.id.as_str();
                let marked = db
                    .run(|tx, _| async move {
                        match store::get_media(&tx, id).await? {
                            Some(mut fresh)
                                if media_expired(&fresh, now, retention_ms, grace_ms) =>
                            {
                                fresh.state = MediaState::Expired;
                                store::put_media(&tx, &fresh)?;
                                Ok::<_, CoreError>(true)
                            }
                            _ => Ok(false),
                        }
                    })
                    .await?;
                if !marked {
                    continue;
                }
                let mut removed = Ok(());
                for key in [upload_key(id), object_key(id), thumbnail_key(id)] {
                    removed = bucket.delete(&key).await;
                    if removed.is_err() {
                        break;
                    }
                }
                if let Err(error) = removed {
                    tracing::warn!(%error, media = %id, "media sweep: storage unavailable; resuming next sweep");
                    return Ok(deleted);
                }
                db.run(|tx, _| async move {
                    store::clear_media(&tx, id)?;
                    Ok::<_, CoreError>(())
                })
                .await?;
                deleted += 1;
            }
            match last {
                Some(key) if page.len() == CHUNK => after = Some(key),
                _ => break,
            }
        }
        Ok(deleted)
    }

    /// Prunes one inbox, [`PRUNE_STEP`] entries per transaction; returns
    /// whether its floor moved.
    async fn sweep_inbox(&self, user: &str, cutoff: &Stamp) -> Result<bool, CoreError> {
        let mut floor_moved = false;
        loop {
            let (moved, more) = self.prune_inbox_step(user, cutoff).await?;
            floor_moved |= moved;
            if !more {
                return Ok(floor_moved);
            }
        }
    }

    /// One step of [`Self::sweep_inbox`], deciding afresh from the cursors
    /// (a device may have acknowledged meanwhile): whether it moved the
    /// floor, and whether entries to prune remain.
    async fn prune_inbox_step(
        &self,
        user: &str,
        cutoff: &Stamp,
    ) -> Result<(bool, bool), CoreError> {
        self.messaging
            .db()
            .run(|tx, _| async move {
                let devices = store::list_devices(&tx, user).await?;
                let mut slowest: Option<Stamp> = None;
                for device in devices.iter().filter(|d| d.revoked_ms.is_none()) {
                    let cursor = store::get_cursor(&tx, user, &device.id).await?;
                    slowest = Some(slowest.map_or(cursor, |s: Stamp| s.min(cursor)));
                }
                let everyone_past = slowest.unwrap_or(*cutoff);
                let through = everyone_past.max(*cutoff);
                // The removals and the floor below commit together, so the
                // removal may come first and tell what goes.
                let pruned = store::prune_inbox(&tx, user, &through, PRUNE_STEP).await?;
                let Some(newest_removed) = pruned.newest else {
                    // Nothing stored at or before `through`: no write (most
                    // inboxes on most sweeps).
                    return Ok((false, false));
                };
                // An entry some device has not acknowledged goes (it lies
                // past the slowest cursor, so at or before the cutoff):
                // record the floor so that device is told about the gap.
                let loses_unacked = newest_removed > everyone_past;
                let floor = store::get_inbox_floor(&tx, user).await?;
                let moved = loses_unacked && *cutoff > floor;
                if moved {
                    store::set_inbox_floor(&tx, user, cutoff)?;
                }
                Ok::<_, CoreError>((moved, pruned.more))
            })
            .await
    }
}
