//! Faults put on a running [`Cluster`], each with what heals it: signals to
//! its processes (SIGKILL with a restart, SIGSTOP then SIGCONT, a restart
//! with a skewed clock), the state of its proxies (a region pair's cut,
//! one direction stalled, delay with jitter and a bandwidth cap; a
//! region's object storage cut off) and its disks (a small filesystem
//! filled). The faults on clients (a slow reader, a reconnect storm) are
//! the runner's, which drives the clients.

use std::time::Duration;

use meridian_faultproxy::Direction;

use crate::cluster::{Cluster, ClusterError, freeze, signal};
use crate::scenario::{FaultKind, GATEWAYS_PER_REGION};

/// A fault that could not be put on the cluster.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The cluster cannot inject this kind yet.
    #[error("{0}: not injected by this version of the suite")]
    Unsupported(&'static str),
    /// A process to signal or restart is not running (or did not stop).
    #[error("{0}: the process is not running")]
    NotRunning(String),
    /// A gateway's admin listener refused a drain or undrain.
    #[error("admin listener: {0}")]
    Admin(String),
    /// Restarting a process failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Filling or freeing a disk failed.
    #[error("{what}: {source}")]
    Disk {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// The file that fills a small disk.
const FILLER: &str = "chaos-filler";

/// Whether this version of the suite can inject `fault`.
pub fn supported(fault: &FaultKind) -> bool {
    matches!(
        fault,
        FaultKind::GatewayKill { .. }
            | FaultKind::GatewayFreeze { .. }
            | FaultKind::GatewayTierLoss { .. }
            | FaultKind::RegionDrain { .. }
            | FaultKind::CoreKill { .. }
            | FaultKind::CoreFreeze { .. }
            | FaultKind::LinkPartition { .. }
            | FaultKind::LinkOneway { .. }
            | FaultKind::LinkSlow { .. }
            | FaultKind::S3Down { .. }
            | FaultKind::ClockSkew { .. }
            | FaultKind::DiskFull { .. }
            | FaultKind::BrokerKill { .. }
    )
}

/// Whether `fault` acts on clients (the runner's) rather than on the
/// cluster.
pub fn on_clients(fault: &FaultKind) -> bool {
    matches!(
        fault,
        FaultKind::SlowConsumer { .. } | FaultKind::ReconnectStorm { .. }
    )
}

/// Restarts `region`'s core gracefully with `flags` from now on.
async fn restart_core_with(
    cluster: &mut Cluster,
    region: &str,
    flags: Vec<String>,
) -> Result<(), FaultError> {
    cluster.set_core_flags(region, flags);
    cluster.stop_core(region).await;
    cluster.start_core(region).await?;
    Ok(())
}

/// Writes zeros to `dir`'s filesystem until it has no space left.
async fn fill(dir: std::path::PathBuf) -> Result<(), FaultError> {
    let path = dir.join(FILLER);
    let written = meridian_seams::Offload::BlockingPool
        .run(move || {
            use std::io::Write;
            let mut file = std::fs::File::create(&path)?;
            let block = vec![0u8; 1 << 20];
            loop {
                match file.write_all(&block) {
                    Ok(()) => {}
                    Err(error) if error.raw_os_error() == Some(28) => break,
                    Err(error) => return Err(error),
                }
            }
            // Then page by page: every byte the filesystem has left.
            while file.write(&block[..4096]).is_ok_and(|n| n > 0) {}
            Ok(())
        })
        .await;
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(FaultError::Disk {
            what: "filling the small disk".into(),
            source,
        }),
        Err(join) => Err(FaultError::Disk {
            what: "filling the small disk".into(),
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

/// `POST /<action>` on every gateway admin listener of `region` (`drain`
/// or `undrain`, as `meridian region drain` does).
async fn drain_all(cluster: &Cluster, region: &str, action: &str) -> Result<(), FaultError> {
    let http = reqwest::Client::new();
    let admins = cluster.region(region).map_or_else(Vec::new, |r| {
        (0..r.gateway_admin_ports.len())
            .filter_map(|i| r.gateway_admin_url(i))
            .collect()
    });
    for admin in admins {
        let answer = http
            .post(format!("{admin}/{action}"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Err(error) = answer {
            return Err(FaultError::Admin(format!("{admin}/{action}: {error}")));
        }
    }
    Ok(())
}

/// The ordered pairs whose proxies carry traffic between `a` and `b`.
fn both_ways<'a>(a: &'a str, b: &'a str) -> [(&'a str, &'a str); 2] {
    [(a, b), (b, a)]
}

/// Puts `fault` on `cluster`. Instant faults are done when this returns;
/// the others last until [`heal`].
///
/// # Errors
/// A kind this version cannot inject, a process not running.
pub async fn inject(cluster: &mut Cluster, fault: &FaultKind, seed: u64) -> Result<(), FaultError> {
    match fault {
        FaultKind::GatewayKill {
            region, gateway, ..
        } => cluster.kill_gateway(region, *gateway).await,
        FaultKind::GatewayTierLoss { region, .. } => {
            for index in 0..GATEWAYS_PER_REGION {
                cluster.kill_gateway(region, index).await;
            }
        }
        FaultKind::CoreKill { region, .. } => cluster.kill_core(region).await,
        FaultKind::RegionDrain {
            region,
            spread_secs,
            ..
        } => {
            let spread_ms = (spread_secs * 1000.0).max(0.0) as u64;
            drain_all(cluster, region, &format!("drain?spread_ms={spread_ms}")).await?;
        }
        FaultKind::GatewayFreeze {
            region, gateway, ..
        } => {
            let pid = cluster
                .gateway_pid(region, *gateway)
                .ok_or_else(|| FaultError::NotRunning(format!("gateway {gateway} of {region}")))?;
            if !freeze(pid).await {
                return Err(FaultError::NotRunning(format!(
                    "gateway {gateway} of {region}"
                )));
            }
        }
        FaultKind::CoreFreeze { region, .. } => {
            let pid = cluster
                .core_pid(region)
                .ok_or_else(|| FaultError::NotRunning(format!("core of {region}")))?;
            if !freeze(pid).await {
                return Err(FaultError::NotRunning(format!("core of {region}")));
            }
        }
        FaultKind::LinkPartition { regions, .. } => {
            for (from, to) in both_ways(&regions[0], &regions[1]) {
                if let Some(proxy) = cluster.proxy(from, to) {
                    proxy.cut();
                }
            }
        }
        FaultKind::LinkOneway { from, to, .. } => {
            // What `from` sends `to`'s core, and what `to`'s processes
            // read from `from`'s core (its log, through its link).
            if let Some(proxy) = cluster.proxy(from, to) {
                proxy.stall(Direction::Forward);
            }
            if let Some(proxy) = cluster.proxy(to, from) {
                proxy.stall(Direction::Backward);
            }
        }
        FaultKind::LinkSlow {
            regions,
            delay_ms,
            jitter_ms,
            bandwidth_kib,
            ..
        } => {
            for (from, to) in both_ways(&regions[0], &regions[1]) {
                if let Some(proxy) = cluster.proxy(from, to) {
                    proxy.set_delay(Duration::from_millis(*delay_ms));
                    proxy.set_jitter(Duration::from_millis(*jitter_ms), seed);
                    proxy.set_bandwidth(bandwidth_kib.map(|kib| kib * 1024));
                }
            }
        }
        FaultKind::S3Down { region, .. } => {
            if let Some(proxy) = cluster.s3_proxy(region) {
                proxy.cut();
            }
        }
        FaultKind::ClockSkew {
            region, offset_ms, ..
        } => {
            let flags = vec!["--clock-skew-ms".to_string(), offset_ms.to_string()];
            restart_core_with(cluster, region, flags).await?;
        }
        FaultKind::DiskFull { region, .. } => fill(cluster.data_dir(region)).await?,
        FaultKind::BrokerKill { region, .. } => cluster.kill_broker(region).await?,
        other => return Err(FaultError::Unsupported(other.name())),
    }
    Ok(())
}

/// Ends `fault`: restarts what it killed, resumes what it froze, restores
/// the proxies it changed.
///
/// # Errors
/// A process that cannot be restarted.
pub async fn heal(cluster: &mut Cluster, fault: &FaultKind) -> Result<(), FaultError> {
    match fault {
        FaultKind::GatewayKill {
            region, gateway, ..
        } => cluster.start_gateway(region, *gateway).await?,
        FaultKind::GatewayTierLoss { region, .. } => {
            for index in 0..GATEWAYS_PER_REGION {
                cluster.start_gateway(region, index).await?;
            }
        }
        FaultKind::CoreKill { region, .. } => cluster.start_core(region).await?,
        FaultKind::RegionDrain { region, .. } => drain_all(cluster, region, "undrain").await?,
        FaultKind::GatewayFreeze {
            region, gateway, ..
        } => {
            if let Some(pid) = cluster.gateway_pid(region, *gateway) {
                signal(pid, "CONT").await;
            }
        }
        FaultKind::CoreFreeze { region, .. } => {
            if let Some(pid) = cluster.core_pid(region) {
                signal(pid, "CONT").await;
            }
        }
        FaultKind::LinkPartition { regions, .. } => {
            for (from, to) in both_ways(&regions[0], &regions[1]) {
                if let Some(proxy) = cluster.proxy(from, to) {
                    proxy.heal();
                }
            }
        }
        FaultKind::LinkOneway { from, to, .. } => {
            if let Some(proxy) = cluster.proxy(from, to) {
                proxy.resume(Direction::Forward);
            }
            if let Some(proxy) = cluster.proxy(to, from) {
                proxy.resume(Direction::Backward);
            }
        }
        FaultKind::LinkSlow { regions, .. } => {
            for (from, to) in both_ways(&regions[0], &regions[1]) {
                if let Some(proxy) = cluster.proxy(from, to) {
                    proxy.set_delay(Duration::ZERO);
                    proxy.set_jitter(Duration::ZERO, 0);
                    proxy.set_bandwidth(None);
                }
            }
        }
        FaultKind::S3Down { region, .. } => {
            if let Some(proxy) = cluster.s3_proxy(region) {
                proxy.heal();
            }
        }
        FaultKind::ClockSkew { region, .. } => {
            restart_core_with(cluster, region, Vec::new()).await?;
        }
        FaultKind::BrokerKill { region, .. } => cluster.restart_broker(region).await?,
        FaultKind::DiskFull { region, .. } => {
            let path = cluster.data_dir(region).join(FILLER);
            tokio::fs::remove_file(&path)
                .await
                .map_err(|source| FaultError::Disk {
                    what: format!("freeing {}", path.display()),
                    source,
                })?;
        }
        other => return Err(FaultError::Unsupported(other.name())),
    }
    Ok(())
}
