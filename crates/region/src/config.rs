//! Region configuration: one TOML file per region in `regions/`. Adding a
//! region means adding a file; every region in the directory peers with
//! every other one unless a file lists its `peers`.
//!
//! A file describes the production shape (bind and advertised addresses,
//! Kafka brokers, S3 bucket, GeoDNS client prefixes) and a `[local]`
//! profile that puts the region on loopback ports, so `meridian dev` runs
//! all regions on one machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// One region's file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// The region's name (`us-east`): encoded in the ids of users homed here.
    pub name: String,
    /// Bind addresses in production.
    pub listen: Addresses,
    /// How gateways and other regions reach this region in production.
    pub advertise: Addresses,
    /// The local profile: loopback addresses for `meridian dev`.
    pub local: Addresses,
    /// Peer regions; all other regions in the directory when absent.
    #[serde(default)]
    pub peers: Option<Vec<String>>,
    /// The transactional store.
    #[serde(default)]
    pub store: StoreConfig,
    /// The replication log.
    #[serde(default)]
    pub log: LogConfig,
    /// Media storage.
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// GeoDNS routing.
    #[serde(default)]
    pub geodns: GeoDnsConfig,
    /// Clock discipline.
    #[serde(default)]
    pub clock: ClockConfig,
    /// Mutual TLS of the region's services (required by the production
    /// profile unless `--insecure-core`), and TLS towards clients.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// What stands between clients and the gateways.
    #[serde(default)]
    pub edge: EdgeConfig,
    /// How the core admits device sessions in a reconnect storm.
    #[serde(default)]
    pub admission: AdmissionConfig,
    /// Where the region runs on AWS (read by `meridian terraform-vars`).
    #[serde(default)]
    pub aws: Option<AwsConfig>,
}

/// How the region's core admits device sessions (`docs/operations.md`,
/// "Reconnect storms"); absent keys keep the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// New sessions the core admits per second, and in a burst; past it an
    /// attach is shed with `go_away` `busy`. Default 5,000.
    #[serde(default)]
    pub attaches_per_second: Option<f64>,
    /// Backlog reads from the store running at once. Default 64.
    #[serde(default)]
    pub sync_slots: Option<usize>,
    /// Sessions that may wait for a backlog read before new attaches are
    /// shed. Default 20,000.
    #[serde(default)]
    pub max_waiting_syncs: Option<usize>,
}

/// Where a region runs on AWS: what Terraform needs beyond the rest of the
/// file (`terraform/`, `docs/terraform.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The AWS region (`us-east-1`).
    pub region: String,
    /// The region's VPC, an IPv4 /16 that no other region's overlaps
    /// (regions' VPCs are peered).
    pub vpc_cidr: String,
}

/// Load balancers in front of the region's gateways.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Their addresses (CIDR blocks): a request from one of them names its
    /// client (`X-Forwarded-For`, or the PROXY protocol header), which
    /// per-address limits then count.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// They send a PROXY protocol v2 header first on every connection.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The port of each gateway's plaintext admin listener, on the
    /// gateway's own address (`/metrics`, `/readyz`, `/drain`): `meridian
    /// gateway` serves it there unless told `--admin-listen`, GeoDNS checks
    /// `/readyz` there, and `meridian region drain` drains through it.
    #[serde(default)]
    pub gateway_admin_port: Option<u16>,
    /// WebSocket upgrades each gateway accepts per second (and in a
    /// burst); past it a reconnect storm is told to come back later, spread
    /// out. Default 5,000.
    #[serde(default)]
    pub accepts_per_second: Option<f64>,
}

