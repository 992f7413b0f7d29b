//! Typed reads and writes inside a caller's transaction, one file per
//! kind of record: accounts (users, devices, cursors), conversations and
//! members, messages and history, inboxes and retention's records.

mod accounts;
mod conversations;
mod inbox;
mod messages;

pub use accounts::*;
pub use conversations::*;
pub use inbox::*;
pub use messages::*;

use meridian_kv::{KeyRange, RangeOption, Transaction, key_after};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;
use crate::keys::Stamp;

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
    use crate::model::{Conversation, ConversationKind, User};
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
