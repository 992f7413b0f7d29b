//! The domain rules; one transaction per operation.

use std::sync::Arc;

use base64::Engine as _;
use meridian_kv::Database;
use meridian_proto::ErrorCode;
use meridian_seams::Ids;
use meridian_store::keys::Stamp;
use meridian_store::{
    self as store, Conversation, ConversationKind, Device, InboxEntry, InboxFeed, Member, Message,
    ReceiptKind, Role, SendRecord, User,
};
use sha2::{Digest, Sha256};

use crate::media::MediaDeps;
use crate::members_cache::MembersCache;
use crate::peers::Peers;
use crate::validate;
use crate::{CoreConfig, CoreError, Hlc};

/// Who is acting: established from a device token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user_id: String,
    /// The device.
    pub device_id: String,
}

/// A new device's credentials; the token is shown once.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Device id.
    pub device_id: String,
    /// `"{device_id}.{secret}"`.
    pub token: String,
}

/// A conversation with its members.
#[derive(Debug, Clone)]
pub struct ConversationDetail {
    /// The record.
    pub conversation: Conversation,
    /// Its members.
    pub members: Vec<Member>,
}

/// A send request.
#[derive(Debug, Clone)]
pub struct SendInput {
    /// Target.
    pub conv_id: String,
    /// Idempotency key.
    pub client_msg_id: String,
    /// Opaque content.
    pub payload: String,
    /// Answered message.
    pub reply_to: Option<String>,
    /// Highest HLC the client has seen.
    pub last_seen_hlc: u64,
    /// Media ids the message carries (ready uploads of the sender).
    pub attachments: Vec<String>,
}

/// The domain service of one region's core.
pub struct Messaging {
    db: Database,
    ids: Ids,
    hlc: Hlc,
    config: CoreConfig,
    peers: Peers,
    media: MediaDeps,
    /// Member ids by conversation for the send path (see the module).
    members: MembersCache,
    /// Inbox tails from the committed batches, for delivery (none on
    /// FoundationDB, where this process does not see every commit).
    inbox_feed: Option<Arc<InboxFeed>>,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging")
            .field("region", &self.config.region)
            .finish()
    }
}

