//! The web client at `/app`: three static files built into the binary
//! (`src/app/`), plain HTML, CSS and JavaScript with no build step. It
//! speaks only the public protocol (REST under `/v1`, the WebSocket at
//! `/v1/ws`) from the gateway's own origin, so it needs no CORS here; the
//! object storage answers its uploads' preflights.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("app/index.html");
const SCRIPT: &str = include_str!("app/app.js");
const STYLE: &str = include_str!("app/app.css");

/// What the page may load and reach: its own files and API, the
/// WebSocket, and the object storage's presigned URLs (another origin).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' http: https: data: blob:; connect-src 'self' ws: wss: http: https:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub(crate) fn routes() -> Router {
    Router::new()
        .route(
            "/app",
            get(|| async { file(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/app/",
            get(|| async { file(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/app/app.js",
            get(|| async { file(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app/app.css",
            get(|| async { file(STYLE, "text/css; charset=utf-8") }),
        )
}

/// One of the files, never cached past a revalidation (a new binary
/// serves new files at the same paths).
fn file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
