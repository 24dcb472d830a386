//! The write-path canary against real registries: a push through nginx read
//! back through every frontend, with old canaries cleaned up; the outage it was
//! built for — registry instances with separate storage behind one
//! round-robin load balancer, where a chunked upload's session lives on the
//! other instance (`BLOB_UPLOAD_UNKNOWN`) — reproduced; a frontend with its own
//! storage found `not_replicated`; shared storage passing; a registry that
//! refuses deletes reported as a warning; `serve` running canaries on their
//! interval with their metrics; and hostile upload answers from a small
//! in-test server (202 without `Location`, a `Location` on another host, a 500
//! in the middle of an upload).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::Value;

use common::cli::config_file;
use common::fake_registry::{Content, FakeRegistry, Seen, respond};
use common::process::http_request;
use common::{Nginx, Registry, RegistryOptions, ResultJson, json_results, push, result_for, run_pullprobe_with};
use image_builder::{Format, ImageBuilder, LayerBuilder, LayerCompression};

const REPO: &str = "pullprobe/canary";
const LOCATION: &str = "test";
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// A probes.yaml with one canary probe on registry `reg` at `url`, read back
/// through `frontends` (name, URL); `more` is appended to `probes:`.
fn config(url: &str, frontends: &[(&str, String)], more: &str) -> (tempfile::TempDir, String) {
    let listed: Vec<String> = frontends.iter().map(|(name, url)| format!("{{name: {name}, url: {url}}}")).collect();
    let yaml = format!(
        "defaults:\n  location: {LOCATION}\n  timeout: 30s\n\
         registries:\n  - name: reg\n    url: {url}\n    frontends: [{}]\n\
         probes:\n  - name: write-path\n    registry: reg\n    \
         canary: {{repository: {REPO}, consistency_deadline: 2s, size: 64KiB, chunk_size: 16KiB, sessions: 2}}\n{more}",
        listed.join(", ")
    );
    config_file(&yaml)
}

