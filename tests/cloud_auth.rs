//! Cloud registries and kubelet credential provider plugins, end to end: each
//! cloud's credential endpoints are stand-ins that check requests as the real
//! service does (tests/common/cloud.rs), and every run ends in a real pull from a
//! real distribution registry in token mode that lets in only what the stand-ins
//! issued — the credentials are proven to work, not just fetched.
//!
//! - ECR: web identity (STS), EKS Pod Identity, environment keys and IMDSv2, each
//!   signing `GetAuthorizationToken` with SigV4, which the stand-in recomputes with
//!   the secret key (and the stand-in's check is itself checked against AWS's
//!   published `get-vanilla` vector); a wrong key or token is `auth_failed` naming
//!   the role or key and the step; the password sent as HTTP Basic to a registry
//!   that takes it directly, as ECR's does.
//! - GCP: the metadata server's token, only with `Metadata-Flavor: Google`.
//! - ACR: Entra workload identity → `/oauth2/exchange` → refresh token, in front of
//!   the registry.
//! - A hundred probes of one registry cause one token fetch (counted at the stand-in);
//!   a token that expires during `serve` is renewed before it is refused; a token the
//!   registry refuses mid-run is renewed once.
//! - Plugins: the request and its answer's auth map and cache; a plugin that hangs is
//!   killed at the timeout; one that prints garbage is `auth_failed` with its stderr, bounded.
//!
//! The JSON, the table, debug logs and `serve`'s metrics and status page are searched
//! for every secret the stand-ins issued.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use common::cli::Run;
use common::cloud::{CloudStandIn, GCP_ACCOUNT, GCP_USER, SigV4Authorization, token_registry, verify_sigv4};
use common::process::http_get;
use common::serve::Serve;
use common::{ResultJson, json_results, run_pullprobe_with};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Every variable a cloud identity is read from: cleared for each run, then set as the test needs.
const CLOUD_VARIABLES: [&str; 22] = [
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_ECR",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "GCE_METADATA_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
];

// ---------------------------------------------------------------------------
// Running pullprobe against the stand-ins.

/// The environment of one run: every cloud variable cleared, then `set`.
fn environment(set: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = CLOUD_VARIABLES.iter().map(|v| (v.to_string(), String::new())).collect();
    for (name, value) in set {
        env.retain(|(n, _)| n != name);
        env.push((name.to_string(), value.clone()));
    }
    env
}

