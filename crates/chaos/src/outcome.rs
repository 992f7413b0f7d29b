//! A run's outcome, from what it gathered: the invariants' verdicts (the
//! bad-input one included), the figures and counters of the report, the
//! idle connections' notes, and `observed.json`, the raw evidence.

use std::collections::BTreeMap;

use crate::device::DeviceEnd;
use crate::invariants::{self, Observed, Verdict};
use crate::observe::Samples;
use crate::record::{ProbeAnswer, Records};
use crate::report::{self, Expectation, ProcessEvent, ScenarioReport, Window};
use crate::workload::Population;

/// What the run ended with.
pub struct Finished {
    /// Everything the clients recorded.
    pub records: Records,
    /// What each device ended with.
    pub ends: Vec<DeviceEnd>,
    /// What the sampler saw.
    pub samples: Samples,
    /// The servers' counters at the end.
    pub server: BTreeMap<String, f64>,
    /// What the invariants judge.
    pub observed: Observed,
    /// Each conversation's member devices.
    pub members: BTreeMap<String, Vec<usize>>,
    /// Each device's offline window.
    pub offline: Vec<Option<(f64, f64)>>,
}

/// `observed.json`: every acknowledged send and, per device, what it
/// showed and when each message arrived — the raw evidence behind the
/// verdicts, for an independent check.
pub fn write_evidence(
    path: &std::path::Path,
    finished: &Finished,
    population: &Population,
) -> std::io::Result<()> {
    let mut arrivals: BTreeMap<usize, Vec<(f64, &str)>> = BTreeMap::new();
    for delivery in &finished.records.deliveries {
        arrivals
            .entry(delivery.device)
            .or_default()
            .push((delivery.at, delivery.msg_id.as_str()));
    }
    let devices: serde_json::Map<String, serde_json::Value> = population
        .devices
        .iter()
        .enumerate()
        .map(|(index, device)| {
            let end = finished.ends.get(index);
            (
                device.name.clone(),
                serde_json::json!({
                    "timelines": end.map(|e| &e.timelines),
                    "arrivals": arrivals.get(&index),
                }),
            )
        })
        .collect();
    let sends: Vec<serde_json::Value> = finished
        .records
        .sends
        .iter()
        .map(|s| {
            serde_json::json!({
                "device": population.devices.get(s.device).map(|d| &d.name),
                "conv": s.conv,
                "msg_id": s.msg_id,
                "reply_to": s.reply_to,
                "started": s.started,
                "acknowledged": s.acknowledged,
                "tries": s.tries,
                "media": s.media,
            })
        })
        .collect();
    let text = serde_json::to_string(&serde_json::json!({
        "members": finished.observed.members,
        "sends": sends,
        "devices": devices,
    }))
    .map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// The bad-input verdict: every probe that reached a gateway got a typed
/// error, and no process crashed (a panic or a signal the suite did not
/// send).
fn bad_input_verdict(records: &Records, events: &[ProcessEvent]) -> Verdict {
    let mut violations: Vec<String> = records
        .probes
        .iter()
        .filter(|p| p.answer == ProbeAnswer::Untyped)
        .map(|p| format!("at {:.1} s, {}: {}", p.at, p.what, p.detail))
        .collect();
    violations.extend(
        events
            .iter()
            .filter(|e| e.what.contains("exit status: 101") || e.what.contains("signal"))
            .map(|e| format!("at {:.1} s, {} {}", e.at, e.process, e.what)),
    );
    let reached = records
        .probes
        .iter()
        .filter(|p| p.answer != ProbeAnswer::Unreachable)
        .count();
    invariants::verdict(
        "bad input gets a typed error; nothing crashes",
        format!(
            "{reached} probes answered ({} unreachable during faults), {} process exits",
            records.probes.len() - reached,
            events
                .iter()
                .filter(|e| e.what.starts_with("exited"))
                .count()
        ),
        violations,
    )
}

pub fn fill_report(
    report: &mut ScenarioReport,
    finished: Finished,
    windows: &[Window],
    load_end: f64,
    events: Vec<ProcessEvent>,
) {
    let Finished {
        records,
        ends,
        samples,
        server,
        observed,
        members,
        offline,
    } = finished;
    let windows = with_signals(windows, &samples);
    let expect = Expectation {
        members: &members,
        offline: &offline,
        load_end,
    };
    let analysis = report::analyze(&records, &windows, &expect);
    report.verdicts = invariants::check(&observed);
    report.verdicts.push(bad_input_verdict(&records, &events));
    report.faults = analysis.faults;
    report.convergence = analysis.convergence;
    report.timeline = analysis.timeline;
    let counters = &mut report.counters;
    counters.sends = records.sends.len();
    counters.acknowledged = records
        .sends
        .iter()
        .filter(|s| s.acknowledged.is_some())
        .count();
    counters.never_acknowledged = counters.sends - counters.acknowledged;
    counters.retried = records.sends.iter().filter(|s| s.tries > 1).count();
    counters.media = records.sends.iter().filter(|s| s.media).count();
    counters.deliveries = records.deliveries.len();
    counters.wire_duplicates = ends.iter().map(|e| e.wire_duplicates).sum();
    counters.reconnects = ends.iter().map(|e| e.connects.saturating_sub(1)).sum();
    counters.chain_breaks = ends.iter().map(|e| e.chain_breaks).sum();
    counters.gaps = ends.iter().map(|e| e.gaps).sum();
    counters.symptoms = report::symptom_counts(&records);
    counters.probes = report::probe_counts(&records);
    counters.server = server;
    counters.supervisor_restarts = events.iter().filter(|e| e.what == "restarted").count();
    counters.max_replication_lag_ms = samples.cores.iter().map(|s| s.lag_ms).fold(0.0, f64::max);
    counters.max_gateway_rss_kib = samples
        .gateway_rss_kib
        .values()
        .flatten()
        .map(|[_, kib]| *kib)
        .fold(0.0, f64::max);
    let mut lag: BTreeMap<String, Vec<[f64; 2]>> = BTreeMap::new();
    for sample in &samples.cores {
        lag.entry(sample.region.clone())
            .or_default()
            .push([sample.at, sample.lag_ms]);
    }
    report.replication_lag_ms = lag;
    report.gateway_rss_kib = samples.gateway_rss_kib;
    report.idle_connected = if report.population.idle_connections > 0 {
        samples.idle_connected
    } else {
        Vec::new()
    };
    report.notes = idle_notes(report);
    report.process_events = events;
}

/// For a scenario holding idle connections through a gateway fault: how
/// long until all were back, the rate, the memory each costs a gateway,
/// and both extrapolated to 100,000 connections.
fn idle_notes(report: &ScenarioReport) -> Vec<String> {
    let held = report.population.idle_connections as f64;
    if held == 0.0 {
        return Vec::new();
    }
    let mut notes = Vec::new();
    for fault in report
        .faults
        .iter()
        .filter(|f| f.kind.starts_with("gateway-"))
    {
        let series = &report.idle_connected;
        let lost = series
            .iter()
            .find(|[t, n]| *t >= fault.injected_at && *n < held);
        let back = lost.and_then(|[lost_at, _]| {
            series
                .iter()
                .find(|[t, n]| t > lost_at && *n >= held)
                .map(|[t, _]| t - fault.injected_at)
        });
        let lowest = series
            .iter()
            .filter(|[t, _]| *t >= fault.injected_at)
            .map(|[_, n]| *n)
            .fold(held, f64::min);
        match back {
            Some(seconds) => notes.push(format!(
                "{} on {}: {held:.0} idle connections, down to {lowest:.0} at the lowest, all back within {seconds:.1} s (sampled each second): {:.0} reconnections per second; at that rate 100,000 would take {:.0} s",
                fault.kind,
                fault.target,
                held / seconds,
                100_000.0 * seconds / held
            )),
            None if lost.is_some() => notes.push(format!(
                "{} on {}: of {held:.0} idle connections, {lowest:.0} at the lowest, and not all came back",
                fault.kind, fault.target
            )),
            None => {}
        }
    }
    // Memory: the gateway holding them against the least loaded gateway,
    // just before the first fault.
    let first = report
        .faults
        .first()
        .map_or(f64::INFINITY, |f| f.injected_at);
    let before = |name: &str| {
        report.gateway_rss_kib.get(name).and_then(|points| {
            points
                .iter()
                .filter(|[t, _]| *t < first)
                .map(|[_, kib]| *kib)
                .next_back()
        })
    };
    let mut by_rss: Vec<(&String, f64)> = report
        .gateway_rss_kib
        .keys()
        .filter_map(|name| Some((name, before(name)?)))
        .collect();
    by_rss.sort_by(|a, b| b.1.total_cmp(&a.1));
    if let (Some((holder, with)), Some((_, without))) = (by_rss.first(), by_rss.last()) {
        let per = (with - without) / held;
        notes.push(format!(
            "{holder} held the idle connections at {:.0} MiB against {:.0} MiB for the least loaded gateway: {per:.1} KiB per connection, so about {:.1} GiB for 100,000",
            with / 1024.0,
            without / 1024.0,
            per * 100_000.0 / 1024.0 / 1024.0
        ));
    }
    notes
}

/// Each window with the first sign the cores' own signals gave of it: a
/// core unreachable or unready, fewer links up than before the first
/// fault, or a replication lag over a second.
fn with_signals(windows: &[Window], samples: &Samples) -> Vec<Window> {
    let first = windows
        .iter()
        .map(|w| w.injected_at)
        .fold(f64::INFINITY, f64::min);
    let mut baseline: BTreeMap<&str, f64> = BTreeMap::new();
    for sample in samples.cores.iter().filter(|s| s.at < first && s.up) {
        let links = baseline.entry(sample.region.as_str()).or_default();
        *links = links.max(sample.links_up);
    }
    windows
        .iter()
        .map(|window| {
            let signal = samples
                .cores
                .iter()
                .filter(|s| s.at >= window.injected_at && s.at <= window.healed_at + 1.0)
                .find_map(|s| {
                    let expected = baseline.get(s.region.as_str()).copied().unwrap_or(0.0);
                    let what = if !s.up {
                        format!("core of {} unreachable", s.region)
                    } else if !s.ready {
                        format!("core of {} unready", s.region)
                    } else if s.links_up < expected {
                        format!(
                            "core of {}: {} of {} links up",
                            s.region, s.links_up, expected
                        )
                    } else if s.lag_ms > 1000.0 {
                        format!("core of {}: replication lag {} ms", s.region, s.lag_ms)
                    } else {
                        return None;
                    };
                    Some((s.at, what))
                });
            Window {
                signal,
                ..window.clone()
            }
        })
        .collect()
}
