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
use meridian_wire::sites::Topology;

/// One site: a region, or one shard of a sharded region, served by its own
/// core over its own store. Shard `i` binds and is reached at the region's
/// core and gateway ports + `i`.
struct Site<'a> {
    region: &'a RegionConfig,
    shard: u32,
    name: String,
}

/// The sites of `region`, in shard order.
fn sites<'a>(topology: &Topology, region: &'a RegionConfig) -> Vec<Site<'a>> {
    (0..topology.shards_of(&region.name))
        .map(|shard| Site {
            region,
            shard,
            name: topology.site_name(&region.name, shard),
        })
        .collect()
}

/// `host:port` with the port moved up by `shard`.
fn shifted(addr: &str, shard: u32) -> anyhow::Result<String> {
    if shard == 0 {
        return Ok(addr.to_string());
    }
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("`{addr}` has no port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("`{addr}` has no numeric port"))?;
    let port = port
        .checked_add(u16::try_from(shard)?)
        .with_context(|| format!("`{addr}`: no port for shard {shard}"))?;
    Ok(format!("{host}:{port}"))
}

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
    /// Run only this region (default: every region of the directory; a
    /// sharded region runs all its shards).
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
    /// `meridian core` of a sharded region: which shard (each shard is a
    /// core over its own store).
    #[arg(long, default_value_t = 0)]
    shard: u32,
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

    /// The address others use to reach `site`'s core.
    fn core_address(&self, site: &Site<'_>) -> anyhow::Result<String> {
        let base = match self.profile {
            Profile::Local => &site.region.local.core,
            Profile::Production => &site.region.advertise.core,
        };
        shifted(base, site.shard)
    }

    /// The addresses `site` binds (gateway, core).
    fn binds(&self, site: &Site<'_>) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        let addresses = match self.profile {
            Profile::Local => &site.region.local,
            Profile::Production => &site.region.listen,
        };
        Ok((
            parse_addr(&shifted(&addresses.gateway, site.shard)?, "gateway address")?,
            parse_addr(&shifted(&addresses.core, site.shard)?, "core address")?,
        ))
    }

    fn core_config(&self, topology: &Topology, site: &Site<'_>) -> CoreConfig {
        let region = site.region;
        let mut core = CoreConfig::new(site.name.clone());
        core.topology = topology.clone();
        core.retention = Duration::from_secs(self.retention_secs);
        core.sweep_interval = Duration::from_secs(self.sweep_secs.max(1));
        core.media.max_bytes = self.media_max_mib.max(1) * 1024 * 1024;
        core.max_clock_offset = Duration::from_millis(
            self.max_clock_offset_ms
                .unwrap_or(region.clock.max_offset_ms),
        );
        core
    }

    fn gateway_config(&self, topology: &Topology, region: &RegionConfig) -> GatewayConfig {
        let mut gateway = GatewayConfig::new(region.name.clone());
        gateway.topology = topology.clone();
        gateway.sends_per_second = self.send_rate;
        gateway.send_burst = self.send_rate.max(gateway.send_burst);
        gateway.registrations_per_minute = self.registrations_per_minute;
        gateway
    }

    fn store(&self, site: &Site<'_>) -> anyhow::Result<StoreChoice> {
        if site.region.store.engine == "foundationdb" {
            return foundationdb_store(site);
        }
        let dir = self.region_dir(site.region);
        if site.region.store.shard_count() <= 1 {
            return Ok(StoreChoice::Fjall(dir));
        }
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(format!("_{}", site.shard));
        Ok(StoreChoice::Fjall(dir.with_file_name(name)))
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

    /// Every other site's core address, as `site` reaches them: the sites
    /// of its peer regions and its own region's other shards.
    fn peers(
        &self,
        deployment: &Deployment,
        topology: &Topology,
        site: &Site<'_>,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let mut peers = BTreeMap::new();
        let regions = deployment
            .peers_of(&site.region.name)
            .into_iter()
            .filter_map(|peer| deployment.regions.get(peer))
            .chain(std::iter::once(site.region));
        for region in regions {
            for other in sites(topology, region) {
                if other.name != site.name {
                    peers.insert(other.name.clone(), self.core_address(&other)?);
                }
            }
        }
        Ok(peers)
    }
}

/// The FoundationDB store of `site`, when this binary has the backend: the
/// cluster of its shard.
#[cfg(feature = "fdb")]
fn foundationdb_store(site: &Site<'_>) -> anyhow::Result<StoreChoice> {
    let store = &site.region.store;
    let cluster_file = if store.cluster_files.len() > 1 {
        store.cluster_files.get(site.shard as usize).cloned()
    } else {
        store
            .cluster_file
            .clone()
            .or_else(|| store.cluster_files.first().cloned())
    }
    .with_context(|| {
        format!(
            "region {}: store.cluster_file is required",
            site.region.name
        )
    })?;
    Ok(StoreChoice::FoundationDb(cluster_file))
}

