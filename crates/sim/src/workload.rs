//! What a seed asks for: users, devices, conversations, each device's
//! script, and the fault schedule. Generated up front from the seed so the
//! plan itself can be printed when a seed fails.

use std::time::Duration;

use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which kinds of fault a run injects.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Partitions (and heals) between devices and the gateway, and between
    /// the gateway and the core.
    pub partitions: bool,
    /// Crash-and-restart of the core (durable state kept) and the gateway.
    pub crashes: bool,
    /// Most regions a seed runs (each seed picks 1 to this many); with
    /// several, replication links are cut and healed too.
    pub regions: usize,
}

impl Faults {
    /// Every kind.
    pub const ALL: Self = Self {
        partitions: true,
        crashes: true,
        regions: 3,
    };

    /// Every kind, in one region: the topology the early regression seeds
    /// were found in, so they replay exactly.
    pub const ALL_ONE_REGION: Self = Self {
        partitions: true,
        crashes: true,
        regions: 1,
    };
}

/// A conversation of the plan.
#[derive(Debug, Clone)]
pub(crate) enum ConvPlan {
    Direct(usize, usize),
    Group(Vec<usize>),
}

impl ConvPlan {
    pub(crate) fn members(&self) -> Vec<usize> {
        match self {
            Self::Direct(a, b) => vec![*a, *b],
            Self::Group(members) => members.clone(),
        }
    }
}

/// One send of a device's script.
#[derive(Debug, Clone)]
pub(crate) struct SendPlan {
    /// Pause before it.
    pub(crate) delay: Duration,
    /// Index into the plan's conversations.
    pub(crate) conv: usize,
    /// Reply to the newest message this device has seen in the conversation.
    pub(crate) reply: bool,
    /// Send the same `client_msg_id` twice (a client-side retry).
    pub(crate) duplicate: bool,
    /// Claim a `last_seen_hlc` far beyond the maximum clock offset first:
    /// it must be refused (and nothing stored).
    pub(crate) future_probe: bool,
    /// Afterwards, send a read receipt for the newest message of another
    /// sender this device has seen in the conversation.
    pub(crate) receipt: bool,
}

/// A device and its script.
#[derive(Debug, Clone)]
pub(crate) struct DevicePlan {
    pub(crate) user: usize,
    pub(crate) name: String,
    pub(crate) sends: Vec<SendPlan>,
    /// (start, length) of periods this device spends disconnected.
    pub(crate) offline: Vec<(Duration, Duration)>,
}

/// A fault to apply at a simulated time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FaultAction {
    Partition(String, String),
    Repair(String, String),
    Bounce(String),
    /// A latency spike on a link (restored to `Duration::ZERO`, turmoil's
    /// per-link default, by a later action).
    Latency(String, String, Duration),
    /// A region's core wall clock jumps to this skew (ms), within the
    /// maximum offset: (region index, skew).
    ClockJump(usize, i64),
    /// A site's store fails for good (a failed fsync): its core stops
    /// (fail-stop) and is restarted over the recovered store, as its
    /// supervisor would: (site index).
    StoreFailure(usize),
}

/// A membership change made while messages flow.
#[derive(Debug, Clone)]
pub(crate) struct MembershipChange {
    /// The group (index into the plan's conversations).
    pub(crate) conv: usize,
    /// The user added or removed.
    pub(crate) user: usize,
    /// Added (`true`) or removed.
    pub(crate) join: bool,
    /// When the group's admin asks for it.
    pub(crate) at: Duration,
}

/// The whole plan of one seed.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Sites (1–3); user `u` is homed in site `u % regions`.
    pub(crate) regions: usize,
    /// Whether the sites are us-east in two shards and eu-west.
    pub(crate) sharded: bool,
    /// The region whose gateway each device connects through (usually its
    /// user's home; sometimes another, as any gateway serves any user).
    pub(crate) gateway_of: Vec<usize>,
    pub(crate) users: usize,
    pub(crate) devices: Vec<DevicePlan>,
    pub(crate) conversations: Vec<ConvPlan>,
    pub(crate) faults: Vec<(Duration, FaultAction)>,
    pub(crate) membership: Option<MembershipChange>,
}

/// Every fault is healed by then.
pub(crate) const HEALED_BY: Duration = Duration::from_secs(8);

/// Region names of a multi-region run.
pub(crate) const REGION_NAMES: [&str; 3] = ["us-east", "eu-west", "ap-southeast"];

