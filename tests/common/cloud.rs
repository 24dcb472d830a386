//! Stand-ins for the clouds' credential endpoints, on one loopback port, that check
//! each request as the real service does, plus the token service of a real
//! distribution registry in `auth: token` mode that lets in only what the clouds
//! issued:
//!
//! - AWS: STS `AssumeRoleWithWebIdentity` (unsigned, query protocol, XML answer),
//!   ECR `GetAuthorizationToken` (JSON 1.1; the SigV4 signature recomputed here with
//!   the secret key, independently of the signer under test), the EKS Pod Identity
//!   agent and IMDSv2;
//! - GCP: the metadata server (only with `Metadata-Flavor: Google`);
//! - Azure: Entra ID's token endpoint (client assertion = the federated token) and
//!   ACR's `/oauth2/exchange` and `/oauth2/token`, in front of the registry (every
//!   other path is proxied to it, as ACR serves both from one host);
//! - ECR's own front: HTTP Basic with the password `GetAuthorizationToken` issued,
//!   in front of a registry without auth, as ECR's registry endpoints take it.
//!
//! Every secret handed out is recorded, so tests can search outputs for all of them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

use super::pki::TokenSigner;
use super::registry::{Registry, RegistryAuth, RegistryOptions};

/// The issuer of the registry's tokens.
pub const ISSUER: &str = "pullprobe-test-cloud";
/// ACR's user name for refresh tokens.
pub const ACR_USER: &str = "00000000-0000-0000-0000-000000000000";
pub const GCP_USER: &str = "oauth2accesstoken";
pub const GCP_ACCOUNT: &str = "prober@pullprobe-test.iam.gserviceaccount.com";
pub const IMDS_ROLE: &str = "pullprobe-node-role";
/// How long the registry's own tokens live.
const REGISTRY_TOKEN_SECONDS: i64 = 600;

/// What the stand-ins expect and how long what they issue lives; tests change it between runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub region: String,
    pub role_arn: String,
    pub web_identity_token: String,
    pub pod_identity_token: String,
    pub tenant: String,
    pub client_id: String,
    pub federated_token: String,
    pub aws_lifetime: Duration,
    pub ecr_lifetime: Duration,
    pub gcp_lifetime: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            region: "eu-west-1".into(),
            role_arn: "arn:aws:iam::123456789012:role/pullprobe-puller".into(),
            web_identity_token: format!("eyJwebidentity.{}", random_hex()),
            pod_identity_token: format!("eyJpodidentity.{}", random_hex()),
            tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            client_id: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
            federated_token: format!("eyJfederated.{}", random_hex()),
            aws_lifetime: Duration::from_secs(3600),
            ecr_lifetime: Duration::from_secs(12 * 3600),
            gcp_lifetime: Duration::from_secs(3599),
        }
    }
}

/// Credentials the registry's token service accepts.
#[derive(Debug, Clone)]
struct Grant {
    user: String,
    secret: String,
    until: Option<Instant>,
    revoked: bool,
}

#[derive(Debug, Clone)]
struct AwsKey {
    access_key_id: String,
    secret: String,
    session_token: Option<String>,
    until: Option<Instant>,
}

pub struct CloudState {
    signer: TokenSigner,
    /// `127.0.0.1:PORT` of the stand-in: the registry's service name, as ACR's is its host.
    pub service: String,
    upstream: Mutex<Option<String>>,
    /// The front asks for HTTP Basic itself (ECR) rather than leaving auth to the registry (ACR).
    basic_front: std::sync::atomic::AtomicBool,
    http: reqwest::Client,
    settings: Mutex<Settings>,
    counts: Mutex<BTreeMap<&'static str, usize>>,
    secrets: Mutex<Vec<String>>,
    grants: Mutex<Vec<Grant>>,
    aws_keys: Mutex<Vec<AwsKey>>,
    entra_tokens: Mutex<Vec<String>>,
    imds_sessions: Mutex<Vec<String>>,
}

/// The stand-ins, serving until dropped with the test's runtime.
pub struct CloudStandIn {
    pub port: u16,
    pub state: Arc<CloudState>,
    dir: TempDir,
}

