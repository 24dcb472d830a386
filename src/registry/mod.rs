//! A thin client for the Distribution (OCI) API: manifests, blobs, uploads.
//!
//! It knows HTTP, status codes and the registry's error bodies; it knows
//! nothing about verdicts beyond turning a failed request into a [`crate::reason::ProbeError`].

pub mod auth;
pub mod catalog;
pub mod challenge;
pub mod client;
pub mod cloud;
pub mod connect_timing;
pub mod credentials;
pub mod docker_config;
pub mod errors;
pub mod mirrors;
pub mod push;
pub mod referrers;
pub mod route;
pub mod scope;
pub mod tags;
pub mod tls;
pub mod token;
pub mod transport;
