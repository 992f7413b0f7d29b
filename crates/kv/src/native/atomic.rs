//! The atomic operations' semantics (FoundationDB's `ADD` and `BYTE_MAX`),
//! applied by the committer at resolution and by a transaction's
//! read-your-writes.

/// Little-endian add of a 64-bit signed delta: the stored value's first 8
/// bytes (zero-padded when absent or shorter) plus `delta`, as 8 bytes.
pub(super) fn apply_add(base: Option<&[u8]>, delta: i64) -> Vec<u8> {
    let mut current = [0u8; 8];
    if let Some(base) = base {
        let n = base.len().min(8);
        current[..n].copy_from_slice(&base[..n]);
    }
    i64::from_le_bytes(current)
        .wrapping_add(delta)
        .to_le_bytes()
        .to_vec()
}

/// FoundationDB's `BYTE_MAX`: the lexicographically greater of the stored
/// value (absent counts as smaller than anything) and `value`.
pub(super) fn apply_byte_max(base: Option<&[u8]>, value: &[u8]) -> Vec<u8> {
    match base {
        Some(base) if base > value => base.to_vec(),
        _ => value.to_vec(),
    }
}
