//! REST under `/v1`, plus `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use meridian_proto::ErrorCode;
use meridian_proto::core as pb;
use meridian_proto::frames::{
    AddDeviceRequest, AddMembersRequest, ConversationListView, ConversationView,
    CreateGroupRequest, DeviceCreated, DeviceView, DirectRequest, HistoryView, MemberView,
    RegisterRequest, RegisterResponse, RenameRequest, UserView,
};
use meridian_seams::net::PeerAddr;
use serde::Deserialize;

use crate::{ApiError, AppState};

pub(crate) type Shared = State<Arc<AppState>>;

pub(crate) fn routes(state: Arc<AppState>) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/users", post(register))
        .route("/v1/users/{user_id}", get(get_user))
        .route("/v1/devices", post(add_device).get(list_devices))
        .route("/v1/devices/{device_id}", delete(revoke_device))
        .route(
            "/v1/conversations",
            post(create_group).get(list_conversations),
        )
        .route("/v1/conversations/direct", post(direct))
        .route(
            "/v1/conversations/{conv_id}",
            get(get_conversation).patch(rename),
        )
        .route(
            "/v1/conversations/{conv_id}/members",
            get(list_members).post(add_members),
        )
        .route(
            "/v1/conversations/{conv_id}/members/{user_id}",
            delete(remove_member),
        )
        .route("/v1/conversations/{conv_id}/messages", get(history))
        .route(
            "/v1/conversations/{conv_id}/messages/{msg_id}/media/{media_id}",
            get(crate::media::media_download),
        )
        .route("/v1/media", post(crate::media::create_upload))
        .route("/v1/media/{media_id}", get(crate::media::get_media))
        .route(
            "/v1/media/{media_id}/complete",
            post(crate::media::complete_upload),
        )
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

/// A JSON body whose rejections are typed errors.
pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match &rejection {
                JsonRejection::JsonSyntaxError(_) => {
                    ApiError::new(ErrorCode::InvalidJson, rejection.body_text())
                }
                JsonRejection::BytesRejection(_)
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    ApiError::new(ErrorCode::PayloadTooLarge, "request body too large")
                }
                _ => ApiError::new(ErrorCode::BadRequest, rejection.body_text()),
            }),
        }
    }
}

/// The authenticated caller, from `Authorization: Bearer <token>`.
pub(crate) struct Authed(pub pb::Caller);

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthenticated,
                    "missing Authorization: Bearer <token>",
                )
            })?;
        let core = state.cores.of_token(token.trim())?.client.clone();
        let caller = crate::cores::idempotent(|| {
            let mut core = core.clone();
            let token = token.trim().to_string();
            async move { core.authenticate(pb::AuthenticateRequest { token }).await }
        })
        .await?
        .into_inner();
        if !state.limits.requests.allow(&caller.device_id) {
            metrics::counter!("meridian_gateway_rate_limited_total", "what" => "rest").increment(1);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "too many requests; retry later",
            ));
        }
        Ok(Self(caller))
    }
}

fn conversation_view(info: pb::ConversationInfo) -> ConversationView {
    ConversationView {
        conv_id: info.conv_id,
        kind: info.kind,
        name: info.name,
        version: info.version,
        created_ms: info.created_ms,
        members: info.members.into_iter().map(member_view).collect(),
    }
}

fn member_view(member: pb::MemberInfo) -> MemberView {
    MemberView {
        user_id: member.user_id,
        role: member.role,
        joined_ms: member.joined_ms,
    }
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the session stream to the core is up.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, description = "core unreachable")))]
async fn readyz(state: Shared) -> impl IntoResponse {
    let connected = state.cores.connected();
    let regions: Vec<String> = connected
        .iter()
        .map(|(region, up)| format!("{region}={}", if *up { "up" } else { "down" }))
        .collect();
    if state.cores.local_connected() {
        (
            StatusCode::OK,
            format!("ready {} ({})", state.config.region, regions.join(" ")),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("core unreachable ({})", regions.join(" ")),
        )
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
async fn metrics_text(state: Shared) -> impl IntoResponse {
    match &state.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not recorded by this process".to_string(),
        ),
    }
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document")))]
async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::openapi_json(),
    )
}

