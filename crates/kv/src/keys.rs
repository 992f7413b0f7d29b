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

/// Disjoint, merged key ranges with logarithmic intersection tests: the
/// resolver's record of what a batch wrote.
#[derive(Debug, Default, Clone)]
pub(crate) struct RangeSet {
    /// begin → end, non-overlapping and non-touching.
    ranges: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
}

impl RangeSet {
    /// Adds `range`, merging it with every range it overlaps or touches.
    pub(crate) fn insert(&mut self, range: &KeyRange) {
        use std::ops::Bound::{Included, Unbounded};
        if range.begin >= range.end {
            return;
        }
        let mut begin = range.begin.clone();
        let mut end = range.end.clone();
        if let Some((before_begin, before_end)) = self
            .ranges
            .range::<[u8], _>((Unbounded, Included(begin.as_slice())))
            .next_back()
            && *before_end >= begin
        {
            begin = before_begin.clone();
            end = end.max(before_end.clone());
        }
        let swallowed: Vec<Vec<u8>> = self
            .ranges
            .range::<[u8], _>((Included(begin.as_slice()), Included(end.as_slice())))
            .map(|(b, _)| b.clone())
            .collect();
        for key in swallowed {
            if let Some(other_end) = self.ranges.remove(&key) {
                end = end.max(other_end);
            }
        }
        self.ranges.insert(begin, end);
    }

    /// Whether any range shares a key with `range`.
    pub(crate) fn intersects(&self, range: &KeyRange) -> bool {
        use std::ops::Bound::{Excluded, Unbounded};
        if range.begin >= range.end {
            return false;
        }
        self.ranges
            .range::<[u8], _>((Unbounded, Excluded(range.end.as_slice())))
            .next_back()
            .is_some_and(|(_, end)| end.as_slice() > range.begin.as_slice())
    }

    /// Whether `key` lies in a range.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.intersects(&KeyRange::single(key))
    }

    /// Number of disjoint ranges.
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod range_set_tests {
    use super::*;

    #[test]
    fn merges_and_answers_intersections() {
        let mut set = RangeSet::default();
        set.insert(&KeyRange::new(b"b".to_vec(), b"d".to_vec()));
        set.insert(&KeyRange::new(b"f".to_vec(), b"h".to_vec()));
        assert_eq!(set.len(), 2);
        assert!(
            set.contains(b"c") && set.contains(b"f") && !set.contains(b"d") && !set.contains(b"a")
        );
        assert!(set.intersects(&KeyRange::new(b"a".to_vec(), b"bb".to_vec())));
        assert!(!set.intersects(&KeyRange::new(b"d".to_vec(), b"f".to_vec())));
        set.insert(&KeyRange::new(b"c".to_vec(), b"g".to_vec()));
        assert_eq!(set.len(), 1);
        assert!(set.contains(b"e"));
        set.insert(&KeyRange::new(b"h".to_vec(), b"i".to_vec()));
        assert_eq!(set.len(), 1, "touching ranges merge");
        assert!(!set.contains(b"i"));
    }
}
