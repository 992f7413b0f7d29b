//! Wiring: starts a region's parts (store, core, replication, gateway,
//! workers) from configuration and the injected seams, and resolves a
//! deployment into that configuration. Holds no domain logic; every piece
//! comes from its own crate.
//!
//! - [`config`]: the region files ([`config::Deployment`]); regions are
//!   values, never globals.
//! - [`plan`]: region files plus the operator's choices resolved into what
//!   each site runs ([`plan::SitePlan`]: addresses, store and its
//!   directory, log, peers, core and gateway configuration) and where each
//!   region's bucket is. The `meridian` binary and the simulation both plan
//!   their sites here; the simulation then swaps in what it simulates.
//! - [`start_core`] and [`start_gateway`] start one part each over the
//!   network seam, so the simulation can put them on separate simulated
//!   hosts and `meridian core` / `meridian gateway` can run them as
//!   separate processes; [`start_region`] starts both in one process, and
//!   [`start_regions`] starts several regions in one process
//!   (`meridian dev`).
//! - [`identities`]: the service credentials a plan's regions run with
//!   (mutual TLS between gateways and cores, `meridian_identity`).
//! - [`local`]: the local profile's defaults: the shipped region files
//!   built in (so `meridian dev` runs from any directory) and the port
//!   offset that moves every local port.
//! - [`media`]: every region's bucket as a core sees it, and the embedded
//!   S3 server of local runs.
//! - [`terraform`]: the deployment's Terraform variables, from the same
//!   region files (`meridian terraform-vars`).
//!
//! The option types of the parts ([`CoreConfig`], [`GatewayConfig`],
//! [`KafkaConfig`], [`LinkConfig`], [`media::S3Target`], …) are re-exported
//! here, so callers wire a region through this crate alone.

pub mod config;
pub mod identities;
pub mod local;
pub mod media;
pub mod plan;
pub mod terraform;

/// Stops the FoundationDB client network before the process exits.
#[cfg(feature = "fdb")]
pub use meridian_kv_fdb::shutdown as shutdown_foundationdb;

pub use meridian_core::health::{HealthConfig, Readiness};
pub use meridian_core::{CoreConfig, MediaDeps};
pub use meridian_gateway::GatewayConfig;
pub use meridian_identity::{EdgeCredentials, ServiceCredentials};
pub use meridian_kv_memory::MemoryEngine;
pub use meridian_replication::kafka::KafkaConfig;
pub use meridian_replication::link::{LinkConfig, LinkStatus};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meridian_core::health;
use meridian_core::media_check::MediaChecker;
use meridian_core::peers::Peers;
use meridian_core::retention::Sweeper;
use meridian_core::{Messaging, ReplicationApplier, rpc::CoreService};
use meridian_gateway::{CoreChannels, GatewayDeps};
use meridian_identity::{AddressIdentities, AuthorizeLayer, Identity};
use meridian_kv::engine::Engine;
use meridian_kv::{Database, DatabaseOptions};
use meridian_replication::embedded::EmbeddedLog;
use meridian_replication::expiry::expire_periodically;
use meridian_replication::link::Link;
use meridian_replication::relay::Relay;
use meridian_replication::server::{LinkServer, LinkServerConfig};
use meridian_replication::{LogEpochs, SharedLog};
use meridian_seams::net::{
    Listener, SharedNetwork, incoming, proxy_protocol_listener, tls_listener, tonic_channel,
    tonic_channel_with_deadline,
};
use meridian_seams::{Ids, Rng, SharedClock};
use meridian_wire::sites::region_of_site;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the embedded log drops records past its age bound.
const LOG_EXPIRY_INTERVAL: Duration = Duration::from_secs(600);

/// Deadline of a unary call to a core (gateway → core, core → core).
const UNARY_DEADLINE: Duration = Duration::from_secs(5);

/// Which storage engine holds the region's state.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// fjall in this directory (durable).
    Fjall(PathBuf),
    /// fjall in this directory, fsynced only every interval: acknowledged
    /// work of the last interval is lost with the machine. For measuring
    /// what durability costs (`meridian dev --sync`), never the
    /// default.
    FjallFsyncEvery(PathBuf, std::time::Duration),
    /// In memory (tests, simulation); lost when the process exits.
    Memory(MemoryEngine),
    /// A FoundationDB cluster, by its cluster file.
    #[cfg(feature = "fdb")]
    FoundationDb(PathBuf),
}

