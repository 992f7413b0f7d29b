//! Wiring for the `meridian` binary: starts a region's parts (store, core,
//! gateway, workers) from configuration and the injected seams. Holds no
//! domain logic; every piece comes from its own crate.
//!
//! [`start_core`] and [`start_gateway`] start one part each over the network
//! seam, so the simulation can put them on separate simulated hosts;
//! [`start_region`] starts both in one process (`meridian dev`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meridian_core::retention::Sweeper;
use meridian_core::{CoreConfig, Messaging, grpc::CoreService};
use meridian_gateway::{GatewayConfig, GatewayDeps};
use meridian_kv::engine::Engine;
use meridian_kv::{Database, DatabaseOptions};
use meridian_seams::net::{SharedNetwork, incoming, tonic_channel};
use meridian_seams::{Ids, Rng, SharedClock};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which storage engine holds the region's state.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// fjall in this directory (durable).
    Fjall(PathBuf),
    /// In memory (tests, simulation); lost when the process exits.
    Memory(meridian_kv_memory::MemoryEngine),
}

/// Running servers and the signal that stops them.
struct Tasks {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Tasks {
    fn new() -> Self {
        Self {
            shutdown: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// A future that resolves when shutdown is signalled.
    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stop = self.shutdown.subscribe();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    }

    /// Stops accepting, lets open requests finish for up to five seconds,
    /// then ends whatever is left.
    async fn stop(self) {
        let _ = self.shutdown.send(true);
        for mut task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// What a core needs to start.
pub struct CoreOptions {
    /// Limits and region name.
    pub config: CoreConfig,
    /// Where state lives.
    pub store: StoreChoice,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// The network seam.
    pub network: SharedNetwork,
    /// The clock seam.
    pub clock: SharedClock,
    /// The randomness seam.
    pub rng: Rng,
    /// Whether this core runs the retention sweep in the background.
    pub sweep: bool,
}

/// A running core.
pub struct CoreHandle {
    /// Where gateways reach it.
    pub addr: SocketAddr,
    /// The domain service (for in-process tools and tests).
    pub messaging: Arc<Messaging>,
    tasks: Tasks,
}

impl CoreHandle {
    /// Stops serving, draining for up to five seconds.
    pub async fn stop(self) {
        self.tasks.stop().await;
    }
}

/// Opens the store and serves the core's gRPC service.
///
/// # Errors
/// When the store cannot be opened or the listener cannot be bound.
pub async fn start_core(options: CoreOptions) -> anyhow::Result<CoreHandle> {
    let engine: Arc<dyn Engine> = match &options.store {
        StoreChoice::Fjall(dir) => Arc::new(
            meridian_kv_fjall::FjallEngine::open(dir.join("store"))
                .with_context(|| format!("opening the store in {}", dir.display()))?,
        ),
        StoreChoice::Memory(engine) => Arc::new(engine.clone()),
    };
    let db = Database::open(
        engine,
        options.clock.clone(),
        options.rng.clone(),
        DatabaseOptions::default(),
    )
    .context("opening the database")?;
    let ids = Ids::new(options.clock.clone(), options.rng.clone());
    let messaging = Messaging::new(db, ids, options.config.clone());
    let mut tasks = Tasks::new();

    let listener = options
        .network
        .bind(options.listen)
        .await
        .with_context(|| format!("binding the core on {}", options.listen))?;
    let addr = listener.local_addr()?;
    let service = CoreService::new(messaging.clone()).into_server();
    let stopped = tasks.stopped();
    tasks.tasks.push(tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming(listener), stopped)
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "core server stopped");
        }
    }));
    if options.sweep {
        let sweeper = Sweeper::new(messaging.clone());
        let stopped = tasks.stopped();
        tasks.tasks.push(tokio::spawn(async move {
            tokio::select! {
                biased;
                () = sweeper.run() => {}
                () = stopped => {}
            }
        }));
    }
    Ok(CoreHandle {
        addr,
        messaging,
        tasks,
    })
}

