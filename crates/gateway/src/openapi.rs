//! The OpenAPI document, generated from the handlers' annotations, and the
//! endpoint that serves it.
//!
//! Two passes complete what the annotations say. [`ErrorResponses`] adds
//! the error answers every operation of a kind can give (401 and 429 to
//! each authenticated one, 404 where a path names a resource, 400 and 413
//! where a request carries input, 503 where a core is asked), so a client
//! or a fuzzer finds every status the gateway can answer listed.
//! [`Deployment`] states the limits that are this deployment's choice:
//! its regions and its largest upload.

use axum::response::IntoResponse;
use meridian_wire::ErrorCode;
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, Response, ResponseBuilder};

// Handlers are named unqualified in `paths(...)`: utoipa tags an operation
// with the module path it is named by, and the document's operations have
// no such tag (the media endpoints keep theirs explicitly, in
// `rest/media.rs`). Glob imports bring in each handler with the `__path_`
// type utoipa derives beside it.
use crate::extract::Shared;
use crate::rest::accounts::*;
use crate::rest::conversations::*;
use crate::rest::health::*;
use crate::rest::history::*;
use crate::rest::media::*;

/// What the served document says of this deployment in particular.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// The regions a user may be homed in.
    pub regions: Vec<String>,
    /// The largest upload, bytes.
    pub media_max_bytes: u64,
}

/// The OpenAPI document of the REST API for `deployment`, as JSON.
pub fn openapi_json(deployment: &Deployment) -> String {
    to_json(&document(deployment))
}

fn to_json(document: &utoipa::openapi::OpenApi) -> String {
    document
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The document, completed for `deployment`.
pub fn document(deployment: &Deployment) -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    deployment.apply(&mut document);
    document
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub(crate) async fn openapi(state: Shared) -> impl IntoResponse {
    let mut regions: Vec<String> = state
        .cores
        .connected()
        .into_keys()
        .map(|site| meridian_wire::sites::region_of_site(site).to_string())
        .collect();
    regions.sort();
    regions.dedup();
    let deployment = Deployment {
        regions,
        media_max_bytes: state.config.media_max_bytes,
    };
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        to_json(&document(&deployment)),
    )
}

/// Paths for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Meridian", description = "Meridian's REST API. The live session is a WebSocket at /v1/ws; see docs/protocol.md. Every error answer is an ErrorBody with a stable code."),
    paths(healthz, readyz, metrics_text, openapi, register, get_user, add_device, list_devices, revoke_device,
          direct, create_group, list_conversations, get_conversation, rename, list_members, add_members,
          remove_member, history, create_upload, complete_upload,
          get_media, media_download),
    components(schemas(meridian_wire::frames::ErrorBody, ErrorCode, meridian_wire::frames::WireMessage)),
    modifiers(&BearerAuth, &ErrorResponses)
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

/// The error answers of every operation, by what the operation takes.
struct ErrorResponses;

impl ErrorResponses {
    fn complete(path: &str, operation: &mut Operation) {
        let authenticated = operation.security.as_ref().is_some_and(|s| !s.is_empty());
        let parameters = operation.parameters.get_or_insert_with(Vec::new);
        let mut takes_input = operation.request_body.is_some();
        let mut names_a_resource = false;
        for parameter in parameters.iter_mut() {
            takes_input = true;
            if parameter.parameter_in == ParameterIn::Path {
                // Every path parameter is an id.
                parameter.schema = Some(meridian_wire::limits::schema::id().into());
                names_a_resource = true;
            }
        }
        if parameters.is_empty() {
            operation.parameters = None;
        }
        let asks_a_core = path.starts_with("/v1/") && path != "/v1/openapi.json";
        let mut add = |status: &str, response: Response| {
            operation
                .responses
                .responses
                .entry(status.to_string())
                .or_insert(RefOr::T(response));
        };
        if takes_input {
            add(
                "400",
                error(
                    "`bad_request` (the message names the field and its rule), `invalid_json`, `invalid_name`.",
                ),
            );
        }
        if operation.request_body.is_some() {
            add(
                "413",
                error("`payload_too_large`: the body is over the gateway's limit (256 KiB)."),
            );
        }
        if authenticated {
            add(
                "401",
                error(
                    "`unauthenticated` (no `Authorization: Bearer` token), `invalid_token`, `token_revoked`.",
                ),
            );
        }
        if authenticated || path == "/v1/users" {
            add("429", rate_limited());
        }
        if names_a_resource {
            add(
                "404",
                error(
                    "`not_found`: no such resource, or not one the caller may see (a conversation the caller is not a member of is not found).",
                ),
            );
        }
        if asks_a_core {
            add(
                "503",
                error(
                    "`unavailable`: the core that holds the data cannot be reached; retry (after `retry_after_ms` when given).",
                ),
            );
        }
    }
}

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                Self::complete(path, operation);
            }
        }
    }
}

