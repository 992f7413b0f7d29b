//! The deployment plan: the region files ([`Deployment`]) and the operator's
//! choices ([`PlanOptions`]) resolved into what each site runs — its
//! addresses, its store and the store's directory, its log, its peers, its
//! core and gateway configuration — and where every region's bucket is.
//!
//! Plain data and functions: nothing here opens a store or binds a port,
//! except [`Plan::start_media`], which starts the embedded S3 servers the
//! plan asks for. The `meridian` binary turns its flags into [`PlanOptions`]
//! and starts what the plan says. The simulation plans its own sites the
//! same way and replaces, explicitly, what differs under simulation (an
//! in-memory store, the simulated hosts' addresses).
//!
//! # The rules
//! - A region with `n` shards runs `n` sites. Shard `i` binds, and is
//!   reached at, the region's core and gateway ports + `i`, and keeps its
//!   state in its own directory (`<data dir>/<region dir>_<i>`).
//! - A site's peers are every site of its peer regions and its own region's
//!   other shards, never itself. A gateway reaches its own region's sites
//!   and its peers'.
//! - The local profile takes its log from the options (`--log`), the
//!   production profile from the region file's `[log]`; brokers given in
//!   the options win over the file's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use meridian_core::CoreConfig;
use meridian_gateway::GatewayConfig;
use meridian_media::{EmbeddedS3, S3Target};
use meridian_replication::kafka::KafkaConfig;
use meridian_seams::net::SharedNetwork;
use meridian_wire::sites::Topology;

use crate::config::{Deployment, RegionConfig, TlsConfig};
use crate::{LogChoice, StoreChoice, media};

mod geodns;

/// Which addresses of the region files to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Loopback ports of each file's `[local]` table.
    Local,
    /// `[listen]` to bind, `[advertise]` to reach other regions.
    Production,
}

/// Which log carries replication with the local profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// In each region's own store.
    Embedded,
    /// Each region's Kafka brokers ([`PlanOptions::brokers`]).
    Kafka,
}

/// The operator's choices the plan resolves the region files with (the
/// flags shared by `meridian dev`, `core` and `gateway`). The defaults are
/// the flags' defaults, and leave the core's and gateway's limits at their
/// own defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    /// Which addresses of the region files to use.
    pub profile: Profile,
    /// Directory for durable state, one subdirectory per region (or shard).
    pub data_dir: PathBuf,
    /// Retention of undelivered messages and history, seconds.
    pub retention_secs: u64,
    /// Interval of the retention sweep, seconds (at least 1).
    pub sweep_secs: u64,
    /// Largest media upload, MiB (at least 1).
    pub media_max_mib: u64,
    /// Sends per second allowed per device (sustained).
    pub send_rate: f64,
    /// Registrations per minute allowed per client IP address.
    pub registrations_per_minute: f64,
    /// Authenticated REST requests per second allowed per device
    /// (sustained).
    pub request_rate: f64,
    /// Failed authentications per minute allowed per client IP address.
    pub auth_failures_per_minute: f64,
    /// fsync the fjall stores every this many ms instead of at every group
    /// commit (`--sync <N>ms`: relaxes durability, for measuring it).
    pub fsync_every_ms: Option<u64>,
    /// Overrides every region's maximum clock offset, milliseconds.
    pub max_clock_offset_ms: Option<u64>,
    /// The replication log with the local profile (the production profile
    /// uses the region files' `[log]`).
    pub log: LogKind,
    /// Kafka bootstrap servers: `REGION=HOST:PORT[,…]` for one region, or
    /// `HOST:PORT[,…]` for every region; the first that applies wins.
    pub brokers: Vec<String>,
    /// Run cores in plaintext with no caller checked, whatever the region
    /// files say (`--insecure-core`).
    pub insecure_core: bool,
    /// Where this process reaches some sites' cores instead of where the
    /// region files say (`--reach SITE=HOST:PORT`): through a proxy of
    /// its own (the chaos suite cuts one region pair's path this way), or
    /// at an address the files do not know yet.
    pub reach: BTreeMap<String, String>,
    /// Gateways per region with the local profile: the first on `[local]
    /// gateway`, the others on the next loopback addresses, same port
    /// (`--gateways`).
    pub gateways: u8,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            profile: Profile::Local,
            data_dir: PathBuf::from("./data"),
            retention_secs: 30 * 24 * 3600,
            sweep_secs: 60,
            media_max_mib: 100,
            send_rate: 50.0,
            registrations_per_minute: 600.0,
            request_rate: 20.0,
            auth_failures_per_minute: 30.0,
            fsync_every_ms: None,
            max_clock_offset_ms: None,
            log: LogKind::Embedded,
            brokers: Vec::new(),
            insecure_core: false,
            reach: BTreeMap::new(),
            gateways: 1,
        }
    }
}

