//! One seed: build the simulation, drive the workload and faults, check the
//! invariants, hash the trace.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use meridian_core::{CoreConfig, MediaDeps};
use meridian_gateway::GatewayConfig;
use meridian_kv_memory::MemoryEngine;
use meridian_media::{Bucket, EmbeddedS3, S3Target, memory::MemoryS3};
use meridian_proto::core::core_client::CoreClient;
use meridian_proto::core::{self as pb};
use meridian_region::{CoreOptions, GatewayOptions, StoreChoice, start_core, start_gateway};
use meridian_sdk::{Client, Connector, GatewayStream, Rest};
use meridian_seams::net::{SharedNetwork, tonic_channel};
use meridian_seams::{Offload, Rng, SharedClock};

use crate::workload::{ConvPlan, FaultAction, HEALED_BY, Plan, Sites, host, region_name};
use crate::{SimClock, TurmoilNetwork};
use meridian_proto::sites::region_of_site;

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

/// What a passing seed measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Hash of everything every device observed, in order.
    pub trace_hash: u64,
    /// Messages acknowledged to their senders.
    pub messages: usize,
    /// Distinct deliveries to devices.
    pub deliveries: usize,
    /// Raw duplicates on the wire (dropped by the SDK's dedupe).
    pub wire_duplicates: u64,
    /// Delivery frames lost on the way (a broken `after`/`through` chain),
    /// each answered by the device reconnecting.
    pub chain_breaks: u64,
    /// Faults injected.
    pub faults: usize,
    /// Whether a member was added or removed mid-run.
    pub membership_change: bool,
    /// Read receipts sent.
    pub receipts: usize,
    /// Stamps beyond the maximum clock offset that were refused (as they must be).
    pub refused_stamps: usize,
    /// Simulated time from the last heal to the last device complete.
    pub convergence: Duration,
    /// Simulated time of the whole run.
    pub sim_time: Duration,
    /// Sites the seed ran (regions, or shards of a region).
    pub regions: usize,
    /// Whether us-east ran in two shards (sites us-east_0 and us-east_1).
    pub sharded: bool,
    /// Delivered copies of messages carrying media, each checked to carry
    /// exactly the attached media.
    pub media_copies: usize,
}

/// How a seed ended.
pub type SeedOutcome = Result<SeedReport, String>;

const EPOCH_MS: u64 = 1_800_000_000_000;
const CORE_PORT: u16 = 7070;
const GATEWAY_PORT: u16 = 8080;
const S3_PORT: u16 = 9000;
/// The key pair of the simulated S3 servers.
const S3_KEY: (&str, &str) = ("sim-key", "sim-secret");
/// Signatures are dated this far ahead of the simulated clock: `s3s` checks
/// them against the machine's clock, which the simulation does not drive;
/// dated decades ahead (within the servers' raised skew) they are always
/// fresh, whatever the machine's date.
const S3_SIGNING_AHEAD_MS: i64 = 50 * 365 * 24 * 3600 * 1000;

/// The media a seed's first user uploads in setup; one of its messages
/// carries it.
fn sim_image() -> Vec<u8> {
    // A 2x1 PNG (red, blue), spelled out: no encoder needed in the simulation.
    const PNG: &[u8] = &[
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x7b,
        0x40, 0xe8, 0xdd, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8,
        0xcf, 0x00, 0x04, 0xff, 0x01, 0x07, 0x00, 0x01, 0xff, 0xe2, 0x23, 0x9e, 0x59, 0x00, 0x00,
        0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];
    PNG.to_vec()
}

/// The first site of site `region`'s region: its host serves the region's
/// bucket (a sharded region's sites share one).
fn bucket_site(sites: Sites, region: usize) -> usize {
    let of = |r: usize| region_of_site(region_name(sites, r));
    (0..region).find(|r| of(*r) == of(region)).unwrap_or(region)
}

/// The bucket of site `region`'s region.
fn s3_target(sites: Sites, region: usize) -> S3Target {
    S3Target {
        endpoint: Some(format!(
            "http://{}:{S3_PORT}",
            host("s3", sites, bucket_site(sites, region))
        )),
        aws_region: "us-east-1".into(),
        bucket: format!("media-{}", region_of_site(region_name(sites, region))),
        access_key_id: S3_KEY.0.into(),
        secret_access_key: S3_KEY.1.into(),
    }
}

fn any_addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
}

/// A message acknowledged to its sender.
#[derive(Debug, Clone)]
struct Acked {
    conv: usize,
    /// The sender's home region (whose core accepted it).
    region: usize,
    hlc: u64,
    reply_to: Option<String>,
    /// When the sender started sending it (before its first attempt).
    started: Duration,
    /// When the sender got `sent`.
    acked_at: Duration,
}