/// Which durable log carries this region's outgoing changes.
#[derive(Debug, Clone)]
pub enum LogChoice {
    /// Kept in the region's own store.
    Embedded {
        /// Partitions per topic.
        partitions: u32,
    },
    /// The region's Kafka cluster.
    Kafka(KafkaConfig),
}

impl Default for LogChoice {
    fn default() -> Self {
        Self::Embedded { partitions: 4 }
    }
}

/// Where a server listens: an address to bind, or a listener already bound
/// (so several regions of one process can learn each other's ports first).
pub enum Listen {
    /// Bind this address (port 0 picks one).
    Address(SocketAddr),
    /// Serve this listener.
    Bound(Box<dyn Listener>),
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Self {
        Self::Address(addr)
    }
}

impl Listen {
    async fn into_listener(self, network: &SharedNetwork) -> anyhow::Result<Box<dyn Listener>> {
        match self {
            Self::Address(addr) => network
                .bind(addr)
                .await
                .with_context(|| format!("binding {addr}")),
            Self::Bound(listener) => Ok(listener),
        }
    }
}

/// Running servers and the signal that stops them.
struct Tasks {
    shutdown: Arc<watch::Sender<bool>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Tasks {
    fn new() -> Self {
        Self {
            shutdown: Arc::new(watch::channel(false).0),
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

    /// Runs `work` until shutdown.
    fn spawn_until_stopped(
        &mut self,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let stopped = self.shutdown.subscribe();
        self.tasks
            .push(tokio::spawn(meridian_seams::shutdown::until_shutdown(
                Some(stopped),
                work,
            )));
    }

    /// Stops accepting, lets open requests finish for up to five seconds,
    /// then ends whatever is left.
    async fn stop(self) {
        self.shutdown.send_replace(true);
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
    /// gRPC listen address (core and replication services).
    pub listen: Listen,
    /// The network seam.
    pub network: SharedNetwork,
    /// The clock seam.
    pub clock: SharedClock,
    /// The randomness seam.
    pub rng: Rng,
    /// Whether this core runs the retention sweep in the background.
    pub sweep: bool,
    /// The other regions' cores: region name → `host:port`.
    pub peers: BTreeMap<String, String>,
    /// The log carrying changes to other regions.
    pub log: LogChoice,
    /// Replication link timings.
    pub link: LinkConfig,
    /// Object storage: every region's bucket (none: media is refused with
    /// `media_unavailable`, messaging works).
    pub media: MediaDeps,
    /// The core's identity (`core.<region>`): mutual TLS on its server,
    /// towards other regions' cores and on replication links. `None` runs
    /// in plaintext with no caller checked (`--insecure-core`).
    pub tls: Option<ServiceCredentials>,
    /// How the store's watchdog looks at it.
    pub health: HealthConfig,
    /// Without `tls`: callers known by their address instead of trusted
    /// blindly, held to the same access table (the simulation, whose
    /// hosts' addresses are its own to give; `None` everywhere else).
    pub callers_by_address: Option<AddressIdentities>,
}

/// A running core.
pub struct CoreHandle {
    /// Where gateways and other regions reach it.
    pub addr: SocketAddr,
    /// The domain service (for in-process tools and tests).
    pub messaging: Arc<Messaging>,
    /// The status of each incoming replication link, by source region.
    pub links: BTreeMap<String, watch::Receiver<LinkStatus>>,
    /// Whether the core should get traffic (its store's health).
    pub readiness: watch::Receiver<Readiness>,
    tasks: Tasks,
}

impl CoreHandle {
    /// Stops serving, draining for up to five seconds.
    pub async fn stop(self) {
        self.tasks.stop().await;
    }

    /// Resolves when the core's store failed for good, with the reason.
    /// By then the core has stopped serving (fail-stop); the process
    /// should exit so that it restarts and recovers from the journal.
    pub fn store_failed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        store_failed(self.readiness.clone())
    }
}

/// Starts the core's watchdog, and the fail-stop it orders when
/// `health.stop_on_failure`: a failed store stops everything the core
/// serves, so gateways see it gone (and go unready) instead of every
/// write failing. Answers the core's readiness.
fn watch_health(
    tasks: &mut Tasks,
    messaging: Arc<Messaging>,
    health: HealthConfig,
) -> watch::Receiver<Readiness> {
    let stop_on_failure = health.stop_on_failure;
    let (readiness, watchdog) = health::watchdog(messaging, health);
    tasks.spawn_until_stopped(watchdog);
    if stop_on_failure {
        let shutdown = tasks.shutdown.clone();
        let failed = store_failed(readiness.clone());
        tasks.spawn_until_stopped(async move {
            let reason = failed.await;
            tracing::error!(%reason, "the core stops: its store failed");
            shutdown.send_replace(true);
        });
    }
    readiness
}

/// Resolves with the reason once `readiness` says the store failed.
async fn store_failed(mut readiness: watch::Receiver<Readiness>) -> String {
    loop {
        if let Readiness::StoreFailed { reason } = &*readiness.borrow_and_update() {
            return reason.clone();
        }
        if readiness.changed().await.is_err() {
            // The watchdog stopped with the core: never resolves.
            std::future::pending::<()>().await;
        }
    }
}

/// Opens the region's database over its store.
fn open_database(
    store: &StoreChoice,
    site: &str,
    clock: SharedClock,
    rng: Rng,
) -> anyhow::Result<Database> {
    let engine: Arc<dyn Engine> = match store {
        StoreChoice::Fjall(dir) => Arc::new(
            meridian_kv_fjall::FjallEngine::open(dir.join("store"))
                .with_context(|| format!("opening the store in {}", dir.display()))?,
        ),
        StoreChoice::FjallFsyncEvery(dir, interval) => Arc::new(
            meridian_kv_fjall::FjallEngine::open_with(
                dir.join("store"),
                meridian_kv_fjall::Durability::Every(*interval),
            )
            .with_context(|| format!("opening the store in {}", dir.display()))?,
        ),
        StoreChoice::Memory(engine) => Arc::new(engine.clone()),
        #[cfg(feature = "fdb")]
        StoreChoice::FoundationDb(cluster_file) => {
            return meridian_kv_fdb::open(Some(&cluster_file.display().to_string()), site, clock)
                .with_context(|| format!("opening FoundationDB via {}", cluster_file.display()));
        }
    };
    let options = DatabaseOptions {
        metrics_label: site.to_string(),
        ..DatabaseOptions::default()
    };
    Database::open(engine, clock, rng, options).context("opening the database")
}

/// Opens the store and serves the core's gRPC services (`Core` for
/// gateways, `Replication` for the other regions), the outbox relays
/// towards every peer region and the replication links from them.
///
/// # Errors
/// When the store cannot be opened or the listener cannot be bound.
pub async fn start_core(options: CoreOptions) -> anyhow::Result<CoreHandle> {
    let site = &options.config.region;
    let region = meridian_wire::sites::region_of_site(site);
    anyhow::ensure!(
        options.config.topology.sites_of(region).contains(site),
        "core {site}: not a site of region {region} in this deployment's topology ({} shard(s))",
        options.config.topology.shards_of(region)
    );
    if let Some(tls) = &options.tls {
        anyhow::ensure!(
            tls.identity() == &Identity::core(region),
            "core {site} runs with the credentials of {}, not core.{region}",
            tls.identity()
        );
    }
    let db = open_database(
        &options.store,
        site,
        options.clock.clone(),
        options.rng.clone(),
    )?;
    let ids = Ids::new(options.clock.clone(), options.rng.clone());
    let region = options.config.region.clone();
    let to_core = |site: &str| {
        options
            .tls
            .as_ref()
            .map(|tls| tls.client_tls(&Identity::core(region_of_site(site))))
    };
    let mut peer_channels = BTreeMap::new();
    for (peer, addr) in &options.peers {
        let channel = tonic_channel_with_deadline(
            options.network.clone(),
            addr,
            Duration::from_secs(10),
            Some(UNARY_DEADLINE),
            to_core(peer),
        )
        .with_context(|| format!("address of region {peer}: {addr}"))?;
        peer_channels.insert(peer.clone(), channel);
    }
    let messaging = Messaging::new(
        db.clone(),
        ids,
        options.config.clone(),
        Peers::new(peer_channels),
        options.media.clone(),
    );
    let log: SharedLog = match options.log {
        LogChoice::Embedded { partitions } => Arc::new(EmbeddedLog::new(
            db.clone(),
            options.clock.clone(),
            partitions,
        )),
        LogChoice::Kafka(config) => Arc::new(
            meridian_replication::kafka::KafkaLog::new(config).context("creating Kafka clients")?,
        ),
    };
    let mut tasks = Tasks::new();

    let listener = options.listen.into_listener(&options.network).await?;
    let addr = listener.local_addr()?;
    let core_service = CoreService::new(messaging.clone())
        .with_shutdown(tasks.shutdown.subscribe())
        .into_server();
    let link_service = LinkServer::new(
        region.clone(),
        options.peers.keys().cloned().collect(),
        log.clone(),
        LogEpochs::new(db.clone(), options.rng.clone()),
        options.clock.clone(),
        LinkServerConfig::default(),
    )
    .with_shutdown(tasks.shutdown.subscribe())
    .into_server();
    let stopped = tasks.stopped();
    let mut server = tonic::transport::Server::builder();
    let authorize = match &options.tls {
        Some(tls) => {
            server = server
                .tls_config(tls.server_tls())
                .context("the core's TLS configuration")?;
            AuthorizeLayer::mutual_tls()
        }
        None => match options.callers_by_address {
            Some(identities) => AuthorizeLayer::by_address(identities),
            None => {
                tracing::warn!(%region, "core serving without TLS: any caller that reaches {addr} is trusted");
                AuthorizeLayer::insecure()
            }
        },
    };
    tasks.tasks.push(tokio::spawn(async move {
        let result = server
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .initial_stream_window_size(meridian_seams::net::STREAM_WINDOW)
            .initial_connection_window_size(meridian_seams::net::CONNECTION_WINDOW)
            .layer(authorize)
            .add_service(core_service)
            .add_service(link_service)
            .serve_with_incoming_shutdown(incoming(listener), stopped)
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "core server stopped");
        }
    }));
    tasks.spawn_until_stopped(expire_periodically(
        log.clone(),
        region.clone(),
        options.peers.keys().cloned().collect(),
        LOG_EXPIRY_INTERVAL,
        options.clock.clone(),
    ));
    let mut links = BTreeMap::new();
    for (peer, peer_addr) in &options.peers {
        tasks.spawn_until_stopped(Relay::new(db.clone(), log.clone(), &region, peer.clone()).run());
        let link = Link::new(
            peer.clone(),
            region.clone(),
            peer_addr.clone(),
            options.network.clone(),
            options.clock.clone(),
            options.rng.clone(),
            Arc::new(ReplicationApplier::new(messaging.clone())),
            options.link.clone(),
        )
        .with_tls(to_core(peer));
        links.insert(peer.clone(), link.status());
        tasks.spawn_until_stopped(link.run());
    }
    if options.sweep {
        tasks.spawn_until_stopped(Sweeper::new(messaging.clone()).run());
    }
    let readiness = watch_health(&mut tasks, messaging.clone(), options.health);
    if options
        .media
        .buckets
        .contains_key(meridian_wire::sites::region_of_site(&region))
    {
        tasks.spawn_until_stopped(MediaChecker::new(messaging.clone()).run());
    }
    Ok(CoreHandle {
        addr,
        messaging,
        links,
        readiness,
        tasks,
    })
}

/// What a gateway needs to start.
pub struct GatewayOptions {
    /// Limits (and this gateway's region).
    pub config: GatewayConfig,
    /// Client-facing listen address.
    pub listen: SocketAddr,
    /// Every region's core, this gateway's own included: region → `host:port`.
    pub cores: BTreeMap<String, String>,
    /// The network seam.
    pub network: SharedNetwork,
    /// The clock seam.
    pub clock: SharedClock,
    /// Renders `/metrics`, when a recorder is installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The gateway's identity (`gateway.<region>`), presented to every
    /// core; `None` calls cores in plaintext.
    pub tls: Option<ServiceCredentials>,
    /// The certificate clients get TLS with; `None` serves plain HTTP.
    pub edge_tls: Option<EdgeCredentials>,
}

/// A running gateway.
pub struct GatewayHandle {
    /// Where clients connect (HTTP + WebSocket).
    pub addr: SocketAddr,
    /// Its readiness and drain, for an admin listener.
    pub control: meridian_gateway::GatewayControl,
    tasks: Tasks,
}

impl GatewayHandle {
    /// Stops serving, draining for up to five seconds.
    pub async fn stop(self) {
        self.tasks.stop().await;
    }
}

/// Serves the gateway, connected to every region's core through the
/// network seam.
///
/// # Errors
/// When the listener cannot be bound or a core address is malformed.
pub async fn start_gateway(options: GatewayOptions) -> anyhow::Result<GatewayHandle> {
    let mut listener = options
        .network
        .bind(options.listen)
        .await
        .with_context(|| format!("binding the gateway on {}", options.listen))?;
    let addr = listener.local_addr()?;
    // Bytes arrive as: the proxy's header, then TLS, then HTTP.
    if options.config.proxy_protocol {
        let trusted = options.config.trusted_proxies.clone().into();
        listener = proxy_protocol_listener(listener, trusted)?;
    }
    if let Some(edge) = &options.edge_tls {
        listener = tls_listener(listener, edge.server_config())?;
    }
    let keepalive = options.config.core_keepalive;
    if let Some(tls) = &options.tls {
        anyhow::ensure!(
            tls.identity() == &Identity::gateway(&options.config.region),
            "the gateway of {} runs with the credentials of {}",
            options.config.region,
            tls.identity()
        );
    }
    let mut cores = BTreeMap::new();
    for (site, core_addr) in &options.cores {
        let tls = options
            .tls
            .as_ref()
            .map(|tls| tls.client_tls(&Identity::core(region_of_site(site))));
        let channels = CoreChannels {
            unary: tonic_channel_with_deadline(
                options.network.clone(),
                core_addr,
                keepalive,
                Some(UNARY_DEADLINE),
                tls.clone(),
            )?,
            session: tonic_channel(options.network.clone(), core_addr, keepalive, tls)?,
        };
        cores.insert(site.clone(), channels);
    }
    for site in options.config.topology.sites_of(&options.config.region) {
        anyhow::ensure!(
            cores.contains_key(&site),
            "no core address for the gateway's own region's site {site}"
        );
    }
    let deps = GatewayDeps {
        cores,
        clock: options.clock,
        metrics: options.metrics,
    };
    let mut tasks = Tasks::new();
    let stopped = tasks.stopped();
    let gateway = meridian_gateway::Gateway::new(options.config, deps);
    let control = gateway.control();
    tasks.tasks.push(tokio::spawn(async move {
        if let Err(error) = gateway.serve(listener, stopped).await {
            tracing::error!(%error, "gateway stopped");
        }
    }));
    Ok(GatewayHandle {
        addr,
        control,
        tasks,
    })
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
    pub core_listen: Listen,
    /// The network seam.
    pub network: SharedNetwork,
    /// The clock seam.
    pub clock: SharedClock,
    /// The randomness seam.
    pub rng: Rng,
    /// Renders `/metrics`, when a recorder is installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The other regions' cores: region name → `host:port`.
    pub peers: BTreeMap<String, String>,
    /// The log carrying changes to other regions.
    pub log: LogChoice,
    /// Replication link timings.
    pub link: LinkConfig,
    /// Object storage.
    pub media: MediaDeps,
    /// The region's identities; `None` runs its core in plaintext.
    pub tls: Option<RegionCredentials>,
    /// The certificate the gateway serves clients TLS with.
    pub edge_tls: Option<EdgeCredentials>,
    /// How the core's watchdog looks at its store.
    pub health: HealthConfig,
}

/// A region's two identities, for a core and a gateway in one process.
#[derive(Debug, Clone)]
pub struct RegionCredentials {
    /// `core.<region>`.
    pub core: ServiceCredentials,
    /// `gateway.<region>`.
    pub gateway: ServiceCredentials,
}

impl RegionOptions {
    /// A single region named `region` on loopback ports chosen by the OS,
    /// with default limits.
    pub fn loopback(
        region: &str,
        store: StoreChoice,
        network: SharedNetwork,
        clock: SharedClock,
        rng: Rng,
    ) -> Self {
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            core: CoreConfig::new(region),
            gateway: GatewayConfig::new(region),
            store,
            gateway_listen: any,
            core_listen: Listen::Address(any),
            network,
            clock,
            rng,
            metrics: None,
            peers: BTreeMap::new(),
            log: LogChoice::default(),
            link: LinkConfig::default(),
            media: MediaDeps::default(),
            tls: None,
            edge_tls: None,
            health: HealthConfig::default(),
        }
    }
}

