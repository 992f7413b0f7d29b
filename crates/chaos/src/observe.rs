//! What the suite watches besides the clients: every second, each core's
//! `/metrics` (is it up, ready, its links, its replication lag) and each
//! gateway's resident memory; at the end, the servers' counters; and a
//! steady trickle of bad input at the gateways, whose answers must be
//! typed errors.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_sdk::{Event, Keepalive, Session, TlsRoots};

use crate::device::Control;
use crate::record::{ProbeAnswer, Recorder};

/// One look at one region's core.
#[derive(Debug, Clone)]
pub struct CoreSample {
    /// Seconds into the load.
    pub at: f64,
    /// The region.
    pub region: String,
    /// Whether its `/metrics` answered.
    pub up: bool,
    /// `meridian_core_ready`.
    pub ready: bool,
    /// `meridian_replication_link_up`, summed over its links.
    pub links_up: f64,
    /// The largest `meridian_replication_lag_ms`.
    pub lag_ms: f64,
}

/// Everything sampled.
#[derive(Debug, Default)]
pub struct Samples {
    /// The cores'.
    pub cores: Vec<CoreSample>,
    /// Each gateway's resident memory, KiB, as `[seconds, kib]`.
    pub gateway_rss_kib: BTreeMap<String, Vec<[f64; 2]>>,
    /// Idle connections open, as `[seconds, count]`.
    pub idle_connected: Vec<[f64; 2]>,
}

/// Where the sampler looks: each region's core admin port, and the
/// gateways' process ids (kept current by the runner across restarts).
#[derive(Debug, Default)]
pub struct Targets {
    /// Region → its core's admin port.
    pub admin_ports: BTreeMap<String, u16>,
    /// Gateway name → its process id.
    pub gateway_pids: Mutex<BTreeMap<String, u32>>,
    /// Idle connections open now.
    pub idle_connected: std::sync::atomic::AtomicUsize,
}

/// The values of `metric` in Prometheus text: every series of it.
fn series(text: &str, metric: &str) -> Vec<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            let bare = name.split('{').next()?;
            (bare == metric).then(|| value.trim().parse().ok())?
        })
        .collect()
}

/// The sum of `metric`'s series in Prometheus text.
pub fn metric_sum(text: &str, metric: &str) -> f64 {
    series(text, metric).iter().sum()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap_or_default()
}

/// `/metrics` of `url`, if it answers.
async fn scrape(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

/// Resident memory of `pid`, KiB.
fn rss_kib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples every second until the run stops.
pub async fn sample(
    targets: Arc<Targets>,
    recorder: Arc<Recorder>,
    control: Arc<Control>,
) -> Samples {
    let client = http();
    let mut samples = Samples::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !control.stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let at = recorder.now();
        for (region, port) in &targets.admin_ports {
            let text = scrape(&client, &format!("http://127.0.0.1:{port}/metrics")).await;
            let text = text.as_deref();
            samples.cores.push(CoreSample {
                at,
                region: region.clone(),
                up: text.is_some(),
                ready: text.is_some_and(|t| metric_sum(t, "meridian_core_ready") > 0.0),
                links_up: text.map_or(0.0, |t| metric_sum(t, "meridian_replication_link_up")),
                lag_ms: text.map_or(0.0, |t| {
                    series(t, "meridian_replication_lag_ms")
                        .into_iter()
                        .fold(0.0, f64::max)
                }),
            });
        }
        let pids = targets
            .gateway_pids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (name, pid) in pids {
            if let Some(kib) = rss_kib(pid) {
                samples
                    .gateway_rss_kib
                    .entry(name)
                    .or_default()
                    .push([at, kib]);
            }
        }
        let idle = targets.idle_connected.load(Ordering::SeqCst);
        samples.idle_connected.push([at, idle as f64]);
    }
    samples
}

/// The server counters the report sums over every process at the end.
pub const SERVER_COUNTERS: [&str; 9] = [
    "meridian_hlc_refused_total",
    "meridian_replication_offset_ahead_total",
    "meridian_replication_links_refused_total",
    "meridian_replication_gaps_total",
    "meridian_replication_restarts_total",
    "meridian_link_reconnects_total",
    "meridian_gateway_slow_sessions_cut_total",
    "meridian_gateway_connections_refused_total",
    "meridian_gateway_rate_limited_total",
];

