//! Authenticating a device token, REST and WebSocket alike: the token's
//! home core says who it is. What the gateway keeps about failures makes
//! guessing cost no core work: a token refused as invalid or revoked is
//! answered from memory for a minute, and an address with too many failed
//! attempts waits before anything reaches a core.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use meridian_rpc::core as pb;
use meridian_seams::SharedClock;
use meridian_wire::ErrorCode;

use crate::{ApiError, AppState};

/// How long a refused token is answered from memory.
const BAD_TOKEN_TTL: Duration = Duration::from_secs(60);
/// Refused tokens remembered at most (then the memory starts over).
const BAD_TOKENS_KEPT: usize = 100_000;

/// Tokens the cores refused lately, by a keyed hash of the token.
pub(crate) struct BadTokens {
    clock: SharedClock,
    hasher: std::collections::hash_map::RandomState,
    refused: Mutex<HashMap<u64, (ErrorCode, Duration)>>,
}

impl BadTokens {
    pub(crate) fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            hasher: std::collections::hash_map::RandomState::new(),
            refused: Mutex::default(),
        }
    }

    fn key(&self, token: &str) -> u64 {
        self.hasher.hash_one(token)
    }

    /// Why `token` was refused, if it was within the last minute.
    fn get(&self, token: &str) -> Option<ErrorCode> {
        let now = self.clock.monotonic();
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused
            .get(&self.key(token))
            .filter(|(_, at)| now.saturating_sub(*at) < BAD_TOKEN_TTL)
            .map(|(code, _)| *code)
    }

    fn insert(&self, token: &str, code: ErrorCode) {
        let now = self.clock.monotonic();
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.len() >= BAD_TOKENS_KEPT {
            refused.retain(|_, (_, at)| now.saturating_sub(*at) < BAD_TOKEN_TTL);
            if refused.len() >= BAD_TOKENS_KEPT {
                refused.clear();
            }
        }
        refused.insert(self.key(token), (code, now));
    }
}

/// A refusal that counts against the address: the token is wrong.
fn is_bad_token(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InvalidToken | ErrorCode::TokenRevoked | ErrorCode::WrongRegion
    )
}

/// Who `token` belongs to, asked from `client`.
///
/// # Errors
/// `rate_limited` (with the wait) for an address past its failed
/// attempts; `invalid_token`, `token_revoked`; `unavailable`.
pub(crate) async fn authenticate(
    state: &AppState,
    client: IpAddr,
    token: &str,
) -> Result<pb::Caller, ApiError> {
    let address = client.to_string();
    let failures = &state.limits.auth_failures;
    if let Err(wait) = failures.peek(&address, 1.0) {
        metrics::counter!("meridian_gateway_rate_limited_total", "what" => "auth").increment(1);
        return Err(ApiError::limited(
            "too many failed authentications from this address; retry later",
            wait,
        ));
    }
    let failed = |error: ApiError| {
        if is_bad_token(error.code) {
            let _ = failures.take(&address, 1.0);
            state.bad_tokens.insert(token, error.code);
        }
        error
    };
    if let Some(code) = state.bad_tokens.get(token) {
        let _ = failures.take(&address, 1.0);
        metrics::counter!("meridian_gateway_bad_token_hits_total").increment(1);
        return Err(ApiError::new(code, "this token was refused; sign in again"));
    }
    let core = state.cores.of_token(token).map_err(failed)?.client.clone();
    crate::cores::idempotent(|| {
        let mut core = core.clone();
        let token = token.to_string();
        async move { core.authenticate(pb::AuthenticateRequest { token }).await }
    })
    .await
    .map(tonic::Response::into_inner)
    .map_err(|status| failed(ApiError::from(status)))
}
