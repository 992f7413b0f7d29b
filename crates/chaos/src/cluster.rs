//! Three regions as real processes: per region a core (`meridian core`,
//! which also serves the region's embedded S3 server) and its gateways
//! (`meridian gateway`), on loopback, with mutual TLS from a CA made for
//! the run. Every path from one region to another's core — its core's
//! replication links and peer calls, its gateways' calls — goes through
//! a fault proxy of that ordered pair (`--reach`), so a link can be cut,
//! stalled one way, slowed or throttled on its own.
//!
//! Every process is killed when the [`Cluster`] is dropped (and stopped
//! with SIGTERM first by [`Cluster::stop`]), so a failed check or a panic
//! leaves none behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use meridian_faultproxy::Proxy;
use meridian_seams::net::{SharedNetwork, TokioNetwork};
use meridian_seams::{SharedClock, SystemClock};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::scenario::REGIONS;

/// How long a process may take to print that it serves.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped process may take to exit before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong bringing the cluster up or down.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file or socket of the run.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A process did not come up.
    #[error("{process}: {reason}")]
    Start {
        /// Which process.
        process: String,
        /// Why.
        reason: String,
    },
    /// The run's service identities could not be issued.
    #[error("issuing the service identities: {0}")]
    Identities(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// What the cluster runs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The `meridian` binary.
    pub binary: PathBuf,
    /// Where region files, certificates and data go.
    pub dir: PathBuf,
    /// Gateways per region (two or more, so one can fail).
    pub gateways_per_region: usize,
}

/// One region's processes and addresses.
#[derive(Debug)]
pub struct RegionProcesses {
    /// The core's gRPC port.
    pub core_port: u16,
    /// The core's admin port (`/readyz`, `/metrics`).
    pub admin_port: u16,
    /// The region's embedded S3 server port.
    pub s3_port: u16,
    /// Each gateway's client port.
    pub gateway_ports: Vec<u16>,
    core: Option<Child>,
    gateways: Vec<Option<Child>>,
}

impl RegionProcesses {
    /// The base URL of gateway `index` (`http://127.0.0.1:PORT`).
    pub fn gateway_url(&self, index: usize) -> Option<String> {
        self.gateway_ports
            .get(index)
            .map(|port| format!("http://127.0.0.1:{port}"))
    }
}

/// The running cluster.
pub struct Cluster {
    options: ClusterOptions,
    regions: BTreeMap<String, RegionProcesses>,
    /// (from, to) → the proxy `from`'s processes reach `to`'s core through.
    proxies: BTreeMap<(String, String), Proxy>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

/// A free loopback port, through the network seam (the process that
/// binds it does so right after).
async fn free_port(network: &SharedNetwork) -> Result<u16, ClusterError> {
    meridian_testbed::free_port(network)
        .await
        .map_err(io("finding a free port"))
}

impl Cluster {
    /// Writes the region files and identities, starts the proxies, every
    /// core, then every gateway, and waits until each says it serves.
    ///
    /// # Errors
    /// A process that exits or stays silent past a minute, a port or file
    /// that cannot be had.
    pub async fn start(options: ClusterOptions) -> Result<Self, ClusterError> {
        let regions_dir = options.dir.join("regions");
        std::fs::create_dir_all(&regions_dir).map_err(io("creating the region directory"))?;
        let network: SharedNetwork = TokioNetwork::shared();
        let mut regions = BTreeMap::new();
        for name in REGIONS {
            let mut gateway_ports = Vec::new();
            for _ in 0..options.gateways_per_region {
                gateway_ports.push(free_port(&network).await?);
            }
            let region = RegionProcesses {
                core_port: free_port(&network).await?,
                admin_port: free_port(&network).await?,
                s3_port: free_port(&network).await?,
                gateway_ports,
                core: None,
                gateways: Vec::new(),
            };
            write_region_file(&regions_dir, name, &region)?;
            regions.insert(name.to_string(), region);
        }
        issue_identities(&regions_dir)?;
        let clock: SharedClock = Arc::new(SystemClock::new());
        let mut proxies = BTreeMap::new();
        for from in REGIONS {
            for to in REGIONS {
                if from == to {
                    continue;
                }
                let target = format!("127.0.0.1:{}", regions[to].core_port);
                let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                let proxy = Proxy::start(
                    network.clone(),
                    clock.clone(),
                    listen,
                    target,
                    Duration::ZERO,
                )
                .await
                .map_err(io(format!("starting the proxy {from} -> {to}")))?;
                proxies.insert((from.to_string(), to.to_string()), proxy);
            }
        }
        let mut cluster = Self {
            options,
            regions,
            proxies,
        };
        for name in REGIONS {
            cluster.start_core(name).await?;
        }
        for name in REGIONS {
            for index in 0..cluster.options.gateways_per_region {
                cluster.start_gateway(name, index).await?;
            }
        }
        Ok(cluster)
    }

