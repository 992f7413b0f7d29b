//! Conversations, their members and each user's list of them.

use meridian_kv::{KeyRange, RangeOption, Transaction, key_after};

use super::{decode, encode, get_json, record_ids};
use crate::StoreError;
use crate::keys::{self};
use crate::model::*;

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
