//! What the server did during a measured phase, whichever server it is:
//! its CPU time and disk writes from the kernel's counters, and for
//! Meridian its committer's figures from `/metrics`.

use std::time::Duration;

use super::process::{cpu_seconds, disk_written};
use super::{Target, now};

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
    use super::metrics::{metrics_text, sum_in};
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
pub(crate) fn sample_between(
    server: &Target,
    from: Duration,
    to: Duration,
) -> tokio::task::JoinHandle<ServerSample> {
    let base = server.metrics_base();
    let pid = server.pid();
    tokio::spawn(async move {
        tokio::time::sleep(from.saturating_sub(now())).await;
        let start = Reading::take(pid, base.as_deref()).await;
        tokio::time::sleep(to.saturating_sub(now())).await;
        let end = Reading::take(pid, base.as_deref()).await;
        let seconds = to.saturating_sub(from).as_secs_f64().max(1e-9);
        let committer = match (start.committer, &end.committer) {
            (Some(start), Some(end)) => start.describe_until(end, seconds),
            _ if base.is_none() => {
                "committer: none (ejabberd keeps online messages in memory, never fsynced)"
                    .to_string()
            }
            _ => "committer: /metrics unreadable".to_string(),
        };
        let spent = |start: Option<f64>, end: Option<f64>| start.zip(end).map(|(s, e)| e - s);
        ServerSample {
            committer,
            writes_to_disk: base.is_some(),
            cpu_seconds: spent(start.cpu, end.cpu),
            generator_cpu_seconds: spent(start.generator_cpu, end.generator_cpu),
            disk_bytes: start
                .disk
                .zip(end.disk)
                .map(|(start, end)| end.saturating_sub(start)),
            seconds,
        }
    })
}

/// The counters a sample subtracts, read at one moment (`None`: unreadable).
struct Reading {
    /// The server process's CPU seconds.
    cpu: Option<f64>,
    /// The load generator's (this process's) CPU seconds: a generator short
    /// of CPU would hold both servers back alike, and this shows it.
    generator_cpu: Option<f64>,
    /// Bytes the server process has written to storage.
    disk: Option<u64>,
    /// Meridian's committer sums, where the server has `/metrics` at `base`.
    committer: Option<CommitterSums>,
}

impl Reading {
    async fn take(pid: Option<u32>, base: Option<&str>) -> Self {
        let committer = match base {
            Some(base) => committer_sums(base).await.ok(),
            None => None,
        };
        Self {
            cpu: pid.and_then(|pid| cpu_seconds(pid).ok()),
            generator_cpu: cpu_seconds(std::process::id()).ok(),
            disk: pid.and_then(|pid| disk_written(pid).ok()),
            committer,
        }
    }
}

impl CommitterSums {
    /// The committer's work from `self` to `end`, `seconds` apart: how busy
    /// the one serial engine-write path was and how large its batches were.
    fn describe_until(&self, end: &Self, seconds: f64) -> String {
        let start = self;
        let batches = end.batches - start.batches;
        let transactions = end.transactions - start.transactions;
        let busy = end.write_seconds - start.write_seconds;
        format!(
            "committer: {:.0} commits/s in {:.0} batches/s ({:.1} per batch); engine writing {:.0}% of the time, {:.2} ms per batch (p99 {:.2} ms, max {:.2} ms)",
            transactions / seconds,
            batches / seconds,
            transactions / batches.max(1.0),
            100.0 * busy / seconds,
            1e3 * busy / batches.max(1.0),
            1e3 * end.write_p99,
            1e3 * end.write_max,
        )
    }
}

/// What the server did during a measured phase.
pub(crate) struct ServerSample {
    /// The committer's figures, as a line.
    committer: String,
    /// Whether the server is one that should write (Meridian): nothing
    /// written then means the store sat on tmpfs.
    writes_to_disk: bool,
    /// CPU time the server process used (`None`: `/proc` unreadable).
    cpu_seconds: Option<f64>,
    /// CPU time the load generator (this process) used.
    generator_cpu_seconds: Option<f64>,
    /// Bytes the server process wrote to storage (`None`: unreadable).
    disk_bytes: Option<u64>,
    /// How long the sample ran.
    seconds: f64,
}

impl ServerSample {
    /// The committer line, and the server's CPU and disk writes per
    /// delivered message: figures the rest of the machine's load changes
    /// less than it changes latency.
    pub(crate) fn describe(&self, delivered: u64) -> String {
        let seconds = self.seconds.max(1e-9);
        let per_message = delivered.max(1) as f64;
        let cpu = |what: &str, used: Option<f64>| match used {
            Some(used) => format!(
                "{what}: {:.0}% of one core, {:.0} us per delivered message",
                100.0 * used / seconds,
                1e6 * used / per_message
            ),
            None => format!("{what}: unreadable (/proc/<pid>/stat)"),
        };
        let disk = match self.disk_bytes {
            None => "disk written: unreadable (/proc/<pid>/io)".to_string(),
            Some(0) if self.writes_to_disk => "disk written: 0 (nothing reached a disk: is the temporary directory on tmpfs? set TMPDIR to a disk)".to_string(),
            Some(bytes) => format!(
                "disk written: {:.2} KB per delivered message ({:.1} MB/s)",
                bytes as f64 / 1e3 / per_message,
                bytes as f64 / 1e6 / seconds,
            ),
        };
        format!(
            "{}\n  {}\n  {disk}\n  {}",
            self.committer,
            cpu("server CPU", self.cpu_seconds),
            cpu("load generator CPU", self.generator_cpu_seconds),
        )
    }
}