    /// The processes and ports of `region`.
    pub fn region(&self, region: &str) -> Option<&RegionProcesses> {
        self.regions.get(region)
    }

    /// The proxy `from`'s processes reach `to`'s core through.
    pub fn proxy(&self, from: &str, to: &str) -> Option<&Proxy> {
        self.proxies.get(&(from.to_string(), to.to_string()))
    }

    /// The flags every process of `region` shares: the run's files, and
    /// its paths to the other regions' cores through their proxies.
    fn common_args(&self, region: &str) -> Vec<String> {
        let mut args = vec![
            "--region".to_string(),
            region.to_string(),
            "--regions-dir".to_string(),
            self.options.dir.join("regions").display().to_string(),
            "--data-dir".to_string(),
            self.options.dir.join("data").display().to_string(),
            // The workload registers many users from one address.
            "--registrations-per-minute".to_string(),
            "1000000".to_string(),
        ];
        for ((from, to), proxy) in &self.proxies {
            if from == region {
                args.push("--reach".to_string());
                args.push(format!("{to}={}", proxy.addr()));
            }
        }
        args
    }

    /// Starts (or restarts) `region`'s core and waits until it serves.
    ///
    /// # Errors
    /// As [`Cluster::start`].
    pub async fn start_core(&mut self, region: &str) -> Result<(), ClusterError> {
        let Some(ports) = self.regions.get(region) else {
            return Err(unknown(region));
        };
        let mut args = vec!["core".to_string()];
        args.extend(self.common_args(region));
        args.push("--admin-listen".to_string());
        args.push(format!("127.0.0.1:{}", ports.admin_port));
        let child = spawn_until(
            &self.options.binary,
            &args,
            &format!("core of {region}"),
            "meridian core: site",
        )
        .await?;
        if let Some(ports) = self.regions.get_mut(region) {
            ports.core = Some(child);
        }
        Ok(())
    }

    /// Starts (or restarts) gateway `index` of `region` and waits until it
    /// serves.
    ///
    /// # Errors
    /// As [`Cluster::start`].
    pub async fn start_gateway(&mut self, region: &str, index: usize) -> Result<(), ClusterError> {
        let Some(port) = self
            .regions
            .get(region)
            .and_then(|r| r.gateway_ports.get(index))
            .copied()
        else {
            return Err(unknown(region));
        };
        let mut args = vec!["gateway".to_string()];
        args.extend(self.common_args(region));
        args.push("--listen".to_string());
        args.push(format!("127.0.0.1:{port}"));
        let child = spawn_until(
            &self.options.binary,
            &args,
            &format!("gateway {index} of {region}"),
            "meridian gateway: region",
        )
        .await?;
        if let Some(processes) = self.regions.get_mut(region) {
            if processes.gateways.len() <= index {
                processes.gateways.resize_with(index + 1, || None);
            }
            processes.gateways[index] = Some(child);
        }
        Ok(())
    }

    /// SIGKILLs `region`'s core (`kill -9`) and reaps it; it stays down
    /// until [`Cluster::start_core`].
    pub async fn kill_core(&mut self, region: &str) {
        if let Some(mut child) = self.regions.get_mut(region).and_then(|r| r.core.take()) {
            let _ = child.kill().await;
        }
    }

    /// SIGKILLs gateway `index` of `region` and reaps it; it stays down
    /// until [`Cluster::start_gateway`].
    pub async fn kill_gateway(&mut self, region: &str, index: usize) {
        let child = self
            .regions
            .get_mut(region)
            .and_then(|r| r.gateways.get_mut(index))
            .and_then(Option::take);
        if let Some(mut child) = child {
            let _ = child.kill().await;
        }
    }

    /// The process id of `region`'s core, while it runs.
    pub fn core_pid(&self, region: &str) -> Option<u32> {
        self.regions.get(region)?.core.as_ref()?.id()
    }

    /// The process id of gateway `index` of `region`, while it runs.
    pub fn gateway_pid(&self, region: &str, index: usize) -> Option<u32> {
        self.regions
            .get(region)?
            .gateways
            .get(index)?
            .as_ref()?
            .id()
    }

