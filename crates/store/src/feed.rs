//! The inbox feed: the tail of each watched inbox, kept in memory from the
//! stream of committed batches, so a delivery loop gets what a commit
//! appended to its device's inbox without reading it back from the store.
//!
//! Reading it back was the largest part of delivering: an inbox range read
//! merges every memtable and level-0 table of the LSM, then a point read
//! fetches each message, for every device, after every commit.
//!
//! The feed follows a database only where every commit passes through this
//! process's committer ([`meridian_kv::Database::observe_commits`]: the
//! native layer over fjall or memory). On FoundationDB other processes
//! write the same inboxes, so no feed is attached and delivery reads the
//! store as before.
//!
//! **What a tail promises.** A user's tail holds every entry of the user's
//! inbox whose stamp lies above `known_after`, as committed, in stamp order,
//! each with the message it names when that message was written by the same
//! commit. An entry removed by key (retention's pruning) leaves the tail
//! too. Whatever the feed cannot follow exactly — a range cleared over
//! inboxes, the retention floor moved, a message removed from history, a
//! write of unknown outcome — makes the tail unknown until the next append,
//! and its readers read the store. A reader whose cursor lies below `known_after`
//! reads the store too. So a read from the feed returns exactly what a store
//! read at the newest version would.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use meridian_kv::CommitObserver;
use meridian_kv::engine::EngineBatch;
use meridian_kv::tuple::{Subspace, Versionstamp};
use tokio::sync::Notify;

use crate::keys::{self, Stamp};
use crate::ops::decode;
use crate::{InboxEntry, Message, StoreError};

/// Entries a tail keeps beyond its slowest reader's cursor; past that the
/// oldest go, and a reader that far behind reads the store.
const MAX_TAIL_ENTRIES: usize = 2048;

/// Bytes (mostly message payloads) a tail keeps beyond its slowest reader:
/// a device that stops reading (its window full of unacked deliveries) pins
/// no more than this.
const MAX_TAIL_BYTES: usize = 1 << 20;

/// Bytes all tails together keep; past it the largest tails are dropped
/// (their readers read the store) until half of it is left.
const MAX_FEED_BYTES: usize = 256 << 20;

/// What an entry costs a tail: its message, plus the entry's own fields.
fn entry_bytes(entry: &FeedEntry) -> usize {
    entry.message.as_ref().map_or(0, Bytes::len) + 128
}

/// An inbox entry as the feed holds it.
#[derive(Debug, Clone)]
pub struct FeedEntry {
    /// Its stamp in the inbox.
    pub stamp: Stamp,
    /// The entry.
    pub entry: InboxEntry,
    /// The stored message the entry names, when the same commit wrote it.
    message: Option<Bytes>,
}

impl FeedEntry {
    /// The message the entry names, when the committing batch carried it
    /// (otherwise read it from the store).
    ///
    /// # Errors
    /// A corrupt message record.
    pub fn message(&self) -> Option<Result<Message, StoreError>> {
        self.message.as_ref().map(|raw| decode("message", raw))
    }
}

/// Tails of the inboxes someone reads, fed by a database's commits.
#[derive(Default)]
pub struct InboxFeed {
    state: Mutex<FeedState>,
}

#[derive(Default)]
struct FeedState {
    /// Ordered, so what wakes in which order is the same in every run (the
    /// deterministic simulation replays traces).
    tails: BTreeMap<String, Tail>,
    /// The sum of the tails' `bytes`.
    bytes: usize,
    next_reader: u64,
}

struct Tail {
    /// Every entry above this stamp is in `entries`; `None`: unknown until
    /// the next commit appends to the inbox.
    known_after: Option<Stamp>,
    entries: VecDeque<FeedEntry>,
    /// What `entries` cost ([`entry_bytes`]).
    bytes: usize,
    /// Each reader's cursor (entries all of them passed are dropped) and
    /// the signal given whenever the tail changes: an append, or it became
    /// unknown. One `Notify` per reader (small: one per attached session),
    /// signalled in reader order, so the order of wake-ups is the same in
    /// every run (the deterministic simulation replays traces).
    /// In subscription order (ids only grow); a `Vec`, as a user has few
    /// devices and a map's node would cost each session hundreds of bytes.
    readers: Vec<Reader>,
}