impl CloudStandIn {
    pub async fn start() -> CloudStandIn {
        let dir = tempfile::Builder::new().prefix("pullprobe-cloud-").tempdir().expect("temp dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let settings = Settings::default();
        let state = Arc::new(CloudState {
            signer: TokenSigner::new(dir.path()),
            service: format!("127.0.0.1:{port}"),
            upstream: Mutex::default(),
            basic_front: std::sync::atomic::AtomicBool::new(false),
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client"),
            secrets: Mutex::new(vec![
                settings.web_identity_token.clone(),
                settings.pod_identity_token.clone(),
                settings.federated_token.clone(),
            ]),
            settings: Mutex::new(settings),
            counts: Mutex::default(),
            grants: Mutex::default(),
            aws_keys: Mutex::default(),
            entra_tokens: Mutex::default(),
            imds_sessions: Mutex::default(),
        });
        let app = Router::new()
            .route("/", post(aws_api))
            .route("/v1/credentials", get(pod_identity))
            .route("/latest/api/token", put(imds_session))
            .route("/latest/meta-data/iam/security-credentials/", get(imds_role))
            .route("/latest/meta-data/iam/security-credentials/{role}", get(imds_keys))
            .route("/computeMetadata/v1/instance/service-accounts/default/token", get(gcp_token))
            .route("/computeMetadata/v1/instance/service-accounts/default/email", get(gcp_email))
            .route("/{tenant}/oauth2/v2.0/token", post(entra_token))
            .route("/oauth2/exchange", post(acr_exchange))
            .route("/oauth2/token", get(registry_token).post(registry_token))
            .fallback(proxy)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CloudStandIn { port, state, dir }
    }

    /// `http://127.0.0.1:PORT`: every endpoint override points here.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn host_port(&self) -> String {
        self.state.service.clone()
    }

    pub fn settings(&self) -> Settings {
        self.state.settings.lock().unwrap().clone()
    }

    pub fn update(&self, change: impl FnOnce(&mut Settings)) {
        change(&mut self.state.settings.lock().unwrap());
    }

    /// The registry's `auth: token` section: tokens from this stand-in's `/oauth2/token`.
    pub fn registry_auth(&self) -> RegistryAuth {
        RegistryAuth::Token {
            realm: format!("{}/oauth2/token", self.url()),
            service: self.state.service.clone(),
            issuer: ISSUER.to_string(),
            rootcertbundle: self.state.signer.bundle.clone(),
        }
    }

    /// Serve the registry's API from this stand-in's port too (ACR's single host).
    pub fn front(&self, registry: &Registry) {
        *self.state.upstream.lock().unwrap() = Some(registry.url().as_str().trim_end_matches('/').to_string());
    }

    /// Serve a registry without auth from this stand-in's port behind HTTP Basic, as ECR's
    /// registry endpoints do: only what the stand-ins issued (and [`CloudStandIn::accept`]) passes.
    pub fn front_with_basic_auth(&self, registry: &Registry) {
        self.front(registry);
        self.state.basic_front.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Requests an endpoint answered so far (`sts`, `ecr`, `pod_identity`, `imds_keys`,
    /// `gcp_token`, `entra`, `exchange`, `registry_token`, `registry_token_refused`, …).
    pub fn count(&self, endpoint: &str) -> usize {
        self.state.counts.lock().unwrap().get(endpoint).copied().unwrap_or(0)
    }

    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        self.state.counts.lock().unwrap().clone()
    }

    /// Every secret handed out or expected (tokens, keys, passwords, their base64 forms).
    pub fn secrets(&self) -> Vec<String> {
        self.state.secrets.lock().unwrap().clone()
    }

    /// Let the registry's token service accept `user` with `secret` (a docker config's or a plugin's).
    pub fn accept(&self, user: &str, secret: &str) {
        self.state.grant(user, secret, None);
    }

    /// Stop accepting what was issued to `user` so far (a revoked or rotated token).
    pub fn revoke(&self, user: &str) {
        for grant in self.state.grants.lock().unwrap().iter_mut().filter(|g| g.user == user) {
            grant.revoked = true;
        }
    }

    /// AWS keys the ECR stand-in knows, as environment keys would be: (access key id, secret).
    pub fn aws_environment_keys(&self) -> (String, String) {
        let key = AwsKey {
            access_key_id: format!("AKIA{}", &random_hex()[..16].to_uppercase()),
            secret: random_hex(),
            session_token: None,
            until: None,
        };
        self.state.record(&key.secret);
        self.state.aws_keys.lock().unwrap().push(key.clone());
        (key.access_key_id, key.secret)
    }

    /// A file in the stand-in's directory (a projected token, say).
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("writing a stand-in file");
        path
    }
}