/// Registers a user homed in this region with a first device.
#[utoipa::path(post, path = "/v1/users", request_body = RegisterRequest,
    responses((status = 201, body = RegisterResponse), (status = 400, body = meridian_proto::frames::ErrorBody), (status = 429, body = meridian_proto::frames::ErrorBody)))]
async fn register(
    state: Shared,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Body(body): Body<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    if !state.limits.registrations.allow(&peer.ip().to_string()) {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many registrations; retry later",
        ));
    }
    let mut core = match body.home_region.as_deref() {
        Some(region) => state.cores.for_registration(region)?,
        None => state.cores.local()?,
    }
    .client
    .clone();
    let response = core
        .register_user(pb::RegisterUserRequest {
            display_name: body.display_name,
            device_label: body.device_label.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let (Some(user), Some(device)) = (response.user, response.device) else {
        return Err(ApiError::new(
            ErrorCode::Internal,
            "incomplete registration answer",
        ));
    };
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            user_id: user.user_id,
            home_region: user.home_region,
            device_id: device.device_id,
            token: device.token,
        }),
    ))
}

/// A user's public profile.
#[utoipa::path(get, path = "/v1/users/{user_id}", params(("user_id" = String, Path)),
    responses((status = 200, body = UserView), (status = 404, body = meridian_proto::frames::ErrorBody)), security(("bearer" = [])))]
async fn get_user(
    state: Shared,
    Authed(caller): Authed,
    Path(user_id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    let core = state.cores.of(&user_id)?.client.clone();
    let request = pb::GetUserRequest {
        caller: Some(caller),
        user_id,
    };
    let user = crate::cores::idempotent(|| {
        let (mut core, request) = (core.clone(), request.clone());
        async move { core.get_user(request).await }
    })
    .await?
    .into_inner();
    Ok(Json(UserView {
        user_id: user.user_id,
        display_name: user.display_name,
        home_region: user.home_region,
    }))
}

/// Adds a device to the caller's account.
#[utoipa::path(post, path = "/v1/devices", request_body = AddDeviceRequest,
    responses((status = 201, body = DeviceCreated)), security(("bearer" = [])))]
async fn add_device(
    state: Shared,
    Authed(caller): Authed,
    Body(body): Body<AddDeviceRequest>,
) -> Result<(StatusCode, Json<DeviceCreated>), ApiError> {
    let mut core = state.cores.of(&caller.user_id)?.client.clone();
    let device = core
        .add_device(pb::AddDeviceRequest {
            caller: Some(caller),
            label: body.label,
        })
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(DeviceCreated {
            device_id: device.device_id,
            token: device.token,
        }),
    ))
}

/// The caller's devices.
#[utoipa::path(get, path = "/v1/devices", responses((status = 200, body = [DeviceView])), security(("bearer" = [])))]
async fn list_devices(
    state: Shared,
    Authed(caller): Authed,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let mut core = state.cores.of(&caller.user_id)?.client.clone();
    let list = core.list_devices(caller).await?.into_inner();
    Ok(Json(
        list.devices
            .into_iter()
            .map(|d| DeviceView {
                device_id: d.device_id,
                label: d.label,
                created_ms: d.created_ms,
                revoked: d.revoked,
            })
            .collect(),
    ))
}

/// Revokes one of the caller's devices: its token is refused from then on.
#[utoipa::path(delete, path = "/v1/devices/{device_id}", params(("device_id" = String, Path)),
    responses((status = 204), (status = 404, body = meridian_proto::frames::ErrorBody)), security(("bearer" = [])))]
async fn revoke_device(
    state: Shared,
    Authed(caller): Authed,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut core = state.cores.of(&caller.user_id)?.client.clone();
    core.revoke_device(pb::RevokeDeviceRequest {
        caller: Some(caller),
        device_id,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The direct conversation with another user, created on first use.
#[utoipa::path(post, path = "/v1/conversations/direct", request_body = DirectRequest,
    responses((status = 200, body = ConversationView)), security(("bearer" = [])))]
async fn direct(
    state: Shared,
    Authed(caller): Authed,
    Body(body): Body<DirectRequest>,
) -> Result<Json<ConversationView>, ApiError> {
    let mut core = state.cores.of(&caller.user_id)?.client.clone();
    let info = core
        .get_or_create_direct(pb::DirectRequest {
            caller: Some(caller),
            peer_user_id: body.peer_user_id,
        })
        .await?
        .into_inner();
    Ok(Json(conversation_view(info)))
}

/// Creates a group; the caller is its admin.
#[utoipa::path(post, path = "/v1/conversations", request_body = CreateGroupRequest,
    responses((status = 201, body = ConversationView), (status = 409, description = "group_full", body = meridian_proto::frames::ErrorBody)), security(("bearer" = [])))]
