//! The REST handlers' extractors: the shared state, typed JSON bodies and
//! the authenticated caller.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use meridian_rpc::core as pb;
use meridian_seams::net::{Cidr, PeerAddr, is_trusted};
use meridian_wire::ErrorCode;
use meridian_wire::limits::DEFAULT_PAGE;

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

/// Query parameters whose rejections are typed errors.
pub(crate) struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(ErrorCode::BadRequest, rejection.body_text())),
        }
    }
}

/// Path parameters whose rejections (a segment that is not UTF-8 once
/// percent-decoded) are typed errors.
pub(crate) struct Ids<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for Ids<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(ErrorCode::BadRequest, rejection.body_text())),
        }
    }
}

/// A page size given as `limit`: 1 to `max`, [`DEFAULT_PAGE`] when left
/// out.
///
/// # Errors
/// `bad_request` outside that range.
pub(crate) fn page_limit(limit: Option<u32>, max: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE.min(max)),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(limit) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("limit must be 1-{max}, not {limit}"),
        )),
    }
}

/// An optional id from a query: absent, or an id (an empty one is not
/// "absent", it is wrong).
///
/// # Errors
/// `bad_request` for a value that is not an id.
pub(crate) fn optional_id(name: &str, value: Option<String>) -> Result<String, ApiError> {
    match value {
        None => Ok(String::new()),
        Some(id) if meridian_wire::limits::is_id(&id) => Ok(id),
        Some(_) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{name} must be 1-128 characters of [A-Za-z0-9._@:-]"),
        )),
    }
}

/// The client's address, which per-address limits count: the peer's,
/// or, when the peer is a trusted proxy, the last address in
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub(crate) struct ClientIp(pub IpAddr);

impl FromRequestParts<Arc<AppState>> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<PeerAddr>>()
            .map(|ConnectInfo(PeerAddr(peer))| peer.ip())
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "no peer address"))?;
        Ok(Self(client_ip(
            &state.config.trusted_proxies,
            peer,
            &parts.headers,
        )))
    }
}

/// The client behind `peer`, as [`ClientIp`] says.
pub(crate) fn client_ip(trusted: &[Cidr], peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
    if !is_trusted(trusted, peer) {
        return peer;
    }
    // Each proxy appends the address it received from: read from the end,
    // past our own proxies, to the first address one of them vouches for.
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else {
            return client;
        };
        for hop in value.rsplit(',') {
            let Ok(address) = hop.trim().parse::<IpAddr>() else {
                return client;
            };
            client = address;
            if !is_trusted(trusted, address) {
                return client;
            }
        }
    }
    client
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
        let token = token.trim().to_string();
        let ClientIp(client) = ClientIp::from_request_parts(parts, state).await?;
        let caller = crate::auth::authenticate(state, client, &token).await?;
        if let Err(wait) = state.limits.requests.take(&caller.device_id, 1.0) {
            metrics::counter!("meridian_gateway_rate_limited_total", "what" => "rest").increment(1);
            return Err(ApiError::limited("too many requests; retry later", wait));
        }
        Ok(Self(caller))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn page_limits_are_enforced_not_clamped() {
        assert_eq!(page_limit(None, 100).unwrap(), 50);
        assert_eq!(page_limit(Some(1), 100).unwrap(), 1);
        assert_eq!(page_limit(Some(100), 100).unwrap(), 100);
        assert_eq!(
            page_limit(Some(0), 100).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            page_limit(Some(101), 100).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A client names whatever it likes: ignored.
        let spoofed = headers(&["1.2.3.4"]);
        assert_eq!(
            client_ip(&trusted, ip("203.0.113.5"), &spoofed),
            ip("203.0.113.5")
        );
        // Through our balancer: the address it appended.
        let through = headers(&["1.2.3.4, 198.51.100.7"]);
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.2"), &through),
            ip("198.51.100.7")
        );
        // Through two of ours, over two header lines: past both.
        let twice = headers(&["198.51.100.7", "10.0.0.3"]);
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.2"), &twice),
            ip("198.51.100.7")
        );
        // Garbage stops the walk at the last address vouched for.
        let garbage = headers(&["nonsense, 10.0.0.4"]);
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.2"), &garbage),
            ip("10.0.0.4")
        );
        // No header from a proxy: the proxy itself.
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }
}