/// The region's service identities: PEM files, relative to the region
/// directory. `meridian certs init` writes them (a local CA); any CA works
/// if each certificate names its identity (`core.<region>`,
/// `gateway.<region>`) as a DNS subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The deployment's CA: signs every region's identities.
    pub ca: PathBuf,
    /// The core's certificate (`core.<region>`).
    pub core_cert: PathBuf,
    /// The core's private key.
    pub core_key: PathBuf,
    /// The gateways' certificate (`gateway.<region>`).
    pub gateway_cert: PathBuf,
    /// The gateways' private key.
    pub gateway_key: PathBuf,
    /// The certificate chain (leaf first) the gateways serve their clients
    /// TLS with, for the name clients dial; absent, they serve plain HTTP
    /// (TLS ends at a load balancer in front).
    #[serde(default)]
    pub edge_cert: Option<PathBuf>,
    /// Its private key.
    #[serde(default)]
    pub edge_key: Option<PathBuf>,
}

impl TlsConfig {
    /// The same files, relative paths taken from `dir`.
    pub fn relative_to(&self, dir: &Path) -> Self {
        let join = |path: &PathBuf| dir.join(path);
        Self {
            ca: join(&self.ca),
            core_cert: join(&self.core_cert),
            core_key: join(&self.core_key),
            gateway_cert: join(&self.gateway_cert),
            gateway_key: join(&self.gateway_key),
            edge_cert: self.edge_cert.as_ref().map(join),
            edge_key: self.edge_key.as_ref().map(join),
        }
    }

    /// Every file, as `(what, path)`.
    pub fn files(&self) -> [(&'static str, &Path); 5] {
        [
            ("ca", &self.ca),
            ("core_cert", &self.core_cert),
            ("core_key", &self.core_key),
            ("gateway_cert", &self.gateway_cert),
            ("gateway_key", &self.gateway_key),
        ]
    }
}

/// A region's gateway and core addresses (`host:port`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addresses {
    /// Client-facing HTTP and WebSocket.
    pub gateway: String,
    /// Core gRPC (gateways, and replication links from other regions).
    pub core: String,
    /// The embedded S3 server (local profile only; production uses the
    /// `[s3]` endpoint or AWS).
    #[serde(default)]
    pub s3: Option<String>,
}

/// Where a region's state lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `fjall` (embedded, durable) or `foundationdb`.
    #[serde(default = "default_engine")]
    pub engine: String,
    /// Directory of the embedded store (relative to the data root).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// FoundationDB cluster file, for the `foundationdb` engine.
    #[serde(default)]
    pub cluster_file: Option<PathBuf>,
    /// Several FoundationDB clusters sharing the region's users by a hash
    /// of the user id, one site per cluster (docs/foundationdb.md,
    /// "Sharding").
    #[serde(default)]
    pub cluster_files: Vec<PathBuf>,
    /// Shards of the embedded store (fjall): one site, with its own data
    /// directory, per shard. With FoundationDB the shard count is the number
    /// of `cluster_files`.
    #[serde(default)]
    pub shards: Option<u32>,
}

impl StoreConfig {
    /// How many shards (sites) the region has: `cluster_files` with
    /// FoundationDB, `shards` with fjall, else 1.
    pub fn shard_count(&self) -> u32 {
        if self.engine == "foundationdb" {
            // One cluster per shard: never two shards in one keyspace.
            return self.cluster_files.len().max(1) as u32;
        }
        self.shards.unwrap_or(1).max(1)
    }
}

fn default_engine() -> String {
    "fjall".into()
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            engine: default_engine(),
            data_dir: None,
            cluster_file: None,
            cluster_files: Vec::new(),
            shards: None,
        }
    }
}

/// The region's replication log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `embedded` or `kafka`.
    #[serde(default = "default_log")]
    pub kind: String,
    /// Kafka bootstrap servers (`host:port,…`).
    #[serde(default)]
    pub brokers: Option<String>,
    /// Partitions per topic.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Replication factor of the topics Meridian creates (Kafka).
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// librdkafka security settings for every Kafka client of the region:
    /// `security.protocol` and `ssl.*` / `sasl.*` keys only (a password
    /// is better given as `MERIDIAN_KAFKA_SASL_PASSWORD`, which overrides
    /// `sasl.password`).
    #[serde(default)]
    pub security: BTreeMap<String, String>,
}

fn default_replication_factor() -> i32 {
    3
}

