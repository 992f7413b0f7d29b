//! The flags of `meridian dev`, `core` and `gateway`, and the
//! [`PlanOptions`] they become. Parsing and checking only: starting what
//! they describe is `deploy/mod.rs`'s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use meridian_region::config::Deployment;
use meridian_region::plan::{self, Plan, PlanOptions};
use meridian_seams::{SharedClock, SystemClock};

/// Which addresses of the region files to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Loopback ports of each file's `[local]` table.
    Local,
    /// `[listen]` to bind, `[advertise]` to reach other regions.
    Production,
}

/// When the stores fsync (`--sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every group commit holding a send is fsynced before any of its
    /// sends is acknowledged: durable, the default.
    Commit,
    /// NOT DURABLE: the stores fsync every this many milliseconds, so a
    /// machine crash loses up to that much acknowledged work.
    EveryMs(u64),
}

impl SyncPolicy {
    /// The longest interval `<N>ms` takes: beyond it a crash would lose
    /// more than any measurement needs relaxed.
    const MAX_MS: u64 = 10_000;

    /// The fsync interval, or `None` when every commit is fsynced.
    pub fn every_ms(self) -> Option<u64> {
        match self {
            Self::Commit => None,
            Self::EveryMs(ms) => Some(ms),
        }
    }
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "commit" {
            return Ok(Self::Commit);
        }
        let expected = || {
            format!(
                "expected `commit` or `<N>ms` with N from 1 to {} (e.g. `5ms`), got `{text}`",
                Self::MAX_MS
            )
        };
        let digits = text.strip_suffix("ms").ok_or_else(expected)?;
        match digits.parse::<u64>() {
            Ok(ms) if (1..=Self::MAX_MS).contains(&ms) && !digits.starts_with('+') => {
                Ok(Self::EveryMs(ms))
            }
            _ => Err(expected()),
        }
    }
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Commit => f.write_str("commit"),
            Self::EveryMs(ms) => write!(f, "{ms}ms"),
        }
    }
}

/// Which log carries replication in a local run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogKind {
    /// In each region's own store.
    Embedded,
    /// Each region's Kafka brokers (`--brokers`).
    Kafka,
}

/// Options shared by `dev`, `core` and `gateway`.
#[derive(clap::Args)]
pub struct Common {
    /// Directory of region files (one `<region>.toml` per region).
    /// Default: `./regions` where it exists; else, with the local profile,
    /// the built-in local regions (us-east, eu-west, ap-southeast), written
    /// to `<data-dir>/regions` (files already there are kept).
    #[arg(long, env = "MERIDIAN_REGIONS_DIR")]
    pub(super) regions_dir: Option<PathBuf>,
    /// With the local profile, adds this to every local port (gateways,
    /// cores, S3, gateway admin listeners, GeoDNS), so two local
    /// deployments run side by side.
    #[arg(long, default_value_t = 0, env = "MERIDIAN_PORT_OFFSET")]
    pub(super) port_offset: u16,
    /// Which addresses of the region files to use.
    #[arg(long, value_enum, default_value = "local")]
    pub(super) profile: Profile,
    /// Directory for durable state, one subdirectory per region.
    #[arg(long, default_value = "./data", env = "MERIDIAN_DATA_DIR")]
    pub(super) data_dir: PathBuf,
    /// Retention of undelivered messages and history, seconds (default 30 days).
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    pub(super) retention_secs: u64,
    /// Interval of the retention sweep, seconds.
    #[arg(long, default_value_t = 60)]
    pub(super) sweep_secs: u64,
    /// Largest media upload, MiB.
    #[arg(long, default_value_t = 100)]
    pub(super) media_max_mib: u64,
    /// Sends per second allowed per device (sustained).
    #[arg(long, default_value_t = 50.0)]
    pub(super) send_rate: f64,
    /// Registrations per minute allowed per client IP address.
    #[arg(long, default_value_t = 600.0)]
    pub(super) registrations_per_minute: f64,
    /// Authenticated REST requests per second allowed per device
    /// (sustained; the burst is the larger of this and 100).
    #[arg(long, default_value_t = 20.0)]
    pub(super) request_rate: f64,
    /// Failed authentications (bad or revoked tokens) per minute allowed
    /// per client IP address.
    #[arg(long, default_value_t = 30.0)]
    pub(super) auth_failures_per_minute: f64,
    /// When the stores fsync: `commit` (the default: every group commit
    /// holding a send, before any of it is acknowledged) or `<N>ms`, NOT
    /// DURABLE: every N milliseconds, so a machine crash (not a process
    /// crash) loses up to that much acknowledged work. `<N>ms` is for
    /// measuring what durability costs (`meridian bench --sync`).
    #[arg(long, default_value_t = SyncPolicy::Commit)]
    pub(super) sync: SyncPolicy,
    /// Runs this process's clock ahead (negative: behind) by this many
    /// milliseconds: for clock-skew drills.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub(super) clock_skew_ms: i64,
    /// Overrides every region's maximum clock offset, milliseconds.
    #[arg(long)]
    pub(super) max_clock_offset_ms: Option<u64>,
    /// The replication log (local profile; the production profile uses the
    /// region files' `[log]`).
    #[arg(long, value_enum, default_value = "embedded")]
    pub(super) log: LogKind,
    /// Kafka bootstrap servers with `--log kafka`: `REGION=HOST:PORT[,…]`,
    /// once per region, or one `HOST:PORT[,…]` for every region.
    #[arg(long)]
    pub(super) brokers: Vec<String>,
    /// Run cores in plaintext, trusting every caller that reaches their
    /// port, whatever the region files' `[tls]` say. Only on a network
    /// nobody else reaches.
    #[arg(long, env = "MERIDIAN_INSECURE_CORE")]
    pub(super) insecure_core: bool,
    /// Reach a site's core at `HOST:PORT` instead of where the region
    /// files say (`SITE=HOST:PORT`, repeatable): a path through a proxy of
    /// this process's own, as the chaos suite gives each region pair.
    #[arg(long = "reach", value_parser = parse_reach)]
    pub(super) reach: Vec<(String, String)>,
    /// Gateways per region with the local profile: the first on the
    /// region file's `[local] gateway`, the others on the next loopback
    /// addresses (127.0.1.1, 127.0.1.2, …), same port.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=32))]
    pub(super) gateways: u8,
}

