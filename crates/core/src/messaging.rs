//! The domain service of one region's core: the [`Messaging`] type, its
//! constructor, and the guards and helpers its operations share. The
//! operations are `impl Messaging` blocks by aggregate: `accounts.rs`,
//! `conversations.rs`, `send.rs`, `cursors.rs`, `media.rs`, `apply.rs`;
//! each is one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_kv::Database;
use meridian_media::Bucket;
use meridian_seams::limit::RateLimiter;
use meridian_seams::{Ids, Offload};
use meridian_store::{self as store, InboxEntry, InboxWaiter};
use meridian_wire::ErrorCode;

use crate::members_cache::MembersCache;
use crate::peers::Peers;
use crate::{Caller, CoreConfig, CoreError, Hlc};

/// What a core needs for media: every region's bucket (downloads are
/// presigned against the origin region's) and the executor for thumbnails.
#[derive(Debug, Clone, Default)]
pub struct MediaDeps {
    /// Region name → its bucket.
    pub buckets: BTreeMap<String, Bucket>,
    /// Where CPU-heavy checks run.
    pub offload: Offload,
}

/// The domain service of one region's core.
pub struct Messaging {
    pub(crate) db: Database,
    pub(crate) ids: Ids,
    pub(crate) hlc: Hlc,
    pub(crate) config: CoreConfig,
    pub(crate) peers: Peers,
    pub(crate) media: MediaDeps,
    /// Member ids by conversation for the send path (see the module).
    pub(crate) members: MembersCache,
    /// How delivery loops wait for an inbox to grow (the store's choice:
    /// its inbox feed, or a watch on the inbox head).
    pub(crate) inbox_waiter: InboxWaiter,
    /// Inbox entries each user's sends may create (`fanout_per_second`).
    pub(crate) fanout: RateLimiter,
    /// Upload slots per user (`uploads_per_day`).
    pub(crate) uploads: RateLimiter,
    /// Declared upload bytes per user (`upload_bytes_per_day`).
    pub(crate) upload_bytes: RateLimiter,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging")
            .field("region", &self.config.region)
            .finish()
    }
}

pub(crate) fn refused(code: ErrorCode, message: impl Into<String>) -> CoreError {
    CoreError::refused(code, message)
}

impl Messaging {
    /// A service over `db`, reaching the other regions' cores through
    /// `peers` and object storage through `media`.
    pub fn new(
        db: Database,
        ids: Ids,
        config: CoreConfig,
        peers: Peers,
        media: MediaDeps,
    ) -> Arc<Self> {
        let hlc = Hlc::new(
            ids.clock().clone(),
            config.max_clock_offset.as_millis() as u64,
            config.region.clone(),
        );
        let inbox_waiter = InboxWaiter::new(&db, config.follow_inbox_feed);
        let fanout = RateLimiter::new(
            config.fanout_per_second,
            config.fanout_burst,
            ids.clock().clone(),
        );
        let day = 86_400.0;
        let quotas = &config.media;
        let uploads = RateLimiter::new(
            quotas.uploads_per_day / day,
            quotas.uploads_per_day,
            ids.clock().clone(),
        );
        let bytes = quotas.upload_bytes_per_day as f64;
        let upload_bytes = RateLimiter::new(bytes / day, bytes, ids.clock().clone());
        Arc::new(Self {
            fanout,
            uploads,
            upload_bytes,
            ids,
            hlc,
            config,
            peers,
            media,
            members: MembersCache::new(),
            inbox_waiter,
            db,
        })
    }

    /// Appends `entry` to `user`'s inbox, waking its delivery loops.
    pub(crate) fn append_inbox(
        &self,
        tx: &meridian_kv::Transaction,
        user: &str,
        entry: &InboxEntry,
    ) -> Result<(), store::StoreError> {
        self.inbox_waiter.append(tx, user, entry)
    }

    /// How delivery loops wait for an inbox to grow.
    pub(crate) fn inbox_waiter(&self) -> &InboxWaiter {
        &self.inbox_waiter
    }

    /// Object storage.
    pub(crate) fn media(&self) -> &MediaDeps {
        &self.media
    }

