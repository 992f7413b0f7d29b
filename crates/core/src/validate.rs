//! Input checks shared by every operation.

use meridian_wire::ErrorCode;
use meridian_wire::limits::{MAX_ID_BYTES, is_id, is_name_char};

use crate::CoreError;

/// An id: 1–128 bytes of `[A-Za-z0-9._@:-]` (`meridian_wire::limits`).
pub fn id(kind: &str, value: &str) -> Result<(), CoreError> {
    if is_id(value) {
        Ok(())
    } else {
        Err(CoreError::refused(
            ErrorCode::BadRequest,
            format!("{kind} must be 1-{MAX_ID_BYTES} characters of [A-Za-z0-9._@:-]"),
        ))
    }
}

/// A client idempotency key: 1–64 printable ASCII characters.
pub fn client_msg_id(value: &str) -> Result<(), CoreError> {
    if (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(CoreError::refused(
            ErrorCode::BadRequest,
            "client_msg_id must be 1-64 printable ASCII characters",
        ))
    }
}

/// A human name: 1–`max` characters, none of them a control or an
/// invisible formatting character (`meridian_wire::limits::is_name_char`).
pub fn name(kind: &str, value: &str, max: usize) -> Result<(), CoreError> {
    let count = value.chars().count();
    if count == 0 || count > max || !value.chars().all(is_name_char) {
        return Err(CoreError::refused(
            ErrorCode::InvalidName,
            format!(
                "{kind} must be 1-{max} characters without control or invisible formatting characters"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        assert!(id("conv_id", "0190abcd-1234@us-east").is_ok());
        assert!(id("conv_id", "").is_err());
        assert!(id("conv_id", "a/b").is_err());
        assert!(client_msg_id("m-1").is_ok());
        assert!(client_msg_id(&"x".repeat(65)).is_err());
        assert!(name("name", "Friends", 128).is_ok());
        assert!(name("name", "bad\u{7}", 128).is_err());
        assert!(name("name", &"é".repeat(129), 128).is_err());
        // Review L1: a right-to-left override and a zero-width space.
        assert!(name("name", "ecila\u{202E}", 128).is_err());
        assert!(name("name", "al\u{200B}ice", 128).is_err());
        assert!(name("name", "Zoë 👋 مرحبا", 128).is_ok());
    }
}