async fn create_group(
    state: Shared,
    Authed(caller): Authed,
    Body(body): Body<CreateGroupRequest>,
) -> Result<(StatusCode, Json<ConversationView>), ApiError> {
    let mut core = state.cores.of(&caller.user_id)?.client.clone();
    let info = core
        .create_group(pb::CreateGroupRequest {
            caller: Some(caller),
            name: body.name,
            member_user_ids: body.member_user_ids,
        })
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(conversation_view(info))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct ListQuery {
    /// Conversation id to continue after.
    after: Option<String>,
    /// Page size, 1–100 (default 50).
    limit: Option<u32>,
}

/// The caller's conversations.
#[utoipa::path(get, path = "/v1/conversations", params(ListQuery),
    responses((status = 200, body = ConversationListView)), security(("bearer" = [])))]
async fn list_conversations(
    state: Shared,
    Authed(caller): Authed,
    Query(query): Query<ListQuery>,
) -> Result<Json<ConversationListView>, ApiError> {
    let mut core = state.cores.of(&caller.user_id)?.client.clone();
    let list = core
        .list_conversations(pb::ListConversationsRequest {
            caller: Some(caller),
            after: query.after.unwrap_or_default(),
            limit: query.limit.unwrap_or(50),
        })
        .await?
        .into_inner();
    Ok(Json(ConversationListView {
        conversations: list
            .conversations
            .into_iter()
            .map(conversation_view)
            .collect(),
        next_after: (!list.next_after.is_empty()).then_some(list.next_after),
    }))
}

async fn fetch_conversation(
    state: &AppState,
    caller: pb::Caller,
    conv_id: String,
) -> Result<pb::ConversationInfo, ApiError> {
    let core = state.cores.of(&caller.user_id)?.client.clone();
    let request = pb::ConversationRequest {
        caller: Some(caller),
        conv_id,
    };
    Ok(crate::cores::idempotent(|| {
        let (mut core, request) = (core.clone(), request.clone());
        async move { core.get_conversation(request).await }
    })
    .await?
    .into_inner())
}

/// A conversation the caller belongs to.
#[utoipa::path(get, path = "/v1/conversations/{conv_id}", params(("conv_id" = String, Path)),
    responses((status = 200, body = ConversationView), (status = 403, body = meridian_proto::frames::ErrorBody)), security(("bearer" = [])))]
async fn get_conversation(
    state: Shared,
    Authed(caller): Authed,
    Path(conv_id): Path<String>,
) -> Result<Json<ConversationView>, ApiError> {
    Ok(Json(conversation_view(
        fetch_conversation(&state, caller, conv_id).await?,
    )))
}

/// Renames a group (admins only).
#[utoipa::path(patch, path = "/v1/conversations/{conv_id}", params(("conv_id" = String, Path)), request_body = RenameRequest,
    responses((status = 200, body = ConversationView)), security(("bearer" = [])))]
async fn rename(
    state: Shared,
    Authed(caller): Authed,
    Path(conv_id): Path<String>,
    Body(body): Body<RenameRequest>,
) -> Result<Json<ConversationView>, ApiError> {
    let mut core = state
        .cores
        .of_conversation(&conv_id, &caller.user_id)?
        .client
        .clone();
    let info = core
        .rename_group(pb::RenameGroupRequest {
            caller: Some(caller),
            conv_id,
            name: body.name,
        })
        .await?
        .into_inner();
    Ok(Json(conversation_view(info)))
}

/// Members of a conversation (members only).
#[utoipa::path(get, path = "/v1/conversations/{conv_id}/members", params(("conv_id" = String, Path)),
    responses((status = 200, body = [MemberView]), (status = 403, body = meridian_proto::frames::ErrorBody)), security(("bearer" = [])))]
