//! A seed's simulated hosts: each region's object storage, core and
//! gateway, and the setup client that registers the users and their
//! devices, creates the conversations and uploads the setup's media.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use meridian_identity::pki::LocalCa;
use meridian_identity::{AddressIdentities, Identity, ServiceCredentials};
use meridian_region::config::{
    Addresses, ClockConfig, Deployment, GeoDnsConfig, LogConfig, RegionConfig, StoreConfig,
};
use meridian_region::media::{Bucket, EmbeddedS3, MemoryS3, S3Credentials, S3Target};
use meridian_region::plan::{GatewayPlan, Plan as DeploymentPlan, PlanOptions, SitePlan};
use meridian_region::{
    CoreOptions, GatewayOptions, HealthConfig, LinkConfig, MediaDeps, MemoryEngine,
    RegionCredentials, StoreChoice, start_core, start_gateway,
};
use meridian_rpc::core::core_client::CoreClient;
use meridian_rpc::core::{self as pb};
use meridian_seams::net::{SharedNetwork, tonic_channel};
use meridian_seams::{Offload, Rng, SharedClock};
use meridian_wire::sites::region_of_site;

use crate::SimClock;
use crate::invariants::{SharedState, lock};
use crate::workload::{ConvPlan, Plan, Sites, host, region_name, site_host};

pub(crate) const EPOCH_MS: u64 = 1_800_000_000_000;
pub(crate) const CORE_PORT: u16 = 7070;
pub(crate) const GATEWAY_PORT: u16 = 8080;
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
        credentials: S3Credentials::fixed(S3_KEY.0, S3_KEY.1),
    }
}

fn any_addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
}

pub(crate) type HostResult = Result<(), Box<dyn std::error::Error>>;

/// Whether `seed`'s delivery watches the inbox head (FoundationDB's way)
/// instead of following the memory engine's inbox feed: one seed in five,
/// chosen by the seed alone (no draw from its RNG), so every other seed —
/// the pinned regression seeds among them — replays as before.
pub fn watches_inbox_head(seed: u64) -> bool {
    seed % 5 == 4
}

/// Whether `seed`'s cores admit sessions on a tight budget (2 attaches a
/// second, one backlog read at a time, two waiting), so that reconnects
/// after crashes and partitions are shed with `go_away` `busy` and the
/// clients' obeying it is checked against every invariant.
pub fn tight_admission(seed: u64) -> bool {
    seed % 7 == 3
}

/// Whether `seed`'s cores keep messages for [`SHORT_RETENTION`] only, with
/// the retention sweep running every [`SHORT_SWEEP`]: devices offline or
/// cut off longer than that lose entries and must be told `gap` for each
/// one, and nobody else may be.
///
/// One seed in six, chosen by the seed alone, except the regression seeds
/// pinned before retention joined (5 and 851), which keep the schedules
/// that found their bugs.
pub fn short_retention(seed: u64) -> bool {
    seed % 6 == 5 && !matches!(seed, 5 | 851)
}

/// Retention in [`short_retention`] seeds: shorter than the longest
/// offline spell and partition, so some entries expire undelivered.
pub(crate) const SHORT_RETENTION: Duration = Duration::from_millis(1_500);
/// The sweep interval of those seeds.
pub(crate) const SHORT_SWEEP: Duration = Duration::from_millis(500);

/// The turmoil simulation of `seed`, before any host is added.
pub(crate) fn simulation(seed: u64) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .simulation_duration(Duration::from_secs(120))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(Duration::from_millis(5))
        .rng_seed(seed)
        .build()
}

/// The gRPC address of site `region`'s core.
pub(crate) fn core_addr(sites: Sites, region: usize) -> String {
    format!("{}:{CORE_PORT}", host("core", sites, region))
}