    /// Process ids of every running process, by name (for tests and
    /// signals).
    pub fn pids(&self) -> BTreeMap<String, u32> {
        let mut pids = BTreeMap::new();
        for (name, region) in &self.regions {
            if let Some(pid) = region.core.as_ref().and_then(Child::id) {
                pids.insert(format!("core of {name}"), pid);
            }
            for (index, gateway) in region.gateways.iter().enumerate() {
                if let Some(pid) = gateway.as_ref().and_then(Child::id) {
                    pids.insert(format!("gateway {index} of {name}"), pid);
                }
            }
        }
        pids
    }

    /// Stops every process: SIGTERM, then SIGKILL for any still running
    /// after ten seconds; gateways first, then cores.
    pub async fn stop(mut self) {
        let mut gateways = Vec::new();
        let mut cores = Vec::new();
        for region in self.regions.values_mut() {
            gateways.extend(region.gateways.iter_mut().filter_map(Option::take));
            cores.extend(region.core.take());
        }
        for group in [gateways, cores] {
            for child in &group {
                if let Some(pid) = child.id() {
                    signal(pid, "TERM").await;
                }
            }
            for mut child in group {
                if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
        }
    }
}

fn unknown(region: &str) -> ClusterError {
    ClusterError::Start {
        process: region.to_string(),
        reason: "no such region in the cluster".to_string(),
    }
}

/// Sends SIGname to `pid` (`kill -s NAME PID`).
pub async fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .await;
}

/// The state letter of `pid` in `/proc/PID/stat` (`T`: stopped by a
/// signal), if the process exists.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Sends SIGSTOP to `pid` and waits (up to five seconds) until the kernel
/// shows it stopped: every thread of a process must reach the stop, after
/// `kill` returns.
pub async fn freeze(pid: u32) -> bool {
    signal(pid, "STOP").await;
    for _ in 0..500 {
        if process_state(pid) == Some('T') {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Spawns `meridian args` and waits for a stdout line starting with
/// `ready`; the child is killed when dropped.
async fn spawn_until(
    binary: &Path,
    args: &[String],
    process: &str,
    ready: &str,
) -> Result<Child, ClusterError> {
    let failed = |reason: String| ClusterError::Start {
        process: process.to_string(),
        reason,
    };
    let mut child = Command::new(binary)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| failed(format!("cannot start {}: {error}", binary.display())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| failed("no stdout".to_string()))?;
    let mut lines = BufReader::new(stdout).lines();
    let waited = tokio::time::timeout(START_TIMEOUT, async {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) if line.starts_with(ready) => return Ok(()),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return Err("exited before it served".to_string()),
            }
        }
    })
    .await;
    match waited {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => return Err(failed(reason)),
        Err(_) => return Err(failed(format!("silent for {START_TIMEOUT:?}"))),
    }
    // Keep draining so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(child)
}

/// `region`'s file: its ports with the local profile, and `[tls]` at the
/// files [`issue_identities`] writes.
fn write_region_file(dir: &Path, name: &str, region: &RegionProcesses) -> Result<(), ClusterError> {
    let gateway = region.gateway_ports.first().copied().unwrap_or(0);
    let text = format!(
        "name = \"{name}\"\n\
         [listen]\ngateway = \"127.0.0.1:{gateway}\"\ncore = \"127.0.0.1:{core}\"\n\
         [advertise]\ngateway = \"127.0.0.1:{gateway}\"\ncore = \"127.0.0.1:{core}\"\n\
         [local]\ngateway = \"127.0.0.1:{gateway}\"\ncore = \"127.0.0.1:{core}\"\n\
         s3 = \"127.0.0.1:{s3}\"\n\
         [tls]\nca = \"certs/ca.pem\"\n\
         core_cert = \"certs/core.{name}.pem\"\ncore_key = \"certs/core.{name}.key\"\n\
         gateway_cert = \"certs/gateway.{name}.pem\"\ngateway_key = \"certs/gateway.{name}.key\"\n",
        core = region.core_port,
        s3 = region.s3_port,
    );
    std::fs::write(dir.join(format!("{name}.toml")), text)
        .map_err(io(format!("writing the region file of {name}")))
}

/// The run's CA and every identity, where the region files point.
fn issue_identities(regions_dir: &Path) -> Result<(), ClusterError> {
    let deployment = meridian_region::config::Deployment::load(regions_dir)
        .map_err(|error| ClusterError::Identities(format!("{error:#}")))?;
    meridian_identity::pki::init_dir(
        &regions_dir.join("certs"),
        &meridian_region::identities::deployment_identities(&deployment),
    )
    .map_err(|error| ClusterError::Identities(error.to_string()))?;
    Ok(())
}
