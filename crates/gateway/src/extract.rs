//! The REST handlers' extractors: the shared state, typed JSON bodies and
//! the authenticated caller.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use meridian_rpc::core as pb;
use meridian_wire::ErrorCode;

use crate::{ApiError, AppState};

pub(crate) type Shared = State<Arc<AppState>>;

/// A JSON body whose rejections are typed errors.
pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match &rejection {
                JsonRejection::JsonSyntaxError(_) => {
                    ApiError::new(ErrorCode::InvalidJson, rejection.body_text())
                }
                JsonRejection::BytesRejection(_)
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    ApiError::new(ErrorCode::PayloadTooLarge, "request body too large")
                }
                _ => ApiError::new(ErrorCode::BadRequest, rejection.body_text()),
            }),
        }
    }
}

/// The authenticated caller, from `Authorization: Bearer <token>`.
pub(crate) struct Authed(pub pb::Caller);

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthenticated,
                    "missing Authorization: Bearer <token>",
                )
            })?;
        let core = state.cores.of_token(token.trim())?.client.clone();
        let caller = crate::cores::idempotent(|| {
            let mut core = core.clone();
            let token = token.trim().to_string();
            async move { core.authenticate(pb::AuthenticateRequest { token }).await }
        })
        .await?
        .into_inner();
        if !state.limits.requests.allow(&caller.device_id) {
            metrics::counter!("meridian_gateway_rate_limited_total", "what" => "rest").increment(1);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "too many requests; retry later",
            ));
        }
        Ok(Self(caller))
    }
}