/// An error answer: an `ErrorBody` described by `description`.
fn error(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

fn rate_limited() -> Response {
    let mut response = error(
        "`rate_limited`: too many requests from this device (or registrations from this address, or failed sign-ins); wait as `Retry-After` and `retry_after_ms` say.",
    );
    response.headers.insert(
        "Retry-After".to_string(),
        HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .build(),
            )
            .description(Some("Seconds to wait, rounded up."))
            .build(),
    );
    response
}

impl Deployment {
    fn apply(&self, document: &mut utoipa::openapi::OpenApi) {
        let Some(components) = document.components.as_mut() else {
            return;
        };
        if let Some(RefOr::T(Schema::Object(upload))) =
            components.schemas.get_mut("CreateUploadRequest")
            && let Some(RefOr::T(Schema::Object(size))) = upload.properties.get_mut("size")
        {
            size.maximum = Some(self.media_max_bytes.into());
        }
        if let Some(RefOr::T(Schema::Object(register))) =
            components.schemas.get_mut("RegisterRequest")
            && let Some(RefOr::T(Schema::Object(region))) =
                register.properties.get_mut("home_region")
        {
            let names = self
                .regions
                .iter()
                .map(|r| serde_json::Value::from(r.as_str()))
                .chain([serde_json::Value::Null]);
            region.enum_values = Some(names.collect());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Deployment {
        Deployment {
            regions: vec!["eu-west".into(), "us-east".into()],
            media_max_bytes: 5 * 1024 * 1024,
        }
    }

    fn operations(document: &utoipa::openapi::OpenApi) -> Vec<(String, &Operation)> {
        let mut all = Vec::new();
        for (path, item) in &document.paths.paths {
            for operation in [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                .into_iter()
                .flatten()
            {
                all.push((path.clone(), operation));
            }
        }
        all
    }

    #[test]
    fn every_operation_lists_the_errors_it_can_give() {
        let document = document(&deployment());
        let all = operations(&document);
        assert_eq!(all.len(), 22);
        for (path, operation) in all {
            let statuses: Vec<&str> = operation
                .responses
                .responses
                .keys()
                .map(String::as_str)
                .collect();
            let authenticated = operation.security.is_some();
            assert_eq!(
                statuses.contains(&"401"),
                authenticated,
                "{path}: {statuses:?}"
            );
            // Registration is limited per address, everything else per device.
            assert_eq!(
                statuses.contains(&"429"),
                authenticated || path == "/v1/users",
                "{path}: {statuses:?}"
            );
            if operation.request_body.is_some() {
                assert!(
                    statuses.contains(&"400") && statuses.contains(&"413"),
                    "{path}: {statuses:?}"
                );
            }
            for parameter in operation.parameters.iter().flatten() {
                if parameter.parameter_in == ParameterIn::Path {
                    assert!(statuses.contains(&"404"), "{path}");
                    let schema = serde_json::to_value(&parameter.schema).unwrap();
                    assert_eq!(
                        schema["pattern"],
                        meridian_wire::limits::ID_PATTERN,
                        "{path}"
                    );
                    assert_eq!(schema["maxLength"], 128, "{path}");
                }
            }
            if path.starts_with("/v1/") && path != "/v1/openapi.json" {
                assert!(statuses.contains(&"503"), "{path}: {statuses:?}");
            }
        }
    }

    #[test]
    fn the_document_states_the_deployments_limits() {
        let json: serde_json::Value = serde_json::from_str(&openapi_json(&deployment())).unwrap();
        let schemas = &json["components"]["schemas"];
        assert_eq!(
            schemas["CreateUploadRequest"]["properties"]["size"]["maximum"],
            5 * 1024 * 1024
        );
        assert_eq!(
            schemas["RegisterRequest"]["properties"]["home_region"]["enum"],
            serde_json::json!(["eu-west", "us-east", null])
        );
        let name = &schemas["RegisterRequest"]["properties"]["display_name"];
        assert_eq!(name["maxLength"], 64);
        assert_eq!(name["pattern"], meridian_wire::limits::name_pattern());
        let limit = json["paths"]["/v1/conversations"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["in"], "query");
        assert_eq!(
            limit["schema"]["maximum"],
            meridian_wire::limits::MAX_CONVERSATION_PAGE
        );
    }
}
