//! Messages: the history of a conversation, its id index, send records
//! (idempotency) and history pruning.

use meridian_kv::{KeyRange, RangeOption, Transaction, key_after};

use super::{decode, encode, get_json};
use crate::StoreError;
use crate::keys::{self};
use crate::model::*;

/// Where a message sits in its conversation's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Its stamp.
    pub hlc: u64,
    /// The region that accepted it.
    pub origin_region: String,
    /// Its id.
    pub msg_id: String,
}

/// Writes a message into the history and its id index.
///
/// # Errors
/// Store limits.
pub fn put_message(tx: &Transaction, message: &Message) -> Result<(), StoreError> {
    tx.set(
        &keys::message(
            &message.conv_id,
            message.hlc,
            &message.origin_region,
            &message.msg_id,
        ),
        &encode(message),
    )?;
    tx.set(
        &keys::message_by_id(&message.conv_id, &message.msg_id),
        &meridian_kv::tuple::pack(&(message.hlc, message.origin_region.as_str())),
    )?;
    Ok(())
}

/// A message by its position in the history.
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn get_message(
    tx: &Transaction,
    conv_id: &str,
    at: &Position,
) -> Result<Option<Message>, StoreError> {
    message_at(
        tx,
        &keys::message(conv_id, at.hlc, &at.origin_region, &at.msg_id),
    )
    .await
}

/// The message stored at history key `key`, by a snapshot read.
async fn message_at(tx: &Transaction, key: &[u8]) -> Result<Option<Message>, StoreError> {
    match tx.get_snapshot(key).await? {
        Some(raw) => Ok(Some(decode("message", &raw)?)),
        None => Ok(None),
    }
}

/// The history key of the message that a message entry names (`None` for
/// other entries).
pub fn entry_message_key(entry: &InboxEntry) -> Option<Vec<u8>> {
    match entry {
        InboxEntry::Message {
            conv_id,
            hlc,
            origin_region,
            msg_id,
        } => Some(keys::message(conv_id, *hlc, origin_region, msg_id)),
        _ => None,
    }
}

/// The message that a message entry names: `None` for other entries, and
/// for a message retention already removed from history. A snapshot read.
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn get_entry_message(
    tx: &Transaction,
    entry: &InboxEntry,
) -> Result<Option<Message>, StoreError> {
    match entry_message_key(entry) {
        Some(key) => message_at(tx, &key).await,
        None => Ok(None),
    }
}

/// The position of a message by id, if it exists.
///
/// # Errors
/// Store failures or a corrupt index entry.
pub async fn message_position(
    tx: &Transaction,
    conv_id: &str,
    msg_id: &str,
) -> Result<Option<Position>, StoreError> {
    let Some(raw) = tx
        .get_snapshot(&keys::message_by_id(conv_id, msg_id))
        .await?
    else {
        return Ok(None);
    };
    let (hlc, origin_region): (u64, String) =
        meridian_kv::tuple::unpack(&raw).map_err(|e| StoreError::Corrupt {
            what: "msg_by_id",
            reason: e.to_string(),
        })?;
    Ok(Some(Position {
        hlc,
        origin_region,
        msg_id: msg_id.to_string(),
    }))
}

/// A page of history: messages strictly after (`backward == false`) or
/// before (`backward == true`) position `from`, nearest first; without
/// `from`, from the oldest (forward) or the newest (backward). With
/// `stop`, only messages strictly on `from`'s side of it: between the two.
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn history_page(
    tx: &Transaction,
    conv_id: &str,
    from: Option<&Position>,
    stop: Option<&Position>,
    backward: bool,
    limit: usize,
) -> Result<Vec<Message>, StoreError> {
    let space = keys::messages_of(conv_id);
    let (mut begin, mut end) = space.range();
    let pack = |at: &Position| space.pack(&(at.hlc, at.origin_region.as_str(), at.msg_id.as_str()));
    // The bound nearer the reader is `from`; the far one is `stop`.
    let (near, far) = if backward {
        (&mut end, &mut begin)
    } else {
        (&mut begin, &mut end)
    };
    if let Some(at) = from {
        *near = if backward {
            pack(at)
        } else {
            key_after(&pack(at))
        };
    }
    if let Some(at) = stop {
        *far = if backward {
            key_after(&pack(at))
        } else {
            pack(at)
        };
    }
    if begin >= end {
        return Ok(Vec::new());
    }
    let pairs = tx
        .get_range_snapshot(
            &RangeOption::new(KeyRange::new(begin, end))
                .limit(limit)
                .reverse(backward),
        )
        .await?;
    pairs
        .iter()
        .map(|kv| decode("message", &kv.value))
        .collect()
}

/// The first result of an earlier send with this `client_msg_id`.
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn get_send_record(
    tx: &Transaction,
    device_id: &str,
    client_msg_id: &str,
) -> Result<Option<SendRecord>, StoreError> {
    get_json(
        tx,
        &keys::idempotency(device_id, client_msg_id),
        "send record",
    )
    .await
}

