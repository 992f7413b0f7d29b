//! The limits of the client protocol's fields, stated once: the core
//! enforces them with the predicates here, and the OpenAPI document
//! describes them with the patterns and schemas here, so a client (or a
//! fuzzer) reading the document sends exactly what the server accepts.

/// Longest id (user, device, conversation, message, media ids), bytes.
pub const MAX_ID_BYTES: usize = 128;

/// An id's characters, as an ECMA-262 pattern (its length is
/// `maxLength`).
pub const ID_PATTERN: &str = "^[A-Za-z0-9._@:-]+$";

/// Whether `value` is an id: 1–[`MAX_ID_BYTES`] bytes of
/// `[A-Za-z0-9._@:-]`.
pub fn is_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_ID_BYTES
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b':' | b'-'))
}

/// Longest display name of a user, characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;
/// Longest device label, characters.
pub const MAX_LABEL_CHARS: usize = 64;
/// Longest group name, characters (a core's default).
pub const MAX_GROUP_NAME_CHARS: usize = 128;
/// Most members of a group, the admin included (a core's default).
pub const MAX_GROUP_MEMBERS: usize = 100;

/// Characters a name must not contain: control characters (Unicode `Cc`)
/// and invisible formatting characters (`Cf`): a bidirectional override
/// makes a name read as another, a zero-width character or a run of tag
/// characters (U+E0020–E007F, invisible after any letter) makes two names
/// look alike (review L1). Inclusive ranges.
const NOT_IN_NAMES: &[(u32, u32)] = &[
    (0x0000, 0x001F),
    (0x007F, 0x009F),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Whether `c` may appear in a name (display names, labels, group names).
pub fn is_name_char(c: char) -> bool {
    let c = u32::from(c);
    !NOT_IN_NAMES
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// One code point in a pattern: `\uXXXX` in the Basic Multilingual Plane,
/// `\x{XXXXX}` beyond it.
fn escaped(code: u32) -> String {
    if code <= 0xFFFF {
        format!("\\u{code:04X}")
    } else {
        format!("\\x{{{code:X}}}")
    }
}

/// A name's characters as a pattern (its length in characters is
/// `minLength`/`maxLength`): everything but [`NOT_IN_NAMES`]. Characters of
/// the Basic Multilingual Plane are spelled `\uXXXX` (ECMA-262, Python,
/// Rust); the few beyond it `\x{XXXXX}`, the PCRE form that Rust's `regex`
/// and schemathesis read, which JavaScript reads as `\u{XXXXX}` with the
/// `u` flag.
pub fn name_pattern() -> String {
    let mut pattern = String::from("^[^");
    for &(first, last) in NOT_IN_NAMES {
        pattern.push_str(&escaped(first));
        if last != first {
            pattern.push('-');
            pattern.push_str(&escaped(last));
        }
    }
    pattern.push_str("]*$");
    pattern
}

/// A page of the caller's conversations: at most this many.
pub const MAX_CONVERSATION_PAGE: u32 = 100;
/// A page of history: at most this many messages.
pub const MAX_HISTORY_PAGE: u32 = 200;
/// Either page when `limit` is not given.
pub const DEFAULT_PAGE: u32 = 50;

/// Reads a JSON Schema `integer` into a `u64`: a JSON integer, or a number
/// whose fraction is zero (`15965.0`), which JSON Schema counts as the same
/// integer. Used as `#[serde(deserialize_with = ...)]` on a `u64` field of
/// a REST body.
///
/// # Errors
/// A negative or fractional number, one past `u64::MAX`, or not a number.
pub fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    // 2^64, exactly representable as a double.
    const PAST_U64: f64 = 18_446_744_073_709_551_616.0;
    let number = <serde_json::Number as serde::Deserialize>::deserialize(deserializer)?;
    if let Some(value) = number.as_u64() {
        return Ok(value);
    }
    match number.as_f64() {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked: whole, non-negative and below 2^64"
        )]
        Some(value) if value.fract() == 0.0 && (0.0..PAST_U64).contains(&value) => Ok(value as u64),
        _ => Err(serde::de::Error::custom(format!(
            "expected a non-negative integer, not {number}"
        ))),
    }
}

/// The content types an upload may declare, each as its canonical name.
pub const CONTENT_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/heic",
    "video/mp4",
    "video/quicktime",
    "video/webm",
    "audio/mpeg",
    "audio/mp4",
    "audio/aac",
    "audio/ogg",
    "audio/wav",
    "application/pdf",
    "application/zip",
    "application/octet-stream",
    "text/plain",
];

/// Other names of some of them, which browsers and operating systems
/// report for files: accepted, and stored under the canonical name.
pub const CONTENT_TYPE_ALIASES: &[(&str, &str)] = &[
    ("image/jpg", "image/jpeg"),
    ("image/pjpeg", "image/jpeg"),
    ("audio/mp3", "audio/mpeg"),
    ("audio/x-wav", "audio/wav"),
    ("audio/wave", "audio/wav"),
    ("audio/x-m4a", "audio/mp4"),
    ("audio/m4a", "audio/mp4"),
];

/// The canonical name of a declared content type, if it is accepted:
/// exactly one of [`CONTENT_TYPES`] or [`CONTENT_TYPE_ALIASES`], lower
/// case and without parameters (what a browser's `File.type` gives).
pub fn content_type(declared: &str) -> Option<&'static str> {
    CONTENT_TYPES
        .iter()
        .copied()
        .find(|t| *t == declared)
        .or_else(|| {
            CONTENT_TYPE_ALIASES
                .iter()
                .find(|(alias, _)| *alias == declared)
                .map(|(_, canonical)| *canonical)
        })
}

/// A SHA-256 digest as the media API takes it.
pub const SHA256_PATTERN: &str = "^[0-9A-Fa-f]{64}$";

