//! A transaction: snapshot reads at a read version, buffered writes, read
//! conflict ranges, committed through the database's resolver.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use meridian_seams::Backoff;
use tokio::sync::oneshot;

use super::atomic::{apply_add, apply_byte_max};
use super::committer::{CommitRequest, PendingMutation};
use super::database::NativeDatabase as Database;
use crate::KvError;
use crate::engine::EngineSnapshot;
use crate::keys::{KeyRange, key_after};
use crate::limits::{MAX_TRANSACTION_AGE, MAX_TRANSACTION_BYTES};
use crate::types::{
    CommitInfo, KeyValue, RangeOption, Watch, check_key, check_value, split_versionstamp_template,
};

/// What the transaction's own writes say about a key.
#[derive(Debug, Clone)]
enum Buffered {
    Value(Vec<u8>),
    Cleared,
    /// An atomic add not yet resolved against the committed value.
    Add(i64),
    /// An atomic byte-max not yet resolved against the committed value.
    Max(Vec<u8>),
    /// A mix of atomic operations this layer does not replay for reads.
    Unreadable,
}

pub(crate) struct TxState {
    pub(crate) read_version: u64,
    snapshot: Arc<dyn EngineSnapshot>,
    started: Duration,
    /// Latest buffered state per key, for read-your-writes.
    buffered: BTreeMap<Vec<u8>, Buffered>,
    /// Ranges cleared by this transaction (before later sets in `buffered`).
    cleared: Vec<KeyRange>,
    /// Every mutation in order, as the resolver will apply them.
    mutations: Vec<PendingMutation>,
    read_conflicts: Vec<KeyRange>,
    write_conflicts: Vec<KeyRange>,
    watches: Vec<(Vec<u8>, oneshot::Sender<()>)>,
    size: usize,
    committed: bool,
    next_user_version: u16,
    /// Set by [`NativeTransaction::relax_durability`].
    relaxed: bool,
}

/// A FoundationDB-style transaction. Cheap to clone: clones share one state,
/// which is how [`Database::run`](crate::Database::run) hands it to a closure
/// by value and still commits it afterwards.
///
/// Reads see a consistent snapshot at the read version plus this
/// transaction's own writes. Non-snapshot reads add read conflict ranges:
/// if another transaction commits a write into one of them after the read
/// version, this one fails with [`KvError::NotCommitted`] and is retried.
#[derive(Clone)]
pub(crate) struct NativeTransaction {
    state: Arc<Mutex<TxState>>,
    db: Database,
    /// The backoff of the run this transaction is a retry of (`None` on a
    /// first attempt: made at the first retry).
    retries: Option<Backoff>,
}

impl std::fmt::Debug for NativeTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("read_version", &self.lock().read_version)
            .finish_non_exhaustive()
    }
}

impl NativeTransaction {
    /// Starts a transaction of `db` reading at its latest committed version.
    pub(super) fn begin(db: &Database) -> Self {
        Self::begin_retry(db, None)
    }

    /// [`NativeTransaction::begin`], for a retry that waited on `retries`.
    pub(super) fn begin_retry(db: &Database, retries: Option<Backoff>) -> Self {
        let (read_version, snapshot) = db.read_point();
        let started = db.clock().monotonic();
        Self {
            state: Arc::new(Mutex::new(TxState {
                read_version,
                snapshot,
                started,
                buffered: BTreeMap::new(),
                cleared: Vec::new(),
                mutations: Vec::new(),
                read_conflicts: Vec::new(),
                write_conflicts: Vec::new(),
                watches: Vec::new(),
                size: 0,
                committed: false,
                relaxed: false,
                next_user_version: 0,
            })),
            db: db.clone(),
            retries,
        }
    }

