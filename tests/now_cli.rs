//! `pullprobe now` and `pullprobe validate` as a user runs them: the JSON and
//! table outputs, exit codes, probes.yaml with `--probe`, `--frontend`
//! addresses and URLs — the real binary against a real registry — and the
//! progress display: bars on a terminal (a pseudo-terminal from script(1)),
//! nothing when stderr is not one.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use bytes::Bytes;
use common::cli::DEFAULT_TIMEOUT;
use common::fake_registry::{FakeRegistry, TestImage, blob_path, respond_body};
use common::images::unique_image;
use common::process::{require_binary, run_with_timeout};
use common::verdict::{assert_failed, assert_layers_verified, assert_passed, layer_entry, pretty, pull_json};
use common::*;
use futures_util::{StreamExt, stream};
use image_builder::{Format, Image};
use serde_json::Value;

/// The keys of one result and of one layer entry (DESIGN.md, "Result").
const RESULT_KEYS: [&str; 18] = [
    "probe",
    "kind",
    "image",
    "registry",
    "frontend",
    "location",
    "platform",
    "ok",
    "reason",
    "phase",
    "error",
    "registry_error",
    "retries",
    "manifest_digest",
    "started_at",
    "duration_seconds",
    "phases",
    "tls_not_after",
];
const LAYER_KEYS: [&str; 11] = [
    "digest",
    "media_type",
    "size",
    "ok",
    "reason",
    "check",
    "bytes",
    "uncompressed_bytes",
    "duration_seconds",
    "cache_status",
    "served_by",
];

/// A registry with a good image (`cli/good:v1`) and one whose second layer has a flipped byte (`cli/broken:v1`).
async fn registry_with_good_and_broken() -> (Registry, Pushed<Image>, Pushed<Image>) {
    let registry = Registry::start();
    let good = push(&registry, "cli/good", "v1", unique_image(&registry.scratch(), 40, Format::Oci)).await;
    let broken = push(&registry, "cli/broken", "v1", unique_image(&registry.scratch(), 41, Format::Oci)).await;
    let layer = &broken.content.layers[1];
    registry.flip_byte(&layer.digest(), 100);
    (registry, good, broken)
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a test file");
    path
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

#[tokio::test]
async fn json_output_has_every_documented_key() {
    let (_registry, good, broken) = registry_with_good_and_broken().await;
    let pull = pull_json(&[&good.reference, &broken.reference]);
    assert_eq!(pull.code, 1, "one probe failed: {}", pull.dump());
    assert_eq!(pull.results.len(), 2, "{}", pull.dump());
    for result in &pull.results {
        let object = result.as_object().unwrap_or_else(|| panic!("a result is not an object: {result}"));
        for key in RESULT_KEYS {
            assert!(object.contains_key(key), "result lacks {key:?}:\n{}", pretty(result));
        }
        assert_eq!(result.layers().len(), 2, "{}", pretty(result));
        for layer in result.layers() {
            for key in LAYER_KEYS {
                assert!(
                    layer.as_object().is_some_and(|l| l.contains_key(key)),
                    "layer lacks {key:?}:\n{}",
                    pretty(layer)
                );
            }
        }
        let started = result.str_field("started_at").unwrap();
        assert!(
            time::OffsetDateTime::parse(started, &time::format_description::well_known::Rfc3339).is_ok()
                && started.ends_with('Z'),
            "started_at is not RFC 3339 UTC: {started}"
        );
        assert!(result["duration_seconds"].as_f64().is_some_and(|d| d > 0.0), "{}", pretty(result));
        let phases = result["phases"].as_object().unwrap_or_else(|| panic!("phases: {}", pretty(result)));
        assert!(phases.values().all(|v| v.as_f64().is_some_and(|s| s >= 0.0)), "{}", pretty(result));
        assert_eq!(result["retries"].as_u64(), Some(0));
    }
    // In the order given on the command line.
    assert_eq!(pull.results[0].str_field("probe"), Some(good.reference.as_str()));
    assert_passed(&pull.results[0]);
    assert_layers_verified(&pull.results[0], &good.content.layers, Format::Oci);
    let failed = &pull.results[1];
    assert_eq!(failed.str_field("probe"), Some(broken.reference.as_str()));
    assert_failed(failed, "blob_digest_mismatch", "blob");
    let entry = layer_entry(failed, &broken.content.layers[1].digest());
    assert_eq!(entry.reason(), Some("blob_digest_mismatch"));
    assert!(entry.error_message().is_some(), "a failed layer says why: {}", pretty(entry));
}

#[tokio::test]
async fn table_has_a_header_and_one_line_per_result_naming_the_reason() {
    let (registry, good, broken) = registry_with_good_and_broken().await;
    let (code, stdout, stderr) = run_pullprobe(&["now", &good.reference, &broken.reference]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header.first(), Some(&"PROBE"), "{stdout}");
    for column in ["FRONTEND", "PLATFORM", "RESULT", "LAYERS"] {
        assert!(header.contains(&column), "no {column} column:\n{stdout}");
    }
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cells| cells.first().is_some_and(|c| *c == good.reference || *c == broken.reference))
        .collect();
    assert_eq!(rows.len(), 2, "one line per result:\n{stdout}");
    let frontend = registry.host_port();
    for (row, probe) in rows.iter().zip([&good.reference, &broken.reference]) {
        assert_eq!(row[0], probe.as_str(), "in the order given:\n{stdout}");
        assert!(row.contains(&frontend.as_str()) && row.contains(&"linux/amd64"), "{stdout}");
    }
    assert!(rows[0].contains(&"ok") && rows[0].contains(&"2/2"), "{stdout}");
    let fail = rows[1].iter().position(|c| *c == "FAIL").unwrap_or_else(|| panic!("no FAIL:\n{stdout}"));
    assert_eq!(rows[1].get(fail + 1), Some(&"blob_digest_mismatch"), "{stdout}");
    assert!(rows[1].contains(&"1/2"), "one of two layers passed:\n{stdout}");
    // The failure is explained under its line, naming the layer.
    let bad = broken.content.layers[1].digest().to_string();
    assert!(stdout.lines().any(|l| l.starts_with("  ") && l.contains(&bad)), "{stdout}");
    assert!(stdout.contains("2 result(s), 1 failed"), "{stdout}");
}

