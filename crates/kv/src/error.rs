//! The one error type of the store interface.

use std::sync::Arc;

/// Everything a transaction can fail with.
///
/// Callers decide by predicate, never by message: [`KvError::is_retryable`]
/// errors are handled by [`crate::Database::run`]; [`KvError::is_maybe_committed`]
/// means the transaction may have been applied.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// A key this transaction read was written by a transaction that committed
    /// after this one's read version (FoundationDB's `not_committed`, 1020).
    #[error("transaction conflicts with a concurrent commit")]
    NotCommitted,
    /// The transaction lived past the 5 s limit or read at a version the
    /// resolver no longer remembers (FoundationDB's `transaction_too_old`, 1007).
    #[error("transaction is older than the 5 s limit")]
    TransactionTooOld,
    /// The commit reached the engine but its outcome is not known
    /// (FoundationDB's `commit_unknown_result`, 1021).
    #[error("commit result unknown: {reason}")]
    CommitUnknownResult {
        /// What went wrong while the commit was in flight.
        reason: String,
    },
    /// A key is longer than [`crate::limits::MAX_KEY_BYTES`].
    #[error(
        "key of {size} bytes exceeds the {} byte limit",
        crate::limits::MAX_KEY_BYTES
    )]
    KeyTooLarge {
        /// The key's size.
        size: usize,
    },
    /// A value is longer than [`crate::limits::MAX_VALUE_BYTES`].
    #[error(
        "value of {size} bytes exceeds the {} byte limit",
        crate::limits::MAX_VALUE_BYTES
    )]
    ValueTooLarge {
        /// The value's size.
        size: usize,
    },
    /// The transaction's writes and conflict ranges exceed
    /// [`crate::limits::MAX_TRANSACTION_BYTES`].
    #[error(
        "transaction of {size} bytes exceeds the {} byte limit",
        crate::limits::MAX_TRANSACTION_BYTES
    )]
    TransactionTooLarge {
        /// The transaction's size so far.
        size: usize,
    },
    /// Keys starting with `0xff` belong to the system.
    #[error("key is outside the legal range (keys starting with 0xff are reserved)")]
    KeyOutsideLegalRange,
    /// A versionstamped key or value whose 4-byte offset suffix is missing or
    /// points outside it.
    #[error("invalid versionstamp offset {offset} in a {len} byte template")]
    InvalidVersionstampOffset {
        /// The decoded offset.
        offset: usize,
        /// The template's length without the offset suffix.
        len: usize,
    },
    /// A range whose begin is after its end.
    #[error("inverted range")]
    InvertedRange,
    /// A key holding a mix of pending atomic operations was read before commit.
    #[error("a key with mixed pending atomic operations cannot be read before commit")]
    AccessedUnreadable,
    /// The retry loop gave up.
    #[error("gave up after {attempts} attempts: {last}")]
    RetryLimitReached {
        /// Attempts made.
        attempts: u32,
        /// The last retryable error.
        last: Box<KvError>,
    },
    /// The database was shut down.
    #[error("database is closed")]
    Closed,
    /// The storage engine failed for good (fail-stop): the database takes
    /// no more commits, and the process must restart to recover from the
    /// engine's journal.
    #[error("the store stopped after an engine failure: {reason}")]
    StoreFailed {
        /// The engine's failure.
        reason: String,
    },
    /// The storage engine failed (I/O, corruption).
    #[error("storage engine failed: {0}")]
    Engine(Arc<dyn std::error::Error + Send + Sync>),
    /// An error of a backend that is a transactional store itself
    /// (FoundationDB, in `meridian-kv-fdb`), with that store's own code and
    /// retry classification; the run loop hands it back to the backend's
    /// [`Backend::retry`](crate::backend::Backend::retry).
    #[error("{backend} error {code}: {message}")]
    Backend {
        /// Which store (e.g. "FoundationDB").
        backend: &'static str,
        /// The store's error code.
        code: i32,
        /// Its description.
        message: String,
        /// The store says a retry may succeed.
        retryable: bool,
        /// The store says the transaction may have committed.
        maybe_committed: bool,
    },
}

impl KvError {
    /// Wraps an engine failure.
    pub fn engine(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Engine(Arc::new(error))
    }

    /// Whether running the transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::NotCommitted
                | Self::TransactionTooOld
                | Self::CommitUnknownResult { .. }
                | Self::Backend {
                    retryable: true,
                    ..
                }
        )
    }

    /// Whether the failed commit may nevertheless have been applied.
    pub fn is_maybe_committed(&self) -> bool {
        matches!(
            self,
            Self::CommitUnknownResult { .. }
                | Self::Backend {
                    maybe_committed: true,
                    ..
                }
        )
    }
}

/// Errors a transaction closure may return: they must carry [`KvError`]s so
/// the retry loop can tell a conflict from a domain refusal.
pub trait TxnError: From<KvError> {
    /// The store error inside, if this is one.
    fn as_kv(&self) -> Option<&KvError>;
}

impl TxnError for KvError {
    fn as_kv(&self) -> Option<&KvError> {
        Some(self)
    }
}
