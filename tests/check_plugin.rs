//! `pullprobe check`, the Monitoring Plugins / Icinga plugin, against a real
//! registry: the status line, the exit code of each state, and perfdata that
//! the Monitoring Plugins perfdata grammar accepts.

mod common;

use std::time::Duration;

use common::*;
use regex::Regex;

/// `'label'=value[UOM];[warn];[crit];[min];[max]`, as the Monitoring Plugins
/// development guidelines define it (thresholds in range format).
fn perfdata_item() -> Regex {
    let number = r"-?[0-9]+(\.[0-9]+)?";
    let range = format!(r"@?(~|{number})?(:({number})?)?");
    Regex::new(&format!(
        r"^('[^'=]+'|[^'= ]+)={number}(s|ms|us|%|B|KB|MB|TB|c)?(;({range})?(;({range})?(;({number})?(;({number})?)?)?)?)?$"
    ))
    .unwrap()
}

/// The perfdata of the status line (after `|`), checked item by item; returns label → value+UOM.
fn perfdata(stdout: &str) -> Vec<(String, String)> {
    let first = stdout.lines().next().unwrap_or_default();
    let (_, data) = first.split_once(" | ").unwrap_or_else(|| panic!("no perfdata in {first:?}"));
    let grammar = perfdata_item();
    data.split(' ')
        .map(|item| {
            assert!(grammar.is_match(item), "perfdata item {item:?} does not match the grammar (line {first:?})");
            let (label, rest) = item.split_once('=').unwrap();
            (label.to_string(), rest.split(';').next().unwrap().to_string())
        })
        .collect()
}

fn check(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    run_pullprobe_with(&all, &[], None, Duration::from_secs(120))
}

#[tokio::test]
async fn check_states_exit_codes_and_perfdata() {
    let registry = Registry::start();
    let image = push_small_image(&registry, "plugin/app", "v1").await;
    let reference = image.reference.as_str();

    // OK: every byte verified, within the thresholds.
    let (code, stdout, stderr) = check(&[reference, "-w", "30", "-c", "60"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with(&format!("PULLPROBE OK - {reference} {}: slowest of 1 in ", registry.host_port())));
    assert_eq!(stdout.lines().next().unwrap().matches(" | ").count(), 1);
    let data = perfdata(&stdout);
    let labels: Vec<&str> = data.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["time", "bytes", "layers", "frontends_failed"]);
    assert!(stdout.contains(";30;60;0 "), "thresholds in perfdata: {stdout}");
    let bytes: u64 = data[1].1.trim_end_matches('B').parse().unwrap();
    let pushed: u64 = image.content.layers.iter().map(|l| l.blob.size).sum();
    assert_eq!(bytes, pushed, "every layer byte received once");
    assert_eq!(data[2].1, "2");
    assert_eq!(data[3].1, "0");

    // WARNING: slower than -w (a threshold no real pull meets).
    let (code, stdout, _) = check(&[reference, "-w", "0.0001", "-c", "60"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.starts_with("PULLPROBE WARNING - "), "{stdout}");
    assert!(stdout.lines().next().unwrap().contains("(over 0.0001s)") || stdout.contains("(over 0s)"), "{stdout}");
    perfdata(&stdout);

    // CRITICAL: a corrupt layer, named in the status line.
    let layer = image.content.layers[1].digest();
    registry.flip_byte(&layer, 100);
    let (code, stdout, _) = check(&[reference, "-w", "30", "-c", "60"]);
    assert_eq!(code, 2, "{stdout}");
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "PULLPROBE CRITICAL - {reference} {}: blob_digest_mismatch layer {layer} | ",
            registry.host_port()
        )),
        "{first}"
    );
    let data = perfdata(&stdout);
    assert_eq!(data[3], ("frontends_failed".to_string(), "1".to_string()));
    assert!(stdout.lines().count() >= 2, "long output names the result: {stdout}");

    // CRITICAL: nothing listening (connect_error is a registry-side failure, not UNKNOWN).
    let closed = common::process::free_port();
    let unreachable = format!("127.0.0.1:{closed}/plugin/app:v1");
    let (code, stdout, _) = check(&[&unreachable, "-t", "20"]);
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.starts_with(&format!("PULLPROBE CRITICAL - {unreachable} 127.0.0.1:{closed}: connect_error")));
    perfdata(&stdout);

    // UNKNOWN: pullprobe's own problems — a bad config, bad arguments.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probes.yaml");
    std::fs::write(&config, "defaults:\n  timeout: 5 minutes\n").unwrap();
    let (code, stdout, _) = check(&["--probe", "x", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.starts_with("PULLPROBE UNKNOWN - "), "{stdout}");
    assert!(stdout.contains("probes.yaml:2:12"), "the error points into the file: {stdout}");
    let (code, stdout, _) = check(&[]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.starts_with("PULLPROBE UNKNOWN - "), "{stdout}");
    let (code, stdout, _) = check(&[reference, "-w", "soon"]);
    assert_eq!(code, 3, "{stdout}");

    // -V and --help.
    let (code, stdout, _) = check(&["-V"]);
    assert_eq!(code, 0);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
    let (code, stdout, _) = check(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("UNKNOWN (3)") && stdout.contains("-c, --critical"), "{stdout}");
}
