//! Probing as the node pulls: a node's containerd `hosts.toml` or CRI-O
//! `registries.conf`, written by the test, names mirrors in front of a real
//! distribution registry — a real nginx `proxy_cache` and a second real
//! distribution registry in proxy mode (`proxy.remoteurl`, a pull-through
//! cache). Each mirror is probed separately, and `node-order` pulls the way
//! the node would. Faults go into one mirror's cache or storage: only that
//! mirror's result fails, and `node-order` fails exactly when the node would
//! get the bad bytes (a corrupt mirror first in order) and passes when the
//! node would fall back (a mirror that is down, or lacks a blob, for containerd).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::images::Pushed;
use common::process::{Readiness, free_port, instance_id, require_binary, stop_child, wait_until_ready};
use common::registry::flip_byte_in_file;
use common::{Nginx, Registry, ResultJson, json_results, push_small_image, result_for, run_pullprobe};
use image_builder::Image;
use pullprobe::digest::Digest;
use serde_json::Value;
use tempfile::TempDir;

/// A distribution registry in proxy mode: a pull-through cache of `upstream`
/// that keeps what it fetched in its own storage.
struct PullThroughCache {
    dir: TempDir,
    port: u16,
    child: Child,
}

impl PullThroughCache {
    fn start(upstream: &Registry) -> PullThroughCache {
        let binary = require_binary("/usr/bin/docker-registry", "docker-registry");
        let dir = tempfile::Builder::new().prefix("pullprobe-proxy-cache-").tempdir().expect("temp dir");
        for _ in 0..8 {
            let port = free_port();
            let instance = instance_id();
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n\
                     storage:\n  filesystem:\n    rootdirectory: {root}\n  cache:\n    blobdescriptor: inmemory\n\
                     \x20 delete:\n    enabled: true\n\
                     http:\n  addr: 127.0.0.1:{port}\n  secret: pullprobe-test-secret\n\
                     \x20 headers:\n    {header}: [\"{instance}\"]\n\
                     proxy:\n  remoteurl: {upstream}\n",
                    root = dir.path().join("storage").display(),
                    header = common::process::INSTANCE_HEADER,
                    upstream = upstream.url().as_str().trim_end_matches('/'),
                ),
            )
            .expect("writing the proxy config");
            let log = fs::File::create(dir.path().join("registry.log")).expect("log file");
            let mut child = Command::new(&binary)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .expect("starting docker-registry");
            let host_port = format!("127.0.0.1:{port}");
            match wait_until_ready(&mut child, &host_port, "/v2/", &instance, Duration::from_secs(20)) {
                Readiness::Ready => return PullThroughCache { dir, port, child },
                outcome => {
                    stop_child(&mut child);
                    let log = fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
                    if !log.contains("address already in use") {
                        panic!("the pull-through cache did not start ({outcome:?}):\n{log}");
                    }
                }
            }
        }
        panic!("the pull-through cache found no free port");
    }

    fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its log: one line per request (`"GET /v2/… HTTP/1.1"`).
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Wait until it stored blob `digest` (it stores what it fetched after serving it), then invert one byte.
    fn corrupt_stored_blob(&self, digest: &Digest, offset: u64) {
        let hex = digest.hex();
        let path =
            self.dir.path().join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(&hex).join("data");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !path.is_file() {
            assert!(Instant::now() < deadline, "the pull-through cache never stored {digest}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        flip_byte_in_file(&path, offset);
    }
}

impl Drop for PullThroughCache {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// A mirror that records every request (line and headers) and answers 404, as a
/// mirror without the image does.
struct RecordingMirror {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl RecordingMirror {
    fn start() -> RecordingMirror {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = requests.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                seen.lock().expect("request log").push(String::from_utf8_lossy(&head).to_string());
                let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"not here"}]}"#;
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        RecordingMirror { port, requests }
    }

    fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("request log").clone()
    }
}

/// A node's configuration and a probes.yaml that points at it, in one temp dir.
struct Node {
    dir: TempDir,
}

impl Node {
    fn new() -> Node {
        Node { dir: tempfile::Builder::new().prefix("pullprobe-node-").tempdir().expect("temp dir") }
    }

