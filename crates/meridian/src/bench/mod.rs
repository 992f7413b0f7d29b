//! `meridian bench`: whole-system figures against a real `meridian dev`
//! child process on loopback — delivered msg/s for 1:1 traffic, send→deliver
//! latency at a fixed offered rate, and server memory per idle WebSocket.
//! Figures are printed, never asserted. `regions` is the cross-region
//! benchmark (`--cross-region`); `metrics` reads the server's `/metrics`.

mod metrics;
mod process;
mod regions;
mod storm;

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::future::join_all;
use meridian_sdk::frames::Delivered;
use meridian_sdk::{Event, Rest, Session};
use meridian_seams::{Clock, SystemClock};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

use process::{cpu_seconds, disk_written, rss_kib};

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
    /// Sends in flight per sender in the throughput phase.
    #[arg(long, default_value_t = 8)]
    pipeline: usize,
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
    /// NOT DURABLE, never the default: the server fsyncs its store every
    /// this many ms instead of at every group commit. What durability
    /// itself costs is the difference from a run without it.
    #[arg(long)]
    fsync_every_ms: Option<u64>,
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
    ];
    if bench.insecure_core {
        args.push("--insecure-core".into());
    }
    if let Some(ms) = bench.fsync_every_ms {
        args.extend(["--fsync-every-ms".into(), ms.to_string()]);
    }
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

pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub(crate) struct Pair {
    pub(crate) sender: Arc<Session>,
    pub(crate) receiver: Session,
    pub(crate) conv: String,
}

/// Opens a session for `token`, waiting as told whenever the gateway or
/// the core sends it away (`busy`): opening thousands at once exceeds the
/// attach budgets, as a reconnect storm would.
pub(crate) async fn connect(ws: &str, token: &str) -> anyhow::Result<Session> {
    loop {
        match Session::connect(ws, token).await {
            Err(meridian_sdk::SdkError::Busy { retry_after, .. }) => {
                tokio::time::sleep(retry_after).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Connects `token` as a sender: its own echoes of what it sends (the sender
/// is a member too) are drained and acknowledged by a task of their own.
pub(crate) async fn sender_session(ws: &str, token: &str) -> anyhow::Result<Arc<Session>> {
    let mut session = connect(ws, token).await?;
    let mut events = session.take_events();
    let session = Arc::new(session);
    let acker = Arc::downgrade(&session);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let (Event::Deliver { through, .. }, Some(session)) = (event, acker.upgrade()) else {
                continue;
            };
            let _ = session.ack(&through).await;
        }
    });
    Ok(session)
}

async fn make_pairs(rest: &Rest, count: usize) -> anyhow::Result<Vec<Pair>> {
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let a = rest.register(&format!("sender{i}")).await?;
        let b = rest.register(&format!("receiver{i}")).await?;
        let conv = rest.with_token(&a.token).direct(&b.user_id).await?.conv_id;
        let ws = rest.ws_url();
        pairs.push(Pair {
            sender: sender_session(&ws, &a.token).await?,
            receiver: connect(&ws, &b.token).await?,
            conv,
        });
    }
    Ok(pairs)
}

/// Receives until `stop`, acking each batch; records `(sent, latency)` from
/// payloads `"t=<nanos since origin>"` and counts deliveries after `warmup`.
pub(crate) fn spawn_receiver(
    mut session: Session,
    origin: Duration,
    warmup: Duration,
    stop: Duration,
    delivered: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<(u64, u64)>> {
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        while let Ok(Some(event)) =
            tokio::time::timeout(stop.saturating_sub(now()), session.next_event()).await
        {
            let Event::Deliver { through, items, .. } = event else {
                continue;
            };
            let at = now();
            let _ = session.ack(&through).await;
            for item in items {
                let Delivered::Message { message } = item.item else {
                    continue;
                };
                if at < warmup {
                    continue;
                }
                delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(sent) = message
                    .payload
                    .strip_prefix("t=")
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    let at = at.saturating_sub(origin).as_nanos() as u64;
                    latencies.push((sent, at.saturating_sub(sent)));
                }
            }
        }
        latencies
    })
}