/// One site: a region, or one shard of a sharded region, served by its own
/// core over its own store.
#[derive(Debug, Clone)]
pub struct Site<'a> {
    /// The region's file.
    pub region: &'a RegionConfig,
    /// The shard (0 in an unsharded region).
    pub shard: u32,
    /// The site's name: the region's, or `{region}_{shard}`.
    pub name: String,
}

/// Everything a site's core (and the gateway beside it, in one process)
/// runs with.
#[derive(Debug, Clone)]
pub struct SitePlan {
    /// The site's name.
    pub name: String,
    /// Its region's name.
    pub region: String,
    /// Its shard.
    pub shard: u32,
    /// The client-facing address to bind.
    pub gateway_listen: SocketAddr,
    /// The core's gRPC address to bind.
    pub core_listen: SocketAddr,
    /// The core's configuration.
    pub core: CoreConfig,
    /// The configuration of the region's gateways.
    pub gateway: GatewayConfig,
    /// Where the site's state lives.
    pub store: StoreChoice,
    /// The log carrying the site's changes to other sites.
    pub log: LogChoice,
    /// Every other site the core replicates with: site → `host:port`.
    pub peers: BTreeMap<String, String>,
}

/// What a region's gateway runs with.
#[derive(Debug, Clone)]
pub struct GatewayPlan {
    /// The client-facing address to bind.
    pub listen: SocketAddr,
    /// The gateway's configuration.
    pub config: GatewayConfig,
    /// Every site it reaches, its own region's included: site → `host:port`.
    pub cores: BTreeMap<String, String>,
}

/// Where a region's bucket is served.
#[derive(Debug, Clone)]
pub enum BucketPlan {
    /// By an embedded S3 server this process starts on `listen`, its
    /// objects in `dir`.
    Embedded {
        /// The server's address.
        listen: SocketAddr,
        /// Its data directory.
        dir: PathBuf,
    },
    /// Elsewhere, at this target.
    Remote(S3Target),
}

/// How a region's gateways and cores prove who they are to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsPlan {
    /// With the region file's `[tls]` files; the local profile creates
    /// them with a local CA when they are missing.
    Files(TlsConfig),
    /// With identities of a CA made in memory for this process: the local
    /// profile's regions without `[tls]`, all in one process.
    Ephemeral,
    /// In plaintext, no caller checked (`--insecure-core`).
    Insecure,
}

/// A deployment resolved with the operator's choices.
#[derive(Debug, Clone)]
pub struct Plan {
    deployment: Deployment,
    topology: Topology,
    options: PlanOptions,
}

impl Plan {
    /// The plan of `deployment` under `options`.
    pub fn new(deployment: Deployment, options: PlanOptions) -> Self {
        let topology = deployment.topology();
        Self {
            deployment,
            topology,
            options,
        }
    }

    /// The region files.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// Every region's shard count.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The operator's choices.
    pub fn options(&self) -> &PlanOptions {
        &self.options
    }

