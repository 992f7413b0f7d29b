//! A conversation's history, paged.

use axum::Json;
use axum::extract::{Path, Query};
use meridian_rpc::core as pb;
use meridian_wire::ErrorCode;
use meridian_wire::frames::HistoryView;
use serde::Deserialize;

use crate::ApiError;
use crate::convert::wire_message;
use crate::extract::{Authed, Shared};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct HistoryQuery {
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
    responses((status = 200, body = HistoryView), (status = 404, description = "not_found: no such conversation or message, or not a member", body = meridian_wire::frames::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn history(
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
        messages: page.messages.into_iter().map(wire_message).collect(),
    }))
}
