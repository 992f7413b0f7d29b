//! The report of a run: `report.json`'s schema (stable: fields are only
//! ever added, and `schema` moves when one changes meaning) and the
//! figures computed from the records — the per-second timeline, each
//! fault's time to detect and to recover, convergence, the counters.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::invariants::Verdict;
use crate::record::{ProbeAnswer, Records};

/// The schema version of `report.json`.
pub const SCHEMA: u32 = 1;

/// A whole run: one or more scenarios.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The version of the `meridian` that ran the suite.
    pub meridian_version: String,
    /// `short` or `long`.
    pub profile: String,
    /// `embedded` or `kafka`.
    pub log: String,
    /// The run's seed, every scenario's (`--seed` replays the workload's
    /// choices; the real processes' timing is not replayed).
    pub seed: u64,
    /// Unix seconds when the run started.
    pub started_unix: u64,
    /// Whether every scenario passed.
    pub passed: bool,
    /// Each scenario, in the order run.
    pub scenarios: Vec<ScenarioReport>,
}

/// One scenario's outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub name: String,
    /// Its summary line.
    pub summary: String,
    /// The seed it ran with (`--seed` replays it).
    pub seed: u64,
    /// Every invariant held and the run itself did not fail.
    pub passed: bool,
    /// Why the run could not complete (setup, a fault not injected).
    pub error: Option<String>,
    /// Why the scenario was not run (a fault this run's setup cannot
    /// have, e.g. broker-kill without `--log kafka`); it counts as passed.
    pub skipped: Option<String>,
    /// Seconds of load.
    pub load_seconds: f64,
    /// Seconds the whole scenario took, start to stop.
    pub wall_seconds: f64,
    /// Who ran.
    pub population: PopulationSummary,
    /// Each fault, as it happened.
    pub faults: Vec<FaultReport>,
    /// The invariants' verdicts.
    pub verdicts: Vec<Verdict>,
    /// How long until every member had everything.
    pub convergence: Convergence,
    /// What was counted.
    pub counters: Counters,
    /// Per second of the run.
    pub timeline: Vec<Second>,
    /// Processes that exited on their own, and what the supervisor did.
    pub process_events: Vec<ProcessEvent>,
    /// Resident memory of each gateway, KiB, as `[seconds, kib]`.
    pub gateway_rss_kib: BTreeMap<String, Vec<[f64; 2]>>,
    /// The largest replication lag each region's core reported, ms.
    pub replication_lag_ms: BTreeMap<String, Vec<[f64; 2]>>,
    /// Idle connections open, as `[seconds, count]` (when the scenario
    /// holds some).
    pub idle_connected: Vec<[f64; 2]>,
    /// Figures some faults add (e.g. the 100k-connection extrapolation).
    pub notes: Vec<String>,
}

/// Who ran.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PopulationSummary {
    /// Users, over all regions.
    pub users: usize,
    /// Devices (each a client of its own).
    pub devices: usize,
    /// Direct conversations.
    pub direct_conversations: usize,
    /// Groups, and their members each.
    pub groups: usize,
    /// Members per group.
    pub group_members: usize,
    /// Devices that went offline for a while.
    pub offline_devices: usize,
    /// Idle connections held besides.
    pub idle_connections: usize,
}

/// One fault as it happened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultReport {
    /// Its kind.
    pub kind: String,
    /// What it hit (`core of eu-west`, `us-east <-> eu-west`).
    pub target: String,
    /// Seconds into the load it was injected.
    pub injected_at: f64,
    /// Seconds into the load it was healed (as `injected_at` for an
    /// instant one).
    pub healed_at: f64,
    /// Seconds from injection to the first sign of it: a client's symptom
    /// or the cluster's own signals (a link down, a core unready, lag).
    /// `None`: nothing showed it.
    pub detect_seconds: Option<f64>,
    /// What showed it first.
    pub detected_by: Option<String>,
    /// Seconds from the heal until everything acknowledged before it had
    /// reached every member device that stayed online. `None`: it never did.
    pub recover_seconds: Option<f64>,
    /// Symptoms clients met between injection and heal.
    pub symptoms: usize,
}

