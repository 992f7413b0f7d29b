//! Error codes on gRPC: a failed call between gateway and core carries its
//! [`ErrorCode`] as a gRPC status code and, exactly, in its metadata.

use meridian_wire::ErrorCode;

/// The gRPC metadata key that carries an [`ErrorCode`] on a failed call.
pub const ERROR_CODE_METADATA: &str = "x-meridian-code";
/// The gRPC metadata key that carries how long to wait before retrying a
/// refused call (`rate_limited`), milliseconds.
pub const RETRY_AFTER_METADATA: &str = "x-meridian-retry-after-ms";

/// Marks `status` as retryable after `wait`.
pub fn with_retry_after(mut status: tonic::Status, wait: std::time::Duration) -> tonic::Status {
    let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    if let Ok(value) = millis.to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_METADATA, value);
    }
    status
}

/// How long `status` says to wait before retrying, if it says.
pub fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    status
        .metadata()
        .get(RETRY_AFTER_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis)
}

/// [`ErrorCode`] to and from tonic statuses. Bring it into scope to write
/// `code.status("…")` and `ErrorCode::from_status(&status)`.
pub trait ErrorCodeExt: Sized {
    /// The gRPC status code that carries this error between gateway and core.
    fn grpc_code(self) -> tonic::Code;

    /// A tonic status carrying this code in its metadata.
    fn status(self, message: impl Into<String>) -> tonic::Status;

    /// The code a tonic status carries (from its metadata, else from its gRPC code).
    fn from_status(status: &tonic::Status) -> Self;
}

impl ErrorCodeExt for ErrorCode {
    fn grpc_code(self) -> tonic::Code {
        match self {
            Self::BadRequest
            | Self::InvalidJson
            | Self::InvalidUtf8
            | Self::UnknownFrame
            | Self::UnsupportedVersion
            | Self::PayloadEmpty
            | Self::InvalidName
            | Self::BadCursor => tonic::Code::InvalidArgument,
            Self::FrameTooLarge
            | Self::PayloadTooLarge
            | Self::GroupFull
            | Self::TooManyDevices
            | Self::ClockSkew
            | Self::WrongRegion
            | Self::MediaTooLarge
            | Self::UnsupportedMediaType
            | Self::MediaNotUploaded
            | Self::MediaNotReady
            | Self::MediaRejected => tonic::Code::FailedPrecondition,
            Self::Unauthenticated | Self::InvalidToken | Self::TokenRevoked => {
                tonic::Code::Unauthenticated
            }
            Self::Forbidden | Self::NotMember => tonic::Code::PermissionDenied,
            Self::NotFound => tonic::Code::NotFound,
            Self::RateLimited => tonic::Code::ResourceExhausted,
            Self::SessionReplaced => tonic::Code::Aborted,
            Self::Unavailable | Self::MediaUnavailable => tonic::Code::Unavailable,
            Self::Internal => tonic::Code::Internal,
            // `ErrorCode` is `#[non_exhaustive]` (as seen from this crate):
            // a code added later travels as `Internal` until it is given its
            // own gRPC code here; the metadata carries it exactly regardless.
            _ => tonic::Code::Internal,
        }
    }

    fn status(self, message: impl Into<String>) -> tonic::Status {
        let mut status = tonic::Status::new(self.grpc_code(), message);
        if let Ok(value) = self.as_str().parse() {
            status.metadata_mut().insert(ERROR_CODE_METADATA, value);
        }
        status
    }

    fn from_status(status: &tonic::Status) -> Self {
        status
            .metadata()
            .get(ERROR_CODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(Self::parse)
            .unwrap_or(match status.code() {
                tonic::Code::InvalidArgument => Self::BadRequest,
                tonic::Code::Unauthenticated => Self::Unauthenticated,
                tonic::Code::PermissionDenied => Self::Forbidden,
                tonic::Code::NotFound => Self::NotFound,
                tonic::Code::ResourceExhausted => Self::RateLimited,
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => Self::Unavailable,
                _ => Self::Internal,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_status() {
        for code in [
            ErrorCode::NotMember,
            ErrorCode::GroupFull,
            ErrorCode::TokenRevoked,
            ErrorCode::TooManyDevices,
            ErrorCode::SessionReplaced,
        ] {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(ErrorCode::from_status(&code.status("x")), code);
        }
    }

    #[test]
    fn a_wait_travels_with_the_status() {
        let wait = std::time::Duration::from_millis(1500);
        let status = with_retry_after(ErrorCode::RateLimited.status("slow down"), wait);
        assert_eq!(retry_after(&status), Some(wait));
        assert_eq!(retry_after(&ErrorCode::RateLimited.status("x")), None);
    }
}
