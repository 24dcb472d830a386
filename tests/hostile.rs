//! Hostile and broken endpoints beyond `bad_input.rs`: what authentication,
//! headers and decompression add. Each test starts small in-process servers on
//! 127.0.0.1:0 (axum, or raw TCP where HTTP itself must be broken), runs the
//! real `pullprobe now -o json`, and asserts the reason, the phase and the
//! error text; the heavy cases also bound the pullprobe process's peak RSS
//! (`/usr/bin/time -v`) and its run time.
//!
//! - a 10 GB zero-filled gzip "bomb" through the real pull path → `too_large`
//!   (absolute and ratio caps), quickly, in flat memory;
//! - slowloris response headers → `timeout` at the first-byte deadline;
//! - a 1 MiB header, and 20 000 headers → `too_large`;
//! - headers that are not UTF-8 (digest, content type, cache status, a challenge);
//! - a blob redirect to another host: `Authorization` stays behind;
//! - 429 with `RateLimit-Remaining`, and the header on a passing pull;
//! - token endpoints that send endless bodies, stall, send garbage, or are
//!   named in a challenge full of quoted commas; a cached token refused later.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use common::ResultJson;
use common::cli::{Run, config_file, run_now, run_now_measured};
use common::fake_registry::{
    Content, FakeRegistry, REPO, Seen, TestImage, TestLayer, blob_path, digest_of, is_manifest, is_v2_repo, respond,
    respond_body,
};
use pullprobe::media_types;

const USER: &str = "alice";
const PASSWORD: &str = "h0stile-Secret-never-printed";
const PASSWORD_ENV: &str = "PULLPROBE_TEST_HOSTILE_PASSWORD";
/// Peak RSS allowed for a pullprobe run against a hostile server.
const RSS_LIMIT_KIB: u64 = 200 * 1024;

// ---------------------------------------------------------------------------
// Running pullprobe.

/// The check only these tests make: memory bounded.
impl Run {
    fn assert_rss_bounded(&self) {
        let peak = self.peak_rss_kib.expect("a measured run");
        eprintln!("pullprobe peak RSS {peak} KiB, {:?}", self.elapsed);
        assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB over {RSS_LIMIT_KIB} KiB: {}", self.context());
    }
}

/// A config probing `fake`'s image as registry `fake` with `registry_extra` (auth…) and `top` (limits…).
fn fake_config(fake: &FakeRegistry, top: &str, registry_extra: &str) -> (tempfile::TempDir, String) {
    config_file(&format!(
        "{top}registries:\n  - name: fake\n    url: {url}\n{registry_extra}\
         probes:\n  - name: hostile\n    registry: fake\n    image: {REPO}:v1\n",
        url = fake.url()
    ))
}

fn basic_auth_yaml() -> String {
    format!("    auth: {{username: {USER}, password_env: {PASSWORD_ENV}}}\n")
}

fn basic_header() -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")))
}

// ---------------------------------------------------------------------------
// 1. A gzip bomb through the real pull path.