/// How long until every member had everything.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Convergence {
    /// Whether every acknowledged send reached every member device.
    pub converged: bool,
    /// Seconds from the last heal until everything acknowledged before it
    /// reached every member device that stayed online.
    pub after_last_heal_seconds: Option<f64>,
    /// The longest a device back from being offline took to have
    /// everything acknowledged before it came back (none offline: 0).
    pub offline_catch_up_seconds: Option<f64>,
    /// Seconds from the end of the load until everything acknowledged
    /// reached every member device.
    pub after_load_seconds: Option<f64>,
}

/// What was counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Sends started.
    pub sends: usize,
    /// Sends acknowledged.
    pub acknowledged: usize,
    /// Sends still unacknowledged when the run stopped (never shown as
    /// sent: not a loss).
    pub never_acknowledged: usize,
    /// Sends that took more than one try (acknowledged or not).
    pub retried: usize,
    /// Sends carrying media.
    pub media: usize,
    /// First deliveries of a message to a device.
    pub deliveries: usize,
    /// Messages received twice on the wire, dropped by the SDK.
    pub wire_duplicates: u64,
    /// Connections opened beyond each device's first.
    pub reconnects: u64,
    /// Deliveries that did not continue the previous one.
    pub chain_breaks: u64,
    /// Gaps servers reported.
    pub gaps: usize,
    /// Symptoms clients met, by kind.
    pub symptoms: BTreeMap<String, usize>,
    /// Probes of bad input, by answer.
    pub probes: BTreeMap<String, usize>,
    /// Per counter of the servers' `/metrics`, summed over the processes
    /// at the end (refused stamps, refused links, slow sessions cut…).
    pub server: BTreeMap<String, f64>,
    /// Processes restarted by the suite's supervisor.
    pub supervisor_restarts: usize,
    /// Largest replication lag any core reported, ms.
    pub max_replication_lag_ms: f64,
    /// Largest resident memory of any gateway, KiB.
    pub max_gateway_rss_kib: f64,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Second {
    /// Seconds into the load (the second's start).
    pub t: u32,
    /// Sends acknowledged in it.
    pub acknowledged: usize,
    /// Deliveries in it.
    pub delivered: usize,
    /// Send → deliver latency of its deliveries to devices that stayed
    /// online, ms: median.
    pub latency_p50_ms: f64,
    /// …99th percentile.
    pub latency_p99_ms: f64,
    /// …largest.
    pub latency_max_ms: f64,
}

/// A process that exited on its own, and what followed.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessEvent {
    /// Seconds into the load.
    pub at: f64,
    /// The process.
    pub process: String,
    /// What happened (`exited: exit status: 1`, `restarted`).
    pub what: String,
}

/// A fault's window, as the runner applied it.
#[derive(Debug, Clone)]
pub struct Window {
    /// The fault's kind.
    pub kind: String,
    /// Its target.
    pub target: String,
    /// Injected at.
    pub injected_at: f64,
    /// Healed at.
    pub healed_at: f64,
    /// The first cluster-side sign after injection, with what it was.
    pub signal: Option<(f64, String)>,
}

/// What the analysis needs besides the records.
#[derive(Debug, Clone)]
pub struct Expectation<'a> {
    /// Each conversation's member devices (indexes).
    pub members: &'a BTreeMap<String, Vec<usize>>,
    /// Each device's offline window, `[from, until)` seconds (none: it
    /// stayed online).
    pub offline: &'a [Option<(f64, f64)>],
    /// The load's end, seconds.
    pub load_end: f64,
}

/// The percentile `p` (0–1) of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The figures of a run computed from its records.
pub struct Analysis {
    /// Per second.
    pub timeline: Vec<Second>,
    /// Per fault.
    pub faults: Vec<FaultReport>,
    /// Convergence.
    pub convergence: Convergence,
}

