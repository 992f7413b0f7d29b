//! The key layout, FoundationDB tuple-encoded under readable subspace names. Every key starts with a string naming its kind:
//!
//! | key | value |
//! |---|---|
//! | `("user", user)` | [`crate::User`] |
//! | `("device", user, device)` | [`crate::Device`] |
//! | `("device_owner", device)` | owning user id |
//! | `("cursor", user, device)` | 12-byte stamp: last acknowledged inbox entry |
//! | `("conv", conv)` | [`crate::Conversation`] |
//! | `("member", conv, user)` | [`crate::Member`] |
//! | `("user_conv", user, conv)` | empty: the user's conversation list |
//! | `("msg", conv, hlc, origin_region, msg_id)` | [`crate::Message`]: history in display order |
//! | `("msg_by_id", conv, msg_id)` | `(hlc, origin_region)`: locate a message by id |
//! | `("inbox", user, stamp)` | [`crate::InboxEntry`]: delivery queue in arrival order (12-byte tuple versionstamp) |
//! | `("inbox_head", user)` | versionstamp of the last commit that wrote the inbox (watched, never read; only where delivery watches it, see [`crate::InboxWaiter`]) |
//! | `("inbox_floor", user, device)` | stamp through which retention removed entries this device had not acknowledged (its `gap`) |
//! | `("idem", device, client_msg_id)` | [`crate::SendRecord`]: first result of a send |
//! | `("vclock", unix_ms)` | versionstamp committed at that time (retention cut-offs) |
//! | `("outbox", dest_region, stamp)` | `(partition key, `[`crate::Replicated`]` JSON)`: what must cross to `dest_region`, written by the transaction that made it |
//! | `("outbox_head", dest_region)` | counter every outbox write bumps (watched by the relay) |
//! | `("outbox_relayed", dest_region)` | counter of entries the relay moved out (depth = head − relayed) |
//! | `("applied", source_region, partition)` | next log offset to apply from that source partition, written in the applying transaction |
//! | `("receipt_seen", conv, msg_id, user, kind)` | empty: a replicated receipt already applied |
//! | `("media", media_id)` | [`crate::Media`]: an upload held by its origin region |
//! | `("media_check", stamp)` | media id: the queue of uploads awaiting their check |
//! | `("media_check_head",)` | counter every enqueue bumps (watched by the checker) |

use meridian_kv::tuple::{Subspace, Versionstamp, pack, pack_with_versionstamp};
use meridian_kv::{KeyRange, prefix_range};

/// A position in an inbox, as stored in keys and cursors: the 12-byte tuple
/// versionstamp (10-byte commit versionstamp, then the 2-byte user version
/// that orders several entries written by one transaction).
pub type Stamp = [u8; 12];

/// The smallest possible stamp: "before everything".
pub const STAMP_ZERO: Stamp = [0u8; 12];

/// The first stamp of the commit with versionstamp `commit`.
pub fn stamp_at_commit(commit: &[u8; 10]) -> Stamp {
    let mut out = [0u8; 12];
    out[..10].copy_from_slice(commit);
    out
}

fn stamp_of(vs: &Versionstamp) -> Stamp {
    *vs.as_bytes()
}

/// `("user", user)`.
pub fn user(user: &str) -> Vec<u8> {
    pack(&("user", user))
}

/// Every user record.
pub fn all_users() -> KeyRange {
    prefix_range(&pack(&("user",)))
}

/// `("device", user, device)`.
pub fn device(user: &str, device: &str) -> Vec<u8> {
    pack(&("device", user, device))
}

/// All devices of `user`.
pub fn devices_of(user: &str) -> KeyRange {
    prefix_range(&pack(&("device", user)))
}

/// `("device_owner", device)`.
pub fn device_owner(device: &str) -> Vec<u8> {
    pack(&("device_owner", device))
}

/// `("cursor", user, device)`.
pub fn cursor(user: &str, device: &str) -> Vec<u8> {
    pack(&("cursor", user, device))
}

/// `("conv", conv)`.
pub fn conversation(conv: &str) -> Vec<u8> {
    pack(&("conv", conv))
}

/// Every conversation record.
pub fn all_conversations() -> KeyRange {
    prefix_range(&pack(&("conv",)))
}

/// `("member", conv, user)`.
pub fn member(conv: &str, user: &str) -> Vec<u8> {
    pack(&("member", conv, user))
}

/// All members of `conv`.
pub fn members_of(conv: &str) -> Subspace {
    Subspace::from_bytes(pack(&("member", conv)))
}

/// `("user_conv", user, conv)`.
pub fn user_conversation(user: &str, conv: &str) -> Vec<u8> {
    pack(&("user_conv", user, conv))
}

/// The conversations of `user`.
pub fn conversations_of(user: &str) -> Subspace {
    Subspace::from_bytes(pack(&("user_conv", user)))
}

/// The history of `conv`, in display order `(hlc, origin_region, msg_id)`.
pub fn messages_of(conv: &str) -> Subspace {
    Subspace::from_bytes(pack(&("msg", conv)))
}

/// `("msg", conv, hlc, origin_region, msg_id)`.
pub fn message(conv: &str, hlc: u64, origin_region: &str, msg_id: &str) -> Vec<u8> {
    pack(&("msg", conv, hlc, origin_region, msg_id))
}

/// `("msg_by_id", conv, msg_id)`.
pub fn message_by_id(conv: &str, msg_id: &str) -> Vec<u8> {
    pack(&("msg_by_id", conv, msg_id))
}

/// Every user's history: `("msg", …)` (the inbox feed follows it).
pub fn all_messages() -> Subspace {
    Subspace::from_bytes(pack(&("msg",)))
}

