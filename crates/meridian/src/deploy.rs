//! Running regions: `meridian dev` (every region of `regions/` in one
//! process, or one with `--region`), `meridian core` and `meridian gateway`
//! (one region's part as its own process).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meridian_core::CoreConfig;
use meridian_gateway::GatewayConfig;
use meridian_media::{EmbeddedS3, S3Target};
use meridian_region::config::{Deployment, RegionConfig};
use meridian_region::media;
use meridian_region::{
    CoreOptions, GatewayOptions, Listen, LogChoice, RegionOptions, StoreChoice, start_core,
    start_gateway, start_regions,
};
use meridian_seams::net::TokioNetwork;
use meridian_seams::{Rng, SharedClock, SystemClock};

/// Which addresses of the region files to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Loopback ports of each file's `[local]` table.
    Local,
    /// `[listen]` to bind, `[advertise]` to reach other regions.
    Production,
}

/// Which log carries replication in a local run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogKind {
    /// In each region's own store.
    Embedded,
    /// Each region's Kafka brokers (`--brokers`).
    Kafka,
}

/// Options shared by `dev`, `core` and `gateway`.
#[derive(clap::Args)]
pub struct Common {
    /// Directory of region files (one `<region>.toml` per region).
    #[arg(long, default_value = "regions", env = "MERIDIAN_REGIONS_DIR")]
    regions_dir: PathBuf,
    /// Which addresses of the region files to use.
    #[arg(long, value_enum, default_value = "local")]
    profile: Profile,
    /// Directory for durable state, one subdirectory per region.
    #[arg(long, default_value = "./data", env = "MERIDIAN_DATA_DIR")]
    data_dir: PathBuf,
    /// Retention of undelivered messages and history, seconds (default 30 days).
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    retention_secs: u64,
    /// Interval of the retention sweep, seconds.
    #[arg(long, default_value_t = 60)]
    sweep_secs: u64,
    /// Largest media upload, MiB.
    #[arg(long, default_value_t = 100)]
    media_max_mib: u64,
    /// Sends per second allowed per device (sustained).
    #[arg(long, default_value_t = 50.0)]
    send_rate: f64,
    /// Registrations per minute allowed per client IP address.
    #[arg(long, default_value_t = 600.0)]
    registrations_per_minute: f64,
    /// Runs this process's clock ahead (negative: behind) by this many
    /// milliseconds: for clock-skew drills.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_skew_ms: i64,
    /// Overrides every region's maximum clock offset, milliseconds.
    #[arg(long)]
    max_clock_offset_ms: Option<u64>,
    /// The replication log (local profile; the production profile uses the
    /// region files' `[log]`).
    #[arg(long, value_enum, default_value = "embedded")]
    log: LogKind,
    /// Kafka bootstrap servers with `--log kafka`: `REGION=HOST:PORT[,…]`,
    /// once per region, or one `HOST:PORT[,…]` for every region.
    #[arg(long)]
    brokers: Vec<String>,
}

/// `meridian dev`.
#[derive(clap::Args)]
pub struct DevArgs {
    #[command(flatten)]
    common: Common,
    /// Run only this region (default: every region of the directory).
    #[arg(long)]
    region: Option<String>,
    /// Client-facing address, overriding the region file (one region only).
    #[arg(long, env = "MERIDIAN_LISTEN")]
    listen: Option<SocketAddr>,
    /// Core gRPC address, overriding the region file (one region only).
    #[arg(long, env = "MERIDIAN_CORE_LISTEN")]
    core_listen: Option<SocketAddr>,
}

/// `meridian core` / `meridian gateway`.
#[derive(clap::Args)]
pub struct PartArgs {
    #[command(flatten)]
    common: Common,
    /// The region whose part to run.
    #[arg(long)]
    region: String,
    /// Listen address, overriding the region file.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve Prometheus `/metrics` here (the core's replication, store and
    /// clock metrics; a gateway serves its own on its client port).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

fn parse_addr(text: &str, what: &str) -> anyhow::Result<SocketAddr> {
    text.parse()
        .with_context(|| format!("{what} `{text}` is not an ip:port address"))
}

impl Common {
    fn deployment(&self) -> anyhow::Result<Deployment> {
        Deployment::load(&self.regions_dir)
    }