/// The sites of a sharded three-site run: us-east in two shards (each a
/// core over its own store) and eu-west.
pub(crate) const SHARDED_SITE_NAMES: [&str; 3] = ["us-east_0", "us-east_1", "eu-west"];

/// A seed's sites: how many (each a core, a gateway and a place users are
/// homed), and whether they are [`SHARDED_SITE_NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sites {
    pub(crate) count: usize,
    pub(crate) sharded: bool,
}

impl Sites {
    /// Which site every id belongs to.
    pub(crate) fn topology(self) -> meridian_wire::sites::Topology {
        if self.sharded {
            meridian_wire::sites::Topology::new([("us-east".to_string(), 2)])
        } else {
            meridian_wire::sites::Topology::unsharded()
        }
    }
}

/// The name of site `region` among `sites` (`sim` when alone).
pub(crate) fn region_name(sites: Sites, region: usize) -> &'static str {
    if sites.count <= 1 {
        "sim"
    } else if sites.sharded {
        SHARDED_SITE_NAMES[region % SHARDED_SITE_NAMES.len()]
    } else {
        REGION_NAMES[region % REGION_NAMES.len()]
    }
}

/// The host running `part` ("core" or "gateway") of region `region`: plain
/// `core`/`gateway` in a one-region run, so its traces keep their names.
pub(crate) fn host(part: &str, sites: Sites, region: usize) -> String {
    site_host(part, sites, region_name(sites, region))
}

/// The host running `part` of the site named `site`.
pub(crate) fn site_host(part: &str, sites: Sites, site: &str) -> String {
    if sites.count <= 1 {
        part.to_string()
    } else {
        format!("{part}-{site}")
    }
}

impl Plan {
    /// The seed's sites.
    pub(crate) fn sites(&self) -> Sites {
        Sites {
            count: self.regions,
            sharded: self.sharded,
        }
    }

    /// The home region of `user`.
    pub(crate) fn home(&self, user: usize) -> usize {
        user % self.regions
    }
}

impl Plan {
    pub(crate) fn generate(seed: u64, faults: Faults) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let users = rng.random_range(2..=5usize);
        let mut devices = draw_devices(&mut rng, users);
        let conversations = draw_conversations(&mut rng, users);
        draw_scripts(&mut rng, &mut devices, &conversations);
        let membership = draw_membership(&mut rng, users, &conversations);
        // The topology draws from a stream of its own, so the draws above
        // (and a one-region seed's whole plan) do not depend on it.
        let mut topo = ChaCha8Rng::seed_from_u64(seed ^ 0x7e91_0a5e_0fc0_de00);
        let regions = if faults.regions <= 1 {
            1
        } else {
            topo.random_range(1..=faults.regions.min(REGION_NAMES.len()))
        };
        // A three-site seed sometimes shards us-east in two (drawn from a
        // stream of its own, so other seeds' plans do not change).
        let sharded = regions == 3
            && ChaCha8Rng::seed_from_u64(seed ^ 0x5a4d_ed00_0000_0001).random_bool(0.3);
        let sites = Sites {
            count: regions,
            sharded,
        };
        let gateway_of = draw_gateways(&mut topo, &devices, regions);
        let links = Links {
            sites,
            devices: &devices,
            gateway_of: &gateway_of,
        };
        let mut fault_list = draw_faults(&mut rng, &mut topo, faults, &links);
        if faults.crashes {
            draw_store_failure(seed, sites, &mut fault_list);
        }
        Self {
            regions,
            sharded,
            gateway_of,
            users,
            devices,
            conversations,
            faults: fault_list,
            membership,
        }
    }
}

/// Sometimes, one site's store failing for good. Drawn from a stream of its
/// own, so the rest of every seed's plan is what it was before this fault
/// existed.
fn draw_store_failure(seed: u64, sites: Sites, fault_list: &mut Vec<(Duration, FaultAction)>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xd15c_fa11_0000_0001);
    if rng.random_bool(0.2) {
        let at = Duration::from_millis(rng.random_range(0..7_000));
        let site = rng.random_range(0..sites.count);
        fault_list.push((at, FaultAction::StoreFailure(site)));
        fault_list.sort_by_key(|(at, _)| *at);
    }
}

/// The devices of `users` users, one to three each, with empty scripts.
fn draw_devices(rng: &mut ChaCha8Rng, users: usize) -> Vec<DevicePlan> {
    let mut devices = Vec::new();
    for user in 0..users {
        for device in 0..rng.random_range(1..=3usize) {
            devices.push(DevicePlan {
                user,
                name: format!("dev-{user}-{device}"),
                sends: Vec::new(),
                offline: Vec::new(),
            });
        }
    }
    devices
}

