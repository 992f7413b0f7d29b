//! Meridian under deterministic simulation.
//!
//! Each seed builds a turmoil simulation whose hosts run the real code
//! through the seams of `meridian-seams`: the core (over the in-memory engine
//! under the same transaction layer as fjall), the gateway, and one SDK
//! client per device. The seed drives the workload (users, devices, 1:1 and
//! group chats, sends with retried `client_msg_id`s and replies, devices going
//! offline) and the faults (partitions between any two hosts, core and gateway
//! crashes with restart). One seed in five has delivery watch the inbox head
//! instead of following the inbox feed ([`watches_inbox_head`]); one in
//! seven has cores admit sessions on a tight budget, so reconnects are shed
//! with `go_away` `busy` ([`tight_admission`]). When everything has healed, the invariants of
//! `docs/simulation.md` are checked and a trace hash is returned: the same
//! seed always gives the same hash.
//!
//! Must not be a dependency of anything but the `meridian` binary and tests.
//!
//! # Where things are
//! - `run.rs`: [`run_seed`], which drives one seed from plan to verdict,
//!   and the admin client's membership change.
//! - `workload.rs`: the seed's plan — users, devices, scripts,
//!   topology and the fault schedule — drawn up front from the seed.
//! - `hosts.rs`: the simulated hosts (each region's object storage, core
//!   and gateway) and the setup client. Sites, peers and configurations
//!   come from `meridian_region::plan`, as for the binary; the in-memory
//!   stores, the hosts' addresses and the short timings replace the plan's
//!   choices there.
//! - `device.rs`: one device's script, through the real SDK.
//! - `invariants.rs`: what the devices observed, the invariants checked
//!   over it, and the [`SeedReport`].
//! - `clock.rs` ([`SimClock`]) and `net.rs` ([`TurmoilNetwork`]): the
//!   seams over turmoil's virtual time and network.

mod clock;
mod device;
mod hosts;
mod invariants;
mod net;
mod run;
mod workload;

pub use clock::SimClock;
pub use hosts::{short_retention, tight_admission, watches_inbox_head};
pub use invariants::{SeedOutcome, SeedReport};
pub use net::TurmoilNetwork;
pub use run::run_seed;
pub use workload::Faults;