#[tokio::test]
async fn exit_code_is_0_when_every_probe_passes_and_1_when_one_fails() {
    let (_registry, good, broken) = registry_with_good_and_broken().await;
    for (args, want) in [(vec![good.reference.as_str()], 0), (vec![broken.reference.as_str()], 1)] {
        let mut full = vec!["now"];
        full.extend(args);
        let (code, stdout, stderr) = run_pullprobe(&full);
        assert_eq!(code, want, "{full:?}:\n{stdout}\n{stderr}");
    }
}

#[test]
fn usage_and_configuration_errors_exit_2_without_probing() {
    let dir = tempfile::tempdir().unwrap();
    let invalid = write_file(dir.path(), "invalid.yaml", "defaults:\n  timeout: 5 minutes\n");
    let missing = dir.path().join("missing.yaml");
    let invalid_message = format!("{}:2:12: ", invalid.display());
    let missing_message = missing.display().to_string();
    let cases: [(Vec<&str>, &str); 6] = [
        (vec!["now", "-o", "json", "127.0.0.1:5000/Not/Lowercase:v1"], "Not/Lowercase"),
        (vec!["now", "-o", "json", "127.0.0.1:5000/app:bad tag"], "bad tag"),
        (vec!["now", "-o", "json", "--platform", "linux", "127.0.0.1:5000/app:v1"], "--platform"),
        (vec!["now", "-o", "json", "-c", s(&missing)], &missing_message),
        (vec!["now", "-o", "json", "-c", s(&invalid)], &invalid_message),
        // No IMAGE and no ./probes.yaml in the (empty) working directory.
        (vec!["now", "-o", "json"], "probes.yaml"),
    ];
    for (args, mentions) in cases {
        let (code, stdout, stderr) = run_pullprobe(&args);
        assert_eq!(code, 2, "{args:?}:\n{stdout}\n{stderr}");
        assert!(stdout.is_empty(), "{args:?} printed a result:\n{stdout}");
        assert!(stderr.contains(mentions), "{args:?}: stderr does not mention {mentions:?}:\n{stderr}");
    }
}

