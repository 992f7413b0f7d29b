//! The member ids of recently used conversations, for the send path.
//!
//! A send reads the conversation record (a point read, which the LSM's
//! bloom filters answer cheaply) and takes the members from here when the
//! cached entry was read at the same record state, instead of a range read
//! over the conversation's member keys (a merge over every table of the
//! LSM; 7 % of the server's CPU in the throughput benchmark).
//!
//! Why this is exact, not approximate: every change of membership writes the
//! conversation record in the same transaction (creation; `record_change`,
//! which bumps `version`; replication's apply of a newer state). So
//! - an entry read together with record state `(version, created_ms)` holds
//!   the members of every snapshot showing that state, and
//! - a send that read the record conflicts with any membership change that
//!   commits after its read version, as it did when it read the members.
//!
//! A direct conversation replaced by replication keeps its version but gets
//! an earlier `created_ms` (the rule in `apply.rs`), hence both in the key.

use std::hash::BuildHasherDefault;
use std::sync::Arc;

use meridian_kv::Transaction;
use meridian_store::{self as store, Conversation, StoreError};

/// Member ids cached in all, across conversations (~60 bytes each).
const CACHED_MEMBER_IDS: u64 = 1 << 20;

/// The members of one conversation at one state of its record.
#[derive(Debug)]
pub(crate) struct CachedMembers {
    version: u64,
    created_ms: u64,
    /// User ids, in key order.
    pub(crate) user_ids: Vec<String>,
}

#[derive(Clone)]
struct ByMemberCount;

impl quick_cache::Weighter<String, Arc<CachedMembers>> for ByMemberCount {
    fn weight(&self, _conv: &String, members: &Arc<CachedMembers>) -> u64 {
        members.user_ids.len() as u64 + 1
    }
}

/// A fixed-key hasher: the simulation replays a seed exactly, so nothing
/// here may draw process randomness (hit or miss decides which reads run).
type Hasher = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// See the module documentation.
pub(crate) struct MembersCache {
    cache: quick_cache::sync::Cache<String, Arc<CachedMembers>, ByMemberCount, Hasher>,
}

impl MembersCache {
    pub(crate) fn new() -> Self {
        // A fixed shard count: quick_cache's default follows the machine's
        // cores, and capacity is split per shard, so which entries are
        // evicted (and so which reads a send runs) would depend on the host.
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(65_536)
            .weight_capacity(CACHED_MEMBER_IDS)
            .shards(16)
            .build()
            .expect("constant cache options are valid");
        Self {
            cache: quick_cache::sync::Cache::with_options(
                options,
                ByMemberCount,
                Hasher::default(),
                Default::default(),
            ),
        }
    }

    /// The members of `conv_id` as `tx` sees them (empty when there is no
    /// such conversation), having read its record.
    ///
    /// # Errors
    /// Store failures.
    pub(crate) async fn members(
        &self,
        tx: &Transaction,
        conv_id: &str,
    ) -> Result<Arc<CachedMembers>, StoreError> {
        let Some(conversation) = store::get_conversation(tx, conv_id).await? else {
            return Ok(Arc::new(CachedMembers {
                version: 0,
                created_ms: 0,
                user_ids: Vec::new(),
            }));
        };
        if let Some(hit) = self.cache.get(conv_id)
            && Self::same_state(&hit, &conversation)
        {
            return Ok(hit);
        }
        let members = Arc::new(CachedMembers {
            version: conversation.version,
            created_ms: conversation.created_ms,
            user_ids: store::list_members(tx, conv_id)
                .await?
                .into_iter()
                .map(|member| member.user_id)
                .collect(),
        });
        self.cache.insert(conv_id.to_string(), members.clone());
        Ok(members)
    }

    fn same_state(cached: &CachedMembers, conversation: &Conversation) -> bool {
        cached.version == conversation.version && cached.created_ms == conversation.created_ms
    }
}
