//! One scenario, run: the cluster started, the population registered,
//! every device and the watchers started, the fault schedule applied on
//! time (a supervisor restarting whatever exits on its own meanwhile),
//! the load ended, convergence awaited, the invariants checked on what
//! the devices showed, and everything stopped — on every path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meridian_seams::Rng;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, ClusterOptions, SmallDisk};
use crate::device::{self, Control, DeviceEnd, DevicePlan};
use crate::invariants::{Acknowledged, DeviceView, Observed};
use crate::observe::{self, Samples, Targets};
use crate::outcome::{Finished, fill_report, write_evidence};
use crate::record::Recorder;
use crate::report::{self, ScenarioReport, Window};
use crate::scenario::{Fault, FaultKind, GATEWAYS_PER_REGION, Profile, REGIONS, Scenario};
use crate::supervisor::{Supervisor, refresh_pids};
use crate::workload::{Gateways, Population};
use crate::{faults, idle};

/// How often the supervisor looks for exited processes while it waits.
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `meridian` binary the cluster runs.
    pub binary: PathBuf,
    /// Where each scenario's files, logs and the report go.
    pub out: PathBuf,
    /// The profile.
    pub profile: Profile,
    /// The seed of the workload's choices (device schedules, offline
    /// windows, conversations picked, replies, media).
    pub seed: u64,
    /// The replication log the regions run.
    pub log: LogChoice,
}

/// The replication log the regions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogChoice {
    /// Each core's embedded log.
    Embedded,
    /// A Kafka broker per region.
    Kafka,
}

/// A scheduled change: a fault's start or end.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Inject(usize),
    Heal(usize),
}

/// The schedule as a time-ordered list of steps (a heal before an
/// injection at the same moment); an instant fault has no heal.
fn steps(faults: &[Fault]) -> Vec<(f64, Step)> {
    let mut steps: Vec<(f64, Step)> = faults
        .iter()
        .enumerate()
        .flat_map(|(i, fault)| {
            let inject = (fault.at, Step::Inject(i));
            let heal = (fault.kind.seconds() > 0.0)
                .then(|| (fault.at + fault.kind.seconds(), Step::Heal(i)));
            std::iter::once(inject).chain(heal)
        })
        .collect();
    steps.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then_with(|| matches!(a.1, Step::Inject(_)).cmp(&matches!(b.1, Step::Inject(_))))
    });
    steps
}

/// What a fault hits, for the report.
fn target(kind: &FaultKind) -> String {
    match kind {
        FaultKind::GatewayKill {
            region, gateway, ..
        }
        | FaultKind::GatewayFreeze {
            region, gateway, ..
        } => format!("gateway {gateway} of {region}"),
        FaultKind::GatewayTierLoss { region, .. } => format!("every gateway of {region}"),
        FaultKind::RegionDrain { region, .. } => format!("{region}, drained"),
        FaultKind::CoreKill { region, .. }
        | FaultKind::CoreFreeze { region, .. }
        | FaultKind::ClockSkew { region, .. } => format!("core of {region}"),
        FaultKind::LinkPartition { regions, .. } | FaultKind::LinkSlow { regions, .. } => {
            format!("{} <-> {}", regions[0], regions[1])
        }
        FaultKind::LinkOneway { from, to, .. } => format!("{from} -> {to}"),
        FaultKind::BrokerKill { region, .. } => format!("broker of {region}"),
        FaultKind::S3Down { region, .. } => format!("object storage of {region}"),
        FaultKind::DiskFull { region, .. } => format!("disk of {region}"),
        FaultKind::SlowConsumer { devices, .. } => format!("{devices} devices"),
        FaultKind::ReconnectStorm { region } => format!("every client of {region}"),
    }
}

