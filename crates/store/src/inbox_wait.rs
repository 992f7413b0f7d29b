//! How a device's delivery loop learns that its inbox grew, behind one
//! type: the [`InboxFeed`] where the store has one (the native layer's
//! committer shows this process every commit), else a watch on the inbox
//! head, which every append then touches (FoundationDB, where other
//! processes commit too). The core holds an [`InboxWaiter`] and never
//! learns which.

use std::sync::Arc;

use meridian_kv::{Database, KvError, Transaction, Watch};

use crate::feed::{FeedRead, InboxFeed, InboxSubscription};
use crate::keys::Stamp;
use crate::model::InboxEntry;
use crate::{StoreError, keys, ops};

/// How delivery loops learn that an inbox grew; one per store. Cheap to clone.
#[derive(Clone)]
pub struct InboxWaiter {
    feed: Option<Arc<InboxFeed>>,
}

impl std::fmt::Debug for InboxWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.follows_feed() {
            "feed"
        } else {
            "head watch"
        };
        f.debug_tuple("InboxWaiter").field(&how).finish()
    }
}

impl InboxWaiter {
    /// The waiter of `db`: its inbox feed when `follow_feed` and the
    /// backend shows this process every commit, else the head watch.
    /// (`follow_feed: false` runs the head watch on any backend, so tests
    /// exercise it on the native engines.)
    pub fn new(db: &Database, follow_feed: bool) -> Self {
        let feed = if follow_feed {
            InboxFeed::follow(db)
        } else {
            None
        };
        Self { feed }
    }

    /// Whether delivery follows the inbox feed (else the head watch).
    pub fn follows_feed(&self) -> bool {
        self.feed.is_some()
    }

    /// Appends `entry` to `user_id`'s inbox at this commit's versionstamp,
    /// touching the inbox head where delivery loops watch it (the feed needs
    /// no head: two fewer keys in a direct message's commit).
    ///
    /// # Errors
    /// Store limits.
    pub fn append(
        &self,
        tx: &Transaction,
        user_id: &str,
        entry: &InboxEntry,
    ) -> Result<(), StoreError> {
        ops::append_inbox(tx, user_id, entry)?;
        if self.feed.is_none() {
            ops::touch_inbox_head(tx, user_id)?;
        }
        Ok(())
    }

    /// A delivery loop's view of `user_id`'s inbox, from `cursor` on. Take it
    /// before the loop's first look at the inbox, so that no commit falls
    /// between the look and the wait.
    pub fn subscribe(&self, user_id: &str, cursor: Stamp) -> InboxWait {
        InboxWait {
            user_id: user_id.to_string(),
            feed: self
                .feed
                .as_ref()
                .map(|feed| feed.subscribe(user_id, cursor)),
        }
    }
}

/// One delivery loop's view of one inbox (see [`InboxWaiter::subscribe`]).
pub struct InboxWait {
    user_id: String,
    feed: Option<InboxSubscription>,
}

/// What will wake a delivery loop that read its inbox to the end: made at
/// the snapshot of that read by [`InboxWait::arm`].
#[derive(Debug)]
pub struct Armed {
    watch: Option<Watch>,
}

impl Armed {
    /// Registers the wake-up with the store: a head watch registers when
    /// its read-only transaction commits, so call this after the last read
    /// through `tx`.
    ///
    /// # Errors
    /// The store's errors from that commit.
    pub async fn register(&self, tx: &Transaction) -> Result<(), KvError> {
        if self.watch.is_some() {
            tx.commit().await?;
        }
        Ok(())
    }
}

impl InboxWait {
    /// Up to `limit` entries after `cursor` when the feed knows them all,
    /// else [`FeedRead::Unknown`]: read the store. (Always unknown with the
    /// head watch.)
    pub fn read(&self, cursor: &Stamp, limit: usize) -> FeedRead {
        match &self.feed {
            Some(feed) => feed.read(cursor, limit),
            None => FeedRead::Unknown,
        }
    }

    /// At `tx`'s snapshot, which read the inbox to its end: what wakes the
    /// loop once anything is appended after that snapshot. A commit after
    /// the snapshot signals the feed (kept as a permit until the wait); a
    /// head watch set at the snapshot (only snapshot reads, so the commit
    /// cannot conflict) fires at once for anything appended after it.
    pub fn arm(&self, tx: &Transaction) -> Armed {
        let watch = self
            .feed
            .is_none()
            .then(|| tx.watch(&keys::inbox_head(&self.user_id)));
        Armed { watch }
    }

    /// Waits until the inbox may have grown: the feed changed, or the
    /// armed head watch fired (at once when nothing was armed).
    ///
    /// # Errors
    /// The store's errors from the watch.
    pub async fn changed(&self, armed: Option<Armed>) -> Result<(), KvError> {
        match (&self.feed, armed.and_then(|armed| armed.watch)) {
            (Some(feed), _) => {
                feed.changed().await;
                Ok(())
            }
            (None, Some(watch)) => watch.await,
            (None, None) => Ok(()),
        }
    }
}
