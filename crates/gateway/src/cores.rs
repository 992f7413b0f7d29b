//! The cores this gateway forwards to: one per site (a region, or one shard
//! of a sharded region). A request goes to the core of the site its subject
//! belongs to — a caller's home site (from the user or device id and the
//! deployment's shard counts), a group's owner site — which is a local core
//! on the fast path and another region's otherwise. Each site has a unary
//! client (every call with a deadline) and one multiplexed session stream
//! ([`Mux`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meridian_rpc::core::core_client::CoreClient;
use meridian_seams::Backoff;
use meridian_wire::ErrorCode;
use meridian_wire::sites::{Topology, region_of_site};
use tonic::transport::Channel;

use crate::ApiError;
use crate::mux::Mux;

/// Channels to one region's core.
#[derive(Debug, Clone)]
pub struct CoreChannels {
    /// For unary calls: carries a per-call deadline.
    pub unary: Channel,
    /// For the long-lived session stream: no deadline.
    pub session: Channel,
}

/// One region's core as the gateway uses it.
pub(crate) struct RegionCore {
    pub(crate) client: CoreClient<Channel>,
    pub(crate) mux: Mux,
}

/// Every site's core, by site name.
pub(crate) struct Cores {
    local: String,
    topology: Topology,
    by_region: BTreeMap<String, RegionCore>,
    /// Spreads registrations over a sharded region's sites.
    next_registration: AtomicUsize,
}

fn client(channel: Channel) -> CoreClient<Channel> {
    CoreClient::new(channel)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(1024 * 1024)
}

impl Cores {
    /// Starts a session stream to every site's core.
    pub(crate) fn start(
        local: &str,
        topology: Topology,
        channels: BTreeMap<String, CoreChannels>,
    ) -> Self {
        let by_region = channels
            .into_iter()
            .map(|(region, channels)| {
                let core = RegionCore {
                    client: client(channels.unary),
                    mux: Mux::start(client(channels.session), region.clone()),
                };
                (region, core)
            })
            .collect();
        Self {
            local: local.to_string(),
            topology,
            by_region,
            next_registration: AtomicUsize::new(0),
        }
    }

    /// The core of `site`.
    fn site(&self, site: &str) -> Result<&RegionCore, ApiError> {
        self.by_region.get(site).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "no region `{}` is known to this gateway",
                    region_of_site(site)
                ),
            )
        })
    }

    /// A core of `region` to register a user with: its only site, or the
    /// next of its shards in turn (the core draws an id that hashes to it).
    pub(crate) fn for_registration(&self, region: &str) -> Result<&RegionCore, ApiError> {
        if region_of_site(region) != region {
            // A site's name is not a region a client may ask for.
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no region `{region}` is known to this gateway"),
            ));
        }
        let sites = self.topology.sites_of(region);
        let turn = self.next_registration.fetch_add(1, Ordering::Relaxed);
        self.site(&sites[turn % sites.len()])
    }

    /// A core of this gateway's own region, for calls about no particular
    /// id.
    pub(crate) fn local(&self) -> Result<&RegionCore, ApiError> {
        self.for_registration(&self.local)
    }

    /// The core of the site `id` (a user, device or group) belongs to; a
    /// local core for ids without a region.
    pub(crate) fn of(&self, id: &str) -> Result<&RegionCore, ApiError> {
        match self.topology.site_of(id) {
            Some(site) => self.site(&site),
            None => self.local(),
        }
    }

    /// The core that changes conversation `conv_id`: its owner site for a
    /// group, the caller's home site for an id without a region (a direct
    /// conversation, which that site holds and refuses to change as a
    /// group).
    pub(crate) fn of_conversation(
        &self,
        conv_id: &str,
        caller_user_id: &str,
    ) -> Result<&RegionCore, ApiError> {
        match self.topology.site_of(conv_id) {
            Some(site) => self.site(&site),
            None => self.of(caller_user_id),
        }
    }

    /// The core that authenticates `token` (`"{device_id}.{secret}"`).
    pub(crate) fn of_token(&self, token: &str) -> Result<&RegionCore, ApiError> {
        let device = token.split_once('.').map_or(token, |(device, _)| device);
        match self.topology.site_of(device) {
            Some(site) => self
                .site(&site)
                .map_err(|_| ApiError::new(ErrorCode::InvalidToken, "the token is not valid")),
            None => self.local(),
        }
    }

    /// Whether every site of this gateway's region has its session stream.
    pub(crate) fn local_connected(&self) -> bool {
        self.topology.sites_of(&self.local).iter().all(|site| {
            self.by_region
                .get(site)
                .is_some_and(|c| c.mux.is_connected())
        })
    }

    /// Site name → whether its session stream is up.
    pub(crate) fn connected(&self) -> BTreeMap<&str, bool> {
        self.by_region
            .iter()
            .map(|(region, core)| (region.as_str(), core.mux.is_connected()))
            .collect()
    }
}

/// Runs an idempotent call, retrying twice (after 50 and 100 ms) when the
/// core is unavailable — a region's core restarting or a link blip.
pub(crate) async fn idempotent<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(100));
    for _ in 0..2 {
        match call().await {
            Err(status) if status.code() == tonic::Code::Unavailable => backoff.wait().await,
            result => return result,
        }
    }
    call().await
}
