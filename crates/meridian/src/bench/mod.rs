//! `meridian bench`: whole-system figures against a real `meridian dev`
//! child process on loopback — delivered msg/s for 1:1 traffic, send→deliver
//! latency at a fixed offered rate, and server memory per idle WebSocket —
//! and, with `--server meridian,ejabberd`, the same load against ejabberd,
//! phase by phase, interleaved (`xmpp.rs`). Figures are printed, never
//! asserted. `load` is the load itself, `sample` what the server did
//! meanwhile, `regions` the cross-region benchmark (`--cross-region`),
//! `storm` the reconnect storm, `metrics` reads the server's `/metrics`.

mod load;
mod metrics;
mod process;
mod regions;
mod sample;
mod storm;
mod xmpp;

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::future::join_all;
use meridian_sdk::{Rest, Session};
use meridian_seams::{Clock, SystemClock};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

use crate::deploy::SyncPolicy;
use load::{Counting, saturate};
pub(crate) use load::{Pair, connect, fixed_rate_latency, make_pairs, percentile, sender_session};
use process::{cpu_seconds, rss_kib};
use sample::sample_between;

/// The benchmark's one clock (the real one, through the seam): every
/// timestamp is its monotonic time, so they subtract directly.
static CLOCK: LazyLock<SystemClock> = LazyLock::new(SystemClock::new);

/// Monotonic time since the benchmark's clock started.
pub(crate) fn now() -> Duration {
    CLOCK.monotonic()
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Sender/receiver pairs (each pair is one 1:1 conversation).
    #[arg(long, default_value_t = 128)]
    pairs: usize,
    /// Messages in flight per pair in the throughput phase: sent and not
    /// yet delivered (the same window whether or not the protocol
    /// acknowledges sends).
    #[arg(long, default_value_t = 8)]
    pipeline: usize,
    /// The servers each single-region phase runs against, in turn, each
    /// fresh: `meridian` (a `meridian dev` child) and `ejabberd` (Debian's
    /// package, started by the benchmark, spoken to in XMPP over WebSocket).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "meridian")]
    server: Vec<ServerKind>,
    /// Offered rates for the latency phase, msg/s, each against a fresh
    /// server (the cross-region benchmark offers the first).
    #[arg(long, value_delimiter = ',', default_value = "2000,5000")]
    rate: Vec<u64>,
    /// Idle WebSocket connections for the memory phase (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// The single-region phases to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "idle,throughput,latency"
    )]
    phases: Vec<Phase>,
    /// Runs the cross-region benchmark instead: two regions as separate
    /// processes, their links through a proxy adding a one-way delay.
    #[arg(long)]
    cross_region: bool,
    /// Cross-region: the replication log (`kafka` starts a tansu broker per region).
    #[arg(long, value_enum, default_value = "embedded")]
    log: crate::deploy::LogKind,
    /// Cross-region: one-way delay on the links between the regions, ms.
    #[arg(long, default_value_t = 35)]
    delay_ms: u64,
    /// Cross-region: entries queued behind a cut link for the link
    /// throughput phase.
    #[arg(long, default_value_t = 50_000)]
    link_entries: u64,
    /// Runs the cores without TLS (`--insecure-core`): what mutual TLS
    /// between gateways and cores (and, across regions, on the links)
    /// costs is the difference.
    #[arg(long)]
    insecure_core: bool,
    /// When the server fsyncs: `commit` (the default, durable) or `<N>ms`,
    /// NOT DURABLE, every N ms instead of at every group commit. What
    /// durability itself costs is the difference from a run with `commit`.
    /// Single-region phases only.
    #[arg(long, default_value_t = SyncPolicy::Commit, conflicts_with_all = ["cross_region", "storm"])]
    sync: SyncPolicy,
    /// Runs the reconnect-storm benchmark instead: this many clients with
    /// backlogs lose their gateways at once (`bench/storm.rs`).
    #[arg(long)]
    storm: Option<usize>,
    /// Storm: messages each client is sent while it is away.
    #[arg(long, default_value_t = 5)]
    storm_backlog: usize,
    /// Storm: offered rate of the quiet pairs chatting through it, msg/s.
    #[arg(long, default_value_t = 500)]
    storm_rate: u64,
    /// Storm: the core's `[admission] attaches_per_second` (default: the
    /// region file's default, 5,000): what another budget buys the quiet
    /// pairs and costs the storm.
    #[arg(long)]
    storm_attach_rate: Option<f64>,
    /// Internal: runs one storm worker process from this spec file.
    #[arg(long, hide = true)]
    storm_worker: Option<std::path::PathBuf>,
}