    /// The sites of `region`, in shard order.
    pub fn sites_of<'a>(&self, region: &'a RegionConfig) -> Vec<Site<'a>> {
        (0..self.topology.shards_of(&region.name))
            .map(|shard| Site {
                region,
                shard,
                name: self.topology.site_name(&region.name, shard),
            })
            .collect()
    }

    /// Every site of the deployment: regions by name, each in shard order.
    pub fn sites(&self) -> Vec<Site<'_>> {
        self.deployment
            .regions
            .values()
            .flat_map(|region| self.sites_of(region))
            .collect()
    }

    /// The site named `name` (a region's, or `{region}_{shard}`).
    pub fn site_named(&self, name: &str) -> Option<Site<'_>> {
        self.sites().into_iter().find(|site| site.name == name)
    }

    /// Shard `shard` of the region named `region`.
    ///
    /// # Errors
    /// When there is no such region, or it has no such shard.
    pub fn site(&self, region: &str, shard: u32) -> anyhow::Result<Site<'_>> {
        let region = self.deployment.region(region)?;
        self.sites_of(region)
            .into_iter()
            .find(|site| site.shard == shard)
            .with_context(|| {
                format!(
                    "region {} has {} shard(s); no shard {shard}",
                    region.name,
                    self.topology.shards_of(&region.name),
                )
            })
    }

    /// The address others use to reach `site`'s core (this process's
    /// [`PlanOptions::reach`] first).
    ///
    /// # Errors
    /// When the region file's address has no port, or no port is left for
    /// the shard.
    pub fn core_address(&self, site: &Site<'_>) -> anyhow::Result<String> {
        if let Some(address) = self.options.reach.get(&site.name) {
            return Ok(address.clone());
        }
        let base = match self.options.profile {
            Profile::Local => &site.region.local.core,
            Profile::Production => &site.region.advertise.core,
        };
        shifted(base, site.shard)
    }

    /// The addresses `site` binds: (gateway, core).
    ///
    /// # Errors
    /// When an address of the region file is not an `ip:port`, or no port
    /// is left for the shard.
    pub fn binds(&self, site: &Site<'_>) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        let addresses = match self.options.profile {
            Profile::Local => &site.region.local,
            Profile::Production => &site.region.listen,
        };
        Ok((
            parse_addr(&shifted(&addresses.gateway, site.shard)?, "gateway address")?,
            parse_addr(&shifted(&addresses.core, site.shard)?, "core address")?,
        ))
    }

    /// How `region`'s services authenticate: the production profile
    /// requires `[tls]` unless told `--insecure-core`.
    ///
    /// # Errors
    /// A production region without `[tls]`.
    pub fn tls(&self, region: &RegionConfig) -> anyhow::Result<TlsPlan> {
        if self.options.insecure_core {
            return Ok(TlsPlan::Insecure);
        }
        match (&region.tls, self.options.profile) {
            (Some(tls), _) => Ok(TlsPlan::Files(tls.clone())),
            (None, Profile::Local) => Ok(TlsPlan::Ephemeral),
            (None, Profile::Production) => anyhow::bail!(
                "region {}: no [tls] in its file. Without it the core port accepts anyone who \
                 reaches it: they could attach as any device, send as anyone and pull every \
                 region's replication log. Add [tls] (`meridian certs init` makes a CA and \
                 every identity) or pass --insecure-core on a network you trust.",
                region.name
            ),
        }
    }

    /// The configuration of `site`'s core.
    pub fn core_config(&self, site: &Site<'_>) -> CoreConfig {
        let options = &self.options;
        let mut core = CoreConfig::new(site.name.clone());
        core.topology = self.topology.clone();
        core.retention = Duration::from_secs(options.retention_secs);
        core.sweep_interval = Duration::from_secs(options.sweep_secs.max(1));
        core.media.max_bytes = options.media_max_mib.max(1) * 1024 * 1024;
        let admission = &site.region.admission;
        if let Some(rate) = admission.attaches_per_second {
            core.attaches_per_second = rate;
        }
        if let Some(slots) = admission.sync_slots {
            core.sync_slots = slots;
        }
        if let Some(waiting) = admission.max_waiting_syncs {
            core.max_waiting_syncs = waiting;
        }
        core.max_clock_offset = Duration::from_millis(
            options
                .max_clock_offset_ms
                .unwrap_or(site.region.clock.max_offset_ms),
        );
        core
    }

    /// The configuration of `region`'s gateways.
    pub fn gateway_config(&self, region: &RegionConfig) -> GatewayConfig {
        let mut gateway = GatewayConfig::new(region.name.clone());
        gateway.topology = self.topology.clone();
        gateway.sends_per_second = self.options.send_rate;
        gateway.send_burst = self.options.send_rate.max(gateway.send_burst);
        gateway.registrations_per_minute = self.options.registrations_per_minute;
        gateway.media_max_bytes = self.options.media_max_mib.max(1) * 1024 * 1024;
        gateway.requests_per_second = self.options.request_rate;
        gateway.request_burst = self.options.request_rate.max(gateway.request_burst);
        gateway.auth_failures_per_minute = self.options.auth_failures_per_minute;
        // Checked when the file was read.
        gateway.trusted_proxies = region
            .edge
            .trusted_proxies
            .iter()
            .filter_map(|block| block.parse().ok())
            .collect();
        gateway.proxy_protocol = region.edge.proxy_protocol;
        if let Some(rate) = region.edge.accepts_per_second {
            gateway.accepts_per_second = rate;
            gateway.accept_burst = rate;
        }
        gateway
    }

    /// Where `site`'s state lives: its region's FoundationDB cluster (the
    /// shard's), or a fjall directory of its own.
    ///
    /// # Errors
    /// A FoundationDB region without a cluster file, or in a binary built
    /// without the `fdb` feature, or asked to fsync every N ms.
    pub fn store(&self, site: &Site<'_>) -> anyhow::Result<StoreChoice> {
        if site.region.store.engine == "foundationdb" {
            if let Some(ms) = self.options.fsync_every_ms {
                anyhow::bail!(
                    "region {}: fsyncing every {ms} ms (--sync {ms}ms) applies to fjall stores; a FoundationDB cluster's durability is its own",
                    site.region.name
                );
            }
            return foundationdb_store(site);
        }
        let mut dir = self.region_dir(site.region);
        if site.region.store.shard_count() > 1 {
            let mut name = dir.file_name().unwrap_or_default().to_os_string();
            name.push(format!("_{}", site.shard));
            dir = dir.with_file_name(name);
        }
        Ok(match self.options.fsync_every_ms {
            Some(ms) => StoreChoice::FjallFsyncEvery(dir, Duration::from_millis(ms.max(1))),
            None => StoreChoice::Fjall(dir),
        })
    }

    /// The directory of `region`'s durable state (a sharded region's shards
    /// each add `_{shard}` to it).
    pub fn region_dir(&self, region: &RegionConfig) -> PathBuf {
        let dir = region
            .store
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&region.name));
        self.options.data_dir.join(dir)
    }

    /// The log carrying `region`'s changes.
    ///
    /// # Errors
    /// Kafka without brokers.
    pub fn log(&self, region: &RegionConfig) -> anyhow::Result<LogChoice> {
        let options = &self.options;
        let partitions = region.log.partitions;
        let kafka = match options.profile {
            Profile::Local => options.log == LogKind::Kafka,
            Profile::Production => region.log.kind == "kafka",
        };
        if !kafka {
            return Ok(LogChoice::Embedded { partitions });
        }
        let from_options = options
            .brokers
            .iter()
            .find_map(|entry| match entry.split_once('=') {
                Some((name, brokers)) if name == region.name => Some(brokers.to_string()),
                Some(_) => None,
                None => Some(entry.clone()),
            });
        let brokers = match options.profile {
            Profile::Local => from_options,
            Profile::Production => from_options.or_else(|| region.log.brokers.clone()),
        }
        .with_context(|| format!("region {}: --log kafka needs --brokers", region.name))?;
        let mut config = KafkaConfig::new(brokers, partitions);
        config.security = region.log.security.clone();
        // Locally one broker per region holds each topic alone.
        config.replication_factor = match options.profile {
            Profile::Local => 1,
            Profile::Production => region.log.replication_factor,
        };
        Ok(LogChoice::Kafka(config))
    }

    /// Every other site `site` replicates with, by the address it reaches
    /// them at: the sites of its peer regions and its own region's other
    /// shards.
    ///
    /// # Errors
    /// As [`Plan::core_address`].
    pub fn peers(&self, site: &Site<'_>) -> anyhow::Result<BTreeMap<String, String>> {
        let mut peers = BTreeMap::new();
        let regions = self
            .deployment
            .peers_of(&site.region.name)
            .into_iter()
            .filter_map(|peer| self.deployment.regions.get(peer))
            .chain(std::iter::once(site.region));
        for region in regions {
            for other in self.sites_of(region) {
                if other.name != site.name {
                    peers.insert(other.name.clone(), self.core_address(&other)?);
                }
            }
        }
        Ok(peers)
    }

    /// Everything `site`'s core runs with, resolved in this order: its
    /// addresses, store, peers and log (the first error wins).
    ///
    /// # Errors
    /// As [`Plan::binds`], [`Plan::store`], [`Plan::peers`], [`Plan::log`].
    pub fn site_plan(&self, site: &Site<'_>) -> anyhow::Result<SitePlan> {
        let (gateway_listen, core_listen) = self.binds(site)?;
        Ok(SitePlan {
            name: site.name.clone(),
            region: site.region.name.clone(),
            shard: site.shard,
            gateway_listen,
            core_listen,
            core: self.core_config(site),
            gateway: self.gateway_config(site.region),
            store: self.store(site)?,
            peers: self.peers(site)?,
            log: self.log(site.region)?,
        })
    }

    /// What `region`'s gateway runs with: it binds where the region's first
    /// site does, and reaches every site of its region and its peers'.
    ///
    /// # Errors
    /// As [`Plan::binds`] and [`Plan::peers`].
    pub fn gateway_plan(&self, region: &RegionConfig) -> anyhow::Result<GatewayPlan> {
        let first = self
            .sites_of(region)
            .into_iter()
            .next()
            .context("a region has a site")?;
        let (listen, _) = self.binds(&first)?;
        let mut cores = self.peers(&first)?;
        cores.insert(first.name.clone(), self.core_address(&first)?);
        Ok(GatewayPlan {
            listen,
            config: self.gateway_config(region),
            cores,
        })
    }

    /// Where every region's bucket is served. With the local profile, the
    /// regions in `serve` serve theirs from an embedded server (its objects
    /// beside the region's store) and the others are reached at their
    /// `[local]` `s3` address. With the production profile, buckets are
    /// reached with the credentials of the environment; without any, media
    /// is off (`media_unavailable`) and messaging runs.
    ///
    /// # Errors
    /// A local `s3` address that is not an `ip:port`.
    pub fn buckets(&self, serve: &[String]) -> anyhow::Result<BTreeMap<String, BucketPlan>> {
        let mut buckets = BTreeMap::new();
        for region in self.deployment.regions.values() {
            let Some(s3) = &region.s3 else { continue };
            let bucket = match self.options.profile {
                Profile::Local => {
                    let Some(addr) = &region.local.s3 else {
                        continue;
                    };
                    if serve.contains(&region.name) {
                        BucketPlan::Embedded {
                            listen: parse_addr(addr, "s3 address")?,
                            dir: self.region_dir(region).join("s3"),
                        }
                    } else {
                        let Some(target) = media::local_target(region, format!("http://{addr}"))
                        else {
                            continue;
                        };
                        BucketPlan::Remote(target)
                    }
                }
                Profile::Production => BucketPlan::Remote(S3Target {
                    endpoint: s3.endpoint.clone(),
                    aws_region: s3.signing_region(),
                    bucket: s3.bucket.clone(),
                    credentials: media::production_credentials(),
                }),
            };
            buckets.insert(region.name.clone(), bucket);
        }
        Ok(buckets)
    }

    /// Every region's bucket as [`Plan::buckets`] plans it, starting the
    /// embedded servers it asks for over `network`.
    ///
    /// # Errors
    /// As [`Plan::buckets`], and when a server cannot start.
    pub async fn start_media(
        &self,
        serve: &[String],
        network: &SharedNetwork,
    ) -> anyhow::Result<(Vec<EmbeddedS3>, BTreeMap<String, S3Target>)> {
        let mut servers = Vec::new();
        let mut targets = BTreeMap::new();
        for (name, bucket) in self.buckets(serve)? {
            let target = match bucket {
                BucketPlan::Remote(target) => target,
                BucketPlan::Embedded { listen, dir } => {
                    let region = self.deployment.region(&name)?;
                    let (server, target) =
                        media::start_embedded_s3(region, listen, &dir, network).await?;
                    servers.push(server);
                    target
                }
            };
            targets.insert(name, target);
        }
        Ok((servers, targets))
    }
}

