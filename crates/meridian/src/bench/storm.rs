//! `meridian bench --storm N`: N devices with backlogs lose their gateways
//! at once and come back. One region runs as a core and gateway processes
//! on loopback (127.0.1.x, at most 15,000 clients a gateway: a process
//! here may hold 20,000 files): storm gateways holding the N clients,
//! as many survivors they fall back on, and a quiet gateway for pairs of
//! devices chatting at a fixed rate. The clients live in worker processes
//! (this binary again, `--storm-worker`), one per storm gateway.
//!
//! Once every client has attached and read a first message, the storm
//! gateways are frozen (SIGSTOP), each group is sent `backlog` messages
//! (stored, acknowledged to their senders, on no client's socket), and
//! the frozen gateways are killed (SIGKILL): every client then holds a
//! stored backlog of `backlog` messages when it loses its gateway.
//! Printed: how long until each client was attached again and caught up
//! (p50, p99, max), the core's CPU and commit p99 meanwhile, the quiet
//! pairs' send→deliver latency through the storm, what admission shed,
//! and server memory per connection at N. Figures, never assertions.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use meridian_sdk::{Client, Keepalive, Rest};
use meridian_seams::Clock;
use meridian_seams::net::TokioNetwork;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::metrics::{metrics_text, sum_in};
use super::{CLOCK, cpu_seconds, fixed_rate_latency, make_pairs, percentile, rss_kib, spawn_until};

/// Clients one gateway (and one worker process) holds at most.
const PER_GATEWAY: usize = 15_000;
/// Accounts in one group with its sender (groups hold 100 members).
const ACCOUNTS_PER_GROUP: usize = 99;
/// Quiet pairs chatting through the storm.
const QUIET_PAIRS: usize = 50;

pub(crate) struct Options {
    pub(crate) clients: usize,
    pub(crate) backlog: usize,
    /// Offered rate of the quiet pairs, msg/s.
    pub(crate) rate: u64,
    /// The core's attach budget, per second (`None`: the default).
    pub(crate) attach_rate: Option<f64>,
    pub(crate) insecure_core: bool,
}

/// What a worker is told: its clients' tokens and gateways.
#[derive(Serialize, Deserialize)]
struct WorkerSpec {
    /// The gateway each client first attaches through (a storm gateway).
    primary: String,
    /// The gateway it falls back on (a survivor).
    fallback: String,
    tokens: Vec<String>,
    /// Messages a caught-up client holds: the first and the backlog.
    expect: usize,
}

/// The processes of the storm's region.
struct Fleet {
    _dir: tempfile::TempDir,
    core: Child,
    core_admin: String,
    /// Storm gateways, then survivors, then the quiet one.
    gateways: Vec<Child>,
    storm_gateways: usize,
    port: u16,
    /// The gateways' admin port.
    admin: u16,
}

impl Fleet {
    /// REST at gateway `index` (1-based).
    fn rest(&self, index: usize) -> Rest {
        Rest::new(format!("http://127.0.1.{index}:{}", self.port))
    }

    fn quiet(&self) -> Rest {
        self.rest(self.gateways.len())
    }

    /// The storm gateways' resident memory, KiB.
    fn storm_rss(&self) -> u64 {
        self.gateways[..self.storm_gateways]
            .iter()
            .filter_map(|g| rss_kib(g.id()?).ok())
            .sum()
    }
}

/// Runs `meridian <args>` and waits for the line starting with `ready`.
async fn spawn_ready(args: &[String], ready: &str) -> anyhow::Result<Child> {
    Ok(
        spawn_until(args, |line| line.starts_with(ready).then_some(()))
            .await?
            .0,
    )
}

