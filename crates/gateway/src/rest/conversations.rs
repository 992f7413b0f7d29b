//! Conversations and their members: direct conversations, groups, renames,
//! membership changes.

use axum::Json;
use axum::http::StatusCode;
use meridian_rpc::core as pb;
use meridian_wire::frames::{
    AddMembersRequest, ConversationListView, ConversationView, CreateGroupRequest, DirectRequest,
    MemberView, RenameRequest,
};
use meridian_wire::limits::MAX_CONVERSATION_PAGE;
use serde::Deserialize;

use crate::convert::{conversation_view, member_view};
use crate::extract::{Authed, Body, Ids, Params, Shared, optional_id, page_limit};
use crate::{ApiError, AppState};

/// The direct conversation with another user, created on first use.
#[utoipa::path(post, path = "/v1/conversations/direct", request_body = DirectRequest,
    responses((status = 200, body = ConversationView),
              (status = 404, description = "not_found: no such user", body = meridian_wire::frames::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn direct(
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
    responses((status = 201, body = ConversationView),
              (status = 404, description = "not_found: a member that does not exist", body = meridian_wire::frames::ErrorBody),
              (status = 409, description = "group_full: more than 100 members", body = meridian_wire::frames::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn create_group(
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
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Conversation id to continue after (`next_after` of the page before).
    #[param(schema_with = meridian_wire::limits::schema::id)]
    after: Option<String>,
    /// Page size, 1–100 (default 50).
    #[param(schema_with = meridian_wire::limits::schema::conversation_page)]
    limit: Option<u32>,
}

/// The caller's conversations.
#[utoipa::path(get, path = "/v1/conversations", params(ListQuery),
    responses((status = 200, body = ConversationListView)), security(("bearer" = [])))]
pub(crate) async fn list_conversations(
    state: Shared,
    Authed(caller): Authed,
    Params(query): Params<ListQuery>,
) -> Result<Json<ConversationListView>, ApiError> {
    let mut core = state.cores.of(&caller.user_id)?.client.clone();
    let list = core
        .list_conversations(pb::ListConversationsRequest {
            caller: Some(caller),
            after: optional_id("after", query.after)?,
            limit: page_limit(query.limit, MAX_CONVERSATION_PAGE)?,
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
    responses((status = 200, body = ConversationView), (status = 404, description = "not_found: no such conversation, or not a member of it", body = meridian_wire::frames::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn get_conversation(
    state: Shared,
    Authed(caller): Authed,
    Ids(conv_id): Ids<String>,
) -> Result<Json<ConversationView>, ApiError> {
    Ok(Json(conversation_view(
        fetch_conversation(&state, caller, conv_id).await?,
    )))
}

/// Renames a group (admins only).
#[utoipa::path(patch, path = "/v1/conversations/{conv_id}", params(("conv_id" = String, Path)), request_body = RenameRequest,
    responses((status = 200, body = ConversationView),
              (status = 403, description = "forbidden: not an admin of the group, or a direct conversation", body = meridian_wire::frames::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn rename(
    state: Shared,
    Authed(caller): Authed,
    Ids(conv_id): Ids<String>,
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
    responses((status = 200, body = [MemberView]), (status = 404, description = "not_found: no such conversation, or not a member of it", body = meridian_wire::frames::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn list_members(
    state: Shared,
    Authed(caller): Authed,
    Ids(conv_id): Ids<String>,
) -> Result<Json<Vec<MemberView>>, ApiError> {
    let info = fetch_conversation(&state, caller, conv_id).await?;
    Ok(Json(info.members.into_iter().map(member_view).collect()))
}

/// Adds members to a group (admins only; at most 100 members).
#[utoipa::path(post, path = "/v1/conversations/{conv_id}/members", params(("conv_id" = String, Path)), request_body = AddMembersRequest,
    responses((status = 200, body = ConversationView),
              (status = 403, description = "forbidden: not an admin of the group, or a direct conversation", body = meridian_wire::frames::ErrorBody),
              (status = 404, description = "not_found: no such conversation (or not a member of it), or a user that does not exist", body = meridian_wire::frames::ErrorBody),
              (status = 409, description = "group_full: more than 100 members", body = meridian_wire::frames::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn add_members(
    state: Shared,
    Authed(caller): Authed,
    Ids(conv_id): Ids<String>,
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
    responses((status = 200, body = ConversationView),
              (status = 403, description = "forbidden: removing another member without being an admin, or a direct conversation", body = meridian_wire::frames::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn remove_member(
    state: Shared,
    Authed(caller): Authed,
    Ids((conv_id, user_id)): Ids<(String, String)>,
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
