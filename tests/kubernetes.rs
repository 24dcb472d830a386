//! `kubernetes:` discovery against an API server stand-in ([`common::kube`]:
//! HTTPS with a test CA, a bearer token, Pod/Deployment/CronJob lists and
//! Secrets in the real API's JSON shape):
//!
//! - the distinct images of Pods and workload templates across kinds,
//!   namespaces and pages; containers, init and ephemeral containers; Docker's
//!   normalisation; digests kept as pinned;
//! - the label selector passed to every list; `registry:` and `max_images`;
//! - pull secrets read, decoded and matched by registry host, a missing one
//!   reported and never a secret in any output;
//! - refusals: 403 names the RBAC permission, 401 the token file, garbage JSON,
//!   an oversized page, an untrusted certificate, a stalled API server — each a
//!   clear `discovery_failed`, none a panic or a hang;
//! - end to end: `pullprobe now -c probes.yaml -o json` pulls and verifies the
//!   images of the stand-in's Pods from real registries, a private one on a
//!   token-auth registry only with the Pod's pull secret.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use pullprobe::config::KubernetesDiscovery;
use pullprobe::probe::discover::kubernetes::{Workloads, workloads};
use pullprobe::reason::{ProbeError, Reason};
use pullprobe::registry::credentials::Secret;
use serde_json::json;

use common::kube::{self, KubeApi, PodSpec};
use common::pki::TokenSigner;
use common::registry::RegistryAuth;
use common::{Registry, RegistryOptions, ResultJson, json_results, push_small_image, run_pullprobe_with};

const DIGEST: &str = "sha256:4c1e3b5a7d9f2e4c6b8a0d1f3e5c7b9a2d4f6e8c0b1a3d5f7e9c2b4d6f8a0e1c";
const TIMEOUT: Duration = Duration::from_secs(20);
const MAX_BODY: u64 = 4 << 20;

fn rule(api: &KubeApi, namespaces: &[&str]) -> KubernetesDiscovery {
    KubernetesDiscovery {
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        api_server: Some(api.url.parse().expect("stand-in URL")),
        token_file: Some(api.token_file.clone()),
        ca_file: Some(api.ca_file.clone()),
        ..KubernetesDiscovery::default()
    }
}

async fn discover(rule: &KubernetesDiscovery) -> Result<Workloads, ProbeError> {
    workloads(rule, MAX_BODY, TIMEOUT).await
}

fn references(found: &Workloads) -> Vec<String> {
    found.images.iter().map(|w| w.image.to_string()).collect()
}

