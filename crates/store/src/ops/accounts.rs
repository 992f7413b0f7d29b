//! Users, devices and their cursors.

use meridian_kv::{RangeOption, Transaction};

use super::{decode, encode, get_json, record_ids, stamp_from};
use crate::StoreError;
use crate::keys::{self, STAMP_ZERO, Stamp};
use crate::model::*;

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
