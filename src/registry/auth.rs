//! Registry authentication the way container runtimes do it: every request
//! goes out anonymously first; a `401` with a `WWW-Authenticate` challenge is
//! answered once — HTTP Basic with the configured credentials, or the Bearer
//! token flow (`GET realm?service=…&scope=…`, with Basic credentials or
//! anonymously; `POST` with an identity token) — and the request is retried
//! once. After the first challenge, requests to the same frontend carry the
//! credentials or a cached token up front, so one token serves every layer.
//!
//! Tokens are cached per (realm, service, scope, account) until `expires_in`
//! (default 60 s); a token that a request is refused with (`401`: expired,
//! or stale on arrival) is fetched anew once for that request. Credentials come from probes.yaml (`username` + `password_file` or
//! `password_env`), a Docker config ([`super::docker_config`]), or a cloud's workload
//! identity or a credential provider plugin ([`super::cloud`]: fetched anew once when
//! the registry refuses them), and are read only when a challenge asks for them.
//!
//! Secrets never leave this module in text: [`Credentials`] and cached tokens
//! print as `[redacted]`, header values are marked sensitive, and a failure
//! names the realm, service, scope, user and HTTP status — never a password
//! or a token.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::BytesMut;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Client, Response, StatusCode};
use serde::Deserialize;
use url::Url;

use crate::config::{Auth, PasswordSource};
use crate::reason::{ProbeError, Reason};
use crate::redact::redact_url;
use crate::reference::ImageReference;
use crate::registry::errors::parse_error_body;
use crate::registry::transport::classify_transport;

/// Token lifetime when the token endpoint names none (the Docker token spec's default).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Challenges and parameters read from one response; the rest is ignored.
const MAX_CHALLENGES: usize = 16;
const MAX_PARAMS: usize = 32;
const MAX_CHALLENGE_TEXT: usize = 16 * 1024;

/// A user name and its secret. Prints without the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    secret: Secret,
    /// Who issued them, for messages ("an ECR authorization token for role …"); never a secret.
    origin: Option<String>,
}

/// A password, or an identity (OAuth2 refresh) token from `docker login`.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Password(String),
    IdentityToken(String),
}

impl Credentials {
    pub fn new(username: impl Into<String>, secret: Secret) -> Self {
        Credentials { username: username.into(), secret, origin: None }
    }

    /// Name who issued them (a cloud identity, a plugin) in failure messages.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// `Authorization: Basic …`, marked sensitive; `None` for an identity token.
    fn basic_header(&self) -> Option<HeaderValue> {
        let Secret::Password(password) = &self.secret else { return None };
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", self.username));
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    fn describe(&self) -> String {
        if let Some(origin) = &self.origin {
            return format!("{origin} (user {:?})", self.username);
        }
        match (&self.secret, self.username.is_empty()) {
            (Secret::IdentityToken(_), _) => "the identity token of the Docker config".to_string(),
            (_, true) => "an empty user name".to_string(),
            (_, false) => format!("the credentials of user {:?}", self.username),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.secret {
            Secret::Password(_) => "password",
            Secret::IdentityToken(_) => "identity token",
        };
        write!(f, "Credentials {{ username: {:?}, {kind}: [redacted] }}", self.username)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a token is asked for: `repository:<name>:pull`, or `pull,push` for a canary push.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope(String);

impl Scope {
    pub fn pull(repository: &str) -> Self {
        Scope(format!("repository:{repository}:pull"))
    }

    pub fn push_pull(repository: &str) -> Self {
        Scope(format!("repository:{repository}:pull,push"))
    }

    /// Listing the registry's repositories (`GET /v2/_catalog`).
    pub fn catalog() -> Self {
        Scope("registry:catalog:*".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What every client of one job shares (all its frontends, platforms and retries):
/// the credentials, read once, and the tokens.
#[derive(Debug, Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<Option<CachedToken>>>>>,
    credentials: tokio::sync::OnceCell<Option<Credentials>>,
    /// Cloud credentials fetched again after the registry refused the first ones (once per job).
    renewed: tokio::sync::OnceCell<Option<Credentials>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    realm: String,
    service: String,
    /// Sorted, space-separated.
    scope: String,
    /// The user name the token was asked for with ("" when anonymous); never the secret.
    account: String,
}

#[derive(Clone)]
struct CachedToken {
    header: HeaderValue,
    expires: Instant,
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CachedToken {{ [redacted], expires in {:?} }}",
            self.expires.saturating_duration_since(Instant::now())
        )
    }
}

impl CachedToken {
    fn fresh(&self) -> bool {
        Instant::now() < self.expires
    }
}

impl TokenCache {
    fn slot(&self, key: &TokenKey) -> Arc<tokio::sync::Mutex<Option<CachedToken>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key.clone()).or_default().clone()
    }
}

/// Who a registry's requests authenticate as, and how large an auth body may be.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// Where credentials come from; `None`: anonymous (a Bearer challenge still gets an anonymous token).
    pub source: Option<Auth>,
    /// `host[:port]` as image references write it (`docker.io`): the Docker config key.
    pub registry_host: String,
    /// The image the credentials are for, when one is (a credential provider plugin is asked about it).
    pub image: Option<ImageReference>,
    /// Cap on token and error bodies (`limits.max_manifest_bytes`).
    pub max_body_bytes: u64,
    pub tokens: Arc<TokenCache>,
}

impl AuthOptions {
    pub fn new(source: Option<Auth>, registry_host: impl Into<String>, max_body_bytes: u64) -> Self {
        AuthOptions { source, registry_host: registry_host.into(), image: None, max_body_bytes, tokens: Arc::default() }
    }

