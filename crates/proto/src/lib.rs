//! Meridian's protocol types, in one place, with no logic:
//!
//! - [`core`]: the gRPC messages and the `Core` service between gateway and
//!   core, generated from `proto/meridian/core/v1/core.proto` by tonic.
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

pub mod frames;

mod codes;
pub use codes::{ERROR_CODE_METADATA, ErrorCode};

/// The WebSocket protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
