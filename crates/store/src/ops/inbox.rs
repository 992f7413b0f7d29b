//! Inboxes: entries in arrival order, the retention floor and the
//! versionstamp clock that retention reads.

use meridian_kv::{KeyRange, RangeOption, Transaction, key_after};

use super::{decode, encode, stamp_from};
use crate::StoreError;
use crate::keys::{self, STAMP_ZERO, Stamp};
use crate::model::*;

/// Appends `entry` to `user_id`'s inbox at this commit's versionstamp
/// (through [`crate::InboxWaiter::append`], which also touches the inbox
/// head where delivery loops watch it).
///
/// # Errors
/// Store limits.
pub(crate) fn append_inbox(
    tx: &Transaction,
    user_id: &str,
    entry: &InboxEntry,
) -> Result<(), StoreError> {
    let user_version = tx.next_user_version();
    tx.set_versionstamped_key(
        &keys::new_inbox_entry(user_id, user_version),
        &encode(entry),
    )?;
    Ok(())
}

/// Moves `user_id`'s inbox head, waking anyone watching it.
pub(crate) fn touch_inbox_head(tx: &Transaction, user_id: &str) -> Result<(), StoreError> {
    touch_watched(tx, &keys::inbox_head(user_id))
}

/// Sets `key` to this commit's versionstamp: a new value at every commit,
/// so it wakes anyone watching the key (the inbox head), and records when a
/// commit happened (the versionstamp clock). A blind write, unlike an
/// atomic add, which the committer must resolve against the stored value.
///
/// # Errors
/// Store limits.
pub fn touch_watched(tx: &Transaction, key: &[u8]) -> Result<(), StoreError> {
    let mut template = vec![0u8; 10];
    template.extend_from_slice(&0u32.to_le_bytes());
    Ok(tx.set_versionstamped_value(key, &template)?)
}

/// Up to `limit` inbox entries strictly after `after`, in arrival order.
/// A snapshot read: delivery never conflicts with sends.
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn read_inbox(
    tx: &Transaction,
    user_id: &str,
    after: &Stamp,
    limit: usize,
) -> Result<Vec<(Stamp, InboxEntry)>, StoreError> {
    let (_, end) = keys::inbox_of(user_id).range();
    let begin = key_after(&keys::inbox_entry(user_id, after));
    let pairs = tx
        .get_range_snapshot(&RangeOption::new(KeyRange::new(begin, end)).limit(limit))
        .await?;
    pairs
        .iter()
        .map(|kv| {
            let stamp = keys::inbox_stamp(user_id, &kv.key).ok_or(StoreError::Corrupt {
                what: "inbox key",
                reason: "no versionstamp".into(),
            })?;
            Ok((stamp, decode("inbox entry", &kv.value)?))
        })
        .collect()
}

/// The stamp of the newest inbox entry ([`STAMP_ZERO`] if empty).
///
/// # Errors
/// Store failures.
pub async fn last_inbox_stamp(tx: &Transaction, user_id: &str) -> Result<Stamp, StoreError> {
    let (begin, end) = keys::inbox_of(user_id).range();
    let last = tx
        .get_range(
            &RangeOption::new(KeyRange::new(begin, end))
                .limit(1)
                .reverse(true),
        )
        .await?;
    Ok(last
        .first()
        .and_then(|kv| keys::inbox_stamp(user_id, &kv.key))
        .unwrap_or(STAMP_ZERO))
}

/// What one [`prune_inbox`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// The stamp of the newest entry removed (`None`: nothing was).
    pub newest: Option<Stamp>,
    /// Whether entries at or before the bound remain.
    pub more: bool,
}

/// Removes the oldest of `user_id`'s inbox entries at or before `through`,
/// at most `limit` of them, and tells the newest it removed and whether more
/// such entries remain.
///
/// Key by key rather than one range clear: the inbox feed follows a removed
/// entry exactly (a cleared range makes it fall back to the store), and the
/// embedded engine, which has no range tombstone, would otherwise scan the
/// range inside the serial commit path. The limit keeps each sweep step a
/// small part of a group commit, so live sends never wait behind a whole
/// inbox's pruning.
///
/// # Errors
/// Store failures and limits.
pub async fn prune_inbox(
    tx: &Transaction,
    user_id: &str,
    through: &Stamp,
    limit: usize,
) -> Result<Pruned, StoreError> {
    let (begin, _) = keys::inbox_of(user_id).range();
    let end = key_after(&keys::inbox_entry(user_id, through));
    // A snapshot read: entries at or before `through` are never rewritten,
    // and appends land above it, so there is nothing to conflict with.
    let pairs = tx
        .get_range_snapshot(&RangeOption::new(KeyRange::new(begin, end)).limit(limit + 1))
        .await?;
    let doomed = &pairs[..pairs.len().min(limit)];
    for kv in doomed {
        tx.clear(&kv.key)?;
    }
    let newest = doomed
        .last()
        .map(|kv| {
            keys::inbox_stamp(user_id, &kv.key).ok_or(StoreError::Corrupt {
                what: "inbox key",
                reason: "no versionstamp".into(),
            })
        })
        .transpose()?;
    Ok(Pruned {
        newest,
        more: pairs.len() > limit,
    })
}

/// The stamp through which retention removed entries `device` of `user`
/// had not acknowledged ([`STAMP_ZERO`] if never): what its `gap` says.
///
/// # Errors
/// Store failures.
pub async fn get_inbox_floor(
    tx: &Transaction,
    user_id: &str,
    device_id: &str,
) -> Result<Stamp, StoreError> {
    // A snapshot read: only the retention sweep writes the floor, and the
    // delivery loop must not conflict with it.
    Ok(tx
        .get_snapshot(&keys::inbox_floor(user_id, device_id))
        .await?
        .and_then(|raw| stamp_from(&raw))
        .unwrap_or(STAMP_ZERO))
}

/// Records `device`'s retention floor.
///
/// # Errors
/// Store limits.
pub fn set_inbox_floor(
    tx: &Transaction,
    user_id: &str,
    device_id: &str,
    stamp: &Stamp,
) -> Result<(), StoreError> {
    Ok(tx.set(&keys::inbox_floor(user_id, device_id), stamp)?)
}

/// Records that the commit of this transaction happened at `unix_ms`.
///
/// # Errors
/// Store limits.
pub fn record_vclock(tx: &Transaction, unix_ms: u64) -> Result<(), StoreError> {
    touch_watched(tx, &keys::vclock_at(unix_ms))
}

/// The newest versionstamp recorded at or before `unix_ms`, if any.
///
/// # Errors
/// Store failures or a corrupt key.
pub async fn vclock_before(tx: &Transaction, unix_ms: u64) -> Result<Option<Stamp>, StoreError> {
    let space = keys::vclock();
    let (begin, _) = space.range();
    let end = key_after(&keys::vclock_at(unix_ms));
    let last = tx
        .get_range_snapshot(
            &RangeOption::new(KeyRange::new(begin, end))
                .limit(1)
                .reverse(true),
        )
        .await?;
    Ok(last
        .first()
        .and_then(|kv| <[u8; 10]>::try_from(kv.value.as_ref()).ok())
        .map(|commit| keys::stamp_at_commit(&commit)))
}

/// Removes versionstamp-clock entries older than `unix_ms`.
///
/// # Errors
/// Store limits.
pub fn prune_vclock(tx: &Transaction, unix_ms: u64) -> Result<(), StoreError> {
    let (begin, _) = keys::vclock().range();
    Ok(tx.clear_range(&KeyRange::new(begin, keys::vclock_at(unix_ms)))?)
}
