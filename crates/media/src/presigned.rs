//! A presigned request, as object storage signs it and a client sends it.

/// A presigned HTTP request: what a client sends, as is, to the storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    /// `PUT` or `GET`.
    pub method: String,
    /// The URL with the signature in its query.
    pub url: String,
    /// Headers the client must send exactly (they are signed).
    pub headers: Vec<(String, String)>,
    /// When the signature expires, unix ms.
    pub expires_ms: u64,
}
