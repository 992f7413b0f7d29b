//! The other regions' cores, as this core reaches them: which region an id
//! belongs to, and the cross-region calls a local operation needs (does a
//! user homed elsewhere exist?), with deadlines and retries.

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_rpc::ErrorCodeExt;
use meridian_rpc::core as pb;
use meridian_rpc::core::core_client::CoreClient;
use meridian_wire::ErrorCode;
use tonic::transport::Channel;

use crate::{Caller, CoreError};

pub use meridian_wire::region_of;

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

    /// Calls `region`'s core with `call` (each attempt with a 2 s deadline),
    /// retrying up to three times while it is unavailable.
    ///
    /// # Errors
    /// `not_found` for an unknown region; the core's own refusal;
    /// `unavailable` when it does not answer in three attempts.
    async fn call<T, F, Fut>(&self, region: &str, mut call: F) -> Result<T, CoreError>
    where
        F: FnMut(CoreClient<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let Some(core) = self.cores.get(region) else {
            return Err(CoreError::refused(
                ErrorCode::NotFound,
                format!("no region {region}"),
            ));
        };
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            match call(core.clone(), CALL_DEADLINE).await {
                Ok(response) => return Ok(response.into_inner()),
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

    /// Whether `user_id`, homed in the other region `region`, exists — asked
    /// of that region's core on behalf of `caller`.
    ///
    /// # Errors
    /// `unavailable` when the region does not answer within three attempts
    /// of two seconds. An unknown region has no users: `Ok(false)`.
    pub async fn user_exists(
        &self,
        region: &str,
        caller: &Caller,
        user_id: &str,
    ) -> Result<bool, CoreError> {
        if !self.knows(region) {
            return Ok(false);
        }
        let asked = self
            .call(region, |mut core, deadline| {
                let mut request = tonic::Request::new(pb::GetUserRequest {
                    caller: Some(pb::Caller {
                        user_id: caller.user_id.clone(),
                        device_id: caller.device_id.clone(),
                    }),
                    user_id: user_id.to_string(),
                });
                request.set_timeout(deadline);
                async move { core.get_user(request).await }
            })
            .await;
        match asked {
            Ok(_) => Ok(true),
            Err(error) if error.code() == ErrorCode::NotFound => Ok(false),
            Err(error) => Err(error),
        }
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
        self.call(region, |mut core, deadline| {
            let mut request = tonic::Request::new(pb::EnsureDirectRequest {
                user_a: user_a.to_string(),
                user_b: user_b.to_string(),
                created_ms,
            });
            request.set_timeout(deadline);
            async move { core.ensure_direct(request).await }
        })
        .await
        .map(|_| ())
    }
}