/// The seed's sites as a deployment, planned as the binary plans one (with
/// its default options): each region as its file would describe it, a
/// sharded us-east in two shards. What the simulation simulates replaces
/// the plan's choices where the hosts are added: the store, the addresses
/// (every site's core and gateway are hosts of their own, reached by name)
/// and the timings.
fn deployment_plan(sites: Sites) -> DeploymentPlan {
    let topology = sites.topology();
    let names: BTreeSet<&str> = (0..sites.count)
        .map(|site| region_of_site(region_name(sites, site)))
        .collect();
    let addresses = Addresses {
        gateway: any_addr(GATEWAY_PORT).to_string(),
        core: any_addr(CORE_PORT).to_string(),
        s3: None,
    };
    let regions = names.into_iter().map(|name| RegionConfig {
        name: name.to_string(),
        listen: addresses.clone(),
        advertise: addresses.clone(),
        local: addresses.clone(),
        peers: None,
        store: StoreConfig {
            shards: Some(topology.shards_of(name)),
            ..StoreConfig::default()
        },
        log: LogConfig::default(),
        s3: None,
        geodns: GeoDnsConfig::default(),
        clock: ClockConfig::default(),
        tls: None,
        edge: Default::default(),
        admission: Default::default(),
        aws: None,
    });
    DeploymentPlan::new(Deployment::new(regions), PlanOptions::default())
}

/// `planned`'s sites, each at its simulated core's address.
fn at_simulated_cores(sites: Sites, planned: BTreeMap<String, String>) -> BTreeMap<String, String> {
    planned
        .into_keys()
        .map(|site| {
            let addr = format!("{}:{CORE_PORT}", site_host("core", sites, &site));
            (site, addr)
        })
        .collect()
}

/// Whether the simulated regions speak mutual TLS to each other. Not yet:
/// rustls handshakes over turmoil's TCP are not deterministic (seeds
/// 100011 and 100038 of `meridian sim --check-determinism` each gave two
/// traces), so the simulation runs cores as `--insecure-core` does, their
/// authorization layer passing every caller. Mutual TLS and the access
/// rules are tested end to end (`tests/e2e/trust.rs`).
const SIMULATED_MTLS: bool = false;

/// The seed's service identities, issued by one CA made for the seed: each
/// region's core and gateway, as `meridian dev` runs them. The setup and
/// admin clients call cores as the first region's gateway. Used only with
/// [`SIMULATED_MTLS`].
pub(crate) struct SimIdentities {
    regions: BTreeMap<String, RegionCredentials>,
    client: ServiceCredentials,
}

impl SimIdentities {
    /// What the setup and admin clients call cores as.
    pub(crate) fn client(&self) -> &ServiceCredentials {
        &self.client
    }

    /// Issues every region's identities.
    ///
    /// # Errors
    /// When the CA cannot issue (key generation failing).
    pub(crate) fn issue(sites: Sites) -> Result<Self, String> {
        let ca = LocalCa::generate().map_err(|e| e.to_string())?;
        let mut regions = BTreeMap::new();
        for site in 0..sites.count {
            let region = region_of_site(region_name(sites, site));
            if regions.contains_key(region) {
                continue;
            }
            let issue = |identity: Identity| ca.issue(&identity).map_err(|e| e.to_string());
            regions.insert(
                region.to_string(),
                RegionCredentials {
                    core: issue(Identity::core(region))?,
                    gateway: issue(Identity::gateway(region))?,
                },
            );
        }
        let client = regions
            .values()
            .next()
            .map(|region| region.gateway.clone())
            .ok_or("a seed without regions")?;
        Ok(Self { regions, client })
    }

    /// The credentials of `site`'s region.
    fn of_site(&self, site: &str) -> Option<&RegionCredentials> {
        self.regions.get(region_of_site(site))
    }
}

/// A seed's regions, as their hosts are built.
pub(crate) struct Regions<'a> {
    pub(crate) seed: u64,
    pub(crate) sites: Sites,
    pub(crate) network: &'a SharedNetwork,
    /// The gateways' clock.
    pub(crate) clock: &'a SharedClock,
    /// Each region's core clock, which clock-jump faults move.
    pub(crate) core_clocks: &'a [SimClock],
    /// Every region's service identities.
    pub(crate) identities: &'a SimIdentities,
}