/// One region, `storm` at its core and gateways.
async fn start_fleet(storm_gateways: usize, options: &Options) -> anyhow::Result<Fleet> {
    let insecure_core = options.insecure_core;
    let dir = tempfile::tempdir()?;
    let regions = dir.path().join("regions");
    std::fs::create_dir_all(&regions)?;
    let network = TokioNetwork::shared();
    let free = async || meridian_testbed::free_port(&network).await;
    let (port, core_port, admin, core_admin) =
        (free().await?, free().await?, free().await?, free().await?);
    let admission = options.attach_rate.map_or(String::new(), |rate| {
        format!("[admission]\nattaches_per_second = {rate:.1}\n")
    });
    let tls = if insecure_core {
        String::new()
    } else {
        "[tls]\nca = \"certs/ca.pem\"\ncore_cert = \"certs/core.storm.pem\"\n\
         core_key = \"certs/core.storm.key\"\ngateway_cert = \"certs/gateway.storm.pem\"\n\
         gateway_key = \"certs/gateway.storm.key\"\n"
            .to_string()
    };
    std::fs::write(
        regions.join("storm.toml"),
        format!(
            "name = \"storm\"\n\
             [listen]\ngateway = \"127.0.0.1:0\"\ncore = \"127.0.0.1:0\"\n\
             [advertise]\ngateway = \"127.0.0.1:0\"\ncore = \"127.0.0.1:0\"\n\
             [local]\ngateway = \"127.0.1.1:{port}\"\ncore = \"127.0.0.1:{core_port}\"\n\
             [edge]\ngateway_admin_port = {admin}\n{admission}{tls}"
        ),
    )?;
    if !insecure_core {
        let deployment = meridian_region::config::Deployment::load(&regions)?;
        meridian_identity::pki::init_dir(
            &regions.join("certs"),
            &meridian_region::identities::deployment_identities(&deployment),
        )?;
    }
    let common = |verb: &str| -> Vec<String> {
        let mut args: Vec<String> = [verb, "--region", "storm", "--regions-dir"]
            .map(String::from)
            .to_vec();
        args.push(regions.display().to_string());
        args.push("--data-dir".into());
        args.push(dir.path().join("data").display().to_string());
        for flag in ["--send-rate", "--registrations-per-minute"] {
            args.extend([flag.to_string(), "1000000".to_string()]);
        }
        if insecure_core {
            args.push("--insecure-core".into());
        }
        args
    };
    let mut core_args = common("core");
    core_args.extend(["--admin-listen".into(), format!("127.0.0.1:{core_admin}")]);
    let core = spawn_ready(&core_args, "meridian core:").await?;
    let mut gateways = Vec::new();
    for index in 1..=2 * storm_gateways + 1 {
        let mut args = common("gateway");
        args.extend(["--index".into(), index.to_string()]);
        gateways.push(spawn_ready(&args, "meridian gateway:").await?);
    }
    Ok(Fleet {
        _dir: dir,
        core,
        core_admin: format!("http://127.0.0.1:{core_admin}"),
        gateways,
        storm_gateways,
        port,
        admin,
    })
}

/// A group per 99 accounts, each with a sender of its own (a user's
/// fan-out budget is its own): `(conv_id, sender token)`.
async fn make_groups(
    rest: &Rest,
    accounts: &[(String, Vec<String>)],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut groups = Vec::new();
    for (i, chunk) in accounts.chunks(ACCOUNTS_PER_GROUP).enumerate() {
        let sender = rest.register(&format!("sender{i}")).await?;
        let members: Vec<String> = chunk.iter().map(|(user, _)| user.clone()).collect();
        let group = rest
            .with_token(&sender.token)
            .create_group("storm", &members)
            .await?;
        groups.push((group.conv_id, sender.token));
    }
    Ok(groups)
}

/// Sends `count` messages to every group, each group's sender in a task.
async fn send_to_groups(rest: &Rest, groups: &[(String, String)], count: usize, seed: u64) {
    let sends = groups.iter().enumerate().map(|(i, (conv, token))| {
        let mut client = Client::new(rest, token, seed + i as u64);
        let conv = conv.clone();
        async move {
            for n in 0..count {
                let id = client.new_client_msg_id();
                if let Err(error) = client.send(&conv, &id, &format!("storm {n}"), None).await {
                    eprintln!("storm: a group send failed: {error}");
                }
            }
        }
    });
    futures::future::join_all(sends).await;
}

/// A worker process and the lines it prints.
struct Worker {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn start(spec: &WorkerSpec, dir: &Path, index: usize) -> anyhow::Result<Self> {
        let path = dir.join(format!("worker-{index}.json"));
        std::fs::write(&path, serde_json::to_vec(spec)?)?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["bench", "--storm-worker"])
            .arg(&path)
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a storm worker")?;
        let lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        Ok(Self { child, lines })
    }

    /// The next line starting with `word`, with the rest of it.
    async fn expect(&mut self, word: &str) -> anyhow::Result<String> {
        while let Some(line) = self.lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(word) {
                return Ok(rest.trim().to_string());
            }
        }
        bail!("a storm worker exited before `{word}`")
    }

    async fn tell(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.child.stdin.as_mut().context("stdin")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(stdin.flush().await?)
    }
}

pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let n = options.clients.max(1);
    let storm_gateways = n.div_ceil(PER_GATEWAY);
    println!(
        "storm: {n} clients on {storm_gateways} gateway(s) (+{storm_gateways} survivor(s), +1 quiet), {} worker process(es), backlog {} each, core attach budget {}/s",
        storm_gateways,
        options.backlog,
        options
            .attach_rate
            .unwrap_or(meridian_region::CoreConfig::new("storm").attaches_per_second)
    );
    let fleet = start_fleet(storm_gateways, &options).await?;
    let quiet = fleet.quiet();
    let accounts = meridian_chaos::idle::register_accounts(quiet.base(), n, "storm", 32)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", e.what, e.source))?;
    let groups = make_groups(&quiet, &accounts).await?;
    let tokens: Vec<String> = accounts.into_iter().flat_map(|(_, t)| t).collect();
    let work = tempfile::tempdir()?;
    let rss_before = fleet.storm_rss();
    let core_pid = fleet.core.id().context("core pid")?;
    let core_rss_before = rss_kib(core_pid)?;
    let mut workers = Vec::new();
    for (k, chunk) in tokens.chunks(PER_GATEWAY).enumerate() {
        let spec = WorkerSpec {
            primary: fleet.rest(k + 1).base().to_string(),
            fallback: fleet.rest(storm_gateways + k + 1).base().to_string(),
            tokens: chunk.to_vec(),
            expect: 1 + options.backlog,
        };
        workers.push(Worker::start(&spec, work.path(), k).await?);
    }
    // Every client attached and holding a first message.
    send_to_groups(&quiet, &groups, 1, 1).await;
    for worker in &mut workers {
        worker.expect("attached").await?;
    }
    let per_connection = |after: u64, before: u64| after.saturating_sub(before) as f64 / n as f64;
    println!(
        "  memory at {n} connections: storm gateways {:.1} KiB per connection, core {:.1} KiB per session",
        per_connection(fleet.storm_rss(), rss_before),
        per_connection(rss_kib(core_pid)?, core_rss_before),
    );
    measure_storm(fleet, workers, &groups, &options).await
}

/// The storm itself: the storm gateways frozen (SIGSTOP) while the
/// backlog is sent, so that it is stored and not yet on any client's
/// socket; the quiet pairs under way; the frozen gateways killed; every
/// worker's catch-up times gathered.
async fn measure_storm(
    mut fleet: Fleet,
    mut workers: Vec<Worker>,
    groups: &[(String, String)],
    options: &Options,
) -> anyhow::Result<()> {
    let quiet = fleet.quiet();
    let pairs = make_pairs(&quiet, QUIET_PAIRS).await?;
    let core_pid = fleet.core.id().context("core pid")?;
    for gateway in &fleet.gateways[..fleet.storm_gateways] {
        let pid = gateway.id().context("a storm gateway's pid")?;
        meridian_chaos::cluster::signal(pid, "STOP").await;
    }
    send_to_groups(&quiet, groups, options.backlog, 1_000).await;
    let seconds = 10;
    let latency = tokio::spawn(fixed_rate_latency(
        pairs,
        options.rate,
        seconds,
        Duration::from_secs(2),
    ));
    // One second of the pairs' warm-up, then the storm.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shed_before = admission_counts(&fleet).await;
    let cpu_before = cpu_seconds(core_pid)?;
    let storm_at = CLOCK.wall_millis();
    for gateway in &mut fleet.gateways[..fleet.storm_gateways] {
        gateway.start_kill()?;
    }
    for worker in &mut workers {
        worker.tell(&format!("storm {storm_at}")).await?;
    }
    let mut times: Vec<u64> = Vec::new();
    for worker in &mut workers {
        let line = worker.expect("caught-up").await?;
        times.extend(line.split(',').filter_map(|t| t.parse::<u64>().ok()));
    }
    let span = Duration::from_millis(CLOCK.wall_millis().saturating_sub(storm_at));
    let cpu = cpu_seconds(core_pid)? - cpu_before;
    let commit = metrics_text(&fleet.core_admin).await.map(|text| {
        sum_in(
            &text,
            "meridian_kv_engine_write_seconds{",
            &["quantile=\"0.99\""],
        )
    });
    let shed_after = admission_counts(&fleet).await;
    times.sort_unstable();
    let n = times.len();
    println!(
        "  resync of {n} clients after the kill: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        percentile(&times, 0.50) as f64 / 1e3,
        percentile(&times, 0.99) as f64 / 1e3,
        times.last().copied().unwrap_or(0) as f64 / 1e3,
    );
    println!(
        "  core during the storm ({:.1} s): CPU {:.0}% of one core; commit p99 {}; admission shed {:.0} attaches, gateways refused {:.0} upgrades",
        span.as_secs_f64(),
        100.0 * cpu / span.as_secs_f64().max(1e-9),
        commit.map_or("unreadable".into(), |p99| format!("{:.2} ms", p99 * 1e3)),
        shed_after.0 - shed_before.0,
        shed_after.1 - shed_before.1,
    );
    let samples = latency.await?;
    let latencies = &samples.delivered_latencies;
    println!(
        "  quiet pairs at {} msg/s through it: send->deliver p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        options.rate,
        percentile(latencies, 0.50) as f64 / 1e6,
        percentile(latencies, 0.99) as f64 / 1e6,
        latencies.last().copied().unwrap_or(0) as f64 / 1e6,
        latencies.len(),
    );
    for worker in &mut workers {
        let _ = worker.tell("stop").await;
    }
    Ok(())
}

