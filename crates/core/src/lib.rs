//! The messaging service of one region: registration and devices, 1:1 and
//! group conversations, the send path, per-device delivery from the inbox,
//! acks, receipts, history and retention — and the tonic service that
//! exposes them to gateways.
//!
//! # Shape
//! - [`Messaging`] holds the domain rules; each operation is one
//!   transaction over `meridian-store` (a send writes the message, every
//!   member's inbox entry and inbox head, and the idempotency record at once).
//! - [`grpc::CoreService`] is the tonic `Core` service: unary calls for
//!   request/response operations, one multiplexed `Session` stream per
//!   gateway for sends, acks, receipts and deliveries.
//! - [`retention::Sweeper`] prunes inboxes and history past retention, and
//!   deletes media past theirs.
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
//!
//! # What it must not touch
//! No HTTP or WebSocket types (the gateway owns the client edge), no S3
//! calls except through `meridian-media`, no storage
//! engine (only `meridian-kv`'s interface), no wall clock or randomness except
//! through `meridian-seams`.

mod apply;
mod config;
mod error;
pub mod grpc;
mod hlc;
pub mod media;
pub mod media_check;
mod members_cache;
mod messaging;
pub mod peers;
pub mod retention;
mod session;
mod validate;

pub use apply::ReplicationApplier;
pub use config::{CoreConfig, MediaLimits};
pub use error::CoreError;
pub use hlc::{Hlc, HlcError, physical_ms, stamp_at};
pub use media::MediaDeps;
pub use messaging::{
    Caller, ConversationDetail, Credentials, Messaging, SendInput, direct_conversation_id,
};
