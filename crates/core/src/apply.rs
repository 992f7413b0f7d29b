//! The destination side of replication: applying what other regions'
//! cores wrote to their outboxes, exactly once.
//!
//! Each batch from a link is applied in transactions that also record the
//! next offset of the source partition, so a replayed batch (a link that
//! reconnected, an entry the source's relay appended twice) changes nothing.
//! Every change carries its origin's HLC, which is merged here first; a
//! stamp beyond the maximum clock offset is refused — counted, logged, and
//! left unapplied so the link retries it later — never silently applied.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_kv::Transaction;
use meridian_replication::{
    AppliedState, Applier, ApplyError, ApplyOutcome, LogRecord, fingerprint,
};
use meridian_store::{self as store, Change, InboxEntry, Replicated};

use crate::conversations::direct_conversation_id;
use crate::{CoreError, Messaging};

/// Most records per apply transaction.
const RECORDS_PER_TRANSACTION: usize = 64;
/// Estimated bytes written per apply transaction: FoundationDB advises
/// about 1 MB (the hard limit is 10 MB), and a record may fan out to 100
/// inboxes.
const BYTES_PER_TRANSACTION: usize = 1_000_000;
/// Estimated bytes of one inbox entry with its head bump.
const INBOX_ENTRY_BYTES: usize = 200;

/// What applying `record` writes, roughly: the record itself (message or
/// state) plus an inbox entry per recipient or member told.
fn estimated_bytes(record: &LogRecord) -> usize {
    // The recipient list is inside the encoded change; counting its ids
    // (`@`-separated user ids) avoids decoding twice.
    let fan_out = record.value.iter().filter(|b| **b == b'@').count();
    record.value.len() + fan_out * INBOX_ENTRY_BYTES
}

/// Splits `records` into runs that each fit one apply transaction.
fn transaction_sized(records: &[LogRecord]) -> Vec<&[LogRecord]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, record) in records.iter().enumerate() {
        let cost = estimated_bytes(record);
        if i > start
            && (i - start >= RECORDS_PER_TRANSACTION || bytes + cost > BYTES_PER_TRANSACTION)
        {
            chunks.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += cost;
    }
    if start < records.len() {
        chunks.push(&records[start..]);
    }
    chunks
}

/// [`Messaging`] as the [`Applier`] of the replication links.
#[derive(Debug)]
pub struct ReplicationApplier {
    messaging: Arc<Messaging>,
    /// The entry last refused per (source, partition), so a refusal retried
    /// every second is counted and logged once.
    last_refused: std::sync::Mutex<BTreeMap<(String, u32), u64>>,
}

impl ReplicationApplier {
    /// The applier of `messaging`'s region.
    pub fn new(messaging: Arc<Messaging>) -> Self {
        Self {
            messaging,
            last_refused: std::sync::Mutex::default(),
        }
    }

    fn note_refusal(&self, source: &str, partition: u32, offset: u64, reason: &str) {
        let mut last = self.last_refused.lock().unwrap_or_else(|p| p.into_inner());
        if last.insert((source.to_string(), partition), offset) == Some(offset) {
            return;
        }
        metrics::counter!("meridian_hlc_refused_total", "source" => source.to_string(), "region" => self.messaging.config().region.clone())
            .increment(1);
        tracing::warn!(
            source,
            partition,
            offset,
            reason,
            "replicated change refused: clock stamp too far ahead; it is retried until the clocks agree"
        );
    }
}

#[async_trait::async_trait]
impl Applier for ReplicationApplier {
    async fn applied_state(&self, source_region: &str) -> Result<AppliedState, ApplyError> {
        self.messaging
            .db()
            .run(|tx, _| async move {
                let positions = store::applied_positions(&tx, source_region).await?;
                Ok::<_, CoreError>(AppliedState {
                    epoch: store::applied_epoch(&tx, source_region).await?,
                    offsets: positions.iter().map(|(&p, at)| (p, at.next)).collect(),
                    last: positions
                        .iter()
                        .filter_map(|(&p, at)| Some((p, at.last?)))
                        .collect(),
                })
            })
            .await
            .map_err(|e| ApplyError(e.to_string()))
    }

    async fn start_epoch(
        &self,
        source_region: &str,
        epoch: u64,
        restart: Option<&BTreeMap<u32, u64>>,
    ) -> Result<(), ApplyError> {
        self.messaging
            .db()
            .run(|tx, _| async move {
                store::start_applied_epoch(&tx, source_region, epoch, restart)?;
                Ok::<_, CoreError>(())
            })
            .await
            .map_err(|e| ApplyError(e.to_string()))
    }