/// A real registry holding `small:latest`, then restarted in token mode with this stand-in as its token service.
pub async fn token_registry(cloud: &CloudStandIn) -> Registry {
    let mut registry = Registry::start();
    super::push_small_image(&registry, "small", "latest").await;
    registry.restart_with(RegistryOptions { auth: Some(cloud.registry_auth()), ..RegistryOptions::default() });
    registry
}

impl CloudState {
    fn count(&self, endpoint: &'static str) {
        *self.counts.lock().unwrap().entry(endpoint).or_default() += 1;
    }

    fn record(&self, secret: &str) {
        self.secrets.lock().unwrap().push(secret.to_string());
    }

    fn grant(&self, user: &str, secret: &str, lifetime: Option<Duration>) {
        self.record(secret);
        self.record(&base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")));
        let until = lifetime.map(|l| Instant::now() + l);
        self.grants.lock().unwrap().push(Grant { user: user.into(), secret: secret.into(), until, revoked: false });
    }

    fn accepts(&self, user: &str, secret: &str) -> bool {
        let now = Instant::now();
        self.grants
            .lock()
            .unwrap()
            .iter()
            .any(|g| g.user == user && g.secret == secret && !g.revoked && g.until.is_none_or(|u| now < u))
    }

    fn settings(&self) -> Settings {
        self.settings.lock().unwrap().clone()
    }

    /// New temporary AWS keys, known to the ECR stand-in: (id, secret, session token, expiry RFC 3339).
    fn issue_aws_keys(&self) -> (String, String, String, String) {
        let lifetime = self.settings().aws_lifetime;
        let key = AwsKey {
            access_key_id: format!("ASIA{}", &random_hex()[..16].to_uppercase()),
            secret: random_hex(),
            session_token: Some(format!("FwoGZXIvYXdzE{}", random_hex())),
            until: Some(Instant::now() + lifetime),
        };
        self.record(&key.secret);
        let token = key.session_token.clone().unwrap_or_default();
        self.record(&token);
        self.aws_keys.lock().unwrap().push(key.clone());
        (key.access_key_id, key.secret, token, rfc3339_in(lifetime))
    }
}

// ---------------------------------------------------------------------------
// AWS: STS and ECR share the endpoint; ECR calls carry X-Amz-Target.

async fn aws_api(State(cloud): State<Arc<CloudState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    if parts.headers.contains_key("x-amz-target") {
        ecr(&cloud, &parts.method, parts.uri.path(), parts.uri.query().unwrap_or(""), &parts.headers, &body)
    } else {
        sts(&cloud, &parts.headers, &body)
    }
}

fn sts_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
         <Code>{code}</Code><Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    );
    (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

fn sts(cloud: &CloudState, headers: &HeaderMap, body: &[u8]) -> Response {
    cloud.count("sts");
    let form = form(body);
    let settings = cloud.settings();
    if headers.contains_key(header::AUTHORIZATION) {
        return sts_error(StatusCode::BAD_REQUEST, "InvalidAction", "AssumeRoleWithWebIdentity is not signed");
    }
    if form.get("Action").map(String::as_str) != Some("AssumeRoleWithWebIdentity")
        || form.get("Version").map(String::as_str) != Some("2011-06-15")
        || form.get("RoleSessionName").is_none_or(|n| n.is_empty())
    {
        return sts_error(StatusCode::BAD_REQUEST, "ValidationError", "missing Action, Version or RoleSessionName");
    }
    if form.get("WebIdentityToken") != Some(&settings.web_identity_token) {
        return sts_error(StatusCode::BAD_REQUEST, "InvalidIdentityToken", "Couldn't retrieve verification key");
    }
    if form.get("RoleArn") != Some(&settings.role_arn) {
        return sts_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        );
    }
    let (id, secret, token, expiration) = cloud.issue_aws_keys();
    let body = format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{id}</AccessKeyId>\
         <SecretAccessKey>{secret}</SecretAccessKey><SessionToken>{token}</SessionToken>\
         <Expiration>{expiration}</Expiration></Credentials></AssumeRoleWithWebIdentityResult>\
         </AssumeRoleWithWebIdentityResponse>"
    );
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

fn ecr_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"__type": format!("com.amazon.coral.service#{kind}"), "message": message});
    (status, [(header::CONTENT_TYPE, "application/x-amz-json-1.1")], body.to_string()).into_response()
}