struct Reader {
    id: u64,
    cursor: Stamp,
    changed: Arc<Notify>,
}

impl Tail {
    fn forget(&mut self) {
        self.known_after = None;
        self.entries.clear();
        self.bytes = 0;
        self.signal();
    }

    fn signal(&self) {
        for reader in &self.readers {
            // A permit when the reader is not waiting: it cannot miss this.
            reader.changed.notify_one();
        }
    }

    fn append(&mut self, version: u64, entry: FeedEntry) {
        let known_after = *self
            .known_after
            .get_or_insert_with(|| stamp_before_version(version));
        let in_order = self
            .entries
            .back()
            .map_or(entry.stamp > known_after, |last| entry.stamp > last.stamp);
        if !in_order {
            // Cannot happen with one committer; if it did, stop trusting.
            self.forget();
            return;
        }
        self.bytes += entry_bytes(&entry);
        self.entries.push_back(entry);
        self.trim();
        // Readers take the feed's lock to look, so a woken reader sees the
        // whole batch, however many entries it appends after this one.
        self.signal();
    }

    /// Follows the removal of the entry at `stamp`: what the tail holds
    /// above `known_after` stays exactly what the inbox holds. Readers need
    /// no signal: nothing new arrived.
    fn remove(&mut self, stamp: &Stamp) {
        if let Ok(at) = self.entries.binary_search_by(|e| e.stamp.cmp(stamp))
            && let Some(entry) = self.entries.remove(at)
        {
            self.bytes -= entry_bytes(&entry);
        }
    }

    /// Drops entries every reader has passed, and the oldest beyond the caps.
    fn trim(&mut self) {
        let slowest = self.readers.iter().map(|r| r.cursor).min();
        while let Some(front) = self.entries.front() {
            let passed = slowest.is_some_and(|cursor| front.stamp <= cursor);
            let over = self.entries.len() > MAX_TAIL_ENTRIES || self.bytes > MAX_TAIL_BYTES;
            if !passed && !over {
                break;
            }
            self.known_after = Some(front.stamp);
            self.bytes -= entry_bytes(front);
            self.entries.pop_front();
        }
    }
}

/// The greatest stamp below every stamp of commit `version` (whose stamps
/// are `version` as 8 big-endian bytes, 2 bytes of order in the batch, 2 of
/// user version).
fn stamp_before_version(version: u64) -> Stamp {
    let mut stamp = [0xffu8; 12];
    stamp[..8].copy_from_slice(&version.saturating_sub(1).to_be_bytes());
    stamp
}

