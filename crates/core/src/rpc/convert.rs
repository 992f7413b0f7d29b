//! Conversions between the store's and the domain's types and the
//! protobuf messages of the `Core` service, and the session stream's error
//! frames.

use meridian_media::Presigned;
use meridian_rpc::ErrorCodeExt;
use meridian_rpc::core::{self as pb, SessionDown, session_down};
use meridian_store::{
    Attachment, Conversation, ConversationKind, Media, MediaState, MediaThumbnail, Member, Message,
    Role,
};
use meridian_wire::ErrorCode;
use tokio::sync::mpsc;
use tonic::Status;

use crate::{Caller, ConversationDetail, CoreError};

pub(super) fn to_caller(caller: pb::Caller) -> Caller {
    Caller {
        user_id: caller.user_id,
        device_id: caller.device_id,
    }
}

pub(super) fn caller_of(caller: Option<pb::Caller>) -> Result<Caller, Status> {
    caller
        .map(to_caller)
        .ok_or_else(|| meridian_wire::ErrorCode::Unauthenticated.status("no caller"))
}

pub(super) fn message_info(message: Message) -> pb::MessageInfo {
    pb::MessageInfo {
        msg_id: message.msg_id,
        conv_id: message.conv_id,
        sender_user_id: message.sender_user,
        sender_device_id: message.sender_device,
        client_msg_id: message.client_msg_id,
        hlc: message.hlc,
        origin_region: message.origin_region,
        payload: message.payload,
        reply_to: message.reply_to,
        sent_ms: message.sent_ms,
        attachments: message
            .attachments
            .into_iter()
            .map(attachment_info)
            .collect(),
    }
}

fn thumbnail_info(thumbnail: MediaThumbnail) -> pb::Thumbnail {
    pb::Thumbnail {
        width: thumbnail.width,
        height: thumbnail.height,
        size: thumbnail.size,
    }
}

pub(super) fn attachment_info(attachment: Attachment) -> pb::Attachment {
    pb::Attachment {
        media_id: attachment.media_id,
        content_type: attachment.content_type,
        size: attachment.size,
        sha256: attachment.sha256,
        thumbnail: attachment.thumbnail.map(thumbnail_info),
    }
}

pub(super) fn media_info(media: Media) -> pb::MediaInfo {
    let (state, reason, detail) = match media.state {
        MediaState::Pending => ("pending", String::new(), String::new()),
        MediaState::Checking => ("checking", String::new(), String::new()),
        MediaState::Ready => ("ready", String::new(), String::new()),
        MediaState::Expired => ("expired", String::new(), String::new()),
        MediaState::Rejected { reason, detail } => ("rejected", reason, detail),
    };
    pb::MediaInfo {
        media_id: media.id,
        content_type: media.content_type,
        size: media.size,
        sha256: media.sha256,
        state: state.to_string(),
        reason,
        detail,
        thumbnail: media.thumbnail.map(thumbnail_info),
        created_ms: media.created_ms,
    }
}

pub(super) fn presigned_info(presigned: Presigned) -> pb::PresignedRequest {
    pb::PresignedRequest {
        method: presigned.method,
        url: presigned.url,
        headers: presigned
            .headers
            .into_iter()
            .map(|(name, value)| pb::Header { name, value })
            .collect(),
        expires_ms: presigned.expires_ms,
    }
}

fn member_info(member: Member) -> pb::MemberInfo {
    pb::MemberInfo {
        user_id: member.user_id,
        role: match member.role {
            Role::Admin => "admin",
            Role::Member => "member",
        }
        .to_string(),
        joined_ms: member.joined_ms,
    }
}

pub(super) fn conversation_info(detail: ConversationDetail) -> pb::ConversationInfo {
    let Conversation {
        id,
        kind,
        name,
        version,
        created_ms,
        ..
    } = detail.conversation;
    pb::ConversationInfo {
        conv_id: id,
        kind: match kind {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
        }
        .to_string(),
        name,
        version,
        created_ms,
        members: detail.members.into_iter().map(member_info).collect(),
    }
}

pub(super) type Down = mpsc::Sender<Result<SessionDown, Status>>;

pub(super) fn error_frame(session: u64, request: u64, error: &CoreError) -> SessionDown {
    SessionDown {
        kind: Some(session_down::Kind::Error(pb::SessionError {
            session,
            request,
            code: error.code().as_str().to_string(),
            message: match error {
                CoreError::Refused { message, .. } | CoreError::Limited { message, .. } => {
                    message.clone()
                }
                CoreError::Store(_) => "storage is temporarily unavailable; retry".to_string(),
            },
            retry_after_ms: error.retry_after().map_or(0, |wait| {
                u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)
            }),
        })),
    }
}

pub(super) fn refusal(session: u64, request: u64, code: ErrorCode, message: &str) -> SessionDown {
    error_frame(session, request, &CoreError::refused(code, message))
}