/// Runs `scenario`; never fails: what goes wrong is in the report.
pub async fn run_scenario(scenario: &Scenario, options: &RunOptions) -> ScenarioReport {
    let clock = meridian_seams::SystemClock::shared();
    let wall = clock.monotonic();
    let mut report = ScenarioReport {
        name: scenario.name.clone(),
        summary: scenario.summary.clone(),
        seed: options.seed,
        load_seconds: scenario.load_seconds(options.profile),
        ..ScenarioReport::default()
    };
    let needs_kafka = scenario
        .faults
        .iter()
        .any(|f| matches!(f.kind, FaultKind::BrokerKill { .. }));
    if needs_kafka && options.log == LogChoice::Embedded {
        report.skipped =
            Some("broker-kill needs the regions on Kafka: run with --log kafka".into());
        report.passed = true;
        return report;
    }
    let dir = options.out.join(&scenario.name);
    let _ = std::fs::remove_dir_all(&dir);
    let small_disk = scenario.faults.iter().find_map(|fault| match &fault.kind {
        FaultKind::DiskFull {
            region,
            capacity_mib,
            ..
        } => Some(SmallDisk {
            region: region.clone(),
            mib: *capacity_mib,
        }),
        _ => None,
    });
    if small_disk.is_some() && !is_root() {
        report.skipped = Some("disk-full mounts a small tmpfs, which needs root".into());
        report.passed = true;
        return report;
    }
    let started = Cluster::start(ClusterOptions {
        binary: options.binary.clone(),
        dir: dir.clone(),
        gateways_per_region: GATEWAYS_PER_REGION,
        small_disk,
        kafka: options.log == LogChoice::Kafka,
    })
    .await;
    match started {
        Ok(mut cluster) => {
            if let Err(error) = drive(&mut cluster, scenario, options, &mut report).await {
                report.error = Some(error);
            }
            cluster.stop().await;
        }
        Err(error) => report.error = Some(format!("starting the cluster: {error}")),
    }
    report.passed = report.error.is_none()
        && !report.verdicts.is_empty()
        && report.verdicts.iter().all(|v| v.held);
    report.wall_seconds = clock.monotonic().saturating_sub(wall).as_secs_f64();
    report
}

/// Whether this process runs as root (`Uid:` in `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// Everything the run started besides the cluster.
struct Running {
    recorder: Arc<Recorder>,
    control: Arc<Control>,
    targets: Arc<Targets>,
    devices: Vec<JoinHandle<DeviceEnd>>,
    watchers: Vec<JoinHandle<()>>,
    sampler: JoinHandle<Samples>,
    idle: Vec<JoinHandle<()>>,
    /// Per device: its offline window, if any.
    offline: Vec<Option<(f64, f64)>>,
}

fn gateways_of(cluster: &Cluster) -> Gateways {
    REGIONS
        .iter()
        .map(|region| {
            let urls = cluster.region(region).map_or_else(Vec::new, |r| {
                (0..r.gateway_ports.len())
                    .filter_map(|i| r.gateway_url(i))
                    .collect()
            });
            (region.to_string(), urls)
        })
        .collect()
}

/// The device plans: each device's share of the rate, and an offline
/// window for a seeded share of them.
fn plan_devices(
    population: &Population,
    scenario: &Scenario,
    profile: Profile,
    rng: &Rng,
) -> Vec<DevicePlan> {
    let load = scenario.load_seconds(profile);
    let workload = &scenario.workload;
    let rate = workload.sends_per_second / population.devices.len().max(1) as f64;
    population
        .devices
        .iter()
        .enumerate()
        .map(|(index, device)| {
            let offline = rng.chance(workload.offline_share).then(|| {
                let from = load * (0.1 + 0.4 * rng.below(1000) as f64 / 1000.0);
                let length = load * (0.1 + 0.2 * rng.below(1000) as f64 / 1000.0);
                (from, (from + length).min(load))
            });
            DevicePlan {
                index,
                device: device.clone(),
                conversations: population.conversations_of(device.user),
                rate,
                media_share: workload.media_share,
                offline,
                seed: rng.next_u64(),
            }
        })
        .collect()
}

/// The gateway the idle connections are held on: the first one a gateway
/// fault or a reconnect storm names, else us-east's first.
fn idle_gateway(scenario: &Scenario) -> (String, usize) {
    scenario
        .faults
        .iter()
        .find_map(|fault| match &fault.kind {
            FaultKind::GatewayKill {
                region, gateway, ..
            }
            | FaultKind::GatewayFreeze {
                region, gateway, ..
            } => Some((region.clone(), *gateway)),
            FaultKind::GatewayTierLoss { region, .. } | FaultKind::ReconnectStorm { region } => {
                Some((region.clone(), 0))
            }
            _ => None,
        })
        .unwrap_or_else(|| (REGIONS[0].to_string(), 0))
}