/// The JSON schemas of these limits, for the OpenAPI document's
/// `schema_with` fields.
#[cfg(feature = "openapi")]
pub mod schema {
    use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, Type};

    use super::*;

    fn string(min: usize, max: usize, pattern: String, description: &str) -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(min))
            .max_length(Some(max))
            .pattern(Some(pattern))
            .description(Some(description))
            .build()
    }

    /// An id.
    pub fn id() -> Object {
        string(
            1,
            MAX_ID_BYTES,
            ID_PATTERN.to_string(),
            "An id: 1-128 characters of [A-Za-z0-9._@:-].",
        )
    }

    fn name(max: usize) -> Object {
        string(
            1,
            max,
            name_pattern(),
            "No control characters and no invisible formatting characters (bidirectional overrides, zero-width and tag characters). Beyond the Basic Multilingual Plane the pattern writes \\x{XXXXX}: JavaScript reads it as \\u{XXXXX} with the u flag.",
        )
    }

    /// A user's display name.
    pub fn display_name() -> Object {
        name(MAX_DISPLAY_NAME_CHARS)
    }

    /// A device label.
    pub fn label() -> Object {
        name(MAX_LABEL_CHARS)
    }

    /// A device label that may be left out.
    pub fn optional_label() -> Object {
        let mut schema = label();
        schema.schema_type =
            utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]);
        schema
    }

    /// A group name.
    pub fn group_name() -> Object {
        name(MAX_GROUP_NAME_CHARS)
    }

    fn ids(max: usize) -> utoipa::openapi::schema::Array {
        ArrayBuilder::new().items(id()).max_items(Some(max)).build()
    }

    /// The members a group is created with (repeats count once; past the
    /// group's size the answer is 409 `group_full`).
    pub fn user_ids() -> utoipa::openapi::schema::Array {
        ids(2 * MAX_GROUP_MEMBERS)
    }

    /// The members added to a group at once.
    pub fn user_ids_to_add() -> utoipa::openapi::schema::Array {
        ids(MAX_GROUP_MEMBERS)
    }

    fn page(max: u32) -> Object {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(max))
            .description(Some(format!("1-{max}, default {DEFAULT_PAGE}.")))
            .build()
    }

    /// The size of a page of conversations.
    pub fn conversation_page() -> Object {
        page(MAX_CONVERSATION_PAGE)
    }

    /// The size of a page of history.
    pub fn history_page() -> Object {
        page(MAX_HISTORY_PAGE)
    }

    /// A declared content type.
    pub fn content_type() -> Object {
        let names = CONTENT_TYPES
            .iter()
            .chain(CONTENT_TYPE_ALIASES.iter().map(|(alias, _)| alias));
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names.copied()))
            .description(Some(
                "Lower case, without parameters; an alias is stored under its canonical name.",
            ))
            .build()
    }

    /// A SHA-256 digest.
    pub fn sha256() -> Object {
        string(
            64,
            64,
            SHA256_PATTERN.to_string(),
            "SHA-256 of the content, 64 hexadecimal characters.",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_id("0190abcd-1234@us-east"));
        assert!(!is_id(""));
        assert!(!is_id("a/b"));
        assert!(!is_id(&"a".repeat(MAX_ID_BYTES + 1)));
    }

    #[test]
    fn names_refuse_controls_and_invisible_formatting() {
        assert!("Zoë 👋 مرحبا".chars().all(is_name_char));
        assert!(!is_name_char('\u{7}'));
        // Review L1: a right-to-left override and a zero-width space.
        assert!(!is_name_char('\u{202E}'));
        assert!(!is_name_char('\u{200B}'));
        // Tag characters are invisible after any letter: `alice` and
        // `alice` followed by a run of them look the same.
        assert!(!"alice\u{E0061}\u{E007F}".chars().all(is_name_char));
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        #[derive(serde::Deserialize)]
        struct Sized {
            #[serde(deserialize_with = "super::integer")]
            size: u64,
        }
        let size = |json: &str| serde_json::from_str::<Sized>(json).map(|s| s.size);
        assert_eq!(size(r#"{"size":15965}"#).unwrap(), 15965);
        assert_eq!(size(r#"{"size":15965.0}"#).unwrap(), 15965);
        assert_eq!(size(r#"{"size":1e3}"#).unwrap(), 1000);
        assert!(size(r#"{"size":1.5}"#).is_err());
        assert!(size(r#"{"size":-1}"#).is_err());
        assert!(size(r#"{"size":1e20}"#).is_err());
        assert!(size(r#"{"size":"1"}"#).is_err());
    }

    #[test]
    fn content_types_are_canonical_or_aliases_exactly() {
        assert_eq!(content_type("image/jpg"), Some("image/jpeg"));
        assert_eq!(content_type("application/pdf"), Some("application/pdf"));
        assert_eq!(content_type("Image/JPEG"), None);
        assert_eq!(content_type("image/png; q=1"), None);
        assert_eq!(content_type("application/x-msdownload"), None);
        assert_eq!(content_type(""), None);
        for (_, canonical) in CONTENT_TYPE_ALIASES {
            assert!(CONTENT_TYPES.contains(canonical));
        }
    }

    #[test]
    fn the_name_pattern_says_what_is_name_char_says() {
        // Through a regex engine (Rust's, which reads both escapes), over
        // every code point: the schema and the server agree exactly.
        let pattern = regex::Regex::new(&name_pattern()).expect("the pattern compiles");
        for code in 0..=0x10_FFFFu32 {
            if let Some(c) = char::from_u32(code) {
                assert_eq!(
                    pattern.is_match(&c.to_string()),
                    is_name_char(c),
                    "U+{code:04X}"
                );
            }
        }
    }
}
