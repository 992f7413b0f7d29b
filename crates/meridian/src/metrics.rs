//! The process's Prometheus metrics: the recorder, kept drained, and the
//! admin listener of `meridian core` and `meridian gateway` (`/metrics`,
//! `/healthz`, `/readyz`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use meridian_seams::net::TokioNetwork;

/// Installs the process's Prometheus recorder and keeps it drained.
///
/// `install_recorder` leaves upkeep to the caller. Without it, every
/// histogram sample since the last scrape is kept in memory (unbounded if
/// nothing scrapes) and the next scrape folds them all at once: after a
/// minute at 5,000 msg/s that fold stalled delivery for 100–240 ms. Once a
/// second, on the blocking pool, each fold is small and never holds an async
/// worker.
pub(crate) fn recorder() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let upkeep = upkeep.clone();
            let offload = meridian_seams::Offload::BlockingPool;
            if offload.run(move || upkeep.run_upkeep()).await.is_err() {
                break;
            }
        }
    });
    Ok(handle)
}

/// What an admin listener's `/readyz` answers: ready or not, and why.
pub(crate) type ReadinessCheck = Arc<dyn Fn() -> (bool, String) + Send + Sync>;

/// A core's readiness: 200 while its store takes commits and none has
/// stalled, 503 with the reason otherwise.
pub(crate) fn core_readiness(
    readiness: tokio::sync::watch::Receiver<meridian_region::Readiness>,
) -> ReadinessCheck {
    Arc::new(move || {
        let now = readiness.borrow().clone();
        (now.is_ready(), now.to_string())
    })
}

/// Serves the admin endpoints of a core or gateway on `addr`, in plaintext
/// for probes and scrapers: `/metrics`, `/healthz` (the process is up) and
/// `/readyz` (`ready`).
pub(crate) async fn serve_admin(
    addr: SocketAddr,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    ready: ReadinessCheck,
    gateway: Option<meridian_gateway::GatewayControl>,
) -> anyhow::Result<()> {
    let listener = TokioNetwork::shared()
        .bind(addr)
        .await
        .with_context(|| format!("binding the admin listener on {addr}"))?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let (ready, text) = ready();
                async move {
                    let status = if ready {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, text)
                }
            }),
        );
    let app = match gateway {
        Some(control) => app.merge(drain_routes(control)),
        None => app,
    };
    println!(
        "admin on http://{0}/metrics, /healthz, /readyz",
        listener.local_addr()?
    );
    tokio::spawn(async move {
        let served = axum::serve(meridian_seams::net::AxumListener::new(listener), app).await;
        if let Err(error) = served {
            tracing::error!(%error, "admin listener stopped");
        }
    });
    Ok(())
}

/// The longest drain spread accepted: an hour.
const MAX_SPREAD_MS: u64 = 3_600_000;

/// `spread_ms` of `POST /drain`.
#[derive(serde::Deserialize)]
struct DrainQuery {
    #[serde(default = "default_spread_ms")]
    spread_ms: u64,
}

fn default_spread_ms() -> u64 {
    30_000
}

/// A gateway's drain on its admin listener: `POST /drain?spread_ms=N`
/// (clients asked to leave over N ms, default 30 s), `POST /undrain`,
/// `GET /connections` (WebSockets open now).
fn drain_routes(control: meridian_gateway::GatewayControl) -> axum::Router {
    use axum::extract::Query;
    use axum::extract::rejection::QueryRejection;
    use axum::http::StatusCode;
    let (drain, undrain, count) = (control.clone(), control.clone(), control);
    axum::Router::new()
        .route(
            "/drain",
            axum::routing::post(move |query: Result<Query<DrainQuery>, QueryRejection>| {
                let control = drain.clone();
                async move {
                    let Ok(Query(query)) = query else {
                        return (
                            StatusCode::BAD_REQUEST,
                            "spread_ms must be a whole number of milliseconds".to_string(),
                        );
                    };
                    if query.spread_ms > MAX_SPREAD_MS {
                        return (
                            StatusCode::BAD_REQUEST,
                            format!("spread_ms is at most {MAX_SPREAD_MS}"),
                        );
                    }
                    control.drain(std::time::Duration::from_millis(query.spread_ms));
                    (
                        StatusCode::OK,
                        format!(
                            "draining over {} ms; {} connections",
                            query.spread_ms,
                            control.connections()
                        ),
                    )
                }
            }),
        )
        .route(
            "/undrain",
            axum::routing::post(move || {
                let control = undrain.clone();
                async move {
                    control.undrain();
                    "taking clients"
                }
            }),
        )
        .route(
            "/connections",
            axum::routing::get(move || {
                let control = count.clone();
                async move { control.connections().to_string() }
            }),
        )
}
