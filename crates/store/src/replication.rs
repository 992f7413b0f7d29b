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

/// Where a destination stands in one partition of a source's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppliedPosition {
    /// The next offset to apply (0 when none was applied yet).
    pub next: u64,
    /// The fingerprint of the entry at `next - 1`, the last applied, so
    /// the source can check its log still holds that entry there.
    pub last: Option<u64>,
}

impl AppliedPosition {
    fn encode(self) -> Vec<u8> {
        let mut out = self.next.to_be_bytes().to_vec();
        if let Some(last) = self.last {
            out.extend_from_slice(&last.to_be_bytes());
        }
        out
    }

    fn decode(raw: &[u8]) -> Option<Self> {
        let word = |range: std::ops::Range<usize>| {
            raw.get(range)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
        };
        match raw.len() {
            8 => Some(Self {
                next: word(0..8)?,
                last: None,
            }),
            16 => Some(Self {
                next: word(0..8)?,
                last: Some(word(8..16)?),
            }),
            _ => None,
        }
    }
}

/// Where this region stands in `source_region`'s `partition`. Read with a
/// conflict: two appliers of one partition cannot both commit.
///
/// # Errors
/// Store failures.
pub async fn applied_position(
    tx: &Transaction,
    source_region: &str,
    partition: u32,
) -> Result<AppliedPosition, StoreError> {
    Ok(tx
        .get(&keys::applied(source_region, partition))
        .await?
        .and_then(|raw| AppliedPosition::decode(raw.as_ref()))
        .unwrap_or_default())
}

/// Records where this region stands in `source_region`'s `partition`.
///
/// # Errors
/// Store limits.
pub fn set_applied_position(
    tx: &Transaction,
    source_region: &str,
    partition: u32,
    position: AppliedPosition,
) -> Result<(), StoreError> {
    Ok(tx.set(&keys::applied(source_region, partition), &position.encode())?)
}

/// Every recorded position in `source_region`'s log, by partition.
///
/// # Errors
/// Store failures or a corrupt key.
pub async fn applied_positions(
    tx: &Transaction,
    source_region: &str,
) -> Result<BTreeMap<u32, AppliedPosition>, StoreError> {
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
        let position = AppliedPosition::decode(kv.value.as_ref())
            .ok_or_else(|| corrupt("not 8 or 16 bytes"))?;
        out.insert(partition, position);
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

/// The epoch of `source_region`'s log the recorded offsets belong to (0:
/// none recorded).
///
/// # Errors
/// Store failures.
pub async fn applied_epoch(tx: &Transaction, source_region: &str) -> Result<u64, StoreError> {
    Ok(tx
        .get(&keys::applied_epoch(source_region))
        .await?
        .and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Records that the offsets from `source_region` belong to its log's
/// `epoch`; with `restart`, the offsets recorded before are forgotten and
/// `from` recorded instead (the log is another incarnation: its entries
/// are applied again from there).
///
/// # Errors
/// Store limits.
pub fn start_applied_epoch(
    tx: &Transaction,
    source_region: &str,
    epoch: u64,
    restart: Option<&BTreeMap<u32, u64>>,
) -> Result<(), StoreError> {
    if let Some(from) = restart {
        let (begin, end) = keys::applied_of(source_region).range();
        tx.clear_range(&KeyRange::new(begin, end))?;
        for (&partition, &next) in from {
            let position = AppliedPosition { next, last: None };
            set_applied_position(tx, source_region, partition, position)?;
        }
    }
    Ok(tx.set(&keys::applied_epoch(source_region), &epoch.to_be_bytes())?)
}