/// The AWS variables that send STS and ECR to the stand-in, in its region, without IMDS.
fn aws_environment(cloud: &CloudStandIn, set: &[(&str, String)]) -> Vec<(String, String)> {
    let mut all = vec![
        ("AWS_REGION", cloud.settings().region),
        ("AWS_ENDPOINT_URL_STS", cloud.url()),
        ("AWS_ENDPOINT_URL_ECR", cloud.url()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    all.extend(set.iter().cloned());
    environment(&all)
}

fn pullprobe(args: &[&str], env: &[(String, String)]) -> Run {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, stdout, stderr) = run_pullprobe_with(args, &pairs, None, RUN_TIMEOUT);
    Run::new(code, stdout, stderr)
}

/// `now -o json`, the table, and JSON with debug logs; none holds a secret the stand-ins
/// issued or expect. Returns the JSON run.
fn run_everywhere(config: &Path, env: &[(String, String)], cloud: &CloudStandIn) -> Run {
    let config = config.to_str().expect("UTF-8 path");
    let json = pullprobe(&["now", "-o", "json", "-c", config], env);
    let table = pullprobe(&["now", "-c", config], env);
    let mut debug_env = env.to_vec();
    debug_env.push(("PULLPROBE_LOG".into(), "debug".into()));
    let debug = pullprobe(&["now", "-o", "json", "-c", config], &debug_env);
    assert!(debug.stderr.contains("DEBUG"), "debug logging is on: {}", debug.context());
    assert_eq!(debug.code, json.code, "debug logging changed the verdict: {}", debug.context());
    let secrets = cloud.secrets();
    for run in [&json, &table, &debug] {
        run.assert_no_secret(&secrets);
    }
    json
}

/// probes.yaml: registry `cloud` at `url` with `auth`, and `probes` probes of `small:latest`.
fn write_config(dir: &Path, url: &str, auth: &str, probes: usize, interval: &str) -> PathBuf {
    let mut yaml = format!(
        "defaults:\n  timeout: 60s\n  concurrency: 16\n  interval: {interval}\n\
         registries:\n  - name: cloud\n    url: {url}\n    auth: {auth}\nprobes:\n"
    );
    for i in 0..probes {
        yaml.push_str(&format!("  - {{name: p{i:03}, registry: cloud, image: small:latest}}\n"));
    }
    let path = dir.join(format!("probes-{probes}.yaml"));
    std::fs::write(&path, yaml).expect("writing probes.yaml");
    path
}

/// A `now` run of `probes` probes: every result passed, with both layers verified.
fn assert_all_ok(run: &Run, probes: usize) {
    let results = json_results(&run.stdout);
    assert_eq!(results.len(), probes, "{}", run.context());
    assert_eq!(run.code, 0, "{}", run.context());
    for result in &results {
        assert!(result.is_ok(), "{result}\n{}", run.context());
        assert_eq!(result.layers().len(), 2, "{result}");
    }
}

/// A hundred probes of the registry in one run: every one passes, and `endpoints` each
/// answered exactly one more request.
fn hundred_probes_fetch_once(
    dir: &Path,
    url: &str,
    auth: &str,
    env: &[(String, String)],
    cloud: &CloudStandIn,
    endpoints: &[&str],
) {
    let before = cloud.counts();
    let config = write_config(dir, url, auth, 100, "5m");
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], env);
    assert_all_ok(&run, 100);
    run.assert_no_secret(&cloud.secrets());
    for endpoint in endpoints {
        let fetched = cloud.count(endpoint) - before.get(endpoint).copied().unwrap_or(0);
        assert_eq!(fetched, 1, "{endpoint}: one fetch for a hundred probes; {:?}", cloud.counts());
    }
    assert_eq!(cloud.count("registry_token_refused"), before.get("registry_token_refused").copied().unwrap_or(0));
}

// ---------------------------------------------------------------------------
// `pullprobe serve`, for runs that span token lifetimes.

/// `serve` with debug logs and `env`.
fn serve(config: &Path, env: &[(String, String)]) -> Serve {
    let mut env = env.to_vec();
    env.push(("PULLPROBE_LOG".into(), "debug".into()));
    Serve::start_with(config, &env)
}

/// `/metrics`, `/` and the debug log hold none of `secrets`; the probe is passing.
fn assert_passing_without_secrets(serve: &Serve, secrets: &[String]) {
    let (status, metrics) = serve.get("/metrics");
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.lines().any(|l| l.starts_with("pullprobe_probe_success{") && l.ends_with(" 1.0")),
        "the probe passes:\n{metrics}"
    );
    assert!(!metrics.contains("reason=\"auth_failed\""), "no auth failure was counted:\n{metrics}");
    let (_, page) = serve.get("/");
    let log = serve.log();
    assert!(log.contains("\"level\":\"DEBUG\""), "debug logging is on");
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(!metrics.contains(secret.as_str()), "secret {secret:?} in /metrics");
        assert!(!page.contains(secret.as_str()), "secret {secret:?} on the status page");
        assert!(!log.contains(secret.as_str()), "secret {secret:?} in the debug log");
    }
}

// ---------------------------------------------------------------------------
// The stand-in's SigV4 check, checked itself.

/// AWS's published SigV4 test suite, `get-vanilla` (as vendored by the aws-sigv4 crate in
/// `aws-signing-test-suite/v4/get-vanilla/`): the stand-in accepts its signature with the
/// example secret and refuses it with any other, so its refusals mean something.
#[test]
fn stand_in_sigv4_check_accepts_the_published_get_vanilla_vector_only() {
    let authorization = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                         SignedHeaders=host;x-amz-date, \
                         Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
    let auth = SigV4Authorization::parse(authorization).expect("a SigV4 Authorization");
    assert_eq!(
        (auth.access_key_id.as_str(), auth.region.as_str(), auth.service.as_str()),
        ("AKIDEXAMPLE", "us-east-1", "service")
    );
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
    headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    assert_eq!(verify_sigv4("GET", "/", "", &headers, b"", secret, &auth), Ok(()));
    assert!(verify_sigv4("GET", "/", "", &headers, b"", "another-secret", &auth).is_err());
    assert!(verify_sigv4("POST", "/", "", &headers, b"", secret, &auth).is_err());
}