/// `pullprobe now -c CONFIG -o json ARGS…`: exit code, results, stderr.
fn run_now(config: &str, args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut all = vec!["now", "-c", config, "-o", "json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_pullprobe_with(&all, &[], None, RUN_LIMIT);
    let results = if stdout.trim().is_empty() { Vec::new() } else { json_results(&stdout) };
    (code, results, stderr)
}

/// The tags of the canary repository, sorted, straight from the registry.
fn tags(host_port: &str) -> Vec<String> {
    let response = http_request("GET", host_port, &format!("/v2/{REPO}/tags/list"), &[]).expect("GET tags/list");
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    let list: Value = serde_json::from_slice(&response.body).expect("tag list JSON");
    let mut tags: Vec<String> =
        list["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(String::from)).collect();
    tags.sort();
    tags
}

fn manifest_status(host_port: &str, reference: &str) -> u16 {
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    http_request("HEAD", host_port, &format!("/v2/{REPO}/manifests/{reference}"), &accept)
        .expect("HEAD manifest")
        .status
}

/// Push a distinct small image under each tag (distinct, so deleting one manifest deletes one tag).
async fn seed(registry: &Registry, tags: &[&str]) -> Vec<String> {
    let mut digests = Vec::new();
    for tag in tags {
        let dir = registry.scratch().join(tag);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let layer = LayerBuilder::new().file("srv/seed", *tag).write(&dir, LayerCompression::Gzip).expect("layer");
        let image = ImageBuilder::new(Format::Oci).layer(layer).build(&dir).expect("image");
        digests.push(push(registry, REPO, tag, image).await.digest.to_string());
    }
    digests
}

fn assert_passed(result: &Value) {
    assert!(result.is_ok(), "{result}");
    assert_eq!(result.str_field("kind"), Some("canary"));
    let phases = &result["phases"];
    assert!(phases["push"].as_f64().is_some_and(|s| s > 0.0), "{result}");
    assert!(phases["visible"].as_f64().is_some(), "time-to-visible recorded: {result}");
    let layers = result.layers();
    assert_eq!(layers.len(), 2, "config and layer read back: {result}");
    for layer in layers {
        assert!(layer.is_ok(), "{layer}");
        assert_eq!(layer.str_field("check"), Some("digest_only"));
        assert_eq!(layer.u64_field("bytes"), layer.u64_field("size"), "{layer}");
    }
}

/// The digest of the run's canary manifest (the same on every frontend's result).
fn pushed_digest(results: &[Value]) -> String {
    results[0].str_field("manifest_digest").expect("manifest digest").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_through_nginx_is_seen_by_every_frontend_and_old_canaries_go() {
    let registry = Registry::start();
    let proxy = Nginx::start_proxy(&registry.host_port());
    let old = ["pullprobe-canary-test-1000", "pullprobe-canary-test-1001", "pullprobe-canary-test-1002"];
    let kept = ["latest", "pullprobe-canary-elsewhere-1", "pullprobe-canary-test-1003"];
    let old_digests = seed(&registry, &old).await;
    seed(&registry, &kept).await;
    let before = tags(&registry.host_port());
    assert_eq!(before.len(), 6, "{before:?}");

    let frontends = [("registry", registry.url().to_string()), ("nginx", proxy.url().to_string())];
    let image_probe = format!("  - name: seeded\n    image: {}/{REPO}:latest\n", registry.host_port());
    let (_dir, path) = config(proxy.url().as_str(), &frontends, &image_probe);
    let (code, results, stderr) = run_now(&path, &["--probe", "write-path"]);
    assert_eq!(code, 0, "{results:?}\n{stderr}");
    assert_eq!(results.len(), 2, "one result per frontend: {results:?}");
    for name in ["registry", "nginx"] {
        let result = result_for(&results, name);
        assert_passed(result);
        assert_eq!(result.str_field("image"), Some(format!("{}/{REPO}", proxy.host_port()).as_str()));
        assert_eq!(result.str_field("location"), Some(LOCATION));
        assert!(result.get("warnings").is_none(), "a clean run has no warnings: {result}");
    }
    let digest = pushed_digest(&results);
    assert_eq!(manifest_status(&registry.host_port(), &digest), 200, "the canary manifest is in the registry");

    // Cleanup: this location keeps its newest 3 canaries (this run's included); nothing else is touched.
    let after = tags(&registry.host_port());
    let ours: Vec<&String> = after.iter().filter(|t| t.starts_with("pullprobe-canary-test-")).collect();
    assert_eq!(ours.len(), 3, "{after:?}");
    for tag in kept {
        assert!(after.iter().any(|t| t == tag), "{tag} kept: {after:?}");
    }
    for (tag, digest) in old.iter().zip(&old_digests) {
        if *tag == "pullprobe-canary-test-1002" {
            assert!(after.iter().any(|t| t == tag), "the newest old ones stay: {after:?}");
            continue;
        }
        assert!(!after.iter().any(|t| t == tag), "{tag} deleted: {after:?}");
        assert_eq!(manifest_status(&registry.host_port(), digest), 404, "{tag}'s manifest deleted by digest");
    }

    // A second run: it pushes again (new random blobs) and still keeps three.
    std::thread::sleep(Duration::from_millis(1100));
    let (code, results, stderr) = run_now(&path, &["--probe", "write-path"]);
    assert_eq!(code, 0, "{results:?}\n{stderr}");
    assert_ne!(pushed_digest(&results), digest, "every run pushes a new image");
    let again = tags(&registry.host_port());
    assert_eq!(again.iter().filter(|t| t.starts_with("pullprobe-canary-test-")).count(), 3, "{again:?}");
    assert!(!again.iter().any(|t| t == "pullprobe-canary-test-1002"), "{again:?}");

    // --no-push: a read-only run skips the canary and pushes nothing.
    let (code, results, stderr) = run_now(&path, &["--no-push"]);
    assert_eq!(code, 0, "{results:?}\n{stderr}");
    assert!(!results.is_empty() && results.iter().all(|r| r.str_field("kind") == Some("pull")), "{results:?}");
    assert_eq!(tags(&registry.host_port()), again, "nothing pushed or deleted");
    let (code, _, stderr) = run_now(&path, &["--no-push", "--probe", "write-path"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--no-push skipped 1 canary probe"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_refuses_deletes_is_a_warning() {
    let registry = Registry::start_with(RegistryOptions { delete_enabled: false, ..RegistryOptions::default() });
    seed(&registry, &["pullprobe-canary-test-1", "pullprobe-canary-test-2", "pullprobe-canary-test-3"]).await;
    let (_dir, path) = config(registry.url().as_str(), &[("registry", registry.url().to_string())], "");
    let (code, results, stderr) = run_now(&path, &[]);
    assert_eq!(code, 0, "a refused cleanup does not fail the probe: {results:?}\n{stderr}");
    let result = result_for(&results, "registry");
    assert_passed(result);
    let warnings = result["warnings"].to_string();
    assert!(warnings.contains("refuses to delete manifests") && warnings.contains("UNSUPPORTED"), "{warnings}");
    assert_eq!(tags(&registry.host_port()).len(), 4, "nothing deleted");
}

/// Two instances behind one round-robin balancer, each with its own storage.
fn split_pair(secret_a: &str, secret_b: &str) -> (Registry, Registry, Nginx) {
    let options = |secret: &str| RegistryOptions { secret: secret.to_string(), ..RegistryOptions::default() };
    let a = Registry::start_with(options(secret_a));
    let b = Registry::start_with(options(secret_b));
    let balancer = Nginx::start_balancer(&[a.host_port(), b.host_port()]);
    (a, b, balancer)
}

#[tokio::test(flavor = "multi_thread")]
async fn separate_storage_behind_a_round_robin_fails_uploads_with_blob_upload_unknown() {
    let (a, b, balancer) = split_pair("shared-secret", "shared-secret");
    let frontends = [("site-a", a.url().to_string()), ("site-b", b.url().to_string())];
    let (_dir, path) = config(balancer.url().as_str(), &frontends, "");
    let (code, results, stderr) = run_now(&path, &[]);
    assert_eq!(code, 1, "{results:?}\n{stderr}");
    assert_eq!(results.len(), 2, "{results:?}");
    for result in &results {
        assert_eq!(result.reason(), Some("upload_failed"), "{result}");
        assert_eq!(result.registry_error(), Some("BLOB_UPLOAD_UNKNOWN"), "{result}");
        assert_eq!(result.str_field("phase"), Some("upload"));
        assert_eq!(result.str_field("kind"), Some("canary"));
        let error = result.error_message().unwrap_or_default();
        assert!(error.starts_with("upload 1 of 3 (layer sha256:"), "the session is named: {error}");
        assert!(error.contains("chunked") && error.contains("PATCH chunk 1 of 4"), "the request is named: {error}");
        assert!(error.contains("uploads 1, 2, 3 of 3 failed"), "every session tried: {error}");
        assert!(error.contains("no manifest was pushed"), "{error}");
    }
    // The balancer really split the sessions: POST and PATCH went to different instances.
    let log = balancer.access_log();
    assert!(
        log.contains(&format!("upstream={}", a.host_port())) && log.contains(&format!("upstream={}", b.host_port()))
    );

    // Different secrets: the other instance cannot even read the session state.
    let (a, b, balancer) = split_pair("secret-a", "secret-b");
    let frontends = [("site-a", a.url().to_string()), ("site-b", b.url().to_string())];
    let (_dir, path) = config(balancer.url().as_str(), &frontends, "");
    let (code, results, _) = run_now(&path, &[]);
    assert_eq!(code, 1);
    for result in &results {
        assert_eq!(result.reason(), Some("upload_failed"), "{result}");
        assert_eq!(result.registry_error(), Some("BLOB_UPLOAD_INVALID"), "{result}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frontend_with_its_own_storage_is_not_replicated() {
    let site_a = Registry::start();
    let site_b = Registry::start();
    let frontends = [("site-a", site_a.url().to_string()), ("site-b", site_b.url().to_string())];
    let (_dir, path) = config(site_a.url().as_str(), &frontends, "");
    let (code, results, stderr) = run_now(&path, &[]);
    assert_eq!(code, 1, "{results:?}\n{stderr}");
    assert_passed(result_for(&results, "site-a"));

    let lagging = result_for(&results, "site-b");
    assert_eq!(lagging.reason(), Some("not_replicated"), "{lagging}");
    assert_eq!(lagging.str_field("phase"), Some("consistency"));
    assert_eq!(lagging.registry_error(), Some("MANIFEST_UNKNOWN"), "{lagging}");
    let error = lagging.error_message().unwrap_or_default();
    assert!(error.starts_with("frontend site-b still does not serve manifest pullprobe/canary:pullprobe-canary-test-"));
    let digest = lagging.str_field("manifest_digest").expect("the pushed digest");
    assert!(error.contains(&digest[..19]), "{error}");
    for layer in lagging.layers() {
        assert_eq!(layer.reason(), Some("not_replicated"), "{layer}");
        let blob = layer.str_field("digest").unwrap_or_default();
        assert!(error.contains(&blob[..19]), "every missing blob is named: {error}");
    }
    assert!(lagging["phases"].get("visible").is_none(), "{lagging}");
    let waited = lagging["duration_seconds"].as_f64().unwrap_or_default();
    assert!(waited >= 2.0, "polled until the deadline: {waited}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_storage_behind_a_round_robin_passes() {
    let storage = tempfile::Builder::new().prefix("pullprobe-shared-storage-").tempdir().expect("temp dir");
    let options =
        || RegistryOptions { shared_storage: Some(storage.path().to_path_buf()), ..RegistryOptions::default() };
    let a = Registry::start_with(options());
    let b = Registry::start_with(options());
    let balancer = Nginx::start_balancer(&[a.host_port(), b.host_port()]);
    let frontends = [("site-a", a.url().to_string()), ("site-b", b.url().to_string())];
    let (_dir, path) = config(balancer.url().as_str(), &frontends, "");
    let (code, results, stderr) = run_now(&path, &[]);
    assert_eq!(code, 0, "{results:?}\n{stderr}");
    for name in ["site-a", "site-b"] {
        assert_passed(result_for(&results, name));
    }
    let log = balancer.access_log();
    assert!(log.contains(&format!("upstream={}", b.host_port())), "both instances took requests:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_canaries_on_their_interval_with_their_metrics() {
    let registry = Registry::start();
    let proxy = Nginx::start_proxy(&registry.host_port());
    let frontends = [("registry", registry.url().to_string()), ("nginx", proxy.url().to_string())];
    let (dir, path) = config(registry.url().as_str(), &frontends, "");
    let yaml =
        std::fs::read_to_string(&path).expect("config").replace("sessions: 2}", "sessions: 2}\n    interval: 1s");
    std::fs::write(&path, yaml).expect("config");
    let listen = format!("127.0.0.1:{}", common::process::free_port());
    let log = dir.path().join("serve.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pullprobe"))
        .args(["serve", "-c", &path, "--listen", &listen])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("starting pullprobe serve");
    let wanted = [
        r#"pullprobe_canary_visible_seconds_count{probe="write-path",registry="reg",frontend="nginx"} "#,
        r#"pullprobe_canary_visible_seconds_count{probe="write-path",registry="reg",frontend="registry"} "#,
        r#"pullprobe_canary_push_duration_seconds{probe="write-path",registry="reg"} "#,
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let body = http_request("GET", &listen, "/metrics", &[])
            .map(|r| String::from_utf8_lossy(&r.body).to_string())
            .unwrap_or_default();
        let runs = body
            .lines()
            .find(|l| l.starts_with(wanted[0]))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0);
        // Two runs at least: serve schedules canaries again on their interval.
        if runs >= 2 && wanted.iter().all(|w| body.contains(w)) {
            break body;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no canary metrics from serve:\n{body}\nlog:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        metrics.contains(r#"pullprobe_probe_success{probe="write-path",image="#),
        "canary results are probe series like any other:\n{metrics}"
    );
    let promtool = common::process::require_binary("/usr/bin/promtool", "prometheus");
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &metrics).expect("metrics file");
    let out = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("metrics"))
        .output()
        .expect("promtool");
    assert!(out.status.success(), "promtool check metrics:\n{}", String::from_utf8_lossy(&out.stderr));
    let ours = tags(&registry.host_port()).into_iter().filter(|t| t.starts_with("pullprobe-canary-test-")).count();
    assert!((1..=3).contains(&ours), "serve cleans up too: {ours} canary tags");
}

#[test]
fn canaries_validate_with_and_without_credentials() {
    let (_dir, path) = config("http://127.0.0.1:1", &[("r", "http://127.0.0.1:1".into())], "");
    let (code, stdout, stderr) = common::run_pullprobe(&["validate", "-c", &path]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let yaml = std::fs::read_to_string(&path).expect("config");
    let with_auth = yaml
        .replace("    frontends:", "    auth: {username: u, password_env: PULLPROBE_TEST_PASSWORD}\n    frontends:");
    std::fs::write(&path, with_auth).expect("config");
    let (code, stdout, stderr) = common::run_pullprobe(&["validate", "-c", &path]);
    assert_eq!(code, 0, "a canary pushes with the registry's credentials: {stdout}{stderr}");
}

// ---------------------------------------------------------------------------
// Hostile upload answers from a small in-test server.

/// Run the canary against `fake` (the registry is its only frontend); its one result.
fn run_against(fake: &FakeRegistry) -> Value {
    let (_dir, path) = config(&fake.url(), &[("fake", fake.url())], "");
    let (code, results, stderr) = run_now(&path, &[]);
    assert_eq!(code, 1, "{results:?}\n{stderr}");
    assert_eq!(results.len(), 1, "{results:?}");
    results[0].clone()
}

/// An upload session that works: 202 with a Location for POST and PATCH, 201 for PUT, 204 for DELETE.
fn well_behaved(seen: &Seen) -> Response {
    let location = format!("/v2/{REPO}/blobs/uploads/session-1?_state=opaque");
    match seen.method {
        Method::POST | Method::PATCH => respond(StatusCode::ACCEPTED, &[("location", &location)], ""),
        Method::PUT => respond(StatusCode::CREATED, &[], ""),
        Method::DELETE => respond(StatusCode::NO_CONTENT, &[], ""),
        _ => respond(StatusCode::NOT_FOUND, &[], format!("no {}", seen.path)),
    }
}

/// How many of the requests used `method`.
fn count(seen: &[Seen], method: Method) -> usize {
    seen.iter().filter(|s| s.method == method).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_accepted_without_a_location_fails_clearly() {
    let fake = FakeRegistry::start(Content::none(), |seen| {
        Some(match seen.method {
            Method::POST => respond(StatusCode::ACCEPTED, &[], ""),
            _ => well_behaved(seen),
        })
    })
    .await;
    let result = run_against(&fake);
    assert_eq!(result.reason(), Some("upload_failed"), "{result}");
    assert_eq!(result.str_field("phase"), Some("upload"));
    let error = result.error_message().unwrap_or_default();
    assert!(error.contains("POST (starting the upload): the registry sent no Location header"), "{error}");
    assert!(error.contains("uploads 1, 2, 3 of 3 failed") && error.contains("no manifest was pushed"), "{error}");
    assert_eq!(count(&fake.seen(), Method::PATCH), 0, "nothing sent without a Location");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_sent_to_another_host_fails_clearly() {
    let closed = common::process::free_port();
    let elsewhere = format!("http://127.0.0.2:{closed}/v2/{REPO}/blobs/uploads/session-1?_state=secret-state");
    let fake = FakeRegistry::start(Content::none(), move |seen| {
        Some(match seen.method {
            Method::POST => respond(StatusCode::ACCEPTED, &[("location", &elsewhere)], ""),
            _ => well_behaved(seen),
        })
    })
    .await;
    let result = run_against(&fake);
    assert_eq!(result.reason(), Some("upload_failed"), "the registry's answer broke the upload: {result}");
    let error = result.error_message().unwrap_or_default();
    assert!(error.contains("PATCH chunk 1 of 4"), "{error}");
    assert!(
        error.contains(&format!("sent the upload to http://127.0.0.2:{closed}/ instead of the registry URL")),
        "{error}"
    );
    assert!(error.contains("could not be cancelled"), "the open session is reported: {error}");
    assert!(!error.contains("secret-state"), "no upload state in messages: {error}");
    let warnings = result["warnings"].to_string();
    assert!(warnings.contains("another host than the registry URL"), "{warnings}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_500_in_the_middle_of_an_upload_fails_clearly_and_the_session_is_cancelled() {
    let fake = FakeRegistry::start(Content::none(), |seen| {
        // Requests: POST, PATCH 1, PATCH 2 → 500.
        if seen.method == Method::PATCH && seen.before == 2 {
            return Some(respond(StatusCode::INTERNAL_SERVER_ERROR, &[], "storage backend unavailable"));
        }
        Some(well_behaved(seen))
    })
    .await;
    let result = run_against(&fake);
    assert_eq!(result.reason(), Some("upload_failed"), "{result}");
    assert_eq!(result.registry_error(), None);
    let error = result.error_message().unwrap_or_default();
    assert!(error.starts_with("upload 1 of 3 (layer sha256:"), "{error}");
    assert!(error.contains("PATCH chunk 2 of 4: HTTP status 500"), "{error}");
    assert!(error.contains("the upload session was cancelled"), "{error}");
    assert!(error.contains("upload 1 of 3 failed") && error.contains("no manifest was pushed"), "{error}");
    let seen = fake.seen();
    assert_eq!(seen[3].method, Method::DELETE, "the failed session is cancelled at once: {seen:?}");
    assert!(!seen.iter().any(|s| s.method == Method::PUT && s.path.contains("/manifests/")), "no manifest: {seen:?}");
}

// ---------------------------------------------------------------------------
// A token-auth registry that hands uploads to storage on another host: the
// registry's token goes to the registry only.

const STORAGE_PASSWORD: &str = "st0rage-test-password-never-printed";
const REGISTRY_TOKEN: &str = "registry-token-that-must-stay-on-the-registry";

/// The registry: Bearer token auth for everything under `/v2/`, uploads handed to
/// the storage host at `storage` (`http://127.0.0.1:<port>`), tokens from `realm`.
fn hand_off_registry(seen: &Seen, storage: &str, realm: &str) -> Response {
    if seen.path == "/token" {
        return respond(
            StatusCode::OK,
            &[("content-type", "application/json")],
            format!(r#"{{"token":"{REGISTRY_TOKEN}"}}"#),
        );
    }
    if seen.authorization.as_deref() != Some(&format!("Bearer {REGISTRY_TOKEN}")) {
        let challenge = format!(r#"Bearer realm="{realm}",service="hand-off",scope="repository:{REPO}:pull,push""#);
        return respond(
            StatusCode::UNAUTHORIZED,
            &[("www-authenticate", &challenge), ("content-type", "application/json")],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
    }
    let path = seen.path.as_str();
    match seen.method {
        Method::POST if path == format!("/v2/{REPO}/blobs/uploads/") => {
            respond(StatusCode::ACCEPTED, &[("location", &format!("{storage}/upload/session-1?_state=opaque"))], "")
        }
        Method::PUT if path.starts_with(&format!("/v2/{REPO}/manifests/")) => respond(StatusCode::CREATED, &[], ""),
        Method::GET if path.ends_with("/tags/list") => respond(StatusCode::OK, &[], r#"{"tags":[]}"#),
        _ => respond(StatusCode::NOT_FOUND, &[], r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#),
    }
}

/// The storage host: takes the upload without asking who sends it (its URL is the credential).
fn hand_off_storage(seen: &Seen) -> Response {
    match seen.method {
        Method::PATCH => respond(StatusCode::ACCEPTED, &[("location", "/upload/session-1?_state=next")], ""),
        Method::PUT => respond(StatusCode::CREATED, &[], ""),
        _ => respond(StatusCode::NO_CONTENT, &[], ""),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_handed_to_another_host_gets_no_authorization() {
    let storage = FakeRegistry::start(Content::none(), |seen| Some(hand_off_storage(seen))).await;
    let storage_url = storage.url();
    // The realm names the registry itself, whose port is known once it listens.
    let realm: Arc<Mutex<String>> = Arc::default();
    let realm_for_hook = realm.clone();
    let registry = FakeRegistry::start(Content::none(), move |seen| {
        let realm = realm_for_hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(hand_off_registry(seen, &storage_url, &realm))
    })
    .await;
    *realm.lock().unwrap() = format!("{}/token", registry.url());

    let url = registry.url();
    let (_dir, path) = config(&url, &[("registry", url.clone())], "");
    let yaml = std::fs::read_to_string(&path).expect("config").replace(
        "    frontends:",
        "    auth: {username: pusher, password_env: PULLPROBE_TEST_PASSWORD}\n    frontends:",
    );
    std::fs::write(&path, yaml).expect("config");
    let args = ["now", "-c", &path, "-o", "json"];
    let env = [("PULLPROBE_TEST_PASSWORD", STORAGE_PASSWORD), ("PULLPROBE_LOG", "debug")];
    let (code, stdout, stderr) = run_pullprobe_with(&args, &env, None, RUN_LIMIT);
    let results = json_results(&stdout);
    assert_eq!(results.len(), 1, "{stdout}\n{stderr}");
    let result = &results[0];

    // The push went through: the fake registry serves nothing back, so the read-back is what fails.
    assert_eq!(code, 1, "{result}\n{stderr}");
    assert_eq!(result.reason(), Some("not_replicated"), "{result}");
    assert!(result["warnings"].to_string().contains("another host than the registry URL"), "{result}");

    let registry_seen = registry.seen();
    let storage_seen = storage.seen();
    let bearer = format!("Bearer {REGISTRY_TOKEN}");
    let token_request = registry_seen.iter().find(|s| s.path == "/token").expect("a token was asked for");
    assert!(
        token_request.authorization.as_deref().is_some_and(|a| a.starts_with("Basic ")),
        "with credentials: {registry_seen:?}"
    );
    let authorized = |method: Method, prefix: &str| {
        registry_seen
            .iter()
            .any(|s| s.method == method && s.path.starts_with(prefix) && s.authorization.as_deref() == Some(&bearer))
    };
    assert!(authorized(Method::POST, &format!("/v2/{REPO}/blobs/uploads/")), "{registry_seen:?}");
    assert!(authorized(Method::PUT, &format!("/v2/{REPO}/manifests/pullprobe-canary-test-")), "{registry_seen:?}");
    // Two chunked sessions of 4 PATCHes and a PUT each, then the monolithic config PUT: none authorized.
    assert_eq!(count(&storage_seen, Method::PATCH), 8, "{storage_seen:?}");
    assert_eq!(count(&storage_seen, Method::PUT), 3, "{storage_seen:?}");
    assert!(
        storage_seen.iter().all(|s| s.authorization.is_none()),
        "Authorization sent to the storage host: {storage_seen:?}"
    );
    for secret in [STORAGE_PASSWORD, REGISTRY_TOKEN] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} printed:\n{stdout}\n{stderr}");
    }
}
