//! The cores this gateway forwards to: one per region. A request goes to
//! the core of the region its subject belongs to — a caller's home region
//! (read from the user or device id), a group's owner region — which is the
//! local core on the fast path and another region's core otherwise. Each
//! region has a unary client (every call with a deadline) and one
//! multiplexed session stream ([`Mux`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use meridian_proto::core::core_client::CoreClient;
use meridian_proto::{ErrorCode, region_of};
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

/// Every region's core, by region name.
pub(crate) struct Cores {
    local: String,
    by_region: BTreeMap<String, RegionCore>,
}

fn client(channel: Channel) -> CoreClient<Channel> {
    CoreClient::new(channel)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(1024 * 1024)
}

impl Cores {
    /// Starts a session stream to every region's core.
    pub(crate) fn start(local: &str, channels: BTreeMap<String, CoreChannels>) -> Self {
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
            by_region,
        }
    }

    /// The core of `region`.
    pub(crate) fn region(&self, region: &str) -> Result<&RegionCore, ApiError> {
        self.by_region.get(region).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no region `{region}` is known to this gateway"),
            )
        })
    }

    /// This gateway's own region's core.
    pub(crate) fn local(&self) -> Result<&RegionCore, ApiError> {
        self.region(&self.local)
    }

    /// The core of the region `id` (a user, device or group) belongs to;
    /// the local core for ids without a region.
    pub(crate) fn of(&self, id: &str) -> Result<&RegionCore, ApiError> {
        match region_of(id) {
            Some(region) => self.region(region),
            None => self.local(),
        }
    }

    /// The core that authenticates `token` (`"{device_id}.{secret}"`).
    pub(crate) fn of_token(&self, token: &str) -> Result<&RegionCore, ApiError> {
        let device = token.split_once('.').map_or(token, |(device, _)| device);
        match region_of(device) {
            Some(region) => self
                .region(region)
                .map_err(|_| ApiError::new(ErrorCode::InvalidToken, "the token is not valid")),
            None => self.local(),
        }
    }

    /// Region name → whether its session stream is up.
    pub(crate) fn connected(&self) -> BTreeMap<&str, bool> {
        self.by_region
            .iter()
            .map(|(region, core)| (region.as_str(), core.mux.is_connected()))
            .collect()
    }

    /// This gateway's region.
    pub(crate) fn local_region(&self) -> &str {
        &self.local
    }
}

/// Runs an idempotent call, retrying twice (after 50 and 100 ms) when the
/// core is unavailable — a region's core restarting or a link blip.
pub(crate) async fn idempotent<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut delay = Duration::from_millis(50);
    for _ in 0..2 {
        match call().await {
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            result => return result,
        }
    }
    call().await
}
