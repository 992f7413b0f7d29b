//! Scenarios: what QA writes in `chaos/scenarios/*.toml` — the run's
//! length, the workload, and a fault schedule — read and checked here,
//! before anything starts.
//!
//! ```toml
//! name = "link-partition"
//! summary = "us-east and eu-west cannot reach each other for 30 s."
//!
//! [run]
//! seconds = 60        # the short profile's load
//! long_seconds = 300  # the long profile's
//!
//! [workload]          # every key optional
//! users_per_region = 6
//!
//! [[fault]]
//! at = 15.0           # seconds into the load
//! kind = "link-partition"
//! regions = ["us-east", "eu-west"]
//! seconds = 30.0
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The regions every scenario runs.
pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-southeast"];

/// Gateways each region runs, so that one can fail while another serves.
pub const GATEWAYS_PER_REGION: usize = 2;

/// How long and how hard a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// CI's: the schedule as written.
    Short,
    /// QA's: the load for `long_seconds`, each fault's start moved by the
    /// same stretch (its length as written).
    Long,
}

/// One scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name, as `meridian chaos list` shows it (the file's stem).
    pub name: String,
    /// One line for `meridian chaos list` and the report.
    pub summary: String,
    /// How long the load runs.
    pub run: Run,
    /// What the clients do.
    #[serde(default)]
    pub workload: Workload,
    /// The fault schedule, in any order.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
}

/// How long the load runs, per profile.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// Seconds of load with the short profile.
    pub seconds: f64,
    /// Seconds of load with the long profile (the schedule is stretched
    /// by `long_seconds / seconds`).
    pub long_seconds: f64,
    /// How long after the last fault healed every member must have
    /// everything, at most.
    #[serde(default = "default_settle")]
    pub settle_seconds: f64,
}

fn default_settle() -> f64 {
    60.0
}

/// What the clients do: users homed in every region, each with devices,
/// in direct and group conversations.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Users homed in each region.
    pub users_per_region: usize,
    /// Devices per user, each its own session and cursor.
    pub devices_per_user: usize,
    /// Group conversations (besides a direct one per pair of neighbours).
    pub groups: usize,
    /// Members per group, from every region (at most 100).
    pub group_members: usize,
    /// Sends per second over all devices.
    pub sends_per_second: f64,
    /// Share of sends carrying media.
    pub media_share: f64,
    /// Share of devices that go offline for a while and come back.
    pub offline_share: f64,
    /// Extra authenticated, idle WebSockets held open on the first gateway
    /// of each region (a gateway holding many connections).
    pub idle_connections: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            users_per_region: 4,
            devices_per_user: 2,
            groups: 2,
            group_members: 8,
            sends_per_second: 20.0,
            media_share: 0.05,
            offline_share: 0.1,
            idle_connections: 0,
        }
    }
}

/// One fault of the schedule: when it starts, and what.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Fault {
    /// Seconds into the load.
    pub at: f64,
    /// What is done.
    #[serde(flatten)]
    pub kind: FaultKind,
}

/// What a fault does, at the OS or network level (`docs/chaos.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FaultKind {
    /// SIGKILL a gateway process; restarted after `restart_after` seconds.
    GatewayKill {
        region: String,
        #[serde(default)]
        gateway: usize,
        #[serde(default = "default_restart")]
        restart_after: f64,
    },
    /// SIGSTOP a gateway for `seconds`, then SIGCONT.
    GatewayFreeze {
        region: String,
        #[serde(default)]
        gateway: usize,
        seconds: f64,
    },
    /// SIGKILL every gateway of a region; restarted after `seconds`.
    GatewayTierLoss { region: String, seconds: f64 },
    /// Drain every gateway of a region, as `meridian region drain` does
    /// (its clients asked to leave over `spread_secs`); undrained after
    /// `seconds`.
    RegionDrain {
        region: String,
        seconds: f64,
        #[serde(default = "default_spread")]
        spread_secs: f64,
    },
    /// SIGKILL a core; restarted after `restart_after` seconds.
    CoreKill {
        region: String,
        #[serde(default = "default_restart")]
        restart_after: f64,
    },
    /// SIGSTOP a core for `seconds`, then SIGCONT.
    CoreFreeze { region: String, seconds: f64 },
    /// Both directions between two regions cut for `seconds`.
    LinkPartition { regions: [String; 2], seconds: f64 },
    /// Nothing from `from` reaches `to` for `seconds`; the other way flows.
    LinkOneway {
        from: String,
        to: String,
        seconds: f64,
    },
    /// Delay (± jitter) and optionally a bandwidth cap between two regions
    /// for `seconds`.
    LinkSlow {
        regions: [String; 2],
        delay_ms: u64,
        #[serde(default)]
        jitter_ms: u64,
        #[serde(default)]
        bandwidth_kib: Option<u64>,
        seconds: f64,
    },
    /// SIGKILL a region's Kafka broker (with `--log kafka`); restarted after
    /// `restart_after` seconds.
    BrokerKill {
        region: String,
        #[serde(default = "default_restart")]
        restart_after: f64,
    },
    /// A region's object storage unreachable for `seconds`.
    S3Down { region: String, seconds: f64 },
    /// A region's core clock moved by `offset_ms` for `seconds`.
    ClockSkew {
        region: String,
        offset_ms: i64,
        seconds: f64,
    },
    /// A region's store on a filesystem of `capacity_mib` that fills;
    /// space returns after `seconds`.
    DiskFull {
        region: String,
        capacity_mib: u64,
        seconds: f64,
    },
    /// `devices` devices read one frame every `read_every_ms` for
    /// `seconds` while their inboxes grow.
    SlowConsumer {
        devices: usize,
        read_every_ms: u64,
        seconds: f64,
    },
    /// Every client of a region reconnects at once.
    ReconnectStorm { region: String },
}

