//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::OpenApi;

/// The OpenAPI document of the REST API, as JSON.
pub fn openapi_json() -> String {
    crate::rest::ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