/// A phase of the single-region benchmark.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Server memory per idle WebSocket.
    Idle,
    /// Sustained delivered msg/s.
    Throughput,
    /// Send→deliver latency at a fixed offered rate.
    Latency,
}

/// A server the single-region phases can run against.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerKind {
    Meridian,
    Ejabberd,
}

/// A fresh server under measurement.
pub(crate) enum Target {
    Meridian(Server),
    Ejabberd(xmpp::Ejabberd),
}

impl Target {
    async fn start(kind: ServerKind, args: &BenchArgs) -> anyhow::Result<Self> {
        Ok(match kind {
            ServerKind::Meridian => Self::Meridian(start_server(args).await?),
            ServerKind::Ejabberd => Self::Ejabberd(xmpp::Ejabberd::start().await?),
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Meridian(_) => "meridian",
            Self::Ejabberd(_) => "ejabberd",
        }
    }

    /// The server process, whose CPU, disk writes and memory are measured.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Self::Meridian(server) => server.child.id(),
            Self::Ejabberd(server) => server.pid(),
        }
    }

    /// Where its `/metrics` are, if it has Meridian's.
    pub(crate) fn metrics_base(&self) -> Option<String> {
        match self {
            Self::Meridian(server) => Some(server.base.clone()),
            Self::Ejabberd(_) => None,
        }
    }

    async fn make_pairs(&self, count: usize) -> anyhow::Result<Vec<Pair>> {
        match self {
            Self::Meridian(server) => make_pairs(&Rest::new(&server.base), count).await,
            Self::Ejabberd(server) => server.make_pairs(count).await,
        }
    }
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn start_server(bench: &BenchArgs) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    // One region on its own: a region file of just itself, so the benchmark
    // runs from any directory and no links wait for absent peers.
    let regions = dir.path().join("regions");
    std::fs::create_dir_all(&regions)?;
    std::fs::write(
        regions.join("bench.toml"),
        "name = \"bench\"\n\
         [listen]\ngateway = \"127.0.0.1:0\"\ncore = \"127.0.0.1:0\"\n\
         [advertise]\ngateway = \"127.0.0.1:0\"\ncore = \"127.0.0.1:0\"\n\
         [local]\ngateway = \"127.0.0.1:0\"\ncore = \"127.0.0.1:0\"\n",
    )?;
    let mut args = vec![
        "dev".into(),
        "--region".into(),
        "bench".into(),
        "--regions-dir".into(),
        regions.display().to_string(),
        "--send-rate".into(),
        "1000000".into(),
        "--registrations-per-minute".into(),
        "1000000".into(),
        "--data-dir".into(),
        dir.path().display().to_string(),
        // The bench asks nothing of DNS, and GeoDNS's port is the one
        // fixed port a child would take.
        "--no-dns".into(),
    ];
    if bench.insecure_core {
        args.push("--insecure-core".into());
    }
    args.extend(["--sync".into(), bench.sync.to_string()]);
    let mut server = start_child(&args).await?;
    server._dir = Some(dir);
    Ok(server)
}

/// Runs `meridian <args>` and waits for the `REST` line it prints.
pub(crate) async fn start_child(args: &[String]) -> anyhow::Result<Server> {
    let (child, base) = spawn_until(args, |line| {
        let url = line
            .trim()
            .strip_prefix("REST")?
            .split_whitespace()
            .next()?;
        Some(url.trim_end_matches("/v1").to_string())
    })
    .await?;
    Ok(Server {
        child,
        base,
        _dir: None,
    })
}

/// Runs `meridian <args>` until it prints a line `found` recognises: the
/// child, and what `found` took from the line.
pub(crate) async fn spawn_until<T>(
    args: &[String],
    found: impl Fn(&str) -> Option<T>,
) -> anyhow::Result<(Child, T)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting meridian")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let value = loop {
        let Some(line) = lines.next_line().await? else {
            bail!("meridian {} exited before it was ready", args.join(" "))
        };
        if let Some(value) = found(&line) {
            break value;
        }
    };
    // Keep draining so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, value))
}

