//! Faults put on a running [`Cluster`], each with what heals it: signals to
//! its processes (SIGKILL with a restart, SIGSTOP then SIGCONT) and the
//! state of its region pairs' proxies (cut, one direction stalled, delay
//! with jitter and a bandwidth cap).

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
    /// Restarting a process failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Whether this version of the suite can inject `fault`.
pub fn supported(fault: &FaultKind) -> bool {
    matches!(
        fault,
        FaultKind::GatewayKill { .. }
            | FaultKind::GatewayFreeze { .. }
            | FaultKind::GatewayTierLoss { .. }
            | FaultKind::CoreKill { .. }
            | FaultKind::CoreFreeze { .. }
            | FaultKind::LinkPartition { .. }
            | FaultKind::LinkOneway { .. }
            | FaultKind::LinkSlow { .. }
    )
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
        other => return Err(FaultError::Unsupported(other.name())),
    }
    Ok(())
}
