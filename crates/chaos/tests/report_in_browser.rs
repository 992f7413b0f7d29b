//! `report.html` opened in headless Chromium: it renders every plot (an
//! SVG with drawn lines per timeline), fetches nothing, logs nothing to
//! the console, and a screenshot of it is taken.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use meridian_chaos::invariants::verdict;
use meridian_chaos::report::{
    Convergence, Counters, FaultReport, PopulationSummary, Report, SCHEMA, ScenarioReport, Second,
};

/// A report as a run of two scenarios writes it: one passed, one failed
/// with evidence, with timelines, lag, memory and idle connections.
fn report() -> Report {
    let timeline: Vec<Second> = (0..40)
        .map(|t| Second {
            t,
            acknowledged: 20,
            delivered: 160,
            latency_p50_ms: 4.0 + f64::from(t % 3),
            latency_p99_ms: if (10..20).contains(&t) { 900.0 } else { 12.0 },
            latency_max_ms: 30.0,
        })
        .collect();
    let series = |f: fn(f64) -> f64| -> Vec<[f64; 2]> {
        (0..40).map(|t| [f64::from(t), f(f64::from(t))]).collect()
    };
    let fault = FaultReport {
        kind: "link-partition".into(),
        target: "us-east <-> eu-west".into(),
        injected_at: 10.0,
        healed_at: 20.0,
        detect_seconds: Some(1.0),
        detected_by: Some("core of us-east: 1 of 2 links up".into()),
        recover_seconds: Some(1.3),
        symptoms: 0,
    };
    let scenario = |name: &str, held: bool| ScenarioReport {
        name: name.into(),
        summary: "a <b>cut</b> link & more".into(),
        seed: 7,
        passed: held,
        load_seconds: 40.0,
        wall_seconds: 45.0,
        population: PopulationSummary {
            users: 12,
            devices: 24,
            direct_conversations: 12,
            groups: 2,
            group_members: 8,
            offline_devices: 2,
            idle_connections: 1000,
        },
        faults: vec![fault.clone()],
        verdicts: vec![verdict(
            "no acknowledged send lost",
            "800 acknowledged sends".into(),
            if held {
                Vec::new()
            } else {
                vec!["m1 (acknowledged, in c1) never reached us-east/u0/d1".into()]
            },
        )],
        convergence: Convergence {
            converged: held,
            after_last_heal_seconds: Some(1.3),
            offline_catch_up_seconds: Some(2.0),
            after_load_seconds: Some(0.2),
        },
        counters: Counters {
            sends: 800,
            acknowledged: 800,
            server: BTreeMap::from([("meridian_hlc_refused_total".into(), 3.0)]),
            ..Counters::default()
        },
        timeline: timeline.clone(),
        gateway_rss_kib: BTreeMap::from([
            (
                "gateway 0 of us-east".into(),
                series(|t| 30_000.0 + t * 100.0),
            ),
            ("gateway 1 of us-east".into(), series(|_| 31_000.0)),
        ]),
        replication_lag_ms: BTreeMap::from([("eu-west".into(), series(|t| t * 10.0))]),
        idle_connected: series(|t| if t < 10.0 { 1000.0 } else { 990.0 }),
        notes: vec!["gateway 0 of us-east held the idle connections".into()],
        ..ScenarioReport::default()
    };
    Report {
        schema: SCHEMA,
        meridian_version: "meridian test".into(),
        profile: "short".into(),
        log: "embedded".into(),
        seed: 7,
        started_unix: 0,
        passed: false,
        scenarios: vec![scenario("link-partition", true), scenario("storm", false)],
    }
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

#[test]
fn the_report_renders_its_plots_in_a_browser_and_fetches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let html = meridian_chaos::html::render(&report());
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html).unwrap();
    let url = format!("file://{}", page.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
    ];
    let dom = Command::new(chromium())
        .args(common)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium runs (installed by .ci/test)");
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    // Five plots per scenario (latency, throughput, lag, memory, idle).
    assert_eq!(
        dom_text.matches("<svg").count(),
        10,
        "every plot is in the page"
    );
    assert!(
        dom_text.matches("<polyline").count() >= 20,
        "the plots have lines"
    );
    assert!(
        dom_text.contains("never reached us-east/u0/d1"),
        "the evidence is shown"
    );
    assert!(
        dom_text.contains("a &lt;b&gt;cut&lt;/b&gt; link"),
        "text is escaped"
    );
    for fetch in ["src=", "href=\"http", "<script", "<link"] {
        assert!(!html.contains(fetch), "self-contained: no {fetch}");
    }
    let console: Vec<String> = String::from_utf8_lossy(&dom.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .map(str::to_string)
        .collect();
    assert!(console.is_empty(), "console messages: {console:?}");

    let shot = dir.path().join("report.png");
    let status = Command::new(chromium())
        .args(common)
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1100,3000")
        .arg(&url)
        .output()
        .unwrap();
    assert!(status.status.success());
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(
        png.len() > 50_000,
        "a page with plots, not a blank one: {} bytes",
        png.len()
    );
}
