//! Probes: what one check of one image through one frontend does, and running
//! a set of them. One path for every mode: [`plan`] turns a config or a
//! command line into jobs, [`run`] turns jobs into plain
//! [`crate::result::ProbeResult`] values; outputs are computed from those and
//! never re-probe. Each kind has its room: [`pull`], [`canary`], [`discover`], and [`referrers`] (the signatures a pull must find);
//! [`connection`] is how any of them reaches a registry; [`progress`] what a
//! display may show of the pulls while they run.

pub mod bandwidth;
pub mod blob;
pub mod budget;
pub mod canary;
pub mod connection;
pub mod consistency;
pub mod discover;
pub mod expect;
pub mod ledger;
pub mod node_order;
pub mod plan;
pub mod progress;
pub mod pull;
pub mod referrers;
pub mod run;
