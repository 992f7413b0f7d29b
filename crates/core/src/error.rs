//! The core's error: a refusal with a stable code, or a store failure.

use meridian_kv::{KvError, TxnError};
use meridian_rpc::ErrorCodeExt;
use meridian_store::StoreError;
use meridian_wire::ErrorCode;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The request was refused by a domain rule; nothing changed.
    #[error("{code}: {message}")]
    Refused {
        /// Stable code.
        code: ErrorCode,
        /// Detail for humans.
        message: String,
    },
    /// Over a rate limit: retry after `retry_after`.
    #[error("rate_limited: {message}")]
    Limited {
        /// Detail for humans.
        message: String,
        /// How long until it would be allowed.
        retry_after: std::time::Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CoreError {
    /// A refusal.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
        }
    }

    /// How long to wait before retrying, when the error says.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Limited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Refused { code, .. } => *code,
            Self::Limited { .. } => ErrorCode::RateLimited,
            Self::Store(StoreError::Kv(e)) if e.is_retryable() => ErrorCode::Unavailable,
            Self::Store(StoreError::Kv(
                KvError::Closed | KvError::RetryLimitReached { .. } | KvError::StoreFailed { .. },
            )) => ErrorCode::Unavailable,
            Self::Store(_) => ErrorCode::Internal,
        }
    }

    /// The tonic status for this error (internal details stay in the log).
    pub fn to_status(&self) -> tonic::Status {
        match self {
            Self::Refused { code, message } => code.status(message.clone()),
            Self::Limited {
                message,
                retry_after,
            } => meridian_rpc::with_retry_after(
                ErrorCode::RateLimited.status(message.clone()),
                *retry_after,
            ),
            Self::Store(error) => {
                tracing::error!(%error, "store failure");
                self.code().status("storage is temporarily unavailable")
            }
        }
    }
}

impl From<KvError> for CoreError {
    fn from(error: KvError) -> Self {
        Self::Store(StoreError::Kv(error))
    }
}

impl TxnError for CoreError {
    fn as_kv(&self) -> Option<&KvError> {
        match self {
            Self::Store(StoreError::Kv(e)) => Some(e),
            _ => None,
        }
    }
}

impl From<CoreError> for tonic::Status {
    fn from(error: CoreError) -> Self {
        error.to_status()
    }
}
