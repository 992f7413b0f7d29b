//! One seed: build the simulation, drive the workload and faults, check the
//! invariants, hash the trace.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use meridian_identity::ServiceCredentials;
use meridian_kv_memory::Fault;
use meridian_region::MemoryEngine;
use meridian_rpc::core::core_client::CoreClient;
use meridian_rpc::core::{self as pb};
use meridian_seams::SharedClock;
use meridian_seams::net::SharedNetwork;

use crate::device::DeviceTask;
use crate::hosts::{
    EPOCH_MS, HostResult, Regions, SHORT_RETENTION, SimIdentities, core_client, setup,
    short_retention, simulation,
};
use crate::invariants::{SeedOutcome, Shared, SharedState, check, lock};
use crate::workload::{ConvPlan, FaultAction, Faults, MembershipChange, Plan};
use crate::{SimClock, TurmoilNetwork};

/// Runs one seed to completion and checks the invariants.
///
/// # Errors
/// A description of the violated invariant or of the simulation failure.
pub fn run_seed(seed: u64, faults: Faults) -> SeedOutcome {
    align_task_ids();
    let plan = Plan::generate(seed, faults);
    let mut sim = simulation(seed);
    let network: SharedNetwork = Arc::new(TurmoilNetwork);
    let clock: SharedClock = Arc::new(SimClock::new(EPOCH_MS, 0));
    let regions = plan.regions;
    let sites = plan.sites();
    // Each region's core clock, which clock-jump faults move.
    let core_clocks: Vec<SimClock> = (0..regions).map(|_| SimClock::new(EPOCH_MS, 0)).collect();
    let shared: SharedState = Arc::default();
    let identities =
        SimIdentities::issue(sites).map_err(|error| format!("seed {seed}: {error}"))?;
    let engines = Regions {
        seed,
        sites,
        network: &network,
        clock: &clock,
        core_clocks: &core_clocks,
        identities: &identities,
    }
    .start(&mut sim)
    .map_err(|error| format!("seed {seed}: {error}"))?;
    let caller = identities.client();
    run_setup(&mut sim, seed, &network, &shared, &plan, caller)?;
    start_devices(&mut sim, seed, &network, &shared, &plan);
    start_admin(&mut sim, &network, &shared, &plan, caller);
    let applied = drive(&mut sim, seed, &plan, &core_clocks, &engines, &shared)?;
    let sim_time = sim.elapsed();
    let retention = short_retention(seed).then_some(SHORT_RETENTION);
    check(seed, &plan, &lock(&shared), retention, applied, sim_time)
}

/// Setup: users, devices and conversations, through the core's gRPC. Steps
/// the simulation until it is done.
fn run_setup(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    network: &SharedNetwork,
    shared: &SharedState,
    plan: &Plan,
    caller: &ServiceCredentials,
) -> Result<(), String> {
    {
        let (network, shared, plan, caller) = (
            network.clone(),
            shared.clone(),
            plan.clone(),
            caller.clone(),
        );
        sim.client("setup", async move {
            setup(network, shared, plan, caller).await
        });
    }
    loop {
        if lock(shared).setup_done {
            break;
        }
        match sim.step() {
            Ok(_) => {}
            Err(error) => return Err(format!("seed {seed}: setup failed: {error}")),
        }
    }
    Ok(())
}

/// Starts every device's script, each a client of the simulation.
fn start_devices(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    network: &SharedNetwork,
    shared: &SharedState,
    plan: &Plan,
) {
    let sends_remaining = Arc::new(AtomicUsize::new(plan.devices.len()));
    for (index, device) in plan.devices.iter().enumerate() {
        let task = DeviceTask {
            index,
            seed,
            plan: plan.clone(),
            shared: shared.clone(),
            network: network.clone(),
            sends_remaining: sends_remaining.clone(),
        };
        sim.client(device.name.as_str(), async move { task.run().await });
    }
}

/// Starts the group admin's membership change, if the plan has one.
fn start_admin(
    sim: &mut turmoil::Sim<'_>,
    network: &SharedNetwork,
    shared: &SharedState,
    plan: &Plan,
    caller: &ServiceCredentials,
) {
    if let Some(change) = plan.membership.clone() {
        let (network, shared, caller) = (network.clone(), shared.clone(), caller.clone());
        let admin_user = match &plan.conversations[change.conv] {
            ConvPlan::Group(members) => members[0],
            ConvPlan::Direct(a, _) => *a,
        };
        // Group changes are made at the group's owner region: its creator's home.
        let (sites, owner) = (plan.sites(), plan.home(admin_user));
        sim.client("admin", async move {
            let core = core_client(network, sites, owner, &caller)?;
            change_membership(core, shared, change, admin_user).await
        });
    }
}

/// Steps the simulation to its end, applying each fault when its time has
/// come. Answers how many faults were applied.
fn drive(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    plan: &Plan,
    core_clocks: &[SimClock],
    engines: &[MemoryEngine],
    shared: &SharedState,
) -> Result<usize, String> {
    let mut pending_faults = plan.faults.iter().peekable();
    let mut applied = 0;
    let mut supervisor = Supervisor::default();
    loop {
        supervisor.restart_failed(sim, plan.sites(), engines);
        while let Some((at, action)) = pending_faults.peek() {
            if sim.elapsed() < *at {
                break;
            }
            apply_fault(sim, action, core_clocks, engines);
            applied += 1;
            pending_faults.next();
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => {
                let waiting = waiting_devices(plan, &lock(shared));
                return Err(format!(
                    "seed {seed}: did not converge: {error}; devices still waiting: {waiting:?}; plan: {plan:?}"
                ));
            }
        }
    }
    Ok(applied)
}

