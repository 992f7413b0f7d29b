//! `meridian geodns`, and the GeoDNS server `meridian dev` starts: the
//! region files' gateways and prefixes (`Plan::geodns_routing`) served by
//! `meridian-geodns` on UDP and TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meridian_geodns::probe::HttpProbe;
use meridian_geodns::{HealthSettings, Running, Zone};
use meridian_region::plan::Plan;
use meridian_seams::net::TokioNetwork;

/// What GeoDNS answers and how it checks gateways (shared by `meridian
/// geodns` and `meridian dev`).
#[derive(clap::Args, Debug, Clone)]
pub struct DnsOptions {
    /// The zone served.
    #[arg(long, default_value = "meridian.test")]
    zone: String,
    /// The service name clients resolve, under the zone.
    #[arg(long, default_value = "chat")]
    service: String,
    /// TTL of every answer, seconds: how long a resolver may keep sending
    /// clients to a region after it fails.
    #[arg(long, default_value_t = 20)]
    dns_ttl: u32,
    /// Between two checks of each gateway's `/readyz`, milliseconds.
    #[arg(long, default_value_t = 2000)]
    check_interval_ms: u64,
    /// One check's limit, milliseconds.
    #[arg(long, default_value_t = 1000)]
    check_timeout_ms: u64,
    /// Successes in a row that bring a gateway back.
    #[arg(long, default_value_t = 3)]
    rise: u32,
    /// Failures in a row that take a gateway out.
    #[arg(long, default_value_t = 1)]
    fall: u32,
}

/// `meridian geodns`.
#[derive(clap::Args)]
pub struct GeoDnsArgs {
    #[command(flatten)]
    common: crate::deploy::Common,
    #[command(flatten)]
    dns: DnsOptions,
    /// Where to answer (UDP and TCP). Default: 127.0.0.1:8053, moved by
    /// `--port-offset`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The region this server stands in: clients whose address matches no
    /// region's prefixes are sent here (or to its nearest healthy
    /// region). Default: the first region by name.
    #[arg(long)]
    home: Option<String>,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` here, in
    /// plaintext. `/readyz` is 200 while some gateway is healthy.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
}

/// Starts GeoDNS for `plan`'s regions on `listen`.
///
/// # Errors
/// An unbindable address, or region files GeoDNS cannot route with.
pub async fn start(
    plan: &Plan,
    home: Option<&str>,
    listen: SocketAddr,
    options: &DnsOptions,
) -> anyhow::Result<(Running, SocketAddr)> {
    let home = match home {
        Some(home) => home.to_string(),
        None => plan
            .deployment()
            .regions
            .keys()
            .next()
            .cloned()
            .context("no region files")?,
    };
    let routing = plan.geodns_routing(&home)?;
    let (udp, tcp) = TokioNetwork::bind_dns(listen)
        .await
        .with_context(|| format!("binding GeoDNS (UDP and TCP) on {listen}"))?;
    let bound = udp.local_addr()?;
    let origin = hickory_name(&options.zone)?;
    let zone = Zone {
        origin,
        service: options.service.clone(),
        ttl: options.dns_ttl,
        nameserver: Some(bound.ip()).filter(|ip| !ip.is_unspecified()),
    };
    let settings = HealthSettings {
        interval: Duration::from_millis(options.check_interval_ms.max(10)),
        timeout: Duration::from_millis(options.check_timeout_ms.max(1)),
        rise: options.rise.max(1),
        fall: options.fall.max(1),
    };
    let probe = Arc::new(HttpProbe::new(TokioNetwork::shared()));
    let running = meridian_geodns::serve(zone, routing, settings, probe, udp, tcp)?;
    Ok((running, bound))
}

/// The zone's name, as DNS spells it.
fn hickory_name(zone: &str) -> anyhow::Result<meridian_geodns::server::DnsName> {
    meridian_geodns::server::DnsName::from_ascii(zone)
        .with_context(|| format!("`{zone}` is not a DNS name"))
}

/// How to ask it, printed by `meridian dev` and `meridian geodns`.
pub fn print_usage(addr: SocketAddr, options: &DnsOptions) {
    let name = format!("{}.{}", options.service, options.zone);
    println!("GeoDNS    {addr} (UDP and TCP) for {name}");
    println!(
        "  dig @{} -p {} +subnet=3.4.5.0/24 {name} A",
        addr.ip(),
        addr.port()
    );
    println!(
        "  dig @{} -p {} _meridian._tcp.{name} SRV",
        addr.ip(),
        addr.port()
    );
    // The shipped region files give each region a loopback block, so a
    // question asked from it is located there without a client subnet.
    println!(
        "  dig -b 127.3.0.1 @{} -p {} {name} A     # asked from ap-southeast's loopback block",
        addr.ip(),
        addr.port()
    );
}

/// Runs `meridian geodns` until Ctrl-C or SIGTERM.
///
/// # Errors
/// As [`start`].
pub async fn run(args: GeoDnsArgs) -> anyhow::Result<()> {
    let plan = args.common.plan()?;
    // Recorded before the server starts, so its first answers count.
    let recorder = match args.admin_listen {
        Some(_) => Some(crate::metrics::recorder()?),
        None => None,
    };
    let listen = match args.listen {
        Some(listen) => listen,
        None => SocketAddr::from(([127, 0, 0, 1], args.common.local_port(8053)?)),
    };
    let (running, addr) = start(&plan, args.home.as_deref(), listen, &args.dns).await?;
    if let (Some(admin), Some(recorder)) = (args.admin_listen, recorder) {
        let board = running.board.clone();
        let ready = Arc::new(move || {
            let (healthy, all) = board.healthy_count();
            (healthy > 0, format!("{healthy} of {all} gateways healthy"))
        });
        crate::metrics::serve_admin(admin, recorder, ready, None).await?;
    }
    print_usage(addr, &args.dns);
    crate::shutdown_signal().await?;
    running.stop().await;
    Ok(())
}
