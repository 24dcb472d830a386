//! Probes: what one check of one image through one frontend does, and running
//! a set of them. Each probe returns plain [`crate::result::ProbeResult`] values;
//! outputs are computed from those and never re-probe.

pub mod budget;
pub mod canary;
pub mod consistency;
pub mod discover;
pub mod expect;
pub mod ledger;
pub mod node_order;
pub mod plan;
pub mod pull;
pub mod run;