// ---------------------------------------------------------------------------
// ECR.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_with_web_identity_pulls_and_a_hundred_probes_fetch_one_token() {
    let cloud = CloudStandIn::start().await;
    let registry = token_registry(&cloud).await;
    let settings = cloud.settings();
    let token_file = cloud.file("web-identity-token", &settings.web_identity_token);
    let env = aws_environment(
        &cloud,
        &[
            ("AWS_ROLE_ARN", settings.role_arn.clone()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.display().to_string()),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let url = registry.url().to_string();
    let config = write_config(dir.path(), &url, "{ecr: {}}", 1, "5m");
    let run = run_everywhere(&config, &env, &cloud);
    let result = run.assert_ok();
    assert_eq!(result.layers().len(), 2, "{}", run.context());
    assert!(result["phases"]["auth"].as_f64().is_some(), "the auth phase is timed: {}", run.context());
    // Three runs (JSON, table, debug): one STS call and one signed ECR call each.
    assert_eq!((cloud.count("sts"), cloud.count("ecr")), (3, 3), "{:?}", cloud.counts());
    assert_eq!(cloud.count("registry_token_refused"), 0, "{:?}", cloud.counts());
    hundred_probes_fetch_once(dir.path(), &url, "{ecr: {}}", &env, &cloud, &["sts", "ecr"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_with_pod_identity_environment_keys_and_instance_profile() {
    let cloud = CloudStandIn::start().await;
    let registry = token_registry(&cloud).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), registry.url().as_str(), "{ecr: {}}", 1, "5m");

    // EKS Pod Identity: the agent's URL and its token file.
    let token_file = cloud.file("pod-identity-token", &cloud.settings().pod_identity_token);
    let env = aws_environment(
        &cloud,
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/v1/credentials", cloud.url())),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file.display().to_string()),
        ],
    );
    run_everywhere(&config, &env, &cloud).assert_ok();
    assert_eq!((cloud.count("pod_identity"), cloud.count("ecr")), (3, 3), "{:?}", cloud.counts());

    // Keys in the environment.
    let (key_id, secret) = cloud.aws_environment_keys();
    let env = aws_environment(&cloud, &[("AWS_ACCESS_KEY_ID", key_id), ("AWS_SECRET_ACCESS_KEY", secret)]);
    run_everywhere(&config, &env, &cloud).assert_ok();
    assert_eq!(cloud.count("ecr"), 6, "{:?}", cloud.counts());

    // The instance profile, through IMDSv2 (session token first).
    let mut env = aws_environment(&cloud, &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", cloud.url())]);
    env.retain(|(k, _)| k != "AWS_EC2_METADATA_DISABLED");
    run_everywhere(&config, &env, &cloud).assert_ok();
    let counts = cloud.counts();
    assert_eq!(
        (counts.get("imds_session"), counts.get("imds_keys"), counts.get("ecr")),
        (Some(&3), Some(&3), Some(&9)),
        "{counts:?}"
    );
    assert_eq!(cloud.count("registry_token_refused"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_refusals_name_the_identity_and_the_step_never_a_secret() {
    let cloud = CloudStandIn::start().await;
    let registry = token_registry(&cloud).await;
    let settings = cloud.settings();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), registry.url().as_str(), "{ecr: {}}", 1, "5m");
    let config_arg = config.to_str().unwrap();

    // STS refuses a web identity token it cannot verify.
    let wrong_token = format!("eyJnot-the-token.{}", common::cloud::random_hex());
    let token_file = cloud.file("wrong-web-identity-token", &wrong_token);
    let env = aws_environment(
        &cloud,
        &[
            ("AWS_ROLE_ARN", settings.role_arn.clone()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.display().to_string()),
        ],
    );
    let run = pullprobe(&["now", "-o", "json", "-c", config_arg], &env);
    run.assert_failed(
        "auth_failed",
        "auth",
        &["STS AssumeRoleWithWebIdentity", &settings.role_arn, "HTTP status 400", "InvalidIdentityToken"],
    );
    assert_eq!(run.result().u64_field("retries"), Some(0), "auth failures are not retried: {}", run.context());
    run.assert_no_secret(&[wrong_token]);

    // A role the token may not assume.
    let token_file = cloud.file("web-identity-token", &settings.web_identity_token);
    let other_role = "arn:aws:iam::123456789012:role/not-for-this-pod";
    let env = aws_environment(
        &cloud,
        &[("AWS_ROLE_ARN", other_role.to_string()), ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.display().to_string())],
    );
    let run = pullprobe(&["now", "-o", "json", "-c", config_arg], &env);
    run.assert_failed("auth_failed", "auth", &[other_role, "HTTP status 403", "AccessDenied"]);
    run.assert_no_secret(&cloud.secrets());

    // A wrong secret key: the ECR stand-in recomputes the signature and refuses it.
    let (key_id, _) = cloud.aws_environment_keys();
    let wrong_secret = common::cloud::random_hex();
    let env = aws_environment(
        &cloud,
        &[("AWS_ACCESS_KEY_ID", key_id.clone()), ("AWS_SECRET_ACCESS_KEY", wrong_secret.clone())],
    );
    let ecr_calls = cloud.count("ecr");
    let run = pullprobe(&["now", "-o", "json", "-c", config_arg], &env);
    run.assert_failed(
        "auth_failed",
        "auth",
        &["ECR GetAuthorizationToken", &key_id, "HTTP status 403", "InvalidSignatureException", "signature"],
    );
    assert_eq!(cloud.count("ecr"), ecr_calls + 1, "the signed request reached ECR: {:?}", cloud.counts());
    let mut secrets = cloud.secrets();
    secrets.push(wrong_secret);
    run.assert_no_secret(&secrets);
    assert_eq!(cloud.count("registry_token"), 0, "no credentials reached the registry: {:?}", cloud.counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_token_that_expires_during_serve_is_renewed_before_the_registry_refuses_it() {
    let cloud = CloudStandIn::start().await;
    let registry = token_registry(&cloud).await;
    // ECR passwords that live 4 s, checked by the registry's token service; a round every second.
    cloud.update(|s| s.ecr_lifetime = Duration::from_secs(4));
    let (key_id, secret) = cloud.aws_environment_keys();
    let env = aws_environment(&cloud, &[("AWS_ACCESS_KEY_ID", key_id), ("AWS_SECRET_ACCESS_KEY", secret)]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), registry.url().as_str(), "{ecr: {}}", 1, "1s");
    let serve = serve(&config, &env);
    serve.wait_until("eight rounds have pulled", Duration::from_secs(60), || cloud.count("registry_token") >= 8);
    let (ecr, rounds) = (cloud.count("ecr"), cloud.count("registry_token"));
    assert!(ecr >= 2 && ecr < rounds, "renewed as each password neared its end, not per round: {:?}", cloud.counts());
    assert_eq!(cloud.count("registry_token_refused"), 0, "no expired password was sent: {:?}", cloud.counts());
    assert_passing_without_secrets(&serve, &cloud.secrets());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_password_refused_by_a_basic_auth_registry_during_serve_is_renewed_once() {
    let cloud = CloudStandIn::start().await;
    // As ECR itself: HTTP Basic with the password GetAuthorizationToken issued, no token service.
    let registry = common::Registry::start();
    common::push_small_image(&registry, "small", "latest").await;
    cloud.front_with_basic_auth(&registry);
    let (key_id, secret) = cloud.aws_environment_keys();
    let env = aws_environment(&cloud, &[("AWS_ACCESS_KEY_ID", key_id), ("AWS_SECRET_ACCESS_KEY", secret)]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &cloud.url(), "{ecr: {}}", 1, "1s");
    let serve = serve(&config, &env);
    let cloud = &cloud;
    let served = |requests: usize| move || cloud.count("proxy") >= requests;
    // A round is a challenge, then the manifest, the config and two layers.
    serve.wait_until("two rounds have pulled", Duration::from_secs(30), served(10));
    assert_eq!(cloud.count("ecr"), 1, "one password serves every round while it is valid: {:?}", cloud.counts());
    // ECR stops taking the password (it was rotated, or expired early): one refusal, one renewal.
    cloud.revoke("AWS");
    let requests = cloud.count("proxy");
    serve.wait_until("three more rounds have pulled", Duration::from_secs(30), served(requests + 16));
    assert_eq!(cloud.count("front_refused"), 1, "one refusal: {:?}", cloud.counts());
    assert_eq!(cloud.count("ecr"), 2, "one renewal for the refusal: {:?}", cloud.counts());
    assert_passing_without_secrets(&serve, &cloud.secrets());
}

// ---------------------------------------------------------------------------
// GCP.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_metadata_token_pulls_and_a_hundred_probes_fetch_one_token() {
    let cloud = CloudStandIn::start().await;
    let registry = token_registry(&cloud).await;
    // The stand-in refuses what the real metadata server refuses.
    let path = "/computeMetadata/v1/instance/service-accounts/default/token";
    let refused = http_get(&cloud.host_port(), path).expect("metadata stand-in");
    assert_eq!(refused.status, 403, "a request without Metadata-Flavor: Google is refused");
    assert_eq!(cloud.count("gcp_refused"), 1);

    let env = environment(&[("GCE_METADATA_HOST", cloud.host_port())]);
    let dir = tempfile::tempdir().unwrap();
    let url = registry.url().to_string();
    let config = write_config(dir.path(), &url, "{gcp: {}}", 1, "5m");
    run_everywhere(&config, &env, &cloud).assert_ok();
    assert_eq!((cloud.count("gcp_token"), cloud.count("gcp_refused")), (3, 1), "{:?}", cloud.counts());
    hundred_probes_fetch_once(dir.path(), &url, "{gcp: {}}", &env, &cloud, &["gcp_token"]);

    // Tokens the registry refuses (they expire as they are issued): fetched anew once,
    // then the refusal names the service account and the metadata server.
    cloud.update(|s| s.gcp_lifetime = Duration::ZERO);
    let tokens = cloud.count("gcp_token");
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &env);
    run.assert_failed("auth_failed", "auth", &["HTTP status 401", GCP_ACCOUNT, &cloud.host_port(), GCP_USER]);
    assert_eq!(cloud.count("gcp_token") - tokens, 2, "the refused token, then one renewal: {:?}", cloud.counts());
    run.assert_no_secret(&cloud.secrets());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_token_refused_during_serve_is_renewed_once() {
    let cloud = CloudStandIn::start().await;
    let registry = token_registry(&cloud).await;
    let env = environment(&[("GCE_METADATA_HOST", cloud.host_port())]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), registry.url().as_str(), "{gcp: {}}", 1, "1s");
    let serve = serve(&config, &env);
    serve.wait_until("two rounds have pulled", Duration::from_secs(30), || cloud.count("registry_token") >= 2);
    assert_eq!(cloud.count("gcp_token"), 1, "one token serves every round while it is valid: {:?}", cloud.counts());
    // The token is revoked behind pullprobe's back: the next round's token request is
    // refused, the token is fetched anew once, and the round passes.
    cloud.revoke(GCP_USER);
    let rounds = cloud.count("registry_token");
    serve.wait_until("three more rounds have pulled", Duration::from_secs(30), || {
        cloud.count("registry_token") - cloud.count("registry_token_refused") >= rounds + 3
    });
    assert_eq!(cloud.count("registry_token_refused"), 1, "one refusal: {:?}", cloud.counts());
    assert_eq!(cloud.count("gcp_token"), 2, "one renewal for the refusal: {:?}", cloud.counts());
    assert_passing_without_secrets(&serve, &cloud.secrets());
}

// ---------------------------------------------------------------------------
// ACR.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acr_workload_identity_exchanges_for_a_refresh_token_and_pulls() {
    let cloud = CloudStandIn::start().await;
    let registry = token_registry(&cloud).await;
    cloud.front(&registry);
    let settings = cloud.settings();
    let federated = cloud.file("azure-identity-token", &settings.federated_token);
    let azure = |token_file: &Path| {
        environment(&[
            ("AZURE_CLIENT_ID", settings.client_id.clone()),
            ("AZURE_TENANT_ID", settings.tenant.clone()),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file.display().to_string()),
            ("AZURE_AUTHORITY_HOST", format!("{}/", cloud.url())),
        ])
    };
    let dir = tempfile::tempdir().unwrap();
    // The registry is reached through the stand-in's host, as ACR serves the API and the exchange from one.
    let config = write_config(dir.path(), &cloud.url(), "{acr: {}}", 1, "5m");
    let run = run_everywhere(&config, &azure(&federated), &cloud);
    assert_eq!(run.assert_ok().layers().len(), 2);
    assert_eq!((cloud.count("entra"), cloud.count("exchange")), (3, 3), "{:?}", cloud.counts());
    assert!(cloud.count("proxy") > 0 && cloud.count("registry_token_refused") == 0, "{:?}", cloud.counts());

    // A federated token Entra ID does not know: the tenant, client id and step are named.
    let wrong = cloud.file("wrong-azure-identity-token", "eyJnot-federated");
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &azure(&wrong));
    run.assert_failed(
        "auth_failed",
        "auth",
        &["Entra ID token", &settings.client_id, &settings.tenant, "HTTP status 401", "AADSTS700213"],
    );
    run.assert_no_secret(&cloud.secrets());
    assert_eq!(cloud.count("exchange"), 3, "nothing to exchange: {:?}", cloud.counts());
}