#[tokio::test]
async fn config_probes_run_by_name() {
    let (registry, good, broken) = registry_with_good_and_broken().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "probes.yaml",
        &format!(
            "defaults:\n  timeout: 30s\n  location: ci-runner\n\
             registries:\n  - name: test\n    url: {url}\n\
             probes:\n  - name: good\n    registry: test\n    image: cli/good:v1\n\
             \x20 - name: broken\n    registry: test\n    image: cli/broken:v1\n",
            url = registry.url().as_str().trim_end_matches('/'),
        ),
    );

    let pull = pull_json(&["-c", s(&config), "--probe", "good"]);
    assert_eq!(pull.code, 0, "{}", pull.dump());
    let result = pull.only();
    assert_passed(result);
    assert_eq!(result.str_field("probe"), Some("good"));
    assert_eq!(result.str_field("registry"), Some("test"), "the configured registry name labels it");
    assert_eq!(result.str_field("location"), Some("ci-runner"));
    assert_eq!(result.str_field("image"), Some(good.reference.as_str()));
    assert_eq!(result.str_field("manifest_digest"), Some(good.digest.to_string().as_str()));
    assert_layers_verified(result, &good.content.layers, Format::Oci);

    let pull = pull_json(&["-c", s(&config), "--probe", "broken"]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    assert_eq!(pull.only().str_field("probe"), Some("broken"));
    assert_failed(pull.only(), "blob_digest_mismatch", "blob");
    assert_eq!(layer_entry(pull.only(), &broken.content.layers[1].digest())["ok"], false);

    // Every probe of the file, in its order; ./probes.yaml when no -c is given.
    let (code, stdout, stderr) = run_pullprobe_with(&["now", "-o", "json"], &[], Some(dir.path()), DEFAULT_TIMEOUT);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let results = json_results(&stdout);
    let probes: Vec<&str> = results.iter().filter_map(|r| r.str_field("probe")).collect();
    assert_eq!(probes, ["good", "broken"], "{stdout}");

    let (code, stdout, stderr) = run_pullprobe(&["now", "-c", s(&config), "--probe", "nosuch"]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("nosuch"), "{stderr}");
}

#[test]
fn validate_accepts_a_good_file_and_points_at_the_error_in_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_file(
        dir.path(),
        "good.yaml",
        "registries:\n  - name: test\n    url: http://127.0.0.1:5000\n\
         probes:\n  - name: app\n    registry: test\n    image: team/app:1.0\n\
         \x20 - name: base\n    image: 127.0.0.1:5000/base:latest\n    platforms: all\n",
    );
    let (code, stdout, stderr) = run_pullprobe(&["validate", "-c", s(&good)]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), format!("{}: OK (2 probes, 1 registries)", good.display()));

    // A syntax-level error and a reference to a registry that is not defined.
    let cases = [
        ("duration.yaml", "defaults:\n  timeout: 5 minutes\n", 2, 12, "timeout"),
        ("registry.yaml", "probes:\n  - name: app\n    registry: nowhere\n    image: team/app:1.0\n", 3, 15, "nowhere"),
    ];
    for (name, text, line, column, mentions) in cases {
        let bad = write_file(dir.path(), name, text);
        let (code, stdout, stderr) = run_pullprobe(&["validate", "-c", s(&bad)]);
        assert_eq!(code, 2, "{name}: {stdout}\n{stderr}");
        let prefix = format!("{}:{line}:{column}: ", bad.display());
        assert!(stderr.starts_with(&prefix), "{name}: want {prefix:?}…, got:\n{stderr}");
        assert!(stderr.contains(mentions), "{name}: {stderr}");
    }
}

