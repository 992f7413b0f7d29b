//! Conversations: direct and group conversations, their members, and the
//! changes to groups (made at the group's owner region and replicated).

use meridian_store::{self as store, Conversation, ConversationKind, InboxEntry, Member, Role};
use meridian_wire::ErrorCode;
use sha2::{Digest, Sha256};

use crate::messaging::refused;
use crate::validate;
use crate::{Caller, CoreError, Messaging};

/// A conversation with its members.
#[derive(Debug, Clone)]
pub struct ConversationDetail {
    /// The record.
    pub conversation: Conversation,
    /// Its members.
    pub members: Vec<Member>,
}

/// The ones of `user_ids` not among `members`, each once.
///
/// # Errors
/// `group_full` when they would take the group past `max`.
fn additions(
    members: &[Member],
    user_ids: &[String],
    max: usize,
) -> Result<Vec<String>, CoreError> {
    let mut added: Vec<String> = Vec::new();
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
    Ok(added)
}

/// The id of the direct conversation of two users: the same whichever asks.
pub fn direct_conversation_id(a: &str, b: &str) -> String {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let digest = Sha256::digest(format!("direct\0{low}\0{high}").as_bytes());
    format!("dm-{}", hex::encode(&digest[..16]))
}

/// Writes a new direct conversation of `users`, created at `created_ms`:
/// its record, then each membership in the order given. Both creation paths
/// (a user's first use, and the copy another region asks for) write it here.
fn put_direct_conversation(
    tx: &meridian_kv::Transaction,
    conv_id: &str,
    users: [&str; 2],
    created_ms: u64,
) -> Result<(Conversation, Vec<Member>), CoreError> {
    let conversation = Conversation {
        id: conv_id.to_string(),
        kind: ConversationKind::Direct,
        name: String::new(),
        member_count: 2,
        version: 1,
        created_ms,
    };
    store::put_conversation(tx, &conversation)?;
    let mut members = Vec::new();
    for user_id in users {
        let member = Member {
            user_id: user_id.to_string(),
            role: Role::Member,
            joined_ms: created_ms,
        };
        store::put_member(tx, conv_id, &member)?;
        members.push(member);
    }
    Ok((conversation, members))
}

impl Messaging {
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

    /// `user_id`'s membership of `conv_id`.
    ///
    /// # Errors
    /// `not_found` when there is no such conversation **or** the user is
    /// not a member: one answer for both, the same in every region, so a
    /// conversation's existence is never revealed to someone outside it
    /// (a region may or may not hold a copy of a conversation none of its
    /// users belongs to).
    pub(crate) async fn require_member(
        tx: &meridian_kv::Transaction,
        conv_id: &str,
        user_id: &str,
    ) -> Result<Member, CoreError> {
        let member = match store::get_conversation(tx, conv_id).await? {
            Some(_) => store::get_member(tx, conv_id, user_id).await?,
            None => None,
        };
        member.ok_or_else(|| no_conversation(conv_id))
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
        let hlc = self.stamp();
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
                    let (conversation, mut members) = put_direct_conversation(
                        &tx,
                        conv_id,
                        [caller.user_id.as_str(), peer],
                        now,
                    )?;
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
                    put_direct_conversation(&tx, conv_id, [user_a, user_b], created_ms)?;
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
        // The size first, so an oversized list costs no more than counting
        // it (review L7): repeats may only make it smaller.
        let too_many = || {
            refused(
                ErrorCode::GroupFull,
                format!(
                    "a group has at most {} members",
                    self.config.max_group_members
                ),
            )
        };
        if member_ids.len() > 2 * self.config.max_group_members {
            return Err(too_many());
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut others: Vec<String> = Vec::new();
        for id in member_ids {
            validate::id("member_user_ids", id)?;
            if *id != caller.user_id && seen.insert(id) {
                others.push(id.clone());
            }
        }
        if others.len() + 1 > self.config.max_group_members {
            return Err(too_many());
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
    /// `not_found` (also for a non-member).
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
        let limit = limit.clamp(1, meridian_wire::limits::MAX_CONVERSATION_PAGE as usize);
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
    /// `invalid_name`, `forbidden`, `not_found` (also for a non-member).
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
    /// `group_full`, `forbidden`, `not_found` (also for a non-member).
    pub async fn add_members(
        &self,
        caller: &Caller,
        conv_id: &str,
        user_ids: &[String],
    ) -> Result<ConversationDetail, CoreError> {
        validate::id("conv_id", conv_id)?;
        self.require_owner_region(conv_id)?;
        let max = self.config.max_group_members;
        if user_ids.len() > max {
            return Err(refused(
                ErrorCode::BadRequest,
                format!("add at most {max} members at once"),
            ));
        }
        for id in user_ids {
            validate::id("user_ids", id)?;
        }
        // Who may add, and whether they fit, before any other region is
        // asked about anyone: a refusal costs one read.
        let added = self.new_members(caller, conv_id, user_ids).await?;
        self.require_remote_users_exist(caller, &added).await?;
        let now = self.now_ms();
        self.db
            .run(|tx, _| async move {
                let conversation = Self::require_admin_of_group(&tx, conv_id, caller).await?;
                let mut members = store::list_members(&tx, conv_id).await?;
                let added = additions(&members, user_ids, max)?;
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

    /// The ones of `user_ids` not yet members of `conv_id`, each once,
    /// checked against the caller being an admin and the group's size.
    ///
    /// # Errors
    /// `forbidden`, `not_found` (also for a non-member), `group_full`.
    async fn new_members(
        &self,
        caller: &Caller,
        conv_id: &str,
        user_ids: &[String],
    ) -> Result<Vec<String>, CoreError> {
        let max = self.config.max_group_members;
        self.db
            .run(|tx, _| async move {
                Self::require_admin_of_group(&tx, conv_id, caller).await?;
                let members = store::list_members(&tx, conv_id).await?;
                additions(&members, user_ids, max)
            })
            .await
    }

    /// Removes a member from a group: any member may remove themself (leave);
    /// removing someone else takes an admin.
    ///
    /// # Errors
    /// `forbidden`, `not_found` (also for a non-member).
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
                        Err(error) if maybe_committed.0 && error.code() == ErrorCode::NotFound => {
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
}

/// The refusal of an operation on `conv_id` by someone who is not a member
/// of it, or on a conversation that does not exist: the same `not_found`.
pub(crate) fn no_conversation(conv_id: &str) -> CoreError {
    refused(ErrorCode::NotFound, format!("no conversation {conv_id}"))
}