/// Direct conversations between some pairs of users, and a group.
fn draw_conversations(rng: &mut ChaCha8Rng, users: usize) -> Vec<ConvPlan> {
    let mut conversations = Vec::new();
    for a in 0..users {
        for b in a + 1..users {
            if rng.random_bool(0.6) {
                conversations.push(ConvPlan::Direct(a, b));
            }
        }
    }
    if users >= 3 || conversations.is_empty() {
        let mut members: Vec<usize> = (0..users).filter(|_| rng.random_bool(0.8)).collect();
        if members.len() < 2 {
            members = (0..users).collect();
        }
        conversations.push(ConvPlan::Group(members));
    }
    conversations
}

/// Each device's sends in its conversations, and its offline spell.
fn draw_scripts(rng: &mut ChaCha8Rng, devices: &mut [DevicePlan], conversations: &[ConvPlan]) {
    for device in devices {
        let mine: Vec<usize> = conversations
            .iter()
            .enumerate()
            .filter(|(_, c)| c.members().contains(&device.user))
            .map(|(i, _)| i)
            .collect();
        if mine.is_empty() {
            continue;
        }
        for _ in 0..rng.random_range(0..=6usize) {
            device.sends.push(SendPlan {
                delay: Duration::from_millis(rng.random_range(0..800)),
                conv: mine[rng.random_range(0..mine.len())],
                reply: rng.random_bool(0.3),
                duplicate: rng.random_bool(0.15),
                future_probe: rng.random_bool(0.05),
                receipt: rng.random_bool(0.3),
            });
        }
        if rng.random_bool(0.3) {
            let start = Duration::from_millis(rng.random_range(0..5_000));
            let length = Duration::from_millis(rng.random_range(100..3_000));
            device.offline.push((start, length));
        }
    }
}

/// Sometimes, a member added to or removed from the group mid-run.
fn draw_membership(
    rng: &mut ChaCha8Rng,
    users: usize,
    conversations: &[ConvPlan],
) -> Option<MembershipChange> {
    let mut membership = None;
    if let Some((group, ConvPlan::Group(members))) = conversations
        .iter()
        .enumerate()
        .find(|(_, c)| matches!(c, ConvPlan::Group(_)))
        && rng.random_bool(0.5)
    {
        let outsiders: Vec<usize> = (0..users).filter(|u| !members.contains(u)).collect();
        let leavers: Vec<usize> = members[1..].to_vec();
        let join = !outsiders.is_empty() && (leavers.len() < 2 || rng.random_bool(0.5));
        let pool = if join { &outsiders } else { &leavers };
        if join || leavers.len() >= 2 {
            membership = Some(MembershipChange {
                conv: group,
                user: pool[rng.random_range(0..pool.len())],
                join,
                at: Duration::from_millis(rng.random_range(0..5_000)),
            });
        }
    }
    membership
}

/// The region whose gateway each device connects through.
fn draw_gateways(topo: &mut ChaCha8Rng, devices: &[DevicePlan], regions: usize) -> Vec<usize> {
    devices
        .iter()
        .map(|d| {
            if regions > 1 && topo.random_bool(0.25) {
                topo.random_range(0..regions)
            } else {
                d.user % regions
            }
        })
        .collect()
}

/// The links of a seed's topology that faults can hit.
struct Links<'a> {
    sites: Sites,
    devices: &'a [DevicePlan],
    gateway_of: &'a [usize],
}

impl Links<'_> {
    /// A gateway–core link of the topology (same region mostly).
    fn gateway_core(&self, topo: &mut ChaCha8Rng) -> (String, String) {
        let (sites, regions) = (self.sites, self.sites.count);
        let r = topo.random_range(0..regions);
        let c = if topo.random_bool(0.7) {
            r
        } else {
            topo.random_range(0..regions)
        };
        (host("gateway", sites, r), host("core", sites, c))
    }

    /// The link between device `index` and its gateway.
    fn device_gateway(&self, index: usize) -> (String, String) {
        (
            self.devices[index].name.clone(),
            host("gateway", self.sites, self.gateway_of[index]),
        )
    }
}

