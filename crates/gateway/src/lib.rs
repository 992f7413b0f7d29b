//! The client edge of a region: REST under `/v1` (with its OpenAPI document
//! at `/v1/openapi.json`), the WebSocket session at `/v1/ws`, the web
//! client at `/app`, health, readiness and Prometheus metrics.
//!
//! # What it owns
//! Authentication of device tokens (by asking the core), per-device rate
//! limits, frame and body size limits, the JSON frame protocol, detection of
//! dead sockets (ping/pong, write timeouts), routing each request to the
//! core of the region its subject belongs to (a gateway in any region serves
//! any user), and one multiplexed gRPC session stream per region ([`mux`]).
//!
//! # What it must not touch
//! The store or the KV interface: everything goes to the core over
//! `meridian-rpc`'s gRPC. It holds no state that matters: kill it and
//! clients reconnect elsewhere and resume from their stored cursor.
//!
//! # Where things are
//! - `rest/`: the router (`mod.rs`) and the REST handlers, one resource a
//!   file: `accounts.rs` (registration, users, devices),
//!   `conversations.rs` (conversations and their members), `history.rs`,
//!   `media.rs` (upload slots, completion, downloads) and `health.rs`
//!   (liveness, readiness, metrics).
//! - `extract.rs`: the handlers' extractors (the shared state, typed JSON
//!   bodies, the authenticated caller).
//! - `convert.rs`: every conversion from the core's protobuf answers to
//!   the client's wire types, for REST and the WebSocket alike.
//! - `ws.rs`: the WebSocket session.
//! - `openapi.rs`: the OpenAPI document and the endpoint serving it.
//! - `app.rs` and `app/`: the web client's static files, built in.
//! - `cores.rs`: which site's core serves a request, and the retry of
//!   idempotent calls; `mux.rs`: the session stream to a core ([`mux`]).
//! - `limits.rs`: rate limits; `error.rs`: error codes to HTTP statuses.
//!
//! Files use one another in one direction: handlers use the extractors,
//! the conversions and the cores, never each other.

mod app;
mod auth;
mod convert;
mod cores;
mod drain;
mod error;
mod extract;
mod limits;
pub mod mux;
mod openapi;
mod rest;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use axum::Router;
use meridian_seams::SharedClock;
use meridian_seams::net::{AxumListener, Listener};

pub use cores::CoreChannels;
pub use error::ApiError;
pub use openapi::{Deployment, openapi_json};

/// Limits and timings of a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Region this gateway runs in (reported by `/readyz`).
    pub region: String,
    /// Every region's shard count: which site's core serves an id.
    pub topology: meridian_wire::sites::Topology,
    /// Largest WebSocket frame answered with `frame_too_large` rather than
    /// accepted, bytes.
    pub max_frame_bytes: usize,
    /// Hard cap: larger frames close the socket (code 1009).
    pub hard_max_frame_bytes: usize,
    /// Largest message payload, bytes (checked here before the core checks
    /// it again, so an oversized send never crosses to the core).
    pub max_payload_bytes: usize,
    /// Largest REST body, bytes.
    pub max_body_bytes: usize,
    /// Largest media upload, bytes: the cores' limit, which the OpenAPI
    /// document states.
    pub media_max_bytes: u64,
    /// Sends per second per device (sustained).
    pub sends_per_second: f64,
    /// Send burst per device.
    pub send_burst: f64,
    /// Authenticated REST requests per second per device (sustained).
    pub requests_per_second: f64,
    /// REST request burst per device.
    pub request_burst: f64,
    /// WebSocket connection attempts per minute per device.
    pub connects_per_minute: f64,
    /// Registrations per minute, per client IP address.
    pub registrations_per_minute: f64,
    /// Time allowed for the `auth` frame after connecting.
    pub auth_timeout: Duration,
    /// Ping interval on idle sockets.
    pub ping_interval: Duration,
    /// A socket silent this long (no frame, no pong) is closed.
    pub idle_timeout: Duration,
    /// A write blocked this long closes the socket.
    pub write_timeout: Duration,
    /// HTTP/2 ping period on the stream to the core: how fast a silently
    /// dead core connection is noticed and re-opened.
    pub core_keepalive: Duration,
    /// Load balancers in front of the gateway: a request from one of them
    /// names its client in `X-Forwarded-For` (the last address not itself
    /// a trusted proxy counts), or in a PROXY protocol header with
    /// `proxy_protocol`. From anyone else both are ignored.
    pub trusted_proxies: Vec<meridian_seams::net::Cidr>,
    /// Trusted proxies send a PROXY protocol v2 header first on every
    /// connection (an L4 load balancer).
    pub proxy_protocol: bool,
    /// Failed authentications (a bad or revoked token) per minute per
    /// client address; past them the address waits before any core work.
    pub auth_failures_per_minute: f64,
    /// WebSocket connections one gateway holds at most; past it a new one
    /// is answered 503 `unavailable` (clients go to another gateway).
    pub max_connections: usize,
    /// WebSocket upgrades one gateway accepts per second (sustained), and
    /// in a burst: a reconnect storm past them is answered 503
    /// `unavailable` with a `retry_after` spread over the next seconds,
    /// so it reaches the cores as a bounded stream instead of a wall.
    pub accepts_per_second: f64,
    /// See `accepts_per_second`.
    pub accept_burst: f64,
}

