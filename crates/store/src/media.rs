//! Media records and the check queue.

use meridian_kv::{KeyRange, RangeOption, Transaction, key_after};

use crate::StoreError;
use crate::keys;
use crate::model::Media;
use crate::ops::{decode, encode};

/// The media record.
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn get_media(tx: &Transaction, media_id: &str) -> Result<Option<Media>, StoreError> {
    match tx.get(&keys::media(media_id)).await? {
        Some(raw) => Ok(Some(decode("media", &raw)?)),
        None => Ok(None),
    }
}

/// Writes the media record.
///
/// # Errors
/// Store limits.
pub fn put_media(tx: &Transaction, media: &Media) -> Result<(), StoreError> {
    Ok(tx.set(&keys::media(&media.id), &encode(media))?)
}

/// Removes the media record.
///
/// # Errors
/// Store limits.
pub fn clear_media(tx: &Transaction, media_id: &str) -> Result<(), StoreError> {
    Ok(tx.clear(&keys::media(media_id))?)
}

/// Queues `media_id` for its check and wakes the checker.
///
/// # Errors
/// Store limits.
pub fn enqueue_media_check(tx: &Transaction, media_id: &str) -> Result<(), StoreError> {
    tx.set_versionstamped_key(&keys::new_media_check(), media_id.as_bytes())?;
    tx.atomic_add(&keys::media_check_head(), 1)?;
    Ok(())
}

/// Up to `limit` of the oldest queued checks: `(queue key, media id)`.
///
/// # Errors
/// Store failures.
pub async fn read_media_checks(
    tx: &Transaction,
    limit: usize,
) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
    let (begin, end) = keys::media_checks().range();
    let rows = tx
        .get_range_snapshot(&RangeOption::new(KeyRange::new(begin, end)).limit(limit))
        .await?;
    Ok(rows
        .into_iter()
        .map(|kv| {
            (
                kv.key.to_vec(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect())
}

/// Removes a queued check by its queue key.
///
/// # Errors
/// Store limits.
pub fn clear_media_check(tx: &Transaction, queue_key: &[u8]) -> Result<(), StoreError> {
    Ok(tx.clear(queue_key)?)
}

/// Up to `limit` media records after `after` (a record key), in id order,
/// with the last key read (for paging through every record).
///
/// # Errors
/// Store failures or a corrupt record.
pub async fn media_page(
    tx: &Transaction,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<Media>, Option<Vec<u8>>), StoreError> {
    let all = keys::all_media();
    let range = match after {
        Some(key) => KeyRange::new(key_after(key), all.end.clone()),
        None => all,
    };
    let rows = tx
        .get_range_snapshot(&RangeOption::new(range).limit(limit))
        .await?;
    let last = rows.last().map(|kv| kv.key.to_vec());
    let media = rows
        .iter()
        .map(|kv| decode("media", &kv.value))
        .collect::<Result<Vec<Media>, _>>()?;
    Ok((media, last))
}