/// Server memory per idle, authenticated WebSocket, on a fresh server so
/// nothing earlier already sits in its allocator.
async fn idle_phase(args: &BenchArgs, kind: ServerKind) -> anyhow::Result<()> {
    let server = Target::start(kind, args).await?;
    let pid = server.pid().context("server pid")?;
    let (before, open, after) = match &server {
        Target::Meridian(server) => idle_meridian(server, pid, args.idle).await?,
        Target::Ejabberd(server) => {
            // The accounts are registered before the baseline is read.
            let accounts = xmpp::Ejabberd::idle_accounts(args.idle);
            server.register(&accounts).await?;
            let before = rss_kib(pid)?;
            let sessions = server.idle_sessions(&accounts, args.idle).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            (before, sessions.len(), rss_kib(pid)?)
        }
    };
    println!(
        "[{}] idle connections: {open} open; server RSS {before} KiB -> {after} KiB: {:.1} KiB per idle connection",
        server.name(),
        after.saturating_sub(before) as f64 / open.max(1) as f64
    );
    Ok(())
}

/// Opens `count` idle Meridian sessions (15 devices an account): the
/// server's RSS before they open, how many opened, its RSS after.
async fn idle_meridian(
    server: &Server,
    pid: u32,
    count: usize,
) -> anyhow::Result<(u64, usize, u64)> {
    let rest = Rest::new(&server.base);
    // An account holds at most 16 devices: its first and 15 added.
    let per_user = 15;
    let mut users = Vec::new();
    for i in 0..count.div_ceil(per_user) {
        users.push(rest.register(&format!("idle{i}")).await?);
    }
    let limit = Arc::new(Semaphore::new(64));
    let requests = users.iter().flat_map(|user| {
        let rest = rest.with_token(&user.token);
        let limit = limit.clone();
        (0..per_user).map(move |d| {
            let (rest, limit) = (rest.clone(), limit.clone());
            async move {
                let _permit = limit.acquire().await;
                rest.add_device(&format!("idle{d}")).await.map(|c| c.token)
            }
        })
    });
    let tokens: Vec<String> = join_all(requests)
        .await
        .into_iter()
        .take(count)
        .collect::<Result<_, _>>()?;
    let before = rss_kib(pid)?;
    let ws = rest.ws_url();
    let limit = Arc::new(Semaphore::new(128));
    let sessions: Vec<Session> = join_all(tokens.iter().map(|token| {
        let (ws, token, limit) = (ws.clone(), token.clone(), limit.clone());
        async move {
            let _permit = limit.acquire().await;
            connect(&ws, &token).await
        }
    }))
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;
    // Let the server finish settling every session (attach, first inbox read,
    // watch) before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok((before, sessions.len(), rss_kib(pid)?))
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(1 << 20);
    let build = if cfg!(debug_assertions) {
        "debug (use --release for real figures)"
    } else {
        "release"
    };
    if let Some(spec) = args.storm_worker {
        return storm::worker(spec).await;
    }
    if let Some(clients) = args.storm {
        println!("meridian bench --storm ({build} build)");
        return storm::run(storm::Options {
            clients,
            backlog: args.storm_backlog,
            rate: args.storm_rate,
            attach_rate: args.storm_attach_rate,
            insecure_core: args.insecure_core,
        })
        .await;
    }
    if args.cross_region {
        println!("meridian bench --cross-region ({build} build)");
        return regions::run(regions::Options {
            seconds: args.seconds,
            pairs: args.pairs,
            rate: args.rate.first().copied().unwrap_or(2000),
            log: args.log,
            delay: Duration::from_millis(args.delay_ms),
            link_entries: args.link_entries,
            insecure_core: args.insecure_core,
        })
        .await;
    }
    let security = if args.insecure_core {
        "cores without TLS (--insecure-core)"
    } else {
        "mutual TLS between gateway and core"
    };
    let durability = match args.sync.every_ms() {
        Some(ms) => format!(
            "NOT DURABLE: fsync every {ms} ms (--sync {}), not the default",
            args.sync
        ),
        None => "an fsync per group commit holding a send (acks relaxed)".to_string(),
    };
    println!(
        "meridian bench ({build} build; meridian: {security}, {durability}), each phase against a fresh server"
    );
    if args.server.contains(&ServerKind::Ejabberd) {
        println!(
            "ejabberd: Debian's package, XMPP over WebSocket (RFC 7395), online messages kept in memory and never fsynced"
        );
    }
    // Each measurement runs on every server in turn, the order reversed
    // from one measurement to the next, so neither server always goes
    // first (after a build, or onto a machine that just warmed up).
    let mut turn = 0usize;
    let mut in_turn = || {
        turn += 1;
        let mut order = args.server.clone();
        if turn.is_multiple_of(2) {
            order.reverse();
        }
        order
    };
    if args.idle > 0 && args.phases.contains(&Phase::Idle) {
        for kind in in_turn() {
            idle_phase(&args, kind).await?;
        }
    }
    if args.phases.contains(&Phase::Throughput) {
        for kind in in_turn() {
            throughput_phase(&args, kind).await?;
        }
    }
    if args.phases.contains(&Phase::Latency) {
        for &rate in &args.rate {
            for kind in in_turn() {
                latency_at(&args, kind, rate).await?;
            }
        }
    }
    Ok(())
}

