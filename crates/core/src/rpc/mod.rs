//! The tonic side of a core: the `Core` service ([`CoreService`]), the
//! multiplexed session stream of each gateway, the admission of device
//! sessions, delivery to each device session, the stream's batched acks,
//! and the conversions to and from protobuf.
//!
//! Files read top-down: `service.rs` → `stream.rs` → `acks.rs`,
//! `delivery.rs` → `admission.rs`, `convert.rs`.

mod acks;
mod admission;
mod convert;
mod delivery;
mod service;
mod stream;

pub use service::CoreService;