/// Attaches the core shed and upgrades the survivors refused, so far
/// (summed over every survivor's admin listener).
async fn admission_counts(fleet: &Fleet) -> (f64, f64) {
    let (mut shed, mut refused) = (0.0, 0.0);
    let survivors = fleet.storm_gateways + 1..=2 * fleet.storm_gateways;
    for index in survivors {
        let admin = format!("http://127.0.1.{index}:{}", fleet.admin);
        if let Ok(text) = metrics_text(&admin).await {
            shed += sum_in(&text, "meridian_gateway_sessions_shed_total", &[]);
            refused += sum_in(&text, "meridian_gateway_connections_refused_total", &[]);
        }
    }
    (shed, refused)
}

/// Storm clients hold their sockets; pings are rare, and a connect may
/// wait long for its turn in a storm.
const KEEPALIVE: Keepalive = Keepalive {
    interval: Duration::from_secs(30),
    timeout: Duration::from_secs(90),
    request_timeout: Duration::from_secs(30),
};

/// `meridian bench --storm-worker SPEC`: holds the spec's clients, prints
/// `attached` once each holds a first message, reads `storm <wall ms>`,
/// prints `caught-up` with each client's time from then until it held
/// the whole backlog (ms, comma-separated), and ends at `stop`.
pub(crate) async fn worker(spec: PathBuf) -> anyhow::Result<()> {
    let spec: WorkerSpec = serde_json::from_slice(&std::fs::read(&spec)?)?;
    let (primary, fallback) = (Rest::new(&spec.primary), Rest::new(&spec.fallback));
    let count = spec.tokens.len();
    let attached = Arc::new(AtomicUsize::new(0));
    let caught_up = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut clients = Vec::with_capacity(count);
    for (i, token) in spec.tokens.iter().enumerate() {
        let client = Client::new(&primary, token, i as u64).with_keepalive(KEEPALIVE);
        let (fallback, mut stop) = (fallback.clone(), stop.clone());
        let (attached, caught_up) = (attached.clone(), caught_up.clone());
        let expect = spec.expect;
        clients.push(tokio::spawn(async move {
            let mut client = client;
            // Attached through the storm gateway first, then told of the survivor.
            while client.connect(1_000).await.is_err() {}
            let mut client = client.with_fallbacks(std::slice::from_ref(&fallback));
            let mut caught_up_at = None;
            let mut counted = false;
            while !*stop.borrow_and_update() {
                // Long waits: the workers share the server's two cores.
                let _ = client.poll(Duration::from_secs(1)).await;
                if !counted && client.received() >= 1 {
                    counted = true;
                    attached.fetch_add(1, Ordering::SeqCst);
                }
                if caught_up_at.is_none() && client.received() >= expect {
                    caught_up_at = Some(CLOCK.wall_millis());
                    caught_up.fetch_add(1, Ordering::SeqCst);
                }
            }
            caught_up_at
        }));
    }
    while attached.load(Ordering::SeqCst) < count {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("attached");
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let storm_at: u64 = loop {
        let line = stdin.next_line().await?.context("no storm line")?;
        if let Some(at) = line.strip_prefix("storm ") {
            break at.trim().parse()?;
        }
    };
    while caught_up.load(Ordering::SeqCst) < count {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    let mut times = Vec::with_capacity(count);
    for client in clients {
        if let Some(at) = client.await? {
            times.push(at.saturating_sub(storm_at).to_string());
        }
    }
    println!("caught-up {}", times.join(","));
    while let Ok(Some(line)) = stdin.next_line().await {
        if line == "stop" {
            break;
        }
    }
    Ok(())
}