async fn start_load(
    cluster: &Cluster,
    scenario: &Scenario,
    options: &RunOptions,
    population: &Population,
    report: &mut ScenarioReport,
) -> Result<Running, String> {
    let rng = Rng::seeded(options.seed);
    let gateways = gateways_of(cluster);
    let plans = plan_devices(population, scenario, options.profile, &rng);
    let control = Arc::new(Control::new(plans.len()));
    let targets = Arc::new(Targets {
        admin_ports: REGIONS
            .iter()
            .filter_map(|r| Some((r.to_string(), cluster.region(r)?.admin_port)))
            .collect(),
        ..Targets::default()
    });
    refresh_pids(cluster, &targets);
    let mut idle = Vec::new();
    let idle_count = scenario.workload.idle_connections;
    if idle_count > 0 {
        let (region, index) = idle_gateway(scenario);
        let mut order = gateways.get(&region).cloned().unwrap_or_default();
        let first = index.min(order.len());
        order.rotate_left(first);
        let tokens = idle::register(&order[0], idle_count)
            .await
            .map_err(|e| e.to_string())?;
        for (i, token) in tokens.into_iter().enumerate() {
            idle.push(tokio::spawn(idle::hold(
                region.clone(),
                order.clone(),
                token,
                options.seed ^ i as u64,
                targets.clone(),
                control.clone(),
            )));
        }
    }
    let offline: Vec<Option<(f64, f64)>> = plans.iter().map(|p| p.offline).collect();
    report.population.offline_devices = plans.iter().filter(|p| p.offline.is_some()).count();
    report.population.idle_connections = idle_count;
    // Time zero: the load starts now.
    let recorder = Arc::new(Recorder::start(meridian_seams::SystemClock::shared()));
    let sampler = tokio::spawn(observe::sample(
        targets.clone(),
        recorder.clone(),
        control.clone(),
    ));
    let all_gateways: Vec<String> = gateways.values().flatten().cloned().collect();
    let watchers = vec![tokio::spawn(observe::probe(
        all_gateways,
        population.devices[0].token.clone(),
        recorder.clone(),
        control.clone(),
    ))];
    let devices = plans
        .into_iter()
        .map(|plan| tokio::spawn(device::run(plan, control.clone(), recorder.clone())))
        .collect();
    Ok(Running {
        recorder,
        control,
        targets,
        devices,
        watchers,
        sampler,
        idle,
        offline,
    })
}

/// Waits until `seconds` into the load, supervising meanwhile.
async fn wait_until(
    cluster: &mut Cluster,
    run: &Running,
    seconds: f64,
    supervisor: &mut Supervisor,
) {
    while run.recorder.now() < seconds {
        supervisor.tend(cluster, &run.recorder, &run.targets).await;
        tokio::time::sleep(run.recorder.until(seconds).min(SUPERVISE_EVERY)).await;
    }
}

/// Applies one step of the schedule.
async fn apply(
    cluster: &mut Cluster,
    run: &Running,
    fault: &FaultKind,
    step: Step,
    seed: u64,
) -> Result<(), String> {
    let inject = matches!(step, Step::Inject(_));
    match fault {
        FaultKind::SlowConsumer {
            devices,
            read_every_ms,
            ..
        } => {
            // Spread evenly over the population's indexes, never device 0,
            // whose token the prober uses.
            let count = run.control.devices().saturating_sub(1);
            for i in 0..(*devices).min(count) {
                let device = 1 + i * count / (*devices).min(count).max(1);
                run.control
                    .set_slow(device, if inject { *read_every_ms } else { 0 });
            }
        }
        FaultKind::ReconnectStorm { region } => {
            if inject {
                run.control.storm(region);
            }
        }
        _ if inject => faults::inject(cluster, fault, seed)
            .await
            .map_err(|e| e.to_string())?,
        _ => faults::heal(cluster, fault)
            .await
            .map_err(|e| e.to_string())?,
    }
    refresh_pids(cluster, &run.targets);
    Ok(())
}