fn default_restart() -> f64 {
    5.0
}

fn default_spread() -> f64 {
    2.0
}

impl FaultKind {
    /// The fault's name, as in the files.
    pub fn name(&self) -> &'static str {
        match self {
            Self::GatewayKill { .. } => "gateway-kill",
            Self::GatewayFreeze { .. } => "gateway-freeze",
            Self::GatewayTierLoss { .. } => "gateway-tier-loss",
            Self::RegionDrain { .. } => "region-drain",
            Self::CoreKill { .. } => "core-kill",
            Self::CoreFreeze { .. } => "core-freeze",
            Self::LinkPartition { .. } => "link-partition",
            Self::LinkOneway { .. } => "link-oneway",
            Self::LinkSlow { .. } => "link-slow",
            Self::BrokerKill { .. } => "broker-kill",
            Self::S3Down { .. } => "s3-down",
            Self::ClockSkew { .. } => "clock-skew",
            Self::DiskFull { .. } => "disk-full",
            Self::SlowConsumer { .. } => "slow-consumer",
            Self::ReconnectStorm { .. } => "reconnect-storm",
        }
    }

    /// How long the fault lasts before it heals (a restart counts as its
    /// heal); zero for an instant one.
    pub fn seconds(&self) -> f64 {
        match self {
            Self::GatewayKill { restart_after, .. }
            | Self::CoreKill { restart_after, .. }
            | Self::BrokerKill { restart_after, .. } => *restart_after,
            Self::GatewayFreeze { seconds, .. }
            | Self::GatewayTierLoss { seconds, .. }
            | Self::RegionDrain { seconds, .. }
            | Self::CoreFreeze { seconds, .. }
            | Self::LinkPartition { seconds, .. }
            | Self::LinkOneway { seconds, .. }
            | Self::LinkSlow { seconds, .. }
            | Self::S3Down { seconds, .. }
            | Self::ClockSkew { seconds, .. }
            | Self::DiskFull { seconds, .. }
            | Self::SlowConsumer { seconds, .. } => *seconds,
            Self::ReconnectStorm { .. } => 0.0,
        }
    }

    /// Every region the fault names.
    fn regions(&self) -> Vec<&str> {
        match self {
            Self::GatewayKill { region, .. }
            | Self::GatewayFreeze { region, .. }
            | Self::GatewayTierLoss { region, .. }
            | Self::RegionDrain { region, .. }
            | Self::CoreKill { region, .. }
            | Self::CoreFreeze { region, .. }
            | Self::BrokerKill { region, .. }
            | Self::S3Down { region, .. }
            | Self::ClockSkew { region, .. }
            | Self::DiskFull { region, .. }
            | Self::ReconnectStorm { region } => vec![region],
            Self::LinkPartition { regions, .. } | Self::LinkSlow { regions, .. } => {
                regions.iter().map(String::as_str).collect()
            }
            Self::LinkOneway { from, to, .. } => vec![from, to],
            Self::SlowConsumer { .. } => Vec::new(),
        }
    }
}