    /// The HLC of this core.
    pub fn hlc(&self) -> &Hlc {
        &self.hlc
    }

    /// Whether `id` (a user, device or group) belongs to this site; ids
    /// without a region (direct conversations) count as local.
    pub fn is_local(&self, id: &str) -> bool {
        self.site_of(id)
            .is_none_or(|site| site == self.config.region)
    }

    /// The site `id` belongs to (`None` for direct conversations).
    pub(crate) fn site_of<'a>(&self, id: &'a str) -> Option<std::borrow::Cow<'a, str>> {
        self.config.topology.site_of(id)
    }

    /// The region this site belongs to: the suffix of the ids it creates.
    pub(crate) fn home_region(&self) -> &str {
        meridian_wire::sites::region_of_site(&self.config.region)
    }

    /// A new id for something created here (a user, device, group or
    /// media): `{uuid}@{region}`, drawn until it belongs to this site (about
    /// as many draws as the region has shards).
    pub(crate) fn new_local_id(&self) -> String {
        loop {
            let id = format!("{}@{}", self.ids.uuid_v7(), self.home_region());
            if self.is_local(&id) {
                return id;
            }
        }
    }

    /// Splits users into those homed here and those homed in each other
    /// region.
    pub(crate) fn by_region<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
    ) -> (
        Vec<&'a str>,
        std::collections::BTreeMap<String, Vec<String>>,
    ) {
        let mut local = Vec::new();
        let mut remote: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for user in users {
            match self.site_of(user) {
                Some(region) if region != self.config.region => {
                    if self.peers.knows(&region) {
                        remote
                            .entry(region.into_owned())
                            .or_default()
                            .push(user.to_string());
                    } else {
                        // No relay drains an outbox to a region this core
                        // does not peer with: nothing is queued for it.
                        metrics::counter!("meridian_unknown_region_total").increment(1);
                        tracing::warn!(%user, %region, "member homed in a region this core does not peer with; skipped");
                    }
                }
                _ => local.push(user),
            }
        }
        (local, remote)
    }

    /// A fresh HLC stamp.
    pub(crate) fn stamp(&self) -> u64 {
        self.hlc.next()
    }

    /// Refuses a caller homed in another region: its sends, receipts and
    /// creations belong to its home core (gateways route them there).
    pub(crate) fn require_homed_here(&self, caller: &Caller) -> Result<(), CoreError> {
        if self.is_local(&caller.user_id) {
            Ok(())
        } else {
            Err(refused(
                ErrorCode::WrongRegion,
                format!("{} is served by its home region's core", caller.user_id),
            ))
        }
    }

    /// Refuses a group change at a core other than the group's owner's.
    pub(crate) fn require_owner_region(&self, conv_id: &str) -> Result<(), CoreError> {
        match self.site_of(conv_id) {
            Some(region) if region != self.config.region => Err(refused(
                ErrorCode::WrongRegion,
                format!("group {conv_id} is changed in its owner region {region}"),
            )),
            _ => Ok(()),
        }
    }

    /// Checks that every one of `user_ids` exists, asking their home region
    /// for those homed elsewhere (before the transaction: a remote call must
    /// not run inside one).
    pub(crate) async fn require_remote_users_exist(
        &self,
        caller: &Caller,
        user_ids: &[String],
    ) -> Result<(), CoreError> {
        // The lookups at once: a group's worth of remote users costs one
        // round trip, not one per user.
        let lookups = user_ids.iter().filter_map(|user_id| {
            let region = self.site_of(user_id).filter(|r| *r != self.config.region)?;
            Some(async move {
                let exists = self.peers.knows(&region)
                    && self.peers.user_exists(&region, caller, user_id).await?;
                Ok::<_, CoreError>((user_id, exists))
            })
        });
        for outcome in futures::future::join_all(lookups).await {
            let (user_id, exists) = outcome?;
            if !exists {
                return Err(refused(ErrorCode::NotFound, format!("no user {user_id}")));
            }
        }
        Ok(())
    }

    /// The database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The id source.
    pub fn ids(&self) -> &Ids {
        &self.ids
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.ids.clock().wall_millis()
    }
}
