//! The seams through which Meridian touches the outside world: wall time,
//! randomness, ids and the network — and [`Backoff`], the one retry delay
//! (its jitter drawn from the injected [`Rng`]).
//!
//! Every component receives a [`Clock`], an [`Rng`] (and the [`Ids`] made from
//! both) and a `net::Network` (feature `net`) as parameters. Production wiring passes the
//! real implementations defined here; the deterministic simulation passes
//! simulated ones. Nothing else in the workspace may read the system clock,
//! draw unseeded randomness, bind a socket or spawn a thread — `clippy.toml`
//! bans those calls, and this crate is the one place allowed to make them.
//!
//! This crate must not depend on any other Meridian crate.

pub mod backoff;
pub mod clock;
pub mod ids;
pub mod limit;
#[cfg(feature = "net")]
pub mod net;
pub mod offload;
pub mod rng;
pub mod shutdown;

pub use backoff::Backoff;
pub use clock::{Clock, SharedClock, SystemClock};
pub use ids::Ids;
pub use offload::Offload;
pub use rng::Rng;