impl Regions<'_> {
    /// Adds every region's hosts to `sim`: the object storage first, then
    /// each region's core and gateway.
    ///
    /// # Errors
    /// When the seed's sites cannot be planned.
    /// Answers each site's store engine, by site index (for the faults
    /// that fail it).
    pub(crate) fn start(&self, sim: &mut turmoil::Sim<'_>) -> Result<Vec<MemoryEngine>, String> {
        let planned = self.plan()?;
        let media_deps = self.media_deps();
        self.add_object_storage(sim);
        let mut engines = Vec::new();
        for ((region, region_clock), (site, gateway)) in
            self.core_clocks.iter().enumerate().zip(planned)
        {
            engines.push(self.add_core(sim, region, region_clock, &media_deps, site));
            self.add_gateway(sim, region, gateway);
        }
        Ok(engines)
    }

    /// What each site's core and gateway run with, by site index: the plan
    /// of [`deployment_plan`], resolved before any host is added.
    fn plan(&self) -> Result<Vec<(SitePlan, GatewayPlan)>, String> {
        let plan = deployment_plan(self.sites);
        (0..self.sites.count)
            .map(|region| {
                let name = region_name(self.sites, region);
                let site = plan
                    .site_named(name)
                    .ok_or_else(|| format!("no site {name} in the plan"))?;
                let planned = plan.site_plan(&site).map_err(|e| format!("{e:#}"))?;
                let gateway = plan
                    .gateway_plan(site.region)
                    .map_err(|e| format!("{e:#}"))?;
                Ok((planned, gateway))
            })
            .collect()
    }

    /// Every region's bucket, as the cores reach it.
    fn media_deps(&self) -> MediaDeps {
        let (sites, regions, network) = (self.sites, self.sites.count, self.network);
        let signing_clock: SharedClock = Arc::new(SimClock::new(EPOCH_MS, S3_SIGNING_AHEAD_MS));
        MediaDeps {
            buckets: (0..regions)
                .filter(|r| bucket_site(sites, *r) == *r)
                .map(|r| {
                    (
                        region_of_site(region_name(sites, r)).to_string(),
                        Bucket::new(&s3_target(sites, r), signing_clock.clone(), network),
                    )
                })
                .collect(),
            offload: Offload::Inline,
        }
    }

    /// Each region's object storage: an in-memory S3 server on a host of its
    /// own (outside the core's, so a core crash keeps the objects).
    fn add_object_storage(&self, sim: &mut turmoil::Sim<'_>) {
        let (sites, regions, network) = (self.sites, self.sites.count, self.network);
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
                    let _server = EmbeddedS3::start_in_memory(
                        backend,
                        listener,
                        S3_KEY.0,
                        S3_KEY.1,
                        u32::MAX,
                    )?;
                    std::future::pending::<()>().await;
                    Ok(())
                }
            });
        }
    }

    /// Who each host is, for cores that know their callers by address
    /// (without TLS): every site's gateway and core, and the setup and
    /// admin clients, which call cores as [`SimIdentities::client`].
    fn callers_by_host(&self) -> AddressIdentities {
        let sites = self.sites;
        let mut by_host = BTreeMap::new();
        for site in 0..sites.count {
            let name = region_name(sites, site);
            let region = region_of_site(name);
            by_host.insert(site_host("gateway", sites, name), Identity::gateway(region));
            by_host.insert(site_host("core", sites, name), Identity::core(region));
        }
        let client = self.identities.client().identity().clone();
        by_host.insert("setup".to_string(), client.clone());
        by_host.insert("admin".to_string(), client);
        Arc::new(move |address| {
            turmoil::reverse_lookup(address).and_then(|host| by_host.get(&host).cloned())
        })
    }

    /// Adds site `region`'s core as `planned`, over an engine that outlives
    /// its crashes (answered).
    fn add_core(
        &self,
        sim: &mut turmoil::Sim<'_>,
        region: usize,
        region_clock: &SimClock,
        media_deps: &MediaDeps,
        mut planned: SitePlan,
    ) -> MemoryEngine {
        let (seed, sites, network) = (self.seed, self.sites, self.network);
        let tls = self
            .identities
            .of_site(&planned.name)
            .map(|region| region.core.clone())
            .filter(|_| SIMULATED_MTLS);
        let callers = (!SIMULATED_MTLS).then(|| self.callers_by_host());
        // A region's engine lives outside its host, so a crash keeps what
        // was committed and loses what was not: it replaces the plan's
        // store.
        let engine = MemoryEngine::new();
        planned.store = StoreChoice::Memory(engine.clone());
        planned.peers = at_simulated_cores(sites, planned.peers);
        let sweep = short_retention(seed);
        if sweep {
            planned.core.retention = SHORT_RETENTION;
            planned.core.sweep_interval = SHORT_SWEEP;
        } else {
            planned.core.sweep_interval = Duration::from_secs(3600);
        }
        planned.core.follow_inbox_feed = !watches_inbox_head(seed);
        if tight_admission(seed) {
            planned.core.attaches_per_second = 2.0;
            planned.core.sync_slots = 1;
            planned.core.max_waiting_syncs = 2;
        }
        let boots = Arc::new(AtomicU64::new(0));
        let (core_network, boots) = (network.clone(), boots.clone());
        let engine_at_boot = engine.clone();
        let core_clock: SharedClock = Arc::new(region_clock.clone());
        let core_media = media_deps.clone();
        sim.host(host("core", sites, region), move || {
            let (network, clock, planned, media, tls, callers) = (
                core_network.clone(),
                core_clock.clone(),
                planned.clone(),
                core_media.clone(),
                tls.clone(),
                callers.clone(),
            );
            let boot = boots.fetch_add(1, Ordering::SeqCst);
            if boot > 0 {
                // A restart follows a crash, taken as the machine's: the
                // writes that relaxed their durability and were not yet
                // taken to the disk by a later one are lost.
                engine_at_boot.lose_unsynced();
            }
            async move {
                // Short link timings: simulated partitions drop data
                // silently, and every link must notice and resume.
                let link = LinkConfig {
                    stall_timeout: Duration::from_secs(3),
                    keepalive: Duration::from_secs(1),
                    min_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_millis(500),
                    refused_retry: Duration::from_millis(200),
                    ..Default::default()
                };
                let _core = start_core(CoreOptions {
                    config: planned.core,
                    store: planned.store,
                    // Each site is a host of its own: no shifted ports.
                    listen: any_addr(CORE_PORT).into(),
                    network,
                    clock,
                    rng: Rng::seeded(
                        seed.wrapping_mul(31)
                            .wrapping_add(boot)
                            .wrapping_add((region as u64) << 40),
                    ),
                    sweep,
                    peers: planned.peers,
                    log: planned.log,
                    link,
                    media,
                    tls,
                    callers_by_address: callers,
                    // A failed store's core is crashed and restarted by
                    // the run's supervisor (`run.rs`), not stopped by itself.
                    health: HealthConfig {
                        stop_on_failure: false,
                        ..HealthConfig::default()
                    },
                })
                .await?;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        engine
    }

    /// Adds site `region`'s gateway as `planned`: it reaches every site's
    /// core.
    fn add_gateway(&self, sim: &mut turmoil::Sim<'_>, region: usize, mut planned: GatewayPlan) {
        let sites = self.sites;
        let tls = self
            .identities
            .of_site(region_name(sites, region))
            .map(|region| region.gateway.clone())
            .filter(|_| SIMULATED_MTLS);
        planned.cores = at_simulated_cores(sites, planned.cores);
        let config = &mut planned.config;
        config.connects_per_minute = 6_000.0;
        config.sends_per_second = 1_000.0;
        // Short liveness periods: partitions drop data silently, and
        // every dead connection must be noticed for a seed to converge.
        config.ping_interval = Duration::from_millis(500);
        config.idle_timeout = Duration::from_secs(2);
        config.core_keepalive = Duration::from_secs(1);
        let (network, clock) = (self.network.clone(), self.clock.clone());
        sim.host(host("gateway", sites, region), move || {
            let (network, clock, planned, tls) =
                (network.clone(), clock.clone(), planned.clone(), tls.clone());
            async move {
                let _gateway = start_gateway(GatewayOptions {
                    config: planned.config,
                    listen: any_addr(GATEWAY_PORT),
                    cores: planned.cores,
                    network,
                    clock,
                    metrics: None,
                    tls,
                    edge_tls: None,
                })
                .await?;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }
}

/// A gRPC client of site `site`'s simulated core, for the setup and admin
/// clients, calling as `caller`.
pub(crate) fn core_client(
    network: SharedNetwork,
    sites: Sites,
    site: usize,
    caller: &ServiceCredentials,
) -> Result<CoreClient<tonic::transport::Channel>, tonic::transport::Error> {
    let server = Identity::core(region_of_site(region_name(sites, site)));
    let channel = tonic_channel(
        network,
        &core_addr(sites, site),
        Duration::from_secs(1),
        SIMULATED_MTLS.then(|| caller.client_tls(&server)),
    )?;
    Ok(CoreClient::new(channel))
}

/// The setup client: registers every user and device at its home region's
/// core, creates the conversations, waits until each member's home region
/// holds them, uploads the setup's media, then marks the setup done.
pub(crate) async fn setup(
    network: SharedNetwork,
    shared: SharedState,
    plan: Plan,
    caller: ServiceCredentials,
) -> HostResult {
    let mut cores = Vec::new();
    for region in 0..plan.regions {
        cores.push(core_client(network.clone(), plan.sites(), region, &caller)?);
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