    /// `certs.d/<host>_<port>_/hosts.toml` (the directory name containerd tries first).
    fn hosts_toml(&self, registry: &Registry, text: &str) -> PathBuf {
        let certs = self.dir.path().join("certs.d");
        let host = certs.join(format!("127.0.0.1_{}_", registry.port()));
        fs::create_dir_all(&host).expect("host dir");
        fs::write(host.join("hosts.toml"), text).expect("writing hosts.toml");
        certs
    }

    fn registries_conf(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("registries.conf");
        fs::write(&path, text).expect("writing registries.conf");
        path
    }

    /// probes.yaml with one registry per (name, frontends form) and one probe per registry.
    fn probes(&self, registry: &Registry, repo_tag: &str, forms: &[(&str, String)]) -> String {
        let mut yaml = String::from("registries:\n");
        for (name, form) in forms {
            yaml.push_str(&format!("  - name: {name}\n    url: {}\n    frontends: {form}\n", registry.url()));
        }
        yaml.push_str("probes:\n");
        for (name, _) in forms {
            yaml.push_str(&format!("  - name: {name}\n    registry: {name}\n    image: {repo_tag}\n"));
        }
        let path = self.dir.path().join("probes.yaml");
        fs::write(&path, yaml).expect("writing probes.yaml");
        path.display().to_string()
    }
}

fn containerd_form(dir: &Path) -> String {
    format!("{{containerd: {}}}", dir.display())
}

fn registries_conf_form(file: &Path) -> String {
    format!("{{registries_conf: {}}}", file.display())
}

/// `now -c probes.yaml -o json`: (exit code, results).
fn probe(config: &str) -> (i32, Vec<Value>) {
    let (code, stdout, stderr) = run_pullprobe(&["now", "-c", config, "-o", "json"]);
    assert!(code == 0 || code == 1, "pullprobe failed to run ({code}):\n{stdout}\n{stderr}");
    (code, json_results(&stdout))
}

fn position(result: &Value) -> Option<u64> {
    result.u64_field("mirror_position")
}

fn layer_digests(pushed: &Pushed<Image>) -> Vec<Digest> {
    pushed.content.layers.iter().map(|l| common::images::prober_digest(&l.blob.digest)).collect()
}

fn failed_layer<'a>(result: &'a Value, digest: &Digest) -> &'a Value {
    let wanted = digest.to_string();
    let layer = result
        .layers()
        .iter()
        .find(|l| l.str_field("digest") == Some(wanted.as_str()))
        .unwrap_or_else(|| panic!("no layer {wanted} in {result}"));
    assert_eq!(layer.get("ok"), Some(&Value::Bool(false)), "{layer}");
    layer
}

