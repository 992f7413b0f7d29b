//! Typed reads and writes inside a caller's transaction.

use meridian_kv::{KeyRange, RangeOption, Transaction, key_after};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;
use crate::keys::{self, STAMP_ZERO, Stamp};
use crate::model::*;

pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, raw: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(raw).map_err(|e| StoreError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain records cannot fail (no maps with non-string
    // keys, no custom serializers).
    serde_json::to_vec(value).unwrap_or_default()
}

async fn get_json<T: DeserializeOwned>(
    tx: &Transaction,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, StoreError> {
    match tx.get(key).await? {
        Some(raw) => Ok(Some(decode(what, &raw)?)),
        None => Ok(None),
    }
}

fn stamp_from(raw: &[u8]) -> Option<Stamp> {
    <Stamp>::try_from(raw).ok()
}

/// The ids of the records in `range`, whose keys are `(kind, id)`, after
/// the key `after` (exclusive), at most `limit`, read at snapshot
/// isolation; with the last key read, to page on from. A key that does not
/// decode is passed over.
async fn record_ids(
    tx: &Transaction,
    range: KeyRange,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<String>, Option<Vec<u8>>), StoreError> {
    let begin = after.map(key_after).unwrap_or(range.begin.clone());
    let option = RangeOption::new(KeyRange::new(begin, range.end.clone())).limit(limit);
    let pairs = tx.get_range_snapshot(&option).await?;
    let ids = pairs
        .iter()
        .filter_map(|kv| {
            meridian_kv::tuple::unpack::<(String, String)>(&kv.key)
                .ok()
                .map(|(_, id)| id)
        })
        .collect();
    Ok((ids, pairs.last().map(|kv| kv.key.to_vec())))
}

/// The user record.
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn get_user(tx: &Transaction, user_id: &str) -> Result<Option<User>, StoreError> {
    get_json(tx, &keys::user(user_id), "user").await
}

/// Writes the user record.
///
/// # Errors
/// Store limits.
pub fn put_user(tx: &Transaction, user: &User) -> Result<(), StoreError> {
    Ok(tx.set(&keys::user(&user.id), &encode(user))?)
}

/// A page of user ids, in key order: at most `limit` after the key `after`
/// (the last key of the previous page), with the last key read.
///
/// # Errors
/// Store failures.
pub async fn list_user_ids(
    tx: &Transaction,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<String>, Option<Vec<u8>>), StoreError> {
    record_ids(tx, keys::all_users(), after, limit).await
}

/// The device record.
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn get_device(
    tx: &Transaction,
    user_id: &str,
    device_id: &str,
) -> Result<Option<Device>, StoreError> {
    get_json(tx, &keys::device(user_id, device_id), "device").await
}

/// Writes the device record and its owner index.
///
/// # Errors
/// Store limits.
pub fn put_device(tx: &Transaction, device: &Device) -> Result<(), StoreError> {
    tx.set(&keys::device(&device.user_id, &device.id), &encode(device))?;
    tx.set(&keys::device_owner(&device.id), device.user_id.as_bytes())?;
    Ok(())
}

/// The user owning `device_id`.
///
/// # Errors
/// Store failures.
pub async fn device_owner(tx: &Transaction, device_id: &str) -> Result<Option<String>, StoreError> {
    Ok(tx
        .get(&keys::device_owner(device_id))
        .await?
        .map(|raw| String::from_utf8_lossy(&raw).into_owned()))
}

/// Every device of `user_id`, revoked ones included.
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn list_devices(tx: &Transaction, user_id: &str) -> Result<Vec<Device>, StoreError> {
    let pairs = tx
        .get_range(&RangeOption::new(keys::devices_of(user_id)))
        .await?;
    pairs.iter().map(|kv| decode("device", &kv.value)).collect()
}

/// The last inbox entry `device_id` acknowledged ([`STAMP_ZERO`] if none).
///
/// # Errors
/// Store failures.
pub async fn get_cursor(
    tx: &Transaction,
    user_id: &str,
    device_id: &str,
) -> Result<Stamp, StoreError> {
    Ok(tx
        .get(&keys::cursor(user_id, device_id))
        .await?
        .and_then(|raw| stamp_from(&raw))
        .unwrap_or(STAMP_ZERO))
}

/// Moves the device's cursor.
///
/// # Errors
/// Store limits.
pub fn set_cursor(
    tx: &Transaction,
    user_id: &str,
    device_id: &str,
    stamp: &Stamp,
) -> Result<(), StoreError> {
    Ok(tx.set(&keys::cursor(user_id, device_id), stamp)?)
}

/// Moves the device's cursor forward to `stamp`, never back, without
/// reading it: acks from concurrent sessions never conflict.
///
/// # Errors
/// Store limits.
pub fn advance_cursor(
    tx: &Transaction,
    user_id: &str,
    device_id: &str,
    stamp: &Stamp,
) -> Result<(), StoreError> {
    Ok(tx.atomic_byte_max(&keys::cursor(user_id, device_id), stamp)?)
}

/// The conversation record.
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn get_conversation(
    tx: &Transaction,
    conv_id: &str,
) -> Result<Option<Conversation>, StoreError> {
    get_json(tx, &keys::conversation(conv_id), "conversation").await
}

/// Writes the conversation record.
///
/// # Errors
/// Store limits.
pub fn put_conversation(tx: &Transaction, conv: &Conversation) -> Result<(), StoreError> {
    Ok(tx.set(&keys::conversation(&conv.id), &encode(conv))?)
}

/// A page of conversation ids, in key order: at most `limit` after the key
/// `after` (the last key of the previous page), with the last key read.
///
/// # Errors
/// Store failures.
pub async fn list_conversation_ids(
    tx: &Transaction,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<String>, Option<Vec<u8>>), StoreError> {
    record_ids(tx, keys::all_conversations(), after, limit).await
}

/// A membership, if `user_id` is a member of `conv_id`.
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn get_member(
    tx: &Transaction,
    conv_id: &str,
    user_id: &str,
) -> Result<Option<Member>, StoreError> {
    get_json(tx, &keys::member(conv_id, user_id), "member").await
}

/// Adds or updates a membership and the user's conversation list.
///
/// # Errors
/// Store limits.
pub fn put_member(tx: &Transaction, conv_id: &str, member: &Member) -> Result<(), StoreError> {
    tx.set(&keys::member(conv_id, &member.user_id), &encode(member))?;
    tx.set(&keys::user_conversation(&member.user_id, conv_id), b"")?;
    Ok(())
}

/// Removes a membership.
///
/// # Errors
/// Store limits.
pub fn remove_member(tx: &Transaction, conv_id: &str, user_id: &str) -> Result<(), StoreError> {
    tx.clear(&keys::member(conv_id, user_id))?;
    tx.clear(&keys::user_conversation(user_id, conv_id))?;
    Ok(())
}

/// All members of a conversation (at most 100 by the core's rule).
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn list_members(tx: &Transaction, conv_id: &str) -> Result<Vec<Member>, StoreError> {
    let (begin, end) = keys::members_of(conv_id).range();
    let pairs = tx
        .get_range(&RangeOption::new(KeyRange::new(begin, end)))
        .await?;
    pairs.iter().map(|kv| decode("member", &kv.value)).collect()
}

/// The conversation ids of `user_id`, after `after` (exclusive), at most `limit`.
///
/// # Errors
/// Store failures or a corrupt key.
pub async fn list_user_conversations(
    tx: &Transaction,
    user_id: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let space = keys::conversations_of(user_id);
    let (mut begin, end) = space.range();
    if let Some(after) = after {
        begin = key_after(&space.pack(&(after,)));
    }
    let pairs = tx
        .get_range_snapshot(&RangeOption::new(KeyRange::new(begin, end)).limit(limit))
        .await?;
    pairs
        .iter()
        .map(|kv| {
            space
                .unpack::<(String,)>(&kv.key)
                .map(|(c,)| c)
                .map_err(|e| StoreError::Corrupt {
                    what: "user_conv key",
                    reason: e.to_string(),
                })
        })
        .collect()
}

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
/// `from`, from the oldest (forward) or the newest (backward).
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn history_page(
    tx: &Transaction,
    conv_id: &str,
    from: Option<&Position>,
    backward: bool,
    limit: usize,
) -> Result<Vec<Message>, StoreError> {
    let space = keys::messages_of(conv_id);
    let (mut begin, mut end) = space.range();
    if let Some(at) = from {
        let at = space.pack(&(at.hlc, at.origin_region.as_str(), at.msg_id.as_str()));
        if backward {
            end = at;
        } else {
            begin = key_after(&at);
        }
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

/// The stamp through which retention removed entries ([`STAMP_ZERO`] if never).
///
/// # Errors
/// Store failures.
pub async fn get_inbox_floor(tx: &Transaction, user_id: &str) -> Result<Stamp, StoreError> {
    // A snapshot read: only the retention sweep writes the floor, and the
    // delivery loop must not conflict with it.
    Ok(tx
        .get_snapshot(&keys::inbox_floor(user_id))
        .await?
        .and_then(|raw| stamp_from(&raw))
        .unwrap_or(STAMP_ZERO))
}

/// Records the retention floor.
///
/// # Errors
/// Store limits.
pub fn set_inbox_floor(tx: &Transaction, user_id: &str, stamp: &Stamp) -> Result<(), StoreError> {
    Ok(tx.set(&keys::inbox_floor(user_id), stamp)?)
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

/// Removes a conversation's history older than `before_hlc` (exclusive),
/// if it has any; returns whether it did.
///
/// Looks first: nearly every sweep finds nothing that old, and then writes
/// nothing (a cleared range over messages makes the inbox feed fall back to
/// the store for every reader, and costs the embedded engine a range scan in
/// the commit path).
///
/// # Errors
/// Store failures and limits.
pub async fn prune_history(
    tx: &Transaction,
    conv_id: &str,
    before_hlc: u64,
) -> Result<bool, StoreError> {
    let space = keys::messages_of(conv_id);
    let (begin, _) = space.range();
    let old = KeyRange::new(begin, space.pack(&(before_hlc,)));
    let oldest = tx
        .get_range_snapshot(&RangeOption::new(old.clone()).limit(1))
        .await?;
    if oldest.is_empty() {
        return Ok(false);
    }
    tx.clear_range(&old)?;
    Ok(true)
}

/// Hex form of a stamp for the wire (cursors are opaque strings to clients).
pub fn stamp_to_hex(stamp: &Stamp) -> String {
    hex::encode(stamp)
}

/// Parses a wire cursor.
pub fn stamp_from_hex(text: &str) -> Option<Stamp> {
    hex::decode(text).ok().and_then(|raw| stamp_from(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_database as open;

    #[tokio::test]
    async fn user_and_conversation_ids_page_in_key_order() {
        let db = open();
        let tx = db.begin();
        for id in ["u3", "u1", "u2"] {
            let user = User {
                id: id.to_string(),
                display_name: id.to_string(),
                home_region: "eu".to_string(),
                created_ms: 0,
            };
            put_user(&tx, &user).expect("put user");
        }
        let conversation = Conversation {
            id: "c1".to_string(),
            kind: ConversationKind::Group,
            name: String::new(),
            member_count: 0,
            version: 1,
            created_ms: 0,
        };
        put_conversation(&tx, &conversation).expect("put conversation");
        tx.commit().await.expect("commit");

        let tx = db.begin();
        let (first, last) = list_user_ids(&tx, None, 2).await.expect("page");
        assert_eq!(first, ["u1", "u2"]);
        let (second, end) = list_user_ids(&tx, last.as_deref(), 2).await.expect("page");
        assert_eq!(second, ["u3"]);
        let (rest, none) = list_user_ids(&tx, end.as_deref(), 2).await.expect("page");
        assert!(rest.is_empty() && none.is_none());
        let (convs, _) = list_conversation_ids(&tx, None, 10).await.expect("page");
        assert_eq!(convs, ["c1"]);
    }
}
