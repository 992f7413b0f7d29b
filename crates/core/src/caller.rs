//! Who is acting: the caller every operation is checked against.

/// Who is acting: established from a device token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user_id: String,
    /// The device.
    pub device_id: String,
}
