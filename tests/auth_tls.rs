//! Private registries behind TLS, against real servers on loopback:
//!
//! - a real distribution registry serving HTTPS (a test CA, an IP SAN for
//!   127.0.0.1) with htpasswd (bcrypt) auth: right password, wrong password,
//!   no password, wrong CA, system roots only, `--insecure`, a name mismatch,
//!   an expired certificate, HTTP/2;
//! - the same registry in token mode (`auth: token`) with a token server
//!   written here, signing ES256 JWTs with a test key whose certificate is the
//!   registry's `rootcertbundle`: one token for every layer, an expired token
//!   refreshed once, refused credentials, a `credHelpers` helper on PATH, a
//!   mounted `.dockerconfigjson`;
//! - nginx with `ssl_verify_client on` in front (mTLS), with and without a
//!   client certificate;
//! - `HTTPS_PROXY`/`NO_PROXY`, and an address-pinned frontend through a proxy.
//!
//! Every run's outputs (JSON, table, debug logs) are searched for the secrets.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tempfile::TempDir;

use common::cli::Run;
use common::pki::{PemPair, TestCa, TokenSigner};
use common::registry::RegistryAuth;
use common::{Nginx, Registry, RegistryOptions, ResultJson, push_small_image, run_pullprobe_with};

const USER: &str = "alice";
const PASSWORD: &str = "Pa55-w0rd-that-must-never-print";
const PASSWORD_ENV: &str = "PULLPROBE_TEST_REGISTRY_PASSWORD";
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// Running pullprobe and checking that no secret escaped.

fn pullprobe(args: &[&str], env: &[(&str, &str)]) -> Run {
    let (code, stdout, stderr) = run_pullprobe_with(args, env, None, RUN_TIMEOUT);
    Run::new(code, stdout, stderr)
}

/// The password, its Basic form, and the forms a leak would take.
fn password_secrets() -> Vec<String> {
    vec![PASSWORD.to_string(), base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))]
}

/// Run the probes of `config` three ways — JSON, the table, JSON with debug logs — and
/// check that none of the outputs holds a secret; returns the JSON run.
fn probe_everywhere(config: &Path, env: &[(&str, &str)], extra: &[&str], secrets: &[String]) -> Run {
    let config = config.to_str().expect("UTF-8 path");
    let mut json_args = vec!["now", "-o", "json", "-c", config];
    json_args.extend_from_slice(extra);
    let json = pullprobe(&json_args, env);
    json.assert_no_secret(secrets);
    let mut table_args = vec!["now", "-c", config];
    table_args.extend_from_slice(extra);
    pullprobe(&table_args, env).assert_no_secret(secrets);
    let mut debug_env = env.to_vec();
    debug_env.push(("PULLPROBE_LOG", "debug"));
    let debug = pullprobe(&json_args, &debug_env);
    debug.assert_no_secret(secrets);
    assert_eq!(debug.code, json.code, "debug logging changed the verdict: {}", debug.context());
    json
}

fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("probes.yaml");
    fs::write(&path, yaml).expect("writing probes.yaml");
    path
}

/// `registries: [{name: secure, url: URL, AUTH, TLS}]` and one probe `app` of `small:latest`.
fn registry_config(dir: &Path, url: &str, extra: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "defaults:\n  timeout: 60s\n\
             registries:\n  - name: secure\n    url: {url}\n{extra}\
             probes:\n  - name: app\n    registry: secure\n    image: small:latest\n"
        ),
    )
}

fn basic_auth_yaml() -> String {
    format!("    auth: {{username: {USER}, password_env: {PASSWORD_ENV}}}\n")
}

fn ca_yaml(ca: &Path) -> String {
    format!("    tls: {{ca_file: {}}}\n", ca.display())
}

// ---------------------------------------------------------------------------
// A registry with TLS and htpasswd.

struct Pki {
    dir: TempDir,
    ca: TestCa,
    server: PemPair,
}

fn pki() -> Pki {
    let dir = tempfile::Builder::new().prefix("pullprobe-pki-").tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path(), "test");
    let server = ca.server("registry", &["127.0.0.1", "localhost"], 30);
    Pki { dir, ca, server }
}

fn htpasswd(dir: &Path) -> PathBuf {
    let hash = bcrypt::hash_with_result(PASSWORD, 4).expect("bcrypt").format_for_version(bcrypt::Version::TwoA);
    let path = dir.join("htpasswd");
    fs::write(&path, format!("{USER}:{hash}\n")).expect("writing htpasswd");
    path
}