/// What restarts a core whose store failed, as a process supervisor
/// would: the core stops itself (fail-stop); a while later its host is
/// restarted (the simulation's crash and restart) over the engine, which
/// works again, as a restarted fjall recovering its journal on a disk that
/// works again.
#[derive(Default)]
struct Supervisor {
    /// When each failed site's store was first seen failed.
    failed_since: std::collections::BTreeMap<usize, Duration>,
}

/// How long a supervisor takes to restart a stopped core.
const RESTART_DELAY: Duration = Duration::from_millis(500);

impl Supervisor {
    fn restart_failed(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        sites: crate::workload::Sites,
        engines: &[MemoryEngine],
    ) {
        let now = sim.elapsed();
        for (site, engine) in engines.iter().enumerate() {
            if !engine.is_poisoned() {
                continue;
            }
            let since = *self.failed_since.entry(site).or_insert(now);
            if now >= since + RESTART_DELAY {
                engine.recover();
                self.failed_since.remove(&site);
                sim.bounce(crate::workload::host("core", sites, site));
            }
        }
    }
}

/// Applies one fault of the schedule.
fn apply_fault(
    sim: &mut turmoil::Sim<'_>,
    action: &FaultAction,
    core_clocks: &[SimClock],
    engines: &[MemoryEngine],
) {
    match action {
        FaultAction::Partition(a, b) => sim.partition(a.as_str(), b.as_str()),
        FaultAction::Repair(a, b) => sim.repair(a.as_str(), b.as_str()),
        FaultAction::Bounce(host) => sim.bounce(host.as_str()),
        FaultAction::Latency(a, b, latency) => {
            sim.set_link_latency(a.as_str(), b.as_str(), *latency)
        }
        FaultAction::ClockJump(region, skew) => core_clocks[*region].set_skew(*skew),
        FaultAction::StoreFailure(site) => engines[*site].inject(Fault::Poison),
    }
}

/// The devices that have not completed, each with the acknowledged messages
/// it is missing.
fn waiting_devices(plan: &Plan, state: &Shared) -> Vec<String> {
    plan.devices
        .iter()
        .enumerate()
        .filter(|(i, _)| state.outcomes.get(i).is_none_or(|o| o.done_at.is_none()))
        .map(|(i, d)| {
            let missing: Vec<String> = state
                .acked
                .iter()
                .filter(|(id, a)| {
                    plan.conversations[a.conv].members().contains(&d.user)
                        && state
                            .outcomes
                            .get(&i)
                            .and_then(|o| o.seen.get(&a.conv))
                            .is_none_or(|s| !s.contains_key(*id))
                })
                .map(|(id, a)| format!("{id} sent at {:?}", a.started))
                .collect();
            let gaps = state
                .outcomes
                .get(&i)
                .map(|o| o.gaps_at.clone())
                .unwrap_or_default();
            format!("{} (missing {missing:?}; gaps told at {gaps:?})", d.name)
        })
        .collect()
}

/// Brings tokio's process-wide task-id counter to a multiple of 4.
///
/// A crashed host's runtime shuts its tasks down shard by shard, and a
/// current-thread runtime has 4 shards chosen by task id. The shutdown order
/// decides the order in which the crashed host's sockets close, which other
/// hosts observe; the ids themselves come from a counter shared by the whole
/// process. Starting every seed at the same residue makes that order — and
/// so the trace — depend on the seed alone, not on what ran before it in the
/// process. (Seeds running concurrently on other threads would still
/// interleave ids: run seeds one at a time.)
fn align_task_ids() {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    for _ in 0..8 {
        let task = runtime.spawn(async {});
        let id: u64 = task.id().to_string().parse().unwrap_or(3);
        let _ = runtime.block_on(task);
        if id % 4 == 3 {
            return;
        }
    }
}

/// The group's admin adds or removes a member mid-run, through the core's
/// gRPC, retrying until it is acknowledged.
async fn change_membership(
    mut core: CoreClient<tonic::transport::Channel>,
    shared: SharedState,
    change: MembershipChange,
    admin_user: usize,
) -> HostResult {
    tokio::time::sleep(change.at).await;
    let (caller, target, conv_id) = {
        let state = lock(&shared);
        (
            state.callers[admin_user].clone(),
            state.callers[change.user].user_id.clone(),
            state.conv_ids[change.conv].clone(),
        )
    };
    lock(&shared).membership_started = Some(turmoil::sim_elapsed().unwrap_or_default());
    loop {
        let outcome = if change.join {
            let request = pb::AddMembersRequest {
                caller: Some(caller.clone()),
                conv_id: conv_id.clone(),
                user_ids: vec![target.clone()],
            };
            core.add_members(request).await.map(|_| ())
        } else {
            let request = pb::RemoveMemberRequest {
                caller: Some(caller.clone()),
                conv_id: conv_id.clone(),
                user_id: target.clone(),
            };
            match core.remove_member(request).await {
                // A retry after an unknown outcome finds it already done.
                Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
                other => other.map(|_| ()),
            }
        };
        match outcome {
            Ok(()) => break,
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Internal
                ) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(format!("membership change refused: {status}").into()),
        }
    }
    lock(&shared).membership_done = Some(turmoil::sim_elapsed().unwrap_or_default());
    Ok(())
}