impl InboxFeed {
    /// A feed following `db`'s commits, or `None` where the backend cannot
    /// show every commit to this process (FoundationDB).
    pub fn follow(db: &meridian_kv::Database) -> Option<Arc<Self>> {
        let feed = Arc::new(Self::default());
        db.observe_commits(feed.clone()).then_some(feed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts following `user`'s inbox for a reader at `cursor`. The tail is
    /// unknown until the next commit appends to the inbox, so read the store
    /// first (after this call, so nothing falls between the two).
    pub fn subscribe(self: &Arc<Self>, user: &str, cursor: Stamp) -> InboxSubscription {
        let mut state = self.lock();
        let id = state.next_reader;
        state.next_reader += 1;
        let tail = state.tails.entry(user.to_string()).or_insert_with(|| Tail {
            known_after: None,
            entries: VecDeque::new(),
            bytes: 0,
            readers: Vec::new(),
        });
        let changed = Arc::new(Notify::new());
        tail.readers.push(Reader {
            id,
            cursor,
            changed: changed.clone(),
        });
        InboxSubscription {
            feed: self.clone(),
            user: user.to_string(),
            id,
            changed,
        }
    }
}

impl FeedState {
    /// Runs `change` on `user`'s tail, if it is followed, keeping `bytes`
    /// the sum of the tails' bytes.
    fn with_tail<R>(&mut self, user: &str, change: impl FnOnce(&mut Tail) -> R) -> Option<R> {
        let tail = self.tails.get_mut(user)?;
        let before = tail.bytes;
        let outcome = change(tail);
        self.bytes = self.bytes - before + tail.bytes;
        Some(outcome)
    }

    fn forget_all(&mut self) {
        for tail in self.tails.values_mut() {
            tail.forget();
        }
        self.bytes = 0;
    }

    /// Past the feed's budget, drops the largest tails until half is left.
    fn shed(&mut self) {
        if self.bytes <= MAX_FEED_BYTES {
            return;
        }
        let mut largest: Vec<(usize, &String)> = self
            .tails
            .iter()
            .map(|(user, tail)| (tail.bytes, user))
            .collect();
        largest.sort_unstable_by(|a, b| b.cmp(a));
        let mut left = self.bytes;
        let shed: Vec<String> = largest
            .into_iter()
            .take_while(|&(size, _)| {
                let over = left > MAX_FEED_BYTES / 2;
                left = left.saturating_sub(size);
                over
            })
            .map(|(_, user)| user.clone())
            .collect();
        for user in shed {
            self.with_tail(&user, Tail::forget);
        }
    }
}

/// What the feed can say of the entries after a cursor.
#[derive(Debug)]
pub enum FeedRead {
    /// Every entry after the cursor, up to the limit (empty: none yet).
    Entries(Vec<FeedEntry>),
    /// The feed does not know them: read the store.
    Unknown,
}

/// One reader of one inbox's tail. Dropping it stops following the inbox
/// once no reader is left.
pub struct InboxSubscription {
    feed: Arc<InboxFeed>,
    user: String,
    id: u64,
    changed: Arc<Notify>,
}

impl InboxSubscription {
    /// Waits for a change of the tail since the previous wait ended (or
    /// since [`InboxFeed::subscribe`]): a change made while the reader was
    /// looking (at the feed or the store) ends the next wait at once, so
    /// none is missed; one already seen may end a wait needlessly.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Up to `limit` entries after `cursor`, if the tail knows them all;
    /// records `cursor` as this reader's position.
    pub fn read(&self, cursor: &Stamp, limit: usize) -> FeedRead {
        let read = self.feed.lock().with_tail(&self.user, |tail| {
            if let Some(reader) = tail.readers.iter_mut().find(|r| r.id == self.id) {
                reader.cursor = *cursor;
            }
            tail.trim();
            match tail.known_after {
                Some(known_after) if *cursor >= known_after => FeedRead::Entries(
                    tail.entries
                        .iter()
                        .skip_while(|e| e.stamp <= *cursor)
                        .take(limit)
                        .cloned()
                        .collect(),
                ),
                _ => FeedRead::Unknown,
            }
        });
        read.unwrap_or(FeedRead::Unknown)
    }
}

impl Drop for InboxSubscription {
    fn drop(&mut self) {
        let mut state = self.feed.lock();
        if let Some(tail) = state.tails.get_mut(&self.user) {
            tail.readers.retain(|r| r.id != self.id);
            if tail.readers.is_empty()
                && let Some(tail) = state.tails.remove(&self.user)
            {
                state.bytes -= tail.bytes;
            }
        }
    }
}

/// The key prefixes the feed follows (from [`crate::keys`]), packed once.
struct Prefixes {
    inbox: Subspace,
    inbox_floor: Subspace,
    message: Vec<u8>,
}

fn prefixes() -> &'static Prefixes {
    static PREFIXES: std::sync::OnceLock<Prefixes> = std::sync::OnceLock::new();
    PREFIXES.get_or_init(|| Prefixes {
        inbox: keys::all_inboxes(),
        inbox_floor: keys::all_inbox_floors(),
        message: keys::all_messages().bytes().to_vec(),
    })
}

/// Whether `[begin, end)` overlaps the keys starting with `prefix`.
fn overlaps(begin: &[u8], end: &[u8], prefix: &[u8]) -> bool {
    let prefix_end = meridian_kv::strinc(prefix);
    begin < prefix_end.as_slice() && end > prefix
}

impl CommitObserver for InboxFeed {
    fn committed(&self, version: u64, changes: &EngineBatch) {
        let mut state = self.lock();
        if state.tails.is_empty() {
            return;
        }
        let p = prefixes();
        let removes_followed = changes.cleared.iter().any(|(begin, end)| {
            overlaps(begin, end, p.inbox.bytes())
                || overlaps(begin, end, p.inbox_floor.bytes())
                || overlaps(begin, end, &p.message)
        }) || changes
            .values
            .range(p.message.clone()..meridian_kv::strinc(&p.message))
            .any(|(_, value)| value.is_none());
        if removes_followed {
            // Retention at work: rare, and simplest followed by the store.
            state.forget_all();
            return;
        }
        let (begin, end) = p.inbox.range();
        let mut messages: HashMap<&[u8], Bytes> = HashMap::new();
        // Users whose tail this batch made unknown: the rest of their
        // entries in it must not make the tail known again below them.
        let mut forgotten = BTreeSet::new();
        for (key, value) in changes.values.range(begin..end) {
            let Ok((user, stamp)) = p.inbox.unpack::<(String, Versionstamp)>(key) else {
                continue;
            };
            if forgotten.contains(&user) {
                continue;
            }
            let stamp = *stamp.as_bytes();
            // Decoded only for followed users (inside), on the commit path.
            let followed = state.with_tail(&user, |tail| {
                let Some(value) = value else {
                    tail.remove(&stamp);
                    return true;
                };
                match decode::<InboxEntry>("inbox entry", value).ok() {
                    Some(entry) => {
                        let message = crate::entry_message_key(&entry).and_then(|key| {
                            let (key, raw) = changes.values.get_key_value(&key)?;
                            let raw = raw.as_ref()?;
                            Some(
                                messages
                                    .entry(key.as_slice())
                                    .or_insert_with(|| Bytes::copy_from_slice(raw))
                                    .clone(),
                            )
                        });
                        tail.append(
                            version,
                            FeedEntry {
                                stamp,
                                entry,
                                message,
                            },
                        );
                        true
                    }
                    // Undecodable: the store read reports it.
                    None => {
                        tail.forget();
                        false
                    }
                }
            });
            if followed == Some(false) {
                forgotten.insert(user);
            }
        }
        let (begin, end) = p.inbox_floor.range();
        for (key, _) in changes.values.range(begin..end) {
            if let Ok((user, _device)) = p.inbox_floor.unpack::<(String, String)>(key) {
                state.with_tail(&user, Tail::forget);
            }
        }
        state.shed();
    }

