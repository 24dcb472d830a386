//! The real-server test harness: every integration test does `mod common;`.
//!
//! - [`Registry`]: a real distribution registry on loopback, with storage faults.
//! - [`Nginx`]: a real nginx in front of registries — proxy, `proxy_cache` (with the
//!   poisoned-cache fault), round-robin balancer, mTLS.
//! - [`fake_registry`]: a small in-process registry for answers no real one gives.
//! - [`skopeo`]: an independent client that checks digests.
//! - [`images`]: standard test images, built and pushed.
//! - [`cli`]: run the `pullprobe` binary and read its JSON.
//! - [`kube`]: a Kubernetes API server stand-in (HTTPS, bearer token, the API's JSON).
//! - [`verdict`]: check a result against what the image builder built.
//!
//! A missing server binary fails the test with the `apt-get install` line that fixes it.
// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod chart;
pub mod cli;
pub mod cloud;
pub mod fake_registry;
pub mod images;
pub mod kube;
pub mod monitoring;
pub mod nginx;
pub mod pki;
pub mod process;
pub mod registry;
pub mod serve;
pub mod skopeo;
pub mod verdict;

pub use cli::{ResultJson, json_results, result_for, run_pullprobe, run_pullprobe_measured, run_pullprobe_with};
pub use images::{Pushed, client, push, push_multi_arch_index, push_small_docker_image, push_small_image, push_via};
pub use nginx::Nginx;
pub use process::{http_get, http_request};
pub use registry::{Registry, RegistryOptions};
