//! The public client protocol: WebSocket frames (JSON, versioned, typed by
//! `type`) and REST bodies. `docs/protocol.md` describes each one; the
//! OpenAPI document is generated from the `ToSchema` derives here (feature
//! `openapi`).

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// Frame types a client may send; anything else is `unknown_frame`.
pub const CLIENT_FRAME_TYPES: &[&str] = &["auth", "send", "ack", "receipt", "ping"];

/// A frame from client to server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// First frame on a connection: the device token.
    Auth {
        /// `"{device_id}.{secret}"` as issued at registration.
        token: String,
    },
    /// Sends a message. Retrying with the same `client_msg_id` returns the
    /// first result and never creates a second message.
    Send {
        /// Request number chosen by the client, echoed in `sent` or `error`.
        id: u64,
        /// Target conversation.
        conv_id: String,
        /// The client's idempotency key (1–64 characters).
        client_msg_id: String,
        /// Opaque content, 1 byte to 64 KiB.
        payload: String,
        /// The message this answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
        /// Highest HLC the client has seen, so the new message orders after
        /// it: a decimal string (an integer is still read, see [`crate::decimal`]).
        #[serde(default, with = "crate::decimal")]
        last_seen_hlc: u64,
        /// Media ids (ready uploads of this user, at most 10) the message carries.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<String>,
    },
    /// Everything up to and including `cursor` is stored on this device.
    Ack {
        /// A cursor from a `deliver` item.
        cursor: String,
        /// Optional; if present it must be the authenticated device.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_id: Option<String>,
    },
    /// Delivered/read receipts for messages of one conversation.
    Receipt {
        /// Request number, echoed in an `error`.
        #[serde(default)]
        id: u64,
        /// Conversation of the messages.
        conv_id: String,
        /// Message ids (1–100).
        msg_ids: Vec<String>,
        /// `delivered` or `read`.
        kind: ReceiptKind,
    },
    /// Keep-alive; answered with `pong`.
    Ping {
        /// Echoed.
        #[serde(default)]
        nonce: u64,
    },
}

/// What a receipt says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// Reached a device.
    Delivered,
    /// Shown to the user.
    Read,
}

impl ReceiptKind {
    /// Wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Read => "read",
        }
    }
}

/// A message as clients see it (deliveries and history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WireMessage {
    /// Server id (UUIDv7): the dedupe key.
    pub msg_id: String,
    /// Conversation.
    pub conv_id: String,
    /// Sender.
    pub sender_user_id: String,
    /// Sending device.
    pub sender_device_id: String,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// Hybrid logical clock stamp, as a decimal string (past 2^53, so not
    /// a JSON number): display order is `(hlc, origin_region, msg_id)`,
    /// comparing stamps as integers.
    #[serde(with = "crate::decimal")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, pattern = "^[0-9]{1,20}$", example = "393857362384961537")
    )]
    pub hlc: u64,
    /// Region whose core accepted the message.
    pub origin_region: String,
    /// Opaque content.
    pub payload: String,
    /// The message this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Acceptance time, unix ms.
    pub sent_ms: u64,
    /// Media the message carries; download URLs come from
    /// `GET /v1/conversations/{conv_id}/messages/{msg_id}/media/{media_id}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentView>,
}

/// A media object a message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttachmentView {
    /// `"{uuid}@{origin_region}"`.
    pub media_id: String,
    /// Checked content type.
    pub content_type: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// The thumbnail (JPEG, longest side at most 320 px), for images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<ThumbnailView>,
}

/// A thumbnail's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThumbnailView {
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Bytes.
    pub size: u64,
}

/// `POST /v1/media`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUploadRequest {
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    /// Exact size of the content, bytes (1 to this deployment's limit,
    /// 100 MiB by default).
    #[serde(deserialize_with = "crate::limits::integer")]
    pub size: u64,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::limits::schema::content_type))]
    /// Content type from the allow-list (images, video, audio, PDF, generic files).
    pub content_type: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::limits::schema::sha256))]
    /// SHA-256 of the content, 64 hex characters.
    pub sha256: String,
}

/// An HTTP request to make exactly as given (the URL is presigned; the
/// headers are signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresignedView {
    /// `PUT` or `GET`.
    pub method: String,
    /// The presigned URL.
    pub url: String,
    /// Headers to send with exactly these values.
    pub headers: std::collections::BTreeMap<String, String>,
    /// When the URL stops working, unix ms.
    pub expires_ms: u64,
}