/// Messages' last delivery to the devices that count.
struct Completion {
    /// msg id → (acknowledged at, last delivery over always-online member
    /// devices, last over all; `None` when one of them lacks it).
    messages: Vec<(f64, Option<f64>, Option<f64>)>,
}

impl Completion {
    fn of(records: &Records, expect: &Expectation<'_>) -> Self {
        let mut delivered: HashMap<(&str, usize), f64> = HashMap::new();
        for delivery in &records.deliveries {
            delivered
                .entry((delivery.msg_id.as_str(), delivery.device))
                .or_insert(delivery.at);
        }
        let mut messages = Vec::new();
        for send in &records.sends {
            let (Some(msg_id), Some(acked)) = (&send.msg_id, send.acknowledged) else {
                continue;
            };
            let members = expect
                .members
                .get(&send.conv)
                .map_or(&[][..], Vec::as_slice);
            let mut online = Some(acked);
            let mut all = Some(acked);
            for &device in members {
                let at = delivered.get(&(msg_id.as_str(), device)).copied();
                all = all.zip(at).map(|(a, b)| a.max(b));
                if expect.offline.get(device).is_none_or(Option::is_none) {
                    online = online.zip(at).map(|(a, b)| a.max(b));
                }
            }
            messages.push((acked, online, all));
        }
        Self { messages }
    }

    /// Seconds after `heal` until every message acknowledged before it was
    /// complete (`online`: over always-online devices); 0 when nothing
    /// waited, `None` when something never completed.
    fn after(&self, heal: f64, online: bool) -> Option<f64> {
        let mut latest = heal;
        for &(acked, on, all) in &self.messages {
            if acked > heal {
                continue;
            }
            latest = latest.max(if online { on } else { all }?);
        }
        Some(latest - heal)
    }
}

/// Seconds whose p99 latency rose well over the worst before the first
/// fault (twice it, and 100 ms more): deliveries slowed, with the figure.
fn slowdowns(timeline: &[Second], windows: &[Window]) -> Vec<(f64, String)> {
    let first = windows
        .iter()
        .map(|w| w.injected_at)
        .fold(f64::INFINITY, f64::min);
    let baseline = timeline
        .iter()
        .filter(|s| f64::from(s.t) + 1.0 <= first && s.t > 0)
        .map(|s| s.latency_p99_ms)
        .fold(0.0, f64::max);
    let threshold = (baseline * 2.0).max(baseline + 100.0);
    timeline
        .iter()
        .filter(|s| s.delivered > 0 && s.latency_p99_ms > threshold)
        .map(|s| {
            (
                f64::from(s.t),
                format!(
                    "deliveries slowed: p99 {:.0} ms (before the faults: {baseline:.0} ms)",
                    s.latency_p99_ms
                ),
            )
        })
        .collect()
}