// ---------------------------------------------------------------------------
// Kubelet credential provider plugins.

/// An executable shell script `name` in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("writing a plugin");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn plugin_auth(plugin: &Path, dir: &Path) -> String {
    format!(
        "{{credential_provider: {{command: {}, args: [get-credentials], env: {{PLUGIN_DIR: {}}}}}}}",
        plugin.display(),
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_provider_plugin_answer_is_matched_and_cached_per_registry() {
    let cloud = CloudStandIn::start().await;
    let registry = token_registry(&cloud).await;
    let password = format!("plugin-password-{}", common::cloud::random_hex());
    cloud.accept("puller", &password);
    let dir = tempfile::tempdir().unwrap();
    let response = serde_json::json!({
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Registry",
        "cacheDuration": "1h0m0s",
        "auth": {
            registry.host_port(): {"username": "puller", "password": password},
            "*.example.org": {"username": "elsewhere", "password": "not-for-this-registry"},
        },
    });
    let plugin = script(
        dir.path(),
        "plugin",
        &format!(
            "[ \"$1\" = get-credentials ] || {{ echo \"unexpected arguments: $*\" >&2; exit 2; }}\n\
             cat > \"$PLUGIN_DIR/request.json\"\n\
             echo run >> \"$PLUGIN_DIR/runs.log\"\n\
             printf '%s' '{response}'\n"
        ),
    );
    let auth = plugin_auth(&plugin, dir.path());
    let url = registry.url().to_string();
    let config = write_config(dir.path(), &url, &auth, 1, "5m");
    let env = environment(&[]);
    run_everywhere(&config, &env, &cloud).assert_ok();
    let runs = || std::fs::read_to_string(dir.path().join("runs.log")).unwrap_or_default().lines().count();
    assert_eq!(runs(), 3, "one plugin run per pullprobe run");
    let request: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("request.json")).unwrap()).unwrap();
    assert_eq!(request["apiVersion"], "credentialprovider.kubelet.k8s.io/v1");
    assert_eq!(request["kind"], "CredentialProviderRequest");
    assert_eq!(request["image"], registry.reference("small", "latest"));

    let before = runs();
    let config_100 = write_config(dir.path(), &url, &auth, 100, "5m");
    let run = pullprobe(&["now", "-o", "json", "-c", config_100.to_str().unwrap()], &env);
    assert_all_ok(&run, 100);
    run.assert_no_secret(&cloud.secrets());
    assert_eq!(runs() - before, 1, "a Registry-keyed answer serves a hundred probes of the registry");

    // An answer with no key matching the image: no credentials, which the registry refuses.
    let unmatched = script(
        dir.path(),
        "unmatched",
        "cat > /dev/null\nprintf '%s' '{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\
         \"kind\":\"CredentialProviderResponse\",\"cacheKeyType\":\"Image\",\
         \"auth\":{\"*.example.org\":{\"username\":\"u\",\"password\":\"p\"}}}'\n",
    );
    let config = write_config(dir.path(), &url, &plugin_auth(&unmatched, dir.path()), 1, "5m");
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &env);
    run.assert_failed("auth_failed", "auth", &["HTTP status 401", "no credentials (anonymous)"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_plugin_is_killed_at_the_timeout() {
    let cloud = CloudStandIn::start().await;
    let registry = token_registry(&cloud).await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("plugin.pid");
    let plugin = script(dir.path(), "hangs", &format!("echo $$ > {}\nexec sleep 600\n", pid_file.display()));
    let config = write_config(dir.path(), registry.url().as_str(), &plugin_auth(&plugin, dir.path()), 1, "5m");
    let started = Instant::now();
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &environment(&[]));
    let took = started.elapsed();
    run.assert_failed("auth_failed", "auth", &["credential provider", "no answer within 10s; killed it"]);
    assert!(took >= Duration::from_secs(10) && took < Duration::from_secs(60), "took {took:?}");
    let pid = std::fs::read_to_string(&pid_file).expect("the plugin started").trim().to_string();
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "plugin process {pid} is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_plugin_is_auth_failed_with_its_stderr_bounded() {
    let cloud = CloudStandIn::start().await;
    let registry = token_registry(&cloud).await;
    let dir = tempfile::tempdir().unwrap();
    let stdout_secret = format!("stdout-secret-{}", common::cloud::random_hex());
    let plugin = script(
        dir.path(),
        "garbage",
        &format!(
            "cat > /dev/null\necho 'this is not JSON {stdout_secret}'\n\
             i=0; while [ $i -lt 2000 ]; do echo \"plugin complaint number $i\" >&2; i=$((i+1)); done\n"
        ),
    );
    let config = write_config(dir.path(), registry.url().as_str(), &plugin_auth(&plugin, dir.path()), 1, "5m");
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &environment(&[]));
    let result = run.assert_failed(
        "auth_failed",
        "auth",
        &["printed no CredentialProviderResponse JSON", "stderr: plugin complaint number 0 plugin complaint number 1"],
    );
    let error = result.error_message().unwrap_or_default();
    assert!(error.len() < 1200, "stderr is quoted in part ({} bytes): {error}", error.len());
    assert!(!error.contains("number 1999"), "{error}");
    run.assert_no_secret(&[stdout_secret]);

    // A plugin that fails says so, with its stderr.
    let failing = script(dir.path(), "fails", "cat > /dev/null\necho 'no credentials for this node' >&2\nexit 3\n");
    let config = write_config(dir.path(), registry.url().as_str(), &plugin_auth(&failing, dir.path()), 1, "5m");
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &environment(&[]));
    run.assert_failed("auth_failed", "auth", &["exit status: 3", "stderr: no credentials for this node"]);
}

// ---------------------------------------------------------------------------
// auth: auto.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_on_a_host_of_no_cloud_reads_the_docker_config() {
    let cloud = CloudStandIn::start().await;
    let registry = token_registry(&cloud).await;
    let password = format!("docker-config-password-{}", common::cloud::random_hex());
    cloud.accept("alice", &password);
    let dir = tempfile::tempdir().unwrap();
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auths = serde_json::json!({"auths": {registry.host_port(): {"username": "alice", "password": password}}});
    std::fs::write(docker.join("config.json"), auths.to_string()).unwrap();
    let config = write_config(dir.path(), registry.url().as_str(), "auto", 1, "5m");
    // Cloud variables set as a pod's would be: `auto` on a loopback host uses none of them.
    let env = environment(&[
        ("DOCKER_CONFIG", docker.display().to_string()),
        ("GCE_METADATA_HOST", cloud.host_port()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", cloud.url()),
    ]);
    run_everywhere(&config, &env, &cloud).assert_ok();
    assert_eq!(cloud.count("gcp_token") + cloud.count("imds_keys"), 0, "{:?}", cloud.counts());
}