fn ecr(
    cloud: &CloudState,
    method: &axum::http::Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    cloud.count("ecr");
    let settings = cloud.settings();
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if header_str("x-amz-target") != "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"
        || header_str("content-type") != "application/x-amz-json-1.1"
    {
        return ecr_error(StatusCode::BAD_REQUEST, "UnknownOperationException", "unknown target or content type");
    }
    let Some(auth) = SigV4Authorization::parse(header_str("authorization")) else {
        return ecr_error(StatusCode::FORBIDDEN, "MissingAuthenticationTokenException", "Missing Authentication Token");
    };
    let key = cloud.aws_keys.lock().unwrap().iter().find(|k| k.access_key_id == auth.access_key_id).cloned();
    let Some(key) = key else {
        return ecr_error(
            StatusCode::BAD_REQUEST,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        );
    };
    if key.until.is_some_and(|u| Instant::now() > u) {
        return ecr_error(
            StatusCode::FORBIDDEN,
            "ExpiredTokenException",
            "The security token included in the request is expired",
        );
    }
    if key.session_token.as_deref().unwrap_or_default() != header_str("x-amz-security-token") {
        return ecr_error(StatusCode::BAD_REQUEST, "UnrecognizedClientException", "The security token is invalid.");
    }
    if auth.region != settings.region || auth.service != "ecr" {
        return ecr_error(
            StatusCode::FORBIDDEN,
            "InvalidSignatureException",
            "Credential should be scoped to a valid region",
        );
    }
    if let Err(why) = verify_sigv4(method.as_str(), path, query, headers, body, &key.secret, &auth) {
        let message = format!("The request signature we calculated does not match the signature you provided ({why})");
        return ecr_error(StatusCode::FORBIDDEN, "InvalidSignatureException", &message);
    }
    let password = format!("eyJecrpassword{}", random_hex());
    cloud.grant("AWS", &password, Some(settings.ecr_lifetime));
    let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    cloud.record(&token);
    let expires_at = unix_now() + settings.ecr_lifetime.as_secs_f64();
    let body = json!({"authorizationData": [{
        "authorizationToken": token,
        "expiresAt": expires_at,
        "proxyEndpoint": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
    }]});
    ([(header::CONTENT_TYPE, "application/x-amz-json-1.1")], body.to_string()).into_response()
}

/// `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=hex`.
pub struct SigV4Authorization {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl SigV4Authorization {
    pub fn parse(value: &str) -> Option<SigV4Authorization> {
        let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
        let mut fields = BTreeMap::new();
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            fields.insert(k, v);
        }
        let scope: Vec<&str> = fields.get("Credential")?.split('/').collect();
        if scope.len() != 5 || scope[4] != "aws4_request" {
            return None;
        }
        Some(SigV4Authorization {
            access_key_id: scope[0].into(),
            date: scope[1].into(),
            region: scope[2].into(),
            service: scope[3].into(),
            signed_headers: fields.get("SignedHeaders")?.split(';').map(str::to_string).collect(),
            signature: fields.get("Signature")?.to_string(),
        })
    }
}