/// A running one-process region.
pub struct RegionHandle {
    /// Where clients connect (HTTP + WebSocket).
    pub gateway_addr: SocketAddr,
    /// Where gateways and other regions reach the core (gRPC).
    pub core_addr: SocketAddr,
    /// The domain service (for in-process tools and tests).
    pub messaging: Arc<Messaging>,
    /// The status of each incoming replication link, by source region.
    pub links: BTreeMap<String, watch::Receiver<LinkStatus>>,
    core: CoreHandle,
    gateway: GatewayHandle,
}

impl RegionHandle {
    /// Stops the gateway, then the core, each draining for up to five seconds.
    pub async fn stop(self) {
        self.gateway.stop().await;
        self.core.stop().await;
    }

    /// Whether the core should get traffic (its store's health).
    pub fn readiness(&self) -> watch::Receiver<Readiness> {
        self.core.readiness.clone()
    }

    /// The region's gateway: its readiness and drain, for an admin listener.
    pub fn gateway_control(&self) -> meridian_gateway::GatewayControl {
        self.gateway.control.clone()
    }

    /// As [`CoreHandle::store_failed`].
    pub fn store_failed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        self.core.store_failed()
    }
}

/// Starts a region in this process: store, core, replication, gateway,
/// retention worker.
///
/// # Errors
/// When the store cannot be opened or a listener cannot be bound.
pub async fn start_region(options: RegionOptions) -> anyhow::Result<RegionHandle> {
    let region = options.core.region.clone();
    let peers = options.peers.clone();
    let core = start_core(CoreOptions {
        config: options.core,
        store: options.store,
        listen: options.core_listen,
        network: options.network.clone(),
        clock: options.clock.clone(),
        rng: options.rng,
        sweep: true,
        peers: options.peers,
        log: options.log,
        link: options.link,
        media: options.media,
        tls: options.tls.as_ref().map(|tls| tls.core.clone()),
        health: options.health,
        callers_by_address: None,
    })
    .await?;
    let mut cores = peers;
    cores.insert(region, core.addr.to_string());
    let gateway = start_gateway(GatewayOptions {
        config: options.gateway,
        listen: options.gateway_listen,
        cores,
        network: options.network,
        clock: options.clock,
        metrics: options.metrics,
        tls: options.tls.map(|tls| tls.gateway),
        edge_tls: options.edge_tls,
    })
    .await?;
    Ok(RegionHandle {
        gateway_addr: gateway.addr,
        core_addr: core.addr,
        messaging: core.messaging.clone(),
        links: core.links.clone(),
        core,
        gateway,
    })
}

