//! Meridian's protocol types, in one place, with no logic:
//!
//! - [`core`]: the gRPC messages and the `Core` service between gateway and
//!   core, generated from `proto/meridian/core/v1/core.proto` by tonic.
//! - [`replication`]: the `Replication` service whose `Link` streams carry
//!   changes between regions, from `proto/meridian/replication/v1/`.
//! - [`frames`]: the client WebSocket frames (versioned JSON) and the REST
//!   bodies, with their OpenAPI schemas.
//! - [`ErrorCode`]: the stable error codes shared by every edge
//!   (`docs/protocol.md` lists them).
//!
//! Must not depend on any other Meridian crate.

/// Generated gRPC types and service stubs.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod core {
    tonic::include_proto!("meridian.core.v1");
}

/// Generated gRPC types of the replication links between regions.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod replication {
    tonic::include_proto!("meridian.replication.v1");
}

pub mod frames;
pub mod sites;

mod codes;
pub use codes::{ERROR_CODE_METADATA, ErrorCode};

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