#[derive(Default)]
struct DeviceOutcome {
    /// (msg_id, hlc) in arrival order (after dedupe).
    arrivals: Vec<(String, u64)>,
    /// conv index → msg_id → (hlc, origin region).
    seen: BTreeMap<usize, BTreeMap<String, (u64, String)>>,
    /// msg_id → (media id, sha256) of every attachment, as delivered.
    attachments: BTreeMap<String, Vec<(String, String)>>,
    wire_duplicates: u64,
    chain_breaks: u64,
    done_at: Option<Duration>,
}

#[derive(Default)]
struct Shared {
    /// Device tokens by device index, conversation ids by plan index.
    tokens: Vec<String>,
    conv_ids: Vec<String>,
    setup_done: bool,
    acked: BTreeMap<String, Acked>,
    outcomes: BTreeMap<usize, DeviceOutcome>,
    /// Sends whose `last_seen_hlc` was beyond the maximum offset, refused.
    refused_stamps: usize,
    /// Read receipts sent.
    receipts_sent: usize,
    /// Callers by user index (for the admin's membership change).
    callers: Vec<pb::Caller>,
    /// The ready media of setup: (media id, SHA-256 hex).
    media: Option<(String, String)>,
    /// Messages acknowledged with that media attached.
    with_media: BTreeSet<String>,
    /// When the membership change was first asked for, and acknowledged.
    membership_started: Option<Duration>,
    membership_done: Option<Duration>,
}

impl Shared {
    /// Whether `user`'s devices must end up with `message`: members receive
    /// every acknowledged send; a user added mid-run receives what was sent
    /// after the addition was acknowledged; a user removed mid-run receives
    /// what was acknowledged before the removal was asked for.
    ///
    /// With several regions a membership change takes effect in each region
    /// when that region applies it: a message accepted elsewhere in the
    /// meantime is concurrent with the change. So "an added member gets what
    /// follows the addition" and "a removed member gets nothing after the
    /// removal" are promised for messages accepted by the group's owner
    /// region, which made the change (docs/architecture.md, Convergence).
    fn must_receive(&self, plan: &Plan, user: usize, message: &Acked) -> bool {
        match &plan.membership {
            Some(change) if change.conv == message.conv && change.user == user => {
                if change.join {
                    message.region == Self::owner_region(plan, change.conv)
                        && self
                            .membership_done
                            .is_some_and(|done| message.started > done)
                } else {
                    self.membership_started
                        .is_none_or(|asked| message.acked_at < asked)
                }
            }
            _ => plan.conversations[message.conv].members().contains(&user),
        }
    }

    /// Whether `user`'s devices must never see `message`: a removed user sees
    /// nothing sent after the removal was acknowledged.
    fn must_not_receive(&self, plan: &Plan, user: usize, message: &Acked) -> bool {
        match &plan.membership {
            Some(change) if change.conv == message.conv && change.user == user && !change.join => {
                message.region == Self::owner_region(plan, change.conv)
                    && self
                        .membership_done
                        .is_some_and(|done| message.started > done)
            }
            _ => false,
        }
    }

    /// The region that owns a group: its creator's (the first member's) home.
    fn owner_region(plan: &Plan, conv: usize) -> usize {
        match &plan.conversations[conv] {
            ConvPlan::Group(members) => plan.home(members[0]),
            ConvPlan::Direct(a, _) => plan.home(*a),
        }
    }

    /// Whether `user`'s devices see `conv` (its membership may change).
    fn tracks(plan: &Plan, user: usize, conv: usize) -> bool {
        plan.conversations[conv].members().contains(&user)
            || plan
                .membership
                .as_ref()
                .is_some_and(|c| c.conv == conv && c.user == user)
    }
}

type SharedState = Arc<Mutex<Shared>>;

