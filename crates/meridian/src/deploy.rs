//! Running regions: `meridian dev` (every region of `regions/` in one
//! process, or one with `--region`), `meridian core` and `meridian gateway`
//! (one region's part as its own process). The flags become a
//! [`meridian_region::plan::Plan`], which says what each site runs; this
//! file starts it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use meridian_region::config::Deployment;
use meridian_region::identities::Identities;
use meridian_region::plan::{self, Plan, PlanOptions};
use meridian_region::{
    CoreOptions, GatewayHandle, GatewayOptions, Listen, RegionOptions, media, start_core,
    start_gateway, start_region, start_regions,
};
use meridian_seams::net::{SharedNetwork, TokioNetwork};
use meridian_seams::{Rng, SharedClock, SystemClock};

use crate::metrics;

/// Which addresses of the region files to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Loopback ports of each file's `[local]` table.
    Local,
    /// `[listen]` to bind, `[advertise]` to reach other regions.
    Production,
}

/// When the stores fsync (`--sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Every group commit holding a send is fsynced before any of its
    /// sends is acknowledged: durable, the default.
    #[default]
    Commit,
    /// NOT DURABLE: the stores fsync every this many milliseconds, so a
    /// machine crash loses up to that much acknowledged work.
    EveryMs(u64),
}

impl SyncPolicy {
    /// The longest interval `<N>ms` takes: beyond it a crash would lose
    /// more than any measurement needs relaxed.
    const MAX_MS: u64 = 10_000;

    /// The fsync interval, or `None` when every commit is fsynced.
    pub fn every_ms(self) -> Option<u64> {
        match self {
            Self::Commit => None,
            Self::EveryMs(ms) => Some(ms),
        }
    }
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "commit" {
            return Ok(Self::Commit);
        }
        let expected = || {
            format!(
                "expected `commit` or `<N>ms` with N from 1 to {} (e.g. `5ms`), got `{text}`",
                Self::MAX_MS
            )
        };
        let digits = text.strip_suffix("ms").ok_or_else(expected)?;
        match digits.parse::<u64>() {
            Ok(ms) if (1..=Self::MAX_MS).contains(&ms) && !digits.starts_with('+') => {
                Ok(Self::EveryMs(ms))
            }
            _ => Err(expected()),
        }
    }
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Commit => f.write_str("commit"),
            Self::EveryMs(ms) => write!(f, "{ms}ms"),
        }
    }
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
    /// Default: `./regions` where it exists; else, with the local profile,
    /// the built-in local regions (us-east, eu-west, ap-southeast), written
    /// to `<data-dir>/regions` (files already there are kept).
    #[arg(long, env = "MERIDIAN_REGIONS_DIR")]
    regions_dir: Option<PathBuf>,
    /// With the local profile, adds this to every local port (gateways,
    /// cores, S3, gateway admin listeners, GeoDNS), so two local
    /// deployments run side by side.
    #[arg(long, default_value_t = 0, env = "MERIDIAN_PORT_OFFSET")]
    port_offset: u16,
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
    /// Authenticated REST requests per second allowed per device
    /// (sustained; the burst is the larger of this and 100).
    #[arg(long, default_value_t = 20.0)]
    request_rate: f64,
    /// Failed authentications (bad or revoked tokens) per minute allowed
    /// per client IP address.
    #[arg(long, default_value_t = 30.0)]
    auth_failures_per_minute: f64,
    /// When the stores fsync: `commit` (the default: every group commit
    /// holding a send, before any of it is acknowledged) or `<N>ms`, NOT
    /// DURABLE: every N milliseconds, so a machine crash (not a process
    /// crash) loses up to that much acknowledged work. `<N>ms` is for
    /// measuring what durability costs (`meridian bench --sync`).
    #[arg(long, default_value_t = SyncPolicy::Commit)]
    sync: SyncPolicy,
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
    /// Run cores in plaintext, trusting every caller that reaches their
    /// port, whatever the region files' `[tls]` say. Only on a network
    /// nobody else reaches.
    #[arg(long, env = "MERIDIAN_INSECURE_CORE")]
    insecure_core: bool,
    /// Reach a site's core at `HOST:PORT` instead of where the region
    /// files say (`SITE=HOST:PORT`, repeatable): a path through a proxy of
    /// this process's own, as the chaos suite gives each region pair.
    #[arg(long = "reach", value_parser = parse_reach)]
    reach: Vec<(String, String)>,
    /// Gateways per region with the local profile: the first on the
    /// region file's `[local] gateway`, the others on the next loopback
    /// addresses (127.0.1.1, 127.0.1.2, …), same port.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=32))]
    gateways: u8,
}

