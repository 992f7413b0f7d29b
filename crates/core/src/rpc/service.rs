//! The tonic `Core` service: a thin translation between protobuf and
//! [`Messaging`].

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use meridian_rpc::core::{self as pb, core_server};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert::{
    attachment_info, caller_of, conversation_info, media_info, message_info, presigned_info,
    to_caller,
};
use crate::Messaging;

/// The gRPC face of a core.
#[derive(Clone)]
pub struct CoreService {
    messaging: Arc<Messaging>,
    registry: super::stream::Registry,
    admission: Arc<super::admission::Admission>,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

impl CoreService {
    /// A service over `messaging`.
    pub fn new(messaging: Arc<Messaging>) -> Self {
        let admission =
            super::admission::Admission::new(messaging.config(), messaging.ids.clock().clone());
        Self {
            messaging,
            registry: super::stream::Registry::default(),
            admission: Arc::new(admission),
            shutdown: None,
        }
    }

    /// Ends every session stream when `shutdown` turns true, so a stopping
    /// server is not held open by gateways' long-lived streams (they
    /// reconnect elsewhere or later).
    pub fn with_shutdown(mut self, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// The tonic server for this service, with message size limits that fit
    /// the largest frame (a 64 KiB payload plus envelope) with headroom.
    pub fn into_server(self) -> core_server::CoreServer<Self> {
        core_server::CoreServer::new(self)
            .max_decoding_message_size(1024 * 1024)
            .max_encoding_message_size(16 * 1024 * 1024)
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::SessionDown, Status>> + Send>>;

#[tonic::async_trait]
impl core_server::Core for CoreService {
    async fn register_user(
        &self,
        request: Request<pb::RegisterUserRequest>,
    ) -> Result<Response<pb::RegisterUserResponse>, Status> {
        let request = request.into_inner();
        let label = if request.device_label.is_empty() {
            "device"
        } else {
            &request.device_label
        };
        let (user, credentials) = self
            .messaging
            .register_user(&request.display_name, label)
            .await?;
        Ok(Response::new(pb::RegisterUserResponse {
            user: Some(pb::UserInfo {
                user_id: user.id,
                display_name: user.display_name,
                home_region: user.home_region,
                created_ms: user.created_ms,
            }),
            device: Some(pb::DeviceCredentials {
                device_id: credentials.device_id,
                token: credentials.token,
            }),
        }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::Caller>, Status> {
        let caller = self
            .messaging
            .authenticate(&request.into_inner().token)
            .await?;
        Ok(Response::new(pb::Caller {
            user_id: caller.user_id,
            device_id: caller.device_id,
        }))
    }

    async fn add_device(
        &self,
        request: Request<pb::AddDeviceRequest>,
    ) -> Result<Response<pb::DeviceCredentials>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        let credentials = self.messaging.add_device(&caller, &request.label).await?;
        Ok(Response::new(pb::DeviceCredentials {
            device_id: credentials.device_id,
            token: credentials.token,
        }))
    }

    async fn list_devices(
        &self,
        request: Request<pb::Caller>,
    ) -> Result<Response<pb::DeviceList>, Status> {
        let caller = to_caller(request.into_inner());
        let devices = self.messaging.list_devices(&caller).await?;
        Ok(Response::new(pb::DeviceList {
            devices: devices
                .into_iter()
                .map(|d| pb::DeviceInfo {
                    device_id: d.id,
                    label: d.label,
                    created_ms: d.created_ms,
                    revoked: d.revoked_ms.is_some(),
                })
                .collect(),
        }))
    }

    async fn revoke_device(
        &self,
        request: Request<pb::RevokeDeviceRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        self.messaging
            .revoke_device(&caller, &request.device_id)
            .await?;
        self.registry.detach_device(
            &request.device_id,
            meridian_wire::ErrorCode::TokenRevoked,
            "this device was revoked",
        );
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::UserInfo>, Status> {
        let request = request.into_inner();
        caller_of(request.caller)?;
        let user = self.messaging.get_user(&request.user_id).await?;
        Ok(Response::new(pb::UserInfo {
            user_id: user.id,
            display_name: user.display_name,
            home_region: user.home_region,
            created_ms: user.created_ms,
        }))
    }

    async fn get_or_create_direct(
        &self,
        request: Request<pb::DirectRequest>,
    ) -> Result<Response<pb::ConversationInfo>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        let detail = self
            .messaging
            .get_or_create_direct(&caller, &request.peer_user_id)
            .await?;
        Ok(Response::new(conversation_info(detail)))
    }

    async fn ensure_direct(
        &self,
        request: Request<pb::EnsureDirectRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        self.messaging
            .ensure_direct(&request.user_a, &request.user_b, request.created_ms)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::ConversationInfo>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        let detail = self
            .messaging
            .create_group(&caller, &request.name, &request.member_user_ids)
            .await?;
        Ok(Response::new(conversation_info(detail)))
    }

    async fn get_conversation(
        &self,
        request: Request<pb::ConversationRequest>,
    ) -> Result<Response<pb::ConversationInfo>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        let detail = self
            .messaging
            .get_conversation(&caller, &request.conv_id)
            .await?;
        Ok(Response::new(conversation_info(detail)))
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ConversationList>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        let after = (!request.after.is_empty()).then_some(request.after.as_str());
        let limit = page_size(request.limit);
        let (page, next) = self
            .messaging
            .list_conversations(&caller, after, limit)
            .await?;
        Ok(Response::new(pb::ConversationList {
            conversations: page.into_iter().map(conversation_info).collect(),
            next_after: next.unwrap_or_default(),
        }))
    }

    async fn rename_group(
        &self,
        request: Request<pb::RenameGroupRequest>,
    ) -> Result<Response<pb::ConversationInfo>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        let detail = self
            .messaging
            .rename_group(&caller, &request.conv_id, &request.name)
            .await?;
        Ok(Response::new(conversation_info(detail)))
    }

    async fn add_members(
        &self,
        request: Request<pb::AddMembersRequest>,
    ) -> Result<Response<pb::ConversationInfo>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        let detail = self
            .messaging
            .add_members(&caller, &request.conv_id, &request.user_ids)
            .await?;
        Ok(Response::new(conversation_info(detail)))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::ConversationInfo>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        let detail = self
            .messaging
            .remove_member(&caller, &request.conv_id, &request.user_id)
            .await?;
        Ok(Response::new(conversation_info(detail)))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryPage>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        let from = (!request.from_msg_id.is_empty()).then_some(request.from_msg_id.as_str());
        let stop = (!request.stop_msg_id.is_empty()).then_some(request.stop_msg_id.as_str());
        let limit = page_size(request.limit);
        let messages = self
            .messaging
            .history(
                &caller,
                &request.conv_id,
                from,
                stop,
                request.backward,
                limit,
            )
            .await?;
        Ok(Response::new(pb::HistoryPage {
            messages: messages.into_iter().map(message_info).collect(),
        }))
    }

    async fn create_upload(
        &self,
        request: Request<pb::CreateUploadRequest>,
    ) -> Result<Response<pb::UploadSlot>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        let slot = self
            .messaging
            .create_upload(
                &caller,
                request.size,
                &request.content_type,
                &request.sha256,
            )
            .await?;
        Ok(Response::new(pb::UploadSlot {
            media: Some(media_info(slot.media)),
            upload: Some(presigned_info(slot.upload)),
        }))
    }

    async fn complete_upload(
        &self,
        request: Request<pb::MediaRequest>,
    ) -> Result<Response<pb::MediaInfo>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        let media = self
            .messaging
            .complete_upload(&caller, &request.media_id)
            .await?;
        Ok(Response::new(media_info(media)))
    }