/// Records a send's result under its `client_msg_id`.
///
/// # Errors
/// Store limits.
pub fn put_send_record(
    tx: &Transaction,
    device_id: &str,
    client_msg_id: &str,
    record: &SendRecord,
) -> Result<(), StoreError> {
    Ok(tx.set(
        &keys::idempotency(device_id, client_msg_id),
        &encode(record),
    )?)
}

/// Messages [`prune_history`] removes per call (each with its records), so
/// one transaction stays far below the size and time limits.
pub const PRUNE_STEP: usize = 256;

/// Removes up to [`PRUNE_STEP`] of a conversation's messages stamped
/// before `before_hlc` (exclusive), and with each the records that name it:
/// its id's locator (`msg_by_id`), the receipts already applied for it
/// (`receipt_seen`) and its sender's send record (`idem`, kept at the
/// sender's home; a retry of that send after this is a new send, so
/// retention bounds the deduplication window too). Returns how many it
/// removed: fewer than [`PRUNE_STEP`] means none that old remain.
///
/// Looks first: nearly every sweep finds nothing that old, and then writes
/// nothing (a cleared range over messages makes the inbox feed fall back to
/// the store for every reader, and costs the embedded engine a range scan in
/// the commit path).
///
/// # Errors
/// Store failures and limits; a stored message that does not decode.
pub async fn prune_history(
    tx: &Transaction,
    conv_id: &str,
    before_hlc: u64,
) -> Result<usize, StoreError> {
    let space = keys::messages_of(conv_id);
    let (begin, _) = space.range();
    let old = KeyRange::new(begin.clone(), space.pack(&(before_hlc,)));
    let doomed = tx
        .get_range_snapshot(&RangeOption::new(old).limit(PRUNE_STEP))
        .await?;
    let Some(last) = doomed.last() else {
        return Ok(0);
    };
    for kv in &doomed {
        let message: Message = decode("message", &kv.value)?;
        tx.clear(&keys::message_by_id(conv_id, &message.msg_id))?;
        let (seen_begin, seen_end) = keys::receipts_seen_of(conv_id, &message.msg_id).range();
        tx.clear_range(&KeyRange::new(seen_begin, seen_end))?;
        tx.clear(&keys::idempotency(
            &message.sender_device,
            &message.client_msg_id,
        ))?;
    }
    tx.clear_range(&KeyRange::new(begin, key_after(&last.key)))?;
    Ok(doomed.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_database as open;

    fn message(n: u64) -> Message {
        Message {
            msg_id: format!("m{n:04}"),
            conv_id: "c".to_string(),
            sender_user: "u".to_string(),
            sender_device: "d".to_string(),
            client_msg_id: format!("k{n:04}"),
            hlc: 1_000 + n,
            origin_region: "eu".to_string(),
            payload: String::new(),
            reply_to: None,
            sent_ms: 0,
            attachments: Vec::new(),
        }
    }

    /// 300 old messages and 2 new ones: pruning takes the old in steps,
    /// each with its locator, send record and applied receipts, and leaves
    /// the new ones and theirs alone.
    #[tokio::test]
    async fn pruned_messages_take_their_records_with_them() {
        let db = open();
        let count = PRUNE_STEP as u64 + 44 + 2;
        let tx = db.begin();
        for n in 0..count {
            let message = message(n);
            put_message(&tx, &message).unwrap();
            let record = SendRecord {
                conv_id: "c".to_string(),
                msg_id: message.msg_id.clone(),
                hlc: message.hlc,
                sent_ms: 0,
            };
            put_send_record(&tx, "d", &message.client_msg_id, &record).unwrap();
            tx.set(&keys::receipt_seen("c", &message.msg_id, "v", "read"), b"")
                .unwrap();
        }
        tx.commit().await.unwrap();

        let cut = 1_000 + count - 2;
        let mut steps = Vec::new();
        loop {
            let tx = db.begin();
            let removed = prune_history(&tx, "c", cut).await.unwrap();
            tx.commit().await.unwrap();
            steps.push(removed);
            if removed < PRUNE_STEP {
                break;
            }
        }
        assert_eq!(steps, [PRUNE_STEP, 44]);

        let tx = db.begin();
        for n in 0..count {
            let message = message(n);
            let kept = n >= count - 2;
            let located = message_position(&tx, "c", &message.msg_id).await.unwrap();
            assert_eq!(located.is_some(), kept, "msg_by_id of {n}");
            let record = get_send_record(&tx, "d", &message.client_msg_id)
                .await
                .unwrap();
            assert_eq!(record.is_some(), kept, "idem of {n}");
            let seen = tx
                .get(&keys::receipt_seen("c", &message.msg_id, "v", "read"))
                .await
                .unwrap();
            assert_eq!(seen.is_some(), kept, "receipt_seen of {n}");
        }
        let tx = db.begin();
        assert_eq!(prune_history(&tx, "c", cut).await.unwrap(), 0);
    }
}