impl GatewayConfig {
    /// Defaults for `region`.
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            topology: meridian_wire::sites::Topology::unsharded(),
            max_frame_bytes: 128 * 1024,
            hard_max_frame_bytes: 1024 * 1024,
            max_payload_bytes: 64 * 1024,
            max_body_bytes: 256 * 1024,
            media_max_bytes: 100 * 1024 * 1024,
            sends_per_second: 50.0,
            send_burst: 200.0,
            requests_per_second: 20.0,
            request_burst: 100.0,
            connects_per_minute: 30.0,
            registrations_per_minute: 600.0,
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            core_keepalive: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            auth_failures_per_minute: 30.0,
            max_connections: 100_000,
            accepts_per_second: 5_000.0,
            accept_burst: 5_000.0,
        }
    }
}

/// Shared by every handler.
pub(crate) struct AppState {
    pub(crate) config: GatewayConfig,
    pub(crate) cores: cores::Cores,
    /// Turns true when the gateway stops: open WebSockets close with 1001
    /// ("going away") so their clients reconnect elsewhere at once.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    pub(crate) limits: limits::Limits,
    /// Tokens the cores refused lately.
    pub(crate) bad_tokens: auth::BadTokens,
    /// WebSocket connections open now.
    pub(crate) connections: std::sync::atomic::AtomicUsize,
    pub(crate) metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The operator's drain order.
    pub(crate) drain: drain::Drain,
}

/// A gateway's dependencies: the channels to every region's core, the
/// clock, and the Prometheus handle if metrics are recorded.
pub struct GatewayDeps {
    /// gRPC channels to each site's core (through the network seam), by
    /// site name, including this gateway's own region's sites.
    pub cores: BTreeMap<String, CoreChannels>,
    /// The injected clock.
    pub clock: SharedClock,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// Builds the router.
pub fn router(config: GatewayConfig, deps: GatewayDeps) -> Router {
    router_and_state(config, deps).0
}

fn router_and_state(config: GatewayConfig, deps: GatewayDeps) -> (Router, Arc<AppState>) {
    let state = Arc::new(AppState {
        stopping: tokio::sync::watch::channel(false).0,
        limits: limits::Limits::new(&config, deps.clock.clone()),
        bad_tokens: auth::BadTokens::new(deps.clock.clone()),
        connections: std::sync::atomic::AtomicUsize::new(0),
        cores: cores::Cores::start(&config.region, config.topology.clone(), deps.cores),
        config,
        metrics: deps.metrics,
        drain: drain::Drain::new(),
    });
    (
        rest::routes(state.clone())
            .merge(ws::routes(state.clone()))
            .merge(app::routes()),
        state,
    )
}

/// A gateway ready to serve: its router, and what the process running it
/// may watch (its readiness, for an admin listener).
pub struct Gateway {
    app: Router,
    state: Arc<AppState>,
}

impl Gateway {
    /// Builds the gateway and starts its session streams to the cores.
    pub fn new(config: GatewayConfig, deps: GatewayDeps) -> Self {
        let (app, state) = router_and_state(config, deps);
        Self { app, state }
    }

    /// What the process running it may ask of it: readiness, drain.
    pub fn control(&self) -> GatewayControl {
        GatewayControl(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn serve(
        self,
        listener: Box<dyn Listener>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state;
        axum::serve(
            AxumListener::new(listener),
            self.app
                .into_make_service_with_connect_info::<meridian_seams::net::PeerAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            state.stopping.send_replace(true);
        })
        .await
    }
}

/// What the process running a gateway may ask of it (its admin listener).
#[derive(Clone)]
pub struct GatewayControl(Arc<AppState>);

impl GatewayControl {
    /// Ready or not, with the text `/readyz` answers: whether every site of
    /// its region has its session stream (and each site's), and whether it
    /// is draining.
    pub fn check(&self) -> (bool, String) {
        rest::health::readiness(&self.0)
    }

    /// Drains it: no new WebSockets, `/readyz` 503, and every client asked
    /// to leave (`go_away`) at a moment of its own within `spread`.
    pub fn drain(&self, spread: std::time::Duration) {
        tracing::info!(
            spread_ms = spread.as_millis() as u64,
            "draining: clients are asked to leave"
        );
        self.0.drain.start(spread);
    }

    /// Takes clients again; those not yet asked to leave stay.
    pub fn undrain(&self) {
        tracing::info!("drain cancelled");
        self.0.drain.stop();
    }

    /// WebSocket connections open now.
    pub fn connections(&self) -> usize {
        self.0
            .connections
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Serves the gateway on `listener` until `shutdown` resolves.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: Box<dyn Listener>,
    config: GatewayConfig,
    deps: GatewayDeps,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    Gateway::new(config, deps).serve(listener, shutdown).await
}