    /// For pulls (or listings) of `image`.
    pub fn for_image(mut self, image: &ImageReference) -> Self {
        self.image = Some(image.clone());
        self
    }

    /// What a cloud or plugin is asked for credentials for ([`super::cloud`]).
    fn cloud_target(&self) -> super::cloud::Target<'_> {
        super::cloud::Target {
            host: &self.registry_host,
            image: self.image.as_ref(),
            max_body_bytes: self.max_body_bytes,
        }
    }

    /// Credentials already in memory (a Kubernetes workload's pull secret) instead of a
    /// configured source; `None`: anonymous. They are never read again, and print as
    /// [`Credentials`] do: without the secret.
    pub fn with_credentials(
        credentials: impl Into<Option<Credentials>>,
        registry_host: impl Into<String>,
        max_body_bytes: u64,
    ) -> Self {
        let tokens = TokenCache {
            slots: Mutex::default(),
            credentials: tokio::sync::OnceCell::new_with(Some(credentials.into())),
            renewed: tokio::sync::OnceCell::new(),
        };
        AuthOptions {
            source: None,
            registry_host: registry_host.into(),
            image: None,
            max_body_bytes,
            tokens: Arc::new(tokens),
        }
    }
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions::new(None, String::new(), 4 << 20)
    }
}

/// One challenge of a `WWW-Authenticate` header: scheme (lowercase) and parameters (names lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Every challenge of every `WWW-Authenticate` header. Values that are not
/// UTF-8 or not challenges are skipped, never an error.
pub fn challenges(headers: &HeaderMap) -> Vec<Challenge> {
    let mut found = Vec::new();
    for value in headers.get_all(WWW_AUTHENTICATE) {
        if let Ok(text) = value.to_str() {
            found.extend(parse_challenges(text));
        }
        if found.len() >= MAX_CHALLENGES {
            found.truncate(MAX_CHALLENGES);
            break;
        }
    }
    found
}