fn refused(code: ErrorCode, message: impl Into<String>) -> CoreError {
    CoreError::refused(code, message)
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equality that takes the same time wherever the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The id of the direct conversation of two users: the same whichever asks.
pub fn direct_conversation_id(a: &str, b: &str) -> String {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let digest = Sha256::digest(format!("direct\0{low}\0{high}").as_bytes());
    format!("dm-{}", hex::encode(&digest[..16]))
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
        );
        Arc::new(Self {
            ids,
            hlc,
            config,
            peers,
            media,
            members: MembersCache::new(),
            inbox_feed: InboxFeed::follow(&db),
            db,
        })
    }

    /// Appends `entry` to `user`'s inbox, waking its delivery loops the way
    /// they wait here (the feed, or a watch on the inbox head).
    pub(crate) fn append_inbox(
        &self,
        tx: &meridian_kv::Transaction,
        user: &str,
        entry: &InboxEntry,
    ) -> Result<(), store::StoreError> {
        let wakeup = match self.inbox_feed {
            Some(_) => store::InboxWakeup::Feed,
            None => store::InboxWakeup::HeadWatch,
        };
        store::append_inbox(tx, user, entry, wakeup)
    }

    /// The inbox feed, where the store has one.
    pub(crate) fn inbox_feed(&self) -> Option<&Arc<InboxFeed>> {
        self.inbox_feed.as_ref()
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
        meridian_proto::sites::region_of_site(&self.config.region)
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
    fn by_region<'a>(
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

    /// Queues a conversation's state for every other region where one of
    /// `members` or `also` (someone just removed) is homed.
    fn replicate_conversation(
        &self,
        tx: &meridian_kv::Transaction,
        conversation: &Conversation,
        members: &[Member],
        also: Option<&str>,
    ) -> Result<(), CoreError> {
        let everyone = members.iter().map(|m| m.user_id.as_str()).chain(also);
        let (_, remote) = self.by_region(everyone);
        if remote.is_empty() {
            return Ok(());
        }
        let hlc = self.stamp()?;
        for (region, notify) in remote {
            store::put_outbox(
                tx,
                &region,
                &store::Replicated {
                    origin_region: self.config.region.clone(),
                    hlc,
                    change: store::Change::Conversation {
                        conversation: conversation.clone(),
                        members: members.to_vec(),
                        notify,
                    },
                },
            )?;
        }
        Ok(())
    }

    /// A fresh HLC stamp.
    fn stamp(&self) -> Result<u64, CoreError> {
        self.hlc
            .next_after(0)
            .map_err(|e| CoreError::refused(ErrorCode::Internal, e.to_string()))
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
    fn require_owner_region(&self, conv_id: &str) -> Result<(), CoreError> {
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
    async fn require_remote_users_exist(
        &self,
        caller: &Caller,
        user_ids: &[String],
    ) -> Result<(), CoreError> {
        for user_id in user_ids {
            let Some(region) = self.site_of(user_id).filter(|r| *r != self.config.region) else {
                continue;
            };
            if !self.peers.knows(&region)
                || !self.peers.user_exists(&region, caller, user_id).await?
            {
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

    fn now_ms(&self) -> u64 {
        self.ids.clock().wall_millis()
    }

    fn new_token(&self, device_id: &str) -> (String, String) {
        let secret =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.ids.random_bytes(32));
        (format!("{device_id}.{secret}"), hash_secret(&secret))
    }

    /// Registers a user homed in this region, with a first device.
    ///
    /// # Errors
    /// `invalid_name` for a bad display name or label; store failures.
    pub async fn register_user(
        &self,
        display_name: &str,
        device_label: &str,
    ) -> Result<(User, Credentials), CoreError> {
        validate::name("display_name", display_name, 64)?;
        validate::name("device_label", device_label, 64)?;
        let user = User {
            id: self.new_local_id(),
            display_name: display_name.to_string(),
            home_region: self.home_region().to_string(),
            created_ms: self.now_ms(),
        };
        let device_id = self.new_local_id();
        let (token, token_hash) = self.new_token(&device_id);
        let device = Device {
            id: device_id.clone(),
            user_id: user.id.clone(),
            token_hash,
            label: device_label.to_string(),
            created_ms: user.created_ms,
            revoked_ms: None,
        };
        self.db
            .run(|tx, _| {
                let (user, device) = (&user, &device);
                async move {
                    store::put_user(&tx, user)?;
                    store::put_device(&tx, device)?;
                    Ok::<_, CoreError>(())
                }
            })
            .await?;
        Ok((user, Credentials { device_id, token }))
    }

    /// Resolves a device token to its caller.
    ///
    /// # Errors
    /// `invalid_token` (malformed, unknown or wrong secret), `token_revoked`.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, CoreError> {
        let invalid = || refused(ErrorCode::InvalidToken, "the token is not valid");
        let (device_id, secret) = token.split_once('.').ok_or_else(invalid)?;
        if validate::id("device_id", device_id).is_err() || secret.is_empty() || secret.len() > 128
        {
            return Err(invalid());
        }
        let device = self
            .db
            .run(|tx, _| async move {
                let Some(user_id) = store::device_owner(&tx, device_id).await? else {
                    return Ok::<_, CoreError>(None);
                };
                Ok(store::get_device(&tx, &user_id, device_id).await?)
            })
            .await?
            .ok_or_else(invalid)?;
        if !constant_time_eq(device.token_hash.as_bytes(), hash_secret(secret).as_bytes()) {
            return Err(invalid());
        }
        if device.revoked_ms.is_some() {
            return Err(refused(ErrorCode::TokenRevoked, "this device was revoked"));
        }
        Ok(Caller {
            user_id: device.user_id,
            device_id: device.id,
        })
    }

    /// A user's profile.
    ///
    /// # Errors
    /// `not_found`.
    pub async fn get_user(&self, user_id: &str) -> Result<User, CoreError> {
        validate::id("user_id", user_id)?;
        self.db
            .run(|tx, _| async move { Ok::<_, CoreError>(store::get_user(&tx, user_id).await?) })
            .await?
            .ok_or_else(|| refused(ErrorCode::NotFound, format!("no user {user_id}")))
    }

    /// Adds a device to the caller's account. The new device's cursor starts
    /// at the current end of the inbox: it receives what arrives from now on
    /// (older messages come from history).
    ///
    /// # Errors
    /// `invalid_name`; store failures.
    pub async fn add_device(&self, caller: &Caller, label: &str) -> Result<Credentials, CoreError> {
        validate::name("label", label, 64)?;
        let device_id = self.new_local_id();
        let (token, token_hash) = self.new_token(&device_id);
        let device = Device {
            id: device_id.clone(),
            user_id: caller.user_id.clone(),
            token_hash,
            label: label.to_string(),
            created_ms: self.now_ms(),
            revoked_ms: None,
        };
        self.db
            .run(|tx, _| {
                let device = &device;
                async move {
                    store::put_device(&tx, device)?;
                    let head = store::last_inbox_stamp(&tx, &device.user_id).await?;
                    store::set_cursor(&tx, &device.user_id, &device.id, &head)?;
                    Ok::<_, CoreError>(())
                }
            })
            .await?;
        Ok(Credentials { device_id, token })
    }

    /// The caller's devices.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_devices(&self, caller: &Caller) -> Result<Vec<Device>, CoreError> {
        self.db
            .run(|tx, _| async move {
                Ok::<_, CoreError>(store::list_devices(&tx, &caller.user_id).await?)
            })
            .await
    }

    /// Revokes one of the caller's devices; its token is refused from now on.
    ///
    /// # Errors
    /// `not_found` when the device is not the caller's.
    pub async fn revoke_device(&self, caller: &Caller, device_id: &str) -> Result<(), CoreError> {
        validate::id("device_id", device_id)?;
        let now = self.now_ms();
        self.db
            .run(|tx, _| async move {
                let mut device = store::get_device(&tx, &caller.user_id, device_id)
                    .await?
                    .ok_or_else(|| {
                        refused(ErrorCode::NotFound, format!("no device {device_id}"))
                    })?;
                if device.revoked_ms.is_none() {
                    device.revoked_ms = Some(now);
                    store::put_device(&tx, &device)?;
                }
                Ok::<_, CoreError>(())
            })
            .await
    }

    /// Checks the users homed here (those homed elsewhere were checked with
    /// [`Self::require_remote_users_exist`] before the transaction).
    async fn require_users_exist(
        &self,
        tx: &meridian_kv::Transaction,
        user_ids: &[String],
    ) -> Result<(), CoreError> {
        for user_id in user_ids.iter().filter(|u| self.is_local(u)) {
            if store::get_user(tx, user_id).await?.is_none() {
                return Err(refused(ErrorCode::NotFound, format!("no user {user_id}")));
            }
        }
        Ok(())
    }

    pub(crate) async fn require_member(
        tx: &meridian_kv::Transaction,
        conv_id: &str,
        user_id: &str,
    ) -> Result<Member, CoreError> {
        if store::get_conversation(tx, conv_id).await?.is_none() {
            return Err(refused(
                ErrorCode::NotFound,
                format!("no conversation {conv_id}"),
            ));
        }
        store::get_member(tx, conv_id, user_id)
            .await?
            .ok_or_else(|| refused(ErrorCode::NotMember, format!("not a member of {conv_id}")))
    }

    /// Tells `users` homed here that `conv` changed (those homed elsewhere
    /// are told by their own region when it applies the change).
    fn notify_changed(
        &self,
        tx: &meridian_kv::Transaction,
        conv: &Conversation,
        users: impl IntoIterator<Item = String>,
    ) -> Result<(), CoreError> {
        let entry = InboxEntry::ConversationChanged {
            conv_id: conv.id.clone(),
            version: conv.version,
        };
        for user in users.into_iter().filter(|u| self.is_local(u)) {
            self.append_inbox(tx, &user, &entry)?;
        }
        Ok(())
    }

    /// Stores a changed group: bumps its version, records its member count,
    /// and tells every member (and `also`, a member just removed) to refresh.
    fn record_change(
        &self,
        tx: &meridian_kv::Transaction,
        mut conversation: Conversation,
        members: Vec<Member>,
        also: Option<&str>,
    ) -> Result<ConversationDetail, CoreError> {
        conversation.member_count = members.len() as u32;
        conversation.version += 1;
        store::put_conversation(tx, &conversation)?;
        self.replicate_conversation(tx, &conversation, &members, also)?;
        let notified = members
            .iter()
            .map(|m| m.user_id.clone())
            .chain(also.map(str::to_string));
        self.notify_changed(tx, &conversation, notified)?;
        Ok(ConversationDetail {
            conversation,
            members,
        })
    }

    /// The direct conversation between the caller and `peer`, created on first use.
    ///
    /// # Errors
    /// `not_found` for an unknown peer, `bad_request` for oneself.
    pub async fn get_or_create_direct(
        &self,
        caller: &Caller,
        peer: &str,
    ) -> Result<ConversationDetail, CoreError> {
        self.require_homed_here(caller)?;
        validate::id("peer_user_id", peer)?;
        if peer == caller.user_id {
            return Err(refused(
                ErrorCode::BadRequest,
                "a direct conversation needs another user",
            ));
        }
        let conv_id = direct_conversation_id(&caller.user_id, peer);
        let now = self.now_ms();
        self.require_remote_users_exist(caller, &[peer.to_string()])
            .await?;
        let detail = self
            .db
            .run(|tx, _| {
                let conv_id = &conv_id;
                async move {
                    if let Some(conversation) = store::get_conversation(&tx, conv_id).await? {
                        let members = store::list_members(&tx, conv_id).await?;
                        return Ok(ConversationDetail {
                            conversation,
                            members,
                        });
                    }
                    self.require_users_exist(&tx, &[peer.to_string()]).await?;
                    let conversation = Conversation {
                        id: conv_id.clone(),
                        kind: ConversationKind::Direct,
                        name: String::new(),
                        member_count: 2,
                        version: 1,
                        created_ms: now,
                    };
                    store::put_conversation(&tx, &conversation)?;
                    let mut members = Vec::new();
                    for user_id in [caller.user_id.as_str(), peer] {
                        let member = Member {
                            user_id: user_id.to_string(),
                            role: Role::Member,
                            joined_ms: now,
                        };
                        store::put_member(&tx, conv_id, &member)?;
                        members.push(member);
                    }
                    members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
                    self.replicate_conversation(&tx, &conversation, &members, None)?;
                    Ok::<_, CoreError>(ConversationDetail {
                        conversation,
                        members,
                    })
                }
            })
            .await?;
        // The peer's home region gets its copy now rather than when the
        // replicated state arrives, so the peer can send at once. If it does
        // not answer, the replicated state still gets there.
        if let Some(region) = self.site_of(peer).filter(|r| *r != self.config.region)
            && let Err(error) = self
                .peers
                .ensure_direct(
                    &region,
                    &caller.user_id,
                    peer,
                    detail.conversation.created_ms,
                )
                .await
        {
            tracing::warn!(%error, %region, conv = %detail.conversation.id, "peer region did not take the direct conversation yet");
        }
        Ok(detail)
    }

    /// Creates the local copy of a direct conversation created in another
    /// region (a core-to-core call; idempotent).
    ///
    /// # Errors
    /// `bad_request` for malformed ids or users not homed apart, `not_found`
    /// when neither user is homed here.
    pub async fn ensure_direct(
        &self,
        user_a: &str,
        user_b: &str,
        created_ms: u64,
    ) -> Result<(), CoreError> {
        validate::id("user_a", user_a)?;
        validate::id("user_b", user_b)?;
        if user_a == user_b {
            return Err(refused(
                ErrorCode::BadRequest,
                "a direct conversation needs two users",
            ));
        }
        let (local, other) = match (self.is_local(user_a), self.is_local(user_b)) {
            (true, false) => (user_a, user_b),
            (false, true) => (user_b, user_a),
            _ => {
                return Err(refused(
                    ErrorCode::BadRequest,
                    "exactly one of the two users must be homed here",
                ));
            }
        };
        if !self.site_of(other).is_some_and(|r| self.peers.knows(&r)) {
            return Err(refused(
                ErrorCode::BadRequest,
                format!("{other} is not homed in a peer region"),
            ));
        }
        // The creator's clock, but never in this core's future.
        let created_ms = created_ms.min(self.now_ms());
        let conv_id = direct_conversation_id(user_a, user_b);
        self.db
            .run(|tx, _| {
                let conv_id = &conv_id;
                async move {
                    if store::get_user(&tx, local).await?.is_none() {
                        return Err(refused(ErrorCode::NotFound, format!("no user {local}")));
                    }
                    if store::get_conversation(&tx, conv_id).await?.is_some() {
                        return Ok(());
                    }
                    store::put_conversation(
                        &tx,
                        &Conversation {
                            id: conv_id.clone(),
                            kind: ConversationKind::Direct,
                            name: String::new(),
                            member_count: 2,
                            version: 1,
                            created_ms,
                        },
                    )?;
                    for user_id in [user_a, user_b] {
                        store::put_member(
                            &tx,
                            conv_id,
                            &Member {
                                user_id: user_id.to_string(),
                                role: Role::Member,
                                joined_ms: created_ms,
                            },
                        )?;
                    }
                    Ok::<_, CoreError>(())
                }
            })
            .await
    }

    /// Creates a group with the caller as admin.
    ///
    /// # Errors
    /// `invalid_name`, `group_full` past the member limit, `not_found` for an
    /// unknown member.
    pub async fn create_group(
        &self,
        caller: &Caller,
        name: &str,
        member_ids: &[String],
    ) -> Result<ConversationDetail, CoreError> {
        self.require_homed_here(caller)?;
        validate::name("name", name, self.config.max_name_chars)?;
        let mut others: Vec<String> = Vec::new();
        for id in member_ids {
            validate::id("member_user_ids", id)?;
            if *id != caller.user_id && !others.contains(id) {
                others.push(id.clone());
            }
        }
        if others.len() + 1 > self.config.max_group_members {
            return Err(refused(
                ErrorCode::GroupFull,
                format!(
                    "a group has at most {} members",
                    self.config.max_group_members
                ),
            ));
        }
        self.require_remote_users_exist(caller, &others).await?;
        let conv_id = self.new_local_id();
        let now = self.now_ms();
        self.db
            .run(|tx, _| {
                let (conv_id, others) = (&conv_id, &others);
                async move {
                    self.require_users_exist(&tx, others).await?;
                    let conversation = Conversation {
                        id: conv_id.clone(),
                        kind: ConversationKind::Group,
                        name: name.to_string(),
                        member_count: others.len() as u32 + 1,
                        version: 1,
                        created_ms: now,
                    };
                    store::put_conversation(&tx, &conversation)?;
                    let mut members = vec![Member {
                        user_id: caller.user_id.clone(),
                        role: Role::Admin,
                        joined_ms: now,
                    }];
                    members.extend(others.iter().map(|user_id| Member {
                        user_id: user_id.clone(),
                        role: Role::Member,
                        joined_ms: now,
                    }));
                    for member in &members {
                        store::put_member(&tx, conv_id, member)?;
                    }
                    self.notify_changed(
                        &tx,
                        &conversation,
                        members.iter().map(|m| m.user_id.clone()),
                    )?;
                    members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
                    self.replicate_conversation(&tx, &conversation, &members, None)?;
                    Ok::<_, CoreError>(ConversationDetail {
                        conversation,
                        members,
                    })
                }
            })
            .await
    }

    /// A conversation the caller is a member of.
    ///
    /// # Errors
    /// `not_found`, `not_member`.
    pub async fn get_conversation(
        &self,
        caller: &Caller,
        conv_id: &str,
    ) -> Result<ConversationDetail, CoreError> {
        validate::id("conv_id", conv_id)?;
        self.db
            .run(|tx, _| async move {
                Self::require_member(&tx, conv_id, &caller.user_id).await?;
                let conversation = store::get_conversation(&tx, conv_id)
                    .await?
                    .ok_or_else(|| refused(ErrorCode::NotFound, "conversation vanished"))?;
                let members = store::list_members(&tx, conv_id).await?;
                Ok::<_, CoreError>(ConversationDetail {
                    conversation,
                    members,
                })
            })
            .await
    }

    /// A page of the caller's conversations, by id.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_conversations(
        &self,
        caller: &Caller,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ConversationDetail>, Option<String>), CoreError> {
        let limit = limit.clamp(1, 100);
        if let Some(after) = after {
            validate::id("after", after)?;
        }
        self.db
            .run(|tx, _| async move {
                let ids =
                    store::list_user_conversations(&tx, &caller.user_id, after, limit).await?;
                let mut out = Vec::with_capacity(ids.len());
                for id in &ids {
                    if let Some(conversation) = store::get_conversation(&tx, id).await? {
                        let members = store::list_members(&tx, id).await?;
                        out.push(ConversationDetail {
                            conversation,
                            members,
                        });
                    }
                }
                let next = (ids.len() == limit).then(|| ids.last().cloned()).flatten();
                Ok::<_, CoreError>((out, next))
            })
            .await
    }

    async fn require_admin_of_group(
        tx: &meridian_kv::Transaction,
        conv_id: &str,
        caller: &Caller,
    ) -> Result<Conversation, CoreError> {
        let member = Self::require_member(tx, conv_id, &caller.user_id).await?;
        let conversation = store::get_conversation(tx, conv_id)
            .await?
            .ok_or_else(|| refused(ErrorCode::NotFound, "conversation vanished"))?;
        if conversation.kind != ConversationKind::Group {
            return Err(refused(
                ErrorCode::Forbidden,
                "direct conversations cannot be changed",
            ));
        }
        if member.role != Role::Admin {
            return Err(refused(ErrorCode::Forbidden, "only an admin may do this"));
        }
        Ok(conversation)
    }

    /// Renames a group (admins only).
    ///
    /// # Errors
    /// `invalid_name`, `forbidden`, `not_member`, `not_found`.
    pub async fn rename_group(
        &self,
        caller: &Caller,
        conv_id: &str,
        name: &str,
    ) -> Result<ConversationDetail, CoreError> {
        validate::id("conv_id", conv_id)?;
        self.require_owner_region(conv_id)?;
        validate::name("name", name, self.config.max_name_chars)?;
        self.db
            .run(|tx, _| async move {
                let mut conversation = Self::require_admin_of_group(&tx, conv_id, caller).await?;
                conversation.name = name.to_string();
                let members = store::list_members(&tx, conv_id).await?;
                self.record_change(&tx, conversation, members, None)
            })
            .await
    }

    /// Adds members to a group (admins only).
    ///
    /// # Errors
    /// `group_full`, `forbidden`, `not_member`, `not_found`.
    pub async fn add_members(
        &self,
        caller: &Caller,
        conv_id: &str,
        user_ids: &[String],
    ) -> Result<ConversationDetail, CoreError> {
        validate::id("conv_id", conv_id)?;
        self.require_owner_region(conv_id)?;
        for id in user_ids {
            validate::id("user_ids", id)?;
        }
        self.require_remote_users_exist(caller, user_ids).await?;
        let now = self.now_ms();
        let max = self.config.max_group_members;
        self.db
            .run(|tx, _| async move {
                let conversation = Self::require_admin_of_group(&tx, conv_id, caller).await?;
                let mut members = store::list_members(&tx, conv_id).await?;
                let mut added = Vec::new();
                for id in user_ids {
                    if !members.iter().any(|m| &m.user_id == id) && !added.contains(id) {
                        added.push(id.clone());
                    }
                }
                if members.len() + added.len() > max {
                    return Err(refused(
                        ErrorCode::GroupFull,
                        format!(
                            "a group has at most {max} members; it has {}",
                            members.len()
                        ),
                    ));
                }
                if added.is_empty() {
                    return Ok(ConversationDetail {
                        conversation,
                        members,
                    });
                }
                self.require_users_exist(&tx, &added).await?;
                for id in &added {
                    let member = Member {
                        user_id: id.clone(),
                        role: Role::Member,
                        joined_ms: now,
                    };
                    store::put_member(&tx, conv_id, &member)?;
                    members.push(member);
                }
                members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
                self.record_change(&tx, conversation, members, None)
            })
            .await
    }

    /// Removes a member from a group: any member may remove themself (leave);
    /// removing someone else takes an admin.
    ///
    /// # Errors
    /// `forbidden`, `not_member`, `not_found`.
    pub async fn remove_member(
        &self,
        caller: &Caller,
        conv_id: &str,
        user_id: &str,
    ) -> Result<ConversationDetail, CoreError> {
        validate::id("conv_id", conv_id)?;
        self.require_owner_region(conv_id)?;
        validate::id("user_id", user_id)?;
        self.db
            .run(|tx, maybe_committed| async move {
                let conversation = if user_id == caller.user_id {
                    match Self::require_member(&tx, conv_id, user_id).await {
                        // Left already, by an earlier attempt whose commit
                        // outcome was unknown: the leave succeeded.
                        Err(error) if maybe_committed.0 && error.code() == ErrorCode::NotMember => {
                            let conversation = store::get_conversation(&tx, conv_id)
                                .await?
                                .ok_or_else(|| {
                                    refused(ErrorCode::NotFound, "conversation vanished")
                                })?;
                            let members = store::list_members(&tx, conv_id).await?;
                            return Ok(ConversationDetail {
                                conversation,
                                members,
                            });
                        }
                        other => other?,
                    };
                    let conversation = store::get_conversation(&tx, conv_id)
                        .await?
                        .ok_or_else(|| refused(ErrorCode::NotFound, "conversation vanished"))?;
                    if conversation.kind != ConversationKind::Group {
                        return Err(refused(
                            ErrorCode::Forbidden,
                            "a direct conversation cannot be left",
                        ));
                    }
                    conversation
                } else {
                    Self::require_admin_of_group(&tx, conv_id, caller).await?
                };
                if store::get_member(&tx, conv_id, user_id).await?.is_none() {
                    // An earlier attempt of this very call may have removed
                    // them (its commit outcome was unknown): that is success.
                    if maybe_committed.0 {
                        let members = store::list_members(&tx, conv_id).await?;
                        return Ok(ConversationDetail {
                            conversation,
                            members,
                        });
                    }
                    return Err(refused(
                        ErrorCode::NotFound,
                        format!("{user_id} is not a member"),
                    ));
                }
                store::remove_member(&tx, conv_id, user_id)?;
                let mut members = store::list_members(&tx, conv_id).await?;
                // A group is never left without an admin: the longest-standing
                // member takes over when the last admin goes.
                let orphaned = !members.iter().any(|m| m.role == Role::Admin);
                if let Some(heir) = members
                    .iter_mut()
                    .filter(|_| orphaned)
                    .min_by(|a, b| (a.joined_ms, &a.user_id).cmp(&(b.joined_ms, &b.user_id)))
                {
                    heir.role = Role::Admin;
                    store::put_member(&tx, conv_id, heir)?;
                }
                self.record_change(&tx, conversation, members, Some(user_id))
            })
            .await
    }

    /// Accepts a message: one transaction writes the message, an inbox entry
    /// and inbox-head bump for every member (the sender's other devices
    /// included), and the idempotency record. A retry with the same
    /// `client_msg_id` from the same device returns the first result.
    ///
    /// # Errors
    /// `payload_empty`, `payload_too_large`, `bad_request`, `not_found`,
    /// `not_member`; store failures (the send may then be retried safely).
    pub async fn send(&self, caller: &Caller, input: &SendInput) -> Result<SendRecord, CoreError> {
        self.require_homed_here(caller)?;
        validate::id("conv_id", &input.conv_id)?;
        validate::client_msg_id(&input.client_msg_id)?;
        if input.payload.is_empty() && input.attachments.is_empty() {
            return Err(refused(
                ErrorCode::PayloadEmpty,
                "payload is empty and nothing is attached",
            ));
        }
        self.validate_attachments(&input.attachments)?;
        if input.payload.len() > self.config.max_payload_bytes {
            return Err(refused(
                ErrorCode::PayloadTooLarge,
                format!(
                    "payload of {} bytes exceeds {}",
                    input.payload.len(),
                    self.config.max_payload_bytes
                ),
            ));
        }
        if let Some(parent) = &input.reply_to {
            validate::id("reply_to", parent)?;
        }
        let msg_id = self.ids.uuid_v7().to_string();
        let now = self.now_ms();
        self.db
            .run(|tx, _| {
                let msg_id = &msg_id;
                async move {
                    if let Some(first) =
                        store::get_send_record(&tx, &caller.device_id, &input.client_msg_id).await?
                    {
                        return Ok(first);
                    }
                    // The conversation record and its cached member ids
                    // give the fan-out and the membership check (the point
                    // reads of `require_member` run only to name the
                    // refusal); a membership change conflicts on the record.
                    let members = self.members.members(&tx, &input.conv_id).await?;
                    if !members.user_ids.contains(&caller.user_id) {
                        Self::require_member(&tx, &input.conv_id, &caller.user_id).await?;
                        return Err(refused(
                            ErrorCode::NotMember,
                            format!("not a member of {}", input.conv_id),
                        ));
                    }
                    let mut observed = input.last_seen_hlc;
                    if let Some(parent) = &input.reply_to {
                        let parent_at = store::message_position(&tx, &input.conv_id, parent)
                            .await?
                            .ok_or_else(|| {
                                refused(
                                    ErrorCode::NotFound,
                                    format!("no message {parent} to reply to"),
                                )
                            })?;
                        observed = observed.max(parent_at.hlc);
                    }
                    let attachments = self.attach(&tx, caller, &input.attachments, now).await?;
                    let hlc = self.hlc.next_after(observed).map_err(|e| {
                        metrics::counter!("meridian_hlc_refused_total", "source" => "client", "region" => self.config.region.clone())
                            .increment(1);
                        tracing::warn!(error = %e, device = %caller.device_id, "client HLC refused");
                        refused(ErrorCode::ClockSkew, format!("last_seen_hlc refused: {e}"))
                    })?;
                    let message = Message {
                        msg_id: msg_id.clone(),
                        conv_id: input.conv_id.clone(),
                        sender_user: caller.user_id.clone(),
                        sender_device: caller.device_id.clone(),
                        client_msg_id: input.client_msg_id.clone(),
                        hlc,
                        origin_region: self.config.region.clone(),
                        payload: input.payload.clone(),
                        reply_to: input.reply_to.clone(),
                        sent_ms: now,
                        attachments,
                    };
                    store::put_message(&tx, &message)?;
                    let entry = InboxEntry::Message {
                        conv_id: input.conv_id.clone(),
                        hlc,
                        origin_region: self.config.region.clone(),
                        msg_id: msg_id.clone(),
                    };
                    let (local, remote) =
                        self.by_region(members.user_ids.iter().map(String::as_str));
                    for user in local {
                        self.append_inbox(&tx, user, &entry)?;
                    }
                    // Members homed elsewhere get it through their region's
                    // core, as counted here: a member removed concurrently in
                    // another region still gets what was sent before this
                    // region learned of the removal.
                    for (region, recipients) in remote {
                        store::put_outbox(
                            &tx,
                            &region,
                            &store::Replicated {
                                origin_region: self.config.region.clone(),
                                hlc,
                                change: store::Change::Message {
                                    message: message.clone(),
                                    recipients,
                                },
                            },
                        )?;
                    }
                    let record = SendRecord {
                        conv_id: input.conv_id.clone(),
                        msg_id: msg_id.clone(),
                        hlc,
                        sent_ms: now,
                    };
                    store::put_send_record(&tx, &caller.device_id, &input.client_msg_id, &record)?;
                    Ok::<_, CoreError>(record)
                }
            })
            .await
    }

    /// Moves the caller's device cursor forward to `cursor` (never back).
    ///
    /// # Errors
    /// Store failures.
    pub async fn ack(&self, caller: &Caller, cursor: &Stamp) -> Result<(), CoreError> {
        self.ack_many(std::iter::once((caller, cursor))).await
    }

    /// Moves several devices' cursors forward in one transaction (each as
    /// [`Messaging::ack`] would): the acks of one gateway stream that
    /// arrived while the previous ones committed.
    ///
    /// # Errors
    /// Store failures.
    pub async fn ack_many<'a>(
        &self,
        acks: impl Iterator<Item = (&'a Caller, &'a Stamp)> + Clone,
    ) -> Result<(), CoreError> {
        self.db
            .run(|tx, _| {
                let acks = acks.clone();
                async move {
                    for (caller, cursor) in acks {
                        store::advance_cursor(&tx, &caller.user_id, &caller.device_id, cursor)?;
                    }
                    Ok::<_, CoreError>(())
                }
            })
            .await
    }

    /// Sends delivered/read receipts for messages of a conversation to their
    /// senders' inboxes.
    ///
    /// # Errors
    /// `bad_request` (no ids or more than 100), `not_member`, `not_found`.
    pub async fn receipt(
        &self,
        caller: &Caller,
        conv_id: &str,
        msg_ids: &[String],
        kind: ReceiptKind,
    ) -> Result<(), CoreError> {
        self.require_homed_here(caller)?;
        validate::id("conv_id", conv_id)?;
        if msg_ids.is_empty() || msg_ids.len() > 100 {
            return Err(refused(
                ErrorCode::BadRequest,
                "a receipt names 1-100 messages",
            ));
        }
        for id in msg_ids {
            validate::id("msg_ids", id)?;
        }
        let now = self.now_ms();
        self.db
            .run(|tx, _| async move {
                Self::require_member(&tx, conv_id, &caller.user_id).await?;
                for msg_id in msg_ids {
                    let at = store::message_position(&tx, conv_id, msg_id)
                        .await?
                        .ok_or_else(|| {
                            refused(ErrorCode::NotFound, format!("no message {msg_id}"))
                        })?;
                    let Some(message) = store::get_message(&tx, conv_id, &at).await? else {
                        continue;
                    };
                    if message.sender_user == caller.user_id {
                        continue;
                    }
                    if self.is_local(&message.sender_user) {
                        self.append_inbox(
                            &tx,
                            &message.sender_user,
                            &InboxEntry::Receipt {
                                conv_id: conv_id.to_string(),
                                msg_id: msg_id.clone(),
                                from_user: caller.user_id.clone(),
                                kind,
                                at_ms: now,
                            },
                        )?;
                    } else if let Some(region) = self
                        .site_of(&message.sender_user)
                        .filter(|region| self.peers.knows(region))
                    {
                        store::put_outbox(
                            &tx,
                            &region,
                            &store::Replicated {
                                origin_region: self.config.region.clone(),
                                hlc: self.stamp()?,
                                change: store::Change::Receipt {
                                    to_user: message.sender_user.clone(),
                                    conv_id: conv_id.to_string(),
                                    msg_id: msg_id.clone(),
                                    from_user: caller.user_id.clone(),
                                    kind,
                                    at_ms: now,
                                },
                            },
                        )?;
                    }
                }
                Ok::<_, CoreError>(())
            })
            .await
    }

    /// A page of a conversation's history, for members only, paging from
    /// the message `from_msg_id` (exclusive) or from an end.
    ///
    /// # Errors
    /// `not_member`, `not_found` (also for an unknown `from_msg_id`), `bad_request`.
    pub async fn history(
        &self,
        caller: &Caller,
        conv_id: &str,
        from_msg_id: Option<&str>,
        backward: bool,
        limit: usize,
    ) -> Result<Vec<Message>, CoreError> {
        validate::id("conv_id", conv_id)?;
        if let Some(msg_id) = from_msg_id {
            validate::id("from_msg_id", msg_id)?;
        }
        let limit = limit.clamp(1, 200);
        self.db
            .run(|tx, _| async move {
                Self::require_member(&tx, conv_id, &caller.user_id).await?;
                let from = match from_msg_id {
                    Some(msg_id) => Some(
                        store::message_position(&tx, conv_id, msg_id)
                            .await?
                            .ok_or_else(|| {
                                refused(ErrorCode::NotFound, format!("no message {msg_id}"))
                            })?,
                    ),
                    None => None,
                };
                Ok::<_, CoreError>(
                    store::history_page(&tx, conv_id, from.as_ref(), backward, limit).await?,
                )
            })
            .await
    }

    /// The stored cursor of the caller's device, refusing a device revoked
    /// since it authenticated.
    ///
    /// # Errors
    /// `token_revoked`, `not_found`; store failures.
    pub async fn attach_cursor(&self, caller: &Caller) -> Result<Stamp, CoreError> {
        self.db
            .run(|tx, _| async move {
                let device = store::get_device(&tx, &caller.user_id, &caller.device_id)
                    .await?
                    .ok_or_else(|| refused(ErrorCode::NotFound, "no such device"))?;
                if device.revoked_ms.is_some() {
                    return Err(refused(ErrorCode::TokenRevoked, "this device was revoked"));
                }
                Ok(store::get_cursor(&tx, &caller.user_id, &caller.device_id).await?)
            })
            .await
    }

    /// The stored cursor of the caller's device.
    ///
    /// # Errors
    /// Store failures.
    pub async fn cursor(&self, caller: &Caller) -> Result<Stamp, CoreError> {
        self.db
            .run(|tx, _| async move {
                Ok::<_, CoreError>(
                    store::get_cursor(&tx, &caller.user_id, &caller.device_id).await?,
                )
            })
            .await
    }
}
