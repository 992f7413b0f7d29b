//! `meridian region drain|undrain REGION`: takes a region's gateways out
//! of service on command, through their admin listeners (`[edge]
//! gateway_admin_port`). A drained gateway takes no new WebSocket, answers
//! `/readyz` 503 (so GeoDNS leaves the region out of its answers within
//! one check interval), and asks its clients to leave in waves spread
//! over `--spread-secs`; the region's core keeps serving its users through
//! other regions' gateways. `drain` waits until the region's gateways
//! hold no client connection and prints how long that took.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use meridian_seams::SystemClock;

/// `meridian region`.
#[derive(clap::Args)]
pub struct RegionArgs {
    #[command(subcommand)]
    command: RegionCommand,
}

#[derive(clap::Subcommand)]
enum RegionCommand {
    /// Drains a region's gateways and waits until they hold no client.
    Drain(DrainArgs),
    /// Lets a drained region's gateways take clients again.
    Undrain(DrainArgs),
}

#[derive(clap::Args)]
struct DrainArgs {
    #[command(flatten)]
    common: crate::deploy::Common,
    /// The region.
    region: String,
    /// Clients are asked to leave over this many seconds (at most an hour).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    spread_secs: u64,
    /// Give up waiting for the last connections after this many seconds.
    #[arg(long, default_value_t = 600)]
    wait_secs: u64,
}

/// Runs `meridian region …`.
///
/// # Errors
/// A region without `[edge] gateway_admin_port`, a gateway that refuses the
/// order, or connections left after `--wait-secs`.
pub async fn run(args: RegionArgs) -> anyhow::Result<()> {
    match args.command {
        RegionCommand::Drain(args) => drain(&args).await,
        RegionCommand::Undrain(args) => undrain(&args).await,
    }
}

/// Every admin listener of the region's gateways.
fn admin_addresses(args: &DrainArgs) -> anyhow::Result<Vec<SocketAddr>> {
    let plan = args.common.plan()?;
    let region = plan.deployment().region(&args.region)?;
    anyhow::ensure!(
        region.edge.gateway_admin_port.is_some(),
        "region {}: no [edge] gateway_admin_port, so its gateways have no admin listener to drain through",
        region.name
    );
    Ok(plan.gateways(region)?.iter().map(|g| g.check).collect())
}

async fn post(http: &reqwest::Client, url: String) -> anyhow::Result<String> {
    let answer = http
        .post(&url)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = answer.status();
    let text = answer.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "POST {url}: {status} {text}");
    Ok(text)
}

async fn drain(args: &DrainArgs) -> anyhow::Result<()> {
    let admins = admin_addresses(args)?;
    let http = reqwest::Client::new();
    let clock = SystemClock::shared();
    let ordered = clock.monotonic();
    let spread_ms = args.spread_secs.saturating_mul(1000);
    for admin in &admins {
        match post(&http, format!("http://{admin}/drain?spread_ms={spread_ms}")).await {
            Ok(text) => println!("gateway {admin}: {text}"),
            // A gateway that is down holds no client.
            Err(error) => println!("gateway {admin}: not reached ({error:#}); counted as empty"),
        }
    }
    println!(
        "region {} draining: clients leave over {} s; GeoDNS drops it at its next check",
        args.region, args.spread_secs
    );
    let deadline = Duration::from_secs(args.wait_secs);
    let mut last_report = Duration::ZERO;
    loop {
        let mut open = 0u64;
        for admin in &admins {
            let url = format!("http://{admin}/connections");
            if let Ok(answer) = http.get(&url).send().await
                && let Ok(text) = answer.text().await
            {
                open += text.trim().parse::<u64>().unwrap_or(0);
            }
        }
        let elapsed = clock.monotonic().saturating_sub(ordered);
        if open == 0 {
            println!(
                "region {} holds no client connection: {:.1} s after the drain order",
                args.region,
                elapsed.as_secs_f64()
            );
            return Ok(());
        }
        anyhow::ensure!(
            elapsed < deadline,
            "region {}: {open} connections left after {} s",
            args.region,
            args.wait_secs
        );
        if elapsed.saturating_sub(last_report) >= Duration::from_secs(5) {
            println!(
                "  {open} connections left after {:.0} s",
                elapsed.as_secs_f64()
            );
            last_report = elapsed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn undrain(args: &DrainArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut missed = 0;
    for admin in admin_addresses(args)? {
        match post(&http, format!("http://{admin}/undrain")).await {
            Ok(text) => println!("gateway {admin}: {text}"),
            Err(error) => {
                missed += 1;
                println!("gateway {admin}: not reached ({error:#})");
            }
        }
    }
    anyhow::ensure!(
        missed == 0,
        "{missed} gateway(s) of {} not reached: undrain them once they answer",
        args.region
    );
    println!(
        "region {} takes clients again; GeoDNS answers with it after its gateways pass their checks",
        args.region
    );
    Ok(())
}