#[tokio::test]
async fn address_frontend_pins_the_connection_and_labels_the_result() {
    let registry = Registry::start();
    let pushed = push(&registry, "cli/pinned", "v1", unique_image(&registry.scratch(), 42, Format::Oci)).await;
    let address = registry.host_port();
    let name = format!("localhost:{}", registry.port());
    let image = format!("{name}/cli/pinned:v1");
    let pull = pull_json(&["--frontend", &address, &image]);
    assert_eq!(pull.code, 0, "{}", pull.dump());
    let result = pull.only();
    assert_passed(result);
    assert_eq!(result.str_field("frontend"), Some(address.as_str()), "the label is the address");
    assert_eq!(result.str_field("registry"), Some(name.as_str()));
    assert_eq!(result.str_field("image"), Some(image.as_str()));
    assert_eq!(result.str_field("manifest_digest"), Some(pushed.digest.to_string().as_str()));
    assert_layers_verified(result, &pushed.content.layers, Format::Oci);
}

#[tokio::test]
async fn address_frontend_with_its_own_port_is_reached_on_that_port() {
    let registry = Registry::start();
    let pushed = push(&registry, "cli/port", "v1", unique_image(&registry.scratch(), 43, Format::Oci)).await;
    let proxy = Nginx::start_proxy(&registry.host_port());
    // The name carries the registry's port; the frontend is the proxy's address and port.
    let name = format!("localhost:{}", registry.port());
    let image = format!("{name}/cli/port:v1");
    let frontend = proxy.host_port();
    let pull = pull_json(&["--frontend", &frontend, &image]);
    assert_eq!(pull.code, 0, "{}", pull.dump());
    let result = pull.only();
    assert_passed(result);
    assert_eq!(result.str_field("frontend"), Some(frontend.as_str()));
    assert_eq!(result.str_field("manifest_digest"), Some(pushed.digest.to_string().as_str()));
    // The bytes came from the pinned address, not from what the name resolves to.
    assert!(result.layers().iter().all(|l| l.str_field("served_by") == Some(frontend.as_str())), "{}", pretty(result));
    let log = proxy.access_log();
    let manifest = log
        .lines()
        .find(|l| l.contains("\"GET /v2/cli/port/manifests/v1 "))
        .unwrap_or_else(|| panic!("the manifest request did not go to the frontend {frontend}:\n{log}"));
    assert!(manifest.contains(&format!("host={}", "localhost")), "Host stays the registry's name: {manifest}");
    for layer in &pushed.content.layers {
        assert!(log.contains(&format!("\"GET /v2/cli/port/blobs/{} ", layer.digest())), "{log}");
    }

    // An address whose port nothing listens on fails, though the name's own port would answer.
    let closed = format!("127.0.0.1:{}", common::process::free_port());
    let pull = pull_json(&["--frontend", &closed, &pushed.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_eq!(result.str_field("frontend"), Some(closed.as_str()));
    assert_eq!(result.reason(), Some("connect_error"), "{}", pretty(result));
    assert_eq!(result.u64_field("retries"), Some(1), "connect errors are retried once: {}", pretty(result));
}

#[tokio::test]
async fn url_frontend_is_probed_at_its_url_beside_the_registry_itself() {
    let registry = Registry::start();
    let pushed = push(&registry, "cli/url", "v1", unique_image(&registry.scratch(), 44, Format::Oci)).await;
    let proxy = Nginx::start_proxy(&registry.host_port());
    let url = format!("http://{}", proxy.host_port());
    let address = registry.host_port();
    let pull = pull_json(&["--frontend", &url, "--frontend", &address, &pushed.reference]);
    assert_eq!(pull.code, 0, "{}", pull.dump());
    let frontends: Vec<&str> = pull.results.iter().filter_map(|r| r.str_field("frontend")).collect();
    assert_eq!(frontends, [url.as_str(), address.as_str()], "exactly the frontends given, in order");
    for result in &pull.results {
        assert_passed(result);
        assert_eq!(result.str_field("manifest_digest"), Some(pushed.digest.to_string().as_str()));
        assert_eq!(result.str_field("registry"), Some(address.as_str()));
    }
    let through_proxy = &pull.results[0];
    let proxy_host = proxy.host_port();
    for (entry, layer) in through_proxy.layers().iter().zip(&pushed.content.layers) {
        assert_eq!(entry.str_field("digest"), Some(layer.digest().to_string().as_str()));
        assert_eq!(entry.u64_field("bytes"), Some(layer.blob.size), "{}", pretty(entry));
        assert_eq!(entry.str_field("served_by"), Some(proxy_host.as_str()), "{}", pretty(entry));
    }
    let log = proxy.access_log();
    assert!(log.contains("\"GET /v2/cli/url/manifests/v1 "), "{log}");
    let direct: &Value = &pull.results[1];
    assert!(direct.layers().iter().all(|l| l.str_field("served_by") == Some(address.as_str())), "{}", pretty(direct));
}

// ---------------------------------------------------------------------------
// Progress on stderr.

/// A fake registry whose one layer (256 KiB) trickles out over about 1.6 s, so that a
/// progress display has time to draw; and the bytes the pull reads (config and layer).
async fn trickling_registry() -> (FakeRegistry, u64) {
    let image = TestImage::new(&[256 * 1024]);
    let blob = image.layers[0].blob.clone();
    let total = image.config.len() as u64 + blob.len() as u64;
    let fake = FakeRegistry::answering_at(&image, &blob_path(&image.layers[0].digest), move |_| {
        let length = blob.len().to_string();
        let chunks: Vec<Bytes> = blob.chunks(8 * 1024).map(Bytes::copy_from_slice).collect();
        let trickle = stream::iter(chunks).then(|chunk| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<Bytes, std::io::Error>(chunk)
        });
        respond_body(StatusCode::OK, &[("content-length", &length)], Body::from_stream(trickle))
    })
    .await;
    (fake, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_progress_is_printed_when_stderr_is_not_a_terminal() {
    let (fake, _) = trickling_registry().await;
    let reference = fake.reference();
    for output in ["table", "json"] {
        let args: Vec<String> = ["now", "-o", output, &reference].map(String::from).into();
        let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_pullprobe_with(&args, &[], None, DEFAULT_TIMEOUT)
        })
        .await
        .expect("running pullprobe");
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        for drawn in ["ETA", "reading manifests", " via ", "\r", "\x1b["] {
            assert!(!stderr.contains(drawn), "-o {output}: stderr is not a terminal, yet {drawn:?}:\n{stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_each_pull_has_a_bar_with_its_total() {
    let script = require_binary("/usr/bin/script", "bsdutils");
    let (first, first_total) = trickling_registry().await;
    let (second, second_total) = trickling_registry().await;
    let docker_config = tempfile::tempdir().expect("temp dir");
    // A pseudo-terminal of 200 columns for stdout and stderr (script(1) from util-linux).
    let command = format!(
        "stty cols 200 rows 50; {} now {} {}",
        env!("CARGO_BIN_EXE_pullprobe"),
        first.reference(),
        second.reference()
    );
    let mut script = std::process::Command::new(script);
    script
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .env("DOCKER_CONFIG", docker_config.path())
        .current_dir(docker_config.path());
    let out = tokio::task::spawn_blocking(move || run_with_timeout(&mut script, DEFAULT_TIMEOUT))
        .await
        .expect("running pullprobe under script");
    let terminal = out.stdout;
    assert_eq!(out.code, 0, "{terminal}\n{}", out.stderr);
    for (fake, total) in [(&first, first_total), (&second, second_total)] {
        let frontend = fake.addr.to_string();
        let bar = terminal
            .split(['\r', '\n'])
            .find(|line| line.contains(&format!("{} via {frontend}", fake.reference())) && line.contains("ETA"))
            .unwrap_or_else(|| panic!("no bar for {}:\n{terminal:?}", fake.reference()));
        let total = indicatif::HumanBytes(total).to_string();
        assert!(bar.contains(&format!("/ {total}")), "the bar shows the total {total}: {bar:?}");
        assert!(bar.contains("/s"), "and a rate: {bar:?}");
    }
    // The bars are gone before the table is printed.
    assert!(terminal.contains("2 result(s), 0 failed"), "{terminal}");
}