/// Computes the timeline, each fault's detect and recover times, and
/// convergence.
pub fn analyze(records: &Records, windows: &[Window], expect: &Expectation<'_>) -> Analysis {
    let started: HashMap<&str, f64> = records
        .sends
        .iter()
        .filter_map(|s| Some((s.msg_id.as_deref()?, s.started)))
        .collect();
    let mut seconds: BTreeMap<u32, (usize, Vec<f64>, usize)> = BTreeMap::new();
    for send in &records.sends {
        if let Some(at) = send.acknowledged {
            seconds.entry(at.max(0.0) as u32).or_default().0 += 1;
        }
    }
    for delivery in &records.deliveries {
        let entry = seconds.entry(delivery.at.max(0.0) as u32).or_default();
        entry.2 += 1;
        // Latency over the devices that stayed online: a device back from
        // being offline receives its backlog late by design.
        let online = expect
            .offline
            .get(delivery.device)
            .is_none_or(Option::is_none);
        if let (true, Some(sent)) = (online, started.get(delivery.msg_id.as_str())) {
            entry.1.push((delivery.at - sent).max(0.0) * 1000.0);
        }
    }
    let last = seconds.keys().next_back().copied().unwrap_or(0);
    let timeline: Vec<Second> = (0..=last)
        .map(|t| {
            let (acknowledged, mut latencies, delivered) = seconds.remove(&t).unwrap_or_default();
            latencies.sort_by(f64::total_cmp);
            Second {
                t,
                acknowledged,
                delivered,
                latency_p50_ms: percentile(&latencies, 0.5),
                latency_p99_ms: percentile(&latencies, 0.99),
                latency_max_ms: latencies.last().copied().unwrap_or(0.0),
            }
        })
        .collect();
    let completion = Completion::of(records, expect);
    let slowed = slowdowns(&timeline, windows);
    let faults = windows
        .iter()
        .map(|window| {
            let symptoms: Vec<&crate::record::Symptom> = records
                .symptoms
                .iter()
                .filter(|s| s.at >= window.injected_at && s.at <= window.healed_at + 1.0)
                .collect();
            let by_client = symptoms
                .first()
                .map(|s| (s.at - window.injected_at, format!("a client: {}", s.what)));
            let by_cluster = window
                .signal
                .as_ref()
                .map(|(at, what)| ((at - window.injected_at).max(0.0), what.clone()));
            let by_latency = slowed
                .iter()
                .find(|(t, _)| *t + 1.0 >= window.injected_at && *t <= window.healed_at + 1.0)
                .map(|(t, what)| ((t - window.injected_at).max(0.0), what.clone()));
            let first = [by_client, by_cluster, by_latency]
                .into_iter()
                .flatten()
                .min_by(|a, b| a.0.total_cmp(&b.0));
            FaultReport {
                kind: window.kind.clone(),
                target: window.target.clone(),
                injected_at: window.injected_at,
                healed_at: window.healed_at,
                detect_seconds: first.as_ref().map(|(s, _)| *s),
                detected_by: first.map(|(_, what)| what),
                recover_seconds: completion.after(window.healed_at, true),
                symptoms: symptoms.len(),
            }
        })
        .collect();
    let last_heal = windows.iter().map(|w| w.healed_at).fold(0.0, f64::max);
    let after_load = completion.after(expect.load_end, false);
    let convergence = Convergence {
        converged: after_load.is_some(),
        after_last_heal_seconds: completion.after(last_heal, true),
        offline_catch_up_seconds: catch_up(records, expect),
        after_load_seconds: after_load,
    };
    Analysis {
        timeline,
        faults,
        convergence,
    }
}

/// The longest catch-up of a device back from being offline: from its
/// return until it had every message of its conversations acknowledged
/// before then; `None` when one never arrived.
fn catch_up(records: &Records, expect: &Expectation<'_>) -> Option<f64> {
    let mut arrived: HashMap<(usize, &str), f64> = HashMap::new();
    for delivery in &records.deliveries {
        arrived
            .entry((delivery.device, delivery.msg_id.as_str()))
            .or_insert(delivery.at);
    }
    let mut longest: f64 = 0.0;
    for (device, window) in expect.offline.iter().enumerate() {
        let Some((_, back)) = *window else { continue };
        for send in &records.sends {
            let (Some(msg_id), Some(acked)) = (&send.msg_id, send.acknowledged) else {
                continue;
            };
            let member = expect
                .members
                .get(&send.conv)
                .is_some_and(|m| m.contains(&device));
            if member && acked <= back {
                let at = arrived.get(&(device, msg_id.as_str()))?;
                longest = longest.max(at - back);
            }
        }
    }
    Some(longest)
}

/// Acknowledged messages some member device still lacks.
pub fn missing(records: &Records, members: &BTreeMap<String, Vec<usize>>) -> usize {
    let expect = Expectation {
        members,
        offline: &[],
        load_end: 0.0,
    };
    Completion::of(records, &expect)
        .messages
        .iter()
        .filter(|(_, _, all)| all.is_none())
        .count()
}

