//! What the pull engine does with input no real registry sends: malformed and
//! oversized manifests, unknown media types, non-JSON error bodies, wrong or
//! missing digest headers, blobs that are too long, cut short or stalled,
//! redirect loops, impossible descriptors and rate limits.
//!
//! Each test starts a small in-process HTTP server on 127.0.0.1:0 that answers
//! `/v2/...` like a registry except where the test says otherwise, runs the real
//! `pullprobe now -o json` against it and asserts the reason, the phase and the
//! error text of the one result.

mod common;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use serde_json::{Value, json};

use common::{ResultJson, json_results, run_pullprobe};
use image_builder::Digest;
use pullprobe::media_types;

const REPO: &str = "repo";
const TAG: &str = "v1";
/// No run here should come near this; passing it means something hung.
const HANG_LIMIT: Duration = Duration::from_secs(30);
const DEFAULT_MANIFEST_CAP: u64 = 4 << 20;

// ---------------------------------------------------------------------------
// A small image, built in memory.

struct TestLayer {
    blob: Bytes,
    digest: String,
    diff_id: String,
}

struct TestImage {
    config: Bytes,
    config_digest: String,
    layers: Vec<TestLayer>,
}

/// Deterministic bytes that do not compress, so a layer's size is its content's.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn tar_with_file(name: &str, data: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut head = tar::Header::new_ustar();
    head.set_size(data.len() as u64);
    head.set_mode(0o644);
    head.set_mtime(0);
    head.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut head, name, data).expect("tar entry");
    builder.into_inner().expect("tar end")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip end")
}

fn digest_of(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

fn config_json(diff_ids: &[&str]) -> Bytes {
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    Bytes::from(serde_json::to_vec(&config).expect("config JSON"))
}

impl TestImage {
    /// An OCI image with one gzip layer per size, each holding one file of that many bytes.
    fn new(file_sizes: &[usize]) -> Self {
        let layers: Vec<TestLayer> = file_sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let tar = tar_with_file(&format!("file-{i}.bin"), &noise(i as u64 + 1, size));
                let blob = Bytes::from(gzip(&tar));
                TestLayer { digest: digest_of(&blob), diff_id: digest_of(&tar), blob }
            })
            .collect();
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let config = config_json(&diff_ids);
        TestImage { config_digest: digest_of(&config), config, layers }
    }

    fn small() -> Self {
        TestImage::new(&[2_000])
    }

    /// Replace the config's `rootfs.diff_ids`.
    fn with_diff_ids(mut self, diff_ids: &[&str]) -> Self {
        self.config = config_json(diff_ids);
        self.config_digest = digest_of(&self.config);
        self
    }

    fn layer_size(&self, index: usize) -> usize {
        self.layers[index].blob.len()
    }

    fn manifest(&self) -> Value {
        json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "config": {
                "mediaType": media_types::OCI_CONFIG,
                "digest": self.config_digest,
                "size": self.config.len(),
            },
            "layers": self.layers.iter().map(|l| json!({
                "mediaType": media_types::OCI_LAYER_GZIP,
                "digest": l.digest,
                "size": l.blob.len(),
            })).collect::<Vec<_>>(),
        })
    }
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("JSON"))
}

// ---------------------------------------------------------------------------
// The server.

/// What the server answers unless a test's hook answers first.
struct Content {
    manifest: Bytes,
    manifest_type: String,
    blobs: HashMap<String, Bytes>,
}

impl Content {
    fn of(image: &TestImage) -> Self {
        Content::with_manifest(image, to_bytes(&image.manifest()), media_types::OCI_MANIFEST)
    }

    /// The image's blobs behind another manifest document.
    fn with_manifest(image: &TestImage, manifest: impl Into<Bytes>, manifest_type: &str) -> Self {
        let mut blobs: HashMap<String, Bytes> =
            image.layers.iter().map(|l| (l.digest.clone(), l.blob.clone())).collect();
        blobs.insert(image.config_digest.clone(), image.config.clone());
        Content { manifest: manifest.into(), manifest_type: manifest_type.to_string(), blobs }
    }