    async fn apply(
        &self,
        source_region: &str,
        partition: u32,
        records: &[LogRecord],
    ) -> Result<ApplyOutcome, ApplyError> {
        let mut outcome = ApplyOutcome {
            next_offset: 0,
            refused: None,
            gap: None,
        };
        for chunk in transaction_sized(records) {
            outcome = self
                .messaging
                .apply_chunk(source_region, partition, chunk)
                .await
                .map_err(|e| ApplyError(e.to_string()))?;
            if let Some(reason) = &outcome.refused {
                self.note_refusal(source_region, partition, outcome.next_offset, reason);
                break;
            }
            if outcome.gap.is_some() {
                break;
            }
        }
        Ok(outcome)
    }
}

impl Messaging {
    /// Applies consecutive records of one source partition in one
    /// transaction, with the next offset.
    async fn apply_chunk(
        &self,
        source_region: &str,
        partition: u32,
        records: &[LogRecord],
    ) -> Result<ApplyOutcome, CoreError> {
        let decoded: Vec<Option<Replicated>> = records
            .iter()
            .map(|record| match store::decode_replicated(&record.value) {
                Ok(change) => Some(change),
                Err(error) => {
                    // It can never apply; holding the link on it would stop
                    // every later change. Counted and logged loudly.
                    metrics::counter!("meridian_replication_corrupt_total", "source" => source_region.to_string())
                        .increment(1);
                    tracing::error!(%error, source = source_region, partition, offset = record.offset, "corrupt replicated change skipped");
                    None
                }
            })
            .collect();
        self.db()
            .run(|tx, _| {
                let decoded = &decoded;
                async move {
                    let start = store::applied_position(&tx, source_region, partition).await?;
                    let mut next = start.next;
                    let mut last = start.last;
                    let mut refused = None;
                    let mut gap = None;
                    for (record, change) in records.iter().zip(decoded) {
                        if record.offset < next {
                            continue; // applied before: a replay
                        }
                        if record.offset > next {
                            // Entries are missing from the log: applying
                            // past them would lose them without a trace.
                            // Stop here; the link alarms and retries.
                            metrics::counter!("meridian_replication_gaps_total", "source" => source_region.to_string())
                                .increment(1);
                            tracing::error!(source = source_region, partition, expected = next, got = record.offset, "replication log skipped offsets; not applying past the gap");
                            gap = Some((next, record.offset));
                            break;
                        }
                        if let Some(change) = change.as_ref().filter(|change| {
                            self.made_by_its_source(change, source_region, record.offset)
                        }) {
                            if let Err(error) = self.hlc().observe(change.hlc) {
                                // Counted and logged once per entry by the
                                // applier (the link retries it every second).
                                refused = Some(error.to_string());
                                break;
                            }
                            self.apply_change(&tx, change).await?;
                        }
                        next = record.offset.saturating_add(1);
                        last = Some(fingerprint(&record.value));
                    }
                    if next != start.next {
                        let position = store::AppliedPosition { next, last };
                        store::set_applied_position(&tx, source_region, partition, position)?;
                    }
                    Ok::<_, CoreError>(ApplyOutcome {
                        next_offset: next,
                        refused,
                        gap,
                    })
                }
            })
            .await
    }

    /// Whether `change` may come from `source`, a peer site: only what the
    /// source itself can have made, for users of this site. A faulty,
    /// misconfigured or compromised peer must not rewrite what it does not
    /// own; anything else is skipped, counted and logged.
    fn made_by_its_source(&self, change: &Replicated, source: &str, offset: u64) -> bool {
        let refusal = if change.origin_region != source {
            Some("made by another region")
        } else {
            self.foreign_part(&change.change, source)
        };
        let Some(reason) = refusal else {
            return true;
        };
        metrics::counter!("meridian_replication_foreign_total", "source" => source.to_string())
            .increment(1);
        tracing::error!(source, offset, origin = %change.origin_region, conv = change.conv_id(), reason, "replicated change its source cannot have made; skipped");
        false
    }