/// Parse one header value: `Basic realm="x", Bearer realm="https://a/t",service="s",scope="repository:r:pull,push"`.
/// Quoted values may hold commas and escaped quotes; several challenges may share the value.
pub fn parse_challenges(text: &str) -> Vec<Challenge> {
    let chars: Vec<char> = text.chars().take(MAX_CHALLENGE_TEXT).collect();
    let mut at = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let skip = |at: &mut usize, set: &dyn Fn(char) -> bool| {
        while *at < chars.len() && set(chars[*at]) {
            *at += 1;
        }
    };
    let is_token = |c: char| !c.is_whitespace() && !matches!(c, ',' | '=' | '"');
    while at < chars.len() && out.len() < MAX_CHALLENGES {
        skip(&mut at, &|c| c.is_whitespace() || c == ',');
        let start = at;
        skip(&mut at, &is_token);
        if at == start {
            at += 1; // a stray '=' or '"': step over it
            continue;
        }
        let scheme: String = chars[start..at].iter().collect::<String>().to_ascii_lowercase();
        let mut challenge = Challenge { scheme, params: Vec::new() };
        loop {
            skip(&mut at, &|c| c.is_whitespace());
            let name_start = at;
            skip(&mut at, &is_token);
            let name_end = at;
            skip(&mut at, &|c| c.is_whitespace());
            if name_end == name_start || at >= chars.len() || chars[at] != '=' {
                // Not `name=`: the next challenge's scheme (or the end).
                at = name_start;
                break;
            }
            at += 1; // '='
            skip(&mut at, &|c| c.is_whitespace());
            let value = if at < chars.len() && chars[at] == '"' {
                at += 1;
                let mut value = String::new();
                while at < chars.len() && chars[at] != '"' {
                    if chars[at] == '\\' && at + 1 < chars.len() {
                        at += 1;
                    }
                    value.push(chars[at]);
                    at += 1;
                }
                at += 1; // closing quote
                value
            } else {
                let value_start = at;
                // token68 values may end in '='.
                skip(&mut at, &|c| !c.is_whitespace() && c != ',');
                chars[value_start..at].iter().collect()
            };
            if challenge.params.len() < MAX_PARAMS {
                let name: String = chars[name_start..name_end].iter().collect::<String>().to_ascii_lowercase();
                challenge.params.push((name, value));
            }
            skip(&mut at, &|c| c.is_whitespace());
            if at < chars.len() && chars[at] == ',' {
                at += 1;
                continue;
            }
            break;
        }
        out.push(challenge);
    }
    out
}

/// How a frontend wants to be authenticated, learnt from its first challenge.
#[derive(Debug, Clone)]
enum Method {
    Basic { realm: String },
    Bearer { realm: Url, service: String, scope: Vec<String> },
}

impl Method {
    /// Bearer before Basic (as containerd); challenges of other schemes are skipped.
    fn from_challenges(challenges: &[Challenge]) -> Option<Method> {
        let bearer = challenges.iter().filter(|c| c.scheme == "bearer").find_map(|c| {
            let realm = Url::parse(c.param("realm")?).ok().filter(|u| matches!(u.scheme(), "http" | "https"))?;
            let service = c.param("service").unwrap_or_default().to_string();
            let scope =
                c.param("scope").map(|s| s.split_whitespace().map(str::to_string).collect()).unwrap_or_default();
            Some(Method::Bearer { realm, service, scope })
        });
        bearer.or_else(|| {
            challenges
                .iter()
                .find(|c| c.scheme == "basic")
                .map(|c| Method::Basic { realm: c.param("realm").unwrap_or_default().to_string() })
        })
    }

    fn describe(&self, scope: &Scope) -> String {
        match self {
            // Not the word "Basic" alone: redaction hides the word after it.
            Method::Basic { realm } => format!("basic-auth realm {realm:?}"),
            Method::Bearer { realm, service, .. } => format!(
                "token realm {} (service {service:?}, scope {:?})",
                redact_url(realm),
                self.scopes(scope).join(" ")
            ),
        }
    }

    /// The scopes a token is asked for: the challenge's and the caller's, one per
    /// resource with the union of their actions (`…:push,pull` and `…:pull` ask
    /// once, for `…:pull,push`), sorted.
    fn scopes(&self, scope: &Scope) -> Vec<String> {
        let challenged = match self {
            Method::Bearer { scope: challenged, .. } => challenged.as_slice(),
            Method::Basic { .. } => &[],
        };
        merge_scopes(challenged.iter().map(String::as_str).chain([scope.as_str()]))
    }
}

/// Scopes (`type:name:actions`) with the actions of one resource merged; a
/// scope that is not of that form is kept as it is.
fn merge_scopes<'a>(scopes: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut resources: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> = Default::default();
    let mut other = std::collections::BTreeSet::new();
    for scope in scopes {
        match scope.rsplit_once(':') {
            Some((resource, actions)) if resource.contains(':') => {
                resources.entry(resource).or_default().extend(actions.split(',').filter(|a| !a.is_empty()));
            }
            _ => {
                other.insert(scope.to_string());
            }
        }
    }
    let merged = resources
        .into_iter()
        .map(|(resource, actions)| format!("{resource}:{}", actions.into_iter().collect::<Vec<_>>().join(",")));
    let mut all: Vec<String> = merged.chain(other).collect();
    all.sort();
    all
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The authentication state of one client (one frontend): credentials once
/// read, the frontend's challenge once seen, time spent getting tokens.
#[derive(Debug)]
pub struct Authenticator {
    options: AuthOptions,
    method: Mutex<Option<Method>>,
    spent: Mutex<Duration>,
}

