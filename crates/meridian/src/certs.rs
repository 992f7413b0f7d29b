//! `meridian certs init`: a local CA and every service identity of the
//! region files (`core.<region>`, `gateway.<region>`), written where the
//! files' `[tls]` tables point by default.

use std::path::PathBuf;

use anyhow::Context;
use meridian_identity::pki;
use meridian_region::config::Deployment;
use meridian_region::identities::deployment_identities;

/// `meridian certs`.
#[derive(clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(clap::Subcommand)]
enum CertsCommand {
    /// Makes a CA (unless the directory has one) and a certificate and key
    /// for every region's core and gateways; keeps those still valid.
    Init(InitArgs),
}

#[derive(clap::Args)]
struct InitArgs {
    /// Directory of region files.
    #[arg(long, default_value = "regions", env = "MERIDIAN_REGIONS_DIR")]
    regions_dir: PathBuf,
    /// Where to write (default: `certs/` in the region directory, where
    /// the shipped files' `[tls]` tables point).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `meridian certs`.
///
/// # Errors
/// Unreadable region files, an unwritable directory, a CA key that does
/// not parse.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let CertsCommand::Init(args) = args.command;
    let deployment = Deployment::load(&args.regions_dir)?;
    let out = args.out.unwrap_or_else(|| args.regions_dir.join("certs"));
    let identities = deployment_identities(&deployment);
    let report = pki::init_dir(&out, &identities)
        .with_context(|| format!("writing service identities to {}", out.display()))?;
    let ca = out.join("ca.pem");
    if report.created_ca {
        println!(
            "new CA: {} (its key beside it: keep ca.key offline in production)",
            ca.display()
        );
    } else {
        println!("CA kept: {}", ca.display());
    }
    for identity in &report.issued {
        println!("issued  {identity}");
    }
    for identity in &report.kept {
        println!("kept    {identity} (still valid under the CA)");
    }
    for region in deployment.regions.values() {
        match &region.tls {
            Some(tls) if tls.ca == ca => {}
            Some(tls) => println!(
                "note: region {} reads its CA from {}, not {}",
                region.name,
                tls.ca.display(),
                ca.display()
            ),
            None => println!(
                "note: region {} has no [tls] table: add one pointing at {}",
                region.name,
                out.display()
            ),
        }
    }
    Ok(())
}
