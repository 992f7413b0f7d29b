//! Liveness, readiness and Prometheus metrics.

use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::AppState;
use crate::extract::Shared;

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the session stream to the core is up.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, description = "core unreachable")))]
pub(crate) async fn readyz(state: Shared) -> impl IntoResponse {
    let (ready, text) = readiness(&state);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, text)
}

/// Whether every site of the gateway's region has its session stream, with
/// each site's state.
pub(crate) fn readiness(state: &AppState) -> (bool, String) {
    let connected = state.cores.connected();
    let regions: Vec<String> = connected
        .iter()
        .map(|(region, up)| format!("{region}={}", if *up { "up" } else { "down" }))
        .collect();
    if state.drain.is_draining() {
        return (false, format!("draining ({})", regions.join(" ")));
    }
    if state.cores.local_connected() {
        (
            true,
            format!("ready {} ({})", state.config.region, regions.join(" ")),
        )
    } else {
        (false, format!("core unreachable ({})", regions.join(" ")))
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub(crate) async fn metrics_text(state: Shared) -> impl IntoResponse {
    match &state.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not served on this port (see the admin listener)".to_string(),
        ),
    }
}
