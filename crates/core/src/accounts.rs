//! Accounts and devices: registration, token authentication, profiles, and
//! adding, listing and revoking devices.

use base64::Engine as _;
use meridian_store::{self as store, Device, User};
use meridian_wire::ErrorCode;
use meridian_wire::limits::{MAX_DISPLAY_NAME_CHARS, MAX_LABEL_CHARS};
use sha2::{Digest, Sha256};

use crate::messaging::refused;
use crate::validate;
use crate::{Caller, CoreError, Messaging};

/// A new device's credentials; the token is shown once.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Device id.
    pub device_id: String,
    /// `"{device_id}.{secret}"`.
    pub token: String,
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equality that takes the same time wherever the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Messaging {
    fn new_token(&self, device_id: &str) -> (String, String) {
        let secret =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.ids.random_bytes(32));
        (format!("{device_id}.{secret}"), hash_secret(&secret))
    }

    /// Registers a user homed in this region, with a first device.
    ///
    /// # Errors
    /// `invalid_name` for a bad display name or label; store failures.
    pub async fn register_user(
        &self,
        display_name: &str,
        device_label: &str,
    ) -> Result<(User, Credentials), CoreError> {
        validate::name("display_name", display_name, MAX_DISPLAY_NAME_CHARS)?;
        validate::name("device_label", device_label, MAX_LABEL_CHARS)?;
        let user = User {
            id: self.new_local_id(),
            display_name: display_name.to_string(),
            home_region: self.home_region().to_string(),
            created_ms: self.now_ms(),
        };
        let device_id = self.new_local_id();
        let (token, token_hash) = self.new_token(&device_id);
        let device = Device {
            id: device_id.clone(),
            user_id: user.id.clone(),
            token_hash,
            label: device_label.to_string(),
            created_ms: user.created_ms,
            revoked_ms: None,
        };
        self.db
            .run(|tx, _| {
                let (user, device) = (&user, &device);
                async move {
                    store::put_user(&tx, user)?;
                    store::put_device(&tx, device)?;
                    Ok::<_, CoreError>(())
                }
            })
            .await?;
        Ok((user, Credentials { device_id, token }))
    }

    /// Resolves a device token to its caller.
    ///
    /// # Errors
    /// `invalid_token` (malformed, unknown or wrong secret), `token_revoked`.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, CoreError> {
        let invalid = || refused(ErrorCode::InvalidToken, "the token is not valid");
        let (device_id, secret) = token.split_once('.').ok_or_else(invalid)?;
        if validate::id("device_id", device_id).is_err() || secret.is_empty() || secret.len() > 128
        {
            return Err(invalid());
        }
        let device = self
            .db
            .run(|tx, _| async move {
                let Some(user_id) = store::device_owner(&tx, device_id).await? else {
                    return Ok::<_, CoreError>(None);
                };
                Ok(store::get_device(&tx, &user_id, device_id).await?)
            })
            .await?
            .ok_or_else(invalid)?;
        if !constant_time_eq(device.token_hash.as_bytes(), hash_secret(secret).as_bytes()) {
            return Err(invalid());
        }
        if device.revoked_ms.is_some() {
            return Err(refused(ErrorCode::TokenRevoked, "this device was revoked"));
        }
        Ok(Caller {
            user_id: device.user_id,
            device_id: device.id,
        })
    }

    /// A user's profile.
    ///
    /// # Errors
    /// `not_found`.
    pub async fn get_user(&self, user_id: &str) -> Result<User, CoreError> {
        validate::id("user_id", user_id)?;
        self.db
            .run(|tx, _| async move { Ok::<_, CoreError>(store::get_user(&tx, user_id).await?) })
            .await?
            .ok_or_else(|| refused(ErrorCode::NotFound, format!("no user {user_id}")))
    }

    /// Adds a device to the caller's account. The new device's cursor starts
    /// at the current end of the inbox: it receives what arrives from now on
    /// (older messages come from history).
    ///
    /// # Errors
    /// `invalid_name`; `too_many_devices` when the account has the most
    /// active devices allowed; store failures.
    pub async fn add_device(&self, caller: &Caller, label: &str) -> Result<Credentials, CoreError> {
        validate::name("label", label, MAX_LABEL_CHARS)?;
        let device_id = self.new_local_id();
        let (token, token_hash) = self.new_token(&device_id);
        let device = Device {
            id: device_id.clone(),
            user_id: caller.user_id.clone(),
            token_hash,
            label: label.to_string(),
            created_ms: self.now_ms(),
            revoked_ms: None,
        };
        let most = self.config.max_devices_per_user;
        self.db
            .run(|tx, _| {
                let device = &device;
                async move {
                    // Every device carries its own rate limits and its own
                    // inbox cursor: free devices would multiply both.
                    let active = store::list_devices(&tx, &device.user_id)
                        .await?
                        .iter()
                        .filter(|d| d.revoked_ms.is_none())
                        .count();
                    if active >= most {
                        return Err(refused(
                            ErrorCode::TooManyDevices,
                            format!(
                                "an account has at most {most} active devices; revoke one first"
                            ),
                        ));
                    }
                    store::put_device(&tx, device)?;
                    let head = store::last_inbox_stamp(&tx, &device.user_id).await?;
                    store::set_cursor(&tx, &device.user_id, &device.id, &head)?;
                    Ok::<_, CoreError>(())
                }
            })
            .await?;
        Ok(Credentials { device_id, token })
    }

    /// The caller's devices.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_devices(&self, caller: &Caller) -> Result<Vec<Device>, CoreError> {
        self.db
            .run(|tx, _| async move {
                Ok::<_, CoreError>(store::list_devices(&tx, &caller.user_id).await?)
            })
            .await
    }

    /// Revokes one of the caller's devices; its token is refused from now on.
    ///
    /// # Errors
    /// `not_found` when the device is not the caller's.
    pub async fn revoke_device(&self, caller: &Caller, device_id: &str) -> Result<(), CoreError> {
        validate::id("device_id", device_id)?;
        let now = self.now_ms();
        self.db
            .run(|tx, _| async move {
                let mut device = store::get_device(&tx, &caller.user_id, device_id)
                    .await?
                    .ok_or_else(|| {
                        refused(ErrorCode::NotFound, format!("no device {device_id}"))
                    })?;
                if device.revoked_ms.is_none() {
                    device.revoked_ms = Some(now);
                    store::put_device(&tx, &device)?;
                }
                Ok::<_, CoreError>(())
            })
            .await
    }
}
