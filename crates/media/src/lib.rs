//! Media for Meridian: object storage through aws-sdk-s3 and the checks an
//! upload must pass before a message may carry it.
//!
//! # What this crate owns
//! - [`objects::Bucket`]: one region's bucket — presigned PUTs bound to a
//!   declared size, type and SHA-256; presigned GETs; the reads, writes and
//!   deletes of the checks and the retention sweep.
//! - [`inspect::inspect`]: one pass over an upload's bytes checks its size,
//!   hash and type, and makes an image's thumbnail ([`thumbnail`]).
//! - [`types`]: the allow-list of content types and the sniffing rules.
//! - [`embedded::EmbeddedS3`]: the S3 server of local runs and tests
//!   (`s3s` + `s3s-fs`, SigV4 on), so development, tests and production run
//!   the same client code; over [`memory::MemoryS3`] it serves the
//!   deterministic simulation.
//!
//! # What it must not touch
//! No store, no domain rules (who may upload or download what is decided by
//! `meridian-core`), no HTTP edge. Blocking or CPU-heavy work runs through
//! the injected [`meridian_seams::Offload`].

pub mod embedded;
pub mod inspect;
pub mod memory;
pub mod objects;
mod presigned;
pub mod seam_http;
pub mod thumbnail;
pub mod types;

pub use embedded::EmbeddedS3;
pub use inspect::{Declared, InspectError, Inspection, Rejection, inspect};
pub use objects::{Bucket, Buckets, ObjectError, ObjectMeta, S3Credentials, S3Target};
pub use presigned::Presigned;
