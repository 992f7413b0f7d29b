//! `meridian`: one binary, many roles. Configuration and wiring only: each
//! subcommand turns its flags into what a library crate takes and calls it.
//!
//! - `dev`, `core`, `gateway` (`deploy/`): the flags become a
//!   `meridian_region::plan::Plan` (region files plus flags, resolved into
//!   what each site runs), and `meridian_region` starts it. No deployment
//!   rule lives here.
//! - `geodns` (`geodns.rs`): GeoDNS over `meridian-geodns`, from the region
//!   files; `meridian dev` starts one too.
//! - `region drain|undrain` (`region_cmd.rs`): a region's gateways taken
//!   out of service, and back, through their admin listeners.
//! - `certs init` (`certs.rs`): a local CA and every region's service
//!   identities, for mutual TLS between gateways and cores.
//! - `chat` (`chat.rs`): a command-line client over `meridian-sdk`.
//! - `bench` (`bench/`: `mod.rs`, `regions.rs`, `metrics.rs`): a load
//!   client against a `meridian dev` child process.
//! - `sim` (`sim.rs`): runs seeds of `meridian-sim`.
//! - `chaos` (`chaos.rs`): the chaos failure suite (`meridian-chaos`):
//!   `list` its scenarios, `run` them and write the report.
//! - `terraform-vars` (`terraform.rs`): `terraform/envs/prod`'s generated
//!   files from the region files (`meridian_region::terraform`).
//! - `storage-check` (`storage.rs`): whether this host can use the media
//!   buckets as a region's core does.
//! - `openapi`: prints the gateway's REST API document.
//! - `metrics.rs`: the process's Prometheus recorder and the admin listener
//!   of cores and gateways.

use clap::{Parser, Subcommand};

/// Sends, deliveries and their JSON allocate many small short-lived buffers
/// across threads; mimalloc serves those faster than glibc's allocator
/// (measured with `meridian bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod certs;
mod chaos;
mod chat;
mod deploy;
mod geodns;
mod metrics;
mod region_cmd;
mod sim;
mod storage;
mod terraform;

#[derive(Parser)]
#[command(name = "meridian", version, about = "Geo-replicated messaging backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a complete local deployment in one process: every region of
    /// `regions/` (store, core, replication, gateway, workers), or one.
    Dev(deploy::DevArgs),
    /// Runs one region's core (with its replication) as its own process.
    Core(deploy::PartArgs),
    /// Runs one region's gateway as its own process.
    Gateway(deploy::PartArgs),
    /// Runs GeoDNS: an authoritative DNS server answering the service name
    /// with the healthy gateways of the client's region.
    Geodns(geodns::GeoDnsArgs),
    /// Operates on a region: `meridian region drain|undrain REGION`.
    Region(region_cmd::RegionArgs),
    /// Service identities for mutual TLS: `meridian certs init`.
    Certs(certs::CertsArgs),
    /// A command-line chat client over the SDK.
    Chat(chat::ChatArgs),
    /// Measures throughput, latency and memory per idle connection against a
    /// `meridian dev` child process (build with --release for real figures).
    Bench(bench::BenchArgs),
    /// Runs seeds of the deterministic simulation and checks the invariants.
    Sim(sim::SimArgs),
    /// The chaos failure suite: `meridian chaos list`, `meridian chaos run`.
    Chaos(chaos::ChaosArgs),
    /// Writes (or `--check`s) Terraform's per-region files from the region
    /// files: `terraform/envs/prod/regions.auto.tfvars.json` and `regions.tf`.
    TerraformVars(terraform::TerraformVarsArgs),
    /// Checks that this host can use the media buckets as a region's core
    /// does, with the credentials it would use: a probe object written,
    /// read and deleted in the region's bucket, a download presigned for
    /// every other region's.
    StorageCheck(storage::StorageCheckArgs),
    /// Prints the OpenAPI document of the REST API.
    Openapi,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One TLS provider is built in (aws-lc-rs, which the S3 client needs):
    // the process default for the libraries that take the default (tonic's
    // server, reqwest).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
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
        Command::Certs(args) => return certs::run(args),
        Command::Chaos(args) => return chaos::run(args),
        Command::TerraformVars(args) => return terraform::run(&args),
        command => Cli { command },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => deploy::dev(args).await,
            Command::Core(args) => deploy::core(args).await,
            Command::Gateway(args) => deploy::gateway(args).await,
            Command::Geodns(args) => geodns::run(args).await,
            Command::Region(args) => region_cmd::run(args).await,
            Command::Chat(args) => chat::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::StorageCheck(args) => storage::run(args).await,
            Command::Sim(_) | Command::Certs(_) | Command::Chaos(_) | Command::TerraformVars(_) => {
                Ok(())
            }
            Command::Openapi => {
                let gateway = meridian_gateway::GatewayConfig::new("");
                let deployment = meridian_gateway::Deployment {
                    regions: meridian_region::local::BUILTIN_REGIONS
                        .iter()
                        .map(|(file, _)| file.trim_end_matches(".toml").to_string())
                        .collect(),
                    media_max_bytes: gateway.media_max_bytes,
                };
                println!("{}", meridian_gateway::openapi_json(&deployment));
                Ok(())
            }
        }
    });
    // Every task (and with them every database handle) is gone once the
    // runtime is dropped; only then may the FoundationDB client stop.
    drop(runtime);
    #[cfg(feature = "fdb")]
    meridian_region::shutdown_foundationdb();
    outcome
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
