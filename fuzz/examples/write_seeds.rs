//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`:
//! real manifests, indexes, configs and layers made by pullprobe's own image
//! builder, the headers, error bodies and read-backs the test suite serves, the
//! probes.yaml of the repository, Kubernetes list pages in the API's shape, the
//! hosts.toml and registries.conf examples of the mirror tests, and what credential
//! provider plugins and the ECR, GCP and ACR stand-ins of the cloud tests answer.
//! Each file is laid out as its target reads input (a selector byte, a header…).
//!
//! Usage (from `fuzz/`): `cargo run --example write_seeds`. The files are
//! deterministic: running it again rewrites the same bytes. The content target
//! has no seeds of its own here; its corpus is what a run of it keeps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use image_builder::{
    ArtifactBlob, Entry, Format, GeneratedContent, Image, ImageBuilder, IndexBuilder, LayerBuilder, LayerCompression,
    Platform, attestation, in_toto_statement,
};
use pullprobe::digest::Digest;
use pullprobe::output::alertmanager::{AlertSettings, firing_alert};
use pullprobe::output::history::advance;
use pullprobe::output::metrics;
use serde_json::{Value, json};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = fuzz.join("corpus");
    let scratch = std::env::temp_dir().join(format!("pullprobe-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let seeds = Seeds { corpus };
    let images = images(&scratch)?;
    references(&seeds)?;
    manifests(&seeds, &images, &scratch)?;
    headers(&seeds)?;
    error_bodies(&seeds)?;
    layers(&seeds, &scratch)?;
    configs(&seeds, fuzz.parent().ok_or("fuzz/ has a parent")?)?;
    docker_configs(&seeds)?;
    read_backs(&seeds)?;
    kubernetes(&seeds)?;
    node_configs(&seeds, fuzz.parent().ok_or("fuzz/ has a parent")?)?;
    credential_answers(&seeds)?;
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}

struct Seeds {
    corpus: PathBuf,
}

impl Seeds {
    fn write(&self, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
        Ok(())
    }

    /// A seed whose first byte selects something (a content type, a kind, a format).
    fn selected(&self, target: &str, name: &str, selector: u8, bytes: &[u8]) -> Result<()> {
        let mut input = vec![selector];
        input.extend_from_slice(bytes);
        self.write(target, name, &input)
    }
}

fn small_layer() -> LayerBuilder {
    let long = format!("srv/{}/deep/file.txt", "d".repeat(120));
    LayerBuilder::new()
        .dir("etc")
        .file("etc/app.conf", "key = value\n")
        .entry(Entry::file("usr/bin/tool", vec![0x7f, b'E', b'L', b'F']).mode(0o755).owner(1000, 1001))
        .file("srv/data.bin", GeneratedContent::random(3, 3000))
        .symlink("etc/alias.conf", "app.conf")
        .hard_link("usr/bin/tool2", "/usr/bin/tool")
        .file(&long, "long")
        .symlink("srv/to-long", &long)
        .whiteout("var/lib/old")
        .opaque_whiteout("var/cache")
}

struct Images {
    oci: Image,
    docker: Image,
    index: Vec<u8>,
    docker_list: Vec<u8>,
}

fn images(dir: &Path) -> Result<Images> {
    let layer = small_layer().write(dir, LayerCompression::Gzip)?;
    let base = LayerBuilder::new().file("bin/sh", "#!\n").write(dir, LayerCompression::Zstd)?;
    let oci = ImageBuilder::new(Format::Oci)
        .layers([base.clone(), layer.clone()])
        .runtime_config("Labels", json!({"org.opencontainers.image.vendor": "Example", "n": 1}))
        .build(dir)?;
    let docker = ImageBuilder::new(Format::Docker).layer(layer).no_created().build(dir)?;
    let arm = ImageBuilder::new(Format::Oci).platform(Platform::linux_arm64_v8()).layer(base).build(dir)?;
    let statement =
        ArtifactBlob::new("application/vnd.in-toto+json", in_toto_statement(&oci, "https://slsa.dev/provenance/v1"));
    let provenance = attestation(vec![statement]).build(dir)?;
    let subject = oci.digest();
    let index = IndexBuilder::new(Format::Oci)
        .image(oci.clone())
        .image(arm.clone())
        .attestation(provenance, subject)
        .build()
        .manifest
        .bytes
        .to_vec();
    let docker_list = IndexBuilder::new(Format::Docker).image(docker.clone()).build().manifest.bytes.to_vec();
    Ok(Images { oci, docker, index, docker_list })
}

fn references(seeds: &Seeds) -> Result<()> {
    let digest = Digest::of(b"pullprobe");
    let references = [
        "alpine".to_string(),
        "registry.example.org/team/app:1.2".to_string(),
        format!("127.0.0.1:5000/small:latest@{digest}"),
        "[::1]:5000/a/b/c:v1.0-rc.1".to_string(),
        "localhost/x__y-z.w:tag".to_string(),
        "docker.io/library/nginx".to_string(),
        digest.to_string(),
        "linux/arm64/v8,linux/amd64".to_string(),
        "all".to_string(),
    ];
    for (i, reference) in references.iter().enumerate() {
        seeds.write("reference", &format!("reference-{i}"), reference.as_bytes())?;
    }
    Ok(())
}

/// Selector bytes of the manifest target's Content-Type table.
const NO_CONTENT_TYPE: u8 = 0;
const OCI_MANIFEST: u8 = 1;
const OCI_INDEX: u8 = 2;
const DOCKER_MANIFEST: u8 = 3;
const DOCKER_MANIFEST_LIST: u8 = 4;
const SCHEMA1: u8 = 6;

fn manifests(seeds: &Seeds, images: &Images, dir: &Path) -> Result<()> {
    seeds.selected("manifest", "oci-image", OCI_MANIFEST, &images.oci.manifest.bytes)?;
    seeds.selected("manifest", "docker-image", DOCKER_MANIFEST, &images.docker.manifest.bytes)?;
    seeds.selected("manifest", "oci-index-with-attestation", OCI_INDEX, &images.index)?;
    seeds.selected("manifest", "docker-manifest-list", DOCKER_MANIFEST_LIST, &images.docker_list)?;
    seeds.selected("manifest", "no-media-type", NO_CONTENT_TYPE, br#"{"schemaVersion":2,"config":{"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":2},"layers":[]}"#)?;
    seeds.selected("manifest", "schema1", SCHEMA1, br#"{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[]}"#)?;
    for (name, image) in [("oci", &images.oci), ("docker", &images.docker)] {
        let config = std::fs::read(&image.config.path)?;
        seeds.write("image_config", name, &config)?;
    }
    let artifact = image_builder::ArtifactBuilder::with_empty_config("application/vnd.example.sbom")
        .blob(ArtifactBlob::new("application/json", &b"{}"[..]))
        .build(dir)?;
    seeds.selected("manifest", "artifact", OCI_MANIFEST, &artifact.manifest.bytes)?;
    Ok(())
}

fn headers(seeds: &Seeds) -> Result<()> {
    let challenges = [
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        r#"Basic realm="Registry Realm""#,
        "Basic realm=\"Registry, \\\"Realm\\\"\" , Bearer  realm = \"https://a.example.org/t?x=1,2\", service=reg, scope=\"repository:a:pull,push repository:b:pull\", error=\"insufficient_scope\",Negotiate abc==",
        "Bearer realm=\"https://harbor.example.org/service/token\",service=\"harbor-registry\"\nBasic realm=\"harbor\"",
    ];
    for (i, challenge) in challenges.iter().enumerate() {
        seeds.write("www_authenticate", &format!("challenge-{i}"), challenge.as_bytes())?;
    }
    let links: [(u8, &str); 4] = [
        (0, r#"</v2/team/app/tags/list?last=b&n=1000>; rel="next""#),
        (1, r#"</v2/_catalog?last=team%2Fapp&n=1000>; rel="next""#),
        (2, r#"<https://elsewhere.example.org/v2/a/tags/list?last=b>; rel="next""#),
        (
            0,
            "<https://127.0.0.1:5000/v2/team/app/tags/list?n=1000>; rel=prev, </v2/team/app/tags/list?n=1000&last=z>; rel=next",
        ),
    ];
    for (i, (request, link)) in links.iter().enumerate() {
        seeds.selected("link", &format!("link-{i}"), *request, link.as_bytes())?;
    }
    for (i, value) in
        ["120", " 0 ", "Wed, 21 Oct 2026 07:28:00 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", "99999999999999999999999"]
            .iter()
            .enumerate()
    {
        seeds.write("retry_after", &format!("retry-after-{i}"), value.as_bytes())?;
    }
    // Selector bytes of the response_headers target: ratelimit-remaining, x-cache-status, x-cache, cf-cache-status.
    let responses: [&[(u8, &str)]; 3] = [
        &[(0, "76;w=21600"), (1, "HIT")],
        &[(2, "Hit from cloudfront"), (3, "DYNAMIC")],
        &[(2, "MISS, HIT"), (0, "0")],
    ];
    for (i, response) in responses.iter().enumerate() {
        let mut input = Vec::new();
        for (name, value) in *response {
            input.push(*name);
            input.extend_from_slice(value.as_bytes());
            input.push(b'\n');
        }
        seeds.write("response_headers", &format!("response-{i}"), &input)?;
    }
    Ok(())
}

fn error_bodies(seeds: &Seeds) -> Result<()> {
    // Selector bytes: manifest, blob, upload, other.
    let cases: [(u16, u8, &str); 6] = [
        (404, 1, r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:ab"}]}"#),
        (404, 0, r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"latest"}}]}"#),
        (429, 0, r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#),
        (
            401,
            3,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Name":"a","Action":"pull"}]}]}"#,
        ),
        (404, 2, r#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}"#),
        (502, 1, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    ];
    for (i, (status, kind, body)) in cases.iter().enumerate() {
        let mut input = (status - 100).to_le_bytes().to_vec();
        input.push(*kind);
        input.extend_from_slice(body.as_bytes());
        seeds.write("error_body", &format!("refusal-{i}"), &input)?;
    }
    Ok(())
}

/// The layer target's 8-byte header: compression (bit 7: wrap), size mode and delta,
/// flags (bits 1–2: diff_id right), 3 bytes of cap, ratio.
fn layer_input(compression: u8, diff_id_right: bool, blob: &[u8]) -> Vec<u8> {
    let flags = if diff_id_right { 0b0000_1010 } else { 0 };
    let mut input = vec![compression, 0, 0, flags, 0, 0, 0x10, 0];
    input.extend_from_slice(blob);
    input
}

fn layers(seeds: &Seeds, dir: &Path) -> Result<()> {
    let builder = small_layer();
    let tar = builder.write_tar(Vec::new())?;
    seeds.write("layer", "tar", &layer_input(0, true, &tar))?;
    seeds.write("layer", "wrapped-gzip", &layer_input(0x81, true, &tar))?;
    seeds.write("layer", "wrapped-zstd", &layer_input(0x82, true, &tar))?;
    seeds.write("layer", "not-a-layer", &layer_input(3, false, b"{\"architecture\":\"amd64\"}"))?;
    for (name, compression, selector) in [
        ("gzip", LayerCompression::Gzip, 1),
        ("gzip-multi-member", LayerCompression::gzip_multi_member(), 1),
        ("zstd", LayerCompression::Zstd, 2),
        ("zstd-multi-frame", LayerCompression::zstd_multi_frame(), 2),
    ] {
        let layer = builder.write(dir, compression)?;
        seeds.write("layer", name, &layer_input(selector, true, &std::fs::read(&layer.blob.path)?))?;
    }
    Ok(())
}

fn configs(seeds: &Seeds, repository: &Path) -> Result<()> {
    seeds.write("probes_yaml", "probes.yaml", &std::fs::read(repository.join("probes.yaml"))?)?;
    let small = "defaults: {interval: 5m, timeout: 2m, platforms: [linux/amd64, linux/arm64/v8]}\n\
                 limits: {max_manifest_bytes: 4MiB}\n\
                 probes:\n  - {name: app, image: '127.0.0.1:5000/app:stable', expect: {paths: [/etc/app.conf, {path: /tmp, type: dir}], max_age: 30d}}\n  - name: releases\n    image: 127.0.0.1:5000/releng/mediawiki\n    tags: {match: '^[0-9]{4}-', newest: 2}\n";
    seeds.write("probes_yaml", "small.yaml", small.as_bytes())?;
    for (i, text) in ["30s", "1h30m", "500ms", "4MiB", "16GiB"].iter().enumerate() {
        seeds.write("probes_yaml", &format!("unit-{i}"), text.as_bytes())?;
    }
    Ok(())
}

fn docker_configs(seeds: &Seeds) -> Result<()> {
    // Even selector: config.json / .dockerconfigjson; odd: .dockercfg.
    let configs: [(u8, &str); 5] = [
        (
            0,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"YWxpY2U6aHVudGVyMg=="},"registry.example.org:5000":{"username":"bob","password":"s3cret"}}}"#,
        ),
        (
            0,
            r#"{"auths":{"*.example.org/team":{"auth":"Ym9iOnB3"},"example.org":{"identitytoken":"token-abc"}},"credsStore":"desktop","credHelpers":{"gcr.io":"gcloud"}}"#,
        ),
        (1, r#"{"registry.example.org":{"auth":"YWxpY2U6aHVudGVyMg==","email":"a@example.org"}}"#),
        (0, r#"{"auths":{"r.example.org":{"auth":"!!not-base64"}}}"#),
        (0, r#"{"auths":{"r.example.org":{"username":"only"}}}"#),
    ];
    for (i, (format, config)) in configs.iter().enumerate() {
        seeds.selected("docker_config", &format!("config-{i}"), *format, config.as_bytes())?;
    }
    Ok(())
}

fn read_backs(seeds: &Seeds) -> Result<()> {
    let results = pullprobe_fuzz::results();
    let history = advance(&Default::default(), &results);
    let history = advance(&history, &results);
    let mut families = serde_json::Map::new();
    for family in metrics::gauge_families(&results, &history) {
        let samples: Vec<Value> = family
            .samples
            .iter()
            .map(|s| {
                let labels: BTreeMap<&str, &str> = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                json!({"labels": labels, "value": s.value.to_string()})
            })
            .collect();
        families
            .insert(metrics::full_name(family.name), json!({"type": "GAUGE", "help": family.help, "metrics": samples}));
    }
    families.insert("labels".into(), json!({"job": "pullprobe", "probe": "golden-base", "location": "eqiad"}));
    families.insert(
        "push_time_seconds".into(),
        json!({"type": "GAUGE", "metrics": [{"labels": {}, "value": "1.7953e+09"}]}),
    );
    let body = json!({"status": "success", "data": [families]});
    seeds.write("pushgateway_read_back", "two-failed-runs", &serde_json::to_vec_pretty(&body)?)?;
    seeds.write(
        "pushgateway_read_back",
        "error",
        br#"{"status":"error","errorType":"internal","error":"no metrics"}"#,
    )?;

    let settings = AlertSettings {
        static_labels: BTreeMap::from([("team".to_string(), "sre".to_string())]),
        runbook_url: Some("https://wiki.example.org/pullprobe".into()),
        after: Default::default(),
        severities: BTreeMap::new(),
        owned_probes: Default::default(),
        carried: Default::default(),
        shard: Default::default(),
    };
    let mut alerts: Vec<Value> = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| serde_json::to_value(firing_alert(r, &settings, 1_795_400_000.0, 1_795_500_000.0)))
        .collect::<std::result::Result<_, _>>()?;
    // What Alertmanager adds when it returns an alert.
    for alert in &mut alerts {
        alert["fingerprint"] = json!("4c1f0e5d2a3b6978");
        alert["receivers"] = json!([{"name": "sre"}]);
        alert["status"] = json!({"inhibitedBy": [], "silencedBy": [], "state": "active"});
        alert["updatedAt"] = json!("2026-11-23T06:00:02.123Z");
    }
    seeds.write("alertmanager_read_back", "firing", &serde_json::to_vec_pretty(&alerts)?)?;
    let gone = result_alert_elsewhere(&alerts);
    seeds.write("alertmanager_read_back", "firing-on-a-gone-frontend", &serde_json::to_vec(&gone)?)?;
    seeds.write("alertmanager_read_back", "none", b"[]")?;
    Ok(())
}

/// The first alert as if its frontend had left DNS.
fn result_alert_elsewhere(alerts: &[Value]) -> Vec<Value> {
    let mut gone = alerts.to_vec();
    if let Some(first) = gone.first_mut() {
        first["labels"]["frontend"] = json!("10.0.0.9");
    }
    gone
}

fn kubernetes(seeds: &Seeds) -> Result<()> {
    let container = |name: &str, image: &str| {
        json!({"name": name, "image": image, "resources": {"limits": {"memory": "128Mi"}},
               "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"})
    };
    let metadata = |name: &str| {
        json!({"name": name, "namespace": "prod", "uid": "5f0c7a2e-0001-4b1e-9a57-3c6d2b8e1f40",
               "resourceVersion": "48151602", "creationTimestamp": "2026-11-20T08:14:03Z", "labels": {"app": name}})
    };
    let pod_spec = json!({
        "containers": [container("app-0", "registry.example.org/team/app:1.2"), container("app-1", "nginx")],
        "initContainers": [container("init-0", "busybox@sha256:3d2f6c0b8a4e5f1c9d7b2a6e8f0c4d1b3a5e7f9c2d4b6a8e0f1c3d5b7a9e2f4c")],
        "ephemeralContainers": [{"name": "debugger-0", "image": "Not A Reference", "targetContainerName": "app-0"}],
        "imagePullSecrets": [{"name": "pull"}, {"name": ""}],
        "restartPolicy": "Always", "serviceAccountName": "default"
    });
    let pods = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "48151623", "continue": "eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ"},
                      "items": [{"metadata": metadata("web-7d9c"), "spec": pod_spec, "status": {"phase": "Running"}}]});
    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": pod_spec});
    let deployments = json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {},
                             "items": [{"metadata": metadata("web"), "spec": {"replicas": 3, "template": template}}]});
    let cron_jobs = json!({"kind": "CronJobList", "apiVersion": "batch/v1", "metadata": {},
                           "items": [{"metadata": metadata("nightly"), "spec": {"schedule": "0 3 * * *",
                                      "jobTemplate": {"spec": {"template": template}}}}]});
    let secret = json!({"kind": "Secret", "apiVersion": "v1", "metadata": metadata("pull"), "type": "kubernetes.io/dockerconfigjson",
                        "data": {".dockerconfigjson": "eyJhdXRocyI6eyJyZWdpc3RyeS5leGFtcGxlLm9yZyI6eyJhdXRoIjoiWVd4cFkyVTZhSFZ1ZEdWeU1nPT0ifX19"}});
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "pods is forbidden: User \"system:serviceaccount:pullprobe:pullprobe\" cannot list resource \"pods\"",
                        "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403});
    // Selector bytes: Kind::ALL is Deployment, StatefulSet, DaemonSet, CronJob, Job, Pod.
    for (name, kind, body) in [
        ("pods", 5, &pods),
        ("deployments", 0, &deployments),
        ("cronjobs", 3, &cron_jobs),
        ("secret", 5, &secret),
        ("status", 5, &status),
    ] {
        seeds.selected("kubernetes_list", name, kind, &serde_json::to_vec(body)?)?;
    }
    Ok(())
}

/// Selector bytes of the hosts_toml target's images.
const HOSTS_DOCKER_IO: u8 = 0;
const HOSTS_MYREGISTRY: u8 = 1;
const HOSTS_GHCR: u8 = 3;
/// Selector bytes of the registries_conf target's images.
const CONF_DOCKER_IO: u8 = 0;
const CONF_EXAMPLE_COM: u8 = 1;
const CONF_REGISTRY_COM_BY_DIGEST: u8 = 2;
const CONF_SUBDOMAIN: u8 = 3;
const CONF_QUAY: u8 = 5;

/// The hosts.toml and registries.conf files of tests/fixtures/mirrors (containerd's
/// docs/hosts.md and containers-registries.conf(5) examples), and the unit tests' texts.
fn node_configs(seeds: &Seeds, repository: &Path) -> Result<()> {
    let containerd = repository.join("tests/fixtures/mirrors/containerd");
    for (example, selector) in [
        ("simple/docker.io", HOSTS_DOCKER_IO),
        ("local-mirror/docker.io", HOSTS_DOCKER_IO),
        ("skip-verify/docker.io", HOSTS_DOCKER_IO),
        ("host-fields/myregistry.io_5000_", HOSTS_MYREGISTRY),
        ("default-mirror/_default", HOSTS_GHCR),
        ("default-server/_default", HOSTS_GHCR),
        ("proxy/my-registry.io", HOSTS_GHCR),
        ("mirror-proxy/my-registry.io", HOSTS_GHCR),
    ] {
        let text = std::fs::read(containerd.join(example).join("hosts.toml"))?;
        let name = example.split('/').next().ok_or("an example name")?;
        seeds.selected("hosts_toml", name, selector, &text)?;
    }
    let texts = [
        "[host.\"mirror.example.com/some/path/\"]\n  capabilities = [\"PULL\", \"Resolve\"]\n  dial_timeout = \"1s\"\n\
         [host.\"https://m2/v2\"]\n  capabilities = [\"resolve\"]\n[host.\"https://m3\"]\n  override_path = true\n",
        "server = \"https://registry-1.docker.io\"\n[header]\n  Authorization = \"Bearer c2VjcmV0LXRva2Vu\"\n\
         [host.\"http://10.0.0.2:5000\"]\n  ca = \"ca.crt\"\n  client = [\"client.pem\"]\n  [host.\"http://10.0.0.2:5000\".header]\n    X-Token = [\"Zm9vYmFyYmF6\"]\n",
        "[host.\"https://m\"]\n  client = [[\"only-one\"]]\n",
    ];
    for (i, text) in texts.iter().enumerate() {
        seeds.selected("hosts_toml", &format!("unit-{i}"), HOSTS_DOCKER_IO, text.as_bytes())?;
    }

    let conf = repository.join("tests/fixtures/mirrors/registries.conf");
    for (file, selector) in [
        ("example.conf", CONF_EXAMPLE_COM),
        ("pull-from-mirror.conf", CONF_DOCKER_IO),
        ("pull-from-mirror.conf", CONF_QUAY),
        ("pull-from-mirror.conf", CONF_SUBDOMAIN),
        ("version-1.conf", CONF_DOCKER_IO),
    ] {
        let name = format!("{}-{selector}", file.trim_end_matches(".conf"));
        seeds.selected("registries_conf", &name, selector, &std::fs::read(conf.join(file))?)?;
    }
    let texts = [
        "[[registry]]\nlocation = \"example.com\"\n[[registry]]\nprefix = \"example.com/foo\"\nlocation = \"m.io/x\"\n",
        "unqualified-search-registries = [\"docker.io\"]\nshort-name-mode = \"enforcing\"\n\
         [[registry]]\nprefix = \"registry.com\"\nlocation = \"registry.com\"\ninsecure = true\n\
         [[registry.mirror]]\nlocation = \"mirror.registry.com:5000/cache\"\npull-from-mirror = \"digest-only\"\n\
         [aliases]\n\"app\" = \"registry.com/app\"\n",
        "[[registry]]\nlocation = \"r.io\"\n[registries.search]\nregistries = [\"a.io\"]\n",
    ];
    for (i, text) in texts.iter().enumerate() {
        let selector = [CONF_EXAMPLE_COM, CONF_REGISTRY_COM_BY_DIGEST, CONF_DOCKER_IO][i];
        seeds.selected("registries_conf", &format!("unit-{i}"), selector, text.as_bytes())?;
    }
    Ok(())
}

/// Selector bytes of the credential_provider target.
const PLUGIN_RESPONSE: u8 = 0;
const ECR_ANSWER: u8 = 1;
const GCP_ANSWER: u8 = 2;
const ACR_ANSWER: u8 = 3;

/// A plugin's answers and the cloud stand-ins' token answers, as tests/cloud_auth.rs has them.
fn credential_answers(seeds: &Seeds) -> Result<()> {
    let response = json!({
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Registry",
        "cacheDuration": "1h0m0s",
        "auth": {
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com": {"username": "puller", "password": "plugin-password-5f3a"},
            "*.example.org": {"username": "elsewhere", "password": "not-for-this-registry"},
        },
    });
    seeds.selected("credential_provider", "plugin-registry", PLUGIN_RESPONSE, &serde_json::to_vec(&response)?)?;
    let unmatched = br#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Image","auth":{"*.example.org":{"username":"u","password":"p"}}}"#;
    seeds.selected("credential_provider", "plugin-unmatched", PLUGIN_RESPONSE, unmatched)?;
    let mut garbage = b"this is not JSON stdout-secret-1234\0".to_vec();
    garbage.extend_from_slice(b"plugin complaint number 0\nplugin complaint number 1\nAuthorization: Bearer abc.def\n");
    seeds.selected("credential_provider", "plugin-garbage", PLUGIN_RESPONSE, &garbage)?;
    let global = br#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Global","cacheDuration":"300ms","auth":{"https://index.docker.io/v1/":{"username":"u","password":"pw"}}}"#;
    seeds.selected("credential_provider", "plugin-global", PLUGIN_RESPONSE, global)?;

    let token = base64::engine::general_purpose::STANDARD.encode("AWS:ecr-password-0123456789");
    let ecr = json!({"authorizationData": [{
        "authorizationToken": token,
        "expiresAt": 1_795_000_000.5,
        "proxyEndpoint": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
    }]});
    seeds.selected("credential_provider", "ecr", ECR_ANSWER, &serde_json::to_vec(&ecr)?)?;
    let gcp = json!({"access_token": "ya29.c.b0AXv0zTPexample", "expires_in": 3599, "token_type": "Bearer"});
    seeds.selected("credential_provider", "gcp", GCP_ANSWER, &serde_json::to_vec(&gcp)?)?;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let refresh = format!("{}.{}.sig", b64("{\"alg\":\"RS256\"}"), b64("{\"exp\":1795000000}"));
    seeds.selected(
        "credential_provider",
        "acr",
        ACR_ANSWER,
        &serde_json::to_vec(&json!({"refresh_token": refresh}))?,
    )?;
    Ok(())
}