/// What a gateway needs to start.
pub struct GatewayOptions {
    /// Limits.
    pub config: GatewayConfig,
    /// Client-facing listen address.
    pub listen: SocketAddr,
    /// The core's address (`host:port`).
    pub core: String,
    /// The network seam.
    pub network: SharedNetwork,
    /// The clock seam.
    pub clock: SharedClock,
    /// Renders `/metrics`, when a recorder is installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// A running gateway.
pub struct GatewayHandle {
    /// Where clients connect (HTTP + WebSocket).
    pub addr: SocketAddr,
    tasks: Tasks,
}

impl GatewayHandle {
    /// Stops serving, draining for up to five seconds.
    pub async fn stop(self) {
        self.tasks.stop().await;
    }
}

/// Serves the gateway, connected to its core through the network seam.
///
/// # Errors
/// When the listener cannot be bound or the core address is malformed.
pub async fn start_gateway(options: GatewayOptions) -> anyhow::Result<GatewayHandle> {
    let listener = options
        .network
        .bind(options.listen)
        .await
        .with_context(|| format!("binding the gateway on {}", options.listen))?;
    let addr = listener.local_addr()?;
    let deps = GatewayDeps {
        core: tonic_channel(
            options.network.clone(),
            &options.core,
            options.config.core_keepalive,
        )?,
        clock: options.clock,
        metrics: options.metrics,
    };
    let mut tasks = Tasks::new();
    let stopped = tasks.stopped();
    let config = options.config;
    tasks.tasks.push(tokio::spawn(async move {
        if let Err(error) = meridian_gateway::serve(listener, config, deps, stopped).await {
            tracing::error!(%error, "gateway stopped");
        }
    }));
    Ok(GatewayHandle { addr, tasks })
}

/// Everything a one-process region needs to start.
pub struct RegionOptions {
    /// Core limits and region name.
    pub core: CoreConfig,
    /// Gateway limits.
    pub gateway: GatewayConfig,
    /// Where state lives.
    pub store: StoreChoice,
    /// Gateway (client) listen address.
    pub gateway_listen: SocketAddr,
    /// Core (gRPC) listen address.
    pub core_listen: SocketAddr,
    /// The network seam.
    pub network: SharedNetwork,
    /// The clock seam.
    pub clock: SharedClock,
    /// The randomness seam.
    pub rng: Rng,
    /// Renders `/metrics`, when a recorder is installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// A running one-process region.
pub struct RegionHandle {
    /// Where clients connect (HTTP + WebSocket).
    pub gateway_addr: SocketAddr,
    /// Where gateways reach the core (gRPC).
    pub core_addr: SocketAddr,
    /// The domain service (for in-process tools and tests).
    pub messaging: Arc<Messaging>,
    core: CoreHandle,
    gateway: GatewayHandle,
}

impl RegionHandle {
    /// Stops the gateway, then the core, each draining for up to five seconds.
    pub async fn stop(self) {
        self.gateway.stop().await;
        self.core.stop().await;
    }
}

/// Starts a region in this process: store, core, gateway, retention worker.
///
/// # Errors
/// When the store cannot be opened or a listener cannot be bound.
pub async fn start_region(options: RegionOptions) -> anyhow::Result<RegionHandle> {
    let core = start_core(CoreOptions {
        config: options.core,
        store: options.store,
        listen: options.core_listen,
        network: options.network.clone(),
        clock: options.clock.clone(),
        rng: options.rng,
        sweep: true,
    })
    .await?;
    let gateway = start_gateway(GatewayOptions {
        config: options.gateway,
        listen: options.gateway_listen,
        core: core.addr.to_string(),
        network: options.network,
        clock: options.clock,
        metrics: options.metrics,
    })
    .await?;
    Ok(RegionHandle {
        gateway_addr: gateway.addr,
        core_addr: core.addr,
        messaging: core.messaging.clone(),
        core,
        gateway,
    })
}
