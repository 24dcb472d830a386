//! What the pull engine does with input no real registry sends: malformed and
//! oversized manifests, unknown media types, non-JSON error bodies, wrong or
//! missing digest headers, blobs that are too long, cut short or stalled,
//! redirect loops, impossible descriptors and rate limits.
//!
//! Each test starts a small in-process registry (`common::fake_registry`) on
//! 127.0.0.1:0 that answers `/v2/...` like a registry except where the test says
//! otherwise, runs the real `pullprobe now -o json` against it and asserts the
//! reason, the phase and the error text of the one result.

mod common;

use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use serde_json::{Value, json};

use common::ResultJson;
use common::cli::{Run, config_file, run_now};
use common::fake_registry::{
    Content, FakeRegistry, REPO, Seen, TAG, TestImage, blob_path, digest_of, is_manifest, registry_error, respond,
    respond_body, to_bytes,
};
use pullprobe::media_types;

/// No run here should come near this; passing it means something hung.
const HANG_LIMIT: Duration = Duration::from_secs(30);
const DEFAULT_MANIFEST_CAP: u64 = 4 << 20;

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// What a streamed body does after its first bytes.
#[derive(Clone, Copy)]
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

/// A fake serving `image`, where layer `index` is answered with its whole
/// Content-Length but only its first `sent` bytes, then `tail`.
async fn serve_cut_layer(image: &TestImage, index: usize, sent: usize, tail: Tail) -> FakeRegistry {
    let length = image.layer_size(index).to_string();
    let head = image.layers[index].blob.slice(..sent);
    FakeRegistry::answering_at(image, &blob_path(&image.layers[index].digest), move |_| {
        respond_body(StatusCode::OK, &[("content-length", &length)], streamed(head.clone(), tail))
    })
    .await
}

