//! The retention sweep: records the versionstamp clock, then prunes inbox
//! entries every device has passed or that are older than retention (moving
//! the inbox floor so a lagging device is told `gap`), history older than
//! retention, and this region's media past theirs (objects and record).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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
    /// The wall clock jumped since the previous sweep: nothing was pruned.
    pub clock_jump: bool,
    /// Users whose inbox was examined.
    pub users: usize,
    /// Users whose inbox could not be swept (logged and skipped).
    pub user_errors: usize,
    /// Users whose floor moved (some device will get `gap`).
    pub floors_moved: usize,
    /// Conversations whose history was examined.
    pub conversations: usize,
    /// Media of this region deleted (objects and record) past retention.
    pub media_deleted: usize,
}

/// The clock as the previous sweep read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tick {
    /// The wall clock's reading.
    wall_ms: u64,
    /// The monotonic clock's reading.
    monotonic: Duration,
    /// The wall time retention used: it follows the wall clock, but never
    /// goes backwards and never advances more than the monotonic time
    /// elapsed plus the tolerance in one sweep.
    trusted_ms: u64,
}

/// How a sweep judged the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Prune as of this wall time.
    Sweep { now_ms: u64 },
    /// The wall clock moved `wall_step_ms` while the monotonic clock moved
    /// `monotonic_ms`: prune nothing.
    Jump {
        wall_step_ms: i64,
        monotonic_ms: u64,
    },
}

/// Judges a sweep's clock reading against the previous one. A wall clock
/// that went backwards, or advanced more than the monotonic time elapsed
/// plus `tolerance_ms`, jumped. Either way the trusted time moves towards
/// the wall clock by at most the monotonic time elapsed plus `tolerance_ms`
/// (and never backwards), so a real change of the time is accepted
/// gradually and the cutoff never leaps.
fn judge(
    last: Option<Tick>,
    wall_ms: u64,
    monotonic: Duration,
    tolerance_ms: u64,
) -> (Tick, Reading) {
    let Some(last) = last else {
        let tick = Tick {
            wall_ms,
            monotonic,
            trusted_ms: wall_ms,
        };
        return (tick, Reading::Sweep { now_ms: wall_ms });
    };
    let monotonic_ms = monotonic.saturating_sub(last.monotonic).as_millis() as u64;
    let allowed_ms = monotonic_ms.saturating_add(tolerance_ms);
    let wall_step_ms = (i128::from(wall_ms) - i128::from(last.wall_ms))
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    let jumped = wall_step_ms < 0 || wall_step_ms.unsigned_abs() > allowed_ms;
    let trusted_ms = last
        .trusted_ms
        .saturating_add(wall_ms.saturating_sub(last.trusted_ms).min(allowed_ms));
    let tick = Tick {
        wall_ms,
        monotonic,
        trusted_ms,
    };
    let reading = if jumped {
        Reading::Jump {
            wall_step_ms,
            monotonic_ms,
        }
    } else {
        Reading::Sweep { now_ms: trusted_ms }
    };
    (tick, reading)
}

/// Runs retention for one core.
#[derive(Debug, Clone)]
pub struct Sweeper {
    messaging: Arc<Messaging>,
    /// The previous sweep's clock reading (shared by clones).
    last: Arc<Mutex<Option<Tick>>>,
}

impl Sweeper {
    /// A sweeper over `messaging`'s store and configuration.
    pub fn new(messaging: Arc<Messaging>) -> Self {
        Self {
            messaging,
            last: Arc::new(Mutex::new(None)),
        }
    }

    /// How far the wall clock may run ahead of the monotonic clock between
    /// two sweeps: twice the sweep interval.
    fn jump_tolerance_ms(&self) -> u64 {
        (self.messaging.config().sweep_interval.as_millis() as u64).saturating_mul(2)
    }