/// [`SERVER_COUNTERS`] summed over `urls`' `/metrics` (those answering).
pub async fn server_counters(urls: &[String]) -> BTreeMap<String, f64> {
    let client = http();
    let mut sums: BTreeMap<String, f64> = SERVER_COUNTERS
        .iter()
        .map(|name| ((*name).to_string(), 0.0))
        .collect();
    for url in urls {
        if let Some(text) = scrape(&client, url).await {
            for (name, sum) in &mut sums {
                *sum += metric_sum(&text, name);
            }
        }
    }
    sums
}

/// The bad input sent, in turn: (what, how).
const PROBES: [&str; 3] = [
    "rest: malformed JSON",
    "ws: malformed JSON",
    "ws: unknown frame",
];

/// Sends bad input to the gateways, one probe a second in turn, until the
/// run stops; each answer is recorded.
pub async fn probe(
    gateways: Vec<String>,
    token: String,
    recorder: Arc<Recorder>,
    control: Arc<Control>,
) {
    let client = http();
    let mut turn = 0usize;
    while !control.stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Every gateway in turn, and each gateway every kind in turn.
        let gateway = &gateways[turn % gateways.len()];
        let kind = PROBES[(turn / gateways.len()) % PROBES.len()];
        turn += 1;
        let (answer, detail) = match kind {
            "rest: malformed JSON" => rest_probe(&client, gateway, &token).await,
            _ => ws_probe(gateway, &token, kind).await,
        };
        recorder.probe(format!("{kind} at {gateway}"), answer, detail);
    }
}

async fn rest_probe(client: &reqwest::Client, gateway: &str, token: &str) -> (ProbeAnswer, String) {
    let sent = client
        .post(format!("{gateway}/v1/conversations"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body("{\"name\": \"unclosed")
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => return (ProbeAnswer::Unreachable, error.to_string()),
    };
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let typed = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_string));
    match typed {
        Some(code) if status.is_client_error() => (ProbeAnswer::Typed, format!("{status} {code}")),
        Some(code) if status.as_u16() == 503 => (ProbeAnswer::Typed, format!("{status} {code}")),
        _ => (ProbeAnswer::Untyped, format!("{status} {body}")),
    }
}

async fn ws_probe(gateway: &str, token: &str, kind: &str) -> (ProbeAnswer, String) {
    let ws = meridian_sdk::Rest::new(gateway).ws_url();
    let keepalive = Keepalive {
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(6),
        request_timeout: Duration::from_secs(3),
    };
    let mut session = match Session::connect_with(&ws, token, &TlsRoots::system(), keepalive).await
    {
        Ok(session) => session,
        Err(error) => return (ProbeAnswer::Unreachable, error.to_string()),
    };
    let frame = if kind == "ws: unknown frame" {
        "{\"type\": \"teleport\", \"id\": 1}"
    } else {
        "{\"type\": \"send\", \"id\": "
    };
    if let Err(error) = session
        .send_raw(tokio_tungstenite::tungstenite::Message::Text(frame.into()))
        .await
    {
        return (ProbeAnswer::Unreachable, error.to_string());
    }
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = session.next_event().await {
            if let Event::Error { code, message } = event {
                return Some(format!("{code}: {message}"));
            }
        }
        None
    })
    .await;
    match answer {
        Ok(Some(error)) => (ProbeAnswer::Typed, error),
        Ok(None) => (ProbeAnswer::Untyped, "closed without an error frame".into()),
        Err(_) => (ProbeAnswer::Untyped, "no answer in 5 s".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_series_are_summed_by_name() {
        let text = "# HELP x\nmeridian_replication_lag_ms{source=\"a\"} 12\n\
                    meridian_replication_lag_ms{source=\"b\"} 30\n\
                    meridian_replication_lag_ms_other 99\nmeridian_core_ready 1\n";
        assert_eq!(metric_sum(text, "meridian_replication_lag_ms"), 42.0);
        assert_eq!(metric_sum(text, "meridian_core_ready"), 1.0);
        assert_eq!(metric_sum(text, "absent"), 0.0);
    }
}
