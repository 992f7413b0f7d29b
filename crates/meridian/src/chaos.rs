//! `meridian chaos`: QA's entry point to the chaos failure suite
//! (`meridian-chaos`, `docs/chaos.md`).

use std::path::PathBuf;

use meridian_chaos::{Profile, Report, RunOptions, Scenario};

/// `meridian chaos`.
#[derive(clap::Args)]
pub struct ChaosArgs {
    #[command(subcommand)]
    command: ChaosCommand,
}

#[derive(clap::Subcommand)]
enum ChaosCommand {
    /// Lists the scenarios, with their faults, after checking every file.
    List(ListArgs),
    /// Runs scenarios on three regions of real processes and writes
    /// `report.json` and `report.html`; exits non-zero when one fails.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct ListArgs {
    /// Directory of scenario files.
    #[arg(
        long,
        default_value = "chaos/scenarios",
        env = "MERIDIAN_CHAOS_SCENARIOS"
    )]
    scenarios: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProfileArg {
    Short,
    Long,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogArg {
    Embedded,
    Kafka,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Directory of scenario files.
    #[arg(
        long,
        default_value = "chaos/scenarios",
        env = "MERIDIAN_CHAOS_SCENARIOS"
    )]
    scenarios: PathBuf,
    /// Runs this scenario (repeatable).
    #[arg(long = "scenario", required_unless_present = "all")]
    names: Vec<String>,
    /// Runs every scenario.
    #[arg(long, conflicts_with = "names")]
    all: bool,
    /// `short` (CI's) or `long` (QA's).
    #[arg(long, value_enum, default_value = "short")]
    profile: ProfileArg,
    /// The seed of the workload's and the faults' choices (printed when
    /// chosen at random; a failed run replays with it).
    #[arg(long)]
    seed: Option<u64>,
    /// The replication log the regions run.
    #[arg(long, value_enum, default_value = "embedded")]
    log: LogArg,
    /// Where the report, each scenario's files and the processes' logs go.
    #[arg(long, default_value = "chaos-report")]
    out: PathBuf,
    /// The `meridian` binary the cluster runs (default: this one).
    #[arg(long)]
    binary: Option<PathBuf>,
}

/// Runs `meridian chaos`.
///
/// # Errors
/// A scenario file that cannot be read or cannot run, with its reason; a
/// run with a failed scenario.
pub fn run(args: ChaosArgs) -> anyhow::Result<()> {
    match args.command {
        ChaosCommand::List(args) => list(&args),
        ChaosCommand::Run(args) => run_scenarios(args),
    }
}

fn list(args: &ListArgs) -> anyhow::Result<()> {
    let scenarios = Scenario::load_dir(&args.scenarios)?;
    let width = scenarios.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for scenario in &scenarios {
        println!("{:width$}  {}", scenario.name, scenario.summary);
        for fault in scenario.schedule(Profile::Short) {
            let lasting = match fault.kind.seconds() {
                0.0 => String::new(),
                seconds => format!(" for {seconds} s"),
            };
            println!(
                "{:width$}    at {:>5.1} s  {}{lasting}",
                "",
                fault.at,
                fault.kind.name()
            );
        }
    }
    println!(
        "{} scenarios in {}",
        scenarios.len(),
        args.scenarios.display()
    );
    Ok(())
}