/// Every user's inbox: `("inbox", …)` (the inbox feed follows it).
pub fn all_inboxes() -> Subspace {
    Subspace::from_bytes(pack(&("inbox",)))
}

/// Every device's inbox floor: `("inbox_floor", …)` (the inbox feed follows it).
pub fn all_inbox_floors() -> Subspace {
    Subspace::from_bytes(pack(&("inbox_floor",)))
}

/// The inbox of `user`.
pub fn inbox_of(user: &str) -> Subspace {
    Subspace::from_bytes(pack(&("inbox", user)))
}

/// The versionstamp template of a new inbox entry for `user`; `user_version`
/// distinguishes entries written by the same transaction.
pub fn new_inbox_entry(user: &str, user_version: u16) -> Vec<u8> {
    pack_with_versionstamp(&("inbox", user, Versionstamp::incomplete(user_version)))
}

/// The key of the inbox entry of `user` at `stamp`.
pub fn inbox_entry(user: &str, stamp: &Stamp) -> Vec<u8> {
    let mut commit = [0u8; 10];
    commit.copy_from_slice(&stamp[..10]);
    let user_version = u16::from_be_bytes([stamp[10], stamp[11]]);
    pack(&("inbox", user, Versionstamp::complete(commit, user_version)))
}

/// Decodes the stamp of an inbox key of `user`.
pub fn inbox_stamp(user: &str, key: &[u8]) -> Option<Stamp> {
    inbox_of(user)
        .unpack::<(Versionstamp,)>(key)
        .ok()
        .map(|(vs,)| stamp_of(&vs))
}

/// `("inbox_head", user)`.
pub fn inbox_head(user: &str) -> Vec<u8> {
    pack(&("inbox_head", user))
}

/// `("inbox_floor", user, device)`.
pub fn inbox_floor(user: &str, device: &str) -> Vec<u8> {
    pack(&("inbox_floor", user, device))
}

/// `("idem", device, client_msg_id)`.
pub fn idempotency(device: &str, client_msg_id: &str) -> Vec<u8> {
    pack(&("idem", device, client_msg_id))
}

/// The versionstamp clock.
pub fn vclock() -> Subspace {
    Subspace::from_bytes(pack(&("vclock",)))
}

/// `("vclock", unix_ms)`.
pub fn vclock_at(unix_ms: u64) -> Vec<u8> {
    pack(&("vclock", unix_ms))
}

/// The outbox towards `dest_region`.
pub fn outbox_of(dest_region: &str) -> Subspace {
    Subspace::from_bytes(pack(&("outbox", dest_region)))
}

/// The versionstamp template of a new outbox entry.
pub fn new_outbox_entry(dest_region: &str, user_version: u16) -> Vec<u8> {
    pack_with_versionstamp(&(
        "outbox",
        dest_region,
        Versionstamp::incomplete(user_version),
    ))
}

/// The key of the outbox entry towards `dest_region` at `stamp`.
pub fn outbox_entry(dest_region: &str, stamp: &Stamp) -> Vec<u8> {
    let mut commit = [0u8; 10];
    commit.copy_from_slice(&stamp[..10]);
    let user_version = u16::from_be_bytes([stamp[10], stamp[11]]);
    pack(&(
        "outbox",
        dest_region,
        Versionstamp::complete(commit, user_version),
    ))
}

/// Decodes the stamp of an outbox key towards `dest_region`.
pub fn outbox_stamp(dest_region: &str, key: &[u8]) -> Option<Stamp> {
    outbox_of(dest_region)
        .unpack::<(Versionstamp,)>(key)
        .ok()
        .map(|(vs,)| stamp_of(&vs))
}

/// `("outbox_relayed", dest_region)`.
pub fn outbox_relayed(dest_region: &str) -> Vec<u8> {
    pack(&("outbox_relayed", dest_region))
}

/// `("outbox_head", dest_region)`.
pub fn outbox_head(dest_region: &str) -> Vec<u8> {
    pack(&("outbox_head", dest_region))
}

/// `("applied", source_region, partition)`.
pub fn applied(source_region: &str, partition: u32) -> Vec<u8> {
    pack(&("applied", source_region, partition))
}

/// Every applied offset recorded for `source_region`.
pub fn applied_of(source_region: &str) -> Subspace {
    Subspace::from_bytes(pack(&("applied", source_region)))
}

/// `("applied_epoch", source)`: the epoch of `source`'s log the applied
/// offsets belong to.
pub fn applied_epoch(source_region: &str) -> Vec<u8> {
    pack(&("applied_epoch", source_region))
}

/// `("receipt_seen", conv, msg_id, user, kind)`.
pub fn receipt_seen(conv: &str, msg_id: &str, user: &str, kind: &str) -> Vec<u8> {
    pack(&("receipt_seen", conv, msg_id, user, kind))
}

/// Every `receipt_seen` record of one message.
pub fn receipts_seen_of(conv: &str, msg_id: &str) -> Subspace {
    Subspace::from_bytes(pack(&("receipt_seen", conv, msg_id)))
}

/// `("media", media_id)`.
pub fn media(media_id: &str) -> Vec<u8> {
    pack(&("media", media_id))
}

/// Every media record.
pub fn all_media() -> KeyRange {
    prefix_range(&pack(&("media",)))
}

/// The check queue.
pub fn media_checks() -> Subspace {
    Subspace::from_bytes(pack(&("media_check",)))
}

/// The versionstamp template of a new check-queue entry.
pub fn new_media_check() -> Vec<u8> {
    pack_with_versionstamp(&("media_check", Versionstamp::incomplete(0)))
}

/// `("media_check_head",)`.
pub fn media_check_head() -> Vec<u8> {
    pack(&("media_check_head",))
}
