//! Which content types Meridian accepts, and whether the bytes of an upload
//! are what its declared type says.
//!
//! Specific types (images, video, audio, PDF) must sniff as themselves: a
//! PDF declared as `image/png` is refused, so a client never renders bytes
//! as something they are not. Generic files (`application/octet-stream`,
//! `application/zip`, `text/plain`) are stored as declared; they are never
//! rendered, so sniffing only refuses a generic upload that turns out to be
//! an executable.

/// The allowed types: the client protocol's list.
pub use meridian_wire::limits::CONTENT_TYPES as ALLOWED_TYPES;

/// Types whose bytes are not checked against a signature.
const GENERIC_TYPES: &[&str] = &["application/octet-stream", "application/zip", "text/plain"];

/// Types a thumbnail is made for (decodable by the `image` crate).
const THUMBNAIL_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Bytes of an object's start that sniffing needs.
pub const SNIFF_BYTES: usize = 8 * 1024;

/// The canonical form of a declared type, if it is allowed: exactly an
/// allowed type or one of its aliases (`image/jpg` → `image/jpeg`), as
/// the OpenAPI document's enum lists them.
pub fn normalize(content_type: &str) -> Option<&'static str> {
    meridian_wire::limits::content_type(content_type)
}

/// Whether a thumbnail is made for this (normalized) type.
pub fn thumbnailable(content_type: &str) -> bool {
    THUMBNAIL_TYPES.contains(&content_type)
}

/// Why an object's bytes do not match its declared type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("content sniffs as {sniffed}, declared {declared}")]
pub struct TypeMismatch {
    /// The declared (normalized) type.
    pub declared: String,
    /// What the bytes look like (`unknown` when no signature matched).
    pub sniffed: String,
}

/// Checks the first bytes of an object (at least [`SNIFF_BYTES`] of them,
/// or the whole object when smaller) against its declared, normalized type.
///
/// # Errors
/// [`TypeMismatch`] when the bytes are something else.
pub fn check_content(declared: &str, head: &[u8]) -> Result<(), TypeMismatch> {
    let sniffed = infer::get(head).map(|kind| kind.mime_type());
    let mismatch = |sniffed: Option<&str>| TypeMismatch {
        declared: declared.to_string(),
        sniffed: sniffed.unwrap_or("unknown").to_string(),
    };
    if GENERIC_TYPES.contains(&declared) {
        return match sniffed {
            Some(kind) if is_executable(kind) => Err(mismatch(sniffed)),
            _ => Ok(()),
        };
    }
    match sniffed {
        Some(kind) if same_type(declared, kind) => Ok(()),
        other => Err(mismatch(other)),
    }
}

fn is_executable(mime: &str) -> bool {
    matches!(
        mime,
        "application/vnd.microsoft.portable-executable"
            | "application/x-executable"
            | "application/x-mach-binary"
            | "application/x-msdownload"
            | "application/vnd.android.dex"
    )
}

/// Whether a sniffed MIME type is the declared one (under the names `infer`
/// uses for some of them).
fn same_type(declared: &str, sniffed: &str) -> bool {
    if declared == sniffed {
        return true;
    }
    matches!(
        (declared, sniffed),
        ("image/heic", "image/heif")
            | ("audio/mp4", "audio/m4a")
            | ("audio/mp4", "audio/x-m4a")
            | ("audio/mp4", "video/mp4")
            | ("audio/aac", "audio/x-aac")
            | ("audio/wav", "audio/x-wav")
            | ("audio/ogg", "audio/x-ogg")
            | ("video/quicktime", "video/mp4")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n";

    #[test]
    fn declared_types_are_normalized_or_refused() {
        assert_eq!(normalize("image/jpg"), Some("image/jpeg"));
        assert_eq!(normalize("Image/JPG; q=1"), None);
        assert_eq!(normalize("application/pdf"), Some("application/pdf"));
        assert_eq!(normalize("application/x-msdownload"), None);
        assert_eq!(normalize(""), None);
    }

    #[test]
    fn specific_types_must_sniff_as_declared() {
        assert_eq!(check_content("image/png", PNG), Ok(()));
        assert_eq!(check_content("application/pdf", PDF), Ok(()));
        let mismatch = check_content("image/png", PDF).unwrap_err();
        assert_eq!(mismatch.sniffed, "application/pdf");
        assert!(check_content("image/jpeg", b"plain words").is_err());
    }

    #[test]
    fn generic_types_refuse_only_executables() {
        assert_eq!(check_content("text/plain", b"hello"), Ok(()));
        assert_eq!(check_content("application/octet-stream", PDF), Ok(()));
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(64, 0);
        assert!(check_content("application/octet-stream", &elf).is_err());
    }
}