    fn clock(&self) -> SharedClock {
        Arc::new(SystemClock::with_skew(self.clock_skew_ms))
    }

    /// The address others use to reach `region`'s core.
    fn core_address(&self, region: &RegionConfig) -> String {
        match self.profile {
            Profile::Local => region.local.core.clone(),
            Profile::Production => region.advertise.core.clone(),
        }
    }

    /// The addresses `region` binds.
    fn binds(&self, region: &RegionConfig) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        let addresses = match self.profile {
            Profile::Local => &region.local,
            Profile::Production => &region.listen,
        };
        Ok((
            parse_addr(&addresses.gateway, "gateway address")?,
            parse_addr(&addresses.core, "core address")?,
        ))
    }

    fn core_config(&self, region: &RegionConfig) -> CoreConfig {
        let mut core = CoreConfig::new(region.name.clone());
        core.retention = Duration::from_secs(self.retention_secs);
        core.sweep_interval = Duration::from_secs(self.sweep_secs.max(1));
        core.media.max_bytes = self.media_max_mib.max(1) * 1024 * 1024;
        core.max_clock_offset = Duration::from_millis(
            self.max_clock_offset_ms
                .unwrap_or(region.clock.max_offset_ms),
        );
        core
    }

    fn gateway_config(&self, region: &RegionConfig) -> GatewayConfig {
        let mut gateway = GatewayConfig::new(region.name.clone());
        gateway.sends_per_second = self.send_rate;
        gateway.send_burst = self.send_rate.max(gateway.send_burst);
        gateway.registrations_per_minute = self.registrations_per_minute;
        gateway
    }

    fn store(&self, region: &RegionConfig) -> anyhow::Result<StoreChoice> {
        if region.store.engine == "foundationdb" {
            return foundationdb_store(region);
        }
        Ok(StoreChoice::Fjall(self.region_dir(region)))
    }

    fn log(&self, region: &RegionConfig) -> anyhow::Result<LogChoice> {
        let partitions = region.log.partitions;
        let kafka = match self.profile {
            Profile::Local => self.log == LogKind::Kafka,
            Profile::Production => region.log.kind == "kafka",
        };
        if !kafka {
            return Ok(LogChoice::Embedded { partitions });
        }
        let from_flags = self
            .brokers
            .iter()
            .find_map(|entry| match entry.split_once('=') {
                Some((name, brokers)) if name == region.name => Some(brokers.to_string()),
                Some(_) => None,
                None => Some(entry.clone()),
            });
        let brokers = match self.profile {
            Profile::Local => from_flags,
            Profile::Production => from_flags.or_else(|| region.log.brokers.clone()),
        }
        .with_context(|| format!("region {}: --log kafka needs --brokers", region.name))?;
        let mut config = meridian_replication::kafka::KafkaConfig::new(brokers, partitions);
        // Locally one broker per region holds each topic alone.
        config.replication_factor = match self.profile {
            Profile::Local => 1,
            Profile::Production => region.log.replication_factor,
        };
        Ok(LogChoice::Kafka(config))
    }