/// Sends at `rate` msg/s in total across `pairs` for `seconds` (after a
/// second of warm-up), never waiting for `sent`, so the offered rate stays
/// fixed; receivers keep reading for `tail` more.
pub(crate) async fn fixed_rate_latency(
    pairs: Vec<Pair>,
    rate: u64,
    seconds: u64,
    tail: Duration,
) -> LatencySamples {
    let count = pairs.len();
    let origin = now();
    let warmup = origin + Duration::from_secs(1);
    let stop = warmup + Duration::from_secs(seconds);
    let delivered = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let per_sender = Duration::from_secs_f64(count as f64 / rate.max(1) as f64);
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (index, pair) in pairs.into_iter().enumerate() {
        receivers.push(spawn_receiver(
            pair.receiver,
            origin,
            warmup,
            stop + tail,
            delivered.clone(),
        ));
        let (sender, conv) = (pair.sender, pair.conv);
        let acknowledged = acknowledged.clone();
        senders.push(tokio::spawn(async move {
            // Senders start spread over one period, so the offered load is
            // even rather than every sender's send landing at once.
            let phase = per_sender.mul_f64(index as f64 / count.max(1) as f64);
            tokio::time::sleep(phase).await;
            let mut tick = tokio::time::interval(per_sender);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            while now() < stop {
                tick.tick().await;
                let sent_at = now().saturating_sub(origin).as_nanos();
                let (sender, conv) = (sender.clone(), conv.clone());
                let acknowledged = acknowledged.clone();
                n += 1;
                let id = format!("l{n}");
                tokio::spawn(async move {
                    let sent = sender
                        .send(&conv, &id, &format!("t={sent_at}"), None, 0)
                        .await;
                    let took = now().saturating_sub(origin).as_nanos() as u64;
                    if sent.is_ok()
                        && sent_at >= warmup.saturating_sub(origin).as_nanos()
                        && let Ok(mut acknowledged) = acknowledged.lock()
                    {
                        acknowledged.push(took.saturating_sub(sent_at as u64));
                    }
                });
            }
        }));
    }
    join_all(senders).await;
    let timed: Vec<(u64, u64)> = join_all(receivers)
        .await
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    let mut latencies: Vec<u64> = timed.iter().map(|&(_, latency)| latency).collect();
    latencies.sort_unstable();
    let tail = tail_in_time(&timed, percentile(&latencies, 0.99));
    let mut acknowledged = acknowledged.lock().map(|a| a.clone()).unwrap_or_default();
    acknowledged.sort_unstable();
    LatencySamples {
        delivered_latencies: latencies,
        tail,
        acknowledged_latencies: acknowledged,
        delivered: delivered.load(Ordering::Relaxed),
    }
}

/// Describes whether the samples at or above `threshold` (the p99) are
/// spread evenly or bunched into stalls: how many 100 ms windows (by send
/// time) hold them, and the worst windows. Bunched tails point at a pause
/// (an engine stall, a descheduled thread), spread ones at queueing.
pub(crate) fn tail_in_time(timed: &[(u64, u64)], threshold: u64) -> String {
    const WINDOW_NS: u64 = 100_000_000;
    let mut windows: std::collections::BTreeMap<u64, (usize, u64)> = Default::default();
    let mut all_windows = std::collections::BTreeSet::new();
    for &(sent, latency) in timed {
        all_windows.insert(sent / WINDOW_NS);
        if latency >= threshold {
            let window = windows.entry(sent / WINDOW_NS).or_default();
            window.0 += 1;
            window.1 = window.1.max(latency);
        }
    }
    let slow: usize = windows.values().map(|w| w.0).sum();
    let mut worst: Vec<(u64, (usize, u64))> = windows.iter().map(|(k, v)| (*k, *v)).collect();
    worst.sort_by_key(|(_, (count, _))| std::cmp::Reverse(*count));
    let top: Vec<String> = worst
        .iter()
        .take(4)
        .map(|(window, (count, max))| {
            format!(
                "t={:.1}s {count} (max {:.0} ms)",
                *window as f64 / 10.0,
                *max as f64 / 1e6
            )
        })
        .collect();
    let in_top = worst.iter().take(4).map(|(_, (c, _))| c).sum::<usize>();
    format!(
        "slowest 1% ({slow} samples >= {:.1} ms) in {} of {} 100-ms windows, {:.0}% in the worst 4: {}",
        threshold as f64 / 1e6,
        windows.len(),
        all_windows.len(),
        100.0 * in_top as f64 / slow.max(1) as f64,
        top.join(", ")
    )
}

/// What [`fixed_rate_latency`] measured.
pub(crate) struct LatencySamples {
    /// Sorted send→deliver latencies (ns), after warm-up.
    pub(crate) delivered_latencies: Vec<u64>,
    /// Where the slowest 1% sat in time (see [`tail_in_time`]).
    pub(crate) tail: String,
    /// Sorted send→`sent` latencies (ns): the sender's acknowledgement.
    pub(crate) acknowledged_latencies: Vec<u64>,
    /// Messages delivered after warm-up.
    pub(crate) delivered: u64,
}