/// Counts probe answers by kind.
pub fn probe_counts(records: &Records) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for probe in &records.probes {
        let key = match probe.answer {
            ProbeAnswer::Typed => "typed",
            ProbeAnswer::Untyped => "untyped",
            ProbeAnswer::Unreachable => "unreachable",
        };
        *counts.entry(key.to_string()).or_insert(0) += 1;
    }
    counts
}

/// Counts symptoms by their kind (the text before the first `:`).
pub fn symptom_counts(records: &Records) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for symptom in &records.symptoms {
        let kind = symptom.what.split(':').next().unwrap_or_default().trim();
        *counts.entry(kind.to_string()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{DeliveryRecord, SendRecord, Symptom};

    fn send(device: usize, msg: &str, started: f64, acked: f64) -> SendRecord {
        SendRecord {
            started,
            acknowledged: Some(acked),
            device,
            conv: "c".into(),
            msg_id: Some(msg.into()),
            reply_to: None,
            media: false,
            tries: 1,
        }
    }

    fn delivery(device: usize, msg: &str, at: f64) -> DeliveryRecord {
        DeliveryRecord {
            at,
            device,
            msg_id: msg.into(),
        }
    }

    #[test]
    fn recovery_waits_for_what_was_acknowledged_before_the_heal() {
        let records = Records {
            sends: vec![send(0, "m1", 1.0, 1.1), send(0, "m2", 12.0, 12.1)],
            deliveries: vec![
                delivery(0, "m1", 1.2),
                delivery(1, "m1", 1.3),
                // Device 2 was offline: it counts for convergence only.
                delivery(2, "m1", 30.0),
                delivery(0, "m2", 12.2),
                delivery(1, "m2", 17.5),
                delivery(2, "m2", 30.0),
            ],
            symptoms: vec![Symptom {
                at: 10.4,
                device: 1,
                what: "send refused: unavailable".into(),
            }],
            probes: Vec::new(),
        };
        let members = BTreeMap::from([("c".to_string(), vec![0, 1, 2])]);
        let windows = [Window {
            kind: "core-kill".into(),
            target: "core of eu-west".into(),
            injected_at: 10.0,
            healed_at: 15.0,
            signal: Some((10.9, "core of eu-west unready".into())),
        }];
        let expect = Expectation {
            members: &members,
            offline: &[None, None, Some((14.0, 28.0))],
            load_end: 20.0,
        };
        let analysis = analyze(&records, &windows, &expect);
        let fault = &analysis.faults[0];
        assert!((fault.detect_seconds.unwrap() - 0.4).abs() < 1e-9);
        assert!(
            fault
                .detected_by
                .as_deref()
                .unwrap()
                .starts_with("a client")
        );
        assert!((fault.recover_seconds.unwrap() - 2.5).abs() < 1e-9);
        assert!(analysis.convergence.converged);
        assert!((analysis.convergence.after_load_seconds.unwrap() - 10.0).abs() < 1e-9);
        // Over the devices that stayed online: m2's last copy at 17.5.
        assert!((analysis.convergence.after_last_heal_seconds.unwrap() - 2.5).abs() < 1e-9);
        // Device 2, back at 28, had both by 30.
        assert!((analysis.convergence.offline_catch_up_seconds.unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(analysis.timeline[12].delivered, 1);
        assert_eq!(analysis.timeline[17].latency_max_ms.round(), 5500.0);
    }

    #[test]
    fn a_message_that_never_arrives_leaves_no_recovery_time() {
        let records = Records {
            sends: vec![send(0, "m1", 1.0, 1.1)],
            deliveries: vec![delivery(0, "m1", 1.2)],
            ..Records::default()
        };
        let members = BTreeMap::from([("c".to_string(), vec![0, 1])]);
        let expect = Expectation {
            members: &members,
            offline: &[None, None],
            load_end: 5.0,
        };
        let analysis = analyze(&records, &[], &expect);
        assert!(!analysis.convergence.converged);
        assert_eq!(analysis.convergence.after_load_seconds, None);
    }
}