fn run_scenarios(args: RunArgs) -> anyhow::Result<()> {
    let all = Scenario::load_dir(&args.scenarios)?;
    let chosen: Vec<Scenario> = if args.all {
        all
    } else {
        let mut chosen = Vec::new();
        for name in &args.names {
            let Some(scenario) = all.iter().find(|s| &s.name == name) else {
                anyhow::bail!(
                    "no scenario {name} in {} (meridian chaos list shows them)",
                    args.scenarios.display()
                );
            };
            chosen.push(scenario.clone());
        }
        chosen
    };
    let clock = meridian_seams::SystemClock::shared();
    let seed = match args.seed {
        Some(seed) => seed,
        None => meridian_seams::Rng::from_os()?.next_u64(),
    };
    let binary = match args.binary {
        Some(binary) => binary,
        None => std::env::current_exe()?,
    };
    let profile = match args.profile {
        ProfileArg::Short => Profile::Short,
        ProfileArg::Long => Profile::Long,
    };
    std::fs::create_dir_all(&args.out)?;
    let options = RunOptions {
        binary,
        out: args.out.clone(),
        profile,
        seed,
        log: match args.log {
            LogArg::Embedded => meridian_chaos::LogChoice::Embedded,
            LogArg::Kafka => meridian_chaos::LogChoice::Kafka,
        },
    };
    let mut report = Report {
        schema: meridian_chaos::report::SCHEMA,
        meridian_version: format!("meridian {}", env!("CARGO_PKG_VERSION")),
        profile: format!("{:?}", profile).to_lowercase(),
        log: match args.log {
            LogArg::Embedded => "embedded",
            LogArg::Kafka => "kafka",
        }
        .into(),
        seed,
        started_unix: clock.wall_millis() / 1000,
        passed: true,
        scenarios: Vec::new(),
    };
    println!(
        "meridian chaos: {} scenarios, profile {}, seed {seed} (replay: --seed {seed})",
        chosen.len(),
        report.profile
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let interrupted = runtime.block_on(async {
        for scenario in &chosen {
            println!("scenario {} (seed {seed})", scenario.name);
            // Ctrl-C or SIGTERM drops the scenario's future: its cluster's
            // processes are killed and its small disk detached.
            let outcome = tokio::select! {
                outcome = meridian_chaos::run_scenario(scenario, &options) => Some(outcome),
                () = interrupt() => None,
            };
            let Some(outcome) = outcome else {
                return true;
            };
            print_outcome(&outcome);
            report.passed &= outcome.passed;
            report.scenarios.push(outcome);
            if let Err(error) = write_report(&args.out, &report) {
                eprintln!("meridian chaos: writing the report: {error:#}");
            }
        }
        false
    });
    if interrupted {
        anyhow::bail!("interrupted: every process of the run was stopped");
    }
    println!(
        "report: {} and {}",
        args.out.join("report.json").display(),
        args.out.join("report.html").display()
    );
    anyhow::ensure!(
        report.passed,
        "a scenario failed (replay with --seed {seed}); see the report"
    );
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupt() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn print_outcome(outcome: &meridian_chaos::ScenarioReport) {
    for fault in &outcome.faults {
        println!(
            "  {:<16} {:<28} detected {:>8} recovered {:>8}",
            fault.kind,
            fault.target,
            fault
                .detect_seconds
                .map_or("—".into(), |s| format!("{s:.2} s")),
            fault
                .recover_seconds
                .map_or("never".into(), |s| format!("{s:.2} s")),
        );
    }
    for verdict in &outcome.verdicts {
        println!(
            "  {} {} ({})",
            if verdict.held { "ok  " } else { "FAIL" },
            verdict.invariant,
            verdict.checked
        );
        for line in &verdict.evidence {
            println!("         {line}");
        }
    }
    if let Some(reason) = &outcome.skipped {
        println!("  skipped: {reason}");
        return;
    }
    if let Some(error) = &outcome.error {
        println!("  FAIL the run: {error}");
    }
    let c = &outcome.counters;
    println!(
        "  {}: {} acknowledged of {} sends, {} deliveries, {} reconnects, {} wire duplicates, converged {} after the last heal, offline devices caught up in {} ({:.0} s)",
        if outcome.passed { "passed" } else { "FAILED" },
        c.acknowledged,
        c.sends,
        c.deliveries,
        c.reconnects,
        c.wire_duplicates,
        outcome
            .convergence
            .after_last_heal_seconds
            .map_or("never".into(), |s| format!("{s:.2} s")),
        outcome
            .convergence
            .offline_catch_up_seconds
            .map_or("never".into(), |s| format!("{s:.2} s")),
        outcome.wall_seconds
    );
}

fn write_report(out: &std::path::Path, report: &Report) -> anyhow::Result<()> {
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(
        out.join("report.html"),
        meridian_chaos::html::render(report),
    )?;
    Ok(())
}
