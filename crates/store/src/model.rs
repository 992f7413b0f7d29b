//! The stored records. Encoded as JSON: self-describing and easy to evolve
//! (new optional fields), small enough next to the 100 kB value limit.

use serde::{Deserialize, Serialize};

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// `"{uuid}@{home_region}"`.
    pub id: String,
    /// Shown to other users.
    pub display_name: String,
    /// Fixed at registration; also encoded in the id.
    pub home_region: String,
    /// Registration time, unix ms.
    pub created_ms: u64,
}

/// One of a user's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The device id (a UUID).
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// SHA-256 of the token's secret, hex. The token itself is never stored.
    pub token_hash: String,
    /// Free-form label ("phone", "laptop").
    pub label: String,
    /// Creation time, unix ms.
    pub created_ms: u64,
    /// When the device was revoked; a revoked token is refused.
    pub revoked_ms: Option<u64>,
}

/// 1:1 or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// Exactly two members, created by get-or-create for the pair.
    Direct,
    /// Up to 100 members with admins.
    Group,
}

/// A conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// The conversation id.
    pub id: String,
    /// Direct or group.
    pub kind: ConversationKind,
    /// Group name (empty for direct chats).
    pub name: String,
    /// Current number of members (kept in the record: membership changes
    /// already conflict on it, and a send needs it without a range read).
    pub member_count: u32,
    /// Bumped by every membership or name change.
    pub version: u64,
    /// Creation time, unix ms.
    pub created_ms: u64,
}

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May rename and change membership.
    Admin,
    /// May send and read.
    Member,
}

/// A membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member.
    pub user_id: String,
    /// Role in the conversation.
    pub role: Role,
    /// When they joined, unix ms.
    pub joined_ms: u64,
}

/// A message in a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Server id (UUIDv7).
    pub msg_id: String,
    /// Conversation.
    pub conv_id: String,
    /// Sending user.
    pub sender_user: String,
    /// Sending device.
    pub sender_device: String,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// Hybrid logical clock stamp given by the accepting core.
    pub hlc: u64,
    /// The region whose core accepted it.
    pub origin_region: String,
    /// Opaque to the server (often ciphertext, base64).
    pub payload: String,
    /// The message this one answers, if any.
    pub reply_to: Option<String>,
    /// Acceptance time, unix ms.
    pub sent_ms: u64,
    /// Media the message carries, described as they were when it was sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A media object a message carries: everything a recipient needs to show
/// it and to ask for its download URLs (the object lives in the bucket of
/// the region named in `media_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `"{uuid}@{origin_region}"`.
    pub media_id: String,
    /// Checked content type.
    pub content_type: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// The thumbnail, for images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<MediaThumbnail>,
}

/// A stored thumbnail (JPEG, longest side at most 320 px).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaThumbnail {
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Bytes.
    pub size: u64,
}

/// Where an upload is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MediaState {
    /// A slot was issued; nothing checked yet.
    Pending,
    /// The uploader said it is done; the check is queued or running.
    Checking,
    /// Checked: it may be sent.
    Ready,
    /// Past retention: being deleted by the sweep; it can no longer be sent.
    Expired,
    /// Failed a check; it can never be sent.
    Rejected {
        /// Stable reason (`type_mismatch`, `checksum_mismatch`…).
        reason: String,
        /// Detail for humans.
        detail: String,
    },
}

/// An upload, held by the region it was uploaded in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// `"{uuid}@{region}"`.
    pub id: String,
    /// The uploader: the only user who may attach it.
    pub owner_user: String,
    /// Declared (and, once ready, checked) content type.
    pub content_type: String,
    /// Declared size, bytes.
    pub size: u64,
    /// Declared SHA-256, hex.
    pub sha256: String,
    /// When the slot was issued, unix ms.
    pub created_ms: u64,
    /// When the upload URL expires, unix ms.
    pub upload_expires_ms: u64,
    /// Life cycle.
    #[serde(flatten)]
    pub state: MediaState,
    /// Made by the check, for images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<MediaThumbnail>,
    /// When a message last carried it, unix ms: the media lives for the
    /// retention period after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attached_ms: Option<u64>,
}

impl Media {
    /// What a message carrying this media records.
    pub fn attachment(&self) -> Attachment {
        Attachment {
            media_id: self.id.clone(),
            content_type: self.content_type.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
            thumbnail: self.thumbnail.clone(),
        }
    }
}

/// What a receipt says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// Reached a device of the recipient.
    Delivered,
    /// Shown to the recipient.
    Read,
}

/// An entry in a user's delivery queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "StoredInboxEntry")]
pub enum InboxEntry {
    /// A message to deliver (the message record is looked up by conv/hlc/id).
    Message {
        /// Conversation.
        conv_id: String,
        /// Its stamp.
        hlc: u64,
        /// The region that accepted it.
        origin_region: String,
        /// Its id.
        msg_id: String,
    },
    /// A receipt for a message this user sent.
    Receipt {
        /// Conversation.
        conv_id: String,
        /// The message receipted.
        msg_id: String,
        /// Who receipted.
        from_user: String,
        /// Delivered or read.
        kind: ReceiptKind,
        /// When, unix ms.
        at_ms: u64,
    },
    /// The conversation changed (members, name): clients refresh it.
    ConversationChanged {
        /// Conversation.
        conv_id: String,
        /// The conversation's new version.
        version: u64,
    },
}

