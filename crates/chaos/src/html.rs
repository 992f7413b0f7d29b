//! `report.html`: one self-contained file (inline SVG plots drawn by
//! plotters, inline CSS, no script, nothing fetched) with, per scenario,
//! the verdicts and their evidence, each fault's detect and recover
//! times, convergence, the counters, and timelines with the fault
//! windows shaded.

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::report::{FaultReport, Report, ScenarioReport};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 240;

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A series to plot: its name and `[x, y]` points.
struct Series<'a> {
    name: String,
    points: &'a [[f64; 2]],
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// One line chart as SVG, the faults' windows shaded.
fn chart(
    title: &str,
    y_label: &str,
    x_max: f64,
    series: &[Series<'_>],
    faults: &[FaultReport],
) -> Result<String, String> {
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|[_, y]| *y))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max.max(1.0), 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds into the load")
            .y_desc(y_label)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        for fault in faults {
            let end = fault.healed_at.max(fault.injected_at + x_max / 400.0);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(fault.injected_at, 0.0), (end, y_max)],
                    RGBColor(255, 0, 0).mix(0.12).filled(),
                )))
                .map_err(|e| e.to_string())?;
        }
        for (i, s) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|[x, y]| (*x, *y)),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// The plots of one scenario.
fn plots(scenario: &ScenarioReport) -> Result<String, String> {
    let x_max = scenario
        .timeline
        .last()
        .map_or(scenario.load_seconds, |s| f64::from(s.t) + 1.0)
        .max(scenario.load_seconds);
    let column = |f: fn(&crate::report::Second) -> f64| -> Vec<[f64; 2]> {
        scenario
            .timeline
            .iter()
            .map(|s| [f64::from(s.t), f(s)])
            .collect()
    };
    let (p50, p99) = (column(|s| s.latency_p50_ms), column(|s| s.latency_p99_ms));
    let (acked, delivered) = (
        column(|s| s.acknowledged as f64),
        column(|s| s.delivered as f64),
    );
    let faults = &scenario.faults;
    let mut out = String::new();
    out += &chart(
        "send → deliver latency",
        "ms",
        x_max,
        &[
            Series {
                name: "p50".into(),
                points: &p50,
            },
            Series {
                name: "p99".into(),
                points: &p99,
            },
        ],
        faults,
    )?;
    out += &chart(
        "throughput",
        "per second",
        x_max,
        &[
            Series {
                name: "sends acknowledged".into(),
                points: &acked,
            },
            Series {
                name: "deliveries".into(),
                points: &delivered,
            },
        ],
        faults,
    )?;
    let lag: Vec<Series<'_>> = scenario
        .replication_lag_ms
        .iter()
        .map(|(region, points)| Series {
            name: format!("into {region}"),
            points,
        })
        .collect();
    out += &chart("replication lag", "ms", x_max, &lag, faults)?;
    let rss: Vec<Vec<[f64; 2]>> = scenario
        .gateway_rss_kib
        .values()
        .map(|points| points.iter().map(|[t, kib]| [*t, kib / 1024.0]).collect())
        .collect();
    let rss_series: Vec<Series<'_>> = scenario
        .gateway_rss_kib
        .keys()
        .zip(&rss)
        .map(|(name, points)| Series {
            name: name.clone(),
            points,
        })
        .collect();
    out += &chart("gateway memory (RSS)", "MiB", x_max, &rss_series, faults)?;
    if !scenario.idle_connected.is_empty() {
        out += &chart(
            "idle connections open",
            "connections",
            x_max,
            &[Series {
                name: "connected".into(),
                points: &scenario.idle_connected,
            }],
            faults,
        )?;
    }
    Ok(out)
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_string(), |s| format!("{s:.2} s"))
}