    fn outcome_unknown(&self) {
        self.lock().forget_all();
    }
}

#[cfg(test)]
mod tests {
    use meridian_kv::Database;

    use super::*;
    use crate::keys::STAMP_ZERO;
    use crate::test_database as open;

    fn message(n: u64) -> Message {
        sized_message(n, 1)
    }

    fn sized_message(n: u64, payload_bytes: usize) -> Message {
        Message {
            msg_id: format!("m{n}"),
            conv_id: "c".into(),
            sender_user: "alice".into(),
            sender_device: "d".into(),
            client_msg_id: format!("k{n}"),
            hlc: n,
            origin_region: "r".into(),
            payload: if payload_bytes == 1 {
                format!("p{n}")
            } else {
                "x".repeat(payload_bytes)
            },
            reply_to: None,
            sent_ms: n,
            attachments: Vec::new(),
        }
    }

    /// Commits message `n` into the history and `users`' inboxes.
    async fn send(db: &Database, n: u64, users: &[&str]) {
        send_sized(db, n, users, 1).await;
    }

    async fn send_sized(db: &Database, n: u64, users: &[&str], payload_bytes: usize) {
        let tx = db.begin();
        let m = sized_message(n, payload_bytes);
        crate::put_message(&tx, &m).expect("put");
        for user in users {
            crate::ops::append_inbox(
                &tx,
                user,
                &InboxEntry::Message {
                    conv_id: m.conv_id.clone(),
                    hlc: m.hlc,
                    origin_region: m.origin_region.clone(),
                    msg_id: m.msg_id.clone(),
                },
            )
            .expect("append");
        }
        tx.commit().await.expect("commit");
    }