    fn answer(&self, path: &str) -> Response {
        if path == "/v2/" {
            return respond(StatusCode::OK, &[("content-type", "application/json")], "{}");
        }
        if path.starts_with(&format!("/v2/{REPO}/manifests/")) {
            let digest = digest_of(&self.manifest);
            return respond(
                StatusCode::OK,
                &[("content-type", &self.manifest_type), ("docker-content-digest", &digest)],
                self.manifest.clone(),
            );
        }
        if let Some(digest) = path.strip_prefix(&format!("/v2/{REPO}/blobs/"))
            && let Some(blob) = self.blobs.get(digest)
        {
            return respond(
                StatusCode::OK,
                &[("content-type", "application/octet-stream"), ("docker-content-digest", digest)],
                blob.clone(),
            );
        }
        registry_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    host: String,
    authorization: bool,
    at: Instant,
}

/// A request handed to a test's hook.
struct Call<'a> {
    path: &'a str,
    /// 1 for the first request to this path, 2 for the second, …
    attempt: usize,
}

type Hook = Box<dyn Fn(&Call) -> Option<Response> + Send + Sync>;

struct ServerState {
    content: Content,
    hook: Hook,
    seen: Mutex<Vec<Seen>>,
}

struct FakeRegistry {
    addr: SocketAddr,
    state: Arc<ServerState>,
}

impl FakeRegistry {
    /// Serve `content`; `hook` answers first and falls through with `None`.
    async fn start(content: Content, hook: impl Fn(&Call) -> Option<Response> + Send + Sync + 'static) -> Self {
        let state = Arc::new(ServerState { content, hook: Box::new(hook), seen: Mutex::new(Vec::new()) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeRegistry { addr, state }
    }

    async fn serving(image: &TestImage) -> Self {
        FakeRegistry::start(Content::of(image), |_| None).await
    }

    fn reference(&self) -> String {
        format!("{}/{REPO}:{TAG}", self.addr)
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests to paths that start with `prefix`, in order.
    fn requests_to(&self, prefix: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path.starts_with(prefix)).collect()
    }

    fn manifest_requests(&self) -> usize {
        self.requests_to(&format!("/v2/{REPO}/manifests/")).len()
    }
}

async fn handle(State(state): State<Arc<ServerState>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let authorization = request.headers().contains_key(header::AUTHORIZATION);
    let attempt = {
        let mut seen = state.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.push(Seen { path: path.clone(), host, authorization, at: Instant::now() });
        seen.iter().filter(|s| s.path == path).count()
    };
    if let Some(response) = (state.hook)(&Call { path: &path, attempt }) {
        return response;
    }
    state.content.answer(&path)
}

fn with_headers(status: StatusCode, headers: &[(&str, &str)], body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in headers {
        let name = header::HeaderName::from_bytes(name.as_bytes()).expect("header name");
        response.headers_mut().insert(name, HeaderValue::from_str(value).expect("header value"));
    }
    response
}

fn respond(status: StatusCode, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response {
    with_headers(status, headers, Body::from(body.into()))
}

fn registry_error(status: StatusCode, code: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": "from the test server"}]});
    respond(status, &[("content-type", "application/json")], to_bytes(&body))
}

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// What a streamed body does after its first bytes.
enum Tail {
    /// The connection is dropped (after a moment, so the bytes before it are flushed).
    Abort,
    /// Nothing more, ever, with the connection open.
    Stall,
    /// Zeros without end.
    Endless,
}

/// A body streamed without Content-Length unless the caller sets one: `head`, then `tail`.
fn streamed(head: Bytes, tail: Tail) -> Body {
    let head = stream::once(async move { Ok::<Bytes, io::Error>(head) });
    let tail: BoxStream<'static, Result<Bytes, io::Error>> = match tail {
        Tail::Abort => stream::once(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err(io::Error::other("the test server drops the connection"))
        })
        .boxed(),
        Tail::Stall => stream::pending().boxed(),
        Tail::Endless => stream::repeat_with(|| Ok(Bytes::from_static(&ZEROS))).boxed(),
    };
    Body::from_stream(head.chain(tail))
}

// ---------------------------------------------------------------------------
// Running pullprobe.

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    result: Value,
}

/// `pullprobe now -o json <server's image> EXTRA…`: the one result.
async fn probe(server: &FakeRegistry, extra: &[&str]) -> Run {
    probe_image(&server.reference(), extra).await
}