fn lock(shared: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

type HostResult = Result<(), Box<dyn std::error::Error>>;

/// Runs one seed to completion and checks the invariants.
///
/// # Errors
/// A description of the violated invariant or of the simulation failure.
pub fn run_seed(seed: u64, faults: Faults) -> SeedOutcome {
    align_task_ids();
    let plan = Plan::generate(seed, faults);
    let mut sim = turmoil::Builder::new()
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .simulation_duration(Duration::from_secs(120))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(Duration::from_millis(5))
        .rng_seed(seed)
        .build();
    let network: SharedNetwork = Arc::new(TurmoilNetwork);
    let clock: SharedClock = Arc::new(SimClock::new(EPOCH_MS, 0));
    let regions = plan.regions;
    let sites = plan.sites();
    let topology = sites.topology();
    // Each region's core clock, which clock-jump faults move.
    let core_clocks: Vec<SimClock> = (0..regions).map(|_| SimClock::new(EPOCH_MS, 0)).collect();
    let shared: SharedState = Arc::default();
    let core_addr = |region: usize| format!("{}:{CORE_PORT}", host("core", sites, region));

    // Each region's object storage: an in-memory S3 server on a host of its
    // own (outside the core's, so a core crash keeps the objects).
    let signing_clock: SharedClock = Arc::new(SimClock::new(EPOCH_MS, S3_SIGNING_AHEAD_MS));
    let media_deps = MediaDeps {
        buckets: (0..regions)
            .filter(|r| bucket_site(sites, *r) == *r)
            .map(|r| {
                (
                    region_of_site(region_name(sites, r)).to_string(),
                    Bucket::new(&s3_target(sites, r), signing_clock.clone(), &network),
                )
            })
            .collect(),
        offload: Offload::Inline,
    };
    for region in 0..regions {
        if bucket_site(sites, region) != region {
            continue; // the region's first site serves its bucket
        }
        let backend = MemoryS3::new(&[s3_target(sites, region).bucket]);
        let s3_network = network.clone();
        sim.host(host("s3", sites, region), move || {
            let (network, backend) = (s3_network.clone(), backend.clone());
            async move {
                let listener = network.bind(any_addr(S3_PORT)).await?;
                let _server =
                    EmbeddedS3::start_in_memory(backend, listener, S3_KEY.0, S3_KEY.1, u32::MAX)?;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }

    for (region, region_clock) in core_clocks.iter().enumerate() {
        let name = region_name(sites, region);
        // A region's engine lives outside its host, so a crash keeps what
        // was committed and loses what was not.
        let engine = MemoryEngine::new();
        let boots = Arc::new(AtomicU64::new(0));
        let peers: BTreeMap<String, String> = (0..regions)
            .filter(|r| *r != region)
            .map(|r| (region_name(sites, r).to_string(), core_addr(r)))
            .collect();
        let (core_network, boots) = (network.clone(), boots.clone());
        let core_clock: SharedClock = Arc::new(region_clock.clone());
        let core_media = media_deps.clone();
        let core_topology = topology.clone();
        sim.host(host("core", sites, region), move || {
            let (network, clock, engine, peers, media) = (
                core_network.clone(),
                core_clock.clone(),
                engine.clone(),
                peers.clone(),
                core_media.clone(),
            );
            let boot = boots.fetch_add(1, Ordering::SeqCst);
            let topology = core_topology.clone();
            async move {
                let mut config = CoreConfig::new(name);
                config.topology = topology;
                config.sweep_interval = Duration::from_secs(3600);
                // Short link timings: simulated partitions drop data
                // silently, and every link must notice and resume.
                let link = meridian_replication::link::LinkConfig {
                    stall_timeout: Duration::from_secs(3),
                    keepalive: Duration::from_secs(1),
                    min_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_millis(500),
                    refused_retry: Duration::from_millis(200),
                    ..Default::default()
                };
                let _core = start_core(CoreOptions {
                    config,
                    store: StoreChoice::Memory(engine),
                    listen: any_addr(CORE_PORT).into(),
                    network,
                    clock,
                    rng: Rng::seeded(
                        seed.wrapping_mul(31)
                            .wrapping_add(boot)
                            .wrapping_add((region as u64) << 40),
                    ),
                    sweep: false,
                    peers,
                    log: Default::default(),
                    link,
                    media,
                })
                .await?;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        let cores: BTreeMap<String, String> = (0..regions)
            .map(|r| (region_name(sites, r).to_string(), core_addr(r)))
            .collect();
        let (network, clock) = (network.clone(), clock.clone());
        let gateway_topology = topology.clone();
        sim.host(host("gateway", sites, region), move || {
            let (network, clock, cores) = (network.clone(), clock.clone(), cores.clone());
            let topology = gateway_topology.clone();
            async move {
                let mut config = GatewayConfig::new(region_of_site(name));
                config.topology = topology;
                config.connects_per_minute = 6_000.0;
                config.sends_per_second = 1_000.0;
                // Short liveness periods: partitions drop data silently, and
                // every dead connection must be noticed for a seed to converge.
                config.ping_interval = Duration::from_millis(500);
                config.idle_timeout = Duration::from_secs(2);
                config.core_keepalive = Duration::from_secs(1);
                let _gateway = start_gateway(GatewayOptions {
                    config,
                    listen: any_addr(GATEWAY_PORT),
                    cores,
                    network,
                    clock,
                    metrics: None,
                })
                .await?;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }

    // Setup: users, devices and conversations, through the core's gRPC.
    {
        let (network, shared, plan) = (network.clone(), shared.clone(), plan.clone());
        sim.client("setup", async move { setup(network, shared, plan).await });
    }
    loop {
        if lock(&shared).setup_done {
            break;
        }
        match sim.step() {
            Ok(_) => {}
            Err(error) => return Err(format!("seed {seed}: setup failed: {error}")),
        }
    }

    let sends_remaining = Arc::new(AtomicUsize::new(plan.devices.len()));
    for (index, device) in plan.devices.iter().enumerate() {
        let task = DeviceTask {
            index,
            seed,
            plan: plan.clone(),
            shared: shared.clone(),
            network: network.clone(),
            sends_remaining: sends_remaining.clone(),
        };
        sim.client(device.name.as_str(), async move { task.run().await });
    }

    if let Some(change) = plan.membership.clone() {
        let (network, shared) = (network.clone(), shared.clone());
        let admin_user = match &plan.conversations[change.conv] {
            ConvPlan::Group(members) => members[0],
            ConvPlan::Direct(a, _) => *a,
        };
        // Group changes are made at the group's owner region: its creator's home.
        let owner = core_addr(plan.home(admin_user));
        sim.client("admin", async move {
            change_membership(network, shared, change, admin_user, owner).await
        });
    }
    let mut pending_faults = plan.faults.iter().peekable();
    let mut applied = 0;
    loop {
        while let Some((at, action)) = pending_faults.peek() {
            if sim.elapsed() < *at {
                break;
            }
            match action {
                FaultAction::Partition(a, b) => sim.partition(a.as_str(), b.as_str()),
                FaultAction::Repair(a, b) => sim.repair(a.as_str(), b.as_str()),
                FaultAction::Bounce(host) => sim.bounce(host.as_str()),
                FaultAction::Latency(a, b, latency) => {
                    sim.set_link_latency(a.as_str(), b.as_str(), *latency)
                }
                FaultAction::ClockJump(region, skew) => core_clocks[*region].set_skew(*skew),
            }
            applied += 1;
            pending_faults.next();
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => {
                let state = lock(&shared);
                let waiting: Vec<String> = plan
                    .devices
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| state.outcomes.get(i).is_none_or(|o| o.done_at.is_none()))
                    .map(|(i, d)| {
                        let missing: Vec<&String> = state
                            .acked
                            .iter()
                            .filter(|(id, a)| {
                                plan.conversations[a.conv].members().contains(&d.user)
                                    && state
                                        .outcomes
                                        .get(&i)
                                        .and_then(|o| o.seen.get(&a.conv))
                                        .is_none_or(|s| !s.contains_key(*id))
                            })
                            .map(|(id, _)| id)
                            .collect();
                        format!("{} (missing {missing:?})", d.name)
                    })
                    .collect();
                return Err(format!(
                    "seed {seed}: did not converge: {error}; devices still waiting: {waiting:?}; plan: {plan:?}"
                ));
            }
        }
    }
    let sim_time = sim.elapsed();
    check(seed, &plan, &lock(&shared), applied, sim_time)
}

/// Brings tokio's process-wide task-id counter to a multiple of 4.
///
/// A crashed host's runtime shuts its tasks down shard by shard, and a
/// current-thread runtime has 4 shards chosen by task id. The shutdown order
/// decides the order in which the crashed host's sockets close, which other
/// hosts observe; the ids themselves come from a counter shared by the whole
/// process. Starting every seed at the same residue makes that order — and
/// so the trace — depend on the seed alone, not on what ran before it in the
/// process. (Seeds running concurrently on other threads would still
/// interleave ids: run seeds one at a time.)
fn align_task_ids() {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    for _ in 0..8 {
        let task = runtime.spawn(async {});
        let id: u64 = task.id().to_string().parse().unwrap_or(3);
        let _ = runtime.block_on(task);
        if id % 4 == 3 {
            return;
        }
    }
}

/// The group's admin adds or removes a member mid-run, through the core's
/// gRPC, retrying until it is acknowledged.
async fn change_membership(
    network: SharedNetwork,
    shared: SharedState,
    change: crate::workload::MembershipChange,
    admin_user: usize,
    owner_core: String,
) -> HostResult {
    tokio::time::sleep(change.at).await;
    let (caller, target, conv_id) = {
        let state = lock(&shared);
        (
            state.callers[admin_user].clone(),
            state.callers[change.user].user_id.clone(),
            state.conv_ids[change.conv].clone(),
        )
    };
    lock(&shared).membership_started = Some(turmoil::sim_elapsed().unwrap_or_default());
    let mut core = core_client(network, &owner_core)?;
    loop {
        let outcome = if change.join {
            let request = pb::AddMembersRequest {
                caller: Some(caller.clone()),
                conv_id: conv_id.clone(),
                user_ids: vec![target.clone()],
            };
            core.add_members(request).await.map(|_| ())
        } else {
            let request = pb::RemoveMemberRequest {
                caller: Some(caller.clone()),
                conv_id: conv_id.clone(),
                user_id: target.clone(),
            };
            match core.remove_member(request).await {
                // A retry after an unknown outcome finds it already done.
                Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
                other => other.map(|_| ()),
            }
        };
        match outcome {
            Ok(()) => break,
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Internal
                ) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(format!("membership change refused: {status}").into()),
        }
    }
    lock(&shared).membership_done = Some(turmoil::sim_elapsed().unwrap_or_default());
    Ok(())
}

/// A gRPC client of the simulated core, for the setup and admin clients.
fn core_client(
    network: SharedNetwork,
    addr: &str,
) -> Result<CoreClient<tonic::transport::Channel>, tonic::transport::Error> {
    let channel = tonic_channel(network, addr, Duration::from_secs(1))?;
    Ok(CoreClient::new(channel))
}

async fn setup(network: SharedNetwork, shared: SharedState, plan: Plan) -> HostResult {
    let mut cores = Vec::new();
    for region in 0..plan.regions {
        let addr = format!("{}:{CORE_PORT}", host("core", plan.sites(), region));
        cores.push(core_client(network.clone(), &addr)?);
    }
    // Each user registers at its home region's core, which may still be
    // starting: retry the first call.
    let mut user_callers = Vec::new();
    let mut tokens = vec![String::new(); plan.devices.len()];
    for user in 0..plan.users {
        let core = &mut cores[plan.home(user)];
        let registered = loop {
            let request = pb::RegisterUserRequest {
                display_name: format!("user{user}"),
                device_label: "first".into(),
            };
            match core.register_user(request).await {
                Ok(response) => break response.into_inner(),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let user_id = registered.user.map(|u| u.user_id).unwrap_or_default();
        let first = registered
            .device
            .map(|d| (d.device_id, d.token))
            .unwrap_or_default();
        let caller = pb::Caller {
            user_id,
            device_id: first.0,
        };
        let mut first_token = Some(first.1);
        for (index, device) in plan.devices.iter().enumerate() {
            if device.user != user {
                continue;
            }
            tokens[index] = match first_token.take() {
                Some(token) => token,
                None => {
                    let request = pb::AddDeviceRequest {
                        caller: Some(caller.clone()),
                        label: device.name.clone(),
                    };
                    core.add_device(request).await?.into_inner().token
                }
            };
        }
        user_callers.push(caller);
    }
    let mut conv_ids = Vec::new();
    for conv in &plan.conversations {
        let info = match conv {
            ConvPlan::Direct(a, b) => {
                let request = pb::DirectRequest {
                    caller: Some(user_callers[*a].clone()),
                    peer_user_id: user_callers[*b].user_id.clone(),
                };
                cores[plan.home(*a)]
                    .get_or_create_direct(request)
                    .await?
                    .into_inner()
            }
            ConvPlan::Group(members) => {
                let request = pb::CreateGroupRequest {
                    caller: Some(user_callers[members[0]].clone()),
                    name: "group".into(),
                    member_user_ids: members[1..]
                        .iter()
                        .map(|m| user_callers[*m].user_id.clone())
                        .collect(),
                };
                cores[plan.home(members[0])]
                    .create_group(request)
                    .await?
                    .into_inner()
            }
        };
        conv_ids.push(info.conv_id);
    }
    // Every member's home region holds every conversation before traffic
    // starts (replication is asynchronous; a member cannot send to a group
    // its region has not heard of yet).
    for (conv, conv_id) in plan.conversations.iter().zip(&conv_ids) {
        for member in conv.members() {
            let core = &mut cores[plan.home(member)];
            loop {
                let request = pb::ConversationRequest {
                    caller: Some(user_callers[member].clone()),
                    conv_id: conv_id.clone(),
                };
                if core.get_conversation(request).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let media = upload_media(&network, &mut cores[plan.home(0)], &user_callers[0]).await?;
    let mut state = lock(&shared);
    state.media = Some(media);
    state.callers = user_callers;
    state.tokens = tokens;
    state.conv_ids = conv_ids;
    state.setup_done = true;
    Ok(())
}

/// User 0 uploads an image through a presigned PUT (a plain HTTP request
/// over the simulated network) and completes it until it is checked ready.
async fn upload_media(
    network: &SharedNetwork,
    core: &mut CoreClient<tonic::transport::Channel>,
    caller: &pb::Caller,
) -> Result<(String, String), Box<dyn std::error::Error>> {
    use sha2::Digest as _;
    let image = sim_image();
    let sha256 = hex::encode(sha2::Sha256::digest(&image));
    let slot = core
        .create_upload(pb::CreateUploadRequest {
            caller: Some(caller.clone()),
            size: image.len() as u64,
            content_type: "image/png".into(),
            sha256: sha256.clone(),
        })
        .await?
        .into_inner();
    let media_id = slot.media.map(|m| m.media_id).unwrap_or_default();
    let upload = slot.upload.unwrap_or_default();
    let presigned = meridian_media::Presigned {
        method: upload.method,
        url: upload.url,
        headers: upload
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect(),
        expires_ms: upload.expires_ms,
    };
    let (status, body) =
        meridian_media::seam_http::send_presigned(network.clone(), &presigned, image).await?;
    if status != 200 {
        return Err(format!(
            "presigned PUT answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    loop {
        let media = core
            .complete_upload(pb::MediaRequest {
                caller: Some(caller.clone()),
                media_id: media_id.clone(),
            })
            .await?
            .into_inner();
        match media.state.as_str() {
            "ready" if media.thumbnail.is_some() => return Ok((media_id, sha256)),
            "checking" => {}
            other => return Err(format!("media {media_id} ended {other}: {}", media.detail).into()),
        }
    }
}

struct DeviceTask {
    index: usize,
    seed: u64,
    plan: Plan,
    shared: SharedState,
    network: SharedNetwork,
    sends_remaining: Arc<AtomicUsize>,
}

impl DeviceTask {
    /// The gateway this device goes through.
    fn gateway(&self) -> String {
        let region = self.plan.gateway_of[self.index];
        format!(
            "{}:{GATEWAY_PORT}",
            host("gateway", self.plan.sites(), region)
        )
    }

    fn connector(&self) -> Connector {
        let network = self.network.clone();
        let gateway = self.gateway();
        Arc::new(move || {
            let (network, gateway) = (network.clone(), gateway.clone());
            Box::pin(async move {
                let io = network.connect(gateway).await?;
                Ok(Box::new(io) as Box<dyn GatewayStream>)
            })
        })
    }

    /// Sends with a `last_seen_hlc` a minute ahead of the truth: the core
    /// must refuse it (typed `clock_skew`) and store nothing.
    async fn probe_future_stamp(&self, client: &mut Client, conv_id: &str, n: usize) -> HostResult {
        let name = &self.plan.devices[self.index].name;
        let now = EPOCH_MS + turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
        let far = meridian_core::stamp_at(now + 60_000);
        loop {
            if client.session().is_none() && client.connect(8).await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let Some(session) = client.session() else {
                continue;
            };
            match session
                .send(conv_id, &format!("{name}-probe-{n}"), "probe", None, far)
                .await
            {
                Ok(sent) => {
                    return Err(format!(
                        "{name}: a stamp 60 s ahead was accepted as {}",
                        sent.msg_id
                    )
                    .into());
                }
                Err(error) if error.code() == Some(meridian_sdk::ErrorCode::NotMember) => {
                    return Ok(());
                }
                Err(error) if error.code() == Some(meridian_sdk::ErrorCode::ClockSkew) => {
                    lock(&self.shared).refused_stamps += 1;
                    return Ok(());
                }
                Err(_) => {
                    client.disconnect();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Records what arrived since the last call.
    /// Whether this device is the first device of `user`.
    fn first_device_of(&self, user: usize) -> bool {
        self.plan.devices.iter().position(|d| d.user == user) == Some(self.index)
    }

    fn absorb(&self, client: &Client, conv_of: &BTreeMap<String, usize>) {
        let mut state = lock(&self.shared);
        let outcome = state.outcomes.entry(self.index).or_default();
        outcome.wire_duplicates = client.wire_duplicates;
        outcome.chain_breaks = client.chain_breaks;
        for (conv_id, conv) in conv_of {
            for message in client.timeline(conv_id) {
                let seen = outcome.seen.entry(*conv).or_default();
                if !seen.contains_key(&message.msg_id) {
                    if !message.attachments.is_empty() {
                        outcome.attachments.insert(
                            message.msg_id.clone(),
                            message
                                .attachments
                                .iter()
                                .map(|a| (a.media_id.clone(), a.sha256.clone()))
                                .collect(),
                        );
                    }
                    seen.insert(
                        message.msg_id.clone(),
                        (message.hlc, message.origin_region.clone()),
                    );
                    outcome.arrivals.push((message.msg_id.clone(), message.hlc));
                }
            }
        }
    }

    fn complete(&self) -> bool {
        if self.sends_remaining.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let state = lock(&self.shared);
        if self.plan.membership.is_some() && state.membership_done.is_none() {
            return false;
        }
        let user = self.plan.devices[self.index].user;
        let seen = |conv: usize, msg_id: &String| {
            state
                .outcomes
                .get(&self.index)
                .and_then(|o| o.seen.get(&conv))
                .is_some_and(|s| s.contains_key(msg_id))
        };
        state.acked.iter().all(|(msg_id, acked)| {
            !state.must_receive(&self.plan, user, acked) || seen(acked.conv, msg_id)
        })
    }

    async fn run(self) -> HostResult {
        let device = self.plan.devices[self.index].clone();
        let (token, conv_ids, media) = {
            let state = lock(&self.shared);
            (
                state.tokens[self.index].clone(),
                state.conv_ids.clone(),
                state.media.clone(),
            )
        };
        let conv_of: BTreeMap<String, usize> = conv_ids
            .iter()
            .enumerate()
            .filter(|(i, _)| Shared::tracks(&self.plan, device.user, *i))
            .map(|(i, id)| (id.clone(), i))
            .collect();
        let rest = Rest::new(format!("http://{}", self.gateway()));
        // Short keepalives: simulated partitions drop data silently, and a
        // device must notice a dead connection quickly to converge.
        let keepalive = meridian_sdk::Keepalive {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(1500),
            request_timeout: Duration::from_secs(2),
        };
        let mut client = Client::new(&rest, &token, self.seed ^ (self.index as u64) << 32)
            .with_connector(self.connector())
            .with_keepalive(keepalive);
        let started = turmoil::sim_elapsed().unwrap_or_default();
        let mut offline = device.offline.iter().peekable();
        'sends: for (n, send) in device.sends.iter().enumerate() {
            tokio::time::sleep(send.delay).await;
            if let Some((start, length)) = offline.peek()
                && turmoil::sim_elapsed()
                    .unwrap_or_default()
                    .saturating_sub(started)
                    >= *start
            {
                client.disconnect();
                tokio::time::sleep(*length).await;
                offline.next();
            }
            let conv_id = &conv_ids[send.conv];
            let reply_to = if send.reply {
                client.timeline(conv_id).last().map(|m| m.msg_id.clone())
            } else {
                None
            };
            if send.future_probe {
                self.probe_future_stamp(&mut client, conv_id, n).await?;
            }
            let client_msg_id = format!("{}-{n}", device.name);
            let payload = format!("{} #{n}", device.name);
            let attempts = if send.duplicate { 2 } else { 1 };
            let started_send = turmoil::sim_elapsed().unwrap_or_default();
            let removed_here = self
                .plan
                .membership
                .as_ref()
                .is_some_and(|c| !c.join && c.user == device.user && c.conv == send.conv);
            // The first send of the first user's first device carries the
            // setup's media.
            let attach: Vec<String> = match (&media, n) {
                (Some((media_id, _)), 0) if self.first_device_of(0) => vec![media_id.clone()],
                _ => Vec::new(),
            };
            for _ in 0..attempts {
                let sent = loop {
                    match client
                        .send_with_attachments(
                            conv_id,
                            &client_msg_id,
                            &payload,
                            reply_to.as_deref(),
                            &attach,
                        )
                        .await
                    {
                        Ok(sent) => break sent,
                        Err(error) if error.is_transient() => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        // This user was removed from the group meanwhile.
                        Err(error)
                            if removed_here
                                && error.code() == Some(meridian_sdk::ErrorCode::NotMember) =>
                        {
                            continue 'sends;
                        }
                        Err(error) => {
                            return Err(format!("{}: send refused: {error}", device.name).into());
                        }
                    }
                };
                let mut state = lock(&self.shared);
                if !attach.is_empty() {
                    state.with_media.insert(sent.msg_id.clone());
                }
                let first = state.acked.insert(
                    sent.msg_id.clone(),
                    Acked {
                        conv: send.conv,
                        region: self.plan.home(device.user),
                        hlc: sent.hlc,
                        reply_to: reply_to.clone(),
                        started: started_send,
                        acked_at: turmoil::sim_elapsed().unwrap_or_default(),
                    },
                );
                if let Some(first) = first {
                    if first.hlc != sent.hlc {
                        return Err(format!(
                            "{}: a retry of {} returned a different stamp",
                            device.name, sent.msg_id
                        )
                        .into());
                    }
                    // The message dates from its first send.
                    state.acked.insert(sent.msg_id.clone(), first);
                }
            }
            // Drain what arrived meanwhile (errors just mean reconnect later).
            let _ = client.poll(Duration::from_millis(10)).await;
            self.absorb(&client, &conv_of);
            if send.receipt {
                // Receipts ride the same session under the same faults; a
                // refusal or a lost frame only loses the receipt itself.
                let newest = client
                    .timeline(conv_id)
                    .iter()
                    .rev()
                    .find(|m| m.sender_device_id != session_device(&client))
                    .map(|m| m.msg_id.clone());
                if let (Some(msg_id), Some(session)) = (newest, client.session()) {
                    let _ = session
                        .receipt(conv_id, &[msg_id], meridian_sdk::frames::ReceiptKind::Read)
                        .await;
                    lock(&self.shared).receipts_sent += 1;
                }
            }
        }
        self.sends_remaining.fetch_sub(1, Ordering::SeqCst);
        loop {
            if client.poll(Duration::from_millis(250)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.absorb(&client, &conv_of);
            let now = turmoil::sim_elapsed().unwrap_or_default();
            if now >= HEALED_BY && self.complete() {
                lock(&self.shared)
                    .outcomes
                    .entry(self.index)
                    .or_default()
                    .done_at = Some(now);
                return Ok(());
            }
        }
    }
}

/// The device id of the client's current session (empty when disconnected).
fn session_device(client: &Client) -> String {
    client.device_id().unwrap_or_default().to_string()
}

/// A message's place in display order: `(hlc, origin_region, msg_id)`.
type DisplayKey = (u64, String, String);

/// The invariants of docs/simulation.md.
fn check(seed: u64, plan: &Plan, state: &Shared, faults: usize, sim_time: Duration) -> SeedOutcome {
    let fail = |what: String| Err(format!("seed {seed}: {what}"));
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut deliveries = 0;
    let mut wire_duplicates = 0;
    let mut chain_breaks = 0;
    let mut last_done = Duration::ZERO;
    // 0. Media: a message carries exactly what its sender attached, in every
    //    member's copy in every region.
    let expected = state.media.clone().map(|m| vec![m]).unwrap_or_default();
    let mut media_copies = 0;
    for (index, device) in plan.devices.iter().enumerate() {
        let Some(outcome) = state.outcomes.get(&index) else {
            continue;
        };
        for seen in outcome.seen.values() {
            for msg_id in seen.keys() {
                let carried = outcome.attachments.get(msg_id).cloned().unwrap_or_default();
                let attached = state.with_media.contains(msg_id);
                media_copies += usize::from(attached);
                if (attached && carried != expected) || (!attached && !carried.is_empty()) {
                    return fail(format!(
                        "{} sees {msg_id} carrying {carried:?} (attached: {attached})",
                        device.name
                    ));
                }
            }
        }
    }
    // 1. Every acknowledged send reached every member device.
    for (index, device) in plan.devices.iter().enumerate() {
        let Some(outcome) = state.outcomes.get(&index) else {
            if state
                .acked
                .values()
                .any(|a| state.must_receive(plan, device.user, a))
            {
                return fail(format!("{} received nothing", device.name));
            }
            continue;
        };
        for (msg_id, acked) in &state.acked {
            let got = outcome.seen.get(&acked.conv).and_then(|s| s.get(msg_id));
            // 1b. A removed member never sees what was sent after its removal.
            if got.is_some() && state.must_not_receive(plan, device.user, acked) {
                return fail(format!("{} was removed but received {msg_id}", device.name));
            }
            if !state.must_receive(plan, device.user, acked) {
                if let Some((hlc, _)) = got
                    && *hlc != acked.hlc
                {
                    return fail(format!(
                        "{} sees {msg_id} at hlc {hlc}, sender got {}",
                        device.name, acked.hlc
                    ));
                }
                continue;
            }
            match got {
                None => {
                    return fail(format!(
                        "acknowledged {msg_id} never reached {}",
                        device.name
                    ));
                }
                // 3. Everyone sees the stamp the sender was given.
                Some((hlc, _)) if *hlc != acked.hlc => {
                    return fail(format!(
                        "{} sees {msg_id} at hlc {hlc}, sender got {}",
                        device.name, acked.hlc
                    ));
                }
                Some(_) => {}
            }
        }
        // 2. No duplicate shown: arrivals are distinct after dedupe.
        let distinct: BTreeSet<&String> = outcome.arrivals.iter().map(|(id, _)| id).collect();
        if distinct.len() != outcome.arrivals.len() {
            return fail(format!("{} shows a message twice", device.name));
        }
        deliveries += outcome.arrivals.len();
        wire_duplicates += outcome.wire_duplicates;
        chain_breaks += outcome.chain_breaks;
        last_done = last_done.max(outcome.done_at.unwrap_or_default());
        device.name.hash(&mut hasher);
        outcome.arrivals.hash(&mut hasher);
    }
    // 3. Every member of a conversation sees one order: the same messages
    // with the same stamps sort identically by (hlc, region, id).
    for (conv_index, conv) in plan.conversations.iter().enumerate() {
        let mut views: Vec<(String, Vec<DisplayKey>)> = Vec::new();
        for (index, device) in plan.devices.iter().enumerate() {
            let changing = plan
                .membership
                .as_ref()
                .is_some_and(|c| c.conv == conv_index && c.user == device.user);
            if !conv.members().contains(&device.user) || changing {
                continue;
            }
            let Some(seen) = state
                .outcomes
                .get(&index)
                .and_then(|o| o.seen.get(&conv_index))
            else {
                continue;
            };
            let mut order: Vec<DisplayKey> = seen
                .iter()
                .map(|(id, (hlc, region))| (*hlc, region.clone(), id.clone()))
                .collect();
            order.sort();
            views.push((device.name.clone(), order));
        }
        if let Some((first_name, first)) = views.first() {
            for (name, view) in &views[1..] {
                if view != first {
                    return fail(format!(
                        "conversation {conv_index}: {name} and {first_name} disagree on the order"
                    ));
                }
            }
        }
    }
    // 4. No reply precedes its parent.
    for (msg_id, acked) in &state.acked {
        if let Some(parent) = acked.reply_to.as_ref().and_then(|p| state.acked.get(p))
            && acked.hlc <= parent.hlc
        {
            return fail(format!(
                "reply {msg_id} (hlc {}) does not follow its parent (hlc {})",
                acked.hlc, parent.hlc
            ));
        }
    }
    state.acked.len().hash(&mut hasher);
    Ok(SeedReport {
        seed,
        trace_hash: hasher.finish(),
        messages: state.acked.len(),
        deliveries,
        wire_duplicates,
        chain_breaks,
        faults,
        refused_stamps: state.refused_stamps,
        media_copies,
        membership_change: state.membership_done.is_some(),
        regions: plan.regions,
        sharded: plan.sharded,
        receipts: state.receipts_sent,
        convergence: last_done.saturating_sub(HEALED_BY),
        sim_time,
    })
}
