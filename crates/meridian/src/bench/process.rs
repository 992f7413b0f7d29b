//! What the kernel says of the server process under measurement: its CPU
//! time, the bytes it caused to be written to storage, its resident memory.

use anyhow::Context;

/// CPU time (user + system) process `pid` has used, all its threads, dead
/// ones included. `/proc/<pid>/stat` counts in USER_HZ ticks, which the
/// kernel's user ABI fixes at 100 per second.
pub(super) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields; `after` starts at the 3rd.
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// The number after `name` in the `name: value [unit]` file
/// `/proc/<pid>/<file>`.
fn field(pid: u32, file: &str, name: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}"))?;
    let line = text
        .lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .with_context(|| format!("{name} in /proc/{pid}/{file}"))?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

/// Bytes process `pid` has caused to be written to storage
/// (`write_bytes` of `/proc/<pid>/io`: the journal, tables and their
/// fsyncs as the block layer sees them, not what was asked of the page
/// cache).
pub(super) fn disk_written(pid: u32) -> anyhow::Result<u64> {
    field(pid, "io", "write_bytes")
}

/// Resident memory of process `pid`, KiB.
pub(super) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    field(pid, "status", "VmRSS")
}