/// Recompute a SigV4 signature with `secret` as AWS does (canonical request, string to
/// sign, the derived signing key) and compare it with the one the request carries.
pub fn verify_sigv4(
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
    auth: &SigV4Authorization,
) -> Result<(), String> {
    let amz_date = headers.get("x-amz-date").and_then(|v| v.to_str().ok()).ok_or("no x-amz-date")?;
    if !amz_date.starts_with(&auth.date) {
        return Err("x-amz-date is not the credential's date".into());
    }
    if !auth.signed_headers.iter().any(|h| h == "host") || !auth.signed_headers.iter().any(|h| h == "x-amz-date") {
        return Err("host and x-amz-date must be signed".into());
    }
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.to_str().unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() {
            return Err(format!("signed header {name} is missing"));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let mut query_pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    query_pairs.sort();
    let canonical_request = format!(
        "{method}\n{path}\n{}\n{canonical_headers}\n{}\n{}",
        query_pairs.join("&"),
        auth.signed_headers.join(";"),
        hex::encode(Sha256::digest(body))
    );
    let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
    let string_to_sign =
        format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical_request.as_bytes())));
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    for part in [auth.region.as_str(), auth.service.as_str(), "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let expected = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
    if expected == auth.signature { Ok(()) } else { Err("signature mismatch".into()) }
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

async fn pod_identity(State(cloud): State<Arc<CloudState>>, headers: HeaderMap) -> Response {
    cloud.count("pod_identity");
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if given != cloud.settings().pod_identity_token {
        return (StatusCode::UNAUTHORIZED, "invalid authorization token").into_response();
    }
    let (id, secret, token, expiration) = cloud.issue_aws_keys();
    let body = json!({"AccessKeyId": id, "SecretAccessKey": secret, "Token": token, "AccountId": "123456789012",
                      "Expiration": expiration});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn imds_session(State(cloud): State<Arc<CloudState>>, headers: HeaderMap) -> Response {
    cloud.count("imds_session");
    if !headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let session = format!("AQAEAimds{}", random_hex());
    cloud.record(&session);
    cloud.imds_sessions.lock().unwrap().push(session.clone());
    session.into_response()
}

fn imds_session_ok(cloud: &CloudState, headers: &HeaderMap) -> bool {
    let given = headers.get("x-aws-ec2-metadata-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    cloud.imds_sessions.lock().unwrap().iter().any(|s| s == given)
}

async fn imds_role(State(cloud): State<Arc<CloudState>>, headers: HeaderMap) -> Response {
    cloud.count("imds_role");
    if !imds_session_ok(&cloud, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    IMDS_ROLE.into_response()
}

async fn imds_keys(
    State(cloud): State<Arc<CloudState>>,
    axum::extract::Path(role): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    cloud.count("imds_keys");
    if !imds_session_ok(&cloud, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if role != IMDS_ROLE {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (id, secret, token, expiration) = cloud.issue_aws_keys();
    let body = json!({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": id, "SecretAccessKey": secret,
                      "Token": token, "Expiration": expiration, "LastUpdated": rfc3339_in(Duration::ZERO)});
    ([(header::CONTENT_TYPE, "text/plain")], body.to_string()).into_response()
}

// ---------------------------------------------------------------------------
// GCP: the metadata server.

fn metadata_flavor_ok(headers: &HeaderMap) -> bool {
    headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) == Some("Google")
}

async fn gcp_token(State(cloud): State<Arc<CloudState>>, headers: HeaderMap) -> Response {
    if !metadata_flavor_ok(&headers) {
        cloud.count("gcp_refused");
        return (StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header.").into_response();
    }
    cloud.count("gcp_token");
    let lifetime = cloud.settings().gcp_lifetime;
    let token = format!("ya29.c.{}", random_hex());
    cloud.grant(GCP_USER, &token, Some(lifetime));
    let body = json!({"access_token": token, "expires_in": lifetime.as_secs(), "token_type": "Bearer"});
    (
        [(header::CONTENT_TYPE, "application/json"), (header::HeaderName::from_static("metadata-flavor"), "Google")],
        body.to_string(),
    )
        .into_response()
}

async fn gcp_email(headers: HeaderMap) -> Response {
    if !metadata_flavor_ok(&headers) {
        return (StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header.").into_response();
    }
    GCP_ACCOUNT.into_response()
}

// ---------------------------------------------------------------------------
// Azure: Entra ID, ACR's exchange, and the registry's token service (also ACR's).

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    let body = json!({"error": code, "error_description": description});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn entra_token(
    State(cloud): State<Arc<CloudState>>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Response {
    cloud.count("entra");
    let form = form(&body);
    let settings = cloud.settings();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if tenant != settings.tenant {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "AADSTS90002: Tenant not found.");
    }
    if field("grant_type") != "client_credentials"
        || field("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        || field("scope") != "https://management.azure.com/.default"
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS900144: bad grant, assertion type or scope",
        );
    }
    if field("client_id") != settings.client_id || field("client_assertion") != settings.federated_token {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS700213: No matching federated identity record found for presented assertion subject.",
        );
    }
    let token = format!("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra{}", random_hex());
    cloud.record(&token);
    cloud.entra_tokens.lock().unwrap().push(token.clone());
    let body = json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn acr_exchange(State(cloud): State<Arc<CloudState>>, body: axum::body::Bytes) -> Response {
    cloud.count("exchange");
    let form = form(&body);
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if field("grant_type") != "access_token" || field("service") != cloud.service {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type or service");
    }
    let known = cloud.entra_tokens.lock().unwrap().iter().any(|t| t == field("access_token"));
    if field("tenant") != cloud.settings().tenant || !known {
        return (StatusCode::UNAUTHORIZED, r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid access token"}]}"#)
            .into_response();
    }
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let exp = unix_now() as i64 + 3 * 3600;
    let refresh = format!("{}.{}.{}", b64(r#"{"alg":"RS256"}"#), b64(&json!({"exp": exp}).to_string()), random_hex());
    cloud.grant(ACR_USER, &refresh, Some(Duration::from_secs(3 * 3600)));
    ([(header::CONTENT_TYPE, "application/json")], json!({"refresh_token": refresh}).to_string()).into_response()
}

/// The registry's token service: `GET` with Basic credentials (ECR, GCP, a docker config)
/// or `POST grant_type=refresh_token` (ACR). Signs what distribution's `auth: token` checks.
async fn registry_token(State(cloud): State<Arc<CloudState>>, request: Request) -> Response {
    cloud.count("registry_token");
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let posted = form_pairs(&body);
    let get_pairs = form_pairs(parts.uri.query().unwrap_or_default().as_bytes());
    let pairs = if parts.method == axum::http::Method::POST { posted.clone() } else { get_pairs };
    let service = pairs.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone()).unwrap_or_default();
    let scopes: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let account = if parts.method == axum::http::Method::POST {
        let form: BTreeMap<String, String> = posted.into_iter().collect();
        (form.get("grant_type").map(String::as_str) == Some("refresh_token"))
            .then(|| (ACR_USER.to_string(), form.get("refresh_token").cloned().unwrap_or_default()))
    } else {
        basic_credentials(&parts.headers)
    };
    let Some((user, _)) = account.filter(|(u, s)| service == cloud.service && cloud.accepts(u, s)) else {
        cloud.count("registry_token_refused");
        return (StatusCode::UNAUTHORIZED, r#"{"errors":[{"code":"UNAUTHORIZED","message":"access denied"}]}"#)
            .into_response();
    };
    let now = unix_now() as i64;
    let access: Vec<Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let claims = json!({"iss": ISSUER, "sub": user, "aud": service, "exp": now + REGISTRY_TOKEN_SECONDS,
                        "nbf": now - 10, "iat": now - 10, "jti": random_hex(), "access": access});
    let token = cloud.signer.sign(&claims);
    cloud.record(&token);
    cloud.record(token.rsplit('.').next().unwrap_or_default());
    let body = if parts.method == axum::http::Method::POST {
        json!({"access_token": token})
    } else {
        json!({"token": token, "expires_in": REGISTRY_TOKEN_SECONDS})
    };
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Everything else goes to the registry behind (ACR's single host).
async fn proxy(State(cloud): State<Arc<CloudState>>, request: Request) -> Response {
    let Some(upstream) = cloud.upstream.lock().unwrap().clone() else {
        return (StatusCode::NOT_FOUND, "no such stand-in endpoint").into_response();
    };
    cloud.count("proxy");
    if cloud.basic_front.load(std::sync::atomic::Ordering::SeqCst) {
        let given = basic_credentials(request.headers());
        if !given.as_ref().is_some_and(|(user, password)| cloud.accepts(user, password)) {
            if given.is_some() {
                cloud.count("front_refused");
            }
            let body = r#"{"errors":[{"code":"DENIED","message":"Your authorization token has expired. Reauthenticate and try again."}]}"#;
            let challenge =
                "Basic realm=\"https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/\",service=\"ecr.amazonaws.com\"";
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)], body).into_response();
        }
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
    let target = format!("{upstream}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut forwarded = cloud.http.request(parts.method.clone(), target).body(body);
    for (name, value) in parts.headers.iter().filter(|(n, _)| *n != header::HOST) {
        forwarded = forwarded.header(name, value);
    }
    let answer = match forwarded.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in
        answer.headers().iter().filter(|(n, _)| *n != header::TRANSFER_ENCODING && *n != header::CONNECTION)
    {
        response = response.header(name, value);
    }
    response.body(Body::from_stream(answer.bytes_stream())).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

// ---------------------------------------------------------------------------

/// (user, password) of an `Authorization: Basic …` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())))
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn form(body: &[u8]) -> BTreeMap<String, String> {
    form_pairs(body).into_iter().collect()
}

pub fn random_hex() -> String {
    format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>())
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// Now plus `lifetime`, as RFC 3339 (`2026-11-23T06:00:00Z`).
fn rfc3339_in(lifetime: Duration) -> String {
    let at = time::OffsetDateTime::now_utc() + lifetime;
    at.replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}
