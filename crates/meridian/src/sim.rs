//! `meridian sim`: runs seeds of the deterministic simulation.

use std::time::Duration;

use meridian_seams::{Clock, SystemClock};
use meridian_sim::{Faults, run_seed};

#[derive(clap::Args)]
pub struct SimArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 200)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Faults to inject: all, none, partitions, crashes.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Run every seed twice and require the same trace hash.
    #[arg(long)]
    check_determinism: bool,
    /// Most regions per seed (each seed runs 1 to this many).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
    regions: u8,
}

fn faults(name: &str, regions: u8) -> anyhow::Result<Faults> {
    let regions = usize::from(regions);
    Ok(match name {
        "all" => Faults {
            regions,
            ..Faults::ALL
        },
        "none" => Faults {
            partitions: false,
            crashes: false,
            regions,
        },
        "partitions" => Faults {
            partitions: true,
            crashes: false,
            regions,
        },
        "crashes" => Faults {
            partitions: false,
            crashes: true,
            regions,
        },
        other => anyhow::bail!("unknown --faults {other:?}: all, none, partitions or crashes"),
    })
}

/// Runs the seeds; fails (non-zero exit) if any seed fails.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let faults = faults(&args.faults, args.regions)?;
    // Seeds per second are measured on the real clock (through the seam),
    // outside the simulation.
    let clock = SystemClock::new();
    let started = clock.monotonic();
    let mut failures = Vec::new();
    let mut slowest: Option<(u64, Duration)> = None;
    let (mut messages, mut deliveries, mut duplicates, mut injected, mut refused, mut breaks) =
        (0, 0, 0, 0, 0, 0);
    let mut membership_changes = 0;
    let mut sent_away = 0;
    let mut by_regions = [0usize; 4];
    let mut sharded = 0;
    let mut receipts = 0;
    let mut media_copies = 0;
    let (mut gaps, mut expired) = (0, 0);
    let mut worst_convergence = Duration::ZERO;
    for seed in args.start..args.start + args.seeds {
        let one = clock.monotonic();
        let outcome = run_seed(seed, faults);
        let outcome = match (outcome, args.check_determinism) {
            (Ok(first), true) => match run_seed(seed, faults) {
                Ok(second) if second.trace_hash == first.trace_hash => Ok(first),
                Ok(second) => Err(format!(
                    "seed {seed}: not deterministic: trace {:x} then {:x}",
                    first.trace_hash, second.trace_hash
                )),
                Err(error) => Err(format!("seed {seed}: passed once, then failed: {error}")),
            },
            (outcome, _) => outcome,
        };
        let took = clock.monotonic() - one;
        if slowest.is_none_or(|(_, t)| took > t) {
            slowest = Some((seed, took));
        }
        match outcome {
            Ok(report) => {
                messages += report.messages;
                deliveries += report.deliveries;
                duplicates += report.wire_duplicates;
                injected += report.faults;
                refused += report.refused_stamps;
                breaks += report.chain_breaks;
                sent_away += report.sent_away;
                membership_changes += usize::from(report.membership_change);
                by_regions[report.regions.min(3)] += 1;
                sharded += usize::from(report.sharded);
                receipts += report.receipts;
                media_copies += report.media_copies;
                gaps += report.gaps;
                expired += report.expired;
                worst_convergence = worst_convergence.max(report.convergence);
            }
            Err(error) => {
                eprintln!("FAIL {error}");
                eprintln!(
                    "  replay: RUST_LOG=debug cargo run --release -p meridian -- sim --seeds 1 --start {seed} --faults {} --regions {}",
                    args.faults, args.regions
                );
                failures.push(seed);
            }
        }
    }
    let elapsed = clock.monotonic() - started;
    println!(
        "{} seeds in {:.1} s ({:.1} seeds/s, {:.0} seeds/min); {} failed; seeds with 1/2/3 regions {}/{}/{} (of the 3-site seeds, {sharded} with us-east in two shards); faults injected {injected}; membership changes mid-run {membership_changes}; read receipts {receipts}; media copies checked {media_copies}; gaps told {gaps} (covering {expired} copies lost to short retention); messages {messages}, deliveries {deliveries}, raw wire duplicates {duplicates}; lost delivery frames detected {breaks}; devices sent away to come back later {sent_away}; stamps beyond the max offset refused {refused}; worst convergence after heal {:.1} s (simulated)",
        args.seeds,
        elapsed.as_secs_f64(),
        args.seeds as f64 / elapsed.as_secs_f64().max(1e-9),
        args.seeds as f64 * 60.0 / elapsed.as_secs_f64().max(1e-9),
        failures.len(),
        by_regions[1],
        by_regions[2],
        by_regions[3],
        worst_convergence.as_secs_f64()
    );
    if let Some((seed, took)) = slowest {
        println!(
            "slowest seed: {seed} ({:.0} ms)",
            took.as_secs_f64() * 1000.0
        );
    }
    println!(
        "sim: {} passed, {} failed",
        args.seeds as usize - failures.len(),
        failures.len()
    );
    if !failures.is_empty() {
        anyhow::bail!("failing seeds: {failures:?}");
    }
    Ok(())
}
