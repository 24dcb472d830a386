//! The monitoring files in `contrib/` and the metrics text, checked by the
//! real tools: `promtool check rules` / `promtool test rules` for the
//! Prometheus rules, `promtool check metrics` for the exposition, and
//! `icinga2 daemon -C` for the Icinga 2 CheckCommand.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::monitoring::promtool;
use common::process::{require_binary, run_with_timeout};
use pullprobe::output::history::{History, advance};
use pullprobe::output::metrics::{RunCounters, encode_text, gauge_families};
use pullprobe::result::ProbeResult;

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib").join(path)
}

#[test]
fn prometheus_rules_pass_promtool_check_and_unit_tests() {
    let promtool = promtool();
    let dir = contrib("prometheus");
    let check = run_with_timeout(
        Command::new(&promtool).arg("check").arg("rules").arg("pullprobe.rules.yml").current_dir(&dir),
        Duration::from_secs(60),
    );
    assert_eq!(check.code, 0, "promtool check rules:\n{}{}", check.stdout, check.stderr);
    assert!(check.stdout.contains("SUCCESS: 6 rules found"), "{}", check.stdout);
    let test = run_with_timeout(
        Command::new(&promtool).arg("test").arg("rules").arg("pullprobe.rules.test.yml").current_dir(&dir),
        Duration::from_secs(60),
    );
    assert_eq!(test.code, 0, "promtool test rules:\n{}{}", test.stdout, test.stderr);
}

/// Results of every shape the metrics have to carry: passing, failing with a
/// layer, TLS expiry, two frontends that disagree on the manifest.
fn sample_results() -> Vec<ProbeResult> {
    let json = serde_json::json!({"results": [
        {"probe": "golden-base", "kind": "pull", "image": "registry.example.org/base/buster:latest",
         "registry": "prod", "frontend": "10.0.0.1", "location": "eqiad", "platform": "linux/amd64",
         "ok": true, "reason": null, "phase": null, "error": null, "registry_error": null, "retries": 1,
         "manifest_digest": format!("sha256:{}", "a".repeat(64)), "started_at": "2026-11-23T06:00:00Z",
         "duration_seconds": 1.93, "phases": {"dns": 0.001, "connect": 0.002, "manifest": 0.02, "transfer": 1.8},
         "tls_not_after": "2027-01-01T00:00:00Z",
         "layers": [{"digest": format!("sha256:{}", "c".repeat(64)), "media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
                     "size": 123, "ok": true, "reason": null, "check": "full", "bytes": 123,
                     "uncompressed_bytes": 456, "duration_seconds": 0.4, "cache_status": "HIT", "served_by": "swift"}]},
        {"probe": "golden-base", "kind": "pull", "image": "registry.example.org/base/buster:latest",
         "registry": "prod", "frontend": "10.0.0.2", "location": "eqiad", "platform": "linux/amd64",
         "ok": false, "reason": "blob_digest_mismatch", "phase": "blob",
         "error": "layer 1 sha256:…: got sha256:… (123 bytes of 123)", "registry_error": null, "retries": 0,
         "manifest_digest": format!("sha256:{}", "b".repeat(64)), "started_at": "2026-11-23T06:00:00Z",
         "duration_seconds": 0.5, "phases": {"manifest": 0.02, "transfer": 0.4},
         "tls_not_after": "2027-01-01T00:00:00Z",
         "layers": [{"digest": format!("sha256:{}", "c".repeat(64)), "media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
                     "size": 123, "ok": false, "reason": "blob_digest_mismatch", "check": "full", "bytes": 123,
                     "uncompressed_bytes": null, "duration_seconds": 0.3, "cache_status": null, "served_by": null}]}
    ]});
    serde_json::from_value::<pullprobe::result::Report>(json).expect("results").results
}