#[cfg(not(feature = "fdb"))]
fn foundationdb_store(site: &Site<'_>) -> anyhow::Result<StoreChoice> {
    anyhow::bail!(
        "region {}: store engine `foundationdb` needs a binary built with `--features fdb`",
        site.region.name
    )
}

/// Installs the process's Prometheus recorder and keeps it drained.
///
/// `install_recorder` leaves upkeep to the caller. Without it, every
/// histogram sample since the last scrape is kept in memory (unbounded if
/// nothing scrapes) and the next scrape folds them all at once: after a
/// minute at 5,000 msg/s that fold stalled delivery for 100–240 ms. Once a
/// second, on the blocking pool, each fold is small and never holds an async
/// worker.
fn metrics_recorder() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
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
    let topology = deployment.topology();
    let mut options = Vec::new();
    let mut site_names = Vec::new();
    for name in &names {
        let region = deployment.region(name)?;
        for site in sites(&topology, region) {
            anyhow::ensure!(
                site.shard == 0 || (args.listen.is_none() && args.core_listen.is_none()),
                "--listen and --core-listen need an unsharded region"
            );
            let (gateway_listen, core_listen) = common.binds(&site)?;
            options.push(RegionOptions {
                core: common.core_config(&topology, &site),
                gateway: common.gateway_config(&topology, region),
                store: common.store(&site)?,
                gateway_listen: args.listen.unwrap_or(gateway_listen),
                core_listen: Listen::Address(args.core_listen.unwrap_or(core_listen)),
                network: TokioNetwork::shared(),
                clock: clock.clone(),
                rng: Rng::seeded(rng.next_u64()),
                metrics: Some(metrics.clone()),
                // One site alone reaches its peers where the files say;
                // several in this process are peered by start_regions.
                peers: common.peers(&deployment, &topology, &site)?,
                log: common.log(region)?,
                link: Default::default(),
                media: media_deps.clone(),
            });
            site_names.push((name.clone(), site.name.clone()));
        }
    }
    let handles = if options.len() == 1 {
        let single = options.pop().context("one region")?;
        vec![meridian_region::start_region(single).await?]
    } else {
        start_regions(options).await?
    };
    println!("meridian dev: {} region(s) up", names.len());
    for ((name, site), region) in site_names.iter().zip(&handles) {
        let base = format!("http://{}", region.gateway_addr);
        if site == name {
            println!("region {name}");
        } else {
            println!("region {name}, shard {site}");
        }
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
    let topology = deployment.topology();
    let site = sites(&topology, region)
        .into_iter()
        .find(|site| site.shard == args.shard)
        .with_context(|| {
            format!(
                "region {} has {} shard(s); no shard {}",
                region.name,
                topology.shards_of(&region.name),
                args.shard
            )
        })?;
    let (_, core_listen) = common.binds(&site)?;
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
        // The region's local storage server runs with its first shard.
        .media(
            &deployment,
            if site.shard == 0 {
                std::slice::from_ref(&region.name)
            } else {
                &[]
            },
        )
        .await?;
    let handle = start_core(CoreOptions {
        config: common.core_config(&topology, &site),
        store: common.store(&site)?,
        listen: Listen::Address(args.listen.unwrap_or(core_listen)),
        network: TokioNetwork::shared(),
        clock: clock.clone(),
        rng: Rng::from_os().context("no entropy from the operating system")?,
        sweep: true,
        peers: common.peers(&deployment, &topology, &site)?,
        log: common.log(region)?,
        link: Default::default(),
        media: media::media_deps(&s3_targets, &clock, &TokioNetwork::shared()),
    })
    .await?;
    println!("meridian core: site {} on {}", site.name, handle.addr);
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
    anyhow::ensure!(
        args.shard == 0,
        "a gateway serves every shard of its region; --shard is for `meridian core`"
    );
    let deployment = common.deployment()?;
    let region = deployment.region(&args.region)?;
    let topology = deployment.topology();
    let first = sites(&topology, region)
        .into_iter()
        .next()
        .context("a region has a site")?;
    let (gateway_listen, _) = common.binds(&first)?;
    let mut cores = common.peers(&deployment, &topology, &first)?;
    cores.insert(first.name.clone(), common.core_address(&first)?);
    let handle = start_gateway(GatewayOptions {
        config: common.gateway_config(&topology, region),
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
