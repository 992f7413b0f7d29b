//! Wiring for the `meridian` binary: starts a region's parts (store, core,
//! gateway, workers) from configuration and the injected seams. Holds no
//! domain logic; every piece comes from its own crate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

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

/// Everything a region needs to start.
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

/// A running region.
pub struct RegionHandle {
    /// Where clients connect (HTTP + WebSocket).
    pub gateway_addr: SocketAddr,
    /// Where gateways reach the core (gRPC).
    pub core_addr: SocketAddr,
    /// The domain service (for in-process tools and tests).
    pub messaging: Arc<Messaging>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RegionHandle {
    /// Stops accepting, lets open requests finish for up to five seconds,
    /// then ends whatever is left.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for mut task in self.tasks {
            if tokio::time::timeout(std::time::Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// Starts a region: store, core, gateway, retention worker.
///
/// # Errors
/// When the store cannot be opened or a listener cannot be bound.
pub async fn start_region(options: RegionOptions) -> anyhow::Result<RegionHandle> {
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
    let messaging = Messaging::new(db, ids, options.core.clone());
    let (shutdown, _) = watch::channel(false);
    let mut tasks = Vec::new();

    let core_listener = options
        .network
        .bind(options.core_listen)
        .await
        .with_context(|| format!("binding the core on {}", options.core_listen))?;
    let core_addr = core_listener.local_addr()?;
    let service = CoreService::new(messaging.clone()).into_server();
    let mut stop = shutdown.subscribe();
    tasks.push(tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming(core_listener), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "core server stopped");
        }
    }));

    let gateway_listener = options
        .network
        .bind(options.gateway_listen)
        .await
        .with_context(|| format!("binding the gateway on {}", options.gateway_listen))?;
    let gateway_addr = gateway_listener.local_addr()?;
    let channel = tonic_channel(options.network.clone(), &core_addr.to_string())?;
    let deps = GatewayDeps {
        core: channel,
        clock: options.clock.clone(),
        metrics: options.metrics.clone(),
    };
    let gateway_config = options.gateway.clone();
    let mut stop = shutdown.subscribe();
    tasks.push(tokio::spawn(async move {
        let result = meridian_gateway::serve(gateway_listener, gateway_config, deps, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
        if let Err(error) = result {
            tracing::error!(%error, "gateway stopped");
        }
    }));

    let sweeper = Sweeper::new(messaging.clone());
    let mut stop = shutdown.subscribe();
    tasks.push(tokio::spawn(async move {
        tokio::select! {
            biased;
            () = sweeper.run() => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }));

    Ok(RegionHandle {
        gateway_addr,
        core_addr,
        messaging,
        shutdown,
        tasks,
    })
}
