//! A small in-process registry for behaviour no real registry produces: it
//! serves one in-memory image under `/v2/repo/…` like a registry, and a test's
//! hook answers first — a lie, a stall, a challenge, a redirect, an upload
//! session gone wrong. Every request is recorded, so a test can check what
//! pullprobe asked for and what it sent.
//!
//! The image is built in memory from parts shared with the rest of the harness
//! (the image builder's tar writer and generated content), and described by
//! JSON values a test can edit before serving them.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use image_builder::{Digest, GeneratedContent, LayerBuilder, media_types};
use serde_json::{Value, json};

use super::images::{gzip, tar_bytes};

/// The repository the fake serves its image under.
pub const REPO: &str = "repo";
/// The tag of [`FakeRegistry::reference`].
pub const TAG: &str = "v1";
/// The most of a request body the fake reads (and drops).
const REQUEST_BODY_LIMIT: usize = 16 << 20;

/// `sha256:<hex>` of bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

/// Compact JSON of a value.
pub fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("JSON"))
}

// ---------------------------------------------------------------------------
// The image.

/// One layer: its blob, and what the manifest and the config say about it.
#[derive(Debug, Clone)]
pub struct TestLayer {
    pub blob: Bytes,
    /// The descriptor size (the blob's length unless the layer is only described).
    pub size: u64,
    pub digest: String,
    pub diff_id: String,
}

impl TestLayer {
    /// A gzip layer holding one file.
    pub fn with_file(name: &str, data: &[u8]) -> TestLayer {
        let tar = tar_bytes(&LayerBuilder::new().file(name, data));
        let blob = Bytes::from(gzip(&tar));
        TestLayer { size: blob.len() as u64, digest: digest_of(&blob), diff_id: digest_of(&tar), blob }
    }

    /// A layer described as `size` bytes with `digest` and `diff_id`, with no bytes of
    /// its own: a hook serves whatever the test wants for it.
    pub fn described(size: u64, digest: &str, diff_id: &str) -> TestLayer {
        TestLayer { blob: Bytes::new(), size, digest: digest.to_string(), diff_id: diff_id.to_string() }
    }
}

/// An OCI image of gzip layers, in memory.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub config: Bytes,
    pub config_digest: String,
    pub layers: Vec<TestLayer>,
}

fn config_json(diff_ids: &[&str]) -> Bytes {
    to_bytes(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
}

impl TestImage {
    /// One layer per size, each holding one file of that many incompressible bytes
    /// (so a layer's size is its content's).
    pub fn new(file_sizes: &[usize]) -> TestImage {
        let layers = file_sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let mut data = Vec::with_capacity(size);
                GeneratedContent::random(i as u64 + 1, size as u64).reader().read_to_end(&mut data).expect("content");
                TestLayer::with_file(&format!("file-{i}.bin"), &data)
            })
            .collect();
        TestImage::of_layers(layers)
    }

    /// One layer of one small file.
    pub fn small() -> TestImage {
        TestImage::new(&[2_000])
    }

    /// These layers, under a config listing their diff_ids.
    pub fn of_layers(layers: Vec<TestLayer>) -> TestImage {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let config = config_json(&diff_ids);
        TestImage { config_digest: digest_of(&config), config, layers }
    }

    /// Replace the config's `rootfs.diff_ids`.
    pub fn with_diff_ids(mut self, diff_ids: &[&str]) -> TestImage {
        self.config = config_json(diff_ids);
        self.config_digest = digest_of(&self.config);
        self
    }

    pub fn layer_size(&self, index: usize) -> usize {
        self.layers[index].blob.len()
    }

    /// The manifest, as a value a test can edit.
    pub fn manifest(&self) -> Value {
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
                "size": l.size,
            })).collect::<Vec<_>>(),
        })
    }

    /// The manifest as it is served.
    pub fn manifest_bytes(&self) -> Bytes {
        to_bytes(&self.manifest())
    }
}

/// What the fake answers unless a hook answers first.
pub struct Content {
    manifest: Bytes,
    manifest_type: String,
    blobs: HashMap<String, Bytes>,
}

impl Content {
    /// Nothing: every request is the hook's (an upload endpoint).
    pub fn none() -> Content {
        Content { manifest: Bytes::new(), manifest_type: String::new(), blobs: HashMap::new() }
    }

    pub fn of(image: &TestImage) -> Content {
        Content::with_manifest(image, image.manifest_bytes(), media_types::OCI_MANIFEST)
    }

