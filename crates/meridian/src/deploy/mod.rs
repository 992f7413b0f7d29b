//! Running regions: `meridian dev` (every region of `regions/` in one
//! process, or one with `--region`), `meridian core` and `meridian gateway`
//! (one region's part as its own process). The flags become a
//! [`meridian_region::plan::Plan`] (`flags.rs`), which says what each site
//! runs; this file starts it.

mod flags;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use meridian_region::identities::Identities;
use meridian_region::plan::{self, Plan};
use meridian_region::{
    CoreOptions, GatewayHandle, GatewayOptions, Listen, RegionOptions, media, start_core,
    start_gateway, start_region, start_regions,
};
use meridian_seams::net::{SharedNetwork, TokioNetwork};
use meridian_seams::{Rng, SharedClock};

use crate::metrics;

pub use flags::{Common, DevArgs, LogKind, PartArgs, Profile, SyncPolicy};

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
