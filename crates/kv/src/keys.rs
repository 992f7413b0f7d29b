//! Key ranges and key arithmetic.

/// A half-open key range `[begin, end)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRange {
    /// First key in the range.
    pub begin: Vec<u8>,
    /// First key after the range.
    pub end: Vec<u8>,
}

impl KeyRange {
    /// `[begin, end)`.
    pub fn new(begin: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self {
            begin: begin.into(),
            end: end.into(),
        }
    }

    /// The range holding exactly `key`.
    pub fn single(key: &[u8]) -> Self {
        Self {
            begin: key.to_vec(),
            end: key_after(key),
        }
    }

    /// Whether the two ranges share a key.
    pub fn intersects(&self, other: &KeyRange) -> bool {
        self.begin < other.end && other.begin < self.end
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.begin.as_slice() <= key && key < self.end.as_slice()
    }

    /// Bytes counted against the transaction size limit.
    pub fn size(&self) -> usize {
        self.begin.len() + self.end.len()
    }
}

/// The first key after `key` (`key` followed by a zero byte).
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// The first key after every key starting with `prefix` (FoundationDB's
/// `strinc`): strip trailing `0xff` bytes and increment the last one.
/// An all-`0xff` or empty prefix yields `[0xff]`, the end of user keys.
pub fn strinc(prefix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    while let Some(&last) = out.last() {
        if last == 0xff {
            out.pop();
        } else {
            if let Some(byte) = out.last_mut() {
                *byte += 1;
            }
            return out;
        }
    }
    vec![0xff]
}

/// Every key starting with `prefix`.
pub fn prefix_range(prefix: &[u8]) -> KeyRange {
    KeyRange::new(prefix.to_vec(), strinc(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strinc_skips_trailing_ff() {
        assert_eq!(strinc(b"ab"), b"ac".to_vec());
        assert_eq!(strinc(&[1, 0xff, 0xff]), vec![2]);
        assert_eq!(strinc(&[0xff]), vec![0xff]);
    }

    #[test]
    fn ranges_intersect_half_open() {
        let a = KeyRange::new(b"a".to_vec(), b"c".to_vec());
        assert!(a.intersects(&KeyRange::single(b"b")));
        assert!(!a.intersects(&KeyRange::single(b"c")));
        assert!(a.contains(b"a") && !a.contains(b"c"));
    }
}
