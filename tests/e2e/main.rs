//! End-to-end tests: a whole region (fjall store, core, gateway) on loopback
//! sockets, driven through the public protocol by the SDK and raw clients.

// Test code: a failed expectation should panic with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod abuse;
mod authorization;
mod bad_input;
mod clock_abuse;
mod delivery;
mod edge;
mod fail_stop;
mod groups;
mod limits;
mod media;
mod receipts;
mod regions;
mod retention;
mod sharding;
mod trust;
