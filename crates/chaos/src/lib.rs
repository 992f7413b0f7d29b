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
//! - [`workload`], [`device`], [`idle`]: the users, as SDK clients: who
//!   they are and their conversations, what each device does, and the
//!   idle connections a gateway holds besides.
//! - [`record`], [`observe`]: what the clients did and saw, timed; what
//!   the servers' metrics, memory and bad-input answers showed.
//! - [`invariants`]: the contract checked on what the clients observed,
//!   each verdict with its evidence.
//! - [`run`]: one scenario from start to stop, with [`supervisor`]
//!   restarting what exits on its own; [`outcome`]: the verdicts and
//!   figures from what it gathered; [`report`], [`html`]: `report.json`'s
//!   schema and computations, and the self-contained `report.html`.
//!
//! # What it must not touch
//! Meridian's internals: it drives the `meridian` binary's processes, the
//! network between them (`meridian-faultproxy`) and the SDK, as an
//! operator and users would, and judges only what they can observe.

pub mod cluster;
pub mod device;
pub mod faults;
pub mod html;
pub mod idle;
pub mod invariants;
pub mod observe;
pub mod outcome;
pub mod record;
pub mod report;
pub mod run;
pub mod scenario;
pub mod supervisor;
pub mod workload;

pub use cluster::{Cluster, ClusterError, ClusterOptions};
pub use report::{Report, ScenarioReport};
pub use run::{LogChoice, RunOptions, run_scenario};
pub use scenario::{Fault, FaultKind, Profile, Scenario, ScenarioError};
