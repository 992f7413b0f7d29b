//! 64-bit integers that JSON carries as decimal strings.
//!
//! HLC stamps are about 3.9e17, past 2^53: JavaScript's `JSON.parse` rounds
//! such a number to the nearest double, so a browser would order messages
//! wrongly and echo a `last_seen_hlc` the server never sent. The protocol
//! therefore writes them as strings (`"hlc":"393857362384961537"`) and, for
//! clients written before that, still reads a JSON integer.
//!
//! Used as `#[serde(with = "crate::decimal")]` on a `u64` field.

use serde::{Deserialize, Deserializer, Serializer};

/// Writes `value` as a decimal string.
///
/// # Errors
/// The serializer's.
pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Reads a decimal string of 1–20 digits within `u64`, or a JSON integer.
///
/// # Errors
/// Anything else: a negative or fractional number, a string that is not
/// plain decimal digits (no sign, no spaces, no exponent), or one past
/// `u64::MAX`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<'a> {
        Number(u64),
        Text(std::borrow::Cow<'a, str>),
    }
    match Either::deserialize(deserializer).map_err(|_| {
        serde::de::Error::custom("expected a decimal string (or integer) of 64 bits")
    })? {
        Either::Number(value) => Ok(value),
        Either::Text(text) => parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a decimal string of at most 64 bits"
            ))
        }),
    }
}

/// `text` as plain decimal digits within `u64`.
fn parse(text: &str) -> Option<u64> {
    let digits = !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Stamped {
        #[serde(with = "super")]
        hlc: u64,
    }

    fn read(json: &str) -> Result<u64, String> {
        serde_json::from_str::<Stamped>(json)
            .map(|s| s.hlc)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn stamps_past_two_to_the_53_are_written_as_strings() {
        let json = serde_json::to_string(&Stamped {
            hlc: 393_857_362_384_961_537,
        })
        .unwrap();
        assert_eq!(json, r#"{"hlc":"393857362384961537"}"#);
    }

    #[test]
    fn strings_and_integers_are_both_read() {
        assert_eq!(
            read(r#"{"hlc":"393857362384961537"}"#),
            Ok(393_857_362_384_961_537)
        );
        assert_eq!(
            read(r#"{"hlc":393857362384961537}"#),
            Ok(393_857_362_384_961_537)
        );
        assert_eq!(read(r#"{"hlc":"18446744073709551615"}"#), Ok(u64::MAX));
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        for bad in [
            r#"{"hlc":"-1"}"#,
            r#"{"hlc":"1e5"}"#,
            r#"{"hlc":" 12"}"#,
            r#"{"hlc":""}"#,
            r#"{"hlc":"18446744073709551616"}"#,
            r#"{"hlc":-1}"#,
            r#"{"hlc":1.5}"#,
            r#"{"hlc":null}"#,
        ] {
            let error = read(bad).expect_err(bad);
            assert!(error.contains("64 bits"), "{bad}: {error}");
        }
    }
}
