//! `meridian terraform-vars`: writes `terraform/envs/prod`'s generated
//! files from the region files (`meridian_region::terraform`), or checks
//! that the committed ones are current.

use std::path::PathBuf;

use meridian_region::config::Deployment;

/// `meridian terraform-vars`.
#[derive(clap::Args)]
pub struct TerraformVarsArgs {
    /// The region files.
    #[arg(long, default_value = "regions", env = "MERIDIAN_REGIONS_DIR")]
    regions_dir: PathBuf,
    /// The Terraform environment to write into.
    #[arg(long, default_value = "terraform/envs/prod")]
    out: PathBuf,
    /// Only check: fail, naming the file, when a committed file is not
    /// what the region files generate.
    #[arg(long)]
    check: bool,
}

/// Runs `meridian terraform-vars`.
///
/// # Errors
/// Region files that cannot be provisioned (no `[aws]`, overlapping VPCs,
/// …), files that cannot be written, or with `--check` a stale file.
pub fn run(args: &TerraformVarsArgs) -> anyhow::Result<()> {
    let deployment = Deployment::load(&args.regions_dir)?;
    let files = meridian_region::terraform::generated(&deployment)?;
    let mut stale = Vec::new();
    for (name, text) in &files {
        let path = args.out.join(name);
        if args.check {
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed != *text {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::write(&path, text)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    anyhow::ensure!(
        stale.is_empty(),
        "{} disagree with {}: run `meridian terraform-vars`",
        stale.join(" and "),
        args.regions_dir.display()
    );
    if args.check {
        println!(
            "{} match {} ({} regions)",
            files
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" and "),
            args.regions_dir.display(),
            deployment.regions.len()
        );
    }
    Ok(())
}