/// The fault schedule, in time order.
fn draw_faults(
    rng: &mut ChaCha8Rng,
    topo: &mut ChaCha8Rng,
    faults: Faults,
    links: &Links<'_>,
) -> Vec<(Duration, FaultAction)> {
    let mut fault_list = Vec::new();
    if faults.partitions {
        draw_partitions(rng, topo, links, &mut fault_list);
    }
    if faults.partitions {
        draw_latency_spikes(rng, topo, links, &mut fault_list);
    }
    if faults.partitions && links.sites.count > 1 {
        draw_replication_cuts(topo, links.sites, &mut fault_list);
    }
    if faults.crashes {
        draw_crashes(rng, topo, links.sites, &mut fault_list);
    }
    fault_list.sort_by_key(|(at, _)| *at);
    fault_list
}

/// Partitions of device–gateway and gateway–core links, each healed by
/// [`HEALED_BY`].
fn draw_partitions(
    rng: &mut ChaCha8Rng,
    topo: &mut ChaCha8Rng,
    links: &Links<'_>,
    fault_list: &mut Vec<(Duration, FaultAction)>,
) {
    for _ in 0..rng.random_range(0..=4usize) {
        // A link that exists in this topology: device–gateway or gateway–core.
        let (a, b) = if rng.random_bool(0.4) {
            links.gateway_core(topo)
        } else {
            let index = rng.random_range(0..links.devices.len());
            links.device_gateway(index)
        };
        let at = Duration::from_millis(rng.random_range(0..6_000));
        let heal = at + Duration::from_millis(rng.random_range(50..2_000));
        fault_list.push((at, FaultAction::Partition(a.clone(), b.clone())));
        fault_list.push((heal.min(HEALED_BY), FaultAction::Repair(a, b)));
    }
}

/// Latency spikes on device–gateway and gateway–core links, each ended by
/// [`HEALED_BY`].
fn draw_latency_spikes(
    rng: &mut ChaCha8Rng,
    topo: &mut ChaCha8Rng,
    links: &Links<'_>,
    fault_list: &mut Vec<(Duration, FaultAction)>,
) {
    for _ in 0..rng.random_range(0..=2usize) {
        let index = rng.random_range(0..links.devices.len());
        let (a, b) = if rng.random_bool(0.5) {
            links.gateway_core(topo)
        } else {
            links.device_gateway(index)
        };
        let at = Duration::from_millis(rng.random_range(0..6_000));
        let spike = Duration::from_millis(rng.random_range(50..800));
        let end = at + Duration::from_millis(rng.random_range(100..1_500));
        fault_list.push((at, FaultAction::Latency(a.clone(), b.clone(), spike)));
        fault_list.push((
            end.min(HEALED_BY),
            FaultAction::Latency(a, b, Duration::ZERO),
        ));
    }
}

/// Cut replication links: partitions between regions' cores.
fn draw_replication_cuts(
    topo: &mut ChaCha8Rng,
    sites: Sites,
    fault_list: &mut Vec<(Duration, FaultAction)>,
) {
    let regions = sites.count;
    for _ in 0..topo.random_range(0..=3usize) {
        let a = topo.random_range(0..regions);
        let b = (a + topo.random_range(1..regions)) % regions;
        let (a, b) = (host("core", sites, a), host("core", sites, b));
        let at = Duration::from_millis(topo.random_range(0..6_000));
        let heal = at + Duration::from_millis(topo.random_range(50..3_000));
        fault_list.push((at, FaultAction::Partition(a.clone(), b.clone())));
        fault_list.push((heal.min(HEALED_BY), FaultAction::Repair(a, b)));
    }
}

/// A clock jump of a region's core, and crashes of a core and a gateway.
fn draw_crashes(
    rng: &mut ChaCha8Rng,
    topo: &mut ChaCha8Rng,
    sites: Sites,
    fault_list: &mut Vec<(Duration, FaultAction)>,
) {
    let regions = sites.count;
    if rng.random_bool(0.4) {
        // Within the cores' 500 ms maximum offset, either way.
        let at = Duration::from_millis(rng.random_range(0..6_000));
        let skew = rng.random_range(-450..450);
        let region = topo.random_range(0..regions);
        fault_list.push((at, FaultAction::ClockJump(region, skew)));
    }
    for part in ["core", "gateway"] {
        if rng.random_bool(0.35) {
            let at = Duration::from_millis(rng.random_range(0..7_000));
            let region = topo.random_range(0..regions);
            fault_list.push((at, FaultAction::Bounce(host(part, sites, region))));
        }
    }
}