/// The stored form of an [`InboxEntry`], read in one pass: serde reads an
/// internally tagged enum by buffering the whole object first, and inbox
/// entries are decoded on the commit path for every delivery (2.7 % of the
/// server's CPU in the throughput benchmark). Same JSON as the enum writes.
#[derive(Deserialize)]
struct StoredInboxEntry {
    #[serde(rename = "type")]
    entry_type: StoredEntryType,
    conv_id: String,
    hlc: Option<u64>,
    origin_region: Option<String>,
    msg_id: Option<String>,
    from_user: Option<String>,
    kind: Option<ReceiptKind>,
    at_ms: Option<u64>,
    version: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredEntryType {
    Message,
    Receipt,
    ConversationChanged,
}

impl TryFrom<StoredInboxEntry> for InboxEntry {
    type Error = String;

    fn try_from(stored: StoredInboxEntry) -> Result<Self, String> {
        fn required<T>(value: Option<T>, field: &str) -> Result<T, String> {
            value.ok_or_else(|| format!("missing field `{field}`"))
        }
        let conv_id = stored.conv_id;
        Ok(match stored.entry_type {
            StoredEntryType::Message => Self::Message {
                conv_id,
                hlc: required(stored.hlc, "hlc")?,
                origin_region: required(stored.origin_region, "origin_region")?,
                msg_id: required(stored.msg_id, "msg_id")?,
            },
            StoredEntryType::Receipt => Self::Receipt {
                conv_id,
                msg_id: required(stored.msg_id, "msg_id")?,
                from_user: required(stored.from_user, "from_user")?,
                kind: required(stored.kind, "kind")?,
                at_ms: required(stored.at_ms, "at_ms")?,
            },
            StoredEntryType::ConversationChanged => Self::ConversationChanged {
                conv_id,
                version: required(stored.version, "version")?,
            },
        })
    }
}

/// The first result of a send, returned again to a retry with the same
/// `client_msg_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRecord {
    /// Conversation the send went to.
    pub conv_id: String,
    /// Server id.
    pub msg_id: String,
    /// Stamp.
    pub hlc: u64,
    /// Acceptance time, unix ms.
    pub sent_ms: u64,
}

/// A change that crosses to another region: written to the outbox by the
/// transaction that made it, carried by the log and a replication link, and
/// applied by the destination's core exactly once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicated {
    /// The region whose core made the change.
    pub origin_region: String,
    /// The origin core's HLC when it made the change; every receiving core
    /// merges it (or refuses it when beyond the maximum clock offset).
    pub hlc: u64,
    /// What changed.
    pub change: Change,
}

impl Replicated {
    /// The conversation the change belongs to: the log's partition key, so a
    /// conversation's changes stay in order on one partition.
    pub fn conv_id(&self) -> &str {
        match &self.change {
            Change::Message { message, .. } => &message.conv_id,
            Change::Conversation { conversation, .. } => &conversation.id,
            Change::Receipt { conv_id, .. } => conv_id,
        }
    }
}

/// The kinds of replicated change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// A message, for the members homed in the destination region that the
    /// origin counted as members when it accepted the message.
    Message {
        /// The message.
        message: Message,
        /// Destination-region users whose inboxes get it.
        recipients: Vec<String>,
    },
    /// A conversation's state after a change (state, not the operation, so
    /// applying is idempotent and a newer version simply wins).
    Conversation {
        /// The record (its `version` orders snapshots).
        conversation: Conversation,
        /// The full member list at that version.
        members: Vec<Member>,
        /// Destination-region users told about the change (members and
        /// anyone just removed).
        notify: Vec<String>,
    },
    /// A delivered/read receipt for a message `to_user` sent.
    Receipt {
        /// Who sent the receipted message (homed in the destination).
        to_user: String,
        /// Conversation.
        conv_id: String,
        /// The message receipted.
        msg_id: String,
        /// Who receipted.
        from_user: String,
        /// Delivered or read.
        kind: ReceiptKind,
        /// When, unix ms.
        at_ms: u64,
    },
}

/// An outbox entry as the relay reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its position in the outbox.
    pub stamp: crate::keys::Stamp,
    /// The partition key (the conversation id).
    pub key: String,
    /// The encoded [`Replicated`].
    pub value: bytes::Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_entries_read_back_as_written() {
        let entries = [
            InboxEntry::Message {
                conv_id: "c".into(),
                hlc: 7,
                origin_region: "us-east".into(),
                msg_id: "m".into(),
            },
            InboxEntry::Receipt {
                conv_id: "c".into(),
                msg_id: "m".into(),
                from_user: "u".into(),
                kind: ReceiptKind::Read,
                at_ms: 9,
            },
            InboxEntry::ConversationChanged {
                conv_id: "c".into(),
                version: 3,
            },
        ];
        for entry in entries {
            let raw = serde_json::to_vec(&entry).expect("encodes");
            let back: InboxEntry = serde_json::from_slice(&raw).expect("decodes");
            assert_eq!(back, entry);
        }
    }

    #[test]
    fn a_stored_inbox_entry_missing_a_field_is_refused() {
        let raw = br#"{"type":"message","conv_id":"c","hlc":1,"msg_id":"m"}"#;
        let error = serde_json::from_slice::<InboxEntry>(raw).expect_err("incomplete");
        assert!(error.to_string().contains("origin_region"), "{error}");
        let raw = br#"{"type":"dance","conv_id":"c"}"#;
        assert!(serde_json::from_slice::<InboxEntry>(raw).is_err());
    }
}