/// An upload as its uploader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaView {
    /// Id to attach to messages.
    pub media_id: String,
    /// Declared content type.
    pub content_type: String,
    /// Declared size.
    pub size: u64,
    /// Declared SHA-256, hex.
    pub sha256: String,
    /// `pending` (upload, then complete), `checking`, `ready` or `rejected`.
    pub state: String,
    /// For `rejected`: `size_mismatch`, `checksum_mismatch`, `type_mismatch`,
    /// `undecodable_image`, `not_uploaded` or `storage_refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `rejected`: detail for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For ready images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<ThumbnailView>,
    /// When the slot was issued, unix ms.
    pub created_ms: u64,
}

/// `POST /v1/media` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadSlotView {
    /// The new upload (state `pending`).
    pub media: MediaView,
    /// The PUT to make with the content as body.
    pub upload: PresignedView,
}

/// `GET /v1/conversations/{conv_id}/messages/{msg_id}/media/{media_id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaDownloadView {
    /// The attachment.
    pub attachment: AttachmentView,
    /// GET of the content.
    pub download: PresignedView,
    /// GET of the thumbnail, for images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<PresignedView>,
}

/// One delivered inbox entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryItem {
    /// Ack this to move the device's cursor past the item.
    pub cursor: String,
    /// What was delivered.
    #[serde(flatten)]
    pub item: Delivered,
}

/// The content of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Delivered {
    /// A message.
    Message {
        /// The message.
        message: WireMessage,
    },
    /// A receipt for a message this user sent.
    Receipt {
        /// Conversation.
        conv_id: String,
        /// Receipted message.
        msg_id: String,
        /// Who.
        from_user_id: String,
        /// Delivered or read.
        receipt: ReceiptKind,
        /// When, unix ms.
        at_ms: u64,
    },
    /// A conversation's members or name changed.
    ConversationChanged {
        /// Conversation.
        conv_id: String,
        /// New version.
        version: u64,
    },
}

/// A frame from server to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Authentication succeeded; deliveries start after `cursor`.
    Ready {
        /// Protocol version.
        v: u32,
        /// Authenticated user.
        user_id: String,
        /// Authenticated device.
        device_id: String,
        /// The device's stored cursor (last acknowledged entry).
        cursor: String,
    },
    /// Inbox entries in arrival order, covering the cursor range
    /// `(after, through]`. Frames chain: each `after` is the previous frame's
    /// `through` (or the `ready` / `gap` cursor). A client that sees a break
    /// in the chain lost a frame on the way: it must not ack, and should
    /// reconnect to be served again from its stored cursor. Ack `through`.
    Deliver {
        /// The cursor this frame continues from.
        after: String,
        /// The cursor this frame ends at (ack this one).
        through: String,
        /// The entries; may be empty when every entry in the range was skipped.
        items: Vec<DeliveryItem>,
    },
    /// A send was accepted (or had been, for a retry).
    Sent {
        /// The client's request number.
        id: u64,
        /// Conversation.
        conv_id: String,
        /// Echo of the idempotency key.
        client_msg_id: String,
        /// Server id.
        msg_id: String,
        /// Stamp, as a decimal string.
        #[serde(with = "crate::decimal")]
        hlc: u64,
        /// Acceptance time, unix ms.
        sent_ms: u64,
    },
    /// Entries up to `lost_through` expired (retention) before this device
    /// received them: fetch history or show a gap.
    Gap {
        /// The last lost cursor.
        lost_through: String,
    },
    /// A request or frame was refused. After authentication the connection
    /// stays open, except when the device is revoked (`token_revoked`, then
    /// close 1008); a refused `auth` frame closes it with 1008; `rate_limited`
    /// or `unavailable` right after authentication closes it with 1013.
    Error {
        /// The request number, when the error answers one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Stable code.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
        /// With `rate_limited`: how long to wait before retrying, ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// Answer to `ping`.
    Pong {
        /// Echo.
        nonce: u64,
    },
    /// This gateway asks the client to leave: it is being drained, or is
    /// stopping. The connection closes (1001) right after. The client
    /// should wait `retry_after_ms` (each client is given its own, to
    /// spread a region's clients over time), resolve the service name
    /// again — a drained region is no longer in the answers — and resume
    /// from its cursor through the gateway it gets.
    GoAway {
        /// Why.
        reason: GoAwayReason,
        /// How long to wait before connecting again, ms.
        retry_after_ms: u64,
    },
}

