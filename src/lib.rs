//! pullprobe: a synthetic pull prober for container registries.
//!
//! It pulls the images that matter through each registry frontend separately,
//! verifies every byte the way a container runtime would, and reports a result
//! per (probe, frontend, platform) with a stable failure reason.
//!
//! - [`config`] reads probes.yaml; [`reference`] parses image references.
//! - [`registry`] speaks the Distribution API and knows nothing about verdicts.
//! - [`signature`] judges cosign and DSSE signatures already read (keys, payloads, ECDSA P-256).
//! - [`verify`] is streaming readers (digest, count, decompress, tar walk) that know nothing about HTTP.
//! - [`probe`] joins them for one image on one frontend and returns a [`result::ProbeResult`];
//!   every mode takes one path through it: [`probe::plan`] → [`probe::run`] → results.
//! - [`output`] turns results into a table, JSON and the rest; it never touches the network.
//! - [`cli`] (`now`, `check`, `validate`) and [`serve`] start runs and say where results go.

// The two exceptions: `verify::igzip`, the calls into ISA-L's C inflater, and
// `verify::sha256`, the SHA-NI loop that hashes a layer's two streams together.
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod digest;
pub mod frontend;
pub mod glob;
pub mod manifest;
pub mod media_types;
pub mod output;
pub mod platform;
pub mod probe;
pub mod reason;
pub mod redact;
pub mod reference;
pub mod registry;
pub mod result;
pub mod serve;
pub mod shard;
pub mod signature;
pub mod verify;