async fn probe_image(image: &str, extra: &[&str]) -> Run {
    let mut args: Vec<String> = vec!["now".into(), "-o".into(), "json".into(), image.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let started = Instant::now();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_pullprobe(&args)
    })
    .await
    .expect("running pullprobe");
    let elapsed = started.elapsed();
    assert!(!stderr.contains("panicked at"), "pullprobe panicked:\n{stderr}");
    assert!(elapsed < HANG_LIMIT, "pullprobe took {elapsed:?}:\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let results = json_results(&stdout);
    assert_eq!(results.len(), 1, "one result expected:\n{stdout}\nstderr:\n{stderr}");
    let result = results[0].clone();
    Run { code, stdout, stderr, elapsed, result }
}

impl Run {
    fn context(&self) -> String {
        format!("exit {}\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr)
    }

    fn error(&self) -> &str {
        self.result.error_message().unwrap_or_default()
    }

    fn retries(&self) -> u64 {
        self.result.u64_field("retries").unwrap_or_else(|| panic!("no retries: {}", self.context()))
    }

    fn layer(&self, index: usize) -> &Value {
        self.result.layers().get(index).unwrap_or_else(|| panic!("no layer {index}: {}", self.context()))
    }

    fn warnings(&self) -> Vec<String> {
        self.result
            .get("warnings")
            .and_then(Value::as_array)
            .map(|w| w.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Failed with exit 1, this reason and phase, and an error naming each of `error_has`.
    fn assert_failed(&self, reason: &str, phase: &str, error_has: &[&str]) {
        assert_eq!(self.code, 1, "{}", self.context());
        assert!(!self.result.is_ok(), "{}", self.context());
        assert_eq!(self.result.reason(), Some(reason), "{}", self.context());
        assert_eq!(self.result.str_field("phase"), Some(phase), "{}", self.context());
        for needle in error_has {
            assert!(self.error().contains(needle), "error should name {needle:?}: {}", self.context());
        }
    }

    fn assert_ok(&self) {
        assert_eq!(self.code, 0, "{}", self.context());
        assert!(self.result.is_ok(), "{}", self.context());
        assert_eq!(self.result.get("reason"), Some(&Value::Null), "{}", self.context());
    }
}

/// A probes.yaml in a temporary directory; keep the directory while it is used.
fn config_file(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new().prefix("pullprobe-bad-input-").tempdir().expect("temp dir");
    let path = dir.path().join("probes.yaml");
    std::fs::write(&path, yaml).expect("writing probes.yaml");
    let path = path.to_str().expect("UTF-8 temp path").to_string();
    (dir, path)
}

fn blob_path(digest: &str) -> String {
    format!("/v2/{REPO}/blobs/{digest}")
}

fn is_manifest(path: &str) -> bool {
    path.starts_with(&format!("/v2/{REPO}/manifests/"))
}

// ---------------------------------------------------------------------------
// 1. Malformed manifest JSON.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_manifest_json_is_manifest_invalid() {
    let image = TestImage::small();
    let body = format!(r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"digest":"#, media_types::OCI_MANIFEST);
    let server = FakeRegistry::start(Content::with_manifest(&image, body, media_types::OCI_MANIFEST), |_| None).await;
    let run = probe(&server, &[]).await;
    run.assert_failed("manifest_invalid", "manifest", &["not valid JSON"]);
    assert_eq!(run.retries(), 0, "{}", run.context());
}

// ---------------------------------------------------------------------------
// 2. Manifests over the size cap.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_declared_over_the_cap_is_too_large() {
    let image = TestImage::small();
    let oversized = Bytes::from(vec![b' '; 5 << 20]);
    let server = FakeRegistry::start(Content::of(&image), move |call| {
        is_manifest(call.path)
            .then(|| respond(StatusCode::OK, &[("content-type", media_types::OCI_MANIFEST)], oversized.clone()))
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("too_large", "manifest", &["Content-Length 5242880", &DEFAULT_MANIFEST_CAP.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_manifest_over_the_cap_is_too_large() {
    let image = TestImage::small();
    let server = FakeRegistry::start(Content::of(&image), |call| {
        is_manifest(call.path).then(|| {
            // 6 MiB, chunked: no Content-Length to refuse it by.
            let chunks = stream::iter((0..96).map(|_| Ok::<Bytes, io::Error>(Bytes::from_static(&ZEROS))));
            with_headers(StatusCode::OK, &[("content-type", media_types::OCI_MANIFEST)], Body::from_stream(chunks))
        })
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("too_large", "manifest", &["over the limit of 4194304"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_manifest_cap_is_applied() {
    let image = TestImage::small();
    let mut manifest = image.manifest();
    manifest["annotations"] = json!({"org.example.padding": "x".repeat(2_000)});
    let server =
        FakeRegistry::start(Content::with_manifest(&image, to_bytes(&manifest), media_types::OCI_MANIFEST), |_| None)
            .await;

    // Under the default cap the same image passes.
    probe(&server, &[]).await.assert_ok();

    let (_dir, config) = config_file("limits:\n  max_manifest_bytes: 1KiB\n");
    let run = probe(&server, &["-c", &config]).await;
    run.assert_failed("too_large", "manifest", &["over the limit of 1024 bytes"]);
}

// ---------------------------------------------------------------------------
// 3. Media types pullprobe cannot verify.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_manifest_media_type_is_unsupported() {
    let image = TestImage::small();
    let mut manifest = image.manifest();
    manifest["mediaType"] = json!("application/vnd.example+json");
    let content = Content::with_manifest(&image, to_bytes(&manifest), "application/vnd.example+json");
    let server = FakeRegistry::start(content, |_| None).await;
    let run = probe(&server, &[]).await;
    run.assert_failed("unsupported_media_type", "manifest", &["application/vnd.example+json"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema1_manifest_is_unsupported() {
    let image = TestImage::small();
    let manifest = json!({
        "schemaVersion": 1,
        "name": REPO,
        "tag": TAG,
        "architecture": "amd64",
        "fsLayers": [{"blobSum": image.layers[0].digest}],
        "history": [{"v1Compatibility": "{}"}],
        "signatures": [],
    });
    let content = Content::with_manifest(&image, to_bytes(&manifest), media_types::DOCKER_SCHEMA1_SIGNED);
    let server = FakeRegistry::start(content, |_| None).await;
    let run = probe(&server, &[]).await;
    run.assert_failed("unsupported_media_type", "manifest", &["schema 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bzip2_layer_is_unsupported_and_named() {
    let image = TestImage::new(&[2_000, 3_000]);
    let mut manifest = image.manifest();
    manifest["layers"][1]["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+bzip2");
    let server =
        FakeRegistry::start(Content::with_manifest(&image, to_bytes(&manifest), media_types::OCI_MANIFEST), |_| None)
            .await;
    let run = probe(&server, &[]).await;
    let layer = &image.layers[1].digest;
    run.assert_failed("unsupported_media_type", "blob", &[&format!("layer 2 {layer}"), "tar+bzip2"]);
    assert_eq!(run.layer(1).reason(), Some("unsupported_media_type"), "{}", run.context());
    assert_eq!(run.layer(0).reason(), None, "the gzip layer is still verified: {}", run.context());
}

// ---------------------------------------------------------------------------
// 4. Error answers that are not registry JSON.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_404_on_the_manifest_is_manifest_unknown() {
    let image = TestImage::small();
    let server = FakeRegistry::start(Content::of(&image), |call| {
        is_manifest(call.path).then(|| {
            respond(
                StatusCode::NOT_FOUND,
                &[("content-type", "text/html")],
                "<html><body><h1>404 Not Found</h1>nginx</body></html>",
            )
        })
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("manifest_unknown", "manifest", &["404"]);
    assert_eq!(run.result.get("registry_error"), Some(&Value::Null), "{}", run.context());
    assert_eq!(run.retries(), 0, "{}", run.context());
}

/// Answers 500 with bytes that are not UTF-8 to the first `failures` manifest requests.
fn garbage_500(failures: usize) -> impl Fn(&Call) -> Option<Response> + Send + Sync + 'static {
    move |call| {
        (is_manifest(call.path) && call.attempt <= failures).then(|| {
            respond(StatusCode::INTERNAL_SERVER_ERROR, &[("content-type", "text/plain")], &[0xff, 0xfe, 0x00, 0xc3][..])
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_500_is_http_status_after_one_retry() {
    let image = TestImage::small();
    let server = FakeRegistry::start(Content::of(&image), garbage_500(usize::MAX)).await;
    let run = probe(&server, &[]).await;
    run.assert_failed("http_status", "manifest", &["500"]);
    assert_eq!(run.result.get("registry_error"), Some(&Value::Null), "{}", run.context());
    assert_eq!(run.retries(), 1, "{}", run.context());
    assert_eq!(server.manifest_requests(), 2, "{:?}", server.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_garbage_500_then_success_passes_with_a_retry() {
    let image = TestImage::small();
    let server = FakeRegistry::start(Content::of(&image), garbage_500(1)).await;
    let run = probe(&server, &[]).await;
    run.assert_ok();
    assert_eq!(run.retries(), 1, "{}", run.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_502_twice_is_http_status_after_one_retry() {
    let image = TestImage::small();
    let layer = image.layers[0].digest.clone();
    let path = blob_path(&layer);
    let server = FakeRegistry::start(Content::of(&image), move |call| {
        (call.path == path)
            .then(|| respond(StatusCode::BAD_GATEWAY, &[("content-type", "text/html")], "<html>502 Bad Gateway</html>"))
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("http_status", "blob", &["502", &format!("layer 1 {layer}")]);
    assert_eq!(run.retries(), 1, "{}", run.context());
    assert_eq!(server.requests_to(&blob_path(&layer)).len(), 2, "{:?}", server.seen());
}

// ---------------------------------------------------------------------------
// 5. Docker-Content-Digest: missing, wrong, malformed.

/// The manifest of `image` with this `Docker-Content-Digest` (none for `None`).
fn manifest_with_header(image: &TestImage, digest_header: Option<String>) -> Hook {
    let body = to_bytes(&image.manifest());
    Box::new(move |call| {
        is_manifest(call.path).then(|| {
            let mut headers = vec![("content-type", media_types::OCI_MANIFEST)];
            if let Some(value) = &digest_header {
                headers.push(("docker-content-digest", value.as_str()));
            }
            respond(StatusCode::OK, &headers, body.clone())
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_docker_content_digest_passes_with_the_computed_digest() {
    let image = TestImage::small();
    let computed = digest_of(&to_bytes(&image.manifest()));
    let server = FakeRegistry::start(Content::of(&image), manifest_with_header(&image, None)).await;
    let run = probe(&server, &[]).await;
    run.assert_ok();
    assert_eq!(run.result.str_field("manifest_digest"), Some(computed.as_str()), "{}", run.context());
    assert!(run.warnings().iter().any(|w| w.contains("Docker-Content-Digest")), "{}", run.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_docker_content_digest_is_a_mismatch() {
    let image = TestImage::small();
    let computed = digest_of(&to_bytes(&image.manifest()));
    let claimed = digest_of(b"some other manifest");
    let server = FakeRegistry::start(Content::of(&image), manifest_with_header(&image, Some(claimed.clone()))).await;
    let run = probe(&server, &[]).await;
    run.assert_failed("manifest_digest_mismatch", "manifest", &[&claimed, &computed]);
    assert_eq!(run.retries(), 0, "integrity failures are not retried: {}", run.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_docker_content_digest_passes_with_a_warning() {
    let image = TestImage::small();
    let computed = digest_of(&to_bytes(&image.manifest()));
    for garbage in ["sha256:not-hex-at-all", "definitely not a digest", "sha512:abcdef"] {
        let server = FakeRegistry::start(Content::of(&image), manifest_with_header(&image, Some(garbage.into()))).await;
        let run = probe(&server, &[]).await;
        run.assert_ok();
        assert_eq!(run.result.str_field("manifest_digest"), Some(computed.as_str()), "{}", run.context());
        assert!(
            run.warnings().iter().any(|w| w.contains("Docker-Content-Digest")),
            "{garbage:?} should be warned about: {}",
            run.context()
        );
    }
}

// ---------------------------------------------------------------------------
// 6. Blob bodies longer than their descriptor.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_longer_than_its_descriptor_is_a_size_mismatch() {
    let image = TestImage::small();
    let layer = image.layers[0].digest.clone();
    let mut long = image.layers[0].blob.to_vec();
    long.extend_from_slice(&[0u8; 1000]);
    let long = Bytes::from(long);
    let path = blob_path(&layer);
    let server = FakeRegistry::start(Content::of(&image), move |call| {
        (call.path == path).then(|| respond(StatusCode::OK, &[], long.clone()))
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("blob_size_mismatch", "blob", &[&format!("layer 1 {layer}")]);
    assert_eq!(run.layer(0).reason(), Some("blob_size_mismatch"), "{}", run.context());
    assert_eq!(run.retries(), 0, "{}", run.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_blob_stops_one_byte_past_the_descriptor() {
    let image = TestImage::small();
    let layer = image.layers[0].digest.clone();
    let size = image.layer_size(0) as u64;
    let blob = image.layers[0].blob.clone();
    let path = blob_path(&layer);
    let server = FakeRegistry::start(Content::of(&image), move |call| {
        (call.path == path).then(|| with_headers(StatusCode::OK, &[], streamed(blob.clone(), Tail::Endless)))
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("blob_size_mismatch", "blob", &[&format!("layer 1 {layer}")]);
    assert_eq!(run.layer(0).u64_field("bytes"), Some(size + 1), "{}", run.context());
    assert!(run.elapsed < Duration::from_secs(10), "an endless body must end the read at once: {:?}", run.elapsed);
}

// ---------------------------------------------------------------------------
// 7. Blob bodies cut short.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_cut_short_by_a_closed_connection_is_truncated() {
    let image = TestImage::new(&[2_000, 200_000]);
    let layer = image.layers[1].digest.clone();
    let size = image.layer_size(1);
    let half = image.layers[1].blob.slice(..size / 2);
    let path = blob_path(&layer);
    let server = FakeRegistry::start(Content::of(&image), move |call| {
        (call.path == path).then(|| {
            let length = size.to_string();
            with_headers(StatusCode::OK, &[("content-length", &length)], streamed(half.clone(), Tail::Abort))
        })
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("blob_truncated", "blob", &[&format!("layer 2 {layer}")]);
    assert_eq!(run.layer(1).reason(), Some("blob_truncated"), "{}", run.context());
    assert_eq!(run.layer(0).reason(), None, "{}", run.context());
    assert_eq!(run.layer(1).u64_field("bytes"), Some(size as u64 / 2), "{}", run.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_with_a_content_length_and_no_bytes_is_truncated() {
    let image = TestImage::small();
    let layer = image.layers[0].digest.clone();
    let size = image.layer_size(0);
    let path = blob_path(&layer);
    let server = FakeRegistry::start(Content::of(&image), move |call| {
        (call.path == path).then(|| {
            let length = size.to_string();
            with_headers(StatusCode::OK, &[("content-length", &length)], streamed(Bytes::new(), Tail::Abort))
        })
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("blob_truncated", "blob", &[&format!("layer 1 {layer}"), &format!("0 of {size}")]);
    assert_eq!(run.layer(0).u64_field("bytes"), Some(0), "{}", run.context());
}

// ---------------------------------------------------------------------------
// 8. A stalled body and the probe timeout.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_blob_times_out_in_the_blob_phase() {
    let timeout = Duration::from_secs(3);
    let image = TestImage::new(&[200_000]);
    let layer = image.layers[0].digest.clone();
    let size = image.layer_size(0);
    let start = image.layers[0].blob.slice(..size / 4);
    let path = blob_path(&layer);
    let server = FakeRegistry::start(Content::of(&image), move |call| {
        (call.path == path).then(|| {
            let length = size.to_string();
            with_headers(StatusCode::OK, &[("content-length", &length)], streamed(start.clone(), Tail::Stall))
        })
    })
    .await;
    let (_dir, config) = config_file("defaults:\n  timeout: 3s\n");
    let run = probe(&server, &["-c", &config]).await;
    run.assert_failed("timeout", "blob", &["blob", "3s", &format!("still reading layer 1 {layer}")]);
    // The layer being read when the deadline passed is in the result, marked `timeout`.
    let layers = run.result.get("layers").and_then(Value::as_array).cloned().unwrap_or_default();
    let stalled = layers.iter().find(|l| l.get("digest").and_then(Value::as_str) == Some(layer.as_str()));
    let stalled = stalled.unwrap_or_else(|| panic!("no entry for the stalled layer: {}", run.context()));
    assert_eq!(stalled.get("reason").and_then(Value::as_str), Some("timeout"), "{}", run.context());
    // The timeout bounds the whole pull: a spent deadline leaves no room for a retry.
    assert_eq!(run.retries(), 0, "{}", run.context());
    let took = run.result.get("duration_seconds").and_then(Value::as_f64).expect("duration_seconds");
    assert!(took < timeout.as_secs_f64() + 2.0, "the pull ran {took}s past its 3s timeout: {}", run.context());
    assert!(run.elapsed < timeout + Duration::from_secs(5), "took {:?}: {}", run.elapsed, run.context());
}

// ---------------------------------------------------------------------------
// 9. Redirects.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirected_to_itself_is_a_redirect_loop() {
    let image = TestImage::small();
    let layer = image.layers[0].digest.clone();
    let path = blob_path(&layer);
    let server = FakeRegistry::start(Content::of(&image), move |call| {
        (call.path == path).then(|| respond(StatusCode::FOUND, &[("location", &path)], ""))
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("redirect_loop", "blob", &[&format!("layer 1 {layer}")]);
    assert_eq!(run.retries(), 0, "{}", run.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirected_too_often_is_a_redirect_loop() {
    let image = TestImage::small();
    let layer = image.layers[0].digest.clone();
    let path = blob_path(&layer);
    // Every hop a new URL: only the redirect limit (5 by default) stops it.
    let server = FakeRegistry::start(Content::of(&image), move |call| {
        (call.path == path || call.path.starts_with("/hop/")).then(|| {
            let next = format!(
                "/hop/{}",
                call.path.strip_prefix("/hop/").and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) + 1
            );
            respond(StatusCode::TEMPORARY_REDIRECT, &[("location", &next)], "")
        })
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("redirect_loop", "blob", &[&format!("layer 1 {layer}")]);
    let hops = server.requests_to("/hop/").len();
    assert!(hops <= 6, "followed {hops} redirects, more than the limit: {:?}", server.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirected_to_another_host_is_followed() {
    let image = TestImage::small();
    let layer = image.layers[0].digest.clone();
    // The object store: another host name for loopback, serving the blob under its own path.
    let store_blob = image.layers[0].blob.clone();
    let store = FakeRegistry::start(Content::of(&image), move |call| {
        call.path.starts_with("/objects/").then(|| respond(StatusCode::OK, &[], store_blob.clone()))
    })
    .await;
    let store_host = format!("localhost:{}", store.port());
    let target = format!("http://{store_host}/objects/{layer}?X-Amz-Signature=secret");
    let path = blob_path(&layer);
    let server = FakeRegistry::start(Content::of(&image), move |call| {
        (call.path == path).then(|| respond(StatusCode::TEMPORARY_REDIRECT, &[("location", &target)], ""))
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_ok();
    assert_eq!(run.layer(0).str_field("served_by"), Some(store_host.as_str()), "{}", run.context());
    let fetched = store.requests_to("/objects/");
    assert_eq!(fetched.len(), 1, "{:?}", store.seen());
    assert_eq!(fetched[0].host, store_host, "Host names the object store");
    assert!(fetched.iter().all(|s| !s.authorization), "no Authorization to another host: {fetched:?}");
}

// ---------------------------------------------------------------------------
// 10. Descriptors no runtime would accept.

/// Serve `image` behind its manifest changed by `edit`, and probe it.
async fn probe_edited_manifest(image: &TestImage, edit: impl FnOnce(&mut Value)) -> Run {
    let mut manifest = image.manifest();
    edit(&mut manifest);
    let server =
        FakeRegistry::start(Content::with_manifest(image, to_bytes(&manifest), media_types::OCI_MANIFEST), |_| None)
            .await;
    probe(&server, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_sizes_are_manifest_invalid() {
    let image = TestImage::new(&[2_000, 3_000]);
    let run = probe_edited_manifest(&image, |m| m["layers"][1]["size"] = json!(-1)).await;
    run.assert_failed("manifest_invalid", "manifest", &["layer 2", "negative size -1"]);
    let run = probe_edited_manifest(&image, |m| m["config"]["size"] = json!(-5)).await;
    run.assert_failed("manifest_invalid", "manifest", &["config", "negative size -5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_beyond_int64_are_manifest_invalid() {
    let image = TestImage::small();
    // OCI descriptor sizes are int64.
    let run = probe_edited_manifest(&image, |m| m["layers"][0]["size"] = json!(u64::MAX)).await;
    run.assert_failed("manifest_invalid", "manifest", &["wrong shape", "18446744073709551615"]);
    let run = probe_edited_manifest(&image, |m| m["layers"][0]["size"] = json!(1e30)).await;
    run.assert_failed("manifest_invalid", "manifest", &["wrong shape", "1e+30"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_layer_sizes_are_too_large_without_overflow() {
    // Each size fits int64, their sum does not fit u64: over max_pull_bytes, not a crash.
    let image = TestImage::new(&[100, 200, 300]);
    let run = probe_edited_manifest(&image, |m| {
        for i in 0..3 {
            m["layers"][i]["size"] = json!(i64::MAX);
        }
    })
    .await;
    run.assert_failed("too_large", "config", &["max_pull_bytes"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_digests_are_manifest_invalid() {
    let image = TestImage::small();
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    let run = probe_edited_manifest(&image, |m| m["layers"][0]["digest"] = json!(sha512)).await;
    run.assert_failed("manifest_invalid", "manifest", &["layer 1", "sha512"]);
    let run = probe_edited_manifest(&image, |m| m["config"]["digest"] = json!(sha512)).await;
    run.assert_failed("manifest_invalid", "manifest", &["config", "sha512"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_ids_count_must_match_the_layers() {
    let image = TestImage::new(&[2_000, 3_000]);
    let first = image.layers[0].diff_id.clone();
    let image = image.with_diff_ids(&[&first]);
    let server = FakeRegistry::serving(&image).await;
    let run = probe(&server, &[]).await;
    run.assert_failed("manifest_invalid", "config", &["2 layers", "1 diff_ids"]);
}

// ---------------------------------------------------------------------------
// 11. Rate limits.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_retry_after_is_waited_for_and_retried() {
    let image = TestImage::small();
    let server = FakeRegistry::start(Content::of(&image), |call| {
        (is_manifest(call.path) && call.attempt == 1).then(|| {
            let mut response = registry_error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS");
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        })
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_ok();
    assert_eq!(run.retries(), 1, "{}", run.context());
    let manifests = server.requests_to(&format!("/v2/{REPO}/manifests/"));
    assert_eq!(manifests.len(), 2, "{:?}", server.seen());
    let waited = manifests[1].at.duration_since(manifests[0].at);
    assert!(waited >= Duration::from_millis(900), "retried after {waited:?}, before Retry-After: 1 had passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_retry_after_is_rate_limited_without_a_retry() {
    let image = TestImage::small();
    let server = FakeRegistry::start(Content::of(&image), |call| {
        is_manifest(call.path).then(|| {
            let mut response = registry_error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS");
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("3600"));
            response
        })
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("rate_limited", "manifest", &["429", "Retry-After 3600"]);
    assert_eq!(run.result.registry_error(), Some("TOOMANYREQUESTS"), "{}", run.context());
    assert_eq!(run.retries(), 0, "{}", run.context());
    assert_eq!(server.manifest_requests(), 1, "{:?}", server.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_retry_after_on_a_blob_is_waited_for_and_retried() {
    let image = TestImage::small();
    let path = blob_path(&image.layers[0].digest);
    let limited = path.clone();
    let server = FakeRegistry::start(Content::of(&image), move |call| {
        (call.path == limited && call.attempt == 1).then(|| {
            let mut response = registry_error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS");
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        })
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_ok();
    assert_eq!(run.retries(), 1, "{}", run.context());
    let fetched = server.requests_to(&path);
    assert_eq!(fetched.len(), 2, "{:?}", server.seen());
    let waited = fetched[1].at.duration_since(fetched[0].at);
    assert!(waited >= Duration::from_millis(900), "retried after {waited:?}, before Retry-After: 1 had passed");
}
