//! `meridian chaos`: QA's entry point to the chaos failure suite
//! (`meridian-chaos`, `docs/chaos.md`).

use std::path::PathBuf;

use meridian_chaos::Scenario;

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

/// Runs `meridian chaos`.
///
/// # Errors
/// A scenario file that cannot be read or cannot run, with its reason.
pub fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let ChaosCommand::List(args) = args.command;
    let scenarios = Scenario::load_dir(&args.scenarios)?;
    let width = scenarios.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for scenario in &scenarios {
        println!("{:width$}  {}", scenario.name, scenario.summary);
        for fault in scenario.schedule(meridian_chaos::Profile::Short) {
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
