//! `meridian`: one binary, many roles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meridian_core::CoreConfig;
use meridian_gateway::GatewayConfig;
use meridian_region::{RegionOptions, StoreChoice, start_region};
use meridian_seams::net::TokioNetwork;
use meridian_seams::{Rng, SystemClock};

/// Sends, deliveries and their JSON allocate many small short-lived buffers
/// across threads; mimalloc serves those faster than glibc's allocator
/// (measured with `meridian bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod chat;
mod sim;

#[derive(Parser)]
#[command(name = "meridian", version, about = "Geo-replicated messaging backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a complete local region (store, core, gateway, workers) in one process.
    Dev(DevArgs),
    /// A command-line chat client over the SDK.
    Chat(chat::ChatArgs),
    /// Measures throughput, latency and memory per idle connection against a
    /// `meridian dev` child process (build with --release for real figures).
    Bench(bench::BenchArgs),
    /// Runs seeds of the deterministic simulation and checks the invariants.
    Sim(sim::SimArgs),
    /// Prints the OpenAPI document of the REST API.
    Openapi,
}

#[derive(clap::Args)]
struct DevArgs {
    /// Directory for durable state (created if missing).
    #[arg(long, default_value = "./data", env = "MERIDIAN_DATA_DIR")]
    data_dir: PathBuf,
    /// Client-facing address (REST + WebSocket).
    #[arg(long, default_value = "127.0.0.1:8080", env = "MERIDIAN_LISTEN")]
    listen: SocketAddr,
    /// Core gRPC address.
    #[arg(long, default_value = "127.0.0.1:7070", env = "MERIDIAN_CORE_LISTEN")]
    core_listen: SocketAddr,
    /// Region name.
    #[arg(long, default_value = "us-east")]
    region: String,
    /// Retention of undelivered messages and history, seconds (default 30 days).
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    retention_secs: u64,
    /// Interval of the retention sweep, seconds.
    #[arg(long, default_value_t = 60)]
    sweep_secs: u64,
    /// Sends per second allowed per device (sustained).
    #[arg(long, default_value_t = 50.0)]
    send_rate: f64,
    /// Registrations per minute allowed per client IP address.
    #[arg(long, default_value_t = 600.0)]
    registrations_per_minute: f64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Seeds log a lot at info (turmoil reports every bind and restart): the
    // simulation stays quiet unless RUST_LOG asks otherwise.
    let default_level = if matches!(cli.command, Command::Sim(_)) {
        "error"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    // The simulation builds its own runtimes, one per simulated host.
    let cli = match cli.command {
        Command::Sim(args) => return sim::run(args),
        command => Cli { command },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev(args).await,
            Command::Chat(args) => chat::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Sim(_) => Ok(()),
            Command::Openapi => {
                println!("{}", meridian_gateway::openapi_json());
                Ok(())
            }
        }
    })
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let mut core = CoreConfig::new(args.region.clone());
    core.retention = Duration::from_secs(args.retention_secs);
    core.sweep_interval = Duration::from_secs(args.sweep_secs.max(1));
    let region = start_region(RegionOptions {
        core,
        gateway: {
            let mut gateway = GatewayConfig::new(args.region.clone());
            gateway.sends_per_second = args.send_rate;
            gateway.send_burst = args.send_rate.max(gateway.send_burst);
            gateway.registrations_per_minute = args.registrations_per_minute;
            gateway
        },
        store: StoreChoice::Fjall(args.data_dir.clone()),
        gateway_listen: args.listen,
        core_listen: args.core_listen,
        network: TokioNetwork::shared(),
        clock: SystemClock::shared(),
        rng: Rng::from_os().context("no entropy from the operating system")?,
        metrics: Some(metrics),
    })
    .await?;
    let base = format!("http://{}", region.gateway_addr);
    println!("meridian dev: region {} is up", args.region);
    println!("  REST      {base}/v1   (OpenAPI: {base}/v1/openapi.json)");
    println!("  WebSocket ws://{}/v1/ws", region.gateway_addr);
    println!("  health    {base}/healthz  {base}/readyz  {base}/metrics");
    println!("  core gRPC {}", region.core_addr);
    println!("  data      {}", args.data_dir.display());
    println!("try it:");
    println!("  cargo run -p meridian -- chat --url {base} register --name alice");
    shutdown_signal().await?;
    println!("stopping");
    region.stop().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