    /// Reads the injected clock and judges it against the previous sweep
    /// (see [`judge`]); counts and logs a jump.
    fn read_clock(&self) -> Reading {
        let clock = self.messaging.ids().clock();
        let (wall_ms, monotonic) = (clock.wall_millis(), clock.monotonic());
        let reading = {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            let (tick, reading) = judge(*last, wall_ms, monotonic, self.jump_tolerance_ms());
            *last = Some(tick);
            reading
        };
        if let Reading::Jump {
            wall_step_ms,
            monotonic_ms,
        } = reading
        {
            let region = self.messaging.config().region.clone();
            metrics::counter!("meridian_retention_clock_jumps_total", "region" => region.clone())
                .increment(1);
            tracing::warn!(
                %region,
                wall_step_ms,
                monotonic_ms,
                "retention: the wall clock jumped since the previous sweep; nothing pruned this sweep"
            );
        }
        reading
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

    /// One full sweep. Prunes nothing when the wall clock jumped since the
    /// previous sweep (see [`judge`]); a user whose inbox fails is logged,
    /// counted and skipped.
    ///
    /// # Errors
    /// Store failures (the next sweep resumes; every step is idempotent).
    pub async fn sweep_once(&self) -> Result<SweepReport, CoreError> {
        let db = self.messaging.db();
        let now = match self.read_clock() {
            Reading::Sweep { now_ms } => now_ms,
            Reading::Jump { .. } => {
                return Ok(SweepReport {
                    clock_jump: true,
                    ..SweepReport::default()
                });
            }
        };
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
                match self.sweep_inbox(user, &cutoff).await {
                    Ok(true) => report.floors_moved += 1,
                    Ok(false) => {}
                    Err(error) => {
                        report.user_errors += 1;
                        let region = self.messaging.config().region.clone();
                        metrics::counter!("meridian_retention_user_errors_total", "region" => region.clone())
                            .increment(1);
                        tracing::warn!(%error, %region, %user, "retention: this user's inbox could not be swept; skipped until the next sweep");
                    }
                }
            }
            match last {
                Some(key) if users.len() == CHUNK => after = Some(key),
                _ => break,
            }
        }
        metrics::counter!(
            "meridian_retention_floors_moved_total",
            "region" => self.messaging.config().region.clone()
        )
        .increment(report.floors_moved as u64);
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
            // One transaction for the chunk while each conversation's old
            // history fits one step (nearly always); a conversation with
            // more goes on in transactions of its own.
            let unfinished = db
                .run(|tx, _| {
                    let convs = &convs;
                    async move {
                        let mut unfinished = Vec::new();
                        for conv in convs {
                            if store::prune_history(&tx, conv, history_cut).await?
                                == store::PRUNE_STEP
                            {
                                unfinished.push(conv.clone());
                            }
                        }
                        Ok::<_, CoreError>(unfinished)
                    }
                })
                .await?;
            for conv in &unfinished {
                while db
                    .run(|tx, _| async move {
                        Ok::<_, CoreError>(store::prune_history(&tx, conv, history_cut).await?)
                    })
                    .await?
                    == store::PRUNE_STEP
                {}
            }
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
                let mut cursors = Vec::with_capacity(devices.len());
                for device in devices.iter().filter(|d| d.revoked_ms.is_none()) {
                    cursors.push((device, store::get_cursor(&tx, user, &device.id).await?));
                }
                let slowest = cursors.iter().map(|(_, cursor)| *cursor).min();
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
                // Entries a device had not acknowledged go (they lie past
                // its cursor, so at or before the cutoff): record its floor
                // so that it, and only it, is told about the gap. A device
                // that had acknowledged everything removed lost nothing.
                let mut moved = false;
                for (device, cursor) in &cursors {
                    if newest_removed <= *cursor {
                        continue;
                    }
                    let floor = store::get_inbox_floor(&tx, user, &device.id).await?;
                    if *cutoff > floor {
                        tracing::debug!(
                            user,
                            device = %device.id,
                            floor = %store::stamp_to_hex(cutoff),
                            "retention passed a device's cursor: its floor moves"
                        );
                        store::set_inbox_floor(&tx, user, &device.id, cutoff)?;
                        moved = true;
                    }
                }
                Ok::<_, CoreError>((moved, pruned.more))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 24 * 3600 * 1000;
    const TOLERANCE_MS: u64 = 120_000;

    fn first(wall_ms: u64) -> Tick {
        let (tick, reading) = judge(None, wall_ms, Duration::from_millis(wall_ms), TOLERANCE_MS);
        assert_eq!(reading, Reading::Sweep { now_ms: wall_ms });
        tick
    }

    #[test]
    fn both_clocks_advancing_is_trusted() {
        let start = 1_700_000_000_000;
        let tick = first(start);
        let later = start + 31 * DAY_MS;
        let (tick, reading) = judge(
            Some(tick),
            later,
            Duration::from_millis(later),
            TOLERANCE_MS,
        );
        assert_eq!(reading, Reading::Sweep { now_ms: later });
        assert_eq!(tick.trusted_ms, later);
        // A wall clock a little ahead of the monotonic one (within the
        // tolerance) is trusted too.
        let (_, reading) = judge(
            Some(tick),
            later + 60_000 + 100_000,
            Duration::from_millis(later + 60_000),
            TOLERANCE_MS,
        );
        assert_eq!(
            reading,
            Reading::Sweep {
                now_ms: later + 160_000
            }
        );
    }

    #[test]
    fn a_forward_wall_jump_prunes_nothing_and_is_accepted_gradually() {
        let start = 1_700_000_000_000;
        let tick = first(start);
        let jumped = start + 40 * DAY_MS;
        let (tick, reading) = judge(
            Some(tick),
            jumped,
            Duration::from_millis(start),
            TOLERANCE_MS,
        );
        assert_eq!(
            reading,
            Reading::Jump {
                wall_step_ms: (40 * DAY_MS) as i64,
                monotonic_ms: 0
            }
        );
        assert_eq!(
            tick.trusted_ms,
            start + TOLERANCE_MS,
            "the cutoff is capped"
        );
        // The next sweeps (60 s apart) are no jump, but the trusted time
        // advances at most 60 s plus the tolerance each.
        let mut tick = tick;
        for step in 1..=3u64 {
            let (next, reading) = judge(
                Some(tick),
                jumped + step * 60_000,
                Duration::from_millis(start + step * 60_000),
                TOLERANCE_MS,
            );
            let expected = start + TOLERANCE_MS + step * (60_000 + TOLERANCE_MS);
            assert_eq!(reading, Reading::Sweep { now_ms: expected });
            tick = next;
        }
    }

    #[test]
    fn a_backward_wall_jump_prunes_nothing_and_never_moves_the_cutoff_back() {
        let start = 1_700_000_000_000;
        let tick = first(start);
        let (tick, reading) = judge(
            Some(tick),
            start - DAY_MS,
            Duration::from_millis(start + 60_000),
            TOLERANCE_MS,
        );
        assert!(
            matches!(reading, Reading::Jump { wall_step_ms, .. } if wall_step_ms == -(DAY_MS as i64))
        );
        assert_eq!(tick.trusted_ms, start);
        let (_, reading) = judge(
            Some(tick),
            start - DAY_MS + 60_000,
            Duration::from_millis(start + 120_000),
            TOLERANCE_MS,
        );
        assert_eq!(reading, Reading::Sweep { now_ms: start });
    }
}
