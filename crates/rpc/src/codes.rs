//! Error codes on gRPC: a failed call between gateway and core carries its
//! [`ErrorCode`] as a gRPC status code and, exactly, in its metadata.

use meridian_wire::ErrorCode;

/// The gRPC metadata key that carries an [`ErrorCode`] on a failed call.
pub const ERROR_CODE_METADATA: &str = "x-meridian-code";

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
        ] {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(ErrorCode::from_status(&code.status("x")), code);
        }
    }
}