    /// The directory of `region`'s durable state.
    fn region_dir(&self, region: &RegionConfig) -> PathBuf {
        let dir = region
            .store
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&region.name));
        self.data_dir.join(dir)
    }

    /// Every region's bucket; with the local profile, also starts the
    /// embedded S3 servers of the regions in `serve` (their data beside the
    /// region's store). Without credentials in production, media is off
    /// (`media_unavailable`) and messaging runs.
    async fn media(
        &self,
        deployment: &Deployment,
        serve: &[String],
    ) -> anyhow::Result<(Vec<EmbeddedS3>, BTreeMap<String, S3Target>)> {
        let network = TokioNetwork::shared();
        let mut servers = Vec::new();
        let mut targets = BTreeMap::new();
        for region in deployment.regions.values() {
            let Some(s3) = &region.s3 else { continue };
            match self.profile {
                Profile::Local => {
                    let Some(addr) = &region.local.s3 else {
                        continue;
                    };
                    if serve.contains(&region.name) {
                        let listen = parse_addr(addr, "s3 address")?;
                        let dir = self.region_dir(region).join("s3");
                        let (server, target) =
                            media::start_embedded_s3(region, listen, &dir, &network).await?;
                        servers.push(server);
                        targets.insert(region.name.clone(), target);
                    } else if let Some(target) =
                        media::local_target(region, format!("http://{addr}"))
                    {
                        targets.insert(region.name.clone(), target);
                    }
                }
                Profile::Production => {
                    let (key, secret) = match media::credentials_from_env() {
                        Ok(credentials) => credentials,
                        Err(error) => {
                            tracing::warn!(%error, "media is off: no S3 credentials");
                            return Ok((servers, BTreeMap::new()));
                        }
                    };
                    targets.insert(
                        region.name.clone(),
                        S3Target {
                            endpoint: s3.endpoint.clone(),
                            aws_region: s3.signing_region(),
                            bucket: s3.bucket.clone(),
                            access_key_id: key,
                            secret_access_key: secret,
                        },
                    );
                }
            }
        }
        Ok((servers, targets))
    }

    /// The other regions' core addresses, as `region` reaches them.
    fn peers(&self, deployment: &Deployment, region: &str) -> BTreeMap<String, String> {
        deployment
            .peers_of(region)
            .into_iter()
            .filter_map(|peer| deployment.regions.get(peer))
            .map(|peer| (peer.name.clone(), self.core_address(peer)))
            .collect()
    }
}

/// The FoundationDB store of `region`, when this binary has the backend.
#[cfg(feature = "fdb")]
fn foundationdb_store(region: &RegionConfig) -> anyhow::Result<StoreChoice> {
    anyhow::ensure!(
        region.store.cluster_files.len() <= 1,
        "region {}: sharding users across {} FoundationDB clusters is not served yet (docs/foundationdb.md)",
        region.name,
        region.store.cluster_files.len()
    );
    let cluster_file = region
        .store
        .cluster_file
        .clone()
        .or_else(|| region.store.cluster_files.first().cloned())
        .with_context(|| format!("region {}: store.cluster_file is required", region.name))?;
    Ok(StoreChoice::FoundationDb(cluster_file))
}

#[cfg(not(feature = "fdb"))]
fn foundationdb_store(region: &RegionConfig) -> anyhow::Result<StoreChoice> {
    anyhow::bail!(
        "region {}: store engine `foundationdb` needs a binary built with `--features fdb`",
        region.name
    )
}

fn metrics_recorder() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")
}

/// Runs `meridian dev` until Ctrl-C or SIGTERM.
///
/// # Errors
/// Bad configuration, an unopenable store, an unbindable address.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let deployment = common.deployment()?;
    let names: Vec<String> = match &args.region {
        Some(region) => vec![deployment.region(region)?.name.clone()],
        None => deployment.regions.keys().cloned().collect(),
    };
    anyhow::ensure!(
        names.len() == 1 || (args.listen.is_none() && args.core_listen.is_none()),
        "--listen and --core-listen need --region (one region)"
    );
    let metrics = metrics_recorder()?;
    let rng = Rng::from_os().context("no entropy from the operating system")?;
    let clock = common.clock();
    let (s3_servers, s3_targets) = common.media(&deployment, &names).await?;
    let media_deps = media::media_deps(&s3_targets, &clock, &TokioNetwork::shared());
    let mut options = Vec::new();
    for name in &names {
        let region = deployment.region(name)?;
        let (gateway_listen, core_listen) = common.binds(region)?;
        options.push(RegionOptions {
            core: common.core_config(region),
            gateway: common.gateway_config(region),
            store: common.store(region)?,
            gateway_listen: args.listen.unwrap_or(gateway_listen),
            core_listen: Listen::Address(args.core_listen.unwrap_or(core_listen)),
            network: TokioNetwork::shared(),
            clock: clock.clone(),
            rng: Rng::seeded(rng.next_u64()),
            metrics: Some(metrics.clone()),
            // One region alone reaches its peers where the files say;
            // several in this process are peered by start_regions.
            peers: common.peers(&deployment, name),
            log: common.log(region)?,
            link: Default::default(),
            media: media_deps.clone(),
        });
    }
    let handles = if options.len() == 1 {
        let single = options.pop().context("one region")?;
        vec![meridian_region::start_region(single).await?]
    } else {
        start_regions(options).await?
    };
    println!("meridian dev: {} region(s) up", handles.len());
    for (name, region) in names.iter().zip(&handles) {
        let base = format!("http://{}", region.gateway_addr);
        println!("region {name}");
        println!("  REST      {base}/v1   (OpenAPI: {base}/v1/openapi.json)");
        println!("  WebSocket ws://{}/v1/ws", region.gateway_addr);
        println!("  health    {base}/healthz  {base}/readyz  {base}/metrics");
        println!("  core gRPC {}", region.core_addr);
        if let Some(target) = s3_targets.get(name) {
            let endpoint = target.endpoint.as_deref().unwrap_or("AWS S3");
            println!("  media     bucket {} at {endpoint}", target.bucket);
        }
    }
    println!("data in {}", common.data_dir.display());
    if let Some(first) = handles.first() {
        let base = format!("http://{}", first.gateway_addr);
        println!("try it:");
        println!("  cargo run -p meridian -- chat --url {base} register --name alice");
    }
    crate::shutdown_signal().await?;
    println!("stopping");
    for handle in handles {
        handle.stop().await;
    }
    for server in s3_servers {
        server.stop().await;
    }
    Ok(())
}