/// `host:port` with the port moved up by `shard`.
fn shifted(addr: &str, shard: u32) -> anyhow::Result<String> {
    if shard == 0 {
        return Ok(addr.to_string());
    }
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("`{addr}` has no port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("`{addr}` has no numeric port"))?;
    let port = port
        .checked_add(u16::try_from(shard)?)
        .with_context(|| format!("`{addr}`: no port for shard {shard}"))?;
    Ok(format!("{host}:{port}"))
}

fn parse_addr(text: &str, what: &str) -> anyhow::Result<SocketAddr> {
    text.parse()
        .with_context(|| format!("{what} `{text}` is not an ip:port address"))
}

/// The FoundationDB store of `site`, when this build has the backend: the
/// cluster of its shard.
#[cfg(feature = "fdb")]
fn foundationdb_store(site: &Site<'_>) -> anyhow::Result<StoreChoice> {
    let store = &site.region.store;
    let cluster_file = if store.cluster_files.len() > 1 {
        store.cluster_files.get(site.shard as usize).cloned()
    } else {
        store
            .cluster_file
            .clone()
            .or_else(|| store.cluster_files.first().cloned())
    }
    .with_context(|| {
        format!(
            "region {}: store.cluster_file is required",
            site.region.name
        )
    })?;
    Ok(StoreChoice::FoundationDb(cluster_file))
}

#[cfg(not(feature = "fdb"))]
fn foundationdb_store(site: &Site<'_>) -> anyhow::Result<StoreChoice> {
    anyhow::bail!(
        "region {}: store engine `foundationdb` needs a binary built with `--features fdb`",
        site.region.name
    )
}

#[cfg(test)]
mod tests;
