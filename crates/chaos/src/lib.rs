//! The chaos failure suite: QA's tool for running Meridian's real binaries
//! through an operator's bad day.
//!
//! - [`scenario`]: the files QA writes (`chaos/scenarios/*.toml`): the
//!   load's length, the workload and the fault schedule, read and checked
//!   before anything starts.
//! - [`cluster`]: three regions as real processes (a core and its
//!   gateways each) on loopback, every path between two regions through
//!   a fault proxy of its own; nothing left running when it ends.
//! - [`faults`]: each fault put on the cluster (signals to its processes,
//!   its proxies' state) and healed.
//! - [`invariants`]: the contract checked on what the clients observed,
//!   each verdict with its evidence.
//!
//! # What it must not touch
//! Meridian's internals: it drives the `meridian` binary's processes, the
//! network between them (`meridian-faultproxy`) and the SDK, as an
//! operator and users would, and judges only what they can observe.

pub mod cluster;
pub mod faults;
pub mod invariants;
pub mod scenario;

pub use cluster::{Cluster, ClusterError, ClusterOptions};
pub use scenario::{Fault, FaultKind, Profile, Scenario, ScenarioError};
