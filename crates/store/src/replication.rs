//! The replication keys: the outbox a change is written to in its own
//! transaction, the applied offsets a destination records in the
//! transaction that applies, and the markers that make receipts idempotent.

use std::collections::BTreeMap;

use meridian_kv::{KeyRange, RangeOption, Transaction, key_after};

use crate::StoreError;
use crate::keys::{self, Stamp};
use crate::model::{OutboxEntry, ReceiptKind, Replicated};
use crate::ops::{decode, encode};

/// Queues `entry` for `dest_region` at this commit's versionstamp and bumps
/// the outbox head (which wakes the relay).
///
/// # Errors
/// Store limits.
pub fn put_outbox(
    tx: &Transaction,
    dest_region: &str,
    entry: &Replicated,
) -> Result<(), StoreError> {
    let user_version = tx.next_user_version();
    // The partition key travels in front of the change, so the relay never
    // decodes a change: `[key length: u16 BE][key][change JSON]`.
    let key = entry.conv_id().as_bytes();
    let mut value = Vec::with_capacity(2 + key.len() + 256);
    value.extend_from_slice(&(key.len() as u16).to_be_bytes());
    value.extend_from_slice(key);
    value.extend_from_slice(&encode(entry));
    tx.set_versionstamped_key(&keys::new_outbox_entry(dest_region, user_version), &value)?;
    tx.atomic_add(&keys::outbox_head(dest_region), 1)?;
    Ok(())
}

/// Up to `limit` of the oldest outbox entries towards `dest_region`, after
/// `after` when given. The relay passes the last stamp it cleared: in an
/// LSM engine the cleared entries linger as tombstones until compaction,
/// and a read from the start of the outbox would step over every one.
///
/// # Errors
/// Store failures or a corrupt entry.
pub async fn read_outbox(
    tx: &Transaction,
    dest_region: &str,
    after: Option<&Stamp>,
    limit: usize,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let (mut begin, end) = keys::outbox_of(dest_region).range();
    if let Some(after) = after {
        begin = key_after(&keys::outbox_entry(dest_region, after));
    }
    let pairs = tx
        .get_range_snapshot(&RangeOption::new(KeyRange::new(begin, end)).limit(limit))
        .await?;
    pairs
        .iter()
        .map(|kv| {
            let corrupt = |reason: &str| StoreError::Corrupt {
                what: "outbox entry",
                reason: reason.to_string(),
            };
            let stamp =
                keys::outbox_stamp(dest_region, &kv.key).ok_or_else(|| corrupt("no stamp"))?;
            let raw = &kv.value;
            let key_len = raw
                .get(..2)
                .map(|len| usize::from(u16::from_be_bytes([len[0], len[1]])))
                .ok_or_else(|| corrupt("no key length"))?;
            let key = raw
                .get(2..2 + key_len)
                .and_then(|key| std::str::from_utf8(key).ok())
                .ok_or_else(|| corrupt("bad key"))?
                .to_string();
            Ok(OutboxEntry {
                stamp,
                key,
                value: raw.slice(2 + key_len..),
            })
        })
        .collect()
}

/// Removes outbox entries towards `dest_region` after `after` (everything
/// up to it was cleared before; `None`: from the start) up to and including
/// `through`.
///
/// # Errors
/// Store limits.
pub fn clear_outbox(
    tx: &Transaction,
    dest_region: &str,
    after: Option<&Stamp>,
    through: &Stamp,
    count: usize,
) -> Result<(), StoreError> {
    tx.atomic_add(&keys::outbox_relayed(dest_region), count as i64)?;
    let (mut begin, _) = keys::outbox_of(dest_region).range();
    if let Some(after) = after {
        begin = key_after(&keys::outbox_entry(dest_region, after));
    }
    let end = key_after(&keys::outbox_entry(dest_region, through));
    Ok(tx.clear_range(&KeyRange::new(begin, end))?)
}

/// Entries waiting in the outbox towards `dest_region` (written minus
/// relayed; snapshot reads of two counters, so never a conflict).
///
/// # Errors
/// Store failures.
pub async fn outbox_depth(tx: &Transaction, dest_region: &str) -> Result<u64, StoreError> {
    let counter = |raw: Option<bytes::Bytes>| {
        raw.and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
            .map_or(0, i64::from_le_bytes)
    };
    let written = counter(tx.get_snapshot(&keys::outbox_head(dest_region)).await?);
    let relayed = counter(tx.get_snapshot(&keys::outbox_relayed(dest_region)).await?);
    Ok(written.saturating_sub(relayed).max(0) as u64)
}

/// Decodes a replicated change carried by the log.
///
/// # Errors
/// [`StoreError::Corrupt`] when the bytes are not a change.
pub fn decode_replicated(raw: &[u8]) -> Result<Replicated, StoreError> {
    decode("replicated change", raw)
}

/// The next offset to apply from `source_region`'s `partition` (0 when none
/// was applied yet). Read with a conflict: two appliers of one partition
/// cannot both commit.
///
/// # Errors
/// Store failures.
pub async fn applied_offset(
    tx: &Transaction,
    source_region: &str,
    partition: u32,
) -> Result<u64, StoreError> {
    Ok(tx
        .get(&keys::applied(source_region, partition))
        .await?
        .and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Records the next offset to apply from `source_region`'s `partition`.
///
/// # Errors
/// Store limits.
pub fn set_applied_offset(
    tx: &Transaction,
    source_region: &str,
    partition: u32,
    next_offset: u64,
) -> Result<(), StoreError> {
    Ok(tx.set(
        &keys::applied(source_region, partition),
        &next_offset.to_be_bytes(),
    )?)
}

/// Every recorded next offset from `source_region`, by partition.
///
/// # Errors
/// Store failures or a corrupt key.
pub async fn applied_offsets(
    tx: &Transaction,
    source_region: &str,
) -> Result<BTreeMap<u32, u64>, StoreError> {
    let space = keys::applied_of(source_region);
    let (begin, end) = space.range();
    let pairs = tx
        .get_range_snapshot(&RangeOption::new(KeyRange::new(begin, end)))
        .await?;
    let mut out = BTreeMap::new();
    for kv in &pairs {
        let corrupt = |reason: &str| StoreError::Corrupt {
            what: "applied offset",
            reason: reason.to_string(),
        };
        let (partition,): (u32,) = space.unpack(&kv.key).map_err(|e| corrupt(&e.to_string()))?;
        let offset = <[u8; 8]>::try_from(kv.value.as_ref())
            .map_err(|_| corrupt("not 8 bytes"))
            .map(u64::from_be_bytes)?;
        out.insert(partition, offset);
    }
    Ok(out)
}

/// Marks a replicated receipt as applied; `false` when it already was.
///
/// # Errors
/// Store failures.
pub async fn mark_receipt_applied(
    tx: &Transaction,
    conv_id: &str,
    msg_id: &str,
    from_user: &str,
    kind: ReceiptKind,
) -> Result<bool, StoreError> {
    let kind = match kind {
        ReceiptKind::Delivered => "delivered",
        ReceiptKind::Read => "read",
    };
    let key = keys::receipt_seen(conv_id, msg_id, from_user, kind);
    if tx.get(&key).await?.is_some() {
        return Ok(false);
    }
    tx.set(&key, &[])?;
    Ok(true)
}