#[test]
fn metrics_text_passes_promtool_check_metrics() {
    let results = sample_results();
    // Two runs, so the history carries a last success and a failure count.
    let history = advance(&advance(&History::new(), &results), &results);
    let counters = RunCounters::default();
    counters.observe(&results);
    let text = encode_text(&gauge_families(&results, &history), Some(&counters));
    for family in [
        "probe_success",
        "probe_duration_seconds",
        "probe_phase_duration_seconds",
        "probe_last_success_timestamp_seconds",
        "probe_consecutive_failures",
        "probe_last_failure_info",
        "tls_cert_not_after_timestamp_seconds",
        "frontend_consistent",
        "build_info",
        "probe_failures_total",
        "probe_retries_total",
        "bytes_total",
        "layer_duration_seconds",
    ] {
        assert!(text.contains(&format!("# HELP pullprobe_{family} ")), "no HELP for {family}:\n{text}");
        assert!(text.contains(&format!("# TYPE pullprobe_{family} ")), "no TYPE for {family}:\n{text}");
    }
    assert!(!text.contains("sha256:"), "a digest in a label:\n{text}");
    assert!(text.contains(r#"pullprobe_frontend_consistent{probe="golden-base",registry="prod"} 0"#), "{text}");

    // Also the gauges of one passing result alone: families without samples (no failure, no TLS).
    let passing = &results[..1];
    let quiet = encode_text(&gauge_families(passing, &advance(&History::new(), passing)), None);
    for text in [text, quiet] {
        let mut command = Command::new(promtool());
        command.arg("check").arg("metrics");
        let output = run_with_stdin(&mut command, &text);
        assert_eq!(output.0, 0, "promtool check metrics:\n{}\n{}\n--- input:\n{text}", output.1, output.2);
        assert!(output.1.trim().is_empty() && output.2.trim().is_empty(), "lint:\n{}{}", output.1, output.2);
    }
}

fn run_with_stdin(command: &mut Command, input: &str) -> (i32, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `icinga2 daemon -C` on a config with the CheckCommand and a service using it,
/// everything icinga2 writes kept in a temporary directory.
fn icinga2_validate(conf: &Path) -> common::process::CommandOutput {
    let icinga2 = require_binary("/usr/sbin/icinga2", "icinga2-bin");
    let dir = tempfile::Builder::new().prefix("pullprobe-icinga2-").tempdir().expect("temp dir");
    // icinga2 drops root privileges to its own user, which must write here.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let main = dir.path().join("icinga2.conf");
    std::fs::write(
        &main,
        format!(
            "include <itl>\ninclude \"{}\"\n\
             object Host \"registry\" {{ check_command = \"dummy\" }}\n\
             object Service \"pull golden-base\" {{\n  host_name = \"registry\"\n  check_command = \"pullprobe\"\n\
             \x20 vars.pullprobe_probe = \"golden-base\"\n  vars.pullprobe_config = \"/etc/pullprobe/probes.yaml\"\n\
             \x20 vars.pullprobe_warning = 30\n  vars.pullprobe_critical = 90\n\
             \x20 vars.pullprobe_frontends = [\"10.0.0.1\", \"10.0.0.2:8443\"]\n}}\n",
            conf.display()
        ),
    )
    .expect("writing icinga2.conf");
    run_with_timeout(
        Command::new(icinga2)
            .arg("daemon")
            .arg("-C")
            .arg("-c")
            .arg(&main)
            .arg(format!("-DCacheDir={}", dir.path().display())),
        Duration::from_secs(60),
    )
}

#[test]
fn icinga2_check_command_validates() {
    let out = icinga2_validate(&contrib("icinga2/pullprobe.conf"));
    assert_eq!(out.code, 0, "icinga2 daemon -C:\n{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("Instantiated 1 Service"), "{}", out.stdout);

    // The validation is real: a CheckCommand with a broken attribute fails it.
    let broken_dir = tempfile::tempdir().expect("temp dir");
    let broken = broken_dir.path().join("pullprobe.conf");
    let text = std::fs::read_to_string(contrib("icinga2/pullprobe.conf")).expect("conf");
    std::fs::write(&broken, text.replace("timeout = 2m", "timeout = \"two minutes\" +")).expect("write");
    std::fs::set_permissions(broken_dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let out = icinga2_validate(&broken);
    assert_ne!(out.code, 0, "a broken CheckCommand validated:\n{}", out.stdout);
}
