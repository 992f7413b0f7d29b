//! The send path, receipts and history: what is written to a conversation
//! and read back from it.

use std::sync::Arc;

use meridian_store::{self as store, InboxEntry, Message, ReceiptKind, SendRecord};
use meridian_wire::ErrorCode;

use crate::members_cache::CachedMembers;
use crate::messaging::refused;
use crate::validate;
use crate::{Caller, CoreError, Messaging};

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

impl Messaging {
    /// Accepts a message: one transaction writes the message, an inbox entry
    /// and inbox-head bump for every member (the sender's other devices
    /// included), and the idempotency record. A retry with the same
    /// `client_msg_id` from the same device returns the first result.
    ///
    /// # Errors
    /// `payload_empty`, `payload_too_large`, `bad_request`, `not_found`,
    /// `not_found` (also for a non-member); store failures (the send may then be retried safely).
    pub async fn send(&self, caller: &Caller, input: &SendInput) -> Result<SendRecord, CoreError> {
        self.validate_send(caller, input)?;
        let msg_id = self.ids.uuid_v7().to_string();
        let now = self.now_ms();
        // The fan-out is charged once, however often the transaction runs.
        let charged = std::sync::OnceLock::new();
        self.db
            .run(|tx, _| {
                let (msg_id, charged) = (&msg_id, &charged);
                async move {
                    if let Some(first) =
                        store::get_send_record(&tx, &caller.device_id, &input.client_msg_id).await?
                    {
                        // A retry names the same conversation; a key reused
                        // for another is a client bug, never "already sent".
                        if first.conv_id != input.conv_id {
                            return Err(CoreError::refused(
                                ErrorCode::BadRequest,
                                "client_msg_id was already used by this device for a send to another conversation",
                            ));
                        }
                        return Ok(first);
                    }
                    let members = self.send_members(&tx, caller, input).await?;
                    if charged.get().is_none() {
                        self.charge_fanout(caller, members.user_ids.len())?;
                        let _ = charged.set(());
                    }
                    let parent = Self::parent_hlc(&tx, input).await?;
                    let attachments = self.attach(&tx, caller, &input.attachments, now).await?;
                    let hlc = self.send_hlc(caller, input.last_seen_hlc, parent)?;
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
                    self.write_send(&tx, caller, input, &members.user_ids, message)
                }
            })
            .await
    }

    /// The checks of a send that need no transaction.
    fn validate_send(&self, caller: &Caller, input: &SendInput) -> Result<(), CoreError> {
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
        Ok(())
    }

    /// The members of the send's conversation, refusing a sender who is not
    /// one of them.
    async fn send_members(
        &self,
        tx: &meridian_kv::Transaction,
        caller: &Caller,
        input: &SendInput,
    ) -> Result<Arc<CachedMembers>, CoreError> {
        // The conversation record and its cached member ids give the
        // fan-out and the membership check; a membership change
        // conflicts on the record. A non-member is told what a caller
        // of a conversation that does not exist is.
        let members = self.members.members(tx, &input.conv_id).await?;
        if !members.user_ids.contains(&caller.user_id) {
            return Err(crate::conversations::no_conversation(&input.conv_id));
        }
        Ok(members)
    }

    /// The stamp of the answered message (0 without `reply_to`): read from
    /// the store, so the reply orders after it whatever the client claims.
    async fn parent_hlc(
        tx: &meridian_kv::Transaction,
        input: &SendInput,
    ) -> Result<u64, CoreError> {
        let Some(parent) = &input.reply_to else {
            return Ok(0);
        };
        let parent_at = store::message_position(tx, &input.conv_id, parent)
            .await?
            .ok_or_else(|| {
                refused(
                    ErrorCode::NotFound,
                    format!("no message {parent} to reply to"),
                )
            })?;
        Ok(parent_at.hlc)
    }

    /// The message's HLC: after the answered message's stamp, and after the
    /// client's `last_seen_hlc` clamped to this core's clock
    /// ([`crate::Hlc::next_for_client`]); a stamp beyond the maximum offset
    /// is refused, counted and logged.
    fn send_hlc(&self, caller: &Caller, last_seen: u64, parent: u64) -> Result<u64, CoreError> {
        self.hlc.next_for_client(last_seen, parent).map_err(|e| {
            metrics::counter!("meridian_hlc_refused_total", "source" => "client", "region" => self.config.region.clone())
                .increment(1);
            tracing::warn!(error = %e, device = %caller.device_id, "client HLC refused");
            refused(ErrorCode::ClockSkew, format!("last_seen_hlc refused: {e}"))
        })
    }

