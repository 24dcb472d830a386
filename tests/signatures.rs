//! Signatures and referrers on every frontend (`signatures:`), against real parts: a
//! distribution 2.8.2 registry (no referrers API: the referrers tag schema and
//! cosign's legacy `.sig` tag) behind real nginx frontends, and an in-test server
//! only for the OCI 1.1 referrers API itself. Keys and signatures are made by an
//! independent signer, openssl (`ecparam -genkey -name prime256v1`, `dgst -sha256
//! -sign`), in cosign's published formats: the simple signing payload with its
//! signature in the layer annotation, and a sigstore bundle v0.3 holding a DSSE
//! envelope over an in-toto statement.
//!
//! Faults are made where they happen: a `.sig` tag gone from one registry's
//! storage, a signature blob corrupted in nginx's cache, a signature copied from
//! another image, a wrong key, a referrer whose subject names another image, and
//! thousands of referrers.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use common::cli::{Run, config_file, run_now};
use common::images::{client, prober_digest, push_small_image, unique_image};
use common::process::require_binary;
use common::{Nginx, Registry, ResultJson, push, result_for};
use image_builder::{Digest, Format, media_types};
use pullprobe::registry::push::{BlobSource, BlobToPush, ManifestToPush, PushableImage, UploadMethod, push_image};
use serde_json::{Value, json};

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const SPDX: &str = "application/spdx+json";

// ---------------------------------------------------------------------------
// The independent signer: openssl.

/// An ECDSA P-256 key pair made by openssl, as cosign's key pair would be.
struct Signer {
    dir: tempfile::TempDir,
}

impl Signer {
    fn new() -> Signer {
        let openssl = require_binary("/usr/bin/openssl", "openssl");
        let dir = tempfile::Builder::new().prefix("pullprobe-signer-").tempdir().expect("temp dir");
        let key = dir.path().join("cosign.key");
        let public = dir.path().join("cosign.pub");
        run(Command::new(&openssl).args(["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out"]).arg(&key));
        run(Command::new(&openssl).args(["ec", "-pubout", "-in"]).arg(&key).arg("-out").arg(&public));
        Signer { dir }
    }

    /// The public key file, as probes.yaml names it.
    fn public_key(&self) -> PathBuf {
        self.dir.path().join("cosign.pub")
    }

    /// base64 of the ASN.1 DER ECDSA signature over `message` (SHA-256), as cosign stores it.
    fn sign(&self, message: &[u8]) -> String {
        let input = self.dir.path().join("message");
        let output = self.dir.path().join("signature");
        std::fs::write(&input, message).expect("writing the message");
        run(Command::new("/usr/bin/openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(self.dir.path().join("cosign.key"))
            .arg("-out")
            .arg(&output)
            .arg(&input));
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&output).expect("reading the signature"))
    }
}

fn run(command: &mut Command) {
    let out = command.output().expect("running openssl");
    assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
}

// ---------------------------------------------------------------------------
// cosign's formats, written here from its published layouts.

/// A manifest and its blobs, pushed through the registry API as they are.
struct Raw {
    media_type: &'static str,
    manifest: Bytes,
    blobs: Vec<Bytes>,
}

impl Raw {
    fn new(media_type: &'static str, manifest: &Value, blobs: Vec<Bytes>) -> Raw {
        Raw { media_type, manifest: Bytes::from(serde_json::to_vec(manifest).expect("JSON")), blobs }
    }

    fn digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }

    fn descriptor(&self, artifact_type: Option<&str>) -> Value {
        let mut d =
            json!({"mediaType": self.media_type, "digest": self.digest().to_string(), "size": self.manifest.len()});
        if let Some(t) = artifact_type {
            d["artifactType"] = json!(t);
        }
        d
    }
}

impl PushableImage for Raw {
    fn blobs(&self) -> Vec<BlobToPush<'_>> {
        self.blobs
            .iter()
            .map(|b| BlobToPush {
                digest: prober_digest(&Digest::of(b)),
                size: b.len() as u64,
                source: BlobSource::Memory(b.clone()),
            })
            .collect()
    }

    fn manifests(&self) -> Vec<ManifestToPush<'_>> {
        vec![ManifestToPush {
            media_type: self.media_type,
            digest: prober_digest(&self.digest()),
            bytes: self.manifest.clone(),
        }]
    }
}