fn default_log() -> String {
    "embedded".into()
}

fn default_partitions() -> u32 {
    4
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            kind: default_log(),
            brokers: None,
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
            security: BTreeMap::new(),
        }
    }
}

/// Media bucket of a region.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// AWS region of the bucket.
    #[serde(default)]
    pub aws_region: Option<String>,
    /// An S3-compatible endpoint (`https://host:port`) in production; AWS S3
    /// when absent. With the local profile, where everyone reaches the
    /// embedded server (a proxy in front of it) when set. Production
    /// credentials: `MERIDIAN_S3_ACCESS_KEY_ID` and
    /// `MERIDIAN_S3_SECRET_ACCESS_KEY` when set, else the AWS credential
    /// chain (environment, container, EC2 instance profile).
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl S3Config {
    /// The AWS region name signatures use.
    pub fn signing_region(&self) -> String {
        self.aws_region
            .clone()
            .unwrap_or_else(|| "us-east-1".into())
    }
}

/// Which clients GeoDNS sends to this region.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoDnsConfig {
    /// Client address prefixes (CIDR) answered with this region.
    #[serde(default)]
    pub client_prefixes: Vec<String>,
    /// Round-trip time from this region to the others, milliseconds: where
    /// its clients go, nearest first, when it has no healthy gateway.
    #[serde(default)]
    pub latency_ms: BTreeMap<String, u32>,
    /// The production profile: every gateway's public `ip:port`, which
    /// `meridian geodns` answers with (the local profile derives them from
    /// `[local] gateway` and `--gateways`).
    #[serde(default)]
    pub gateways: Vec<String>,
}

/// Clock limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// A remote or client HLC stamp further ahead than this is refused.
    #[serde(default = "default_max_offset")]
    pub max_offset_ms: u64,
}

fn default_max_offset() -> u64 {
    500
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            max_offset_ms: default_max_offset(),
        }
    }
}

/// Every region of a deployment, by name.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The regions, by name.
    pub regions: BTreeMap<String, RegionConfig>,
}

impl Deployment {
    /// The deployment of `regions`, keyed by their names (unchecked: region
    /// files read from a directory go through [`Deployment::load`]).
    pub fn new(regions: impl IntoIterator<Item = RegionConfig>) -> Self {
        Self {
            regions: regions
                .into_iter()
                .map(|region| (region.name.clone(), region))
                .collect(),
        }
    }