/// `SITE=HOST:PORT` of `--reach`.
fn parse_reach(text: &str) -> Result<(String, String), String> {
    let (site, address) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected SITE=HOST:PORT"))?;
    let port = address.rsplit_once(':').map(|(_, port)| port);
    if site.is_empty() || port.is_none_or(|port| port.parse::<u16>().is_err()) {
        return Err(format!("{text:?}: expected SITE=HOST:PORT"));
    }
    Ok((site.to_string(), address.to_string()))
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
    /// Serve GeoDNS here (UDP and TCP). Default: 127.0.0.1:8053 when the
    /// process runs every region (skipped, with a warning, if that port is
    /// taken); none when it runs one region of several.
    #[arg(long)]
    dns_listen: Option<SocketAddr>,
    /// Serve no GeoDNS.
    #[arg(long, conflicts_with = "dns_listen")]
    no_dns: bool,
    #[command(flatten)]
    dns: crate::geodns::DnsOptions,
}

impl DevArgs {
    /// Whether `--listen` or `--core-listen` override the region files,
    /// refused where they would be ambiguous.
    fn check_overrides(&self, regions: usize) -> anyhow::Result<bool> {
        let overridden = self.listen.is_some() || self.core_listen.is_some();
        anyhow::ensure!(
            regions == 1 || !overridden,
            "--listen and --core-listen need --region (one region)"
        );
        anyhow::ensure!(
            self.listen.is_none() || self.common.gateways == 1,
            "--listen places one gateway; --gateways places several on the region files' addresses"
        );
        Ok(overridden)
    }
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
    /// `meridian gateway` with the local profile: which of the region's
    /// gateways this is (1-based; see `--gateways`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=32))]
    index: u8,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` here, in
    /// plaintext for probes and scrapers. A core's `/readyz` is its store's
    /// health; a gateway's, whether it reaches its region's core (as on its
    /// client port, which then serves no `/metrics`).
    #[arg(long, alias = "metrics-listen")]
    admin_listen: Option<SocketAddr>,
}

impl Common {
    /// The region files resolved with these flags.
    pub(crate) fn plan(&self) -> anyhow::Result<Plan> {
        let mut deployment = Deployment::load(&self.regions_dir()?)?;
        if self.profile == Profile::Local {
            deployment.shift_local_ports(self.port_offset)?;
        }
        Ok(Plan::new(deployment, self.options()))
    }

    /// Where the region files are: `--regions-dir`, else `./regions`, else
    /// (local profile) the built-in ones under the data directory.
    fn regions_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.regions_dir {
            return Ok(dir.clone());
        }
        let here = PathBuf::from("regions");
        if here.is_dir() || self.profile == Profile::Production {
            return Ok(here);
        }
        let builtin = self.data_dir.join("regions");
        meridian_region::local::write_builtin_regions(&builtin)?;
        Ok(builtin)
    }

    /// `port` moved by `--port-offset` (local profile).
    pub(crate) fn local_port(&self, port: u16) -> anyhow::Result<u16> {
        meridian_region::local::shift_port(port, self.port_offset, "local")
    }

    /// What the plan takes from these flags.
    fn options(&self) -> PlanOptions {
        PlanOptions {
            profile: match self.profile {
                Profile::Local => plan::Profile::Local,
                Profile::Production => plan::Profile::Production,
            },
            data_dir: self.data_dir.clone(),
            retention_secs: self.retention_secs,
            sweep_secs: self.sweep_secs,
            media_max_mib: self.media_max_mib,
            send_rate: self.send_rate,
            registrations_per_minute: self.registrations_per_minute,
            request_rate: self.request_rate,
            auth_failures_per_minute: self.auth_failures_per_minute,
            fsync_every_ms: self.sync.every_ms(),
            max_clock_offset_ms: self.max_clock_offset_ms,
            log: match self.log {
                LogKind::Embedded => plan::LogKind::Embedded,
                LogKind::Kafka => plan::LogKind::Kafka,
            },
            brokers: self.brokers.clone(),
            insecure_core: self.insecure_core,
            reach: self.reach.iter().cloned().collect(),
            gateways: self.gateways,
        }
    }

    fn clock(&self) -> SharedClock {
        Arc::new(SystemClock::with_skew(self.clock_skew_ms))
    }
}

/// The warning `--sync <N>ms` earns, as a line of its own.
fn not_durable(sync: SyncPolicy) -> String {
    sync.every_ms().map_or_else(String::new, |ms| {
        format!(
            "\nNOT DURABLE: stores fsync every {ms} ms, not at every commit (--sync {sync}): a machine crash loses acknowledged sends"
        )
    })
}

/// Runs `meridian dev` until Ctrl-C or SIGTERM.
///
/// # Errors
/// Bad configuration, an unopenable store, an unbindable address.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let plan = args.common.plan()?;
    let deployment = plan.deployment();
    let names: Vec<String> = match &args.region {
        Some(region) => vec![deployment.region(region)?.name.clone()],
        None => deployment.regions.keys().cloned().collect(),
    };
    let overridden = args.check_overrides(names.len())?;
    let metrics = metrics::recorder()?;
    let clock = args.common.clock();
    let network = TokioNetwork::shared();
    // Credentials first: a region refused for want of them starts nothing.
    let identities = Identities::new(&plan);
    let mut credentials = std::collections::BTreeMap::new();
    let mut edges = std::collections::BTreeMap::new();
    for name in &names {
        let region = deployment.region(name)?;
        if names.len() < deployment.regions.len() {
            // The other regions run in other processes.
            separate_process_tls(&identities, region)?;
        }
        credentials.insert(name.clone(), identities.region(region)?);
        edges.insert(name.clone(), identities.edge(region)?);
    }
    let (s3_servers, s3_targets) = plan.start_media(&names, &network).await?;
    let media_deps = media::media_deps(&s3_targets, &clock, &network);
    let mut options = Vec::new();
    let mut site_names = Vec::new();
    for name in &names {
        for site in plan.sites_of(deployment.region(name)?) {
            anyhow::ensure!(
                site.shard == 0 || !overridden,
                "--listen and --core-listen need an unsharded region"
            );
            let planned = plan.site_plan(&site)?;
            site_names.push((name.clone(), planned.name.clone()));
            options.push(RegionOptions {
                core: planned.core,
                gateway: planned.gateway,
                store: planned.store,
                gateway_listen: args.listen.unwrap_or(planned.gateway_listen),
                core_listen: Listen::Address(args.core_listen.unwrap_or(planned.core_listen)),
                network: network.clone(),
                clock: clock.clone(),
                // Each region its own generator from the operating
                // system: tokens are drawn from it.
                rng: Rng::from_os().context("no entropy from the operating system")?,
                metrics: Some(metrics.clone()),
                // One site alone reaches its peers where the files say;
                // several in this process are peered by start_regions.
                peers: planned.peers,
                log: planned.log,
                link: Default::default(),
                media: media_deps.clone(),
                tls: credentials.get(name).cloned().flatten(),
                edge_tls: edges.get(name).cloned().flatten(),
                health: Default::default(),
            });
        }
    }
    let handles = if options.len() == 1 {
        let single = options.pop().context("one region")?;
        vec![start_region(single).await?]
    } else {
        start_regions(options).await?
    };
    let extra_gateways = start_extra_gateways(
        &plan,
        &names,
        &identities,
        &edges,
        (&network, &clock, &metrics),
    )
    .await?;
    serve_gateway_admins(&plan, &site_names, &handles, &extra_gateways, &metrics).await?;
    let geodns = dev_geodns(&args, &plan, names.len() == deployment.regions.len()).await?;
    println!(
        "meridian dev: {} region(s) up{}",
        names.len(),
        not_durable(args.common.sync)
    );
    for ((name, site), region) in site_names.iter().zip(&handles) {
        let secure = edges.get(name).is_some_and(Option::is_some);
        let (http, ws) = if secure {
            ("https", "wss")
        } else {
            ("http", "ws")
        };
        let base = format!("{http}://{}", region.gateway_addr);
        if site == name {
            println!("region {name}");
        } else {
            println!("region {name}, shard {site}");
        }
        println!("  REST      {base}/v1   (OpenAPI: {base}/v1/openapi.json)");
        if let Some(more) = extra_gateways.get(name).filter(|more| !more.is_empty()) {
            let others: Vec<String> = more
                .iter()
                .map(|g| format!("{http}://{}", g.addr))
                .collect();
            println!("  also      {}", others.join(" "));
        }
        println!("  WebSocket {ws}://{}/v1/ws", region.gateway_addr);
        println!("  web app   {base}/app");
        println!("  health    {base}/healthz  {base}/readyz  {base}/metrics");
        let security = match identities.is_ephemeral(deployment.region(name)?) {
            _ if args.common.insecure_core => "plaintext, callers unchecked (--insecure-core)",
            true => "mutual TLS, identities of an in-memory CA",
            false => "mutual TLS",
        };
        println!("  core gRPC {} ({security})", region.core_addr);
        if let Some(target) = s3_targets.get(name) {
            let endpoint = target.endpoint.as_deref().unwrap_or("AWS S3");
            println!("  media     bucket {} at {endpoint}", target.bucket);
        }
    }
    if let Some((_, addr)) = &geodns {
        crate::geodns::print_usage(*addr, &args.dns);
    }
    println!("data in {}", args.common.data_dir.display());
    if let (Some(first), Some((name, _))) = (handles.first(), site_names.first()) {
        let secure = edges.get(name).is_some_and(Option::is_some);
        print_try_it(first.gateway_addr, secure);
    }
    // Fail-stop, as `meridian core`: a region whose store failed has
    // stopped its core; the process exits non-zero.
    let failures = handles.iter().zip(&site_names).map(|(handle, (_, site))| {
        let failed = handle.store_failed();
        let site = site.clone();
        Box::pin(async move { (site, failed.await) })
    });
    let failed = tokio::select! {
        signal = crate::shutdown_signal() => {
            signal?;
            None
        }
        ((site, reason), _, _) = futures::future::select_all(failures) => Some((site, reason)),
    };
    println!("stopping");
    if let Some((running, _)) = geodns {
        running.stop().await;
    }
    for gateway in extra_gateways.into_values().flatten() {
        gateway.stop().await;
    }
    for handle in handles {
        handle.stop().await;
    }
    for server in s3_servers {
        server.stop().await;
    }
    match failed {
        None => Ok(()),
        Some((site, reason)) => {
            anyhow::bail!("site {site}: the store failed, core stopped: {reason}")
        }
    }
}

/// Each gateway's admin listener (`meridian dev`), on its own address at
/// the port its region file gives (`[edge] gateway_admin_port`), if any.
async fn serve_gateway_admins(
    plan: &Plan,
    site_names: &[(String, String)],
    handles: &[meridian_region::RegionHandle],
    extra_gateways: &std::collections::BTreeMap<String, Vec<GatewayHandle>>,
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let mut controls = Vec::new();
    for ((name, _), region) in site_names.iter().zip(handles) {
        controls.push((name, region.gateway_addr, region.gateway_control()));
        for gateway in extra_gateways.get(name).into_iter().flatten() {
            controls.push((name, gateway.addr, gateway.control.clone()));
        }
    }
    for (region, addr, control) in controls {
        if let Some(admin) = plan.gateway_admin(plan.deployment().region(region)?, addr) {
            let ready = control.clone();
            metrics::serve_admin(
                admin,
                metrics.clone(),
                Arc::new(move || ready.check()),
                Some(control),
            )
            .await?;
        }
    }
    Ok(())
}

/// The first command to try against `meridian dev`.
fn print_try_it(gateway: SocketAddr, secure: bool) {
    let base = format!("{}://{gateway}", if secure { "https" } else { "http" });
    println!("try it:");
    println!("  cargo run -p meridian -- chat --url {base} register --name alice");
}

/// The GeoDNS server of `meridian dev`: on `--dns-listen`; else on
/// 127.0.0.1:8053 when the process runs every region (skipped with a
/// warning when that port is taken); else none.
async fn dev_geodns(
    args: &DevArgs,
    plan: &Plan,
    every_region: bool,
) -> anyhow::Result<Option<(meridian_geodns::Running, SocketAddr)>> {
    if args.no_dns {
        return Ok(None);
    }
    if let Some(listen) = args.dns_listen {
        return Ok(Some(
            crate::geodns::start(plan, None, listen, &args.dns).await?,
        ));
    }
    if !every_region {
        return Ok(None);
    }
    let listen = SocketAddr::from(([127, 0, 0, 1], args.common.local_port(8053)?));
    match crate::geodns::start(plan, None, listen, &args.dns).await {
        Ok(running) => Ok(Some(running)),
        Err(error) => {
            tracing::warn!(%error, "GeoDNS not started (pass --dns-listen or --no-dns)");
            Ok(None)
        }
    }
}

/// Gateways 2..=N of each region `meridian dev` runs (`--gateways`), on
/// the next loopback addresses; the first is the region's own.
async fn start_extra_gateways(
    plan: &Plan,
    names: &[String],
    identities: &Identities<'_>,
    edges: &std::collections::BTreeMap<String, Option<meridian_region::EdgeCredentials>>,
    (network, clock, metrics): (
        &SharedNetwork,
        &SharedClock,
        &metrics_exporter_prometheus::PrometheusHandle,
    ),
) -> anyhow::Result<std::collections::BTreeMap<String, Vec<GatewayHandle>>> {
    let mut started = std::collections::BTreeMap::new();
    for name in names {
        let region = plan.deployment().region(name)?;
        let mut gateways = Vec::new();
        for index in 2..=plan.options().gateways {
            let planned = plan.gateway_plan(region)?;
            gateways.push(
                start_gateway(GatewayOptions {
                    config: planned.config,
                    listen: plan.local_gateway(region, index)?,
                    cores: planned.cores,
                    network: network.clone(),
                    clock: clock.clone(),
                    metrics: Some(metrics.clone()),
                    tls: identities.gateway(region)?,
                    edge_tls: edges.get(name).cloned().flatten(),
                })
                .await?,
            );
        }
        started.insert(name.clone(), gateways);
    }
    Ok(started)
}

/// Runs one region's core (with its replication) until Ctrl-C or SIGTERM.
///
/// # Errors
/// As [`dev`].
pub async fn core(args: PartArgs) -> anyhow::Result<()> {
    let plan = args.common.plan()?;
    let site = plan.site(&args.region, args.shard)?;
    let identities = Identities::new(&plan);
    separate_process_tls(&identities, site.region)?;
    let tls = identities.core(site.region)?;
    let (_, core_listen) = plan.binds(&site)?;
    let metrics = metrics::recorder()?;
    let clock = args.common.clock();
    let network = TokioNetwork::shared();
    // The region's local storage server runs with its first shard.
    let serve = if site.shard == 0 {
        std::slice::from_ref(&site.region.name)
    } else {
        &[]
    };
    let (s3_servers, s3_targets) = plan.start_media(serve, &network).await?;
    let planned = plan.site_plan(&site)?;
    let handle = start_core(CoreOptions {
        config: planned.core,
        store: planned.store,
        listen: Listen::Address(args.listen.unwrap_or(core_listen)),
        network: network.clone(),
        clock: clock.clone(),
        rng: Rng::from_os().context("no entropy from the operating system")?,
        sweep: true,
        peers: planned.peers,
        log: planned.log,
        link: Default::default(),
        media: media::media_deps(&s3_targets, &clock, &network),
        tls,
        health: Default::default(),
        callers_by_address: None,
    })
    .await?;
    if let Some(addr) = args.admin_listen {
        metrics::serve_admin(
            addr,
            metrics,
            metrics::core_readiness(handle.readiness.clone()),
            None,
        )
        .await?;
    }
    println!(
        "meridian core: site {} on {}{}",
        site.name,
        handle.addr,
        not_durable(args.common.sync)
    );
    // Fail-stop: a failed store has already stopped the core; the process
    // exits non-zero so that its supervisor restarts it, and the restart
    // recovers the store from its journal.
    let failed = tokio::select! {
        signal = crate::shutdown_signal() => {
            signal?;
            None
        }
        reason = handle.store_failed() => Some(reason),
    };
    handle.stop().await;
    for server in s3_servers {
        server.stop().await;
    }
    match failed {
        None => Ok(()),
        Some(reason) => anyhow::bail!(
            "site {}: the store failed, core stopped: {reason}",
            site.name
        ),
    }
}

/// Runs one region's gateway until Ctrl-C or SIGTERM.
///
/// # Errors
/// As [`dev`].
pub async fn gateway(args: PartArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.shard == 0,
        "a gateway serves every shard of its region; --shard is for `meridian core`"
    );
    let plan = args.common.plan()?;
    let region = plan.deployment().region(&args.region)?;
    let planned = plan.gateway_plan(region)?;
    let listen = match (args.listen, args.index) {
        (Some(listen), _) => listen,
        (None, 1) => planned.listen,
        (None, index) => {
            anyhow::ensure!(
                plan.options().profile == plan::Profile::Local,
                "--index places a gateway on the local profile's addresses; in production, --listen"
            );
            plan.local_gateway(region, index)?
        }
    };
    let identities = Identities::new(&plan);
    separate_process_tls(&identities, region)?;
    let edge_tls = identities.edge(region)?;
    let scheme = if edge_tls.is_some() { "https" } else { "http" };
    let recorder = metrics::recorder()?;
    // The region file's admin port, on the gateway's own address, unless
    // told otherwise. With an admin listener, the metrics are served there
    // only: the client port is the internet's.
    let admin = args
        .admin_listen
        .or_else(|| plan.gateway_admin(region, listen));
    let client_port_metrics = admin.is_none().then(|| recorder.clone());
    let handle = start_gateway(GatewayOptions {
        config: planned.config,
        listen,
        cores: planned.cores,
        network: TokioNetwork::shared(),
        clock: args.common.clock(),
        metrics: client_port_metrics,
        tls: identities.gateway(region)?,
        edge_tls,
    })
    .await?;
    if let Some(addr) = admin {
        let control = handle.control.clone();
        let ready = control.clone();
        metrics::serve_admin(
            addr,
            recorder,
            Arc::new(move || ready.check()),
            Some(control),
        )
        .await?;
    }
    println!(
        "meridian gateway: region {} on {scheme}://{}",
        region.name, handle.addr
    );
    crate::shutdown_signal().await?;
    handle.stop().await;
    Ok(())
}

/// A part of a deployment run in several processes (a core or gateway of
/// its own, or `dev --region` of a multi-region deployment) cannot share
/// an in-memory CA with the others: its region needs `[tls]` files, or
/// `--insecure-core`.
fn separate_process_tls(
    identities: &Identities<'_>,
    region: &meridian_region::config::RegionConfig,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !identities.is_ephemeral(region),
        "region {}: no [tls] in its file, and a deployment run in several processes cannot \
         share an in-memory CA. Add [tls] (`meridian certs init`) or pass --insecure-core.",
        region.name
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        common: Common,
    }

    /// `--sync` takes `commit` or a whole number of milliseconds within
    /// bounds, and nothing else; what it prints parses back.
    #[test]
    fn sync_policies_parse_and_print_back() {
        for (text, policy) in [
            ("commit", SyncPolicy::Commit),
            ("5ms", SyncPolicy::EveryMs(5)),
            ("10000ms", SyncPolicy::EveryMs(10_000)),
        ] {
            assert_eq!(text.parse::<SyncPolicy>(), Ok(policy), "{text}");
            assert_eq!(policy.to_string(), text);
        }
        for bad in [
            "", "5", "ms", "0ms", "10001ms", "+5ms", "-5ms", "5 ms", "5s", "Commit",
        ] {
            let error = bad.parse::<SyncPolicy>().expect_err(bad);
            assert!(
                error.contains("expected `commit` or `<N>ms`"),
                "{bad}: {error}"
            );
        }
        let flags = Flags::try_parse_from(["meridian", "--sync", "5ms"]).expect("parses");
        assert_eq!(flags.common.options().fsync_every_ms, Some(5));
        assert!(Flags::try_parse_from(["meridian", "--sync", "fast"]).is_err());
    }

    /// The simulation plans with [`PlanOptions::default`]: it must be what
    /// `meridian dev` runs without flags.
    #[test]
    fn the_flags_defaults_are_the_plans_defaults() {
        let flags = Flags::try_parse_from(["meridian"]).expect("the defaults parse");
        assert_eq!(flags.common.options(), PlanOptions::default());
    }

    #[test]
    fn reach_takes_site_equals_address_and_refuses_anything_else() {
        let flags = Flags::try_parse_from([
            "meridian",
            "--reach",
            "eu-west=127.0.0.1:7021",
            "--reach",
            "us-east_1=proxy.local:9",
        ])
        .expect("parses");
        let reach = flags.common.options().reach;
        assert_eq!(reach["eu-west"], "127.0.0.1:7021");
        assert_eq!(reach["us-east_1"], "proxy.local:9");
        for bad in [
            "eu-west",
            "=127.0.0.1:1",
            "eu-west=127.0.0.1",
            "eu-west=host:port",
        ] {
            assert!(
                Flags::try_parse_from(["meridian", "--reach", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