    /// The image's blobs behind another manifest document.
    pub fn with_manifest(image: &TestImage, manifest: impl Into<Bytes>, manifest_type: &str) -> Content {
        let mut blobs: HashMap<String, Bytes> =
            image.layers.iter().map(|l| (l.digest.clone(), l.blob.clone())).collect();
        blobs.insert(image.config_digest.clone(), image.config.clone());
        Content { manifest: manifest.into(), manifest_type: manifest_type.to_string(), blobs }
    }

    fn answer(&self, path: &str) -> Response {
        if path == "/v2/" {
            return respond(StatusCode::OK, &[("content-type", "application/json")], "{}");
        }
        if is_manifest(path) && !self.manifest_type.is_empty() {
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

// ---------------------------------------------------------------------------
// The server.

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub host: String,
    pub authorization: Option<String>,
    pub at: Instant,
    /// 1 for the first request to this path, 2 for the second, …
    pub attempt: usize,
    /// How many requests, to any path, came before this one.
    pub before: usize,
}

type Hook = Box<dyn Fn(&Seen) -> Option<Response> + Send + Sync>;

struct ServerState {
    content: Content,
    hook: Hook,
    seen: Mutex<Vec<Seen>>,
}

/// A running fake on 127.0.0.1; it stops with the test's runtime.
pub struct FakeRegistry {
    pub addr: SocketAddr,
    state: Arc<ServerState>,
}

impl FakeRegistry {
    /// Serve `content`; `hook` answers first and falls through with `None`.
    pub async fn start(content: Content, hook: impl Fn(&Seen) -> Option<Response> + Send + Sync + 'static) -> Self {
        let state = Arc::new(ServerState { content, hook: Box::new(hook), seen: Mutex::new(Vec::new()) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeRegistry { addr, state }
    }

    /// Serve `image` and nothing else.
    pub async fn serving(image: &TestImage) -> Self {
        FakeRegistry::start(Content::of(image), |_| None).await
    }

    /// Serve `image`, except that requests to `path` are answered by `answer`.
    pub async fn answering_at(
        image: &TestImage,
        path: &str,
        answer: impl Fn(&Seen) -> Response + Send + Sync + 'static,
    ) -> Self {
        let path = path.to_string();
        FakeRegistry::start(Content::of(image), move |seen| (seen.path == path).then(|| answer(seen))).await
    }

    /// `127.0.0.1:PORT/repo:v1`
    pub fn reference(&self) -> String {
        format!("{}/{REPO}:{TAG}", self.addr)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests to paths that start with `prefix`, in order.
    pub fn requests_to(&self, prefix: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path.starts_with(prefix)).collect()
    }

    pub fn manifest_requests(&self) -> usize {
        self.requests_to(&format!("/v2/{REPO}/manifests/")).len()
    }
}

async fn handle(State(state): State<Arc<ServerState>>, request: Request) -> Response {
    let seen = record(&state, &request);
    // Read the body so the client is not cut off mid-send.
    let _ = axum::body::to_bytes(request.into_body(), REQUEST_BODY_LIMIT).await;
    if let Some(response) = (state.hook)(&seen) {
        return response;
    }
    state.content.answer(&seen.path)
}

/// Add `request` to what the fake saw, numbered.
fn record(state: &ServerState, request: &Request) -> Seen {
    let value_of = |name: HeaderName| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut all = state.seen.lock().unwrap_or_else(|p| p.into_inner());
    let path = request.uri().path().to_string();
    let seen = Seen {
        method: request.method().clone(),
        query: request.uri().query().unwrap_or_default().to_string(),
        host: value_of(header::HOST).unwrap_or_default(),
        authorization: value_of(header::AUTHORIZATION),
        at: Instant::now(),
        attempt: all.iter().filter(|s| s.path == path).count() + 1,
        before: all.len(),
        path,
    };
    all.push(seen.clone());
    seen
}

// ---------------------------------------------------------------------------
// Answers.

/// A response with these headers (names and values as given) and body.
pub fn respond_body(status: StatusCode, headers: &[(&str, &str)], body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    response
}

pub fn respond(status: StatusCode, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response {
    respond_body(status, headers, Body::from(body.into()))
}

/// The registry's JSON error body with this code.
pub fn registry_error(status: StatusCode, code: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": "from the test server"}]});
    respond(status, &[("content-type", "application/json")], to_bytes(&body))
}

/// `/v2/repo/blobs/<digest>`
pub fn blob_path(digest: &str) -> String {
    format!("/v2/{REPO}/blobs/{digest}")
}

pub fn is_manifest(path: &str) -> bool {
    path.starts_with(&format!("/v2/{REPO}/manifests/"))
}

/// Anything under `/v2/repo/`.
pub fn is_v2_repo(path: &str) -> bool {
    path.starts_with(&format!("/v2/{REPO}/"))
}