/// Drives the scenario on a started cluster, filling `report`.
async fn drive(
    cluster: &mut Cluster,
    scenario: &Scenario,
    options: &RunOptions,
    report: &mut ScenarioReport,
) -> Result<(), String> {
    let population = Population::register(&gateways_of(cluster), &scenario.workload)
        .await
        .map_err(|e| e.to_string())?;
    report.population.users = population.users.len();
    report.population.devices = population.devices.len();
    report.population.groups = population.conversations.iter().filter(|c| c.group).count();
    report.population.direct_conversations =
        population.conversations.len() - report.population.groups;
    report.population.group_members = scenario.workload.group_members;
    let run = start_load(cluster, scenario, options, &population, report).await?;
    let schedule = scenario.schedule(options.profile);
    let load_end = scenario.load_seconds(options.profile);
    let mut supervisor = Supervisor::default();
    let mut windows: Vec<Window> = schedule
        .iter()
        .map(|fault| Window {
            kind: fault.kind.name().to_string(),
            target: target(&fault.kind),
            injected_at: fault.at,
            healed_at: fault.at + fault.kind.seconds(),
            signal: None,
        })
        .collect();
    let mut failure = None;
    let mut active = std::collections::BTreeSet::new();
    for (at, step) in steps(&schedule) {
        wait_until(cluster, &run, at, &mut supervisor).await;
        let (Step::Inject(i) | Step::Heal(i)) = step;
        let now = run.recorder.now();
        match step {
            Step::Inject(_) => {
                windows[i].injected_at = now;
                windows[i].healed_at = now + schedule[i].kind.seconds();
            }
            Step::Heal(_) => windows[i].healed_at = now,
        }
        println!(
            "  {now:6.1} s  {} {} ({})",
            if matches!(step, Step::Inject(_)) {
                "inject"
            } else {
                "heal  "
            },
            windows[i].kind,
            windows[i].target
        );
        match apply(cluster, &run, &schedule[i].kind, step, options.seed).await {
            Ok(()) if matches!(step, Step::Inject(_)) && schedule[i].kind.seconds() > 0.0 => {
                active.insert(i);
            }
            Ok(()) => {
                active.remove(&i);
            }
            Err(error) => {
                failure = Some(format!(
                    "{} on {}: {error}",
                    windows[i].kind, windows[i].target
                ));
                break;
            }
        }
    }
    // A step that failed ends the schedule: what is still on is healed, so
    // the verdicts judge a cluster that could recover.
    for i in std::mem::take(&mut active) {
        let _ = apply(
            cluster,
            &run,
            &schedule[i].kind,
            Step::Heal(i),
            options.seed,
        )
        .await;
        windows[i].healed_at = run.recorder.now();
    }
    if failure.is_none() {
        wait_until(cluster, &run, load_end, &mut supervisor).await;
    }
    run.control.sending.store(false, Ordering::SeqCst);
    let settle_until =
        windows.iter().map(|w| w.healed_at).fold(load_end, f64::max) + scenario.run.settle_seconds;
    let members = member_indexes(&population);
    loop {
        let done = run.control.outstanding.load(Ordering::SeqCst) == 0
            && run
                .recorder
                .read(|records| report::missing(records, &members) == 0);
        if done || run.recorder.now() >= settle_until {
            break;
        }
        let at = run.recorder.now() + 0.25;
        wait_until(cluster, &run, at, &mut supervisor).await;
    }
    let finished = finish(cluster, run, &population, &members).await;
    let evidence = options.out.join(&scenario.name).join("observed.json");
    if let Err(error) = write_evidence(&evidence, &finished, &population) {
        eprintln!("meridian chaos: writing {}: {error}", evidence.display());
    }
    fill_report(report, finished, &windows, load_end, supervisor.events);
    failure.map_or(Ok(()), Err)
}

/// Each conversation's member device indexes.
fn member_indexes(population: &Population) -> BTreeMap<String, Vec<usize>> {
    population
        .conversations
        .iter()
        .map(|c| {
            let devices = c
                .users
                .iter()
                .flat_map(|&u| population.users[u].devices.iter().copied())
                .collect();
            (c.conv_id.clone(), devices)
        })
        .collect()
}

/// Stops every device and watcher and gathers what they saw.
async fn finish(
    cluster: &Cluster,
    run: Running,
    population: &Population,
    members: &BTreeMap<String, Vec<usize>>,
) -> Finished {
    let offline = run.offline.clone();
    run.control.stop.store(true, Ordering::SeqCst);
    let mut ends = Vec::new();
    for handle in run.devices {
        ends.push(handle.await.unwrap_or_default());
    }
    for handle in run.watchers.into_iter().chain(run.idle) {
        let _ = handle.await;
    }
    let samples = run.sampler.await.unwrap_or_default();
    let mut urls = Vec::new();
    for region in REGIONS {
        if let Some(processes) = cluster.region(region) {
            urls.push(format!("http://127.0.0.1:{}/metrics", processes.admin_port));
            for i in 0..processes.gateway_ports.len() {
                urls.extend(
                    processes
                        .gateway_admin_url(i)
                        .map(|u| format!("{u}/metrics")),
                );
            }
        }
    }
    let server = observe::server_counters(&urls).await;
    let records = run.recorder.take();
    let observed = Observed {
        acknowledged: records
            .sends
            .iter()
            .filter_map(|s| {
                Some(Acknowledged {
                    conv: s.conv.clone(),
                    msg_id: s.msg_id.clone()?,
                    reply_to: s.reply_to.clone(),
                })
            })
            .collect(),
        members: population.member_devices(),
        devices: population
            .devices
            .iter()
            .zip(&ends)
            .map(|(device, end)| {
                (
                    device.name.clone(),
                    DeviceView {
                        timelines: end.timelines.clone(),
                        wire_duplicates: end.wire_duplicates,
                    },
                )
            })
            .collect(),
    };
    Finished {
        records,
        ends,
        samples,
        server,
        observed,
        members: members.clone(),
        offline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_heals_before_it_injects_at_the_same_moment() {
        let faults = vec![
            Fault {
                at: 0.0,
                kind: FaultKind::CoreFreeze {
                    region: "us-east".into(),
                    seconds: 5.0,
                },
            },
            Fault {
                at: 5.0,
                kind: FaultKind::ReconnectStorm {
                    region: "eu-west".into(),
                },
            },
        ];
        assert_eq!(
            steps(&faults),
            [
                (0.0, Step::Inject(0)),
                (5.0, Step::Heal(0)),
                (5.0, Step::Inject(1)),
            ]
        );
    }
}