    async fn stored(db: &Database, user: &str, after: &Stamp) -> Vec<Stamp> {
        let tx = db.begin();
        crate::read_inbox(&tx, user, after, 1000)
            .await
            .expect("read")
            .into_iter()
            .map(|(stamp, _)| stamp)
            .collect()
    }

    fn entries(read: FeedRead) -> Vec<FeedEntry> {
        match read {
            FeedRead::Entries(entries) => entries,
            FeedRead::Unknown => panic!("the feed should know the entries"),
        }
    }

    #[tokio::test]
    async fn a_subscribed_inbox_gets_each_appended_entry_with_its_message() {
        let db = open();
        let feed = InboxFeed::follow(&db).expect("native databases are followed");
        send(&db, 1, &["bob"]).await;
        let sub = feed.subscribe("bob", STAMP_ZERO);
        assert!(
            matches!(sub.read(&STAMP_ZERO, 10), FeedRead::Unknown),
            "what came before the subscription is read from the store"
        );
        let first = stored(&db, "bob", &STAMP_ZERO).await;
        send(&db, 2, &["bob", "carol"]).await;
        assert!(
            matches!(sub.read(&first[0], 10), FeedRead::Unknown),
            "the tail starts with the commit that follows the subscription: \
             the reader may not have read up to it"
        );
        let second = stored(&db, "bob", &first[0]).await;
        send(&db, 3, &["bob"]).await;
        send(&db, 4, &["bob"]).await;
        tokio::time::timeout(std::time::Duration::from_secs(5), sub.changed())
            .await
            .expect("the append wakes the subscriber");
        let got = entries(sub.read(&second[0], 10));
        let from_store = stored(&db, "bob", &second[0]).await;
        assert_eq!(
            got.iter().map(|e| e.stamp).collect::<Vec<_>>(),
            from_store,
            "the feed holds exactly what the store holds after the cursor"
        );
        let messages: Vec<Message> = got
            .iter()
            .map(|e| e.message().expect("carried").expect("decodes"))
            .collect();
        assert_eq!(messages, vec![message(3), message(4)]);
        assert_eq!(entries(sub.read(&from_store[1], 10)).len(), 0, "caught up");
        assert!(
            matches!(sub.read(&STAMP_ZERO, 10), FeedRead::Unknown),
            "a cursor before what the feed knows reads the store"
        );
        let other = feed.subscribe("carol", STAMP_ZERO);
        assert!(
            matches!(other.read(&STAMP_ZERO, 10), FeedRead::Unknown),
            "inboxes nobody followed at the time were not kept"
        );
    }