fn scenario_section(out: &mut String, scenario: &ScenarioReport) {
    let verdict = match (&scenario.skipped, scenario.passed) {
        (Some(_), _) => "skipped",
        (None, true) => "pass",
        (None, false) => "FAIL",
    };
    let _ = write!(
        out,
        "<section id=\"{name}\"><h2>{name} <span class=\"{class}\">{verdict}</span></h2>\
         <p>{summary}</p><p class=\"meta\">seed {seed} · {load} s of load · {wall:.0} s in all · \
         {users} users, {devices} devices, {direct} direct conversations, {groups} groups of {members}, \
         {offline} devices offline for a while, {idle} idle connections</p>",
        name = escape(&scenario.name),
        class = verdict.to_lowercase(),
        summary = escape(&scenario.summary),
        seed = scenario.seed,
        load = scenario.load_seconds,
        wall = scenario.wall_seconds,
        users = scenario.population.users,
        devices = scenario.population.devices,
        direct = scenario.population.direct_conversations,
        groups = scenario.population.groups,
        members = scenario.population.group_members,
        offline = scenario.population.offline_devices,
        idle = scenario.population.idle_connections,
    );
    if let Some(reason) = &scenario.skipped {
        let _ = write!(
            out,
            "<p class=\"meta\">Skipped: {}</p></section>",
            escape(reason)
        );
        return;
    }
    if let Some(error) = &scenario.error {
        let _ = write!(
            out,
            "<p class=\"fail\">The run failed: {}</p>",
            escape(error)
        );
    }
    out.push_str("<h3>Invariants</h3><table><tr><th>invariant</th><th>held</th><th>checked</th><th>evidence</th></tr>");
    for v in &scenario.verdicts {
        let evidence: String = v
            .evidence
            .iter()
            .map(|e| format!("<li>{}</li>", escape(e)))
            .collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td><ul>{evidence}</ul></td></tr>",
            escape(v.invariant),
            if v.held { "pass" } else { "fail" },
            if v.held { "yes" } else { "NO" },
            escape(&v.checked)
        );
    }
    out.push_str("</table><h3>Faults</h3><table><tr><th>fault</th><th>target</th><th>injected</th><th>healed</th><th>detected after</th><th>detected by</th><th>recovered after</th><th>client symptoms</th></tr>");
    for f in &scenario.faults {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.1} s</td><td>{:.1} s</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&f.kind),
            escape(&f.target),
            f.injected_at,
            f.healed_at,
            seconds(f.detect_seconds),
            escape(f.detected_by.as_deref().unwrap_or("nothing")),
            seconds(f.recover_seconds),
            f.symptoms
        );
    }
    let c = &scenario.convergence;
    let _ = write!(
        out,
        "</table><h3>Convergence</h3><p>converged: <b>{}</b> · after the last heal (devices online): {} · \
         offline devices caught up within: {} · after the load: {}</p>",
        if c.converged { "yes" } else { "no" },
        seconds(c.after_last_heal_seconds),
        seconds(c.offline_catch_up_seconds),
        seconds(c.after_load_seconds)
    );
    out.push_str("<h3>Counters</h3><table>");
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&scenario.counters) {
        for (key, value) in map {
            let shown = match &value {
                serde_json::Value::Object(inner) => inner
                    .iter()
                    .map(|(k, v)| format!("{}: {}", escape(k), escape(&v.to_string())))
                    .collect::<Vec<_>>()
                    .join("<br>"),
                other => escape(&other.to_string()),
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td><code>{shown}</code></td></tr>",
                escape(&key)
            );
        }
    }
    out.push_str("</table>");
    if !scenario.process_events.is_empty() {
        out.push_str("<h3>Processes</h3><ul>");
        for e in &scenario.process_events {
            let _ = write!(
                out,
                "<li>{:.1} s: {} {}</li>",
                e.at,
                escape(&e.process),
                escape(&e.what)
            );
        }
        out.push_str("</ul>");
    }
    for note in &scenario.notes {
        let _ = write!(out, "<p>{}</p>", escape(note));
    }
    out.push_str(
        "<h3>Timelines</h3><p class=\"meta\">Shaded: fault windows.</p><div class=\"plots\">",
    );
    match plots(scenario) {
        Ok(svg) => out.push_str(&svg),
        Err(error) => {
            let _ = write!(out, "<p class=\"fail\">plots: {}</p>", escape(&error));
        }
    }
    out.push_str("</div></section>");
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1000px}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;vertical-align:top;text-align:left}\
.pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;font-weight:bold}.skipped{color:#777;font-weight:bold}.meta{color:#555}\
ul{margin:0;padding-left:1.2em}svg{display:block;margin:6px 0}code{font-size:90%}";

/// The whole report as one HTML document.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Meridian chaos report</title>\
         <style>{STYLE}</style></head><body><h1>Meridian chaos report</h1>\
         <p class=\"meta\">{version} · profile {profile} · log {log} · seed {seed} · schema {schema}</p>\
         <p>Result: <span class=\"{class}\">{result}</span></p><table><tr><th>scenario</th><th>result</th><th>faults</th><th>converged after the last heal</th></tr>",
        version = escape(&report.meridian_version),
        profile = escape(&report.profile),
        log = escape(&report.log),
        seed = report.seed,
        schema = report.schema,
        class = if report.passed { "pass" } else { "fail" },
        result = if report.passed {
            "every scenario passed"
        } else {
            "FAILED"
        },
    );
    for s in &report.scenarios {
        let _ = write!(
            out,
            "<tr><td><a href=\"#{name}\">{name}</a></td><td class=\"{class}\">{result}</td><td>{faults}</td><td>{converged}</td></tr>",
            name = escape(&s.name),
            class = match (&s.skipped, s.passed) {
                (Some(_), _) => "skipped",
                (None, true) => "pass",
                (None, false) => "fail",
            },
            result = match (&s.skipped, s.passed) {
                (Some(_), _) => "skipped",
                (None, true) => "pass",
                (None, false) => "FAIL",
            },
            faults = s.faults.len(),
            converged = seconds(s.convergence.after_last_heal_seconds),
        );
    }
    out.push_str("</table>");
    for scenario in &report.scenarios {
        scenario_section(&mut out, scenario);
    }
    out.push_str("</body></html>\n");
    out
}
