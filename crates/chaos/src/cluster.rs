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
    /// One region's data on a filesystem of its own, this small (a tmpfs
    /// mounted for the run), so it can fill.
    pub small_disk: Option<SmallDisk>,
    /// Each region's replication log on a Kafka broker of its own (a tansu
    /// process) instead of its core's embedded log.
    pub kafka: bool,
}

/// A region whose data lives on a small filesystem of its own.
#[derive(Debug, Clone)]
pub struct SmallDisk {
    /// The region.
    pub region: String,
    /// The filesystem's size.
    pub mib: u64,
}

/// A process the cluster started that exited without being told to.
#[derive(Debug, Clone)]
pub struct Exited {
    /// `core of us-east`, `gateway 1 of eu-west`.
    pub process: String,
    /// The region.
    pub region: String,
    /// The gateway's index; `None` for the core.
    pub gateway: Option<usize>,
    /// How it ended (`exit status: 1`, `signal: 9`).
    pub status: String,
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
    /// Each gateway's admin port (`/metrics`, `/readyz`, `/drain`).
    pub gateway_admin_ports: Vec<u16>,
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

    /// The base URL of gateway `index`'s admin listener.
    pub fn gateway_admin_url(&self, index: usize) -> Option<String> {
        self.gateway_admin_ports
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
    /// Region → the proxy everyone reaches its object storage through.
    s3_proxies: BTreeMap<String, Proxy>,
    /// Region → extra flags its core starts with (a skewed clock).
    core_flags: BTreeMap<String, Vec<String>>,
    /// Where the small disk is mounted, to unmount at the end.
    mounted: Option<PathBuf>,
    /// Region → its Kafka broker, with `kafka`.
    brokers: BTreeMap<String, meridian_testbed::Broker>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

/// Free loopback ports, through the network seam, each handed out once:
/// every process and proxy of the run binds one of these (the kernel may
/// otherwise give a proxy's ephemeral bind a port a process is about to
/// take).
struct Ports {
    network: SharedNetwork,
    taken: std::collections::BTreeSet<u16>,
}

impl Ports {
    async fn next(&mut self) -> Result<u16, ClusterError> {
        loop {
            let port = meridian_testbed::free_port(&self.network)
                .await
                .map_err(io("finding a free port"))?;
            if self.taken.insert(port) {
                return Ok(port);
            }
        }
    }
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
        let mut ports = Ports {
            network: network.clone(),
            taken: std::collections::BTreeSet::new(),
        };
        let mut regions = BTreeMap::new();
        for name in REGIONS {
            let (mut gateway_ports, mut gateway_admin_ports) = (Vec::new(), Vec::new());
            for _ in 0..options.gateways_per_region {
                gateway_ports.push(ports.next().await?);
                gateway_admin_ports.push(ports.next().await?);
            }
            let region = RegionProcesses {
                core_port: ports.next().await?,
                admin_port: ports.next().await?,
                s3_port: ports.next().await?,
                gateway_ports,
                gateway_admin_ports,
                core: None,
                gateways: Vec::new(),
            };
            regions.insert(name.to_string(), region);
        }
        let clock: SharedClock = Arc::new(SystemClock::new());
        let mut s3_proxies = BTreeMap::new();
        for (name, region) in &regions {
            let proxy = start_proxy(
                &network,
                &clock,
                &mut ports,
                region.s3_port,
                &format!("{name}'s S3"),
            )
            .await?;
            write_region_file(&regions_dir, name, region, proxy.addr())?;
            s3_proxies.insert(name.clone(), proxy);
        }
        issue_identities(&regions_dir)?;
        let mut proxies = BTreeMap::new();
        for from in REGIONS {
            for to in REGIONS {
                if from == to {
                    continue;
                }
                let proxy = start_proxy(
                    &network,
                    &clock,
                    &mut ports,
                    regions[to].core_port,
                    &format!("{from} -> {to}"),
                )
                .await?;
                proxies.insert((from.to_string(), to.to_string()), proxy);
            }
        }
        let mut brokers = BTreeMap::new();
        if options.kafka {
            for name in REGIONS {
                let broker = meridian_testbed::Broker::start(&network)
                    .await
                    .map_err(|error| ClusterError::Start {
                        process: format!("Kafka broker of {name}"),
                        reason: error.to_string(),
                    })?;
                brokers.insert(name.to_string(), broker);
            }
        }
        // Mounted last, right before the cluster that unmounts it exists.
        let mounted = match &options.small_disk {
            Some(disk) => Some(mount_small_disk(&options.dir, disk).await?),
            None => None,
        };
        let mut cluster = Self {
            options,
            regions,
            proxies,
            s3_proxies,
            core_flags: BTreeMap::new(),
            mounted,
            brokers,
        };
        for name in REGIONS {
            cluster.start_core(name).await?;
        }
        for name in REGIONS {
            for index in 0..cluster.options.gateways_per_region {
                // A gateway's port is its own (no other process names it):
                // one taken since it was found free is replaced by another.
                let mut attempts = 0;
                while let Err(error) = cluster.start_gateway(name, index).await {
                    attempts += 1;
                    if attempts == 3 {
                        return Err(error);
                    }
                    let (port, admin) = (ports.next().await?, ports.next().await?);
                    if let Some(region) = cluster.regions.get_mut(name) {
                        region.gateway_ports[index] = port;
                        region.gateway_admin_ports[index] = admin;
                    }
                }
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

    /// The proxy in front of `region`'s object storage.
    pub fn s3_proxy(&self, region: &str) -> Option<&Proxy> {
        self.s3_proxies.get(region)
    }

    /// Where `region` keeps its data.
    pub fn data_dir(&self, region: &str) -> PathBuf {
        self.options.dir.join("data").join(region)
    }

    /// Extra flags `region`'s core starts with from its next start on.
    pub fn set_core_flags(&mut self, region: &str, flags: Vec<String>) {
        self.core_flags.insert(region.to_string(), flags);
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
        if let Some(broker) = self.brokers.get(region) {
            args.extend([
                "--log".to_string(),
                "kafka".to_string(),
                "--brokers".to_string(),
                format!("{region}={}", broker.bootstrap()),
            ]);
        }
        args.extend(self.core_flags.get(region).cloned().unwrap_or_default());
        let child = spawn_until(
            &self.options.binary,
            &args,
            &self.options.dir,
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
        let Some((port, admin)) = self.regions.get(region).and_then(|r| {
            Some((
                *r.gateway_ports.get(index)?,
                *r.gateway_admin_ports.get(index)?,
            ))
        }) else {
            return Err(unknown(region));
        };
        let mut args = vec!["gateway".to_string()];
        args.extend(self.common_args(region));
        args.push("--listen".to_string());
        args.push(format!("127.0.0.1:{port}"));
        args.push("--admin-listen".to_string());
        args.push(format!("127.0.0.1:{admin}"));
        let child = spawn_until(
            &self.options.binary,
            &args,
            &self.options.dir,
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

    /// Stops `region`'s core as an operator would (SIGTERM, SIGKILL after
    /// ten seconds) and reaps it; it stays down until
    /// [`Cluster::start_core`].
    pub async fn stop_core(&mut self, region: &str) {
        if let Some(child) = self.regions.get_mut(region).and_then(|r| r.core.take()) {
            terminate(vec![child]).await;
        }
    }

    /// SIGKILLs `region`'s Kafka broker; it stays down until
    /// [`Cluster::restart_broker`].
    ///
    /// # Errors
    /// The cluster runs no brokers.
    pub async fn kill_broker(&mut self, region: &str) -> Result<(), ClusterError> {
        let broker = self
            .brokers
            .get_mut(region)
            .ok_or_else(|| no_broker(region))?;
        broker.kill().await;
        Ok(())
    }

    /// Starts `region`'s Kafka broker again over its data.
    ///
    /// # Errors
    /// The cluster runs no brokers, or the broker does not come back.
    pub async fn restart_broker(&mut self, region: &str) -> Result<(), ClusterError> {
        let broker = self
            .brokers
            .get_mut(region)
            .ok_or_else(|| no_broker(region))?;
        broker.restart().await.map_err(|error| ClusterError::Start {
            process: format!("Kafka broker of {region}"),
            reason: error.to_string(),
        })
    }

    /// Every process that exited since the last call, without being told
    /// to; each stays down until started again.
    pub fn reap(&mut self) -> Vec<Exited> {
        let mut exited = Vec::new();
        for (name, region) in &mut self.regions {
            let slots = std::iter::once((None, &mut region.core)).chain(
                region
                    .gateways
                    .iter_mut()
                    .enumerate()
                    .map(|(i, slot)| (Some(i), slot)),
            );
            for (gateway, slot) in slots {
                let status = slot
                    .as_mut()
                    .and_then(|child| child.try_wait().ok().flatten());
                if let Some(status) = status {
                    *slot = None;
                    exited.push(Exited {
                        process: gateway.map_or_else(
                            || format!("core of {name}"),
                            |i| format!("gateway {i} of {name}"),
                        ),
                        region: name.clone(),
                        gateway,
                        status: status.to_string(),
                    });
                }
            }
        }
        exited
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
            if let Some(pid) = self
                .brokers
                .get(name)
                .and_then(meridian_testbed::Broker::pid)
            {
                pids.insert(format!("Kafka broker of {name}"), pid);
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
            terminate(group).await;
        }
        for broker in self.brokers.values_mut() {
            broker.kill().await;
        }
        if let Some(mounted) = self.mounted.take() {
            unmount(&mounted).await;
        }
    }
}

impl Drop for Cluster {
    /// A cluster dropped without [`Cluster::stop`] (a panic, Ctrl-C): its
    /// processes are killed by their handles; the small disk is detached
    /// lazily, as they may still hold it for a moment.
    fn drop(&mut self) {
        if let Some(mounted) = self.mounted.take() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&mounted)
                .status();
        }
    }
}

/// SIGTERMs every child, then SIGKILLs those still running after ten
/// seconds.
async fn terminate(children: Vec<Child>) {
    for child in &children {
        if let Some(pid) = child.id() {
            signal(pid, "TERM").await;
        }
    }
    for mut child in children {
        if tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// A proxy on a free loopback port to `127.0.0.1:port`. A port found
/// free may be taken before the proxy binds it (another process of the
/// machine, another cluster in the same test run): a few others are tried.
async fn start_proxy(
    network: &SharedNetwork,
    clock: &SharedClock,
    ports: &mut Ports,
    port: u16,
    what: &str,
) -> Result<Proxy, ClusterError> {
    let mut attempts = 0;
    loop {
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], ports.next().await?));
        let started = Proxy::start(
            network.clone(),
            clock.clone(),
            listen,
            format!("127.0.0.1:{port}"),
            Duration::ZERO,
        )
        .await;
        match started {
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && attempts < 5 => {
                attempts += 1;
            }
            other => return other.map_err(io(format!("starting the proxy {what}"))),
        }
    }
}

/// Mounts a tmpfs of `disk.mib` where `disk.region` keeps its data.
async fn mount_small_disk(dir: &Path, disk: &SmallDisk) -> Result<PathBuf, ClusterError> {
    let target = dir.join("data").join(&disk.region);
    std::fs::create_dir_all(&target).map_err(io("creating the small disk's mount point"))?;
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("size={}m", disk.mib))
        .arg("meridian-chaos")
        .arg(&target)
        .status()
        .await
        .map_err(io("running mount"))?;
    if !status.success() {
        return Err(ClusterError::Start {
            process: format!("the small disk of {}", disk.region),
            reason: format!(
                "mount -t tmpfs at {} failed ({status}): the disk-full fault needs root",
                target.display()
            ),
        });
    }
    Ok(target)
}

async fn unmount(target: &Path) {
    let _ = Command::new("umount").arg("-l").arg(target).status().await;
}

fn no_broker(region: &str) -> ClusterError {
    ClusterError::Start {
        process: format!("Kafka broker of {region}"),
        reason: "this cluster runs the embedded log (--log kafka runs brokers)".into(),
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
    dir: &Path,
    process: &str,
    ready: &str,
) -> Result<Child, ClusterError> {
    let failed = |reason: String| ClusterError::Start {
        process: process.to_string(),
        reason,
    };
    // Each process's log, appended across restarts: the evidence behind
    // a failed check.
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io("creating the log directory"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{}.log", process.replace(' ', "-"))))
        .map_err(io(format!("opening the log of {process}")))?;
    let mut child = Command::new(binary)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
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
fn write_region_file(
    dir: &Path,
    name: &str,
    region: &RegionProcesses,
    s3_endpoint: std::net::SocketAddr,
) -> Result<(), ClusterError> {
    let gateway = region.gateway_ports.first().copied().unwrap_or(0);
    let text = format!(
        "name = \"{name}\"\n\
         [listen]\ngateway = \"127.0.0.1:{gateway}\"\ncore = \"127.0.0.1:{core}\"\n\
         [advertise]\ngateway = \"127.0.0.1:{gateway}\"\ncore = \"127.0.0.1:{core}\"\n\
         [local]\ngateway = \"127.0.0.1:{gateway}\"\ncore = \"127.0.0.1:{core}\"\n\
         s3 = \"127.0.0.1:{s3}\"\n\
         [s3]\nbucket = \"media-{name}\"\nendpoint = \"http://{s3_endpoint}\"\n\
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