/// Sustained delivered msg/s, 1:1, each pair's window kept full.
async fn throughput_phase(args: &BenchArgs, kind: ServerKind) -> anyhow::Result<()> {
    let server = Target::start(kind, args).await?;
    let pairs = server.make_pairs(args.pairs).await?;
    let origin = now();
    let warmup = origin + Duration::from_secs(1);
    let stop = warmup + Duration::from_secs(args.seconds);
    let delivered = Arc::new(AtomicU64::new(0));
    let sample = sample_between(&server, warmup, stop);
    let counting = Counting {
        origin,
        warmup,
        until: stop,
        // Receivers read on, so every credit comes back before they end.
        stop: stop + Duration::from_secs(2),
        delivered: delivered.clone(),
        credits: None,
        anomalies: Arc::default(),
    };
    saturate(pairs, args.pipeline, &counting).await;
    let total = delivered.load(Ordering::Relaxed);
    println!(
        "[{}] throughput: {:.0} delivered msg/s ({} delivered in {} s, {} pairs x {} in flight)",
        server.name(),
        total as f64 / args.seconds as f64,
        total,
        args.seconds,
        args.pairs,
        args.pipeline
    );
    println!("  {}", sample.await?.describe(total));
    if let Some(anomalies) = counting.anomalies.describe() {
        println!("  {anomalies}");
    }
    Ok(())
}

/// Send→deliver latency at `rate` msg/s offered, against a fresh server.
async fn latency_at(args: &BenchArgs, kind: ServerKind, rate: u64) -> anyhow::Result<()> {
    let server = Target::start(kind, args).await?;
    let pairs = server.make_pairs(args.pairs).await?;
    // The load runs from one second after the call for `seconds`.
    let measured = now() + Duration::from_secs(1);
    let sample = sample_between(
        &server,
        measured,
        measured + Duration::from_secs(args.seconds),
    );
    let samples = fixed_rate_latency(pairs, rate, args.seconds, Duration::from_secs(2)).await;
    let latencies = &samples.delivered_latencies;
    let ms = |ns: u64| ns as f64 / 1e6;
    let acknowledged = if samples.acknowledged_latencies.is_empty() {
        "send->sent: no acknowledgement in the protocol".to_string()
    } else {
        format!(
            "send->sent p50 {:.2} ms, p99 {:.2} ms",
            ms(percentile(&samples.acknowledged_latencies, 0.50)),
            ms(percentile(&samples.acknowledged_latencies, 0.99)),
        )
    };
    println!(
        "[{}] latency at {rate} msg/s offered ({} pairs): send->deliver p50 {:.2} / p90 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.2} ms ({} samples, {:.0} msg/s delivered); {acknowledged}",
        server.name(),
        args.pairs,
        ms(percentile(latencies, 0.50)),
        ms(percentile(latencies, 0.90)),
        ms(percentile(latencies, 0.99)),
        ms(percentile(latencies, 0.999)),
        ms(latencies.last().copied().unwrap_or(0)),
        latencies.len(),
        samples.delivered as f64 / args.seconds as f64,
    );
    println!("  {}", samples.tail);
    if let Some(anomalies) = &samples.anomalies {
        println!("  {anomalies}");
    }
    println!("  {}", sample.await?.describe(samples.delivered));
    Ok(())
}