/// A scenario file that cannot run, and why.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a scenario.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser says, with the line.
        source: Box<toml::de::Error>,
    },
    /// The scenario parses but cannot run.
    #[error("scenario {name}: {reason}")]
    Invalid {
        /// The scenario.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl Scenario {
    /// Reads and checks one scenario file; its name must be the file's stem.
    ///
    /// # Errors
    /// An unreadable or malformed file, or one that cannot run.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let scenario: Self = toml::from_str(&text).map_err(|source| ScenarioError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let stem = path.file_stem().and_then(|stem| stem.to_str());
        if stem != Some(scenario.name.as_str()) {
            return Err(scenario.invalid(format!(
                "its name must be its file's, {}",
                stem.unwrap_or("(none)")
            )));
        }
        scenario.check()?;
        Ok(scenario)
    }

    /// Every scenario of `dir` (`*.toml`), by name.
    ///
    /// # Errors
    /// As [`Scenario::load`], for the first file that fails.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, ScenarioError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ScenarioError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        paths.sort();
        paths.iter().map(|path| Self::load(path)).collect()
    }

    fn invalid(&self, reason: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            name: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Whether the scenario can run: positive lengths, faults inside the
    /// load, known regions, a workload within the product's limits.
    ///
    /// # Errors
    /// The first thing wrong.
    pub fn check(&self) -> Result<(), ScenarioError> {
        let run = &self.run;
        if !(run.seconds > 0.0 && run.long_seconds >= run.seconds && run.settle_seconds > 0.0) {
            return Err(self.invalid(
                "[run] needs seconds > 0, long_seconds >= seconds and settle_seconds > 0",
            ));
        }
        let load = &self.workload;
        if load.users_per_region == 0 || load.devices_per_user == 0 {
            return Err(self.invalid("the workload needs users and devices in every region"));
        }
        if load.group_members > 100 || load.group_members > load.users_per_region * REGIONS.len() {
            return Err(
                self.invalid("group_members must be at most 100 and at most the users there are")
            );
        }
        if !(0.0..=1.0).contains(&load.media_share) || !(0.0..=1.0).contains(&load.offline_share) {
            return Err(self.invalid("media_share and offline_share are shares, 0 to 1"));
        }
        for fault in &self.faults {
            let name = fault.kind.name();
            if !(fault.at >= 0.0 && fault.kind.seconds() >= 0.0) {
                return Err(self.invalid(format!("{name}: at and seconds cannot be negative")));
            }
            if fault.at + fault.kind.seconds() > run.seconds {
                return Err(self.invalid(format!(
                    "{name} at {} s lasts past the load's {} s",
                    fault.at, run.seconds
                )));
            }
            if let Some(unknown) = fault
                .kind
                .regions()
                .into_iter()
                .find(|region| !REGIONS.contains(region))
            {
                return Err(self.invalid(format!(
                    "{name}: no region {unknown} (the regions are {})",
                    REGIONS.join(", ")
                )));
            }
            let same = match &fault.kind {
                FaultKind::LinkPartition { regions, .. } | FaultKind::LinkSlow { regions, .. } => {
                    regions[0] == regions[1]
                }
                FaultKind::LinkOneway { from, to, .. } => from == to,
                _ => false,
            };
            if same {
                return Err(self.invalid(format!("{name}: a link joins two different regions")));
            }
            if let FaultKind::DiskFull { region, .. } = &fault.kind {
                let other = self.faults.iter().find_map(|f| match &f.kind {
                    FaultKind::DiskFull { region: r, .. } if r != region => Some(r),
                    _ => None,
                });
                if let Some(other) = other {
                    return Err(self.invalid(format!(
                        "{name}: one region's disk per scenario (the small filesystem is mounted for {region}, not {other})"
                    )));
                }
            }
            if let FaultKind::GatewayKill { gateway, .. } | FaultKind::GatewayFreeze { gateway, .. } =
                &fault.kind
                && *gateway >= GATEWAYS_PER_REGION
            {
                return Err(self.invalid(format!(
                    "{name}: gateway {gateway} does not exist (each region runs {GATEWAYS_PER_REGION}, from 0)"
                )));
            }
        }
        Ok(())
    }

    /// The fault schedule for `profile`, in time order: as written for
    /// the short profile, stretched to the long load for the long one.
    pub fn schedule(&self, profile: Profile) -> Vec<Fault> {
        let stretch = match profile {
            Profile::Short => 1.0,
            Profile::Long => self.run.long_seconds / self.run.seconds,
        };
        let mut faults: Vec<Fault> = self
            .faults
            .iter()
            .map(|fault| Fault {
                at: fault.at * stretch,
                kind: fault.kind.clone(),
            })
            .collect();
        faults.sort_by(|a, b| a.at.total_cmp(&b.at));
        faults
    }

    /// Seconds of load for `profile`.
    pub fn load_seconds(&self, profile: Profile) -> f64 {
        match profile {
            Profile::Short => self.run.seconds,
            Profile::Long => self.run.long_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|source| ScenarioError::Parse {
            path: PathBuf::from("test.toml"),
            source: Box::new(source),
        })?;
        scenario.check()?;
        Ok(scenario)
    }

    const HEAD: &str = "name = \"t\"\nsummary = \"s\"\n[run]\nseconds = 60\nlong_seconds = 300\n";

    #[test]
    fn a_schedule_reads_in_time_order_and_stretches_for_the_long_profile() {
        let scenario = parse(&format!(
            "{HEAD}[[fault]]\nat = 30\nkind = \"core-kill\"\nregion = \"eu-west\"\n\
             [[fault]]\nat = 10\nkind = \"link-partition\"\nregions = [\"us-east\", \"eu-west\"]\nseconds = 15\n"
        ))
        .expect("valid");
        let short = scenario.schedule(Profile::Short);
        assert_eq!(short[0].kind.name(), "link-partition");
        assert_eq!(short[1].at, 30.0);
        assert_eq!(
            short[1].kind,
            FaultKind::CoreKill {
                region: "eu-west".into(),
                restart_after: 5.0
            }
        );
        let long = scenario.schedule(Profile::Long);
        assert_eq!((long[0].at, long[1].at), (50.0, 150.0));
        assert_eq!(scenario.load_seconds(Profile::Long), 300.0);
    }

    #[test]
    fn what_cannot_run_is_refused_with_the_reason() {
        let cases = [
            (
                "[[fault]]\nat = 50\nkind = \"core-freeze\"\nregion = \"us-east\"\nseconds = 20\n",
                "lasts past",
            ),
            (
                "[[fault]]\nat = 5\nkind = \"core-freeze\"\nregion = \"mars\"\nseconds = 2\n",
                "no region mars",
            ),
            (
                "[[fault]]\nat = 5\nkind = \"link-oneway\"\nfrom = \"us-east\"\nto = \"us-east\"\nseconds = 2\n",
                "two different",
            ),
            ("[workload]\ngroup_members = 101\n", "at most 100"),
            ("[workload]\nmedia_share = 2.0\n", "shares"),
            (
                "[[fault]]\nat = 5\nkind = \"disk-full\"\nregion = \"us-east\"\ncapacity_mib = 64\nseconds = 2\n\
                 [[fault]]\nat = 9\nkind = \"disk-full\"\nregion = \"eu-west\"\ncapacity_mib = 64\nseconds = 2\n",
                "one region's disk",
            ),
            (
                "[[fault]]\nat = 5\nkind = \"gateway-kill\"\nregion = \"us-east\"\ngateway = 2\n",
                "does not exist",
            ),
        ];
        for (tail, reason) in cases {
            let error = parse(&format!("{HEAD}{tail}")).expect_err(tail).to_string();
            assert!(error.contains(reason), "{tail}: {error}");
        }
        for (tail, what) in [
            ("[[fault]]\nat = 5\nkind = \"meteor\"\n", "unknown kind"),
            (
                "[[fault]]\nat = 5\nkind = \"core-kill\"\nregion = \"us-east\"\nwhen = 3\n",
                "unknown field",
            ),
            ("[workload]\nusers = 3\n", "unknown key"),
        ] {
            let error = parse(&format!("{HEAD}{tail}")).expect_err(what).to_string();
            assert!(error.contains("unknown"), "{what}: {error}");
        }
    }

    /// Every scenario shipped in `chaos/scenarios` reads and can run.
    #[test]
    fn the_shipped_scenarios_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../chaos/scenarios");
        let scenarios = Scenario::load_dir(&dir).expect("every shipped scenario is valid");
        let kinds: std::collections::BTreeSet<&str> = scenarios
            .iter()
            .flat_map(|s| s.faults.iter().map(|f| f.kind.name()))
            .collect();
        for kind in [
            "gateway-kill",
            "gateway-freeze",
            "gateway-tier-loss",
            "region-drain",
            "core-kill",
            "core-freeze",
            "link-partition",
            "link-oneway",
            "link-slow",
            "broker-kill",
            "s3-down",
            "clock-skew",
            "disk-full",
            "slow-consumer",
            "reconnect-storm",
        ] {
            assert!(kinds.contains(kind), "no shipped scenario injects {kind}");
        }
    }
}
