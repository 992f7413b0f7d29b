//! One mapping from error code to HTTP status, for every REST handler.

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_rpc::ErrorCodeExt;
use meridian_wire::ErrorCode;
use meridian_wire::frames::ErrorBody;

/// A REST error: a stable code and a message, rendered as [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// Detail.
    pub message: String,
    /// How long to wait before retrying, when the refusal says.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `rate_limited`, retryable after `wait`.
    pub fn limited(message: impl Into<String>, wait: Duration) -> Self {
        Self {
            retry_after: Some(wait),
            ..Self::new(ErrorCode::RateLimited, message)
        }
    }
}

/// `wait` in whole milliseconds (at least 1), as the wire carries it.
pub(crate) fn millis(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The HTTP status of each code.
pub fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::InvalidJson
        | ErrorCode::InvalidUtf8
        | ErrorCode::UnknownFrame
        | ErrorCode::UnsupportedVersion
        | ErrorCode::PayloadEmpty
        | ErrorCode::InvalidName
        | ErrorCode::BadCursor => StatusCode::BAD_REQUEST,
        ErrorCode::FrameTooLarge | ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        // The request is not too large: the upload it declares is, which
        // is a field over its limit.
        ErrorCode::MediaTooLarge => StatusCode::UNPROCESSABLE_ENTITY,
        // Likewise a declared type: the request's own is JSON, accepted.
        ErrorCode::UnsupportedMediaType => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::GroupFull
        | ErrorCode::TooManyDevices
        | ErrorCode::WrongRegion
        | ErrorCode::MediaNotUploaded
        | ErrorCode::MediaNotReady => StatusCode::CONFLICT,
        ErrorCode::ClockSkew | ErrorCode::MediaRejected => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::MediaUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unauthenticated | ErrorCode::InvalidToken | ErrorCode::TokenRevoked => {
            StatusCode::UNAUTHORIZED
        }
        ErrorCode::Forbidden | ErrorCode::NotMember => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let code = ErrorCode::from_status(&status);
        let message = if code == ErrorCode::Unavailable && status.message().is_empty() {
            "the core is unavailable; retry".to_string()
        } else {
            status.message().to_string()
        };
        Self {
            code,
            message,
            retry_after: meridian_rpc::retry_after(&status),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("meridian_gateway_rest_errors_total", "code" => self.code.as_str())
            .increment(1);
        let retry_after = self
            .retry_after
            .or((self.code == ErrorCode::RateLimited).then_some(Duration::from_secs(1)));
        let mut response = (
            http_status(self.code),
            Json(ErrorBody {
                code: self.code,
                message: self.message,
                retry_after_ms: retry_after.map(millis),
            }),
        )
            .into_response();
        if let Some(wait) = retry_after {
            // Whole seconds, rounded up: never earlier than the body says.
            let seconds = wait.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert("retry-after", value);
            }
        }
        response
    }
}
