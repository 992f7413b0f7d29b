//! The interface's value types and the checks every backend applies to
//! what a transaction is given, so each refuses with the same typed error at
//! the same call.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::KvError;
use crate::keys::KeyRange;
use crate::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// What a successful commit produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit version (the read version, for a read-only transaction).
    pub version: u64,
    /// The 10-byte versionstamp written into versionstamped keys and values:
    /// the commit version (8 bytes, big-endian) then the transaction's order
    /// within its batch (2 bytes). `None` for a read-only transaction.
    pub versionstamp: Option<[u8; 10]>,
}

/// A key-value pair read from a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
}

/// Which keys a range read returns.
#[derive(Debug, Clone)]
pub struct RangeOption {
    /// The range read.
    pub range: KeyRange,
    /// At most this many pairs (0: no limit).
    pub limit: usize,
    /// Descending order from the end of the range.
    pub reverse: bool,
}

impl RangeOption {
    /// Every key in `range`, ascending.
    pub fn new(range: KeyRange) -> Self {
        Self {
            range,
            limit: 0,
            reverse: false,
        }
    }

    /// At most `limit` pairs.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Descending order.
    pub fn reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }
}

/// Resolves when a watched key is written by a later commit.
///
/// Dropping it cancels the watch.
#[derive(Debug)]
pub struct Watch {
    receiver: oneshot::Receiver<()>,
}

impl Watch {
    /// A watch that fires when `receiver` gets its value.
    pub fn from_receiver(receiver: oneshot::Receiver<()>) -> Self {
        Self { receiver }
    }
}

impl std::future::Future for Watch {
    type Output = Result<(), KvError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|fired| fired.map_err(|_| KvError::Closed))
    }
}

/// Checks `key` against the interface's limits: at most
/// [`MAX_KEY_BYTES`], outside the system keyspace (`0xff`).
///
/// # Errors
/// [`KvError::KeyTooLarge`], [`KvError::KeyOutsideLegalRange`].
pub fn check_key(key: &[u8]) -> Result<(), KvError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::KeyTooLarge { size: key.len() });
    }
    if key.first() == Some(&0xff) {
        return Err(KvError::KeyOutsideLegalRange);
    }
    Ok(())
}

/// Checks `value` against [`MAX_VALUE_BYTES`].
///
/// # Errors
/// [`KvError::ValueTooLarge`].
pub fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::ValueTooLarge { size: value.len() });
    }
    Ok(())
}

/// Splits FoundationDB's versionstamp template (payload followed by a 4-byte
/// little-endian offset) and checks that 10 bytes fit at the offset.
///
/// # Errors
/// [`KvError::InvalidVersionstampOffset`].
pub fn split_versionstamp_template(template: &[u8]) -> Result<(Vec<u8>, usize), KvError> {
    if template.len() < 4 {
        return Err(KvError::InvalidVersionstampOffset { offset: 0, len: 0 });
    }
    let (payload, suffix) = template.split_at(template.len() - 4);
    let offset = u32::from_le_bytes([suffix[0], suffix[1], suffix[2], suffix[3]]) as usize;
    if offset + 10 > payload.len() {
        return Err(KvError::InvalidVersionstampOffset {
            offset,
            len: payload.len(),
        });
    }
    Ok((payload.to_vec(), offset))
}