/// `SITE=HOST:PORT` of `--reach`.
fn parse_reach(text: &str) -> Result<(String, String), String> {
    let (site, address) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected SITE=HOST:PORT"))?;
    let port = address.rsplit_once(':').map(|(_, port)| port);
    if site.is_empty() || port.is_none_or(|port| port.parse::<u16>().is_err()) {
        return Err(format!("{text:?}: expected SITE=HOST:PORT"));
    }
    Ok((site.to_string(), address.to_string()))
}

/// `meridian dev`.
#[derive(clap::Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub(super) common: Common,
    /// Run only this region (default: every region of the directory; a
    /// sharded region runs all its shards).
    #[arg(long)]
    pub(super) region: Option<String>,
    /// Client-facing address, overriding the region file (one region only).
    #[arg(long, env = "MERIDIAN_LISTEN")]
    pub(super) listen: Option<SocketAddr>,
    /// Core gRPC address, overriding the region file (one region only).
    #[arg(long, env = "MERIDIAN_CORE_LISTEN")]
    pub(super) core_listen: Option<SocketAddr>,
    /// Serve GeoDNS here (UDP and TCP). Default: 127.0.0.1:8053 when the
    /// process runs every region (skipped, with a warning, if that port is
    /// taken); none when it runs one region of several.
    #[arg(long)]
    pub(super) dns_listen: Option<SocketAddr>,
    /// Serve no GeoDNS.
    #[arg(long, conflicts_with = "dns_listen")]
    pub(super) no_dns: bool,
    #[command(flatten)]
    pub(super) dns: crate::geodns::DnsOptions,
}

impl DevArgs {
    /// Whether `--listen` or `--core-listen` override the region files,
    /// refused where they would be ambiguous.
    pub(super) fn check_overrides(&self, regions: usize) -> anyhow::Result<bool> {
        let overridden = self.listen.is_some() || self.core_listen.is_some();
        anyhow::ensure!(
            regions == 1 || !overridden,
            "--listen and --core-listen need --region (one region)"
        );
        anyhow::ensure!(
            self.listen.is_none() || self.common.gateways == 1,
            "--listen places one gateway; --gateways places several on the region files' addresses"
        );
        Ok(overridden)
    }
}

