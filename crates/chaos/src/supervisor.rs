//! The suite's supervisor: restarts every process of the cluster that
//! exits on its own (a fail-stop, a crash), as systemd or an orchestrator
//! would, and keeps the sampler's process ids current.

use std::collections::BTreeMap;

use crate::cluster::Cluster;
use crate::observe::Targets;
use crate::record::Recorder;
use crate::report::ProcessEvent;
use crate::scenario::{GATEWAYS_PER_REGION, REGIONS};

/// What restarts processes that exit on their own, as systemd or an
/// orchestrator would: after half a second, doubling (to 8 s) while the
/// process keeps exiting within ten seconds of its restart.
#[derive(Default)]
pub struct Supervisor {
    /// What happened, for the report.
    pub events: Vec<ProcessEvent>,
    /// Exited processes and when they are due to restart.
    pending: Vec<(f64, crate::cluster::Exited)>,
    /// Per process: restarts in a row, and when the last one was.
    streak: BTreeMap<String, (u32, f64)>,
}

impl Supervisor {
    /// Notes exits, and restarts what is due.
    pub async fn tend(&mut self, cluster: &mut Cluster, recorder: &Recorder, targets: &Targets) {
        let now = recorder.now();
        for exited in cluster.reap() {
            self.events.push(ProcessEvent {
                at: now,
                process: exited.process.clone(),
                what: format!("exited: {}", exited.status),
            });
            let (count, last) = self
                .streak
                .get(&exited.process)
                .copied()
                .unwrap_or((0, f64::MIN));
            let count = if now - last < 10.0 { count + 1 } else { 0 };
            let delay = (0.5 * f64::from(1u32 << count.min(4))).min(8.0);
            self.streak.insert(exited.process.clone(), (count, now));
            self.pending.push((now + delay, exited));
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.pending = waiting;
        for (_, exited) in due {
            let restarted = match exited.gateway {
                None => cluster.start_core(&exited.region).await,
                Some(index) => cluster.start_gateway(&exited.region, index).await,
            };
            let at = recorder.now();
            let streak = self.streak.entry(exited.process.clone()).or_insert((0, at));
            streak.1 = at;
            let what = match restarted {
                Ok(()) => "restarted".to_string(),
                Err(error) => {
                    // Down again at once: try later, waiting longer.
                    streak.0 += 1;
                    let delay = (0.5 * f64::from(1u32 << streak.0.min(4))).min(8.0);
                    self.pending.push((at + delay, exited.clone()));
                    format!("restart failed: {error}")
                }
            };
            self.events.push(ProcessEvent {
                at,
                process: exited.process,
                what,
            });
        }
        refresh_pids(cluster, targets);
    }
}

/// Keeps the sampler's gateway process ids current.
pub fn refresh_pids(cluster: &Cluster, targets: &Targets) {
    let mut pids = targets
        .gateway_pids
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    pids.clear();
    for region in REGIONS {
        for index in 0..GATEWAYS_PER_REGION {
            if let Some(pid) = cluster.gateway_pid(region, index) {
                pids.insert(format!("gateway {index} of {region}"), pid);
            }
        }
    }
}
