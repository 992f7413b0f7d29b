//! Meridian's client protocol: what a client and a gateway say to each
//! other, and the few rules both sides need to route by an id.
//!
//! # What it owns
//! - [`frames`]: the WebSocket frames (versioned JSON, typed by `type`) and
//!   the REST bodies and views (`docs/protocol.md` describes each one).
//! - [`ErrorCode`] ([`codes`]): the stable error codes shared by every edge
//!   (`docs/protocol.md` lists them).
//! - [`limits`]: the limits of ids, names, pages and digests, which the
//!   core enforces and the OpenAPI document states.
//! - [`decimal`]: 64-bit integers (HLC stamps) carried as JSON strings, so
//!   JavaScript's number type does not round them.
//! - [`sites`]: [`sites::Topology`], the site (and shard) an id belongs to;
//!   [`region_of`], the region in an id; [`PROTOCOL_VERSION`].
//!
//! With feature `openapi`, the REST types derive `utoipa::ToSchema`: the
//! gateway turns them into its OpenAPI document.
//!
//! # What it must not touch
//! Any other Meridian crate, and any RPC or network stack: no tonic, no
//! prost, no HTTP client or server. It is the one Meridian crate the SDK
//! depends on, so it stays serde only. The gRPC services between gateway,
//! core and regions, and the mapping of [`ErrorCode`] to gRPC statuses, are
//! `meridian-rpc`'s.

pub mod codes;
pub mod decimal;
pub mod frames;
pub mod limits;
pub mod sites;

pub use codes::ErrorCode;

/// The region an id belongs to: what follows its last `@`. Users, devices
/// and groups are `"{uuid}@{region}"` (a device token starts with its device
/// id), so any gateway routes a request to the right region's core without
/// a lookup. `None` for ids without a region (direct conversations, which no
/// single region owns).
pub fn region_of(id: &str) -> Option<&str> {
    id.rsplit_once('@')
        .map(|(_, region)| region)
        .filter(|r| !r.is_empty())
}

/// The WebSocket protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_come_from_ids() {
        assert_eq!(region_of("0193-ab@eu-west"), Some("eu-west"));
        assert_eq!(region_of("dm-0a1b"), None);
        assert_eq!(region_of("x@"), None);
    }
}