/// The committer's sums at one moment: engine write seconds and writes
/// (batches), and transactions committed.
struct CommitterSums {
    write_seconds: f64,
    batches: f64,
    transactions: f64,
    /// The engine write's p99 and maximum over the exporter's recent window.
    write_p99: f64,
    write_max: f64,
}

async fn committer_sums(base: &str) -> anyhow::Result<CommitterSums> {
    use metrics::{metrics_text, sum_in};
    let text = metrics_text(base).await?;
    let write_quantile = |q: &str| {
        sum_in(
            &text,
            "meridian_kv_engine_write_seconds{",
            &[&format!("quantile=\"{q}\"")],
        )
    };
    Ok(CommitterSums {
        write_seconds: sum_in(&text, "meridian_kv_engine_write_seconds_sum", &[]),
        batches: sum_in(&text, "meridian_kv_engine_write_seconds_count", &[]),
        transactions: sum_in(&text, "meridian_kv_batch_transactions_sum", &[]),
        write_p99: write_quantile("0.99"),
        write_max: write_quantile("1"),
    })
}

/// Reads the server's committer figures at `from` and `to` (benchmark
/// clock) and describes the interval: how busy the one serial engine-write
/// path was, and how large its batches were. A figure that depends little on
/// how loaded the rest of the machine is, unlike the latencies.
fn committer_between(
    server: &Server,
    from: Duration,
    to: Duration,
) -> tokio::task::JoinHandle<ServerSample> {
    let base = server.base.clone();
    let pid = server.child.id();
    let cpu = move || pid.and_then(|pid| cpu_seconds(pid).ok()).unwrap_or(0.0);
    let disk = move || pid.and_then(|pid| disk_written(pid).ok()).unwrap_or(0);
    tokio::spawn(async move {
        tokio::time::sleep(from.saturating_sub(now())).await;
        let cpu_start = cpu();
        let disk_start = disk();
        let Ok(start) = committer_sums(&base).await else {
            return ServerSample::unreadable(to.saturating_sub(from));
        };
        tokio::time::sleep(to.saturating_sub(now())).await;
        let cpu_end = cpu();
        let disk_end = disk();
        let Ok(end) = committer_sums(&base).await else {
            return ServerSample::unreadable(to.saturating_sub(from));
        };
        let seconds = to.saturating_sub(from).as_secs_f64().max(1e-9);
        let batches = end.batches - start.batches;
        let transactions = end.transactions - start.transactions;
        let busy = end.write_seconds - start.write_seconds;
        let committer = format!(
            "committer: {:.0} commits/s in {:.0} batches/s ({:.1} per batch); engine writing {:.0}% of the time, {:.2} ms per batch (p99 {:.2} ms, max {:.2} ms)",
            transactions / seconds,
            batches / seconds,
            transactions / batches.max(1.0),
            100.0 * busy / seconds,
            1e3 * busy / batches.max(1.0),
            1e3 * end.write_p99,
            1e3 * end.write_max,
        );
        ServerSample {
            committer,
            cpu_seconds: cpu_end - cpu_start,
            disk_bytes: disk_end.saturating_sub(disk_start),
            seconds,
        }
    })
}

/// What the server did during a measured phase.
struct ServerSample {
    /// The committer's figures, as a line.
    committer: String,
    /// CPU time the server process used.
    cpu_seconds: f64,
    /// Bytes the server process wrote to storage.
    disk_bytes: u64,
    /// How long the sample ran.
    seconds: f64,
}

impl ServerSample {
    fn unreadable(span: Duration) -> Self {
        Self {
            committer: "committer: /metrics unreadable".to_string(),
            cpu_seconds: 0.0,
            disk_bytes: 0,
            seconds: span.as_secs_f64(),
        }
    }

    /// The committer line, and the server's CPU and disk writes per
    /// delivered message: figures the rest of the machine's load changes
    /// less than it changes latency.
    fn describe(&self, delivered: u64) -> String {
        format!(
            "{}\n  server CPU: {:.0}% of one core, {:.0} us per delivered message\n  disk written: {:.2} KB per delivered message ({:.1} MB/s)",
            self.committer,
            100.0 * self.cpu_seconds / self.seconds.max(1e-9),
            1e6 * self.cpu_seconds / delivered.max(1) as f64,
            self.disk_bytes as f64 / 1e3 / delivered.max(1) as f64,
            self.disk_bytes as f64 / 1e6 / self.seconds.max(1e-9),
        ) + if self.disk_bytes == 0 {
            " (nothing reached a disk: is the temporary directory on tmpfs? set TMPDIR to a disk)"
        } else {
            ""
        }
    }
}

