//! The conflict resolver: remembers which key ranges each recent commit
//! wrote, and tells a committing transaction whether anything it read was
//! written after its read version.

use std::collections::VecDeque;
use std::time::Duration;

use crate::keys::{KeyRange, RangeSet};
use crate::limits::MAX_TRANSACTION_AGE;

/// Ranges remembered before the oldest commits are forgotten early.
const MAX_REMEMBERED_RANGES: usize = 2_000_000;

struct CommittedBatch {
    version: u64,
    at: Duration,
    writes: RangeSet,
}

pub(crate) struct Resolver {
    history: VecDeque<CommittedBatch>,
    remembered: usize,
    /// Reads at versions below this can no longer be checked.
    oldest_checkable: u64,
}

/// Why a transaction cannot commit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Commit,
    Conflict,
    TooOld,
}

impl Resolver {
    pub(crate) fn new(current_version: u64) -> Self {
        Self {
            history: VecDeque::new(),
            remembered: 0,
            oldest_checkable: current_version,
        }
    }

    /// Whether a transaction that read `reads` at `read_version` may commit.
    pub(crate) fn check(&self, read_version: u64, reads: &[KeyRange]) -> Verdict {
        if read_version < self.oldest_checkable {
            return Verdict::TooOld;
        }
        for batch in self.history.iter().rev() {
            if batch.version <= read_version {
                break;
            }
            if reads.iter().any(|read| batch.writes.intersects(read)) {
                return Verdict::Conflict;
            }
        }
        Verdict::Commit
    }

    /// Whether `key` was written by a batch with `after < version <= through`.
    ///
    /// Watches ask up to the published version only: a batch is recorded
    /// here before the engine has written it (so the next batch can be
    /// resolved against it meanwhile), and a watcher woken by it before it
    /// is readable would read the old state and wait again, at once.
    pub(crate) fn written_between(&self, after: u64, through: u64, key: &[u8]) -> bool {
        self.history
            .iter()
            .rev()
            .skip_while(|batch| batch.version > through)
            .take_while(|batch| batch.version > after)
            .any(|batch| batch.writes.contains(key))
    }

    /// Records a committed batch and forgets what no live transaction can need.
    pub(crate) fn record(&mut self, version: u64, at: Duration, writes: RangeSet) {
        self.remembered += writes.len();
        self.history.push_back(CommittedBatch {
            version,
            at,
            writes,
        });
        while let Some(oldest) = self.history.front() {
            let expired = at.saturating_sub(oldest.at) > MAX_TRANSACTION_AGE;
            if !expired && self.remembered <= MAX_REMEMBERED_RANGES {
                break;
            }
            self.remembered -= oldest.writes.len();
            self.oldest_checkable = oldest.version;
            self.history.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &[u8]) -> RangeSet {
        let mut set = RangeSet::default();
        set.insert(&KeyRange::single(key));
        set
    }

    #[test]
    fn conflict_only_with_later_writes() {
        let mut r = Resolver::new(0);
        r.record(1, Duration::ZERO, set(b"a"));
        assert_eq!(r.check(0, &[KeyRange::single(b"a")]), Verdict::Conflict);
        assert_eq!(r.check(1, &[KeyRange::single(b"a")]), Verdict::Commit);
        assert_eq!(r.check(0, &[KeyRange::single(b"b")]), Verdict::Commit);
    }

    #[test]
    fn watches_see_only_published_batches() {
        let mut r = Resolver::new(0);
        r.record(1, Duration::ZERO, set(b"a"));
        r.record(2, Duration::ZERO, set(b"b"));
        assert!(r.written_between(0, 1, b"a"));
        assert!(!r.written_between(0, 1, b"b"), "batch 2 is not published");
        assert!(r.written_between(0, 2, b"b"));
        assert!(!r.written_between(1, 2, b"a"), "read at 1 already saw a");
    }

    #[test]
    fn forgets_after_the_age_limit() {
        let mut r = Resolver::new(0);
        r.record(1, Duration::ZERO, set(b"a"));
        r.record(2, Duration::from_secs(6), set(b"b"));
        assert_eq!(r.check(0, &[]), Verdict::TooOld);
        assert_eq!(r.check(1, &[KeyRange::single(b"b")]), Verdict::Conflict);
    }
}