async fn list_members(
    state: Shared,
    Authed(caller): Authed,
    Path(conv_id): Path<String>,
) -> Result<Json<Vec<MemberView>>, ApiError> {
    let info = fetch_conversation(&state, caller, conv_id).await?;
    Ok(Json(info.members.into_iter().map(member_view).collect()))
}

/// Adds members to a group (admins only; at most 100 members).
#[utoipa::path(post, path = "/v1/conversations/{conv_id}/members", params(("conv_id" = String, Path)), request_body = AddMembersRequest,
    responses((status = 200, body = ConversationView), (status = 409, description = "group_full", body = meridian_proto::frames::ErrorBody)), security(("bearer" = [])))]
async fn add_members(
    state: Shared,
    Authed(caller): Authed,
    Path(conv_id): Path<String>,
    Body(body): Body<AddMembersRequest>,
) -> Result<Json<ConversationView>, ApiError> {
    let mut core = state
        .cores
        .of_conversation(&conv_id, &caller.user_id)?
        .client
        .clone();
    let info = core
        .add_members(pb::AddMembersRequest {
            caller: Some(caller),
            conv_id,
            user_ids: body.user_ids,
        })
        .await?
        .into_inner();
    Ok(Json(conversation_view(info)))
}

/// Removes a member (admins), or leaves (oneself).
#[utoipa::path(delete, path = "/v1/conversations/{conv_id}/members/{user_id}", params(("conv_id" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, body = ConversationView)), security(("bearer" = [])))]
async fn remove_member(
    state: Shared,
    Authed(caller): Authed,
    Path((conv_id, user_id)): Path<(String, String)>,
) -> Result<Json<ConversationView>, ApiError> {
    let mut core = state
        .cores
        .of_conversation(&conv_id, &caller.user_id)?
        .client
        .clone();
    let info = core
        .remove_member(pb::RemoveMemberRequest {
            caller: Some(caller),
            conv_id,
            user_id,
        })
        .await?
        .into_inner();
    Ok(Json(conversation_view(info)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct HistoryQuery {
    /// Page messages older than this message id, newest first.
    before: Option<String>,
    /// Page messages newer than this message id, oldest first.
    after: Option<String>,
    /// 1–200 (default 50).
    limit: Option<u32>,
}

/// A page of history (members only), in display order `(hlc, origin_region,
/// msg_id)`. Without `before`/`after`: the newest messages, newest first.
#[utoipa::path(get, path = "/v1/conversations/{conv_id}/messages", params(("conv_id" = String, Path), HistoryQuery),
    responses((status = 200, body = HistoryView), (status = 403, body = meridian_proto::frames::ErrorBody)), security(("bearer" = [])))]
async fn history(
    state: Shared,
    Authed(caller): Authed,
    Path(conv_id): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryView>, ApiError> {
    let (from_msg_id, backward) = match (query.before, query.after) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "give before or after, not both",
            ));
        }
        (Some(id), None) => (id, true),
        (None, Some(id)) => (id, false),
        (None, None) => (String::new(), true),
    };
    let core = state.cores.of(&caller.user_id)?.client.clone();
    let request = pb::HistoryRequest {
        caller: Some(caller),
        conv_id,
        from_msg_id,
        backward,
        limit: query.limit.unwrap_or(50),
    };
    let page = crate::cores::idempotent(|| {
        let (mut core, request) = (core.clone(), request.clone());
        async move { core.history(request).await }
    })
    .await?
    .into_inner();
    Ok(Json(HistoryView {
        messages: page
            .messages
            .into_iter()
            .map(crate::ws::wire_message)
            .collect(),
    }))
}

/// Paths for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Meridian", description = "Meridian's REST API. The live session is a WebSocket at /v1/ws; see docs/protocol.md."),
    paths(healthz, readyz, metrics_text, openapi, register, get_user, add_device, list_devices, revoke_device,
          direct, create_group, list_conversations, get_conversation, rename, list_members, add_members,
          remove_member, history, crate::media::create_upload, crate::media::complete_upload,
          crate::media::get_media, crate::media::media_download),
    components(schemas(meridian_proto::frames::ErrorBody, ErrorCode, meridian_proto::frames::WireMessage)),
    modifiers(&BearerAuth)
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("device token")
                    .build(),
            ),
        );
    }
}
