//! The messaging service of one region: registration and devices, 1:1 and
//! group conversations, the send path, per-device delivery from the inbox,
//! acks, receipts, history and retention — and the tonic service that
//! exposes them to gateways.
//!
//! # Shape
//! - [`Messaging`] (`messaging.rs`: the type, its constructor, the guards
//!   and helpers its operations share) holds the domain rules; each
//!   operation is one transaction over `meridian-store` (a send writes the
//!   message, every member's inbox entry and inbox head, and the
//!   idempotency record at once). The operations are `impl Messaging`
//!   blocks by aggregate: `accounts.rs` (users, devices, tokens),
//!   `conversations.rs` (direct and group conversations, members),
//!   `send.rs` (send, receipts, history), `cursors.rs` (acks, device
//!   cursors), [`media`] and `apply.rs`. [`Caller`] (`caller.rs`) is who
//!   acts.
//! - [`rpc::CoreService`] is the tonic `Core` service: unary calls for
//!   request/response operations, one multiplexed `Session` stream per
//!   gateway for sends, acks, receipts and deliveries. The module [`rpc`]
//!   holds the service (`service.rs`), the session stream (`stream.rs`),
//!   delivery to each device session (`delivery.rs`), the stream's batched
//!   acks (`acks.rs`) and the conversions to protobuf (`convert.rs`).
//! - [`retention::Sweeper`] prunes inboxes and history past retention, and
//!   deletes media past theirs.
//! - [`health`] watches the store: a failed engine (fail-stop) or a stalled
//!   commit makes the core unready, with alarm metrics.
//! - Media ([`media`]): upload slots (presigned PUTs), the check worker
//!   ([`media_check::MediaChecker`]: size, hash, type, thumbnails), sends
//!   carrying ready media, download URLs for members.
//! - Regions: users, devices and groups are `"{uuid}@{region}"`. A send is
//!   accepted by the sender's home core, which writes members homed elsewhere
//!   an outbox entry per region in the same transaction; group changes are
//!   made at the group's owner region and replicate as versioned state;
//!   [`ReplicationApplier`] applies what arrives from other regions exactly
//!   once. [`peers::Peers`] makes the few cross-region calls an operation
//!   needs (does a user homed elsewhere exist?).
//! - Below those: the members cache of the send path (`members_cache.rs`),
//!   the HLC ([`Hlc`]), input checks (`validate.rs`), limits
//!   ([`CoreConfig`]) and errors ([`CoreError`]).
//!
//! # What it must not touch
//! No HTTP or WebSocket types (the gateway owns the client edge), no S3
//! calls except through `meridian-media`, no storage
//! engine (only `meridian-kv`'s interface), no wall clock or randomness except
//! through `meridian-seams`.

mod accounts;
mod apply;
mod caller;
mod config;
mod conversations;
mod cursors;
mod error;
pub mod health;
mod hlc;
pub mod media;
pub mod media_check;
mod members_cache;
mod messaging;
pub mod peers;
pub mod retention;
pub mod rpc;
mod send;
mod validate;

pub use accounts::Credentials;
pub use apply::ReplicationApplier;
pub use caller::Caller;
pub use config::{CoreConfig, MediaLimits};
pub use conversations::{ConversationDetail, direct_conversation_id};
pub use error::CoreError;
pub use hlc::{Hlc, HlcError, physical_ms, stamp_at};
pub use messaging::{MediaDeps, Messaging};
pub use send::SendInput;
