//! Stable error codes. Their HTTP statuses are the gateway's
//! (`crates/gateway/src/error.rs`), their gRPC codes `meridian-rpc`'s.

use serde::{Deserialize, Serialize};

/// Every error a client can see, by stable code. The edge maps each to an
/// HTTP status or puts it in an `error` frame; the text alongside is for humans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// A request or frame is malformed (missing field, wrong type, bad id).
    BadRequest,
    /// A frame or body is not valid JSON.
    InvalidJson,
    /// A frame is not UTF-8 text.
    InvalidUtf8,
    /// A frame's `type` is unknown.
    UnknownFrame,
    /// A frame's `v` is not a supported protocol version.
    UnsupportedVersion,
    /// A frame exceeds the frame size limit.
    FrameTooLarge,
    /// A message payload exceeds 64 KiB.
    PayloadTooLarge,
    /// A message payload is empty.
    PayloadEmpty,
    /// A name exceeds its length limit or is empty.
    InvalidName,
    /// No credentials, or a frame other than `auth` before authentication.
    Unauthenticated,
    /// The token is malformed, forged, or unknown.
    InvalidToken,
    /// The device was revoked.
    TokenRevoked,
    /// The caller may not do this (not an admin, another device's cursor).
    Forbidden,
    /// Reserved; no longer sent: a caller who is not a member of a
    /// conversation is answered [`ErrorCode::NotFound`], as for one that
    /// does not exist, so a conversation's existence is not revealed.
    /// Kept so that clients matching on it still parse.
    NotMember,
    /// No such user, device, conversation or message; also a conversation
    /// the caller is not a member of.
    NotFound,
    /// A group would exceed 100 members.
    GroupFull,
    /// Too many requests: slow down and retry later (after
    /// `retry_after_ms`, when given).
    RateLimited,
    /// The account has the most active devices allowed: revoke one first.
    TooManyDevices,
    /// A newer session of the same device replaced this one (a device
    /// keeps a few sessions at most; the oldest goes).
    SessionReplaced,
    /// A cursor that is malformed or beyond what was delivered.
    BadCursor,
    /// A timestamp (a client's last-seen HLC) is further ahead of the
    /// server's clock than the maximum clock offset allows.
    ClockSkew,
    /// The request reached a core that does not own its subject (a group is
    /// changed only at its owner region's core; gateways route there).
    WrongRegion,
    /// A declared upload exceeds the media size limit.
    MediaTooLarge,
    /// A declared content type is not on the allow-list.
    UnsupportedMediaType,
    /// `complete` before anything was uploaded to the slot.
    MediaNotUploaded,
    /// The media is still being checked; retry `complete` or the send.
    MediaNotReady,
    /// The upload failed its checks (size, checksum, type); it cannot be sent.
    MediaRejected,
    /// Object storage cannot be reached; retry later (text messaging is
    /// unaffected).
    MediaUnavailable,
    /// The service is temporarily unable to answer; retry.
    Unavailable,
    /// An internal failure; nothing was changed that the client was told about.
    Internal,
}

impl ErrorCode {
    /// The wire form (`"not_member"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::InvalidJson => "invalid_json",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::UnknownFrame => "unknown_frame",
            Self::UnsupportedVersion => "unsupported_version",
            Self::FrameTooLarge => "frame_too_large",
            Self::PayloadTooLarge => "payload_too_large",
            Self::PayloadEmpty => "payload_empty",
            Self::InvalidName => "invalid_name",
            Self::Unauthenticated => "unauthenticated",
            Self::InvalidToken => "invalid_token",
            Self::TokenRevoked => "token_revoked",
            Self::Forbidden => "forbidden",
            Self::NotMember => "not_member",
            Self::NotFound => "not_found",
            Self::GroupFull => "group_full",
            Self::RateLimited => "rate_limited",
            Self::TooManyDevices => "too_many_devices",
            Self::SessionReplaced => "session_replaced",
            Self::BadCursor => "bad_cursor",
            Self::ClockSkew => "clock_skew",
            Self::WrongRegion => "wrong_region",
            Self::MediaTooLarge => "media_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::MediaNotUploaded => "media_not_uploaded",
            Self::MediaNotReady => "media_not_ready",
            Self::MediaRejected => "media_rejected",
            Self::MediaUnavailable => "media_unavailable",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// Parses the wire form.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