    /// Writes the message, its inbox entry for every member homed here, an
    /// outbox entry per other region with members, and the idempotency
    /// record.
    fn write_send(
        &self,
        tx: &meridian_kv::Transaction,
        caller: &Caller,
        input: &SendInput,
        members: &[String],
        message: Message,
    ) -> Result<SendRecord, CoreError> {
        let (msg_id, hlc, now) = (&message.msg_id, message.hlc, message.sent_ms);
        store::put_message(tx, &message)?;
        let entry = InboxEntry::Message {
            conv_id: input.conv_id.clone(),
            hlc,
            origin_region: self.config.region.clone(),
            msg_id: msg_id.clone(),
        };
        let (local, remote) = self.by_region(members.iter().map(String::as_str));
        for user in local {
            self.append_inbox(tx, user, &entry)?;
        }
        // Members homed elsewhere get it through their region's
        // core, as counted here: a member removed concurrently in
        // another region still gets what was sent before this
        // region learned of the removal.
        for (region, recipients) in remote {
            store::put_outbox(
                tx,
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
        store::put_send_record(tx, &caller.device_id, &input.client_msg_id, &record)?;
        Ok(record)
    }

    /// Takes a send's fan-out (one token per member inbox it writes) from
    /// the sender's bucket.
    ///
    /// # Errors
    /// `rate_limited` with the wait, when the user's sends have written
    /// too many inbox entries lately.
    fn charge_fanout(&self, caller: &Caller, members: usize) -> Result<(), CoreError> {
        let cost = members.max(1) as f64;
        self.fanout
            .take(&caller.user_id, cost)
            .map_err(|retry_after| {
                metrics::counter!("meridian_core_fanout_limited_total").increment(1);
                CoreError::Limited {
                    message: format!(
                        "your messages reached too many inboxes lately; retry in {} ms",
                        retry_after.as_millis()
                    ),
                    retry_after,
                }
            })
    }

    /// Sends delivered/read receipts for messages of a conversation to their
    /// senders' inboxes.
    ///
    /// # Errors
    /// `bad_request` (no ids or more than 100), `not_found` (also for a non-member).
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
        // Each message once, whatever the frame repeats.
        let msg_ids: std::collections::BTreeSet<&String> = msg_ids.iter().collect();
        let msg_ids = &msg_ids;
        let now = self.now_ms();
        self.db
            .run(|tx, _| async move {
                Self::require_member(&tx, conv_id, &caller.user_id).await?;
                for msg_id in msg_ids.iter().copied() {
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
                    // A receipt counts once: a repeat writes nothing (no
                    // inbox entry, no outbox entry).
                    if !store::mark_receipt_applied(&tx, conv_id, msg_id, &caller.user_id, kind)
                        .await?
                    {
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
                                hlc: self.stamp(),
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
    /// the message `from_msg_id` (exclusive) or from an end, and stopping
    /// at the message `stop_msg_id` (exclusive) or at the other end.
    ///
    /// # Errors
    /// `not_found` (also for a non-member, and for an unknown `from_msg_id`
    /// or `stop_msg_id`), `bad_request`.
    pub async fn history(
        &self,
        caller: &Caller,
        conv_id: &str,
        from_msg_id: Option<&str>,
        stop_msg_id: Option<&str>,
        backward: bool,
        limit: usize,
    ) -> Result<Vec<Message>, CoreError> {
        validate::id("conv_id", conv_id)?;
        for msg_id in from_msg_id.iter().chain(stop_msg_id.iter()) {
            validate::id("msg_id", msg_id)?;
        }
        let limit = limit.clamp(1, meridian_wire::limits::MAX_HISTORY_PAGE as usize);
        self.db
            .run(|tx, _| async move {
                Self::require_member(&tx, conv_id, &caller.user_id).await?;
                let from = Self::position_of(&tx, conv_id, from_msg_id).await?;
                let stop = Self::position_of(&tx, conv_id, stop_msg_id).await?;
                Ok::<_, CoreError>(
                    store::history_page(
                        &tx,
                        conv_id,
                        from.as_ref(),
                        stop.as_ref(),
                        backward,
                        limit,
                    )
                    .await?,
                )
            })
            .await
    }

    /// Where `msg_id` sits in the conversation's order, if one is given.
    async fn position_of(
        tx: &meridian_kv::Transaction,
        conv_id: &str,
        msg_id: Option<&str>,
    ) -> Result<Option<store::Position>, CoreError> {
        let Some(msg_id) = msg_id else {
            return Ok(None);
        };
        store::message_position(tx, conv_id, msg_id)
            .await?
            .map(Some)
            .ok_or_else(|| refused(ErrorCode::NotFound, format!("no message {msg_id}")))
    }
}
