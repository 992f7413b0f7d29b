//! Meridian's gRPC, between its own processes: the services tonic generates
//! from the `.proto` files in the repository's `proto/` folder.
//!
//! # What it owns
//! - [`core`]: the gRPC messages and the `Core` service between gateway and
//!   core, generated from `proto/meridian/core/v1/core.proto`.
//! - [`replication`]: the `Replication` service whose `Link` streams carry
//!   changes between regions, from `proto/meridian/replication/v1/`.
//! - [`ErrorCodeExt`] ([`codes`]): each [`meridian_wire::ErrorCode`] as a
//!   tonic status (its gRPC code, and the code itself in the metadata key
//!   [`ERROR_CODE_METADATA`]), and back.
//!
//! # What it must not touch
//! Any Meridian crate but `meridian-wire`, and any logic beyond the
//! generated code and the code mapping. The client protocol (frames, REST
//! bodies, error codes, sites) is `meridian-wire`'s: clients build without
//! this crate, tonic or prost.

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

pub mod codes;
pub use codes::{
    ERROR_CODE_METADATA, ErrorCodeExt, RETRY_AFTER_METADATA, retry_after, with_retry_after,
};