/// A registry holding `small:latest`, then restarted with TLS and htpasswd auth.
async fn tls_htpasswd_registry(pki: &Pki) -> Registry {
    let mut registry = Registry::start();
    push_small_image(&registry, "small", "latest").await;
    registry.restart_with(RegistryOptions {
        tls: Some(pki.server.clone()),
        auth: Some(RegistryAuth::Htpasswd(htpasswd(pki.dir.path()))),
        ..RegistryOptions::default()
    });
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_over_tls_right_password_passes_over_http2() {
    let pki = pki();
    let registry = tls_htpasswd_registry(&pki).await;
    let extra = format!("{}{}", basic_auth_yaml(), ca_yaml(&pki.ca.cert));
    let config = registry_config(pki.dir.path(), registry.url().as_str(), &extra);
    let env = [(PASSWORD_ENV, PASSWORD)];
    let run = probe_everywhere(&config, &env, &[], &password_secrets());
    let result = run.assert_ok();
    assert_eq!(result.layers().len(), 2, "{}", run.context());
    assert!(result.str_field("tls_not_after").is_some(), "a certificate was presented: {}", run.context());
    // distribution negotiates HTTP/2 through ALPN; the debug log names each response's version.
    let mut debug_env = env.to_vec();
    debug_env.push(("PULLPROBE_LOG", "debug"));
    let debug = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &debug_env);
    assert!(debug.stderr.contains("HTTP/2.0"), "expected HTTP/2 responses: {}", debug.context());
    // The password file works like the variable.
    let password_file = pki.dir.path().join("password");
    fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let extra = format!(
        "    auth: {{username: {USER}, password_file: {}}}\n{}",
        password_file.display(),
        ca_yaml(&pki.ca.cert)
    );
    let config = registry_config(pki.dir.path(), registry.url().as_str(), &extra);
    probe_everywhere(&config, &[], &[], &password_secrets()).assert_ok();
}