/// Starts several regions (or sites) in this process, each peered with all
/// the others. Their cores' listeners are bound first, so every one knows
/// the others' addresses even when ports are chosen by the OS. Each option's
/// `peers` gets the others' bound addresses, over what it had (a sharded
/// region started alone keeps its peers in other processes).
///
/// # Errors
/// When a store cannot be opened or a listener cannot be bound.
pub async fn start_regions(regions: Vec<RegionOptions>) -> anyhow::Result<Vec<RegionHandle>> {
    let mut bound = Vec::with_capacity(regions.len());
    let mut addrs = BTreeMap::new();
    for mut options in regions {
        let listen = std::mem::replace(
            &mut options.core_listen,
            Listen::Address(SocketAddr::from(([127, 0, 0, 1], 0))),
        );
        let listener = listen.into_listener(&options.network).await?;
        addrs.insert(
            options.core.region.clone(),
            listener.local_addr()?.to_string(),
        );
        options.core_listen = Listen::Bound(listener);
        bound.push(options);
    }
    let mut handles = Vec::with_capacity(bound.len());
    for mut options in bound {
        options.peers.extend(
            addrs
                .iter()
                .filter(|(region, _)| **region != options.core.region)
                .map(|(region, addr)| (region.clone(), addr.clone())),
        );
        handles.push(start_region(options).await?);
    }
    Ok(handles)
}