fn blob_descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": Digest::of(blob).to_string(), "size": blob.len()})
}

/// The simple signing payload cosign signs for `digest`.
fn simple_signing(reference: &str, digest: &Digest) -> Bytes {
    Bytes::from(format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    ))
}

/// cosign's legacy signature manifest: one simple signing layer per (payload, signature).
fn cosign_signatures(signed: &[(Bytes, String)]) -> Raw {
    let diff_ids: Vec<String> = signed.iter().map(|(p, _)| Digest::of(p).to_string()).collect();
    let config = Bytes::from(
        serde_json::to_vec(&json!({"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
            "rootfs": {"type": "layers", "diff_ids": diff_ids}}))
        .expect("JSON"),
    );
    let layers: Vec<Value> = signed
        .iter()
        .map(|(payload, signature)| {
            let mut d = blob_descriptor(SIMPLE_SIGNING, payload);
            d["annotations"] = json!({"dev.cosignproject.cosign/signature": signature});
            d
        })
        .collect();
    let manifest = json!({"schemaVersion": 2, "mediaType": media_types::OCI_MANIFEST,
        "config": blob_descriptor(media_types::OCI_CONFIG, &config), "layers": layers});
    let mut blobs = vec![config];
    blobs.extend(signed.iter().map(|(p, _)| p.clone()));
    Raw::new(media_types::OCI_MANIFEST, &manifest, blobs)
}

/// A sigstore bundle v0.3 referrer of `subject`: a DSSE envelope over an in-toto
/// statement naming `statement_about`, signed by `signer`.
fn bundle_referrer(subject: &Digest, subject_size: usize, statement_about: &Digest, signer: &Signer) -> Raw {
    let statement = serde_json::to_vec(&json!({"_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "image", "digest": {"sha256": statement_about.hex()}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1", "predicate": {}}))
    .expect("JSON");
    let mut pae = format!("DSSEv1 {} {IN_TOTO} {} ", IN_TOTO.len(), statement.len()).into_bytes();
    pae.extend_from_slice(&statement);
    let bundle = Bytes::from(
        serde_json::to_vec(&json!({"mediaType": BUNDLE, "verificationMaterial": {"publicKey": {"hint": "openssl"}},
            "dsseEnvelope": {"payload": base64::engine::general_purpose::STANDARD.encode(&statement),
                "payloadType": IN_TOTO, "signatures": [{"sig": signer.sign(&pae)}]}}))
        .expect("JSON"),
    );
    let empty = Bytes::from_static(b"{}");
    let manifest = json!({"schemaVersion": 2, "mediaType": media_types::OCI_MANIFEST, "artifactType": BUNDLE,
        "config": blob_descriptor(media_types::OCI_EMPTY, &empty), "layers": [blob_descriptor(BUNDLE, &bundle)],
        "subject": {"mediaType": media_types::OCI_MANIFEST, "digest": subject.to_string(), "size": subject_size}});
    Raw::new(media_types::OCI_MANIFEST, &manifest, vec![empty, bundle])
}

