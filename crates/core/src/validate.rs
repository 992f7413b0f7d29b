//! Input checks shared by every operation.

use meridian_wire::ErrorCode;

use crate::CoreError;

/// Longest id accepted anywhere (user, device, conversation, message ids).
const MAX_ID_BYTES: usize = 128;

/// An id: 1–128 bytes of `[A-Za-z0-9._@:-]`.
pub fn id(kind: &str, value: &str) -> Result<(), CoreError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_ID_BYTES
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b':' | b'-'));
    if ok {
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

/// Whether `c` is an invisible formatting character (Unicode's `Cf`): a
/// bidirectional override makes a name read as another (`alice` spelled
/// backwards and reversed), a zero-width one makes two names look alike.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// A human name: 1–`max` characters, no control or invisible formatting
/// characters.
pub fn name(kind: &str, value: &str, max: usize) -> Result<(), CoreError> {
    let count = value.chars().count();
    if count == 0 || count > max || value.chars().any(|c| c.is_control() || is_format(c)) {
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
