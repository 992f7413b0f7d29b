//! Meridian under deterministic simulation.
//!
//! Each seed builds a turmoil simulation whose hosts run the real code
//! through the seams of `meridian-seams`: the core (over the in-memory engine
//! under the same transaction layer as fjall), the gateway, and one SDK
//! client per device. The seed drives the workload (users, devices, 1:1 and
//! group chats, sends with retried `client_msg_id`s and replies, devices going
//! offline) and the faults (partitions between any two hosts, core and gateway
//! crashes with restart). When everything has healed, the invariants of
//! `docs/simulation.md` are checked and a trace hash is returned: the same
//! seed always gives the same hash.
//!
//! Must not be a dependency of anything but the `meridian` binary and tests.

mod clock;
mod net;
mod run;
mod workload;

pub use clock::SimClock;
pub use net::TurmoilNetwork;
pub use run::{Faults, SeedOutcome, SeedReport, run_seed};