/// An SBOM referrer of `subject` (artifactType `application/spdx+json`).
fn sbom_referrer(subject: &Digest, subject_size: usize, seed: usize) -> Raw {
    let sbom = Bytes::from(format!(r#"{{"spdxVersion":"SPDX-2.3","name":"sbom {seed}"}}"#));
    let empty = Bytes::from_static(b"{}");
    let manifest = json!({"schemaVersion": 2, "mediaType": media_types::OCI_MANIFEST, "artifactType": SPDX,
        "config": blob_descriptor(media_types::OCI_EMPTY, &empty), "layers": [blob_descriptor(SPDX, &sbom)],
        "subject": {"mediaType": media_types::OCI_MANIFEST, "digest": subject.to_string(), "size": subject_size}});
    Raw::new(media_types::OCI_MANIFEST, &manifest, vec![empty, sbom])
}

/// The referrers tag schema's index: one entry per referrer.
fn referrers_index(entries: &[Value]) -> Raw {
    let index = json!({"schemaVersion": 2, "mediaType": media_types::OCI_INDEX, "manifests": entries});
    Raw::new(media_types::OCI_INDEX, &index, Vec::new())
}

async fn push_raw(registry: &Registry, repo: &str, tag: &str, raw: &Raw) {
    push_image(&client(), &registry.url(), repo, tag, raw, UploadMethod::Monolithic)
        .await
        .unwrap_or_else(|e| panic!("pushing {repo}:{tag}: {e}"));
}

/// `sha256-<hex>.sig`
fn sig_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// `sha256-<hex>`
fn schema_tag(digest: &Digest) -> String {
    format!("sha256-{}", digest.hex())
}

/// Sign `digest` in `repo` on `registry` the legacy way: the `.sig` tag.
async fn push_legacy_signature(registry: &Registry, repo: &str, digest: &Digest, signer: &Signer) -> Raw {
    let payload = simple_signing(&format!("{}/{repo}", registry.host_port()), digest);
    let signature = signer.sign(&payload);
    let raw = cosign_signatures(&[(payload, signature)]);
    push_raw(registry, repo, &sig_tag(digest), &raw).await;
    raw
}

// ---------------------------------------------------------------------------
// Running pullprobe.

/// probes.yaml: one image probe on a registry with these `{name, url}` frontends.
fn probes_yaml(registry: &Registry, frontends: &[(&str, String)], image: &str, signatures: &str) -> String {
    let frontends: Vec<String> =
        frontends.iter().map(|(name, url)| format!("{{name: {name}, url: '{url}'}}")).collect();
    format!(
        "registries:\n  - name: lab\n    url: {}\n    frontends: [{}]\nprobes:\n  - name: app\n    registry: lab\n    image: {image}\n    signatures: {signatures}\n",
        registry.url().as_str().trim_end_matches('/'),
        frontends.join(", ")
    )
}

async fn probe(yaml: &str) -> (Run, Vec<Value>) {
    let (_dir, path) = config_file(yaml);
    let run = run_now(&["-c", &path], &[]).await;
    let results = common::json_results(&run.stdout);
    assert!(!results.is_empty(), "{}", run.context());
    (run, results)
}

fn url(s: impl std::fmt::Display) -> String {
    s.to_string().trim_end_matches('/').to_string()
}

fn referrers(result: &Value) -> &[Value] {
    result
        .get("referrers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("no referrers: {result}"))
}

fn referrer<'a>(result: &'a Value, digest: &Digest) -> &'a Value {
    let wanted = digest.to_string();
    referrers(result)
        .iter()
        .find(|r| r.str_field("digest") == Some(wanted.as_str()))
        .unwrap_or_else(|| panic!("no referrer {wanted}: {result}"))
}

fn keys(signer: &Signer) -> String {
    format!("{{require: [cosign], keys: ['{}']}}", signer.public_key().display())
}

// ---------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread")]
async fn signed_images_pass_on_every_frontend_and_say_where_each_referrer_was_found() {
    let signer = Signer::new();
    let registry = Registry::start();
    let image = push_small_image(&registry, "team/app", "1.0").await;
    let digest = image.digest;
    let size = image.content.manifest.bytes.len();
    let legacy = push_legacy_signature(&registry, "team/app", &digest, &signer).await;
    let bundle = bundle_referrer(&digest, size, &digest, &signer);
    push_raw(&registry, "team/app", &bundle.digest().to_string(), &bundle).await;
    let sbom = sbom_referrer(&digest, size, 1);
    push_raw(&registry, "team/app", &sbom.digest().to_string(), &sbom).await;
    // A fallback index as some tools write it: the bundle's entry without artifactType.
    let index = referrers_index(&[bundle.descriptor(None), sbom.descriptor(Some(SPDX))]);
    push_raw(&registry, "team/app", &schema_tag(&digest), &index).await;

    let proxy = Nginx::start_proxy(&registry.host_port());
    let cache = Nginx::start_cache(&registry.host_port());
    let frontends = [("proxy", url(proxy.url())), ("cache", url(cache.url()))];
    let policy = format!("{{require: [cosign, {SPDX}], keys: ['{}']}}", signer.public_key().display());
    let (run, results) = probe(&probes_yaml(&registry, &frontends, "team/app:1.0", &policy)).await;
    assert_eq!(run.code, 0, "{}", run.context());
    let key_name = signer.public_key().display().to_string();
    for frontend in ["proxy", "cache"] {
        let result = result_for(&results, frontend);
        assert!(result.is_ok(), "{result}");
        let sig = referrer(result, &legacy.digest());
        assert_eq!(sig.str_field("source"), Some("cosign_tag"));
        assert_eq!(sig.str_field("artifact_type"), Some(SIMPLE_SIGNING));
        assert_eq!(sig.str_field("verified_with"), Some(key_name.as_str()), "{sig}");
        let b = referrer(result, &bundle.digest());
        assert_eq!(b.str_field("source"), Some("tag_schema"));
        assert_eq!(b.str_field("artifact_type"), Some(BUNDLE), "the manifest decides, not the index: {b}");
        assert_eq!(b.str_field("verified_with"), Some(key_name.as_str()), "{b}");
        let s = referrer(result, &sbom.digest());
        assert_eq!((s.str_field("source"), s.get("ok")), (Some("tag_schema"), Some(&json!(true))), "{s}");
        assert!(result.get("phases").and_then(|p| p.get("referrers")).is_some(), "{result}");
    }
    // The same image without signatures: signature_missing, saying where it looked.
    let unsigned = push(&registry, "team/other", "1.0", unique_image(&registry.scratch(), 7, Format::Oci)).await;
    let (run, results) = probe(&probes_yaml(&registry, &frontends[..1], "team/other:1.0", &keys(&signer))).await;
    assert_eq!(run.code, 1, "{}", run.context());
    let result = result_for(&results, "proxy");
    assert_eq!(
        (result.reason(), result.str_field("phase")),
        (Some("signature_missing"), Some("referrers")),
        "{result}"
    );
    let error = result.error_message().unwrap_or_default();
    for needle in [
        "no cosign signature".to_string(),
        "the referrers API (404".to_string(),
        format!("tag {} (absent)", schema_tag(&unsigned.digest)),
        format!("tag {} (absent)", sig_tag(&unsigned.digest)),
    ] {
        assert!(error.contains(&needle), "{needle:?} in {error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sig_tag_lost_from_one_sites_storage_fails_that_frontend_only() {
    let signer = Signer::new();
    let site_a = Registry::start();
    let site_b = Registry::start();
    let image = unique_image(&site_a.scratch(), 11, Format::Oci);
    let on_a = push(&site_a, "team/app", "1.0", image.clone()).await;
    let on_b = push(&site_b, "team/app", "1.0", image).await;
    assert_eq!(on_a.digest, on_b.digest);
    let payload = simple_signing("registry.example.org/team/app", &on_a.digest);
    let signature = signer.sign(&payload);
    let sig = cosign_signatures(&[(payload, signature)]);
    push_raw(&site_a, "team/app", &sig_tag(&on_a.digest), &sig).await;
    push_raw(&site_b, "team/app", &sig_tag(&on_a.digest), &sig).await;
    // Replication lost the tag on site B: its link file is gone from the storage.
    let link =
        site_b.root().join("docker/registry/v2/repositories/team/app/_manifests/tags").join(sig_tag(&on_a.digest));
    std::fs::remove_dir_all(&link).unwrap_or_else(|e| panic!("removing {}: {e}", link.display()));

    let a1 = Nginx::start_proxy(&site_a.host_port());
    let a2 = Nginx::start_proxy(&site_a.host_port());
    let b = Nginx::start_proxy(&site_b.host_port());
    let frontends = [("a1", url(a1.url())), ("a2", url(a2.url())), ("b", url(b.url()))];
    let (run, results) = probe(&probes_yaml(&site_a, &frontends, "team/app:1.0", &keys(&signer))).await;
    assert_eq!(run.code, 1, "{}", run.context());
    assert!(result_for(&results, "a1").is_ok() && result_for(&results, "a2").is_ok(), "{}", run.context());
    let lost = result_for(&results, "b");
    assert_eq!((lost.reason(), lost.str_field("phase")), (Some("signature_missing"), Some("referrers")), "{lost}");
    let error = lost.error_message().unwrap_or_default();
    assert!(error.contains(&format!("tag {} (absent)", sig_tag(&on_a.digest))), "{error}");
    assert!(error.contains("frontends disagree on the referrers") && error.contains("b → lacks"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signature_corrupted_in_the_cache_keeps_its_blob_reason_in_phase_referrers() {
    let signer = Signer::new();
    let registry = Registry::start();
    let image = push_small_image(&registry, "team/app", "1.0").await;
    let sig = push_legacy_signature(&registry, "team/app", &image.digest, &signer).await;
    let payload = sig.blobs[1].clone(); // the simple signing layer, after the config
    let proxy = Nginx::start_proxy(&registry.host_port());
    let cache = Nginx::start_cache(&registry.host_port());
    let frontends = [("proxy", url(proxy.url())), ("cache", url(cache.url()))];
    let yaml = probes_yaml(&registry, &frontends, "team/app:1.0", &keys(&signer));
    let (run, _) = probe(&yaml).await;
    assert_eq!(run.code, 0, "warming the cache: {}", run.context());
    cache.corrupt_cached_blob(&Digest::of(&payload), 10);

    let (run, results) = probe(&yaml).await;
    assert_eq!(run.code, 1, "{}", run.context());
    assert!(result_for(&results, "proxy").is_ok(), "{}", run.context());
    let poisoned = result_for(&results, "cache");
    assert_eq!((poisoned.reason(), poisoned.str_field("phase")), (Some("blob_digest_mismatch"), Some("referrers")));
    let entry = referrer(poisoned, &sig.digest());
    assert_eq!(entry.reason(), Some("blob_digest_mismatch"), "{entry}");
    let error = poisoned.error_message().unwrap_or_default();
    assert!(error.contains(&Digest::of(&payload).to_string()[..19]) && error.contains("cache HIT"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signature_replayed_from_another_image_is_invalid() {
    let signer = Signer::new();
    let registry = Registry::start();
    let signed = push(&registry, "team/app", "1.0", unique_image(&registry.scratch(), 21, Format::Oci)).await;
    let target = push(&registry, "team/app", "2.0", unique_image(&registry.scratch(), 22, Format::Oci)).await;
    let sig = push_legacy_signature(&registry, "team/app", &signed.digest, &signer).await;
    // The signature of 1.0, copied under 2.0's signature tag.
    push_raw(&registry, "team/app", &sig_tag(&target.digest), &sig).await;
    let frontends = [("direct", url(registry.url()))];
    let (run, results) = probe(&probes_yaml(&registry, &frontends, "team/app:2.0", &keys(&signer))).await;
    assert_eq!(run.code, 1, "{}", run.context());
    let result = &results[0];
    assert_eq!((result.reason(), result.str_field("phase")), (Some("signature_invalid"), Some("referrers")));
    let error = result.error_message().unwrap_or_default();
    assert!(error.contains(&signed.digest.to_string()) && error.contains("copied from another image"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_is_invalid_and_no_keys_check_the_form_only() {
    let signer = Signer::new();
    let other = Signer::new();
    let registry = Registry::start();
    let image = push_small_image(&registry, "team/app", "1.0").await;
    push_legacy_signature(&registry, "team/app", &image.digest, &signer).await;
    let frontends = [("direct", url(registry.url()))];

    let (run, results) = probe(&probes_yaml(&registry, &frontends, "team/app:1.0", &keys(&other))).await;
    assert_eq!(run.code, 1, "{}", run.context());
    assert_eq!(results[0].reason(), Some("signature_invalid"), "{}", run.context());
    let error = results[0].error_message().unwrap_or_default();
    assert!(error.contains("verifies with none of the configured keys"), "{error}");
    assert!(error.contains(&other.public_key().display().to_string()), "{error}");

    let (run, results) = probe(&probes_yaml(&registry, &frontends, "team/app:1.0", "{require: [cosign]}")).await;
    assert_eq!(run.code, 0, "{}", run.context());
    let entry = &referrers(&results[0])[0];
    assert_eq!((entry.get("ok"), entry.get("verified_with")), (Some(&json!(true)), Some(&Value::Null)), "{entry}");

    // Both keys: the one that verifies is named.
    let both = format!("{{keys: ['{}', '{}']}}", other.public_key().display(), signer.public_key().display());
    let (run, results) = probe(&probes_yaml(&registry, &frontends, "team/app:1.0", &both)).await;
    assert_eq!(run.code, 0, "{}", run.context());
    let entry = &referrers(&results[0])[0];
    assert_eq!(entry.str_field("verified_with"), Some(signer.public_key().display().to_string().as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_referrer_whose_subject_names_another_image_is_invalid() {
    let signer = Signer::new();
    let registry = Registry::start();
    let image = push(&registry, "team/app", "1.0", unique_image(&registry.scratch(), 31, Format::Oci)).await;
    let other = push(&registry, "team/app", "2.0", unique_image(&registry.scratch(), 32, Format::Oci)).await;
    // A bundle about `image`, but whose manifest's subject names `other`, listed for `image`.
    let stray = bundle_referrer(&other.digest, other.content.manifest.bytes.len(), &image.digest, &signer);
    push_raw(&registry, "team/app", &stray.digest().to_string(), &stray).await;
    push_raw(&registry, "team/app", &schema_tag(&image.digest), &referrers_index(&[stray.descriptor(Some(BUNDLE))]))
        .await;
    let frontends = [("direct", url(registry.url()))];
    let (run, results) = probe(&probes_yaml(&registry, &frontends, "team/app:1.0", &keys(&signer))).await;
    assert_eq!(run.code, 1, "{}", run.context());
    assert_eq!(results[0].reason(), Some("signature_invalid"), "{}", run.context());
    let error = results[0].error_message().unwrap_or_default();
    assert!(error.contains(&format!("subject is \"{}\"", other.digest)), "{error}");
}

// ---------------------------------------------------------------------------
// The referrers API: an in-test server answers it, and forwards everything else to
// the real registry.

/// What the in-test referrers API answers.
struct ReferrersApi {
    upstream: String,
    /// The index entries it lists for any digest, whatever the filter asked.
    entries: Vec<Value>,
    /// Say `OCI-Filters-Applied: artifactType` and filter by it.
    filters: bool,
    http: reqwest::Client,
}

async fn referrers_api(state: Arc<ReferrersApi>) -> (String, tokio::task::JoinHandle<()>) {
    async fn handle(State(api): State<Arc<ReferrersApi>>, request: Request) -> Response {
        let path = request.uri().path().to_string();
        if path.contains("/referrers/") {
            let wanted = request.uri().query().and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "artifactType").map(|(_, v)| v.to_string())
            });
            let entries: Vec<&Value> = api
                .entries
                .iter()
                .filter(|e| !api.filters || wanted.as_deref().is_none_or(|w| e["artifactType"] == *w))
                .collect();
            let body = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media_types::OCI_INDEX,
                "manifests": entries}))
            .expect("JSON");
            let mut response = Response::builder().status(200).header("content-type", media_types::OCI_INDEX);
            if api.filters {
                response = response.header("OCI-Filters-Applied", "artifactType");
            }
            return response.body(Body::from(body)).expect("response");
        }
        let target = format!("http://{}{}", api.upstream, request.uri());
        let mut forward = api.http.request(request.method().clone(), &target);
        for (name, value) in request.headers() {
            if name != "host" {
                forward = forward.header(name, value);
            }
        }
        let Ok(answer) = forward.send().await else {
            return Response::builder().status(StatusCode::BAD_GATEWAY).body(Body::empty()).expect("response");
        };
        let mut response = Response::builder().status(answer.status().as_u16());
        for (name, value) in answer.headers() {
            response = response.header(name, value);
        }
        let body = answer.bytes().await.unwrap_or_default();
        response.body(Body::from(body)).expect("response")
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let app = Router::new().fallback(handle).with_state(state);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}"), server)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_referrers_api_is_used_filtered_by_the_registry_or_by_pullprobe() {
    let signer = Signer::new();
    let registry = Registry::start();
    let image = push_small_image(&registry, "team/app", "1.0").await;
    let size = image.content.manifest.bytes.len();
    let bundle = bundle_referrer(&image.digest, size, &image.digest, &signer);
    push_raw(&registry, "team/app", &bundle.digest().to_string(), &bundle).await;
    let sbom = sbom_referrer(&image.digest, size, 2);
    push_raw(&registry, "team/app", &sbom.digest().to_string(), &sbom).await;
    let entries = vec![bundle.descriptor(Some(BUNDLE)), sbom.descriptor(Some(SPDX))];

    for filters in [true, false] {
        let api = Arc::new(ReferrersApi {
            upstream: registry.host_port(),
            entries: entries.clone(),
            filters,
            http: reqwest::Client::new(),
        });
        let (api_url, server) = referrers_api(api).await;
        let frontends = [("api", api_url)];
        let (run, results) = probe(&probes_yaml(&registry, &frontends, "team/app:1.0", &keys(&signer))).await;
        server.abort();
        assert_eq!(run.code, 0, "filters {filters}: {}", run.context());
        let found = referrers(&results[0]);
        assert_eq!(found.len(), 1, "only the bundle is wanted (filters {filters}): {}", run.context());
        assert_eq!(found[0].str_field("source"), Some("referrers_api"));
        assert_eq!(found[0].str_field("digest"), Some(bundle.digest().to_string().as_str()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_referrers_are_examined_within_a_bound() {
    let signer = Signer::new();
    let registry = Registry::start();
    let image = push_small_image(&registry, "team/app", "1.0").await;
    let size = image.content.manifest.bytes.len();
    let bundle = bundle_referrer(&image.digest, size, &image.digest, &signer);
    push_raw(&registry, "team/app", &bundle.digest().to_string(), &bundle).await;
    // 10,000 listed referrers: the bundle, and 9,999 entries without artifactType, each
    // naming a manifest that does not exist: pullprobe cannot tell their kind without
    // fetching them, and must stop.
    let mut entries: Vec<Value> = (0..9_999u32)
        .map(|i| {
            let fake = Digest::of(format!("referrer {i}").as_bytes());
            json!({"mediaType": media_types::OCI_MANIFEST, "digest": fake.to_string(), "size": 500})
        })
        .collect();
    entries.push(bundle.descriptor(Some(BUNDLE)));
    let api = Arc::new(ReferrersApi {
        upstream: registry.host_port(),
        entries,
        filters: false,
        http: reqwest::Client::new(),
    });
    let (api_url, server) = referrers_api(api).await;
    let frontends = [("api", api_url)];
    let (run, results) = probe(&probes_yaml(&registry, &frontends, "team/app:1.0", &keys(&signer))).await;
    server.abort();
    run.assert_within(Duration::from_secs(60));
    let result = &results[0];
    let examined = referrers(result);
    assert!(examined.len() <= 1_000, "at most 1,000 examined, {} were", examined.len());
    // The typed entry is examined first; the rest are listed but absent: manifest_unknown.
    let typed = referrer(result, &bundle.digest());
    assert_eq!(typed.get("ok"), Some(&json!(true)), "{typed}");
    let warnings = result.get("warnings").map(Value::to_string).unwrap_or_default();
    assert!(warnings.contains("the first 1000 were examined"), "{warnings}");
    assert_eq!(result.reason(), Some("manifest_unknown"), "a listed referrer that is not there: {}", run.context());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_platforms_every_platform_manifest_needs_its_own_signature() {
    let signer = Signer::new();
    let registry = Registry::start();
    let index = common::push_multi_arch_index(&registry, "team/multi", "1.0").await;
    let amd64 = index.content.image_for("linux/amd64").expect("an amd64 image").digest();
    push_legacy_signature(&registry, "team/multi", &index.digest, &signer).await;
    push_legacy_signature(&registry, "team/multi", &amd64, &signer).await;
    let yaml = probes_yaml(
        &registry,
        &[("direct", url(registry.url()))],
        "team/multi:1.0",
        &format!("{{keys: ['{}'], platforms: true}}\n    platforms: all", signer.public_key().display()),
    );
    let (run, results) = probe(&yaml).await;
    assert_eq!(run.code, 1, "{}", run.context());
    let by_platform = |p: &str| {
        results
            .iter()
            .find(|r| r.str_field("platform") == Some(p))
            .unwrap_or_else(|| panic!("no {p}: {}", run.context()))
    };
    let signed = by_platform("linux/amd64");
    assert!(signed.is_ok(), "{signed}");
    let subjects: Vec<&str> = referrers(signed).iter().filter_map(|r| r.str_field("subject")).collect();
    assert!(subjects.contains(&index.digest.to_string().as_str()) && subjects.contains(&amd64.to_string().as_str()));
    let unsigned = by_platform("linux/arm64/v8");
    assert_eq!((unsigned.reason(), unsigned.str_field("phase")), (Some("signature_missing"), Some("referrers")));
    let arm64 = index.content.image_for("linux/arm64/v8").expect("an arm64 image").digest();
    assert!(unsigned.error_message().unwrap_or_default().contains(&arm64.to_string()), "{unsigned}");

    // Without `platforms: true`, the index's own signature is enough.
    let yaml = probes_yaml(
        &registry,
        &[("direct", url(registry.url()))],
        "team/multi:1.0",
        &format!("{{keys: ['{}']}}\n    platforms: all", signer.public_key().display()),
    );
    let (run, _) = probe(&yaml).await;
    assert_eq!(run.code, 0, "{}", run.context());
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_names_a_missing_or_foreign_key_file_at_its_position() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // A config whose signature policy names this key file.
    let config_naming = |key: &std::path::Path| {
        let signatures = format!("{{keys: ['{}']}}", key.display());
        config_file(&probes_yaml(&registry, &[("direct", url(registry.url()))], "team/app:1.0", &signatures))
    };
    let missing = dir.path().join("absent.pub");
    let (_config_dir, path) = config_naming(&missing);
    let (code, stdout, stderr) = common::run_pullprobe(&["validate", "-c", &path]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    let line = format!("{path}:9:");
    assert!(stderr.contains(&line) && stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(stderr.contains("no such file"), "{stderr}");
    // `now` refuses the config the same way: pullprobe's own problem, exit 2.
    let (code, _, stderr) = common::run_pullprobe(&["now", "-c", &path]);
    assert_eq!(code, 2, "{stderr}");

    let private = dir.path().join("cosign.key");
    std::fs::write(&private, "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n").expect("key");
    let (_config_dir, path) = config_naming(&private);
    let (code, _, stderr) = common::run_pullprobe(&["validate", "-c", &path]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is a private key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_exports_the_referrers_found_per_frontend_and_promtool_accepts_them() {
    let signer = Signer::new();
    let registry = Registry::start();
    let image = push_small_image(&registry, "team/app", "1.0").await;
    push_legacy_signature(&registry, "team/app", &image.digest, &signer).await;
    let proxy = Nginx::start_proxy(&registry.host_port());
    let frontends = [("proxy", url(proxy.url())), ("direct", url(registry.url()))];
    let yaml = probes_yaml(&registry, &frontends, "team/app:1.0", &keys(&signer));
    let (_dir, path) = config_file(&format!("defaults:\n  interval: 2s\n{yaml}"));
    let serve = common::serve::Serve::start(std::path::Path::new(&path));
    let wanted = |frontend: &str| {
        format!(r#"frontend="{frontend}",platform="linux/amd64",artifact_type="{SIMPLE_SIGNING}"}} 1.0"#)
    };
    let metrics = tokio::task::spawn_blocking(move || {
        let metrics = serve.wait_for(
            "/metrics",
            |body| {
                let referrers: Vec<&str> = body.lines().filter(|l| l.starts_with("pullprobe_referrers{")).collect();
                ["proxy", "direct"].iter().all(|f| referrers.iter().any(|l| l.ends_with(&wanted(f))))
            },
            Duration::from_secs(30),
        );
        drop(serve);
        metrics
    })
    .await
    .expect("serve");
    // The referrers family alone: promtool's lint judges each family on its own.
    let family: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("pullprobe_referrers{")
                || l.ends_with(" pullprobe_referrers gauge")
                || l.starts_with("# HELP pullprobe_referrers ")
        })
        .collect();
    assert_eq!(family.len(), 4, "HELP, TYPE and one sample per frontend: {family:?}");
    let file = tempfile::NamedTempFile::new().expect("metrics file");
    std::fs::write(file.path(), family.join("\n") + "\n").expect("metrics file");
    let promtool = require_binary("/usr/bin/promtool", "prometheus");
    let out = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file.path()).expect("metrics"))
        .output()
        .expect("promtool");
    assert!(out.status.success(), "promtool check metrics:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signature_blob_lost_from_storage_keeps_its_blob_reason_in_phase_referrers() {
    let signer = Signer::new();
    let registry = Registry::start();
    let image = push_small_image(&registry, "team/app", "1.0").await;
    let sig = push_legacy_signature(&registry, "team/app", &image.digest, &signer).await;
    let payload = sig.blobs[1].clone(); // the simple signing layer, after the config
    // The data file goes; distribution still knows the blob's size and answers
    // 200 with its Content-Length and no bytes, as a deleted bucket does.
    let lost = Digest::of(&payload);
    registry.delete_blob(&lost);
    let frontends = [("direct", url(registry.url()))];
    let (run, results) = probe(&probes_yaml(&registry, &frontends, "team/app:1.0", &keys(&signer))).await;
    assert_eq!(run.code, 1, "{}", run.context());
    let result = &results[0];
    assert_eq!((result.reason(), result.str_field("phase")), (Some("blob_truncated"), Some("referrers")), "{result}");
    assert_eq!(referrer(result, &sig.digest()).reason(), Some("blob_truncated"));
    let error = result.error_message().unwrap_or_default();
    assert!(error.contains(&format!("layer 1 {}", &lost.to_string()[..19])), "{error}");
}