/// Why a gateway sends `go_away`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoAwayReason {
    /// The operator is draining this gateway's region (or this gateway).
    Draining,
    /// The gateway process is stopping.
    Stopping,
    /// The device's home core is admitting sessions as fast as it can (a
    /// reconnect storm): come back after the wait, to any gateway.
    Busy,
}

/// `POST /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::limits::schema::display_name))]
    /// 1–64 characters.
    pub display_name: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::limits::schema::optional_label))]
    /// Label of the first device (default "device").
    #[serde(default)]
    pub device_label: Option<String>,
    /// The region to home the user in (default: the gateway's region).
    /// Fixed for the user's lifetime and encoded in the user id.
    #[serde(default)]
    pub home_region: Option<String>,
}

/// A new user and its first device.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    /// `"{uuid}@{home_region}"`.
    pub user_id: String,
    /// Home region, fixed for life.
    pub home_region: String,
    /// First device.
    pub device_id: String,
    /// Bearer token of that device; shown once.
    pub token: String,
}

/// A user's public profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    /// Id.
    pub user_id: String,
    /// Name.
    pub display_name: String,
    /// Home region.
    pub home_region: String,
}

/// `POST /v1/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddDeviceRequest {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::limits::schema::label))]
    /// 1–64 characters.
    pub label: String,
}

/// A new device's credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceCreated {
    /// Device id.
    pub device_id: String,
    /// Bearer token; shown once.
    pub token: String,
}

/// One device in a listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceView {
    /// Id.
    pub device_id: String,
    /// Label.
    pub label: String,
    /// Creation time, unix ms.
    pub created_ms: u64,
    /// Whether its token is refused.
    pub revoked: bool,
}

/// `POST /v1/conversations/direct`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirectRequest {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::limits::schema::id))]
    /// The other user.
    pub peer_user_id: String,
}

/// `POST /v1/conversations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateGroupRequest {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::limits::schema::group_name))]
    /// 1–128 characters.
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::limits::schema::user_ids))]
    /// Other members (the caller joins as admin); at most 99.
    #[serde(default)]
    pub member_user_ids: Vec<String>,
}

/// `PATCH /v1/conversations/{conv_id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenameRequest {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::limits::schema::group_name))]
    /// 1–128 characters.
    pub name: String,
}

/// `POST /v1/conversations/{conv_id}/members`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddMembersRequest {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::limits::schema::user_ids_to_add))]
    /// Users to add.
    pub user_ids: Vec<String>,
}

/// A member.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberView {
    /// User.
    pub user_id: String,
    /// `admin` or `member`.
    pub role: String,
    /// Join time, unix ms.
    pub joined_ms: u64,
}

/// A conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationView {
    /// Id.
    pub conv_id: String,
    /// `direct` or `group`.
    pub kind: String,
    /// Group name.
    pub name: String,
    /// Bumped by every change.
    pub version: u64,
    /// Creation time, unix ms.
    pub created_ms: u64,
    /// Members.
    pub members: Vec<MemberView>,
}

/// `GET /v1/conversations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationListView {
    /// A page of conversations.
    pub conversations: Vec<ConversationView>,
    /// Pass as `after` for the next page; absent at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// `GET /v1/conversations/{conv_id}/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryView {
    /// Messages, nearest to the starting point first.
    pub messages: Vec<WireMessage>,
}

/// Every REST error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
    /// With `rate_limited` (429) and `unavailable` (503): how long to wait
    /// before retrying, ms (also the `Retry-After` header, in seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_documented_shape() {
        let frame: ClientFrame = serde_json::from_str(
            r#"{"type":"send","id":1,"conv_id":"c","client_msg_id":"m","payload":"hi"}"#,
        )
        .expect("parse");
        assert!(matches!(
            frame,
            ClientFrame::Send {
                last_seen_hlc: 0,
                ..
            }
        ));
        let out = serde_json::to_value(ServerFrame::Deliver {
            after: "00".into(),
            through: "01".into(),
            items: vec![DeliveryItem {
                cursor: "00".into(),
                item: Delivered::ConversationChanged {
                    conv_id: "c".into(),
                    version: 2,
                },
            }],
        })
        .expect("serialize");
        assert_eq!(out["items"][0]["kind"], "conversation_changed");
        assert_eq!(out["type"], "deliver");
    }
}
