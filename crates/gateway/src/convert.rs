//! Every conversion from the core's protobuf answers to the client's wire
//! types (`meridian_wire::frames`), for REST and the WebSocket alike.

use meridian_rpc::core::{self as pb, session_down};
use meridian_wire::frames::{
    AttachmentView, ConversationView, Delivered, DeliveryItem, GoAwayReason, MediaView, MemberView,
    PresignedView, ReceiptKind, ServerFrame, ThumbnailView, WireMessage,
};
use meridian_wire::{ErrorCode, PROTOCOL_VERSION};

pub(crate) fn conversation_view(info: pb::ConversationInfo) -> ConversationView {
    ConversationView {
        conv_id: info.conv_id,
        kind: info.kind,
        name: info.name,
        version: info.version,
        created_ms: info.created_ms,
        members: info.members.into_iter().map(member_view).collect(),
    }
}

pub(crate) fn member_view(member: pb::MemberInfo) -> MemberView {
    MemberView {
        user_id: member.user_id,
        role: member.role,
        joined_ms: member.joined_ms,
    }
}

pub(crate) fn wire_message(message: pb::MessageInfo) -> WireMessage {
    WireMessage {
        msg_id: message.msg_id,
        conv_id: message.conv_id,
        sender_user_id: message.sender_user_id,
        sender_device_id: message.sender_device_id,
        client_msg_id: message.client_msg_id,
        hlc: message.hlc,
        origin_region: message.origin_region,
        payload: message.payload,
        reply_to: message.reply_to,
        sent_ms: message.sent_ms,
        attachments: message
            .attachments
            .into_iter()
            .map(attachment_view)
            .collect(),
    }
}

/// Converts a core frame to a client frame; `true` when the session must end.
pub(crate) fn to_client(
    frame: pb::SessionDown,
    caller: &pb::Caller,
) -> Option<(ServerFrame, bool)> {
    Some(match frame.kind? {
        session_down::Kind::Ready(ready) => (
            ServerFrame::Ready {
                v: PROTOCOL_VERSION,
                user_id: caller.user_id.clone(),
                device_id: caller.device_id.clone(),
                cursor: ready.cursor,
            },
            false,
        ),
        session_down::Kind::Deliver(deliver) => {
            let items = deliver
                .items
                .into_iter()
                .filter_map(|item| {
                    use pb::delivery::Item;
                    let delivered = match item.item? {
                        Item::Message(message) => Delivered::Message {
                            message: wire_message(message),
                        },
                        Item::Receipt(receipt) => Delivered::Receipt {
                            conv_id: receipt.conv_id,
                            msg_id: receipt.msg_id,
                            from_user_id: receipt.from_user_id,
                            receipt: if receipt.kind == "read" {
                                ReceiptKind::Read
                            } else {
                                ReceiptKind::Delivered
                            },
                            at_ms: receipt.at_ms,
                        },
                        Item::Changed(changed) => Delivered::ConversationChanged {
                            conv_id: changed.conv_id,
                            version: changed.version,
                        },
                    };
                    Some(DeliveryItem {
                        cursor: item.cursor,
                        item: delivered,
                    })
                })
                .collect();
            (
                ServerFrame::Deliver {
                    after: deliver.after,
                    through: deliver.through,
                    items,
                },
                false,
            )
        }
        session_down::Kind::Sent(sent) => (
            ServerFrame::Sent {
                id: sent.request,
                conv_id: sent.conv_id,
                client_msg_id: sent.client_msg_id,
                msg_id: sent.msg_id,
                hlc: sent.hlc,
                sent_ms: sent.sent_ms,
            },
            false,
        ),
        session_down::Kind::Gap(gap) => (
            ServerFrame::Gap {
                lost_through: gap.lost_through,
            },
            false,
        ),
        session_down::Kind::Error(error) => (
            ServerFrame::Error {
                id: (error.request != 0).then_some(error.request),
                code: ErrorCode::parse(&error.code).unwrap_or(ErrorCode::Internal),
                message: error.message,
                retry_after_ms: (error.retry_after_ms != 0).then_some(error.retry_after_ms),
            },
            false,
        ),
        session_down::Kind::Detached(detached) if detached.retry_after_ms > 0 => {
            metrics::counter!("meridian_gateway_sessions_shed_total").increment(1);
            (
                ServerFrame::GoAway {
                    reason: GoAwayReason::Busy,
                    retry_after_ms: detached.retry_after_ms,
                },
                true,
            )
        }
        session_down::Kind::Detached(detached) => (
            ServerFrame::Error {
                id: None,
                code: ErrorCode::parse(&detached.code).unwrap_or(ErrorCode::Unauthenticated),
                message: detached.message,
                retry_after_ms: None,
            },
            true,
        ),
    })
}

pub(crate) fn thumbnail_view(thumbnail: pb::Thumbnail) -> ThumbnailView {
    ThumbnailView {
        width: thumbnail.width,
        height: thumbnail.height,
        size: thumbnail.size,
    }
}

pub(crate) fn attachment_view(attachment: pb::Attachment) -> AttachmentView {
    AttachmentView {
        media_id: attachment.media_id,
        content_type: attachment.content_type,
        size: attachment.size,
        sha256: attachment.sha256,
        thumbnail: attachment.thumbnail.map(thumbnail_view),
    }
}

pub(crate) fn media_view(media: pb::MediaInfo) -> MediaView {
    let nonempty = |text: String| (!text.is_empty()).then_some(text);
    MediaView {
        media_id: media.media_id,
        content_type: media.content_type,
        size: media.size,
        sha256: media.sha256,
        state: media.state,
        reason: nonempty(media.reason),
        detail: nonempty(media.detail),
        thumbnail: media.thumbnail.map(thumbnail_view),
        created_ms: media.created_ms,
    }
}

pub(crate) fn presigned_view(presigned: pb::PresignedRequest) -> PresignedView {
    PresignedView {
        method: presigned.method,
        url: presigned.url,
        headers: presigned
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect(),
        expires_ms: presigned.expires_ms,
    }
}