/// Runs one region's core (with its replication) until Ctrl-C or SIGTERM.
///
/// # Errors
/// As [`dev`].
pub async fn core(args: PartArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let deployment = common.deployment()?;
    let region = deployment.region(&args.region)?;
    let (_, core_listen) = common.binds(region)?;
    let metrics = metrics_recorder()?;
    if let Some(addr) = args.metrics_listen {
        let listener = TokioNetwork::shared()
            .bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener on {addr}"))?;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        );
        println!("metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(async move {
            let served = axum::serve(meridian_seams::net::AxumListener::new(listener), app).await;
            if let Err(error) = served {
                tracing::error!(%error, "metrics listener stopped");
            }
        });
    }
    let clock = common.clock();
    let (s3_servers, s3_targets) = common
        .media(&deployment, std::slice::from_ref(&region.name))
        .await?;
    let handle = start_core(CoreOptions {
        config: common.core_config(region),
        store: common.store(region)?,
        listen: Listen::Address(args.listen.unwrap_or(core_listen)),
        network: TokioNetwork::shared(),
        clock: clock.clone(),
        rng: Rng::from_os().context("no entropy from the operating system")?,
        sweep: true,
        peers: common.peers(&deployment, &region.name),
        log: common.log(region)?,
        link: Default::default(),
        media: media::media_deps(&s3_targets, &clock, &TokioNetwork::shared()),
    })
    .await?;
    println!("meridian core: region {} on {}", region.name, handle.addr);
    crate::shutdown_signal().await?;
    handle.stop().await;
    for server in s3_servers {
        server.stop().await;
    }
    Ok(())
}

/// Runs one region's gateway until Ctrl-C or SIGTERM.
///
/// # Errors
/// As [`dev`].
pub async fn gateway(args: PartArgs) -> anyhow::Result<()> {
    let common = &args.common;
    anyhow::ensure!(
        args.metrics_listen.is_none(),
        "a gateway serves /metrics on its client port; --metrics-listen is for `meridian core`"
    );
    let deployment = common.deployment()?;
    let region = deployment.region(&args.region)?;
    let (gateway_listen, _) = common.binds(region)?;
    let mut cores = common.peers(&deployment, &region.name);
    cores.insert(region.name.clone(), common.core_address(region));
    let handle = start_gateway(GatewayOptions {
        config: common.gateway_config(region),
        listen: args.listen.unwrap_or(gateway_listen),
        cores,
        network: TokioNetwork::shared(),
        clock: common.clock(),
        metrics: Some(metrics_recorder()?),
    })
    .await?;
    println!(
        "meridian gateway: region {} on http://{}",
        region.name, handle.addr
    );
    crate::shutdown_signal().await?;
    handle.stop().await;
    Ok(())
}