    #[tokio::test]
    async fn pruned_entries_leave_the_tail_and_clears_or_floors_send_readers_to_the_store() {
        let db = open();
        let feed = InboxFeed::follow(&db).expect("followed");
        let sub = feed.subscribe("bob", STAMP_ZERO);
        for n in 1..=3 {
            send(&db, n, &["bob"]).await;
        }
        let all = stored(&db, "bob", &STAMP_ZERO).await;
        assert_eq!(entries(sub.read(&all[0], 10)).len(), 2);

        // Retention's pruning, one entry per step: the first is below the
        // reader, the second above it; the tail stays what the store holds.
        for expect_more in [true, false] {
            let tx = db.begin();
            let more = crate::prune_inbox(&tx, "bob", &all[1], 1)
                .await
                .expect("prune")
                .more;
            assert_eq!(more, expect_more);
            tx.commit().await.expect("commit");
        }
        let fed: Vec<Stamp> = entries(sub.read(&all[0], 10))
            .iter()
            .map(|e| e.stamp)
            .collect();
        assert_eq!(fed, stored(&db, "bob", &all[0]).await);
        assert_eq!(fed, vec![all[2]]);

        let tx = db.begin();
        let (begin, end) = crate::keys::inbox_of("bob").range();
        tx.clear_range(&meridian_kv::KeyRange::new(begin, end))
            .expect("clear");
        tx.commit().await.expect("commit");
        assert!(matches!(sub.read(&all[2], 10), FeedRead::Unknown));

        send(&db, 4, &["bob"]).await;
        let now = stored(&db, "bob", &all[2]).await;
        assert_eq!(entries(sub.read(&now[0], 10)).len(), 0, "known again");
        let tx = db.begin();
        crate::set_inbox_floor(&tx, "bob", "phone", &all[2]).expect("floor");
        tx.commit().await.expect("commit");
        assert!(matches!(sub.read(&now[0], 10), FeedRead::Unknown));
    }

    #[tokio::test]
    async fn entries_every_reader_passed_are_dropped_and_the_tail_is_capped() {
        let db = open();
        let feed = InboxFeed::follow(&db).expect("followed");
        let slow = feed.subscribe("bob", STAMP_ZERO);
        let fast = feed.subscribe("bob", STAMP_ZERO);
        send(&db, 0, &["bob"]).await;
        let base = stored(&db, "bob", &STAMP_ZERO).await[0];
        for n in 1..=3 {
            send(&db, n, &["bob"]).await;
        }
        let all = stored(&db, "bob", &base).await;
        assert_eq!(entries(fast.read(&all[2], 10)).len(), 0);
        assert_eq!(
            entries(slow.read(&base, 10)).len(),
            3,
            "kept for the slower reader"
        );
        assert_eq!(entries(slow.read(&all[1], 10)).len(), 1);
        assert!(
            matches!(slow.read(&base, 10), FeedRead::Unknown),
            "dropped once both readers passed them"
        );
        drop(fast);
        for n in 4..(5 + MAX_TAIL_ENTRIES as u64) {
            send(&db, n, &["bob"]).await;
        }
        assert!(
            matches!(slow.read(&all[2], 10), FeedRead::Unknown),
            "a reader beyond the cap reads the store"
        );
        drop(slow);
        assert!(feed.lock().tails.is_empty(), "unfollowed without readers");
        assert_eq!(feed.lock().bytes, 0);
    }

    #[tokio::test]
    async fn a_reader_that_stops_reading_pins_a_bounded_number_of_bytes() {
        let db = open();
        let feed = InboxFeed::follow(&db).expect("followed");
        let stalled = feed.subscribe("bob", STAMP_ZERO);
        let _other = feed.subscribe("carol", STAMP_ZERO);
        for n in 0..40 {
            send_sized(&db, n, &["bob", "carol"], 60_000).await;
        }
        let state = feed.lock();
        let held: usize = state.tails.values().map(|t| t.bytes).sum();
        assert_eq!(state.bytes, held, "the total follows the tails");
        for tail in state.tails.values() {
            assert!(tail.bytes <= MAX_TAIL_BYTES, "{} bytes", tail.bytes);
            assert!(tail.entries.len() < 40, "the oldest were dropped");
        }
        drop(state);
        assert!(matches!(stalled.read(&STAMP_ZERO, 10), FeedRead::Unknown));
    }
}