fn warnings(result: &Value) -> String {
    result.get("warnings").map(Value::to_string).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_mirrors_fail_alone_and_node_order_fails_when_the_node_gets_bad_bytes() {
    let upstream = Registry::start();
    let pushed = push_small_image(&upstream, "team/app", "1.0").await;
    let cache = Nginx::start_cache(&upstream.host_port());
    let proxy = PullThroughCache::start(&upstream);
    let node = Node::new();
    // The nginx cache may resolve tags; the pull-through cache only serves what the upstream resolved.
    let certs = node.hosts_toml(
        &upstream,
        &format!(
            "server = \"{upstream}\"\n\n[host.\"http://{cache}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
             [host.\"http://{proxy}\"]\n  capabilities = [\"pull\"]\n",
            upstream = upstream.url().as_str().trim_end_matches('/'),
            cache = cache.host_port(),
            proxy = proxy.host_port(),
        ),
    );
    let config = node.probes(&upstream, "team/app:1.0", &[("hub", containerd_form(&certs))]);

    // Healthy: every mirror, the server and node-order pass, each with its place in the order.
    let (code, results) = probe(&config);
    assert_eq!(code, 0, "{results:?}");
    assert_eq!(results.len(), 4, "{results:?}");
    for (label, place) in [(cache.host_port(), 1), (proxy.host_port(), 2), (upstream.host_port(), 3)] {
        let result = result_for(&results, &label);
        assert!(result.is_ok(), "{result}");
        assert_eq!(position(result), Some(place), "{result}");
        assert_eq!(result.str_field("manifest_digest"), Some(pushed.digest.to_string().as_str()));
    }
    let node_order = result_for(&results, "node-order");
    assert!(node_order.is_ok(), "{node_order}");
    assert_eq!(position(node_order), Some(1), "the first mirror resolves and serves: {node_order}");
    // Mirrors are told the upstream as containerd tells them: ?ns=<registry host>.
    let ns = format!("?ns=127.0.0.1%3A{}", upstream.port());
    assert!(cache.access_log().contains(&format!("/v2/team/app/manifests/1.0{ns}")), "{}", cache.access_log());
    // The resolve-less mirror is never asked for the tag, only for content by digest.
    let proxy_log = proxy.log();
    assert!(proxy_log.contains(&format!("/v2/team/app/manifests/{}", pushed.digest)), "{proxy_log}");
    assert!(!proxy_log.contains("/v2/team/app/manifests/1.0"), "{proxy_log}");

    // Mirror 2's storage is corrupt: only mirror 2 fails; nodes take mirror 1 and are not hurt.
    let [base, app] = layer_digests(&pushed)[..] else { panic!("two layers") };
    proxy.corrupt_stored_blob(&base, 10);
    let (code, results) = probe(&config);
    assert_eq!(code, 1);
    let corrupt = result_for(&results, &proxy.host_port());
    assert_eq!(corrupt.reason(), Some("blob_digest_mismatch"), "{corrupt}");
    failed_layer(corrupt, &base);
    for label in [cache.host_port(), upstream.host_port(), "node-order".to_string()] {
        assert!(result_for(&results, &label).is_ok(), "{label}: {results:?}");
    }

    // Mirror 1 goes down: nodes fall back — the upstream resolves, mirror 2 serves, and its bad bytes hurt them.
    drop(cache);
    let (code, results) = probe(&config);
    assert_eq!(code, 1);
    let down = results.iter().find(|r| position(r) == Some(1) && r.str_field("frontend") != Some("node-order"));
    assert_eq!(down.and_then(|r| r.reason()), Some("connect_error"), "{results:?}");
    assert!(result_for(&results, &upstream.host_port()).is_ok());
    let node_order = result_for(&results, "node-order");
    assert_eq!(node_order.reason(), Some("blob_digest_mismatch"), "{node_order}");
    assert_eq!(position(node_order), Some(2), "{node_order}");
    let layer = failed_layer(node_order, &base);
    assert_eq!(layer.str_field("served_by"), Some(proxy.host_port().as_str()), "{layer}");
    assert!(warnings(node_order).contains("moved on"), "{node_order}");
    let healthy = node_order.layers().iter().find(|l| l.str_field("digest") == Some(app.to_string().as_str()));
    assert_eq!(healthy.and_then(|l| l.get("ok")), Some(&Value::Bool(true)), "{node_order}");
}

#[tokio::test(flavor = "multi_thread")]
async fn crio_mirrors_corrupt_first_hurts_nodes_and_a_mirror_down_does_not() {
    let upstream = Registry::start();
    let pushed = push_small_image(&upstream, "team/app", "1.0").await;
    let cache = Nginx::start_cache(&upstream.host_port());
    let proxy = PullThroughCache::start(&upstream);
    let node = Node::new();
    // Plain-HTTP mirrors: `insecure` lets CRI-O fall back to HTTP after HTTPS does not answer.
    let conf = node.registries_conf(&format!(
        "unqualified-search-registries = [\"docker.io\"]\n\n[[registry]]\nprefix = \"{up}\"\nlocation = \"{up}\"\n\n\
         [[registry.mirror]]\nlocation = \"{cache}\"\ninsecure = true\n\n\
         [[registry.mirror]]\nlocation = \"{proxy}\"\ninsecure = true\n",
        up = upstream.host_port(),
        cache = cache.host_port(),
        proxy = proxy.host_port(),
    ));
    let config = node.probes(&upstream, "team/app:1.0", &[("crio", registries_conf_form(&conf))]);

    let (code, results) = probe(&config);
    assert_eq!(code, 0, "{results:?}");
    assert_eq!(results.len(), 4, "{results:?}");
    for (label, place) in
        [(cache.host_port(), 1), (proxy.host_port(), 2), (upstream.host_port(), 3), ("node-order".into(), 1)]
    {
        let result = result_for(&results, &label);
        assert!(result.is_ok(), "{result}");
        assert_eq!(position(result), Some(place), "{result}");
    }
    // CRI-O sends no ?ns=.
    assert!(!cache.access_log().contains("?ns="), "{}", cache.access_log());

    // Mirror 1 serves a corrupt layer from its cache: nodes take mirror 1 first and get the bad bytes.
    let [_, app] = layer_digests(&pushed)[..] else { panic!("two layers") };
    cache.corrupt_cached_blob(&common::images::builder_digest(&app), 100);
    let (code, results) = probe(&config);
    assert_eq!(code, 1);
    let poisoned = result_for(&results, &cache.host_port());
    assert_eq!(poisoned.reason(), Some("blob_digest_mismatch"), "{poisoned}");
    assert_eq!(failed_layer(poisoned, &app).str_field("cache_status"), Some("HIT"));
    assert!(result_for(&results, &proxy.host_port()).is_ok());
    assert!(result_for(&results, &upstream.host_port()).is_ok());
    let node_order = result_for(&results, "node-order");
    assert_eq!(node_order.reason(), Some("blob_digest_mismatch"), "{node_order}");
    assert_eq!(position(node_order), Some(1));
    assert_eq!(failed_layer(node_order, &app).str_field("served_by"), Some(cache.host_port().as_str()));

    // Mirror 1 goes down: the node's next source serves everything, and nodes are fine.
    let cache_label = cache.host_port();
    drop(cache);
    let (code, results) = probe(&config);
    assert_eq!(code, 1);
    assert_eq!(result_for(&results, &cache_label).reason(), Some("connect_error"));
    let node_order = result_for(&results, "node-order");
    assert!(node_order.is_ok(), "{node_order}");
    assert_eq!(position(node_order), Some(2), "{node_order}");
    assert!(warnings(node_order).contains("moved on"), "{node_order}");
    for layer in node_order.layers() {
        assert_eq!(layer.str_field("served_by"), Some(proxy.host_port().as_str()), "{layer}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_missing_a_blob_hurts_crio_nodes_but_not_containerd_nodes() {
    let upstream = Registry::start();
    let pushed = push_small_image(&upstream, "team/app", "1.0").await;
    // A mirror that has the image but lost one layer's data (a deleted bucket object).
    let mut mirror = Registry::start();
    push_small_image(&mirror, "team/app", "1.0").await;
    let [base, _] = layer_digests(&pushed)[..] else { panic!("two layers") };
    mirror.delete_blob(&common::images::builder_digest(&base));
    mirror.restart();
    let node = Node::new();
    let up = upstream.url().as_str().trim_end_matches('/').to_string();
    let certs = node.hosts_toml(
        &upstream,
        &format!(
            "server = \"{up}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            mirror.host_port()
        ),
    );
    let conf = node.registries_conf(&format!(
        "[[registry]]\nlocation = \"{}\"\n\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
        upstream.host_port(),
        mirror.host_port()
    ));
    let config = node.probes(
        &upstream,
        "team/app:1.0",
        &[("containerd", containerd_form(&certs)), ("crio", registries_conf_form(&conf))],
    );
    let (code, results) = probe(&config);
    assert_eq!(code, 1);
    let of = |probe: &str, frontend: &str| {
        results
            .iter()
            .find(|r| r.str_field("probe") == Some(probe) && r.str_field("frontend") == Some(frontend))
            .unwrap_or_else(|| panic!("no {probe}/{frontend} in {results:?}"))
    };
    for probe in ["containerd", "crio"] {
        let lacking = of(probe, &mirror.host_port());
        assert_eq!(lacking.reason(), Some("blob_unknown"), "{lacking}");
        failed_layer(lacking, &base);
        assert!(of(probe, &upstream.host_port()).is_ok());
    }
    // containerd asks the next host for each blob the first one lacks.
    let containerd = of("containerd", "node-order");
    assert!(containerd.is_ok(), "{containerd}");
    assert_eq!(position(containerd), Some(1));
    assert!(warnings(containerd).contains(&format!("blob {}", base.short())), "{containerd}");
    // CRI-O takes the whole image from the first source that served the manifest.
    let crio = of("crio", "node-order");
    assert_eq!(crio.reason(), Some("blob_unknown"), "{crio}");
    assert_eq!(position(crio), Some(1));
    failed_layer(crio, &base);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirrors_headers_api_root_and_ns_reach_it_and_a_404_falls_back() {
    let upstream = Registry::start();
    push_small_image(&upstream, "team/app", "1.0").await;
    let recorder = RecordingMirror::start();
    let node = Node::new();
    let host = format!("http://{}/custom/root", recorder.host_port());
    let certs = node.hosts_toml(
        &upstream,
        &format!(
            "server = \"{up}\"\n\n[host.\"{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n  \
             dial_timeout = \"2s\"\n  [host.\"{host}\".header]\n    x-mirror-token = [\"first\", \"second\"]\n",
            up = upstream.url().as_str().trim_end_matches('/'),
        ),
    );
    let config = node.probes(&upstream, "team/app:1.0", &[("hub", containerd_form(&certs))]);
    let (code, results) = probe(&config);
    assert_eq!(code, 1);
    let empty = result_for(&results, &recorder.host_port());
    assert_eq!(empty.reason(), Some("manifest_unknown"), "{empty}");
    assert_eq!(position(empty), Some(1));
    let node_order = result_for(&results, "node-order");
    assert!(node_order.is_ok(), "{node_order}");
    assert_eq!(position(node_order), Some(2), "the upstream served: {node_order}");
    assert!(warnings(node_order).contains("manifest_unknown"), "{node_order}");

    let requests = recorder.requests();
    let first = requests.first().expect("the mirror was asked");
    let ns = format!("ns=127.0.0.1%3A{}", upstream.port());
    assert!(first.starts_with(&format!("GET /custom/root/team/app/manifests/1.0?{ns} HTTP/1.1")), "{first}");
    let lower = first.to_ascii_lowercase();
    assert!(lower.contains("x-mirror-token: first") && lower.contains("x-mirror-token: second"), "{first}");
}

#[test]
fn unknown_keys_in_a_nodes_configuration_are_errors_with_their_position() {
    let node = Node::new();
    let certs = node.dir.path().join("certs.d");
    fs::create_dir_all(certs.join("registry.example.org")).expect("host dir");
    let hosts = certs.join("registry.example.org/hosts.toml");
    fs::write(&hosts, "server = \"https://registry.example.org\"\n\n[host.\"https://mirror.example.org\"]\n  capabilites = [\"pull\"]\n")
        .expect("writing hosts.toml");
    let config = node.dir.path().join("probes.yaml");
    fs::write(
        &config,
        format!(
            "registries:\n  - name: r\n    url: https://registry.example.org\n    frontends: {{containerd: {}}}\n\
             probes:\n  - name: app\n    registry: r\n    image: team/app:1\n",
            certs.display()
        ),
    )
    .expect("writing probes.yaml");
    let config = config.display().to_string();
    let wanted = format!("{}:4:3: unknown key `capabilites`", hosts.display());
    let (code, stdout, stderr) = run_pullprobe(&["validate", "-c", &config]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains(&wanted), "{stderr}");
    let (code, stdout, stderr) = run_pullprobe(&["now", "-c", &config, "-o", "json"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains(&wanted), "{stderr}");

    let conf = node.registries_conf("[[registry]]\nlocation = \"registry.example.org\"\n[[registry.mirror]]\nlocation = \"m.example.org\"\npull-from-mirors = \"all\"\n");
    fs::write(
        node.dir.path().join("probes.yaml"),
        format!(
            "registries:\n  - name: r\n    url: https://registry.example.org\n    frontends: {{registries_conf: {}}}\n",
            conf.display()
        ),
    )
    .expect("writing probes.yaml");
    let (code, _, stderr) = run_pullprobe(&["validate", "-c", &config]);
    assert_eq!(code, 2);
    assert!(stderr.contains(&format!("{}:5:1: unknown key `pull-from-mirors`", conf.display())), "{stderr}");
}