    /// Reads every `*.toml` in `dir`.
    ///
    /// # Errors
    /// An unreadable directory or file, a malformed file, a file whose name
    /// differs from its region, a duplicate region, an unknown peer.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let mut regions = BTreeMap::new();
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("reading the region directory {}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut region =
                Self::parse(&text).with_context(|| format!("in {}", path.display()))?;
            region.tls = region.tls.map(|tls| tls.relative_to(dir));
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            anyhow::ensure!(
                stem == region.name,
                "{} names region `{}`; the file must be called {}.toml",
                path.display(),
                region.name,
                region.name
            );
            regions.insert(region.name.clone(), region);
        }
        anyhow::ensure!(!regions.is_empty(), "no region files in {}", dir.display());
        let deployment = Self { regions };
        for region in deployment.regions.values() {
            for peer in deployment.peers_of(&region.name) {
                anyhow::ensure!(
                    deployment.regions.contains_key(peer),
                    "region {} lists unknown peer {peer}",
                    region.name
                );
            }
        }
        Ok(deployment)
    }

    /// Parses one region file.
    ///
    /// # Errors
    /// Malformed TOML, unknown keys, a bad region name or log kind.
    pub fn parse(text: &str) -> anyhow::Result<RegionConfig> {
        let region: RegionConfig = toml::from_str(text)?;
        anyhow::ensure!(
            !region.name.is_empty()
                && region.name.len() <= 32
                && region
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "region name `{}` must be 1-32 characters of [a-z0-9-]",
            region.name
        );
        anyhow::ensure!(
            matches!(region.log.kind.as_str(), "embedded" | "kafka"),
            "log.kind must be `embedded` or `kafka`, not `{}`",
            region.log.kind
        );
        anyhow::ensure!(
            (1..=256).contains(&region.log.partitions),
            "log.partitions must be 1-256"
        );
        anyhow::ensure!(
            region
                .tls
                .as_ref()
                .is_none_or(|tls| tls.edge_cert.is_some() == tls.edge_key.is_some()),
            "tls: edge_cert and edge_key go together"
        );
        for block in &region.edge.trusted_proxies {
            block
                .parse::<meridian_seams::net::Cidr>()
                .map_err(|e| anyhow::anyhow!("edge.trusted_proxies: {e}"))?;
        }
        anyhow::ensure!(
            !region.edge.proxy_protocol || !region.edge.trusted_proxies.is_empty(),
            "edge.proxy_protocol needs edge.trusted_proxies (whose headers to read)"
        );
        anyhow::ensure!(
            region
                .edge
                .accepts_per_second
                .is_none_or(|rate| rate.is_finite() && rate >= 1.0),
            "edge.accepts_per_second is a rate of at least 1 per second"
        );
        let admission = &region.admission;
        anyhow::ensure!(
            admission
                .attaches_per_second
                .is_none_or(|rate| rate.is_finite() && rate >= 1.0),
            "admission.attaches_per_second is a rate of at least 1 per second"
        );
        anyhow::ensure!(
            admission.sync_slots.is_none_or(|slots| slots >= 1),
            "admission.sync_slots is at least 1"
        );
        anyhow::ensure!(
            admission
                .max_waiting_syncs
                .is_none_or(|waiting| waiting >= 1),
            "admission.max_waiting_syncs is at least 1 (0 would shed every attach)"
        );
        for key in region.log.security.keys() {
            anyhow::ensure!(
                key == "security.protocol" || key.starts_with("ssl.") || key.starts_with("sasl."),
                "log.security: `{key}` is not a security setting (security.protocol, ssl.*, sasl.*)"
            );
        }
        if let Some(aws) = &region.aws {
            anyhow::ensure!(
                !aws.region.is_empty()
                    && aws
                        .region
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "aws.region `{}` is not an AWS region name",
                aws.region
            );
            crate::terraform::Ipv4Block::parse(&aws.vpc_cidr)
                .map_err(|e| anyhow::anyhow!("aws.vpc_cidr: {e}"))?;
        }
        anyhow::ensure!(
            matches!(region.store.engine.as_str(), "fjall" | "foundationdb"),
            "store.engine must be `fjall` or `foundationdb`, not `{}`",
            region.store.engine
        );
        let shards = region.store.shard_count();
        anyhow::ensure!(
            shards <= meridian_wire::sites::MAX_SHARDS,
            "store: at most {} shards, not {shards}",
            meridian_wire::sites::MAX_SHARDS
        );
        anyhow::ensure!(
            region.store.engine != "foundationdb"
                || region.store.shards.is_none_or(|n| n == shards),
            "store.shards ({:?}) must match the number of cluster_files ({}): one cluster per shard",
            region.store.shards,
            region.store.cluster_files.len()
        );
        Ok(region)
    }

    /// Every region's shard count.
    pub fn topology(&self) -> meridian_wire::sites::Topology {
        meridian_wire::sites::Topology::new(
            self.regions
                .values()
                .map(|r| (r.name.clone(), r.store.shard_count())),
        )
    }

    /// The peers of `region`.
    pub fn peers_of<'a>(&'a self, region: &'a str) -> Vec<&'a str> {
        match self.regions.get(region).and_then(|r| r.peers.as_ref()) {
            Some(peers) => peers.iter().map(String::as_str).collect(),
            None => self
                .regions
                .keys()
                .map(String::as_str)
                .filter(|name| *name != region)
                .collect(),
        }
    }

    /// The region named `name`.
    ///
    /// # Errors
    /// When there is none.
    pub fn region(&self, name: &str) -> anyhow::Result<&RegionConfig> {
        self.regions.get(name).with_context(|| {
            format!(
                "no region `{name}` (known: {})",
                self.regions.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_region_files_parse_and_peer_with_each_other() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../regions");
        let deployment = Deployment::load(&dir).expect("load");
        let names: Vec<&str> = deployment.regions.keys().map(String::as_str).collect();
        assert_eq!(names, ["ap-southeast", "eu-west", "us-east"]);
        assert_eq!(deployment.peers_of("us-east"), ["ap-southeast", "eu-west"]);
        let locals: std::collections::BTreeSet<&str> = deployment
            .regions
            .values()
            .flat_map(|r| [r.local.gateway.as_str(), r.local.core.as_str()])
            .collect();
        assert_eq!(locals.len(), 6, "local ports must not collide");
    }

    /// A core reachable beyond this machine must prove who calls it.
    #[test]
    fn no_shipped_region_binds_its_core_beyond_loopback_without_tls() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../regions");
        let deployment = Deployment::load(&dir).expect("load");
        for region in deployment.regions.values() {
            for (profile, bind) in [("listen", &region.listen), ("local", &region.local)] {
                let addr: std::net::SocketAddr = bind
                    .core
                    .parse()
                    .unwrap_or_else(|e| panic!("{}: {profile}.core: {e}", region.name));
                assert!(
                    addr.ip().is_loopback() || region.tls.is_some(),
                    "{}: [{profile}] binds the core on {addr} without [tls]",
                    region.name
                );
            }
            if let Some(tls) = &region.tls {
                for (what, path) in tls.files() {
                    assert!(
                        path.starts_with(&dir),
                        "{}: tls.{what} outside the region directory",
                        region.name
                    );
                }
            }
        }
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let base = r#"
            name = "x"
            [listen]
            gateway = "0.0.0.0:1"
            core = "0.0.0.0:2"
            [advertise]
            gateway = "a:1"
            core = "a:2"
            [local]
            gateway = "127.0.0.1:1"
            core = "127.0.0.1:2"
        "#;
        assert!(Deployment::parse(base).is_ok());
        let bad_name = base.replace("name = \"x\"", "name = \"US East\"");
        assert!(Deployment::parse(&bad_name).is_err());
        let unknown_key = format!("{base}\nsurprise = 1\n");
        assert!(Deployment::parse(&unknown_key).is_err());
        let bad_log = format!("{base}\n[log]\nkind = \"carrier-pigeon\"\n");
        let error = Deployment::parse(&bad_log).expect_err("refused");
        assert!(error.to_string().contains("log.kind"), "{error}");
    }

    #[test]
    fn shards_come_from_the_store_and_never_share_a_cluster() {
        let base = "name = \"x\"\n[listen]\ngateway = \"0.0.0.0:1\"\ncore = \"0.0.0.0:2\"\n\
                    [advertise]\ngateway = \"a:1\"\ncore = \"a:2\"\n\
                    [local]\ngateway = \"127.0.0.1:1\"\ncore = \"127.0.0.1:2\"\n";
        let fjall = Deployment::parse(&format!("{base}[store]\nshards = 3\n")).expect("fjall");
        assert_eq!(fjall.store.shard_count(), 3);
        let two_clusters = format!(
            "{base}[store]\nengine = \"foundationdb\"\ncluster_files = [\"a.cluster\", \"b.cluster\"]\n"
        );
        let fdb = Deployment::parse(&two_clusters).expect("two clusters");
        assert_eq!(fdb.store.shard_count(), 2);
        // Two shards over one cluster would share one keyspace: refused.
        let one_cluster = format!(
            "{base}[store]\nengine = \"foundationdb\"\ncluster_file = \"a.cluster\"\nshards = 2\n"
        );
        let error = Deployment::parse(&one_cluster).expect_err("refused");
        assert!(
            error.to_string().contains("one cluster per shard"),
            "{error}"
        );
        let too_many = format!("{base}[store]\nshards = 65\n");
        assert!(Deployment::parse(&too_many).is_err());
    }
}