impl Authenticator {
    pub fn new(options: AuthOptions) -> Self {
        Authenticator { options, method: Mutex::new(None), spent: Mutex::new(Duration::ZERO) }
    }

    /// Time spent getting tokens (the `auth` phase); `None` if none was asked for.
    pub fn time_spent(&self) -> Option<Duration> {
        let spent = *self.spent.lock().unwrap_or_else(|p| p.into_inner());
        (!spent.is_zero()).then_some(spent)
    }

    fn known_method(&self) -> Option<Method> {
        self.method.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The credentials, read on first use (a file, an environment variable, a Docker config or helper).
    pub async fn credentials(&self) -> Result<Option<&Credentials>, ProbeError> {
        if let Some(renewed) = self.options.tokens.renewed.get() {
            return Ok(renewed.as_ref());
        }
        let resolved = self.options.tokens.credentials.get_or_try_init(|| resolve_credentials(&self.options)).await?;
        Ok(resolved.as_ref())
    }

    /// Whether refused credentials are worth fetching again: a cloud's or a plugin's.
    pub fn renews_credentials(&self) -> bool {
        let source = self.options.source.as_ref();
        source.is_some_and(|s| super::cloud::resolve(s, &self.options.registry_host).is_some())
    }

    /// After the registry refused `refused`: a cloud's credentials fetched anew, once per
    /// job ([`super::cloud::renew`]); any other source's are what they were.
    async fn renewed_credentials<'a>(
        &'a self,
        refused: Option<&'a Credentials>,
    ) -> Result<Option<&'a Credentials>, ProbeError> {
        let Some(source) = self.options.source.as_ref().filter(|_| self.renews_credentials()) else {
            return Ok(refused);
        };
        let target = self.options.cloud_target();
        let renewed = self.options.tokens.renewed.get_or_try_init(|| super::cloud::renew(source, &target, refused));
        Ok(renewed.await?.as_ref())
    }

    /// The `Authorization` to send up front, once the frontend has challenged us before.
    pub async fn preemptive(
        &self,
        http: &Client,
        scope: &Scope,
        deadline: Duration,
    ) -> Result<Option<HeaderValue>, ProbeError> {
        match self.known_method() {
            None => Ok(None),
            Some(method) => self.header_for(&method, http, scope, None, deadline).await.map(Some),
        }
    }

    /// Answer a `401`: learn the challenge, and return the `Authorization` for the one retry.
    /// `used` is what the refused request carried (a cached token is then fetched anew).
    pub async fn answer(
        &self,
        headers: &HeaderMap,
        http: &Client,
        scope: &Scope,
        used: Option<&HeaderValue>,
        deadline: Duration,
    ) -> Result<Option<HeaderValue>, ProbeError> {
        let Some(method) = Method::from_challenges(&challenges(headers)) else { return Ok(None) };
        *self.method.lock().unwrap_or_else(|p| p.into_inner()) = Some(method.clone());
        self.header_for(&method, http, scope, used, deadline).await.map(Some)
    }

    /// `auth_failed` for a request refused again after authenticating.
    pub async fn refused(&self, status: StatusCode, body: &[u8], scope: &Scope) -> ProbeError {
        let how = self.known_method().map(|m| m.describe(scope)).unwrap_or_else(|| "credentials".to_string());
        let who = match self.credentials().await {
            Ok(Some(creds)) => creds.describe(),
            _ => "no credentials (anonymous)".to_string(),
        };
        let parsed = parse_error_body(body);
        let detail = match &parsed {
            Some((code, message)) if !message.is_empty() => format!(" ({code}: {message})"),
            Some((code, _)) => format!(" ({code})"),
            None => String::new(),
        };
        ProbeError::new(
            Reason::AuthFailed,
            format!("HTTP status {}{detail} after authenticating with {how}, using {who}", status.as_u16()),
        )
        .with_registry_error(parsed.map(|(c, _)| c))
        .with_status(status.as_u16())
    }

    async fn header_for(
        &self,
        method: &Method,
        http: &Client,
        scope: &Scope,
        used: Option<&HeaderValue>,
        deadline: Duration,
    ) -> Result<HeaderValue, ProbeError> {
        let mut credentials = self.credentials().await?;
        let basic = matches!(method, Method::Basic { .. });
        if basic && used.is_some() && used == credentials.and_then(Credentials::basic_header).as_ref() {
            // The registry refused these Basic credentials: a cloud's are fetched anew once.
            credentials = self.renewed_credentials(credentials).await?;
        }
        match method {
            Method::Basic { realm } => match credentials.and_then(Credentials::basic_header) {
                Some(header) => Ok(header),
                None => Err(ProbeError::new(
                    Reason::AuthFailed,
                    format!(
                        "the registry asks for basic-auth credentials (realm {realm:?}) and {}",
                        match credentials {
                            Some(_) => "a Docker identity token cannot be sent as Basic credentials".to_string(),
                            None => self.no_credentials_hint(),
                        }
                    ),
                )
                .with_status(401)),
            },
            Method::Bearer { realm, service, .. } => {
                let key = TokenKey {
                    realm: realm.to_string(),
                    service: service.clone(),
                    scope: method.scopes(scope).join(" "),
                    account: credentials.map(|c| c.username.clone()).unwrap_or_default(),
                };
                let slot = self.options.tokens.slot(&key);
                // One fetch at a time per key: layers refused together share the new token.
                let mut cached = slot.lock().await;
                if let Some(token) = cached.as_ref()
                    && token.fresh()
                    && used != Some(&token.header)
                {
                    tracing::debug!(realm = %redact_url(realm), service, scope = key.scope, "reusing a cached registry token");
                    return Ok(token.header.clone());
                }
                let started = Instant::now();
                let mut fetched = self.fetch_token(http, method, scope, credentials, deadline).await;
                if fetched.as_ref().is_err_and(|e| e.status == Some(401)) {
                    // The token endpoint refused the credentials: a cloud's are fetched anew once.
                    let renewed = self.renewed_credentials(credentials).await?;
                    if renewed != credentials {
                        fetched = self.fetch_token(http, method, scope, renewed, deadline).await;
                    }
                }
                *self.spent.lock().unwrap_or_else(|p| p.into_inner()) += started.elapsed();
                let token = fetched?;
                let header = token.header.clone();
                *cached = Some(token);
                Ok(header)
            }
        }
    }

    fn no_credentials_hint(&self) -> String {
        match &self.options.source {
            None => format!("none are configured for {} (`auth:` in probes.yaml)", self.options.registry_host),
            Some(Auth::DockerConfig(path)) => format!(
                "the Docker config ({}) has none for {}",
                path.clone()
                    .or_else(super::docker_config::default_path)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "no path".into()),
                self.options.registry_host
            ),
            Some(Auth::Basic { .. }) => "none are configured".to_string(),
            Some(source @ (Auth::Cloud(_) | Auth::Auto)) => {
                super::cloud::no_credentials_hint(source, &self.options.registry_host)
            }
        }
    }

    async fn fetch_token(
        &self,
        http: &Client,
        method: &Method,
        scope: &Scope,
        credentials: Option<&Credentials>,
        deadline: Duration,
    ) -> Result<CachedToken, ProbeError> {
        let Method::Bearer { realm, service, .. } = method else {
            return Err(ProbeError::new(Reason::AuthFailed, "no token realm"));
        };
        let scopes = method.scopes(scope);
        let shown = method.describe(scope);
        let what = format!("token endpoint {}", redact_url(realm));
        if credentials.is_some() && realm.scheme() == "http" && !is_loopback(realm) {
            return Err(ProbeError::new(
                Reason::AuthFailed,
                format!("{shown}: refusing to send credentials to a token endpoint over plain HTTP"),
            ));
        }
        let request = match credentials.map(|c| (c, &c.secret)) {
            Some((_, Secret::IdentityToken(token))) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", token)
                    .append_pair("service", service)
                    .append_pair("client_id", "pullprobe")
                    .append_pair("access_type", "offline");
                for s in &scopes {
                    form.append_pair("scope", s);
                }
                http.post(realm.clone()).header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(form.finish())
            }
            other => {
                let mut url = realm.clone();
                {
                    let mut query = url.query_pairs_mut();
                    if !service.is_empty() {
                        query.append_pair("service", service);
                    }
                    for s in &scopes {
                        query.append_pair("scope", s);
                    }
                    if let Some((creds, _)) = other.filter(|(c, _)| !c.username.is_empty()) {
                        query.append_pair("account", &creds.username);
                    }
                }
                let mut request = http.get(url);
                if let Some(header) = other.and_then(|(c, _)| c.basic_header()) {
                    request = request.header(AUTHORIZATION, header);
                }
                request
            }
        };
        tracing::debug!(realm = %redact_url(realm), service, scope = scopes.join(" "), user = credentials.map(|c| c.username.as_str()).unwrap_or(""), "requesting a registry token");
        let response = match tokio::time::timeout(deadline, request.send()).await {
            Ok(sent) => sent.map_err(|e| classify_transport(&e, &what))?,
            Err(_) => {
                return Err(ProbeError::new(
                    Reason::Timeout,
                    format!("{what}: no response headers within {deadline:?} ({shown})"),
                ));
            }
        };
        let status = response.status();
        let retry_after = crate::registry::errors::retry_after(response.headers());
        let body = read_body(response, self.options.max_body_bytes, &what).await?;
        if !status.is_success() {
            let who = credentials.map(Credentials::describe).unwrap_or_else(|| "no credentials (anonymous)".into());
            let reason = match status.as_u16() {
                401 | 403 => Reason::AuthFailed,
                429 => Reason::RateLimited,
                _ => Reason::HttpStatus,
            };
            let mut err = ProbeError::new(reason, format!("{shown} answered HTTP status {} to {who}", status.as_u16()))
                .with_status(status.as_u16());
            err.retry_after = retry_after;
            return Err(err);
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            ProbeError::new(Reason::AuthFailed, format!("{shown} answered HTTP 200 with a body that is not a token"))
        })?;
        let token = parsed.token.filter(|t| !t.is_empty()).or(parsed.access_token.filter(|t| !t.is_empty()));
        let Some(token) = token else {
            return Err(ProbeError::new(
                Reason::AuthFailed,
                format!("{shown} answered HTTP 200 without `token` or `access_token`"),
            ));
        };
        let mut header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ProbeError::new(Reason::AuthFailed, format!("{shown} sent a token that is not a valid header value"))
        })?;
        header.set_sensitive(true);
        let lifetime = parsed.expires_in.map(Duration::from_secs).unwrap_or(DEFAULT_TOKEN_LIFETIME);
        // Renew a little early, so a token does not expire between the check and the request.
        let margin = (lifetime / 10).min(Duration::from_secs(10));
        tracing::debug!(realm = %redact_url(realm), service, lifetime_seconds = lifetime.as_secs(), "registry token received");
        Ok(CachedToken { header, expires: Instant::now() + lifetime - margin })
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A token body, at most `max_bytes`.
async fn read_body(mut response: Response, max_bytes: u64, what: &str) -> Result<BytesMut, ProbeError> {
    let too_large =
        || ProbeError::new(Reason::TooLarge, format!("{what}: body is over the limit of {max_bytes} bytes"));
    if response.content_length().is_some_and(|len| len > max_bytes) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify_transport(&e, what))? {
        if body.len() as u64 + chunk.len() as u64 > max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn resolve_credentials(options: &AuthOptions) -> Result<Option<Credentials>, ProbeError> {
    match &options.source {
        None => Ok(None),
        Some(Auth::Basic { username, password }) => {
            let password = read_password(password)?;
            Ok(Some(Credentials::new(username.clone(), Secret::Password(password))))
        }
        Some(Auth::DockerConfig(path)) => {
            super::docker_config::lookup(path.as_deref(), &options.registry_host).await.map_err(|e| {
                let host = &options.registry_host;
                e.context(format_args!("credentials for {host}"))
            })
        }
        Some(source @ (Auth::Cloud(_) | Auth::Auto)) => {
            super::cloud::credentials(source, &options.cloud_target()).await
        }
    }
}

/// A password from its file (one trailing newline dropped) or environment variable.
fn read_password(source: &PasswordSource) -> Result<String, ProbeError> {
    match source {
        PasswordSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ProbeError::new(Reason::AuthFailed, format!("auth password_file {}: {e}", path.display()))
            })?;
            let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
            Ok(text.to_string())
        }
        PasswordSource::Env(name) => std::env::var(name).map_err(|_| {
            ProbeError::new(Reason::AuthFailed, format!("auth password_env {name}: the variable is not set"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[tokio::test]
    async fn in_memory_credentials_are_used_as_given_and_never_shown() {
        let credentials = Credentials::new("puller", Secret::Password("hunter2".into()));
        let options = AuthOptions::with_credentials(credentials.clone(), "r.example.org", 1 << 20);
        assert!(!format!("{options:?}").contains("hunter2"), "{options:?}");
        let authenticator = Authenticator::new(options);
        assert_eq!(authenticator.credentials().await.unwrap(), Some(&credentials));
        let anonymous = Authenticator::new(AuthOptions::with_credentials(None, "r.example.org", 1 << 20));
        assert_eq!(anonymous.credentials().await.unwrap(), None);
    }

    #[test]
    fn docker_hub_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(
            params(&c[0]),
            [
                ("realm", "https://auth.docker.io/token"),
                ("service", "registry.docker.io"),
                ("scope", "repository:library/alpine:pull")
            ]
        );
    }

    #[test]
    fn quoted_commas_spaces_escapes_and_several_challenges() {
        let c = parse_challenges(
            "Basic realm=\"Registry, \\\"Realm\\\"\" , Bearer  realm = \"https://a.example.org/t?x=1,2\", \
             service=reg, scope=\"repository:a:pull,push repository:b:pull\", error=\"insufficient_scope\",Negotiate abc==",
        );
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(params(&c[0]), [("realm", "Registry, \"Realm\"")]);
        assert_eq!(c[1].param("realm"), Some("https://a.example.org/t?x=1,2"));
        assert_eq!(c[1].param("service"), Some("reg"));
        assert_eq!(c[1].param("scope"), Some("repository:a:pull,push repository:b:pull"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        assert_eq!(c[2].scheme, "negotiate");
        let method = Method::from_challenges(&c).unwrap();
        let Method::Bearer { scope, .. } = &method else { panic!("bearer is preferred: {method:?}") };
        assert_eq!(scope, &["repository:a:pull,push", "repository:b:pull"]);
        // Our `pull` of `a` joins the challenge's `pull,push` of `a`: one scope per resource.
        assert_eq!(method.scopes(&Scope::pull("a")), ["repository:a:pull,push", "repository:b:pull"]);
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            ",,,",
            "=",
            "\"",
            "Bearer",
            "Bearer realm",
            "Bearer realm=",
            "Bearer realm=\"unterminated",
            "a=b=c, ,= \"",
        ] {
            let _ = parse_challenges(text);
        }
        assert!(Method::from_challenges(&parse_challenges("Bearer service=x")).is_none(), "a realm is required");
        assert!(Method::from_challenges(&parse_challenges("Bearer realm=\"ftp://x\"")).is_none());
        let huge = format!("Bearer realm=\"https://x/\",{}", "a=b,".repeat(100_000));
        let parsed = parse_challenges(&huge);
        assert!(parsed.len() <= MAX_CHALLENGES && parsed[0].params.len() <= MAX_PARAMS);
    }

    #[test]
    fn secrets_do_not_print() {
        let creds = Credentials::new("alice", Secret::Password("hunter2".into()));
        assert!(!format!("{creds:?}").contains("hunter2"));
        let header = creds.basic_header().unwrap();
        assert!(header.is_sensitive());
        assert!(!format!("{header:?}").contains("aHVudGVyMg"), "{header:?}");
        let token = CachedToken { header, expires: Instant::now() };
        assert!(!format!("{token:?}").contains("Basic"));
    }

    #[test]
    fn scopes() {
        assert_eq!(Scope::pull("team/app").as_str(), "repository:team/app:pull");
        assert_eq!(Scope::push_pull("team/app").as_str(), "repository:team/app:pull,push");
        let merged = merge_scopes(
            ["repository:team/app:push,pull", "repository:team/app:pull", "repository:team/app:delete", "odd"]
                .into_iter(),
        );
        assert_eq!(merged, ["odd", "repository:team/app:delete,pull,push"]);
        let two = merge_scopes(["repository:a:pull", "registry:catalog:*", "repository:b:pull"].into_iter());
        assert_eq!(two, ["registry:catalog:*", "repository:a:pull", "repository:b:pull"]);
    }

    #[test]
    fn passwords_from_files_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p");
        std::fs::write(&file, "s3cret\r\n").unwrap();
        assert_eq!(read_password(&PasswordSource::File(file)).unwrap(), "s3cret");
        let err = read_password(&PasswordSource::Env("PULLPROBE_TEST_SURELY_UNSET_VAR".into())).unwrap_err();
        assert_eq!(err.reason, Reason::AuthFailed);
        let err = read_password(&PasswordSource::File(dir.path().join("absent"))).unwrap_err();
        assert!(err.message.contains("password_file"), "{}", err.message);
    }
}
