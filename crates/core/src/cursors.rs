//! Device cursors: acks moving them forward, and reading them at attach.

use meridian_store as store;
use meridian_store::keys::Stamp;
use meridian_wire::ErrorCode;

use crate::messaging::refused;
use crate::{Caller, CoreError, Messaging};

impl Messaging {
    /// Moves the caller's device cursor forward to `cursor` (never back).
    ///
    /// # Errors
    /// Store failures.
    pub async fn ack(&self, caller: &Caller, cursor: &Stamp) -> Result<(), CoreError> {
        self.ack_many(std::iter::once((caller, cursor))).await
    }

    /// Moves several devices' cursors forward in one transaction (each as
    /// [`Messaging::ack`] would): the acks of one gateway stream that
    /// arrived while the previous ones committed.
    ///
    /// # Errors
    /// Store failures.
    pub async fn ack_many<'a>(
        &self,
        acks: impl Iterator<Item = (&'a Caller, &'a Stamp)> + Clone,
    ) -> Result<(), CoreError> {
        self.db
            .run(|tx, _| {
                let acks = acks.clone();
                // A cursor lost with the machine only moves back: the device
                // is delivered again what it holds and drops it by id. So
                // acks do not wait for the disk; the next send's fsync takes
                // them there.
                tx.relax_durability();
                async move {
                    for (caller, cursor) in acks {
                        store::advance_cursor(&tx, &caller.user_id, &caller.device_id, cursor)?;
                    }
                    Ok::<_, CoreError>(())
                }
            })
            .await
    }

    /// Raises the floor of the caller's device to `lost_through` (never
    /// lowers it): the device lost the entries through it, and its
    /// delivery tells it `gap` before anything after them.
    ///
    /// # Errors
    /// Store failures.
    pub async fn raise_floor(
        &self,
        caller: &Caller,
        lost_through: &Stamp,
    ) -> Result<(), CoreError> {
        self.db
            .run(|tx, _| async move {
                let floor = store::get_inbox_floor(&tx, &caller.user_id, &caller.device_id).await?;
                if *lost_through > floor {
                    store::set_inbox_floor(&tx, &caller.user_id, &caller.device_id, lost_through)?;
                }
                Ok::<_, CoreError>(())
            })
            .await
    }

    /// The stored cursor of the caller's device, refusing a device revoked
    /// since it authenticated.
    ///
    /// # Errors
    /// `token_revoked`, `not_found`; store failures.
    pub async fn attach_cursor(&self, caller: &Caller) -> Result<Stamp, CoreError> {
        self.db
            .run(|tx, _| async move {
                let device = store::get_device(&tx, &caller.user_id, &caller.device_id)
                    .await?
                    .ok_or_else(|| refused(ErrorCode::NotFound, "no such device"))?;
                if device.revoked_ms.is_some() {
                    return Err(refused(ErrorCode::TokenRevoked, "this device was revoked"));
                }
                Ok(store::get_cursor(&tx, &caller.user_id, &caller.device_id).await?)
            })
            .await
    }

    /// The stored cursor of the caller's device.
    ///
    /// # Errors
    /// Store failures.
    pub async fn cursor(&self, caller: &Caller) -> Result<Stamp, CoreError> {
        self.db
            .run(|tx, _| async move {
                Ok::<_, CoreError>(
                    store::get_cursor(&tx, &caller.user_id, &caller.device_id).await?,
                )
            })
            .await
    }
}