    fn lock(&self) -> MutexGuard<'_, TxState> {
        // The state is plain data; a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_age(&self, state: &TxState) -> Result<(), KvError> {
        let age = self.db.clock().monotonic().saturating_sub(state.started);
        if age > MAX_TRANSACTION_AGE {
            return Err(KvError::TransactionTooOld);
        }
        Ok(())
    }

    /// The database this transaction commits to.
    pub(super) fn database(&self) -> &Database {
        &self.db
    }

    /// The backoff of this transaction's run, as far as it went.
    pub(super) fn retries(&self) -> Option<&Backoff> {
        self.retries.as_ref()
    }

    /// The version this transaction reads at.
    pub(super) fn read_version(&self) -> u64 {
        self.lock().read_version
    }

    /// Reads `key`; a non-snapshot read adds it to the read conflict set.
    pub(super) fn read_key(&self, key: &[u8], snapshot: bool) -> Result<Option<Bytes>, KvError> {
        let mut state = self.lock();
        self.check_age(&state)?;
        if !snapshot {
            let range = KeyRange::single(key);
            state.size += range.size();
            state.read_conflicts.push(range);
        }
        match state.buffered.get(key) {
            Some(Buffered::Value(v)) => return Ok(Some(Bytes::copy_from_slice(v))),
            Some(Buffered::Cleared) => return Ok(None),
            Some(Buffered::Add(delta)) => {
                let base = if state.cleared.iter().any(|r| r.contains(key)) {
                    None
                } else {
                    state.snapshot.get(key)?
                };
                return Ok(Some(Bytes::from(apply_add(base.as_deref(), *delta))));
            }
            Some(Buffered::Max(value)) => {
                let base = if state.cleared.iter().any(|r| r.contains(key)) {
                    None
                } else {
                    state.snapshot.get(key)?
                };
                return Ok(Some(Bytes::from(apply_byte_max(base.as_deref(), value))));
            }
            Some(Buffered::Unreadable) => return Err(KvError::AccessedUnreadable),
            None => {}
        }
        if state.cleared.iter().any(|r| r.contains(key)) {
            return Ok(None);
        }
        state.snapshot.get(key)
    }

    /// Reads a range, merging the snapshot with this transaction's writes.
    /// A non-snapshot read adds the part of the range actually read to the
    /// read conflict set (up to the last key returned when the limit stopped
    /// the read).
    pub(super) fn read_range(
        &self,
        option: &RangeOption,
        snapshot: bool,
    ) -> Result<Vec<KeyValue>, KvError> {
        let RangeOption {
            range,
            limit,
            reverse,
        } = option;
        if range.begin > range.end {
            return Err(KvError::InvertedRange);
        }
        let mut state = self.lock();
        self.check_age(&state)?;
        let limit = if *limit == 0 { usize::MAX } else { *limit };
        let mut out = Vec::new();
        {
            let state = &*state;
            let engine_iter = state.snapshot.range(&range.begin, &range.end, *reverse);
            let buffered: Box<dyn Iterator<Item = (&Vec<u8>, &Buffered)>> = if *reverse {
                Box::new(
                    state
                        .buffered
                        .range(range.begin.clone()..range.end.clone())
                        .rev(),
                )
            } else {
                Box::new(state.buffered.range(range.begin.clone()..range.end.clone()))
            };
            let mut engine_iter = engine_iter.peekable();
            let mut buffered = buffered.peekable();
            let before = |a: &[u8], b: &[u8]| if *reverse { a > b } else { a < b };
            while out.len() < limit {
                let next_engine = match engine_iter.peek() {
                    Some(Ok((k, _))) => Some(k.clone()),
                    Some(Err(e)) => return Err(e.clone()),
                    None => None,
                };
                let next_buffered = buffered.peek().map(|(k, _)| (*k).clone());
                let take_buffered = match (&next_engine, &next_buffered) {
                    (None, None) => break,
                    (Some(_), None) => false,
                    (None, Some(_)) => true,
                    (Some(e), Some(b)) => !before(e, b),
                };
                if take_buffered {
                    let Some((key, write)) = buffered.next() else {
                        break;
                    };
                    // The same key in the engine is shadowed by the buffer.
                    if next_engine.as_deref() == Some(key.as_slice()) {
                        engine_iter.next();
                    }
                    let base = || -> Result<Option<Bytes>, KvError> {
                        if state.cleared.iter().any(|r| r.contains(key)) {
                            Ok(None)
                        } else {
                            state.snapshot.get(key)
                        }
                    };
                    match write {
                        Buffered::Value(v) => out.push(KeyValue {
                            key: Bytes::copy_from_slice(key),
                            value: Bytes::copy_from_slice(v),
                        }),
                        Buffered::Cleared => {}
                        Buffered::Add(delta) => out.push(KeyValue {
                            key: Bytes::copy_from_slice(key),
                            value: Bytes::from(apply_add(base()?.as_deref(), *delta)),
                        }),
                        Buffered::Max(value) => out.push(KeyValue {
                            key: Bytes::copy_from_slice(key),
                            value: Bytes::from(apply_byte_max(base()?.as_deref(), value)),
                        }),
                        Buffered::Unreadable => return Err(KvError::AccessedUnreadable),
                    }
                } else {
                    let Some(item) = engine_iter.next() else {
                        break;
                    };
                    let (key, value) = item?;
                    if state.cleared.iter().any(|r| r.contains(&key)) {
                        continue;
                    }
                    out.push(KeyValue { key, value });
                }
            }
        }
        if !snapshot {
            let conflict = match (out.len() >= limit, out.last(), reverse) {
                (true, Some(last), false) => {
                    KeyRange::new(range.begin.clone(), key_after(&last.key))
                }
                (true, Some(last), true) => KeyRange::new(last.key.to_vec(), range.end.clone()),
                _ => range.clone(),
            };
            state.size += conflict.size();
            state.read_conflicts.push(conflict);
        }
        Ok(out)
    }

    fn mutate(
        &self,
        size: usize,
        conflict: Option<KeyRange>,
        apply: impl FnOnce(&mut TxState),
    ) -> Result<(), KvError> {
        let mut state = self.lock();
        let conflict_size = conflict.as_ref().map_or(0, KeyRange::size);
        let new_size = state.size + size + conflict_size;
        if new_size > MAX_TRANSACTION_BYTES {
            return Err(KvError::TransactionTooLarge { size: new_size });
        }
        state.size = new_size;
        if let Some(range) = conflict {
            state.write_conflicts.push(range);
        }
        apply(&mut state);
        Ok(())
    }

    /// Writes `value` at `key`.
    ///
    /// # Errors
    /// [`KvError::KeyTooLarge`], [`KvError::ValueTooLarge`],
    /// [`KvError::KeyOutsideLegalRange`], [`KvError::TransactionTooLarge`].
    pub(super) fn set(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        check_value(value)?;
        self.mutate(key.len() + value.len(), Some(KeyRange::single(key)), |s| {
            s.buffered
                .insert(key.to_vec(), Buffered::Value(value.to_vec()));
            s.mutations
                .push(PendingMutation::Set(key.to_vec(), value.to_vec()));
        })
    }

    /// Removes `key`.
    ///
    /// # Errors
    /// As [`Transaction::set`].
    pub(super) fn clear(&self, key: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        self.mutate(key.len(), Some(KeyRange::single(key)), |s| {
            s.buffered.insert(key.to_vec(), Buffered::Cleared);
            s.mutations.push(PendingMutation::Clear(key.to_vec()));
        })
    }

    /// Removes every key in `range`.
    ///
    /// # Errors
    /// [`KvError::InvertedRange`], [`KvError::TransactionTooLarge`].
    pub(super) fn clear_range(&self, range: &KeyRange) -> Result<(), KvError> {
        if range.begin > range.end {
            return Err(KvError::InvertedRange);
        }
        // Clearing up to 0xff (the end of user keys) is allowed; beyond is not.
        if range.begin.first() == Some(&0xff) || range.end.as_slice() > [0xff].as_slice() {
            return Err(KvError::KeyOutsideLegalRange);
        }
        self.mutate(0, Some(range.clone()), |s| {
            let inside: Vec<Vec<u8>> = s
                .buffered
                .range(range.begin.clone()..range.end.clone())
                .map(|(k, _)| k.clone())
                .collect();
            for key in inside {
                s.buffered.remove(&key);
            }
            s.cleared.push(range.clone());
            s.mutations.push(PendingMutation::ClearRange(
                range.begin.clone(),
                range.end.clone(),
            ));
        })
    }

    /// Adds `delta` to the little-endian signed integer at `key` (absent
    /// counts as zero) at commit time, without a read conflict: concurrent
    /// adds never conflict with each other.
    ///
    /// # Errors
    /// As [`Transaction::set`].
    pub(super) fn atomic_add(&self, key: &[u8], delta: i64) -> Result<(), KvError> {
        check_key(key)?;
        self.mutate(key.len() + 8, Some(KeyRange::single(key)), |s| {
            let next = match s.buffered.get(key) {
                Some(Buffered::Value(v)) => Buffered::Value(apply_add(Some(v), delta)),
                Some(Buffered::Cleared) => Buffered::Value(apply_add(None, delta)),
                Some(Buffered::Add(d)) => Buffered::Add(d.wrapping_add(delta)),
                Some(Buffered::Max(_) | Buffered::Unreadable) => Buffered::Unreadable,
                None => Buffered::Add(delta),
            };
            s.buffered.insert(key.to_vec(), next);
            s.mutations.push(PendingMutation::Add(key.to_vec(), delta));
        })
    }

    /// Stores `value` at `key` unless what is stored there compares greater
    /// byte by byte (FoundationDB's `BYTE_MAX`), at commit time and without
    /// a read conflict: a cursor that only moves forward, written by many
    /// transactions that never conflict.
    ///
    /// # Errors
    /// As [`Transaction::set`].
    pub(super) fn atomic_byte_max(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        check_value(value)?;
        self.mutate(key.len() + value.len(), Some(KeyRange::single(key)), |s| {
            let next = match s.buffered.get(key) {
                Some(Buffered::Value(v)) => Buffered::Value(apply_byte_max(Some(v), value)),
                Some(Buffered::Cleared) => Buffered::Value(value.to_vec()),
                Some(Buffered::Max(m)) => Buffered::Max(apply_byte_max(Some(m), value)),
                Some(Buffered::Add(_) | Buffered::Unreadable) => Buffered::Unreadable,
                None => Buffered::Max(value.to_vec()),
            };
            s.buffered.insert(key.to_vec(), next);
            s.mutations
                .push(PendingMutation::ByteMax(key.to_vec(), value.to_vec()));
        })
    }

    /// Writes `value` at a key completed at commit: `key_template` is the key
    /// followed by a 4-byte little-endian offset where the 10-byte commit
    /// versionstamp goes (the form `tuple::pack_with_versionstamp` produces).
    /// The key cannot be read back in this transaction.
    ///
    /// # Errors
    /// [`KvError::InvalidVersionstampOffset`] and the limits of [`Transaction::set`].
    pub(super) fn set_versionstamped_key(
        &self,
        key_template: &[u8],
        value: &[u8],
    ) -> Result<(), KvError> {
        let (key, offset) = split_versionstamp_template(key_template)?;
        check_key(&key)?;
        check_value(value)?;
        // The final key is unknown and unique to this commit: no conflict range.
        self.mutate(key.len() + value.len(), None, |s| {
            s.mutations.push(PendingMutation::VersionstampedKey(
                key,
                offset,
                value.to_vec(),
            ));
        })
    }

    /// Writes at `key` a value completed at commit (`value_template`: payload
    /// followed by a 4-byte little-endian offset for the 10-byte versionstamp).
    ///
    /// # Errors
    /// As [`Transaction::set_versionstamped_key`].
    pub(super) fn set_versionstamped_value(
        &self,
        key: &[u8],
        value_template: &[u8],
    ) -> Result<(), KvError> {
        let (value, offset) = split_versionstamp_template(value_template)?;
        check_key(key)?;
        check_value(&value)?;
        self.mutate(key.len() + value.len(), Some(KeyRange::single(key)), |s| {
            // Reading it back before commit is an error in FoundationDB; here
            // the buffered entry is dropped so reads fall through to the snapshot.
            s.buffered.remove(key);
            s.mutations.push(PendingMutation::VersionstampedValue(
                key.to_vec(),
                value,
                offset,
            ));
        })
    }

    /// A number unique within this transaction attempt (0, 1, 2, …), for the
    /// user version of tuple versionstamps: several versionstamped keys written
    /// by one transaction then stay distinct and keep their write order.
    pub(super) fn next_user_version(&self) -> u16 {
        let mut state = self.lock();
        let version = state.next_user_version;
        state.next_user_version = version.wrapping_add(1);
        version
    }

    /// Adds `key` to the read conflict set without reading it.
    pub(super) fn add_read_conflict_key(&self, key: &[u8]) {
        let mut state = self.lock();
        state.read_conflicts.push(KeyRange::single(key));
    }

    /// A future that resolves once a transaction committed after this one
    /// writes `key`. The watch is registered when this transaction commits.
    pub(super) fn watch(&self, key: &[u8]) -> Watch {
        let (sender, receiver) = oneshot::channel();
        self.lock().watches.push((key.to_vec(), sender));
        Watch::from_receiver(receiver)
    }

    /// See [`crate::Transaction::relax_durability`].
    pub(super) fn relax_durability(&self) {
        self.lock().relaxed = true;
    }

    /// Commits the transaction.
    ///
    /// # Errors
    /// [`KvError::NotCommitted`] on a conflict, [`KvError::TransactionTooOld`],
    /// [`KvError::CommitUnknownResult`] when the engine failed mid-commit,
    /// [`KvError::Closed`].
    pub(super) async fn commit(&self) -> Result<CommitInfo, KvError> {
        let request = {
            let mut state = self.lock();
            if state.committed {
                return Err(KvError::Closed);
            }
            self.check_age(&state)?;
            state.committed = true;
            if state.mutations.is_empty() {
                // Read-only: nothing to resolve; watches register directly.
                let watches = std::mem::take(&mut state.watches);
                if !watches.is_empty() {
                    self.db.register_watches(state.read_version, watches);
                }
                return Ok(CommitInfo {
                    version: state.read_version,
                    versionstamp: None,
                });
            }
            let (reply, receiver) = oneshot::channel();
            let request = CommitRequest {
                read_version: state.read_version,
                read_conflicts: std::mem::take(&mut state.read_conflicts),
                write_conflicts: std::mem::take(&mut state.write_conflicts),
                mutations: std::mem::take(&mut state.mutations),
                watches: std::mem::take(&mut state.watches),
                relaxed: state.relaxed,
                reply,
            };
            (request, receiver)
        };
        let (request, receiver) = request;
        self.db.submit(request).await?;
        receiver.await.map_err(|_| KvError::CommitUnknownResult {
            reason: "the committer stopped before answering".into(),
        })?
    }
}