    async fn get_media(
        &self,
        request: Request<pb::MediaRequest>,
    ) -> Result<Response<pb::MediaInfo>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        let media = self.messaging.get_media(&caller, &request.media_id).await?;
        Ok(Response::new(media_info(media)))
    }

    async fn media_download(
        &self,
        request: Request<pb::MediaDownloadRequest>,
    ) -> Result<Response<pb::MediaDownloadInfo>, Status> {
        let request = request.into_inner();
        let caller = caller_of(request.caller)?;
        let download = self
            .messaging
            .media_download(
                &caller,
                &request.conv_id,
                &request.msg_id,
                &request.media_id,
            )
            .await?;
        Ok(Response::new(pb::MediaDownloadInfo {
            attachment: Some(attachment_info(download.attachment)),
            download: Some(presigned_info(download.download)),
            thumbnail: download.thumbnail.map(presigned_info),
        }))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<tonic::Streaming<pb::SessionUp>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let inbound = request.into_inner();
        let (down, receiver) = tokio::sync::mpsc::channel(1024);
        let shutdown = self.shutdown.clone();
        let serve = super::stream::serve_stream(
            self.messaging.clone(),
            self.registry.clone(),
            self.admission.clone(),
            inbound,
            down,
        );
        tokio::spawn(meridian_seams::shutdown::until_shutdown(shutdown, serve));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// A page size as asked (0: not given, [`DEFAULT_PAGE`]); the operation
/// bounds it by its own maximum.
///
/// [`DEFAULT_PAGE`]: meridian_wire::limits::DEFAULT_PAGE
fn page_size(asked: u32) -> usize {
    let size = if asked == 0 {
        meridian_wire::limits::DEFAULT_PAGE
    } else {
        asked
    };
    size as usize
}