/// `phases` of the only result of a passing run, as numbers.
fn phases(run: &Run) -> serde_json::Map<String, Value> {
    let result = run.assert_ok();
    result["phases"].as_object().cloned().unwrap_or_else(|| panic!("no phases: {}", run.context()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_times_the_tls_handshake_apart_from_the_tcp_connect_and_plain_http_has_no_tls_phase() {
    let pki = pki();
    let mut registry = Registry::start();
    push_small_image(&registry, "small", "latest").await;
    let seconds = |phases: &serde_json::Map<String, Value>, phase: &str| phases.get(phase).and_then(Value::as_f64);

    // Plain HTTP: a TCP connect, no handshake, and no `tls` key at all (not a zero).
    let config = registry_config(pki.dir.path(), registry.url().as_str(), "");
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &[]);
    let plain = phases(&run);
    assert!(seconds(&plain, "connect").is_some_and(|s| s > 0.0), "{}", run.context());
    assert!(!plain.contains_key("tls"), "plain HTTP has no tls phase: {}", run.context());

    // HTTPS: `connect` is the TCP connect, `tls` the handshake, each its own.
    registry.restart_with(RegistryOptions { tls: Some(pki.server.clone()), ..RegistryOptions::default() });
    let config = registry_config(pki.dir.path(), registry.url().as_str(), &ca_yaml(&pki.ca.cert));
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &[]);
    let https = phases(&run);
    assert!(seconds(&https, "connect").is_some_and(|s| s > 0.0), "{}", run.context());
    assert!(seconds(&https, "tls").is_some_and(|s| s > 0.0), "{}", run.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_wrong_or_missing_password_is_auth_failed() {
    let pki = pki();
    let registry = tls_htpasswd_registry(&pki).await;
    let extra = format!("{}{}", basic_auth_yaml(), ca_yaml(&pki.ca.cert));
    let config = registry_config(pki.dir.path(), registry.url().as_str(), &extra);
    let wrong = "Wr0ng-but-still-secret";
    let mut secrets = password_secrets();
    secrets.push(wrong.to_string());
    secrets.push(base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{wrong}")));
    let run = probe_everywhere(&config, &[(PASSWORD_ENV, wrong)], &[], &secrets);
    run.assert_failed("auth_failed", "auth", &["HTTP status 401", "realm \"pullprobe-test\"", "user \"alice\""]);
    assert_eq!(run.result().u64_field("retries"), Some(0), "auth failures are not retried: {}", run.context());
    // No credentials configured at all: the challenge says what is missing.
    let config = registry_config(pki.dir.path(), registry.url().as_str(), &ca_yaml(&pki.ca.cert));
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &[]);
    run.assert_failed("auth_failed", "auth", &["basic-auth", "realm \"pullprobe-test\"", "none are configured"]);
    // The variable is not set.
    let config = registry_config(pki.dir.path(), registry.url().as_str(), &extra);
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &[]);
    run.assert_failed("auth_failed", "auth", &[PASSWORD_ENV, "not set"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_or_system_roots_only_is_tls_error_unknown_ca_and_insecure_passes() {
    let pki = pki();
    let registry = tls_htpasswd_registry(&pki).await;
    let other_ca = TestCa::new(pki.dir.path(), "other");
    let env = [(PASSWORD_ENV, PASSWORD)];
    let url = registry.url().to_string();
    // Trusting another CA.
    let config = registry_config(pki.dir.path(), &url, &format!("{}{}", basic_auth_yaml(), ca_yaml(&other_ca.cert)));
    let run = probe_everywhere(&config, &env, &[], &password_secrets());
    run.assert_failed("tls_error", "connect", &["unknown CA"]);
    // The system roots alone do not know the test CA either.
    let config = registry_config(pki.dir.path(), &url, &basic_auth_yaml());
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &env);
    run.assert_failed("tls_error", "connect", &["unknown CA"]);
    // --insecure: passes, with a warning.
    let run = probe_everywhere(&config, &env, &["--insecure"], &password_secrets());
    run.assert_ok();
    assert!(run.stderr.contains("--insecure"), "--insecure is warned about: {}", run.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_mismatch_and_expired_certificates_are_tls_errors() {
    let pki = pki();
    let mut registry = tls_htpasswd_registry(&pki).await;
    let env = [(PASSWORD_ENV, PASSWORD)];
    // The registry's name is not in the certificate: reach it as registry.pullprobe.test,
    // pinned to its address (Host and SNI stay the name).
    let url = format!("https://registry.pullprobe.test:{}", registry.port());
    let extra = format!("    frontends: [127.0.0.1]\n{}{}", basic_auth_yaml(), ca_yaml(&pki.ca.cert));
    let config = registry_config(pki.dir.path(), &url, &extra);
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &env);
    run.assert_failed("tls_error", "connect", &["name mismatch", "registry.pullprobe.test"]);
    // An expired certificate.
    let expired = pki.ca.server("expired", &["127.0.0.1"], -1);
    registry.restart_with(RegistryOptions {
        tls: Some(expired),
        auth: Some(RegistryAuth::Htpasswd(htpasswd(pki.dir.path()))),
        ..RegistryOptions::default()
    });
    let extra = format!("{}{}", basic_auth_yaml(), ca_yaml(&pki.ca.cert));
    let config = registry_config(pki.dir.path(), registry.url().as_str(), &extra);
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &env);
    run.assert_failed("tls_error", "connect", &["expired"]);
}

// ---------------------------------------------------------------------------
// Token mode: distribution's `auth: token` and a token server written here.

const SERVICE: &str = "pullprobe-test-registry";
const ISSUER: &str = "pullprobe-test-issuer";

/// One request to the token server.
#[derive(Debug, Clone)]
struct TokenRequest {
    /// The Basic user name, if credentials came.
    user: Option<String>,
    password_ok: bool,
    service: String,
    scopes: Vec<String>,
}

struct TokenServerState {
    signer: TokenSigner,
    requests: Mutex<Vec<TokenRequest>>,
    issued: Mutex<Vec<String>>,
    /// The next token is issued already expired (beyond distribution's 60 s leeway).
    next_expired: AtomicBool,
    /// Demand these credentials (else anonymous tokens are refused).
    require: Option<(String, String)>,
    /// Accounts that may pull and nothing else: their tokens grant only `pull`, whatever
    /// the scope asked for (as docker_auth, Harbor or GitLab grant the allowed subset).
    pull_only: Mutex<Vec<(String, String)>>,
    served: AtomicUsize,
}

struct TokenServer {
    port: u16,
    state: Arc<TokenServerState>,
    _dir: TempDir,
}

impl TokenServer {
    async fn start(require: Option<(&str, &str)>) -> TokenServer {
        let dir = tempfile::Builder::new().prefix("pullprobe-token-").tempdir().expect("temp dir");
        let state = Arc::new(TokenServerState {
            signer: TokenSigner::new(dir.path()),
            requests: Mutex::default(),
            issued: Mutex::default(),
            next_expired: AtomicBool::new(false),
            require: require.map(|(u, p)| (u.to_string(), p.to_string())),
            pull_only: Mutex::default(),
            served: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let app = Router::new().fallback(token_endpoint).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenServer { port, state, _dir: dir }
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn registry_auth(&self) -> RegistryAuth {
        RegistryAuth::Token {
            realm: self.realm(),
            service: SERVICE.to_string(),
            issuer: ISSUER.to_string(),
            rootcertbundle: self.state.signer.bundle.clone(),
        }
    }

    /// Let `user` in with `password`, for pulls only.
    fn allow_pull_only(&self, user: &str, password: &str) {
        self.state.pull_only.lock().unwrap().push((user.to_string(), password.to_string()));
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Every token issued, and the secrets a leak would show.
    fn secrets(&self) -> Vec<String> {
        let issued = self.state.issued.lock().unwrap().clone();
        // A JWT's signature part is unique to it; its header is shared, so look for whole tokens and signatures.
        issued.iter().flat_map(|t| [t.clone(), t.rsplit('.').next().unwrap_or_default().to_string()]).collect()
    }
}

async fn token_endpoint(State(state): State<Arc<TokenServerState>>, request: Request) -> Response {
    state.served.fetch_add(1, Ordering::Relaxed);
    let query = request.uri().query().unwrap_or_default().to_string();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let service = pairs.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone()).unwrap_or_default();
    let scopes: Vec<String> = pairs.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
    let basic = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    let pull_only = basic.as_ref().is_some_and(|given| state.pull_only.lock().unwrap().contains(given));
    let password_ok = pull_only
        || match (&state.require, &basic) {
            (Some(wanted), Some(given)) => wanted == given,
            (Some(_), None) => false,
            (None, _) => true,
        };
    state.requests.lock().unwrap().push(TokenRequest {
        user: basic.as_ref().map(|(u, _)| u.clone()),
        password_ok,
        service: service.clone(),
        scopes: scopes.clone(),
    });
    if !password_ok {
        return (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "application/json")], r#"{"details":"no"}"#)
            .into_response();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (nbf, exp) =
        if state.next_expired.swap(false, Ordering::Relaxed) { (now - 900, now - 300) } else { (now - 10, now + 600) };
    let access: Vec<Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions: Vec<&str> = actions.split(',').filter(|a| !pull_only || *a == "pull").collect();
            Some(json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let claims = json!({
        "iss": ISSUER,
        "sub": basic.as_ref().map(|(u, _)| u.as_str()).unwrap_or(""),
        "aud": service,
        "exp": exp,
        "nbf": nbf,
        "iat": nbf,
        "jti": format!("{}-{}", now, state.served.load(Ordering::Relaxed)),
        "access": access,
    });
    let token = state.signer.sign(&claims);
    state.issued.lock().unwrap().push(token.clone());
    let body = json!({"token": token, "expires_in": 600, "issued_at": "2026-01-01T00:00:00Z"});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// A plain-HTTP registry holding `small:latest`, restarted in token mode.
async fn token_registry(tokens: &TokenServer) -> Registry {
    let mut registry = Registry::start();
    push_small_image(&registry, "small", "latest").await;
    registry.restart_with(RegistryOptions { auth: Some(tokens.registry_auth()), ..RegistryOptions::default() });
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_pull_passes_with_one_token_for_every_layer() {
    let tokens = TokenServer::start(Some((USER, PASSWORD))).await;
    let registry = token_registry(&tokens).await;
    let dir = tempfile::tempdir().unwrap();
    let config = registry_config(dir.path(), registry.url().as_str(), &basic_auth_yaml());
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &[(PASSWORD_ENV, PASSWORD)]);
    let result = run.assert_ok();
    assert_eq!(result.layers().len(), 2, "{}", run.context());
    let requests = tokens.requests();
    assert_eq!(requests.len(), 1, "one token serves the manifest, the config and both layers: {requests:?}");
    assert_eq!(requests[0].user.as_deref(), Some(USER));
    assert!(requests[0].password_ok);
    assert_eq!(requests[0].service, SERVICE);
    assert_eq!(requests[0].scopes, ["repository:small:pull"]);
    assert!(result["phases"]["auth"].as_f64().is_some(), "the auth phase is timed: {}", run.context());
    let mut secrets = password_secrets();
    secrets.extend(tokens.secrets());
    run.assert_no_secret(&secrets);
    // The other outputs, debug logs included, hold neither the password nor a token.
    let run = probe_everywhere(&config, &[(PASSWORD_ENV, PASSWORD)], &[], &password_secrets());
    run.assert_ok();
    run.assert_no_secret(&tokens.secrets());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refreshed_once() {
    let tokens = TokenServer::start(Some((USER, PASSWORD))).await;
    let registry = token_registry(&tokens).await;
    let dir = tempfile::tempdir().unwrap();
    let config = registry_config(dir.path(), registry.url().as_str(), &basic_auth_yaml());
    tokens.state.next_expired.store(true, Ordering::Relaxed);
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &[(PASSWORD_ENV, PASSWORD)]);
    run.assert_ok();
    assert_eq!(run.result().u64_field("retries"), Some(0), "a refresh is not a retry: {}", run.context());
    assert_eq!(tokens.requests().len(), 2, "the expired token, then one fresh one: {:?}", tokens.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_refusing_the_credentials_is_auth_failed() {
    let tokens = TokenServer::start(Some((USER, PASSWORD))).await;
    let registry = token_registry(&tokens).await;
    let dir = tempfile::tempdir().unwrap();
    let config = registry_config(dir.path(), registry.url().as_str(), &basic_auth_yaml());
    let wrong = "not-the-password-either";
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &[(PASSWORD_ENV, wrong)]);
    run.assert_failed(
        "auth_failed",
        "auth",
        &[&format!("token realm {}", tokens.realm()), &format!("service \"{SERVICE}\""), "HTTP status 401", USER],
    );
    run.assert_no_secret(&[wrong.to_string()]);
}

/// A `docker-credential-<name>` script in `dir` that answers `get` for `server` only.
fn credential_helper(dir: &Path, name: &str, server: &str, user: &str, secret: &str) -> PathBuf {
    let path = dir.join(format!("docker-credential-{name}"));
    let script = format!(
        "#!/bin/sh\n\
         [ \"$1\" = get ] || exit 1\n\
         read -r server\n\
         echo \"$server\" >> \"{log}\"\n\
         if [ \"$server\" = \"{server}\" ]; then\n\
         \x20 printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\"\n\
         else\n\
         \x20 echo 'credentials not found in native keychain'; exit 1\n\
         fi\n",
        log = dir.join(format!("{name}.log")).display(),
    );
    fs::write(&path, script).expect("writing the helper");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cred_helper_and_mounted_dockerconfigjson_supply_credentials() {
    let tokens = TokenServer::start(Some((USER, PASSWORD))).await;
    let registry = token_registry(&tokens).await;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    credential_helper(&bin, "pullprobe-test", &registry.host_port(), USER, PASSWORD);
    let docker_config = dir.path().join("docker");
    fs::create_dir_all(&docker_config).unwrap();
    fs::write(
        docker_config.join("config.json"),
        json!({"credHelpers": {registry.host_port(): "pullprobe-test"}}).to_string(),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    // An ad-hoc reference reads $DOCKER_CONFIG/config.json, as the Docker CLI does.
    let image = registry.reference("small", "latest");
    let env = [("PATH", path.as_str()), ("DOCKER_CONFIG", docker_config.to_str().unwrap())];
    let run = pullprobe(&["now", "-o", "json", &image], &env);
    run.assert_ok();
    run.assert_no_secret(&password_secrets());
    let asked = fs::read_to_string(bin.join("pullprobe-test.log")).unwrap_or_default();
    assert_eq!(asked.lines().collect::<Vec<_>>(), [registry.host_port()], "the helper is asked for the registry once");
    assert_eq!(tokens.requests().last().and_then(|r| r.user.clone()).as_deref(), Some(USER));

    // A mounted Kubernetes secret (`.dockerconfigjson`) named in probes.yaml.
    let mounted = dir.path().join(".dockerconfigjson");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    fs::write(&mounted, json!({"auths": {format!("http://{}", registry.host_port()): {"auth": auth}}}).to_string())
        .unwrap();
    let config = registry_config(
        dir.path(),
        registry.url().as_str(),
        &format!("    auth: {{docker_config: {}}}\n", mounted.display()),
    );
    let run = probe_everywhere(&config, &[], &[], &password_secrets());
    run.assert_ok();

    // A helper that has nothing for the registry: anonymous, which this token server refuses.
    fs::write(
        docker_config.join("config.json"),
        json!({"credHelpers": {registry.host_port(): "pullprobe-test"}}).to_string(),
    )
    .unwrap();
    credential_helper(&bin, "pullprobe-test", "some.other.registry", USER, PASSWORD);
    let run = pullprobe(&["now", "-o", "json", &image], &env);
    run.assert_failed("auth_failed", "auth", &["HTTP status 401", "no credentials (anonymous)"]);
}

// ---------------------------------------------------------------------------
// Write-path canaries in token mode: pushes ask the token endpoint for
// `pull,push` with the credentials; credentials that may only pull are refused.

const CANARY_REPO: &str = "pullprobe/canary";
const READER: &str = "bob";
const READER_PASSWORD: &str = "Re4d-only-pa55word-never-printed";
const READER_PASSWORD_ENV: &str = "PULLPROBE_TEST_READER_PASSWORD";

/// One canary probe `write-path` on registry `secure` at `url`, pushing as `user`.
fn canary_config(dir: &Path, url: &str, user: &str, password_env: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "defaults:\n  location: test\n  timeout: 60s\n\
             registries:\n  - name: secure\n    url: {url}\n    auth: {{username: {user}, password_env: {password_env}}}\n\
             probes:\n  - name: write-path\n    registry: secure\n    \
             canary: {{repository: {CANARY_REPO}, consistency_deadline: 5s, size: 64KiB, chunk_size: 16KiB, sessions: 2}}\n"
        ),
    )
}

/// The canary repository's tags, from the registry's storage (the registry itself wants a token).
fn canary_tags(registry: &Registry) -> Vec<String> {
    let dir = registry.root().join("docker/registry/v2/repositories").join(CANARY_REPO).join("_manifests/tags");
    let mut tags: Vec<String> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

/// Push a distinct small image under each tag, so that deleting one manifest deletes one tag.
async fn seed_canary_tags(registry: &Registry, tags: &[&str]) {
    use image_builder::{Format, ImageBuilder, LayerBuilder, LayerCompression};
    for tag in tags {
        let dir = registry.scratch().join(tag);
        fs::create_dir_all(&dir).expect("scratch dir");
        let layer = LayerBuilder::new().file("srv/seed", *tag).write(&dir, LayerCompression::Gzip).expect("layer");
        let image = ImageBuilder::new(Format::Oci).layer(layer).build(&dir).expect("image");
        common::push(registry, CANARY_REPO, tag, image).await;
    }
}

fn push_scope() -> String {
    format!("repository:{CANARY_REPO}:pull,push")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_canary_pushes_with_push_scope_reads_back_and_cleans_up() {
    let tokens = TokenServer::start(Some((USER, PASSWORD))).await;
    let mut registry = Registry::start();
    let old = ["pullprobe-canary-test-1000", "pullprobe-canary-test-1001"];
    let kept = ["latest", "pullprobe-canary-elsewhere-1", "pullprobe-canary-test-1002", "pullprobe-canary-test-1003"];
    seed_canary_tags(&registry, &old).await;
    seed_canary_tags(&registry, &kept).await;
    registry.restart_with(RegistryOptions { auth: Some(tokens.registry_auth()), ..RegistryOptions::default() });
    let dir = tempfile::tempdir().unwrap();
    let config = canary_config(dir.path(), registry.url().as_str(), USER, PASSWORD_ENV);
    let env = [(PASSWORD_ENV, PASSWORD)];

    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &env);
    let result = run.assert_ok();
    assert_eq!(result.str_field("kind"), Some("canary"), "{}", run.context());
    assert!(result["phases"]["push"].as_f64().is_some_and(|s| s > 0.0), "{}", run.context());
    assert!(result["phases"]["visible"].as_f64().is_some(), "read back: {}", run.context());
    assert!(result["phases"]["auth"].as_f64().is_some(), "time spent on tokens: {}", run.context());
    assert!(result["phases"]["connect"].as_f64().is_some(), "the read-back's connection: {}", run.context());
    assert!(result["phases"].get("tls").is_none(), "plain HTTP, no handshake: {}", run.context());
    assert_eq!(result.layers().len(), 2, "config and layer read back: {}", run.context());
    assert!(result.layers().iter().all(|l| l.is_ok()), "{}", run.context());
    assert!(result.get("warnings").is_none(), "the cleanup deleted without trouble: {}", run.context());

    // Tokens: the push asked for pull,push with the credentials; the read-back for pull.
    let requests = tokens.requests();
    assert!(requests.iter().all(|r| r.user.as_deref() == Some(USER) && r.password_ok), "{requests:?}");
    assert!(requests.iter().any(|r| r.scopes.contains(&push_scope())), "a push token: {requests:?}");
    let pull = format!("repository:{CANARY_REPO}:pull");
    assert!(requests.iter().any(|r| r.scopes == [pull.clone()]), "a pull token for the read-back: {requests:?}");
    // distribution's DELETE wants the `delete` action: its challenge names it, and the token is asked for it too.
    // (One scope per resource: the actions asked for together, `…:delete,pull,push`.)
    let resource = format!("repository:{CANARY_REPO}:");
    let asks_delete =
        |scope: &String| scope.strip_prefix(&resource).is_some_and(|actions| actions.split(',').any(|a| a == "delete"));
    assert!(requests.iter().any(|r| r.scopes.iter().any(asks_delete)), "a delete token for the cleanup: {requests:?}");

    // Cleanup through the token-protected API: this location's oldest go, everything else stays.
    let tags = canary_tags(&registry);
    for tag in old {
        assert!(!tags.iter().any(|t| t == tag), "{tag} deleted: {tags:?}");
    }
    for tag in kept {
        assert!(tags.iter().any(|t| t == tag), "{tag} kept: {tags:?}");
    }
    assert_eq!(tags.iter().filter(|t| t.starts_with("pullprobe-canary-test-")).count(), 3, "{tags:?}");

    // No output — JSON, the table, debug logs — holds the password or a token.
    let mut secrets = password_secrets();
    secrets.extend(tokens.secrets());
    run.assert_no_secret(&secrets);
    let run = probe_everywhere(&config, &env, &[], &secrets);
    run.assert_ok();
    run.assert_no_secret(&tokens.secrets());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_canary_with_pull_only_credentials_is_auth_failed_naming_the_push_scope() {
    let tokens = TokenServer::start(Some((USER, PASSWORD))).await;
    tokens.allow_pull_only(READER, READER_PASSWORD);
    let registry = token_registry(&tokens).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [(READER_PASSWORD_ENV, READER_PASSWORD)];
    let mut secrets = vec![
        READER_PASSWORD.to_string(),
        base64::engine::general_purpose::STANDARD.encode(format!("{READER}:{READER_PASSWORD}")),
    ];

    // The credentials work: they pull.
    let pull_auth = format!("    auth: {{username: {READER}, password_env: {READER_PASSWORD_ENV}}}\n");
    let config = registry_config(dir.path(), registry.url().as_str(), &pull_auth);
    pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &env).assert_ok();

    // They cannot push: the canary fails on its first request, naming the scope it asked for.
    let config = canary_config(dir.path(), registry.url().as_str(), READER, READER_PASSWORD_ENV);
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &env);
    // The scope the token was asked for, as the refusal names it: distribution's challenge
    // may list the actions as `push,pull`, so the name's start is checked, then the whole.
    let scope = format!("scope \"repository:{CANARY_REPO}:");
    let result = run.assert_failed(
        "auth_failed",
        "auth",
        &[
            "upload 1 of 3",
            "POST (starting the upload)",
            "HTTP status 401",
            &scope,
            &format!("user \"{READER}\""),
            &format!("token realm {}", tokens.realm()),
            &format!("allowed to push to {CANARY_REPO}"),
            &push_scope(),
        ],
    );
    assert_eq!(result.registry_error(), Some("UNAUTHORIZED"), "the registry's code is kept: {}", run.context());
    assert_eq!(result.str_field("kind"), Some("canary"), "{}", run.context());
    let error = result.error_message().unwrap_or_default();
    assert!(error.contains("upload 1 of 3 failed"), "refused credentials stop the push at once: {error}");
    let push_requests: Vec<TokenRequest> =
        tokens.requests().into_iter().filter(|r| r.scopes.contains(&push_scope())).collect();
    assert!(!push_requests.is_empty(), "a push token was asked for: {:?}", tokens.requests());
    assert!(
        push_requests.iter().all(|r| r.user.as_deref() == Some(READER) && r.password_ok),
        "with the credentials: {push_requests:?}"
    );
    assert!(canary_tags(&registry).is_empty(), "nothing pushed");

    // No output holds the password or a token, debug logs included.
    secrets.extend(tokens.secrets());
    run.assert_no_secret(&secrets);
    let run = probe_everywhere(&config, &env, &[], &secrets);
    run.assert_failed("auth_failed", "auth", &[&scope]);
    run.assert_no_secret(&tokens.secrets());
}

// ---------------------------------------------------------------------------
// mTLS: nginx with `ssl_verify_client on` in front of a registry.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_through_nginx_with_and_without_a_client_certificate() {
    let pki = pki();
    let registry = Registry::start();
    push_small_image(&registry, "small", "latest").await;
    let client_ca = TestCa::new(pki.dir.path(), "clients");
    let client = client_ca.client("prober", "pullprobe-prober");
    let nginx = Nginx::start_mtls(&registry.host_port(), &pki.server, &client_ca.cert);
    let url = format!("https://127.0.0.1:{}", nginx.port());
    let with_cert = format!(
        "    tls: {{ca_file: {}, client_cert: {}, client_key: {}}}\n",
        pki.ca.cert.display(),
        client.cert.display(),
        client.key.display()
    );
    let config = registry_config(pki.dir.path(), &url, &with_cert);
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &[("PULLPROBE_LOG", "debug")]);
    run.assert_ok();
    assert!(run.stderr.contains("HTTP/1.1"), "nginx speaks HTTP/1.1 here: {}", run.context());
    assert!(nginx.access_log().contains("/v2/small/blobs/"), "the pull went through nginx");
    let key = fs::read_to_string(&client.key).unwrap();
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    run.assert_no_secret(&[key_body]);

    // No client certificate: nginx finishes the handshake and answers 400; pullprobe knows it was asked for one.
    let config = registry_config(pki.dir.path(), &url, &ca_yaml(&pki.ca.cert));
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &[]);
    run.assert_failed("tls_error", "connect", &["asked for a client certificate", "tls.client_cert", "400"]);

    // A client certificate from a CA nginx does not trust.
    let stranger = TestCa::new(pki.dir.path(), "stranger").client("stranger", "stranger");
    let config = registry_config(
        pki.dir.path(),
        &url,
        &format!(
            "    tls: {{ca_file: {}, client_cert: {}, client_key: {}}}\n",
            pki.ca.cert.display(),
            stranger.cert.display(),
            stranger.key.display()
        ),
    );
    let run = pullprobe(&["now", "-o", "json", "-c", config.to_str().unwrap()], &[]);
    run.assert_failed("http_status", "manifest", &["HTTP status 400"]);
}

// ---------------------------------------------------------------------------
// Proxies.

/// A CONNECT proxy on loopback that records each target.
struct ConnectProxy {
    port: u16,
    targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    async fn start() -> ConnectProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let targets: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = targets.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        if inbound.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).to_string();
                    let Some(target) = text.strip_prefix("CONNECT ").and_then(|r| r.split_whitespace().next()) else {
                        let _ = inbound.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await;
                        return;
                    };
                    seen.lock().unwrap().push(target.to_string());
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    let _ = inbound.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        ConnectProxy { port, targets }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_and_no_proxy_are_honoured_and_pinning_through_a_proxy_is_refused() {
    let pki = pki();
    let registry = tls_htpasswd_registry(&pki).await;
    let proxy = ConnectProxy::start().await;
    let extra = format!("{}{}", basic_auth_yaml(), ca_yaml(&pki.ca.cert));
    let config = registry_config(pki.dir.path(), registry.url().as_str(), &extra);
    let config_arg = config.to_str().unwrap();
    let proxy_url = proxy.url();
    let run = pullprobe(
        &["now", "-o", "json", "-c", config_arg],
        &[(PASSWORD_ENV, PASSWORD), ("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "")],
    );
    run.assert_ok();
    let targets = proxy.targets();
    assert!(!targets.is_empty(), "the pull went through HTTPS_PROXY");
    assert!(targets.iter().all(|t| t == &registry.host_port()), "{targets:?}");

    let before = proxy.targets().len();
    let run = pullprobe(
        &["now", "-o", "json", "-c", config_arg],
        &[(PASSWORD_ENV, PASSWORD), ("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "127.0.0.1")],
    );
    run.assert_ok();
    assert_eq!(proxy.targets().len(), before, "NO_PROXY bypasses the proxy");

    // An address-pinned frontend cannot be pinned through a proxy: a usage error, not an unpinned probe.
    let url = format!("https://registry.pullprobe.test:{}", registry.port());
    let pinned = format!("    frontends: [127.0.0.1]\n{extra}");
    let config = registry_config(pki.dir.path(), &url, &pinned);
    let run = pullprobe(
        &["now", "-o", "json", "-c", config.to_str().unwrap()],
        &[(PASSWORD_ENV, PASSWORD), ("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "")],
    );
    assert_eq!(run.code, 2, "{}", run.context());
    for needle in ["frontend 127.0.0.1", "cannot be probed through the proxy", "NO_PROXY"] {
        assert!(run.stderr.contains(needle), "{needle:?}: {}", run.context());
    }
    let run = pullprobe(
        &[
            "now",
            "-o",
            "json",
            "--frontend",
            "127.0.0.1",
            &format!("registry.pullprobe.test:{}/small:latest", registry.port()),
        ],
        &[("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "")],
    );
    assert_eq!(run.code, 2, "{}", run.context());
    assert!(run.stderr.contains("cannot be probed through the proxy"), "{}", run.context());
    assert_eq!(proxy.targets().len(), before, "nothing went through the proxy");
}
