//! The other regions' cores, as this core reaches them: which region an id
//! belongs to, and the cross-region calls a local operation needs (does a
//! user homed elsewhere exist?), with deadlines and retries.

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_proto::ErrorCode;
use meridian_proto::core as pb;
use meridian_proto::core::core_client::CoreClient;
use tonic::transport::Channel;

use crate::{Caller, CoreError};

pub use meridian_proto::region_of;

/// How long one cross-region call may take.
const CALL_DEADLINE: Duration = Duration::from_secs(2);
/// Attempts of an idempotent cross-region call.
const ATTEMPTS: u32 = 3;

/// The cores of the other regions.
#[derive(Clone, Default)]
pub struct Peers {
    cores: BTreeMap<String, CoreClient<Channel>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.cores.keys()).finish()
    }
}

impl Peers {
    /// No other regions (a single-region deployment).
    pub fn none() -> Self {
        Self::default()
    }

    /// The cores of other regions, by region name.
    pub fn new(channels: BTreeMap<String, Channel>) -> Self {
        Self {
            cores: channels
                .into_iter()
                .map(|(region, channel)| (region, CoreClient::new(channel)))
                .collect(),
        }
    }

    /// Whether `region` is a known other region.
    pub fn knows(&self, region: &str) -> bool {
        self.cores.contains_key(region)
    }

    /// The other regions' names.
    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.cores.keys().map(String::as_str)
    }

    /// Whether `user_id`, homed in the other region `region`, exists — asked
    /// of that region's core on behalf of `caller`.
    ///
    /// # Errors
    /// `not_found` for an unknown region; `unavailable` when the region does
    /// not answer within three attempts of two seconds.
    pub async fn user_exists(
        &self,
        region: &str,
        caller: &Caller,
        user_id: &str,
    ) -> Result<bool, CoreError> {
        let Some(core) = self.cores.get(region) else {
            return Ok(false);
        };
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            let mut request = tonic::Request::new(pb::GetUserRequest {
                caller: Some(pb::Caller {
                    user_id: caller.user_id.clone(),
                    device_id: caller.device_id.clone(),
                }),
                user_id: user_id.to_string(),
            });
            request.set_timeout(CALL_DEADLINE);
            match core.clone().get_user(request).await {
                Ok(_) => return Ok(true),
                Err(status) => match ErrorCode::from_status(&status) {
                    ErrorCode::NotFound => return Ok(false),
                    ErrorCode::Unavailable => {
                        last = Some(status);
                        tokio::time::sleep(Duration::from_millis(100) * (attempt + 1)).await;
                    }
                    code => return Err(CoreError::refused(code, status.message().to_string())),
                },
            }
        }
        Err(CoreError::refused(
            ErrorCode::Unavailable,
            format!(
                "region {region} did not answer: {}",
                last.map(|s| s.message().to_string()).unwrap_or_default()
            ),
        ))
    }

    /// Makes `region`'s core hold the direct conversation of `user_a` and
    /// `user_b` (idempotent).
    ///
    /// # Errors
    /// `unavailable` when the region does not answer within three attempts.
    pub async fn ensure_direct(
        &self,
        region: &str,
        user_a: &str,
        user_b: &str,
        created_ms: u64,
    ) -> Result<(), CoreError> {
        let Some(core) = self.cores.get(region) else {
            return Err(CoreError::refused(
                ErrorCode::NotFound,
                format!("no region {region}"),
            ));
        };
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            let mut request = tonic::Request::new(pb::EnsureDirectRequest {
                user_a: user_a.to_string(),
                user_b: user_b.to_string(),
                created_ms,
            });
            request.set_timeout(CALL_DEADLINE);
            match core.clone().ensure_direct(request).await {
                Ok(_) => return Ok(()),
                Err(status) if ErrorCode::from_status(&status) == ErrorCode::Unavailable => {
                    last = Some(status);
                    tokio::time::sleep(Duration::from_millis(100) * (attempt + 1)).await;
                }
                Err(status) => {
                    return Err(CoreError::refused(
                        ErrorCode::from_status(&status),
                        status.message().to_string(),
                    ));
                }
            }
        }
        Err(CoreError::refused(
            ErrorCode::Unavailable,
            format!(
                "region {region} did not answer: {}",
                last.map(|s| s.message().to_string()).unwrap_or_default()
            ),
        ))
    }
}