/// `meridian core` / `meridian gateway`.
#[derive(clap::Args)]
pub struct PartArgs {
    #[command(flatten)]
    pub(super) common: Common,
    /// The region whose part to run.
    #[arg(long)]
    pub(super) region: String,
    /// `meridian core` of a sharded region: which shard (each shard is a
    /// core over its own store).
    #[arg(long, default_value_t = 0)]
    pub(super) shard: u32,
    /// Listen address, overriding the region file.
    #[arg(long)]
    pub(super) listen: Option<SocketAddr>,
    /// `meridian gateway` with the local profile: which of the region's
    /// gateways this is (1-based; see `--gateways`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=32))]
    pub(super) index: u8,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` here, in
    /// plaintext for probes and scrapers. A core's `/readyz` is its store's
    /// health; a gateway's, whether it reaches its region's core (as on its
    /// client port, which then serves no `/metrics`).
    #[arg(long, alias = "metrics-listen")]
    pub(super) admin_listen: Option<SocketAddr>,
}

impl Common {
    /// The region files resolved with these flags.
    pub(crate) fn plan(&self) -> anyhow::Result<Plan> {
        let mut deployment = Deployment::load(&self.regions_dir()?)?;
        if self.profile == Profile::Local {
            deployment.shift_local_ports(self.port_offset)?;
        }
        Ok(Plan::new(deployment, self.options()))
    }

    /// Where the region files are: `--regions-dir`, else `./regions`, else
    /// (local profile) the built-in ones under the data directory.
    fn regions_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.regions_dir {
            return Ok(dir.clone());
        }
        let here = PathBuf::from("regions");
        if here.is_dir() || self.profile == Profile::Production {
            return Ok(here);
        }
        let builtin = self.data_dir.join("regions");
        meridian_region::local::write_builtin_regions(&builtin)?;
        Ok(builtin)
    }

    /// `port` moved by `--port-offset` (local profile).
    pub(crate) fn local_port(&self, port: u16) -> anyhow::Result<u16> {
        meridian_region::local::shift_port(port, self.port_offset, "local")
    }

    /// What the plan takes from these flags.
    fn options(&self) -> PlanOptions {
        PlanOptions {
            profile: match self.profile {
                Profile::Local => plan::Profile::Local,
                Profile::Production => plan::Profile::Production,
            },
            data_dir: self.data_dir.clone(),
            retention_secs: self.retention_secs,
            sweep_secs: self.sweep_secs,
            media_max_mib: self.media_max_mib,
            send_rate: self.send_rate,
            registrations_per_minute: self.registrations_per_minute,
            request_rate: self.request_rate,
            auth_failures_per_minute: self.auth_failures_per_minute,
            fsync_every_ms: self.sync.every_ms(),
            max_clock_offset_ms: self.max_clock_offset_ms,
            log: match self.log {
                LogKind::Embedded => plan::LogKind::Embedded,
                LogKind::Kafka => plan::LogKind::Kafka,
            },
            brokers: self.brokers.clone(),
            insecure_core: self.insecure_core,
            reach: self.reach.iter().cloned().collect(),
            gateways: self.gateways,
        }
    }

    /// The wall clock, moved by `--clock-skew-ms`.
    pub(super) fn clock(&self) -> SharedClock {
        Arc::new(SystemClock::with_skew(self.clock_skew_ms))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        common: Common,
    }

    /// `--sync` takes `commit` or a whole number of milliseconds within
    /// bounds, and nothing else; what it prints parses back.
    #[test]
    fn sync_policies_parse_and_print_back() {
        for (text, policy) in [
            ("commit", SyncPolicy::Commit),
            ("5ms", SyncPolicy::EveryMs(5)),
            ("10000ms", SyncPolicy::EveryMs(10_000)),
        ] {
            assert_eq!(text.parse::<SyncPolicy>(), Ok(policy), "{text}");
            assert_eq!(policy.to_string(), text);
        }
        for bad in [
            "", "5", "ms", "0ms", "10001ms", "+5ms", "-5ms", "5 ms", "5s", "Commit",
        ] {
            let error = bad.parse::<SyncPolicy>().expect_err(bad);
            assert!(
                error.contains("expected `commit` or `<N>ms`"),
                "{bad}: {error}"
            );
        }
        let flags = Flags::try_parse_from(["meridian", "--sync", "5ms"]).expect("parses");
        assert_eq!(flags.common.options().fsync_every_ms, Some(5));
        assert!(Flags::try_parse_from(["meridian", "--sync", "fast"]).is_err());
    }

    /// The simulation plans with [`PlanOptions::default`]: it must be what
    /// `meridian dev` runs without flags.
    #[test]
    fn the_flags_defaults_are_the_plans_defaults() {
        let flags = Flags::try_parse_from(["meridian"]).expect("the defaults parse");
        assert_eq!(flags.common.options(), PlanOptions::default());
    }

    #[test]
    fn reach_takes_site_equals_address_and_refuses_anything_else() {
        let flags = Flags::try_parse_from([
            "meridian",
            "--reach",
            "eu-west=127.0.0.1:7021",
            "--reach",
            "us-east_1=proxy.local:9",
        ])
        .expect("parses");
        let reach = flags.common.options().reach;
        assert_eq!(reach["eu-west"], "127.0.0.1:7021");
        assert_eq!(reach["us-east_1"], "proxy.local:9");
        for bad in [
            "eu-west",
            "=127.0.0.1:1",
            "eu-west=127.0.0.1",
            "eu-west=host:port",
        ] {
            assert!(
                Flags::try_parse_from(["meridian", "--reach", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
