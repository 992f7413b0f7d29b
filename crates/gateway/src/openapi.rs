//! The OpenAPI document, generated from the handlers' annotations, and the
//! endpoint that serves it.

use axum::response::IntoResponse;
use meridian_wire::ErrorCode;
use utoipa::OpenApi;

// Handlers are named unqualified in `paths(...)`: utoipa tags an operation
// with the module path it is named by, and the document's operations have
// no such tag (the media endpoints keep theirs explicitly, in
// `rest/media.rs`). Glob imports bring in each handler with the `__path_`
// type utoipa derives beside it.
use crate::rest::accounts::*;
use crate::rest::conversations::*;
use crate::rest::health::*;
use crate::rest::history::*;
use crate::rest::media::*;

/// The OpenAPI document of the REST API, as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub(crate) async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
}

/// Paths for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Meridian", description = "Meridian's REST API. The live session is a WebSocket at /v1/ws; see docs/protocol.md."),
    paths(healthz, readyz, metrics_text, openapi, register, get_user, add_device, list_devices, revoke_device,
          direct, create_group, list_conversations, get_conversation, rename, list_members, add_members,
          remove_member, history, create_upload, complete_upload,
          get_media, media_download),
    components(schemas(meridian_wire::frames::ErrorBody, ErrorCode, meridian_wire::frames::WireMessage)),
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