    /// What in `change` `source` cannot have made, if anything.
    fn foreign_part(&self, change: &Change, source: &str) -> Option<&'static str> {
        let homed_at_source = |user: &str| self.site_of(user).is_some_and(|site| site == source);
        let all_local = |users: &[String]| users.iter().all(|user| self.is_local(user));
        match change {
            Change::Message {
                message,
                recipients,
            } => {
                if message.origin_region != source || !homed_at_source(&message.sender_user) {
                    Some("a message whose sender is not homed at the source")
                } else if !all_local(recipients) {
                    Some("a message for users not homed here")
                } else {
                    None
                }
            }
            Change::Conversation {
                conversation,
                members,
                notify,
            } => {
                if !all_local(notify) {
                    return Some("a conversation change notifying users not homed here");
                }
                match self.site_of(&conversation.id) {
                    // A group's state comes from its owner site.
                    Some(owner) => (owner != source).then_some("a group not owned by the source"),
                    // A direct conversation's id is its two members'
                    // hash, and one of them made it, at their home.
                    None => {
                        let ids: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
                        let matches = match ids.as_slice() {
                            [a, b] => direct_conversation_id(a, b) == conversation.id,
                            _ => false,
                        };
                        if !matches {
                            Some("a direct conversation whose members do not make its id")
                        } else if !ids.iter().any(|user| homed_at_source(user)) {
                            Some("a direct conversation of no user homed at the source")
                        } else {
                            None
                        }
                    }
                }
            }
            Change::Receipt {
                to_user, from_user, ..
            } => {
                if !homed_at_source(from_user) {
                    Some("a receipt by a user not homed at the source")
                } else if !self.is_local(to_user) {
                    Some("a receipt for a user not homed here")
                } else {
                    None
                }
            }
        }
    }

    async fn apply_change(&self, tx: &Transaction, change: &Replicated) -> Result<(), CoreError> {
        match &change.change {
            Change::Message {
                message,
                recipients,
            } => {
                if store::message_position(tx, &message.conv_id, &message.msg_id)
                    .await?
                    .is_some()
                {
                    return Ok(());
                }
                store::put_message(tx, message)?;
                let entry = InboxEntry::Message {
                    conv_id: message.conv_id.clone(),
                    hlc: message.hlc,
                    origin_region: message.origin_region.clone(),
                    msg_id: message.msg_id.clone(),
                };
                for user in recipients.iter().filter(|u| self.is_local(u)) {
                    self.append_inbox(tx, user, &entry)?;
                }
            }
            Change::Conversation {
                conversation,
                members,
                notify,
            } => {
                let newer = match store::get_conversation(tx, &conversation.id).await? {
                    None => true,
                    // A group's versions come from its owner, so equal
                    // versions are equal states; two regions creating the
                    // same direct conversation keep the earlier creation time.
                    Some(current) => {
                        conversation.version > current.version
                            || (conversation.version == current.version
                                && conversation.created_ms < current.created_ms)
                    }
                };
                if !newer {
                    return Ok(());
                }
                for old in store::list_members(tx, &conversation.id).await? {
                    if !members.iter().any(|m| m.user_id == old.user_id) {
                        store::remove_member(tx, &conversation.id, &old.user_id)?;
                    }
                }
                for member in members {
                    store::put_member(tx, &conversation.id, member)?;
                }
                store::put_conversation(tx, conversation)?;
                let entry = InboxEntry::ConversationChanged {
                    conv_id: conversation.id.clone(),
                    version: conversation.version,
                };
                for user in notify.iter().filter(|u| self.is_local(u)) {
                    self.append_inbox(tx, user, &entry)?;
                }
            }
            Change::Receipt {
                to_user,
                conv_id,
                msg_id,
                from_user,
                kind,
                at_ms,
            } => {
                if self.is_local(to_user)
                    && store::mark_receipt_applied(tx, conv_id, msg_id, from_user, *kind).await?
                {
                    self.append_inbox(
                        tx,
                        to_user,
                        &InboxEntry::Receipt {
                            conv_id: conv_id.clone(),
                            msg_id: msg_id.clone(),
                            from_user: from_user.clone(),
                            kind: *kind,
                            at_ms: *at_ms,
                        },
                    )?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, recipients: usize) -> LogRecord {
        let ids: Vec<String> = (0..recipients).map(|i| format!("u{i}@eu-west")).collect();
        LogRecord {
            offset,
            key: "conv".into(),
            value: ids.join(",").into_bytes().into(),
            appended_ms: 0,
        }
    }

    #[test]
    fn apply_transactions_stay_under_a_megabyte_and_64_records() {
        let small: Vec<LogRecord> = (0..150).map(|i| record(i, 1)).collect();
        let sizes: Vec<usize> = transaction_sized(&small).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [64, 64, 22]);
        // 100-recipient records: ~20 kB each, so about 48 per transaction.
        let wide: Vec<LogRecord> = (0..100).map(|i| record(i, 100)).collect();
        let chunks = transaction_sized(&wide);
        assert!(chunks.len() >= 2);
        for chunk in &chunks {
            let bytes: usize = chunk.iter().map(estimated_bytes).sum();
            assert!(bytes <= BYTES_PER_TRANSACTION, "{bytes}");
        }
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 100);
    }
}
