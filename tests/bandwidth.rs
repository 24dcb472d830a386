//! `limits.max_bytes_per_second`: every pull of a `serve` process shares one
//! cap on the bytes per second it reads. Against a real registry, a cap far
//! below the image's size slows the pull (it still passes: work is slowed,
//! never skipped) and `/metrics` says how long pulls waited for it. No timing
//! is asserted beyond "they waited".

mod common;

use std::path::Path;
use std::time::Duration;

use common::serve::Serve;
use common::{Registry, push_small_image, run_pullprobe};

/// The value of the first sample of `family` in a `/metrics` text.
fn value(text: &str, family: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(family) && !l.starts_with('#'))?.rsplit(' ').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bandwidth_cap_slows_pulls_and_says_so() {
    let registry = Registry::start();
    push_small_image(&registry, "small", "latest").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probes.yaml");
    let text = format!(
        "defaults: {{interval: 2s, timeout: 1m}}\n\
         registries:\n  - name: local\n    url: {}\n\
         probes:\n  - name: small\n    registry: local\n    image: small:latest\n\
         limits:\n  max_bytes_per_second: 64KiB\n",
        registry.url()
    );
    std::fs::write(&config, text).unwrap();
    let serve = Serve::start(Path::new(&config));
    let metrics = serve.wait_for(
        "/metrics",
        |text| {
            text.contains("pullprobe_probe_success{")
                && value(text, "pullprobe_serve_bandwidth_wait_seconds").is_some_and(|s| s > 0.0)
        },
        Duration::from_secs(60),
    );
    assert_eq!(value(&metrics, "pullprobe_probe_success{"), Some(1.0), "slowed, not failed:\n{metrics}");

    // Without the cap, no such series.
    let uncapped = dir.path().join("uncapped.yaml");
    let text = std::fs::read_to_string(&config).unwrap().replace("limits:\n  max_bytes_per_second: 64KiB\n", "");
    std::fs::write(&uncapped, text).unwrap();
    let serve = Serve::start(&uncapped);
    let metrics = serve.wait_for("/metrics", |text| text.contains("pullprobe_probe_success{"), Duration::from_secs(60));
    assert!(!metrics.contains("pullprobe_serve_bandwidth_wait_seconds "), "{metrics}");
}

#[test]
fn a_cap_below_a_kibibyte_does_not_validate() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probes.yaml");
    std::fs::write(&config, "limits:\n  max_bytes_per_second: 100\n").unwrap();
    let (code, _, stderr) = run_pullprobe(&["validate", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("probes.yaml:2:25") && stderr.contains("0 (off) or at least 1KiB"), "{stderr}");
}
