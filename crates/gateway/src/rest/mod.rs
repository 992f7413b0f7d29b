//! REST under `/v1`, plus `/healthz`, `/readyz` and `/metrics`: the router,
//! with the handlers in one file per resource.

pub(crate) mod accounts;
pub(crate) mod conversations;
pub(crate) mod health;
pub(crate) mod history;
pub(crate) mod media;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};
use meridian_wire::ErrorCode;

use crate::{ApiError, AppState};

pub(crate) fn routes(state: Arc<AppState>) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics_text))
        .route("/v1/openapi.json", get(crate::openapi::openapi))
        .route("/v1/users", post(accounts::register))
        .route("/v1/users/{user_id}", get(accounts::get_user))
        .route(
            "/v1/devices",
            post(accounts::add_device).get(accounts::list_devices),
        )
        .route("/v1/devices/{device_id}", delete(accounts::revoke_device))
        .route(
            "/v1/conversations",
            post(conversations::create_group).get(conversations::list_conversations),
        )
        .route("/v1/conversations/direct", post(conversations::direct))
        .route(
            "/v1/conversations/{conv_id}",
            get(conversations::get_conversation).patch(conversations::rename),
        )
        .route(
            "/v1/conversations/{conv_id}/members",
            get(conversations::list_members).post(conversations::add_members),
        )
        .route(
            "/v1/conversations/{conv_id}/members/{user_id}",
            delete(conversations::remove_member),
        )
        .route(
            "/v1/conversations/{conv_id}/messages",
            get(history::history),
        )
        .route(
            "/v1/conversations/{conv_id}/messages/{msg_id}/media/{media_id}",
            get(media::media_download),
        )
        .route("/v1/media", post(media::create_upload))
        .route("/v1/media/{media_id}", get(media::get_media))
        .route(
            "/v1/media/{media_id}/complete",
            post(media::complete_upload),
        )
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}