/// The objects of a small cluster: two namespaces, every kind, some images shared.
fn small_cluster(api: &KubeApi) {
    let web = [("app", "web"), ("team", "shop")];
    api.add(
        "pods",
        [
            kube::pod("prod", "web-7c9f-abcde", &web, &PodSpec::images(&["nginx", "registry.example.org/shop/web:2.1"])),
            kube::pod("prod", "web-7c9f-fghij", &web, &PodSpec::images(&["nginx", "registry.example.org/shop/web:2.1"])),
            kube::pod(
                "prod",
                "worker-0",
                &[("app", "worker")],
                &PodSpec {
                    containers: &["registry.example.org/shop/worker@sha256:4c1e3b5a7d9f2e4c6b8a0d1f3e5c7b9a2d4f6e8c0b1a3d5f7e9c2b4d6f8a0e1c"],
                    init: &["busybox:1.36"],
                    ephemeral: &["docker.io/nicolaka/netshoot:v0.13"],
                    ..PodSpec::default()
                },
            ),
            kube::pod("tools", "toolbox", &[("app", "toolbox")], &PodSpec::images(&["127.0.0.1:5000/tools/box:1"])),
            kube::pod("other", "elsewhere", &[("app", "web")], &PodSpec::images(&["ghcr.io/other/app:9"])),
        ],
    );
    api.add(
        "deployments",
        [kube::deployment("prod", "web", &web, &PodSpec::images(&["registry.example.org/shop/web:2.2-rc1"]))],
    );
    api.add(
        "cronjobs",
        [kube::cronjob(
            "prod",
            "report",
            &[("app", "report")],
            &PodSpec::images(&["registry.example.org/shop/report:2026-11-23"]),
        )],
    );
    api.add("statefulsets", [kube::deployment("tools", "db", &[("app", "db")], &PodSpec::images(&["postgres:17"]))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_images_across_kinds_namespaces_and_pages() {
    let api = KubeApi::start().await;
    small_cluster(&api);
    api.cap_pages(2);
    let found = discover(&rule(&api, &["prod", "tools"])).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        references(&found),
        [
            "127.0.0.1:5000/tools/box:1".to_string(),
            "docker.io/library/busybox:1.36".into(),
            "docker.io/library/nginx:latest".into(),
            "docker.io/library/postgres:17".into(),
            "docker.io/nicolaka/netshoot:v0.13".into(),
            "registry.example.org/shop/report:2026-11-23".into(),
            "registry.example.org/shop/web:2.1".into(),
            "registry.example.org/shop/web:2.2-rc1".into(),
            format!("registry.example.org/shop/worker@{DIGEST}"),
        ],
        "namespace `other` is not listed"
    );
    assert!(found.warnings.is_empty(), "{:?}", found.warnings);
    let worker = found.images.iter().find(|w| w.image.digest.is_some()).expect("the pinned image");
    assert_eq!(
        (worker.image.tag.as_deref(), worker.image.digest.as_ref().map(|d| d.to_string())),
        (None, Some(DIGEST.into()))
    );
    let nginx = found.images.iter().find(|w| w.image.repository == "library/nginx").expect("nginx");
    assert_eq!(nginx.used_by, ["prod/pod/web-7c9f-abcde", "prod/pod/web-7c9f-fghij"]);
    let report = found.images.iter().find(|w| w.image.repository == "shop/report").expect("report");
    assert_eq!(report.used_by, ["prod/cronjob/report"]);
    let web = found.images.iter().find(|w| w.image.tag.as_deref() == Some("2.2-rc1")).expect("template image");
    assert_eq!(web.used_by, ["prod/deployment/web"]);
    assert!(found.images.iter().all(|w| w.credentials.is_none()), "no pull secrets here");

    let requests = api.requests();
    assert!(requests.iter().all(|r| r.authorized), "every request carries the token: {requests:?}");
    for path in [
        "/api/v1/namespaces/prod/pods",
        "/apis/apps/v1/namespaces/prod/deployments",
        "/apis/apps/v1/namespaces/tools/statefulsets",
        "/apis/apps/v1/namespaces/prod/daemonsets",
        "/apis/batch/v1/namespaces/prod/jobs",
        "/apis/batch/v1/namespaces/tools/cronjobs",
    ] {
        assert!(requests.iter().any(|r| r.path == path), "{path} not listed: {requests:?}");
    }
    let pod_pages: Vec<_> = requests.iter().filter(|r| r.path == "/api/v1/namespaces/prod/pods").collect();
    assert_eq!(pod_pages.len(), 2, "3 pods in pages of 2: {pod_pages:?}");
    assert_eq!(pod_pages[0].param("continue"), None);
    assert!(pod_pages[1].param("continue").is_some_and(|c| !c.is_empty()), "{pod_pages:?}");
    assert!(pod_pages.iter().all(|r| r.param("limit") == Some("100")), "{pod_pages:?}");

    // Every namespace: one list per kind at the cluster scope, `other` included.
    let before = api.requests().len();
    let found = discover(&rule(&api, &[])).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(references(&found).contains(&"ghcr.io/other/app:9".to_string()), "{:?}", references(&found));
    assert_eq!(found.images.len(), 10);
    let requests = &api.requests()[before..];
    assert!(
        requests.iter().any(|r| r.path == "/api/v1/pods")
            && requests.iter().any(|r| r.path == "/apis/batch/v1/cronjobs")
    );
    assert!(requests.iter().all(|r| !r.path.contains("/namespaces/")), "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selector_is_passed_to_every_list() {
    let api = KubeApi::start().await;
    small_cluster(&api);
    let mut selected = rule(&api, &["prod", "other"]);
    selected.label_selector = Some("app=web".to_string());
    let found = discover(&selected).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        references(&found),
        [
            "docker.io/library/nginx:latest",
            "ghcr.io/other/app:9",
            "registry.example.org/shop/web:2.1",
            "registry.example.org/shop/web:2.2-rc1",
        ]
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 12, "six kinds in two namespaces: {requests:?}");
    assert!(requests.iter().all(|r| r.param("labelSelector") == Some("app=web")), "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_filter_and_max_images() {
    let api = KubeApi::start().await;
    small_cluster(&api);
    let mut only = rule(&api, &["prod", "tools"]);
    only.registry_host = Some("registry.example.org".to_string());
    let found = discover(&only).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.images.len(), 4, "{:?}", references(&found));
    assert!(found.images.iter().all(|w| w.image.registry == "registry.example.org"));

    let mut capped = rule(&api, &["prod", "tools"]);
    capped.max_images = 3;
    let found = discover(&capped).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        references(&found),
        ["127.0.0.1:5000/tools/box:1", "docker.io/library/busybox:1.36", "docker.io/library/nginx:latest"],
        "the first references in order, whatever order the API lists them in"
    );
    assert!(
        found.warnings.iter().any(|w| w.contains("6 more distinct images are not probed")
            && w.contains("`max_images` (3)")
            && w.contains("docker.io/library/postgres:17")),
        "{:?}",
        found.warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_that_do_not_parse_are_reported_and_the_rest_kept() {
    let api = KubeApi::start().await;
    api.add(
        "pods",
        [kube::pod(
            "prod",
            "odd",
            &[],
            &PodSpec::images(&["Registry.Example.org/Shop/App:1", "registry.example.org/shop/ok:1", "nginx:"]),
        )],
    );
    let found = discover(&rule(&api, &["prod"])).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(references(&found), ["registry.example.org/shop/ok:1"]);
    assert_eq!(found.warnings.len(), 2, "{:?}", found.warnings);
    assert!(
        found.warnings[0].starts_with("prod/pod/odd container \"app-0\": invalid image reference"),
        "{:?}",
        found.warnings
    );
    assert!(found.warnings[0].contains("must be lowercase") && found.warnings[0].contains("not probed"));
    assert!(
        found.warnings[1].contains("\"app-2\"") && found.warnings[1].contains("tag is empty"),
        "{:?}",
        found.warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_are_decoded_and_matched_by_registry_host() {
    let api = KubeApi::start().await;
    api.add(
        "pods",
        [
            kube::pod(
                "prod",
                "private",
                &[],
                &PodSpec::images(&[
                    "private.example.org/team/app:1",
                    "legacy.example.org:5000/old/app:1",
                    "docker.io/library/alpine:3",
                ])
                .with_pull_secrets(&["regcred", "legacy", "gone", "opaque"]),
            ),
            // The same image in another namespace with no secrets: the secret of the pod that has one wins.
            kube::pod("tools", "again", &[], &PodSpec::images(&["private.example.org/team/app:1"])),
        ],
    );
    api.add(
        "deployments",
        [kube::deployment(
            "tools",
            "mirror",
            &[],
            &PodSpec::images(&["private.example.org/mirror/app:2"]).with_pull_secrets(&["tools-cred"]),
        )],
    );
    api.add_secret(kube::pull_secret("prod", "regcred", false, &[("private.example.org", "puller", "hunter2-prod")]));
    api.add_secret(kube::pull_secret(
        "prod",
        "legacy",
        true,
        &[("https://legacy.example.org:5000", "old", "hunter2-old")],
    ));
    api.add_secret(kube::opaque_secret("prod", "opaque"));
    api.add_secret(kube::pull_secret(
        "tools",
        "tools-cred",
        false,
        &[("https://private.example.org/v1/", "mirror", "hunter2-tools")],
    ));
    let found = discover(&rule(&api, &["prod", "tools"])).await.unwrap_or_else(|e| panic!("{e}"));
    let credentials = |reference: &str| {
        let image =
            found.images.iter().find(|w| w.image.to_string() == reference).unwrap_or_else(|| panic!("{reference}"));
        image.credentials.as_ref().map(|c| {
            let Secret::Password(password) = c.secret() else { panic!("a password") };
            (c.username().to_string(), password.clone())
        })
    };
    assert_eq!(credentials("private.example.org/team/app:1"), Some(("puller".into(), "hunter2-prod".into())));
    assert_eq!(credentials("legacy.example.org:5000/old/app:1"), Some(("old".into(), "hunter2-old".into())));
    assert_eq!(credentials("private.example.org/mirror/app:2"), Some(("mirror".into(), "hunter2-tools".into())));
    assert_eq!(credentials("docker.io/library/alpine:3"), None, "no secret has Docker Hub");
    let warnings = found.warnings.join("\n");
    assert!(
        warnings
            .contains("imagePullSecret prod/gone: there is no such Secret; images that need it are pulled anonymously"),
        "{warnings}"
    );
    assert!(warnings.contains("imagePullSecret prod/opaque: of type \"Opaque\""), "{warnings}");
    assert_eq!(found.warnings.len(), 2, "each unusable secret once: {warnings}");
    let secret_reads: Vec<_> = api.requests().into_iter().filter(|r| r.path.contains("/secrets/")).collect();
    assert_eq!(secret_reads.len(), 5, "each secret read once: {secret_reads:?}");
    // No output of discovery shows a password.
    let shown = format!("{found:?}");
    assert!(!shown.contains("hunter2") && !warnings.contains("hunter2"), "{shown}");

    // Without `pull_secrets`, no Secret is read.
    let before = api.requests().len();
    let mut without = rule(&api, &["prod", "tools"]);
    without.pull_secrets = false;
    let found = discover(&without).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(found.images.iter().all(|w| w.credentials.is_none()) && found.warnings.is_empty());
    assert!(api.requests()[before..].iter().all(|r| !r.path.contains("/secrets/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rbac_refuses_is_reported_with_the_permission() {
    let api = KubeApi::start().await;
    api.add(
        "pods",
        [kube::pod("prod", "p", &[], &PodSpec::images(&["private.example.org/a:1"]).with_pull_secrets(&["regcred"]))],
    );
    api.add_secret(kube::pull_secret("prod", "regcred", false, &[("private.example.org", "u", "hunter2")]));
    api.forbid("/api/v1/namespaces/prod/secrets/regcred");
    let found = discover(&rule(&api, &["prod"])).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(found.images[0].credentials.is_none());
    assert_eq!(found.warnings.len(), 1, "{:?}", found.warnings);
    let warning = &found.warnings[0];
    assert!(
        warning.contains("imagePullSecret prod/regcred")
            && warning.contains("HTTP 403")
            && warning.contains("`get` on `secrets`")
            && warning.contains("in namespace prod")
            && warning.contains(kube::SERVICE_ACCOUNT),
        "{warning}"
    );

    // A Secret far larger than any pull secret is not read whole.
    let mut huge = kube::pull_secret("prod", "huge", false, &[("private.example.org", "u", "hunter2")]);
    huge["data"]["padding"] = json!("A".repeat(200 * 1024));
    api.add_secret(huge);
    api.add(
        "pods",
        [kube::pod("prod", "q", &[], &PodSpec::images(&["private.example.org/b:1"]).with_pull_secrets(&["huge"]))],
    );
    let found = discover(&rule(&api, &["prod"])).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(found.images.iter().all(|w| w.credentials.is_none()));
    assert!(
        found.warnings.iter().any(|w| w.contains("imagePullSecret prod/huge") && w.contains("larger than 65536 bytes")),
        "{:?}",
        found.warnings
    );
}

fn assert_discovery_failed(err: &ProbeError, needles: &[&str]) {
    assert_eq!(err.reason, Reason::DiscoveryFailed, "{err}");
    for needle in needles {
        assert!(err.message.contains(needle), "{needle:?} not in: {}", err.message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_lists_name_the_missing_permission() {
    let api = KubeApi::start().await;
    small_cluster(&api);
    api.forbid("/apis/apps/v1/namespaces/prod/deployments");
    let err = discover(&rule(&api, &["prod"])).await.expect_err("403");
    assert_discovery_failed(
        &err,
        &[
            "GET /apis/apps/v1/namespaces/prod/deployments on https://127.0.0.1:",
            "HTTP 403 Forbidden",
            "deployments is forbidden: User \"system:serviceaccount:monitoring:pullprobe\" cannot list resource",
            "the service account lacks the RBAC permission `list` on `deployments` (API group \"apps\") in namespace prod",
        ],
    );
    api.forbid("/api/v1/pods");
    let err = discover(&rule(&api, &[])).await.expect_err("403");
    assert_discovery_failed(
        &err,
        &["GET /api/v1/pods", "`list` on `pods` (the core API group) in every namespace (a ClusterRole)"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_names_the_token_file_and_never_the_token() {
    let api = KubeApi::start().await;
    small_cluster(&api);
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token-hunter2\n").unwrap();
    let mut refused = rule(&api, &["prod"]);
    refused.token_file = Some(wrong.clone());
    let err = discover(&refused).await.expect_err("401");
    assert_discovery_failed(
        &err,
        &["HTTP 401 Unauthorized", "did not accept the token of", &wrong.display().to_string()],
    );
    assert!(!err.message.contains("hunter2"), "{}", err.message);

    refused.token_file = None;
    let err = discover(&refused).await.expect_err("401 without a token");
    assert_discovery_failed(&err, &["HTTP 401", "no token is configured (`token_file:`)"]);

    refused.token_file = Some(dir.path().join("absent"));
    let err = discover(&refused).await.expect_err("no token file");
    assert_discovery_failed(&err, &["token_file", "absent"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_answers_fail_clearly() {
    let api = KubeApi::start().await;
    small_cluster(&api);
    let pods = "/api/v1/namespaces/prod/pods";
    for (body, needle) in [
        ("<html><body>Login</body></html>", "not the JSON object expected"),
        (
            r#"{"kind": "PodList", "items": [{"metadata": {"name": "a"}, "spec": {"containers": "nginx"}}]}"#,
            "not the JSON object expected",
        ),
        (
            r#"{"kind": "PodList", "items": [{"spec": {"containers": [{"image": "nginx"}]"#,
            "not the JSON object expected",
        ),
        (r#"{"kind": "Status", "status": "Success"}"#, "is a \"Status\", not a PodList"),
        (&format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)), "not the JSON object expected"),
    ] {
        api.answer_raw(pods, body);
        let err = discover(&rule(&api, &["prod"])).await.expect_err(body);
        assert_discovery_failed(&err, &[&format!("GET {pods}"), needle]);
    }
    // A list whose items lack every optional field is no error.
    api.answer_raw(
        pods,
        r#"{"kind": "PodList", "metadata": {}, "items": [{}, {"spec": null}, {"spec": {"containers": [{}]}}]}"#,
    );
    let found = discover(&rule(&api, &["prod"])).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.warnings.len(), 1, "an empty image is reported: {:?}", found.warnings);

    // Over the cap the page size halves; one object over the cap is an error that says so.
    let api = KubeApi::start().await;
    let images: Vec<String> = (0..4).map(|i| format!("registry.example.org/big/app-{i}:1")).collect();
    let images: Vec<&str> = images.iter().map(String::as_str).collect();
    api.add("pods", (0..30).map(|i| kube::pod("prod", &format!("pod-{i}"), &[], &PodSpec::images(&images))));
    let one_pod = serde_json::to_vec(&kube::pod("prod", "pod-0", &[], &PodSpec::images(&images))).unwrap().len() as u64;
    let found = workloads(&rule(&api, &["prod"]), one_pod * 5, TIMEOUT).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.images.len(), 4);
    let limits: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/pods"))
        .filter_map(|r| r.param("limit").map(String::from))
        .collect();
    assert!(
        limits.starts_with(&["100".into(), "50".into(), "25".into(), "12".into(), "6".into(), "3".into()]),
        "{limits:?}"
    );
    let err = workloads(&rule(&api, &["prod"]), one_pod / 2, TIMEOUT).await.expect_err("one pod over the cap");
    assert_discovery_failed(&err, &["one pod is larger than the", "limits.max_manifest_bytes"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_and_a_stalled_api_server_fail_in_time() {
    let api = KubeApi::start().await;
    small_cluster(&api);
    let mut untrusted = rule(&api, &["prod"]);
    untrusted.ca_file = None;
    let err = discover(&untrusted).await.expect_err("untrusted CA");
    assert_discovery_failed(&err, &["GET /apis/apps/v1/namespaces/prod/deployments", "TLS", "unknown CA"]);

    let mut missing_ca = rule(&api, &["prod"]);
    missing_ca.ca_file = Some("/nonexistent/ca.crt".into());
    let err = discover(&missing_ca).await.expect_err("missing CA file");
    assert_discovery_failed(&err, &["/nonexistent/ca.crt"]);

    api.stall("/apis/batch/v1/namespaces/prod/cronjobs");
    let started = Instant::now();
    let err = workloads(&rule(&api, &["prod"]), MAX_BODY, Duration::from_secs(2)).await.expect_err("stalled");
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert_discovery_failed(&err, &["/apis/batch/v1/namespaces/prod/cronjobs"]);
}

#[tokio::test]
async fn outside_a_cluster_without_api_server_says_what_to_set() {
    // The test environment is no Pod: the in-cluster variables are absent.
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        panic!("this test needs KUBERNETES_SERVICE_HOST unset (it checks the message outside a cluster)");
    }
    let err = discover(&KubernetesDiscovery::default()).await.expect_err("no cluster");
    assert_discovery_failed(&err, &["not running in a Kubernetes cluster", "set `api_server:`"]);
}

// ---------------------------------------------------------------------------
// End to end: the stand-in's Pods pulled from real registries by `pullprobe now`.

const SERVICE: &str = "pullprobe-kube-test-registry";
const ISSUER: &str = "pullprobe-kube-test-issuer";
const PULLER: &str = "cluster-puller";
const PASSWORD: &str = "pull-secret-password-7f3a";

/// A token server for distribution's `auth: token` that grants what is asked only to
/// `PULLER` with `PASSWORD` (HTTP Basic), and records who asked.
struct TokenServer {
    realm: String,
    signer: Arc<TokenSigner>,
    users: Arc<Mutex<Vec<Option<String>>>>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    async fn start() -> TokenServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let signer = Arc::new(TokenSigner::new(dir.path()));
        let users = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let realm = format!("http://127.0.0.1:{}/token", listener.local_addr().expect("address").port());
        let app = Router::new().fallback(issue_token).with_state((signer.clone(), users.clone()));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenServer { realm, signer, users, _dir: dir }
    }

    fn registry_auth(&self) -> RegistryAuth {
        RegistryAuth::Token {
            realm: self.realm.clone(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            rootcertbundle: self.signer.bundle.clone(),
        }
    }
}

type TokenState = (Arc<TokenSigner>, Arc<Mutex<Vec<Option<String>>>>);

async fn issue_token(State((signer, users)): State<TokenState>, request: Request) -> Response {
    let query = request.uri().query().unwrap_or_default().to_string();
    let scopes: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .collect();
    let basic = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok()?.strip_prefix("Basic ").map(str::to_string))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    users.lock().unwrap().push(basic.as_ref().and_then(|b| b.split_once(':')).map(|(u, _)| u.to_string()));
    if basic.as_deref() != Some(&format!("{PULLER}:{PASSWORD}")) {
        return (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "application/json")], r#"{"details":"no"}"#)
            .into_response();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let claims = json!({"iss": ISSUER, "sub": PULLER, "aud": SERVICE, "exp": now + 600, "nbf": now - 10,
                        "iat": now - 10, "jti": format!("{now}-{}", scopes.len()), "access": access});
    let body = json!({"token": signer.sign(&claims), "expires_in": 600});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn probes_yaml(dir: &Path, api: &KubeApi, pull_secrets: bool) -> std::path::PathBuf {
    let path = dir.join(format!("probes-{pull_secrets}.yaml"));
    let yaml = format!(
        "defaults: {{timeout: 60s}}\nprobes:\n  - name: cluster\n    kubernetes:\n      namespaces: [prod]\n      \
         api_server: {}\n      token_file: {}\n      ca_file: {}\n      pull_secrets: {pull_secrets}\n",
        api.url,
        api.token_file.display(),
        api.ca_file.display()
    );
    std::fs::write(&path, yaml).expect("probes.yaml");
    path
}

async fn pullprobe_now(config: &Path) -> (i32, String, String) {
    let config = config.display().to_string();
    tokio::task::spawn_blocking(move || {
        run_pullprobe_with(&["now", "-c", &config, "-o", "json"], &[], None, Duration::from_secs(180))
    })
    .await
    .expect("pullprobe run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn now_pulls_the_cluster_images_the_private_one_with_its_pull_secret() {
    let public = Registry::start();
    let app = push_small_image(&public, "team/app", "stable").await;
    let tokens = TokenServer::start().await;
    let mut private = Registry::start();
    let secret_app = push_small_image(&private, "private/app", "1").await;
    private.restart_with(RegistryOptions { auth: Some(tokens.registry_auth()), ..RegistryOptions::default() });

    let api = KubeApi::start().await;
    let public_image = public.reference("team/app", "stable");
    let private_image = private.reference("private/app", "1");
    api.add(
        "pods",
        [
            kube::pod("prod", "web-0", &[("app", "web")], &PodSpec::images(&[&public_image])),
            kube::pod("prod", "web-1", &[("app", "web")], &PodSpec::images(&[&public_image])),
            kube::pod("prod", "secret-0", &[], &PodSpec::images(&[&private_image]).with_pull_secrets(&["regcred"])),
        ],
    );
    api.add_secret(kube::pull_secret("prod", "regcred", false, &[(&private.host_port(), PULLER, PASSWORD)]));
    let dir = tempfile::tempdir().unwrap();

    let (code, stdout, stderr) = pullprobe_now(&probes_yaml(dir.path(), &api, true)).await;
    assert_eq!(code, 0, "both images pass:\n{stdout}\n{stderr}");
    let results = json_results(&stdout);
    assert_eq!(results.len(), 2, "one result per distinct image: {stdout}");
    let by_image = |image: &str| {
        results.iter().find(|r| r.str_field("image") == Some(image)).unwrap_or_else(|| panic!("no {image}: {stdout}"))
    };
    for (image, pushed) in [(&public_image, &app), (&private_image, &secret_app)] {
        let result = by_image(image);
        assert!(result.is_ok() && result["probe"] == "cluster", "{result}");
        assert_eq!(result.str_field("manifest_digest"), Some(pushed.digest.to_string().as_str()), "{result}");
        assert_eq!(result.layers().len(), pushed.content.layers.len(), "{result}");
        assert!(result.layers().iter().all(|l| l.is_ok()), "{result}");
    }
    // Who uses each image, for whoever reads the failure.
    assert_eq!(by_image(&public_image)["used_by"], serde_json::json!(["prod/pod/web-0", "prod/pod/web-1"]), "{stdout}");
    assert_eq!(by_image(&private_image)["used_by"], serde_json::json!(["prod/pod/secret-0"]), "{stdout}");
    // Both images are built alike: a layer fully verified in one is digest-checked in the other.
    for layer in by_image(&private_image).layers() {
        let full =
            results.iter().flat_map(|r| r.layers()).any(|l| l["digest"] == layer["digest"] && l["check"] == "full");
        assert!(full, "layer {} was verified in full once: {stdout}", layer["digest"]);
    }
    assert!(tokens.users.lock().unwrap().iter().any(|u| u.as_deref() == Some(PULLER)), "the secret's user asked");
    for output in [&stdout, &stderr] {
        assert!(!output.contains(PASSWORD) && !output.contains(&api.token), "a secret in the output:\n{output}");
    }

    // The same Pods without their pull secret: the private image is refused.
    let (code, stdout, stderr) = pullprobe_now(&probes_yaml(dir.path(), &api, false)).await;
    assert_eq!(code, 1, "the private image fails without the secret:\n{stdout}\n{stderr}");
    let results = json_results(&stdout);
    let by_image = |image: &str| results.iter().find(|r| r.str_field("image") == Some(image)).expect("result");
    assert!(by_image(&public_image).is_ok(), "{stdout}");
    let refused = by_image(&private_image);
    assert_eq!(refused.reason(), Some("auth_failed"), "{refused}");
}
