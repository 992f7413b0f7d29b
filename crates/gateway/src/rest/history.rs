//! A conversation's history, paged.

use axum::Json;
use meridian_rpc::core as pb;
use meridian_wire::frames::HistoryView;
use meridian_wire::limits::MAX_HISTORY_PAGE;
use serde::Deserialize;

use crate::ApiError;
use crate::convert::wire_message;
use crate::extract::{Authed, Ids, Params, Shared, optional_id, page_limit};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// Page messages older than this message id, newest first; with
    /// `after`, where the page stops.
    #[param(schema_with = meridian_wire::limits::schema::id)]
    before: Option<String>,
    /// Page messages newer than this message id, oldest first (with
    /// `before`, the messages between the two).
    #[param(schema_with = meridian_wire::limits::schema::id)]
    after: Option<String>,
    /// 1–200 (default 50).
    #[param(schema_with = meridian_wire::limits::schema::history_page)]
    limit: Option<u32>,
}

/// A page of history (members only), in display order `(hlc, origin_region,
/// msg_id)`. Without `before`/`after`: the newest messages, newest first.
/// With both: the messages strictly between them, oldest first (a client
/// filling a hole in what it holds).
#[utoipa::path(get, path = "/v1/conversations/{conv_id}/messages", params(("conv_id" = String, Path), HistoryQuery),
    responses((status = 200, body = HistoryView), (status = 404, description = "not_found: no such conversation or message, or not a member", body = meridian_wire::frames::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn history(
    state: Shared,
    Authed(caller): Authed,
    Ids(conv_id): Ids<String>,
    Params(query): Params<HistoryQuery>,
) -> Result<Json<HistoryView>, ApiError> {
    let before = optional_id("before", query.before)?;
    let after = optional_id("after", query.after)?;
    // Read from `after` towards `before` when there is an `after`; else
    // backward from `before` (or from the newest message).
    let backward = after.is_empty();
    let (from_msg_id, stop_msg_id) = if backward {
        (before, String::new())
    } else {
        (after, before)
    };
    let core = state.cores.of(&caller.user_id)?.client.clone();
    let request = pb::HistoryRequest {
        caller: Some(caller),
        conv_id,
        from_msg_id,
        stop_msg_id,
        backward,
        limit: page_limit(query.limit, MAX_HISTORY_PAGE)?,
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