/// `pullprobe now -o json <server's image> EXTRA…`: a run that ended well within
/// [`HANG_LIMIT`] with exactly one result.
async fn probe(server: &FakeRegistry, extra: &[&str]) -> Run {
    let reference = server.reference();
    let mut args = vec![reference.as_str()];
    args.extend_from_slice(extra);
    let run = run_now(&args, &[]).await;
    run.assert_within(HANG_LIMIT);
    run.result();
    run
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
    let server = FakeRegistry::start(Content::of(&image), move |seen| {
        is_manifest(&seen.path)
            .then(|| respond(StatusCode::OK, &[("content-type", media_types::OCI_MANIFEST)], oversized.clone()))
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("too_large", "manifest", &["Content-Length 5242880", &DEFAULT_MANIFEST_CAP.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_manifest_over_the_cap_is_too_large() {
    let image = TestImage::small();
    let server = FakeRegistry::start(Content::of(&image), |seen| {
        is_manifest(&seen.path).then(|| {
            // 6 MiB, chunked: no Content-Length to refuse it by.
            let chunks = stream::iter((0..96).map(|_| Ok::<Bytes, io::Error>(Bytes::from_static(&ZEROS))));
            respond_body(StatusCode::OK, &[("content-type", media_types::OCI_MANIFEST)], Body::from_stream(chunks))
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
    let server = FakeRegistry::start(Content::of(&image), |seen| {
        is_manifest(&seen.path).then(|| {
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
    assert_eq!(run.result().get("registry_error"), Some(&Value::Null), "{}", run.context());
    assert_eq!(run.retries(), 0, "{}", run.context());
}

/// Answers 500 with bytes that are not UTF-8 to the first `failures` manifest requests.
fn garbage_500(failures: usize) -> impl Fn(&Seen) -> Option<Response> + Send + Sync + 'static {
    move |seen| {
        (is_manifest(&seen.path) && seen.attempt <= failures).then(|| {
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
    assert_eq!(run.result().get("registry_error"), Some(&Value::Null), "{}", run.context());
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
    let server = FakeRegistry::answering_at(&image, &path, move |_| {
        respond(StatusCode::BAD_GATEWAY, &[("content-type", "text/html")], "<html>502 Bad Gateway</html>")
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
fn manifest_with_header(
    image: &TestImage,
    digest_header: Option<String>,
) -> impl Fn(&Seen) -> Option<Response> + Send + Sync + 'static {
    let body = image.manifest_bytes();
    move |seen| {
        is_manifest(&seen.path).then(|| {
            let mut headers = vec![("content-type", media_types::OCI_MANIFEST)];
            if let Some(value) = &digest_header {
                headers.push(("docker-content-digest", value.as_str()));
            }
            respond(StatusCode::OK, &headers, body.clone())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_docker_content_digest_passes_with_the_computed_digest() {
    let image = TestImage::small();
    let computed = digest_of(&image.manifest_bytes());
    let server = FakeRegistry::start(Content::of(&image), manifest_with_header(&image, None)).await;
    let run = probe(&server, &[]).await;
    run.assert_ok();
    assert_eq!(run.result().str_field("manifest_digest"), Some(computed.as_str()), "{}", run.context());
    assert!(run.warnings().iter().any(|w| w.contains("Docker-Content-Digest")), "{}", run.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_docker_content_digest_is_a_mismatch() {
    let image = TestImage::small();
    let computed = digest_of(&image.manifest_bytes());
    let claimed = digest_of(b"some other manifest");
    let server = FakeRegistry::start(Content::of(&image), manifest_with_header(&image, Some(claimed.clone()))).await;
    let run = probe(&server, &[]).await;
    run.assert_failed("manifest_digest_mismatch", "manifest", &[&claimed, &computed]);
    assert_eq!(run.retries(), 0, "integrity failures are not retried: {}", run.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_docker_content_digest_passes_with_a_warning() {
    let image = TestImage::small();
    let computed = digest_of(&image.manifest_bytes());
    for garbage in ["sha256:not-hex-at-all", "definitely not a digest", "sha512:abcdef"] {
        let server = FakeRegistry::start(Content::of(&image), manifest_with_header(&image, Some(garbage.into()))).await;
        let run = probe(&server, &[]).await;
        run.assert_ok();
        assert_eq!(run.result().str_field("manifest_digest"), Some(computed.as_str()), "{}", run.context());
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
    let server = FakeRegistry::answering_at(&image, &path, move |_| respond(StatusCode::OK, &[], long.clone())).await;
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
    let server = FakeRegistry::answering_at(&image, &path, move |_| {
        respond_body(StatusCode::OK, &[], streamed(blob.clone(), Tail::Endless))
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("blob_size_mismatch", "blob", &[&format!("layer 1 {layer}")]);
    assert_eq!(run.layer(0).u64_field("bytes"), Some(size + 1), "{}", run.context());
    run.assert_within(Duration::from_secs(10)); // an endless body must end the read at once
}

// ---------------------------------------------------------------------------
// 7. Blob bodies cut short.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_cut_short_by_a_closed_connection_is_truncated() {
    let image = TestImage::new(&[2_000, 200_000]);
    let layer = image.layers[1].digest.clone();
    let size = image.layer_size(1);
    let server = serve_cut_layer(&image, 1, size / 2, Tail::Abort).await;
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
    let server = serve_cut_layer(&image, 0, 0, Tail::Abort).await;
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
    let server = serve_cut_layer(&image, 0, image.layer_size(0) / 4, Tail::Stall).await;
    let (_dir, config) = config_file("defaults:\n  timeout: 3s\n");
    let run = probe(&server, &["-c", &config]).await;
    run.assert_failed("timeout", "blob", &["blob", "3s", &format!("still reading layer 1 {layer}")]);
    // The layer being read when the deadline passed is in the result, marked `timeout`.
    let layers = run.result().get("layers").and_then(Value::as_array).cloned().unwrap_or_default();
    let stalled = layers.iter().find(|l| l.get("digest").and_then(Value::as_str) == Some(layer.as_str()));
    let stalled = stalled.unwrap_or_else(|| panic!("no entry for the stalled layer: {}", run.context()));
    assert_eq!(stalled.get("reason").and_then(Value::as_str), Some("timeout"), "{}", run.context());
    // The timeout bounds the whole pull: a spent deadline leaves no room for a retry.
    assert_eq!(run.retries(), 0, "{}", run.context());
    let took = run.result().get("duration_seconds").and_then(Value::as_f64).expect("duration_seconds");
    assert!(took < timeout.as_secs_f64() + 2.0, "the pull ran {took}s past its 3s timeout: {}", run.context());
    run.assert_within(timeout + Duration::from_secs(5));
}

// ---------------------------------------------------------------------------
// 9. Redirects.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirected_to_itself_is_a_redirect_loop() {
    let image = TestImage::small();
    let layer = image.layers[0].digest.clone();
    let path = blob_path(&layer);
    let server =
        FakeRegistry::answering_at(&image, &path, |seen| respond(StatusCode::FOUND, &[("location", &seen.path)], ""))
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
    let server = FakeRegistry::start(Content::of(&image), move |seen| {
        (seen.path == path || seen.path.starts_with("/hop/")).then(|| {
            let next = format!(
                "/hop/{}",
                seen.path.strip_prefix("/hop/").and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) + 1
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
    let store = FakeRegistry::start(Content::of(&image), move |seen| {
        seen.path.starts_with("/objects/").then(|| respond(StatusCode::OK, &[], store_blob.clone()))
    })
    .await;
    let store_host = format!("localhost:{}", store.port());
    let target = format!("http://{store_host}/objects/{layer}?X-Amz-Signature=secret");
    let path = blob_path(&layer);
    let server = FakeRegistry::answering_at(&image, &path, move |_| {
        respond(StatusCode::TEMPORARY_REDIRECT, &[("location", &target)], "")
    })
    .await;
    let run = probe(&server, &[]).await;
    run.assert_ok();
    assert_eq!(run.layer(0).str_field("served_by"), Some(store_host.as_str()), "{}", run.context());
    let fetched = store.requests_to("/objects/");
    assert_eq!(fetched.len(), 1, "{:?}", store.seen());
    assert_eq!(fetched[0].host, store_host, "Host names the object store");
    assert!(fetched.iter().all(|s| s.authorization.is_none()), "no Authorization to another host: {fetched:?}");
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

/// 429 with the registry's `TOOMANYREQUESTS` and `Retry-After: seconds`.
fn too_many_requests(retry_after: &'static str) -> Response {
    let mut response = registry_error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS");
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
    response
}

/// A pass after one retry, whose two `requests` are at least the `Retry-After: 1` apart.
fn assert_retried_after_a_second(run: &Run, requests: &[Seen]) {
    run.assert_ok();
    assert_eq!(run.retries(), 1, "{}", run.context());
    assert_eq!(requests.len(), 2, "{requests:?}");
    let waited = requests[1].at.duration_since(requests[0].at);
    assert!(waited >= Duration::from_millis(900), "retried after {waited:?}, before Retry-After: 1 had passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_retry_after_is_waited_for_and_retried() {
    let image = TestImage::small();
    let server = FakeRegistry::start(Content::of(&image), |seen| {
        (is_manifest(&seen.path) && seen.attempt == 1).then(|| too_many_requests("1"))
    })
    .await;
    let run = probe(&server, &[]).await;
    assert_retried_after_a_second(&run, &server.requests_to(&format!("/v2/{REPO}/manifests/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_retry_after_is_rate_limited_without_a_retry() {
    let image = TestImage::small();
    let server =
        FakeRegistry::start(Content::of(&image), |seen| is_manifest(&seen.path).then(|| too_many_requests("3600")))
            .await;
    let run = probe(&server, &[]).await;
    run.assert_failed("rate_limited", "manifest", &["429", "Retry-After 3600"]);
    assert_eq!(run.result().registry_error(), Some("TOOMANYREQUESTS"), "{}", run.context());
    assert_eq!(run.retries(), 0, "{}", run.context());
    assert_eq!(server.manifest_requests(), 1, "{:?}", server.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_retry_after_on_a_blob_is_waited_for_and_retried() {
    let image = TestImage::small();
    let path = blob_path(&image.layers[0].digest);
    let limited = path.clone();
    let server = FakeRegistry::start(Content::of(&image), move |seen| {
        (seen.path == limited && seen.attempt == 1).then(|| too_many_requests("1"))
    })
    .await;
    let run = probe(&server, &[]).await;
    assert_retried_after_a_second(&run, &server.requests_to(&path));
}
