//! `pullprobe serve` against a real registry: metrics that move as rounds
//! complete and pass `promtool check metrics`, a storage fault seen and then
//! cleared, the `/probe` allow-list and scrape timeout, reloads that keep the
//! old config when the new one is broken, and a prompt stop on SIGTERM.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{free_port, require_binary};
use common::{Registry, http_get, http_request, push_small_image};
use image_builder::Digest;

/// A running `pullprobe serve`, stopped by PID when dropped.
struct Serve {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(config: &Path) -> Serve {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("serve.log");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_pullprobe"))
            .args(["serve", "--log-json", "true", "-c"])
            .arg(config)
            .args(["--listen", &addr])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("starting pullprobe serve");
        let serve = Serve { child, addr, log, _dir: dir };
        serve.wait_for("/healthz", |body| body == "ok\n", Duration::from_secs(20));
        serve
    }

    fn get(&self, path: &str) -> (u16, String) {
        match http_get(&self.addr, path) {
            Ok(r) => (r.status, String::from_utf8_lossy(&r.body).to_string()),
            Err(e) => (0, e.to_string()),
        }
    }

    fn wait_for(&self, path: &str, done: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.get(path);
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never became ready; last answer {status}:\n{body}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status =
            Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().expect("kill");
        assert!(status.success());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the first sample of `name` whose line contains every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("probes.yaml");
    std::fs::write(&path, body).expect("config");
    path
}

fn config_for(registry: &Registry, extra: &str) -> String {
    format!(
        "defaults:\n  interval: 1s\n  timeout: 10s\n  location: test\n\
         registries:\n  - name: local\n    url: {}\n\
         probes:\n  - name: app\n    registry: local\n    image: team/app:1\n  - name: base\n    registry: local\n    image: team/base:1\n{extra}",
        registry.url().as_str().trim_end_matches('/')
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_exposes_metrics_that_follow_faults_and_pass_promtool() {
    let registry = Registry::start();
    let app = push_small_image(&registry, "team/app", "1").await;
    push_small_image(&registry, "team/base", "1").await;
    let work = tempfile::tempdir().expect("temp dir");
    let config = write_config(work.path(), &config_for(&registry, ""));
    let serve = Serve::start(&config);

    let success = r#"probe="app""#;
    let first = serve.wait_for(
        "/metrics",
        |m| sample(m, "pullprobe_probe_success", &[success]) == Some(1.0),
        Duration::from_secs(20),
    );
    let first_seen =
        sample(&first, "pullprobe_probe_last_success_timestamp_seconds", &[success]).expect("last success");
    let second = serve.wait_for(
        "/metrics",
        |m| sample(m, "pullprobe_probe_last_success_timestamp_seconds", &[success]).is_some_and(|t| t > first_seen),
        Duration::from_secs(20),
    );
    assert_eq!(sample(&second, "pullprobe_probe_success", &[r#"probe="base""#]), Some(1.0), "{second}");
    assert!(
        second.contains("# HELP pullprobe_probe_success") && second.contains("# TYPE pullprobe_probe_success gauge")
    );
    // Every layer is read every round here: the oldest full read is about one interval old at most.
    let coverage =
        sample(&second, "pullprobe_coverage_oldest_layer_read_age_seconds", &[success]).expect("coverage age");
    assert!((0.0..5.0).contains(&coverage), "{coverage}");

    // promtool reads the real output.
    let promtool = require_binary("/usr/bin/promtool", "prometheus");
    let file = work.path().join("metrics.txt");
    std::fs::write(&file, &second).expect("metrics file");
    let out = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("metrics"))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A flipped byte in one layer's storage: the probe goes to 0, the reason is counted.
    let victim: Digest = app.content.layers[1].blob.digest;
    let path = registry.blob_data_path(&victim);
    let original = std::fs::read(&path).expect("blob data");
    registry.flip_byte(&victim, 10);
    let failing = serve.wait_for(
        "/metrics",
        |m| sample(m, "pullprobe_probe_success", &[success]) == Some(0.0),
        Duration::from_secs(20),
    );
    let counted = sample(&failing, "pullprobe_probe_failures_total", &[success, r#"reason="blob_digest_mismatch""#]);
    assert!(counted.is_some_and(|n| n >= 1.0), "{failing}");
    assert_eq!(
        sample(&failing, "pullprobe_probe_last_failure_info", &[success, r#"reason="blob_digest_mismatch""#]),
        Some(1.0)
    );
    let page = serve.get("/").1;
    assert!(
        page.contains("blob_digest_mismatch") && page.contains(&victim.to_string()),
        "status page lacks the failure"
    );

    // Repaired: back to 1.
    std::fs::write(&path, original).expect("restoring the blob");
    serve.wait_for(
        "/metrics",
        |m| sample(m, "pullprobe_probe_success", &[success]) == Some(1.0),
        Duration::from_secs(20),
    );
    assert!(serve.log().contains("\"message\":\"probe result\""), "one JSON line per probe result:\n{}", serve.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_endpoint_honours_the_allow_list_and_the_scrape_timeout() {
    let registry = Registry::start();
    push_small_image(&registry, "team/app", "1").await;
    push_small_image(&registry, "team/base", "1").await;
    push_small_image(&registry, "other/extra", "1").await;
    // A server that accepts connections and never answers: only the scrape timeout ends a probe of it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let work = tempfile::tempdir().expect("temp dir");
    let extra = format!("serve:\n  allow_targets: [\"{}/other/*\", \"{silent_addr}/*\"]\n", registry.host_port());
    let config = write_config(work.path(), &config_for(&registry, &extra).replace("interval: 1s", "interval: 1h"));
    let serve = Serve::start(&config);

    let configured = format!("/probe?target={}/team/app:1", registry.host_port());
    let (status, body) = serve.get(&configured);
    assert_eq!(status, 200, "{body}");
    assert_eq!(sample(&body, "pullprobe_probe_success", &[]), Some(1.0), "{body}");
    assert!(!body.contains(r#"probe="base""#), "only the probed target's metrics: {body}");

    let by_name = serve.get("/probe?probe=base");
    assert_eq!(sample(&by_name.1, "pullprobe_probe_success", &[r#"probe="base""#]), Some(1.0), "{}", by_name.1);

    let allowed = serve.get(&format!("/probe?target={}/other/extra:1", registry.host_port()));
    assert_eq!(sample(&allowed.1, "pullprobe_probe_success", &[]), Some(1.0), "{}", allowed.1);

    let (status, body) = serve.get(&format!("/probe?target={}/secret/thing:1", registry.host_port()));
    assert_eq!(status, 403, "{body}");
    let (status, _) = serve.get("/probe?target=example.org/anything:1");
    assert_eq!(status, 403);
    let (status, body) = serve.get(&format!("{configured}&frontend=http://127.0.0.1:1"));
    assert_eq!(status, 400, "a frontend must be a configured one, never a URL from the request: {body}");

    let started = Instant::now();
    let answer = http_request(
        "GET",
        &serve.addr,
        &format!("/probe?target={silent_addr}/x/y:1"),
        &[("X-Prometheus-Scrape-Timeout-Seconds", "2")],
    )
    .expect("probe answer");
    let took = started.elapsed();
    let body = String::from_utf8_lossy(&answer.body);
    assert_eq!(answer.status, 200, "{body}");
    assert_eq!(sample(&body, "pullprobe_probe_success", &[]), Some(0.0), "{body}");
    assert_eq!(sample(&body, "pullprobe_probe_last_failure_info", &[r#"reason="timeout""#]), Some(1.0), "{body}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}, past the 2 s scrape timeout");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_reload_keeps_the_old_config_and_sigterm_stops_promptly() {
    let registry = Registry::start();
    push_small_image(&registry, "team/app", "1").await;
    push_small_image(&registry, "team/base", "1").await;
    let work = tempfile::tempdir().expect("temp dir");
    let config = write_config(work.path(), &config_for(&registry, ""));
    let serve = Serve::start(&config);
    let app = r#"probe="app""#;
    let before = serve.wait_for(
        "/metrics",
        |m| sample(m, "pullprobe_probe_success", &[app]) == Some(1.0),
        Duration::from_secs(20),
    );
    let seen = sample(&before, "pullprobe_probe_last_success_timestamp_seconds", &[app]).expect("timestamp");

    std::fs::write(&config, "defaults:\n  interval: soon\n").expect("broken config");
    serve.signal("HUP");
    serve.wait_for(
        "/metrics",
        |m| sample(m, "pullprobe_serve_config_reloads", &[r#"result="failure""#]).is_some_and(|n| n >= 1.0),
        Duration::from_secs(20),
    );
    // Still probing with the old config.
    serve.wait_for(
        "/metrics",
        |m| sample(m, "pullprobe_probe_last_success_timestamp_seconds", &[app]).is_some_and(|t| t > seen),
        Duration::from_secs(20),
    );
    assert!(serve.log().contains("probes.yaml:2:"), "the reload error names file:line:column:\n{}", serve.log());

    // A good config with one probe fewer: its series disappear.
    std::fs::write(
        &config,
        config_for(&registry, "").replace("  - name: base\n    registry: local\n    image: team/base:1\n", ""),
    )
    .expect("new config");
    serve.signal("HUP");
    serve.wait_for("/metrics", |m| !m.contains(r#"probe="base""#) && m.contains(app), Duration::from_secs(20));

    let started = Instant::now();
    let mut serve = serve;
    serve.signal("TERM");
    let status = loop {
        if let Some(status) = serve.child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "serve did not stop within 5 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
}

/// One single-layer image per seed: no two share a blob, so a fault hits one repository.
fn seeded_image(registry: &Registry, seed: u64) -> image_builder::Image {
    use image_builder::{Format, GeneratedContent, ImageBuilder, LayerBuilder, LayerCompression};
    let dir = registry.scratch();
    let layer = LayerBuilder::new()
        .file("srv/data.bin", GeneratedContent::random(seed, 30_000))
        .write(&dir, LayerCompression::Gzip)
        .expect("layer");
    ImageBuilder::new(Format::Oci).layer(layer).build(&dir).expect("image")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_sample_rotates_covers_every_repository_and_keeps_unsampled_failures() {
    let registry = Registry::start();
    let mut pushed = Vec::new();
    for i in 0..4u64 {
        pushed.push(common::push(&registry, &format!("pool/r{i}"), "latest", seeded_image(&registry, 100 + i)).await);
    }
    push_small_image(&registry, "other/not-matched", "latest").await;
    let work = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        work.path(),
        &format!(
            "defaults:\n  interval: 1s\n  timeout: 10s\n  location: test\n\
             registries:\n  - name: local\n    url: {}\n\
             probes:\n  - name: pool\n    registry: local\n    catalog: {{match: '^pool/', sample: 2, tag: latest}}\n",
            registry.url().as_str().trim_end_matches('/')
        ),
    );
    let serve = Serve::start(&config);
    let host = registry.host_port();
    let image = |i: usize| format!(r#"image="{host}/pool/r{i}:latest""#);

    // Two per run, four candidates: every repository within two runs.
    let covered = serve.wait_for(
        "/metrics",
        |m| (0..4).all(|i| sample(m, "pullprobe_probe_success", &[&image(i)]) == Some(1.0)),
        Duration::from_secs(30),
    );
    assert!(!covered.contains("other/not-matched"), "{covered}");
    assert_eq!(sample(&covered, "pullprobe_discovery_candidates", &[r#"probe="pool""#]), Some(4.0), "{covered}");
    assert_eq!(sample(&covered, "pullprobe_discovery_rounds_to_cover", &[r#"probe="pool""#]), Some(2.0));
    let age = sample(&covered, "pullprobe_discovery_coverage_age_seconds", &[r#"probe="pool""#]).expect("age");
    assert!((0.0..10.0).contains(&age), "coverage age {age}");

    // A fault in one repository: caught when its turn comes, and its failing series
    // stays (at 0, still paging) through the runs that sample the others.
    registry.flip_byte(&pushed[1].content.layers[0].blob.digest, 10);
    serve.wait_for(
        "/metrics",
        |m| sample(m, "pullprobe_probe_success", &[&image(1)]) == Some(0.0),
        Duration::from_secs(30),
    );
    for _ in 0..20 {
        let (_, metrics) = serve.get("/metrics");
        assert_eq!(
            sample(&metrics, "pullprobe_probe_success", &[&image(1)]),
            Some(0.0),
            "the unsampled failure vanished or cleared:\n{metrics}"
        );
        assert_eq!(sample(&metrics, "pullprobe_probe_success", &[&image(2)]), Some(1.0), "{metrics}");
        std::thread::sleep(Duration::from_millis(150));
    }
    let page = serve.get("/").1;
    assert!(page.contains("pool/r1") && page.contains("blob_digest_mismatch"), "status page lacks the failure");
}