/// A gzip stream of `total` zero bytes, made of one deflate chunk (1 MiB of zeros,
/// fully flushed so it stands alone) repeated: (header, chunk, count, trailer).
fn gzip_bomb(total: u64) -> (Bytes, Bytes, u64, Bytes) {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK as usize];
    let mut deflate = flate2::Compress::new(flate2::Compression::best(), false);
    let mut chunk = Vec::with_capacity(16 * 1024);
    deflate.compress_vec(&zeros, &mut chunk, flate2::FlushCompress::Full).expect("deflate");
    assert_eq!(deflate.total_in(), CHUNK, "the chunk holds all its input");
    let count = total / CHUNK;
    let mut one = flate2::Crc::new();
    one.update(&zeros);
    // CRC-32 of `count` chunks, combined without hashing 10 GB.
    let mut crc = flate2::Crc::new();
    for _ in 0..count {
        crc.combine(&one);
    }
    let header = Bytes::from_static(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut trailer = vec![0x03, 0x00]; // a final, empty fixed-Huffman block
    trailer.extend_from_slice(&crc.sum().to_le_bytes());
    trailer.extend_from_slice(&((count * CHUNK) as u32).to_le_bytes());
    (header, Bytes::from(chunk), count, Bytes::from(trailer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_gigabyte_gzip_bomb_is_too_large_quickly_in_flat_memory() {
    let (head, chunk, count, trailer) = gzip_bomb(10 << 30);
    let mut hasher = Sha256::new();
    hasher.update(&head);
    for _ in 0..count {
        hasher.update(&chunk);
    }
    hasher.update(&trailer);
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let size = head.len() as u64 + chunk.len() as u64 * count + trailer.len() as u64;
    assert!(size < 20 << 20, "the bomb is small compressed: {size} bytes");
    let image = TestImage::of_layers(vec![TestLayer::described(size, &digest, &digest_of(b"never reached"))]);
    let fake = FakeRegistry::answering_at(&image, &blob_path(&digest), move |_| {
        let parts = stream::iter([head.clone()])
            .chain(stream::iter(std::iter::repeat_n(chunk.clone(), count as usize)))
            .chain(stream::iter([trailer.clone()]))
            .map(Ok::<Bytes, io::Error>);
        let length = size.to_string();
        respond_body(StatusCode::OK, &[("content-length", &length)], Body::from_stream(parts))
    })
    .await;

    let (_dir, config) = fake_config(&fake, "limits:\n  max_uncompressed_bytes: 256MiB\n", "");
    let run = run_now_measured(&["-c", &config]).await;
    let result = run.assert_failed("too_large", "blob", &["layer 1", "max_uncompressed_bytes"]);
    assert_eq!(result.layers()[0].reason(), Some("too_large"), "{}", run.context());
    assert_eq!(result.u64_field("retries"), Some(0), "{}", run.context());
    run.assert_within(Duration::from_secs(30));
    run.assert_rss_bounded();

    let (_dir, config) = fake_config(&fake, "limits:\n  max_uncompressed_ratio: 10\n", "");
    let run = run_now_measured(&["-c", &config]).await;
    run.assert_failed("too_large", "blob", &["layer 1", "max_uncompressed_ratio 10"]);
    run.assert_within(Duration::from_secs(30));
    run.assert_rss_bounded();
}

// ---------------------------------------------------------------------------
// 2. Slowloris response headers.

/// A raw TCP server that answers every request with a status line and then one header byte every 200 ms.
async fn slowloris_server() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if socket.write_all(b"HTTP/1.1 200 OK\r\nx-slow: ").await.is_err() {
                    return;
                }
                // Bounded: a minute at most, or until the client goes away.
                for _ in 0..300 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if socket.write_all(b"a").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_time_out_at_the_first_byte_deadline() {
    let addr = slowloris_server().await;
    // A 9 s timeout gives each request 3 s for its headers: the first attempt and its retry both end there.
    let (_dir, config) = config_file("defaults:\n  timeout: 9s\n");
    let run = run_now_measured(&["-c", &config, &format!("{addr}/{REPO}:v1")]).await;
    let result = run.assert_failed("timeout", "manifest", &["no response headers within 3s"]);
    assert_eq!(result.u64_field("retries"), Some(1), "a timeout is retried once: {}", run.context());
    run.assert_within(Duration::from_secs(9));
    run.assert_rss_bounded();
}

// ---------------------------------------------------------------------------
// 3. Huge and countless headers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_header_and_twenty_thousand_headers_are_too_large() {
    let huge = "a".repeat(1 << 20);
    let fake = FakeRegistry::start(Content::of(&TestImage::small()), move |seen| {
        is_manifest(&seen.path).then(|| respond(StatusCode::OK, &[("x-huge", &huge)], "{}"))
    })
    .await;
    let run = run_now_measured(&[&fake.reference()]).await;
    run.assert_failed("too_large", "manifest", &["response headers over the size or count limit"]);
    run.assert_within(Duration::from_secs(20));
    run.assert_rss_bounded();

    let fake = FakeRegistry::start(Content::of(&TestImage::small()), |seen| {
        is_manifest(&seen.path).then(|| {
            let mut response = respond(StatusCode::OK, &[], "{}");
            for i in 0..20_000 {
                let name = HeaderName::from_bytes(format!("x-h-{i}").as_bytes()).unwrap();
                response.headers_mut().insert(name, HeaderValue::from_static("v"));
            }
            response
        })
    })
    .await;
    let run = run_now_measured(&[&fake.reference()]).await;
    run.assert_failed("too_large", "manifest", &["response headers over the size or count limit"]);
    run.assert_within(Duration::from_secs(20));
    run.assert_rss_bounded();
}

// ---------------------------------------------------------------------------
// 4. Headers that are not UTF-8.

fn raw_header(response: &mut Response, name: &str, value: &[u8]) {
    response
        .headers_mut()
        .insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_bytes(value).expect("obs-text"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_are_not_utf8_are_survived() {
    let image = TestImage::small();
    let manifest = image.manifest_bytes();
    let layer_path = blob_path(&image.layers[0].digest);
    let layer = image.layers[0].blob.clone();
    let fake = FakeRegistry::start(Content::of(&image), move |seen| {
        if is_manifest(&seen.path) {
            let mut response = respond(StatusCode::OK, &[], manifest.clone());
            raw_header(&mut response, "content-type", b"application/vnd.oci.image.manifest.v1+json\xff");
            raw_header(&mut response, "docker-content-digest", b"sha256:\xfe\xff\xc3\x28");
            return Some(response);
        }
        (seen.path == layer_path).then(|| {
            let mut response = respond(StatusCode::OK, &[], layer.clone());
            raw_header(&mut response, "x-cache-status", b"HIT\xff\xfe");
            raw_header(&mut response, "x-cache", b"\x80\x81");
            response
        })
    })
    .await;
    let run = run_now(&[&fake.reference()], &[]).await;
    let result = run.assert_ok();
    let warnings = result.get("warnings").map(Value::to_string).unwrap_or_default();
    assert!(warnings.contains("Docker-Content-Digest"), "the unreadable digest header is noted: {}", run.context());

    // A challenge that is not UTF-8 cannot be answered: the 401 stands.
    let fake = FakeRegistry::start(Content::of(&TestImage::small()), |seen| {
        is_v2_repo(&seen.path).then(|| {
            let mut response = respond(StatusCode::UNAUTHORIZED, &[], "");
            raw_header(&mut response, "www-authenticate", b"Bearer realm=\"http://127.0.0.1:1/\xff\",service=\"\xfe\"");
            response
        })
    })
    .await;
    let run = run_now(&[&fake.reference()], &[]).await;
    run.assert_failed("auth_failed", "auth", &["HTTP status 401"]);
}

// ---------------------------------------------------------------------------
// 5. A blob redirect to another host, with credentials.

/// A registry demanding HTTP basic auth for `/v2/<repo>/…`.
fn demand_basic(seen: &Seen) -> Option<Response> {
    (is_v2_repo(&seen.path) && seen.authorization.as_deref() != Some(basic_header().as_str()))
        .then(|| respond(StatusCode::UNAUTHORIZED, &[("www-authenticate", "Basic realm=\"fake\"")], ""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_never_follows_a_redirect_to_another_host() {
    let image = TestImage::small();
    let layer = image.layers[0].blob.clone();
    let store = FakeRegistry::start(Content::of(&image), move |seen| {
        seen.path.starts_with("/objects/").then(|| respond(StatusCode::OK, &[], layer.clone()))
    })
    .await;
    // `localhost`: another host name for the same loopback, as an object store would be.
    let target = format!("http://localhost:{}/objects/blob?X-Amz-Signature=sig-secret-value", store.addr.port());
    let layer_path = blob_path(&image.layers[0].digest);
    let fake = FakeRegistry::start(Content::of(&image), move |seen| {
        demand_basic(seen).or_else(|| {
            (seen.path == layer_path).then(|| respond(StatusCode::TEMPORARY_REDIRECT, &[("location", &target)], ""))
        })
    })
    .await;
    let (_dir, config) = fake_config(&fake, "", &basic_auth_yaml());
    let env = [(PASSWORD_ENV, PASSWORD), ("PULLPROBE_LOG", "debug")];
    let run = run_now(&["-c", &config], &env).await;
    let result = run.assert_ok();
    assert_eq!(result.layers()[0].str_field("served_by"), Some(format!("localhost:{}", store.addr.port()).as_str()));
    let blob_requests = fake.requests_to(&format!("/v2/{REPO}/blobs/"));
    assert!(
        blob_requests.iter().any(|s| s.authorization.as_deref() == Some(basic_header().as_str())),
        "the registry got the credentials: {blob_requests:?}"
    );
    let fetched = store.requests_to("/objects/");
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert_eq!(fetched[0].authorization, None, "no Authorization to another host");
    let basic = basic_header();
    run.assert_no_secret(&[PASSWORD, basic.trim_start_matches("Basic "), "sig-secret-value"]);
}

// ---------------------------------------------------------------------------
// 6. Rate limits with RateLimit-Remaining.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_report_ratelimit_remaining() {
    let fake = FakeRegistry::start(Content::of(&TestImage::small()), |seen| {
        is_manifest(&seen.path).then(|| {
            respond(
                StatusCode::TOO_MANY_REQUESTS,
                &[
                    ("retry-after", "3600"),
                    ("ratelimit-limit", "100;w=21600"),
                    ("ratelimit-remaining", "0;w=21600"),
                    ("content-type", "application/json"),
                ],
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit"}]}"#,
            )
        })
    })
    .await;
    let run = run_now(&[&fake.reference()], &[]).await;
    let result = run.assert_failed("rate_limited", "manifest", &["429", "Retry-After 3600"]);
    assert_eq!(result.u64_field("ratelimit_remaining"), Some(0), "{}", run.context());
    assert_eq!(result.u64_field("retries"), Some(0), "Retry-After is past the deadline: {}", run.context());

    let image = TestImage::small();
    let manifest = image.manifest_bytes();
    let fake = FakeRegistry::start(Content::of(&image), move |seen| {
        is_manifest(&seen.path).then(|| {
            respond(
                StatusCode::OK,
                &[("content-type", media_types::OCI_MANIFEST), ("ratelimit-remaining", "76;w=21600")],
                manifest.clone(),
            )
        })
    })
    .await;
    let run = run_now(&[&fake.reference()], &[]).await;
    let result = run.assert_ok();
    assert_eq!(result.u64_field("ratelimit_remaining"), Some(76), "{}", run.context());
}

// ---------------------------------------------------------------------------
// 7. Token endpoints.

/// A registry that sends a Bearer challenge naming its own `/token` (with `challenge_extra`
/// appended), accepts any token the hook for `/token` handed out, and lets `token` answer `/token`.
async fn bearer_fake(
    token: impl Fn(&Seen) -> Option<Response> + Send + Sync + 'static,
    accepts: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> FakeRegistry {
    let port_cell: Arc<Mutex<u16>> = Arc::default();
    let port_for_hook = port_cell.clone();
    let fake = FakeRegistry::start(Content::of(&TestImage::small()), move |seen| {
        if seen.path == "/token" {
            return token(seen);
        }
        if !is_v2_repo(&seen.path) {
            return None;
        }
        let ok = seen.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")).is_some_and(&accepts);
        (!ok).then(|| {
            let port = *port_for_hook.lock().unwrap();
            let challenge = format!(
                "Basic realm=\"fake, with a comma\", Bearer realm=\"http://127.0.0.1:{port}/token?tenant=a,b\",\
                 service=\"fake,svc\",scope=\"repository:{REPO}:pull\""
            );
            respond(StatusCode::UNAUTHORIZED, &[("www-authenticate", &challenge)], "")
        })
    })
    .await;
    *port_cell.lock().unwrap() = fake.addr.port();
    fake
}

fn token_body(token: &str) -> Response {
    respond(
        StatusCode::OK,
        &[("content-type", "application/json")],
        json!({"token": token, "expires_in": 300}).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_with_quoted_commas_and_several_schemes_is_answered() {
    let fake = bearer_fake(|seen| Some(token_body(&format!("tok-{}", seen.attempt))), |t| t == "tok-1").await;
    let run = run_now(&[&fake.reference()], &[]).await;
    run.assert_ok();
    let asked = fake.requests_to("/token");
    assert_eq!(asked.len(), 1, "one token for the whole pull: {asked:?}");
    let query: Vec<(String, String)> = url::form_urlencoded::parse(asked[0].query.as_bytes()).into_owned().collect();
    assert!(query.contains(&("tenant".into(), "a,b".into())), "the realm's own query is kept: {query:?}");
    assert!(query.contains(&("service".into(), "fake,svc".into())), "{query:?}");
    assert!(query.contains(&("scope".into(), format!("repository:{REPO}:pull"))), "{query:?}");
    assert_eq!(asked[0].authorization, None, "anonymous without credentials");
    run.assert_no_secret(&["tok-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_refused_later_is_fetched_anew_once() {
    // tok-1 is good for two requests (it "expires"), tok-2 for the rest of the pull.
    let uses = Arc::new(AtomicUsize::new(0));
    let fake = bearer_fake(
        |seen| Some(token_body(&format!("tok-{}", seen.attempt))),
        move |t| match t {
            "tok-1" => uses.fetch_add(1, Ordering::Relaxed) < 2,
            "tok-2" => true,
            _ => false,
        },
    )
    .await;
    let run = run_now(&[&fake.reference()], &[]).await;
    run.assert_ok();
    assert_eq!(run.result().u64_field("retries"), Some(0), "{}", run.context());
    assert_eq!(fake.requests_to("/token").len(), 2, "{:?}", fake.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_token_endpoints_are_bounded() {
    // An endless token body: capped by limits.max_manifest_bytes.
    let fake = bearer_fake(
        |_| {
            let endless = stream::repeat_with(|| Ok::<Bytes, io::Error>(Bytes::from_static(&[b' '; 8192])));
            Some(respond_body(StatusCode::OK, &[("content-type", "application/json")], Body::from_stream(endless)))
        },
        |_| false,
    )
    .await;
    let (_dir, config) = fake_config(&fake, "limits:\n  max_manifest_bytes: 64KiB\n", "");
    let run = run_now_measured(&["-c", &config]).await;
    run.assert_failed("too_large", "manifest", &["token endpoint", "over the limit of 65536 bytes"]);
    run.assert_within(Duration::from_secs(20));
    run.assert_rss_bounded();

    // A token endpoint that never sends its headers: the first-byte deadline.
    let fake = bearer_fake(
        |_| Some(respond_body(StatusCode::OK, &[], Body::from_stream(stream::pending::<Result<Bytes, io::Error>>()))),
        |_| false,
    )
    .await;
    // Headers do come here (axum sends them before the body): the body stalls instead, until the pull's timeout.
    let (_dir, config) = fake_config(&fake, "defaults:\n  timeout: 6s\n", "");
    let run = run_now(&["-c", &config], &[]).await;
    run.assert_failed("timeout", "manifest", &["6s"]);
    run.assert_within(Duration::from_secs(12));

    // Garbage where the token should be.
    let fake = bearer_fake(|_| Some(respond(StatusCode::OK, &[], "<html>login</html>")), |_| false).await;
    let run = run_now(&[&fake.reference()], &[]).await;
    run.assert_failed("auth_failed", "auth", &["token realm", "service \"fake,svc\"", "not a token"]);

    // A token endpoint that rate-limits.
    let fake =
        bearer_fake(|_| Some(respond(StatusCode::TOO_MANY_REQUESTS, &[("retry-after", "3600")], "")), |_| false).await;
    let run = run_now(&[&fake.reference()], &[]).await;
    run.assert_failed("rate_limited", "manifest", &["token realm", "HTTP status 429", "Retry-After 3600"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_travel_to_a_plain_http_token_endpoint_elsewhere() {
    // The challenge names a non-loopback plain-HTTP realm: credentials stay home (and nothing is sent there).
    let fake = FakeRegistry::start(Content::of(&TestImage::small()), |seen| {
        is_v2_repo(&seen.path).then(|| {
            respond(
                StatusCode::UNAUTHORIZED,
                &[("www-authenticate", "Bearer realm=\"http://auth.pullprobe.invalid/token\",service=\"s\"")],
                "",
            )
        })
    })
    .await;
    let (_dir, config) = fake_config(&fake, "", &basic_auth_yaml());
    let run = run_now(&["-c", &config], &[(PASSWORD_ENV, PASSWORD)]).await;
    run.assert_failed("auth_failed", "auth", &["refusing to send credentials", "plain HTTP"]);
    run.assert_no_secret(&[PASSWORD]);
}