/// Server memory per idle, authenticated WebSocket, on a fresh server so
/// nothing earlier already sits in its allocator.
async fn idle_phase(args: &BenchArgs) -> anyhow::Result<()> {
    let count = args.idle;
    let server = start_server(args).await?;
    let rest = Rest::new(&server.base);
    let pid = server.child.id().context("server pid")?;
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
    let after = rss_kib(pid)?;
    println!(
        "idle connections: {} open; server RSS {before} KiB -> {after} KiB: {:.1} KiB per idle connection (gateway socket + core session)",
        sessions.len(),
        after.saturating_sub(before) as f64 / sessions.len().max(1) as f64
    );
    Ok(())
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
    let durability = match args.fsync_every_ms {
        Some(ms) => format!("NOT DURABLE: fsync every {ms} ms (--fsync-every-ms), not the default"),
        None => "fsync per group commit".to_string(),
    };
    println!(
        "meridian bench ({build} build, {security}, {durability}), each phase against a fresh `meridian dev` child"
    );
    if args.idle > 0 && args.phases.contains(&Phase::Idle) {
        idle_phase(&args).await?;
    }
    if args.phases.contains(&Phase::Throughput) {
        throughput_phase(&args).await?;
    }
    if args.phases.contains(&Phase::Latency) {
        latency_phase(&args).await?;
    }
    Ok(())
}

/// Sustained delivered msg/s, 1:1, senders as fast as they can.
async fn throughput_phase(args: &BenchArgs) -> anyhow::Result<()> {
    let server = start_server(args).await?;
    let rest = Rest::new(&server.base);
    let pairs = make_pairs(&rest, args.pairs).await?;
    let origin = now();
    let warmup = origin + Duration::from_secs(1);
    let stop = warmup + Duration::from_secs(args.seconds);
    let delivered = Arc::new(AtomicU64::new(0));
    let committer = committer_between(&server, warmup, stop);
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for pair in pairs {
        receivers.push(spawn_receiver(
            pair.receiver,
            origin,
            warmup,
            stop + Duration::from_secs(2),
            delivered.clone(),
        ));
        for lane in 0..args.pipeline {
            let (sender, conv) = (pair.sender.clone(), pair.conv.clone());
            senders.push(tokio::spawn(async move {
                let mut n = 0u64;
                while now() < stop {
                    let id = format!("t{lane}-{n}");
                    n += 1;
                    if sender
                        .send(&conv, &id, "throughput", None, 0)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }));
        }
    }
    join_all(senders).await;
    join_all(receivers).await;
    let total = delivered.load(Ordering::Relaxed);
    println!(
        "throughput: {:.0} delivered msg/s ({} delivered in {} s, {} pairs x {} in flight)",
        total as f64 / args.seconds as f64,
        total,
        args.seconds,
        args.pairs,
        args.pipeline
    );
    println!("  {}", committer.await?.describe(total));
    Ok(())
}

/// Send→deliver latency at each fixed offered rate, each against a fresh
/// server.
async fn latency_phase(args: &BenchArgs) -> anyhow::Result<()> {
    for &rate in &args.rate {
        latency_at(args, rate).await?;
    }
    Ok(())
}

/// Send→deliver latency at `rate` msg/s offered.
async fn latency_at(args: &BenchArgs, rate: u64) -> anyhow::Result<()> {
    let server = start_server(args).await?;
    let rest = Rest::new(&server.base);
    let pairs = make_pairs(&rest, args.pairs).await?;
    // The load runs from one second after the call for `seconds`.
    let measured = now() + Duration::from_secs(1);
    let committer = committer_between(
        &server,
        measured,
        measured + Duration::from_secs(args.seconds),
    );
    let samples = fixed_rate_latency(pairs, rate, args.seconds, Duration::from_secs(2)).await;
    let latencies = &samples.delivered_latencies;
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "latency at {rate} msg/s offered ({} pairs): send->deliver p50 {:.2} / p90 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.2} ms ({} samples, {:.0} msg/s delivered); send->sent p50 {:.2} ms, p99 {:.2} ms",
        args.pairs,
        ms(percentile(latencies, 0.50)),
        ms(percentile(latencies, 0.90)),
        ms(percentile(latencies, 0.99)),
        ms(percentile(latencies, 0.999)),
        ms(latencies.last().copied().unwrap_or(0)),
        latencies.len(),
        samples.delivered as f64 / args.seconds as f64,
        ms(percentile(&samples.acknowledged_latencies, 0.50)),
        ms(percentile(&samples.acknowledged_latencies, 0.99)),
    );
    println!("  {}", samples.tail);
    println!("  {}", committer.await?.describe(samples.delivered));
    Ok(())
}
