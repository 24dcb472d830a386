//! Registry authentication the way container runtimes do it: every request
//! goes out anonymously first; a `401` with a `WWW-Authenticate` challenge
//! ([`crate::registry::challenge`]) is answered once — HTTP Basic with the
//! configured credentials, or a Bearer token ([`crate::registry::token`]) —
//! and the request is retried once. After the first challenge, requests to the
//! same frontend carry the credentials or a cached token up front, so one token
//! serves every layer.
//!
//! Tokens are cached per (realm, service, scope, account) until they expire; a
//! token that a request is refused with (`401`: expired, or stale on arrival)
//! is fetched anew once for that request. Credentials come from probes.yaml
//! (`username` + `password_file` or `password_env`,
//! [`crate::registry::credentials`]), a Docker config
//! ([`crate::registry::docker_config`]), or a cloud's workload identity or a
//! credential provider plugin ([`crate::registry::cloud`]: fetched anew once
//! when the registry refuses them), and are read only when a challenge asks
//! for them.
//!
//! Secrets never leave in text: credentials and cached tokens print as
//! `[redacted]`, header values are marked sensitive, and a failure names the
//! realm, service, scope, user and HTTP status — never a password or a token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode};

use crate::config::Auth;
use crate::reason::{ProbeError, Reason};
use crate::redact::redact_url;
use crate::reference::ImageReference;
use crate::registry::challenge::{Method, challenges};
use crate::registry::cloud;
use crate::registry::credentials::{Credentials, Secret, read_password};
use crate::registry::docker_config;
use crate::registry::errors::parse_error_body;
use crate::registry::scope::Scope;
use crate::registry::token::{self, CachedToken, TokenKey};

/// What every client of one job shares (all its frontends, platforms and retries):
/// the credentials, read once, and the tokens.
#[derive(Debug, Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<Option<CachedToken>>>>>,
    credentials: tokio::sync::OnceCell<Option<Credentials>>,
    /// Cloud credentials fetched again after the registry refused the first ones (once per job).
    renewed: tokio::sync::OnceCell<Option<Credentials>>,
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

    /// What a cloud or plugin is asked for credentials for ([`cloud`]).
    fn cloud_target(&self) -> cloud::Target<'_> {
        cloud::Target { host: &self.registry_host, image: self.image.as_ref(), max_body_bytes: self.max_body_bytes }
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
        source.is_some_and(|s| cloud::resolve(s, &self.options.registry_host).is_some())
    }

    /// After the registry refused `refused`: a cloud's credentials fetched anew, once per
    /// job ([`cloud::renew`]); any other source's are what they were.
    async fn renewed_credentials<'a>(
        &'a self,
        refused: Option<&'a Credentials>,
    ) -> Result<Option<&'a Credentials>, ProbeError> {
        let Some(source) = self.options.source.as_ref().filter(|_| self.renews_credentials()) else {
            return Ok(refused);
        };
        let target = self.options.cloud_target();
        let renewed = self.options.tokens.renewed.get_or_try_init(|| cloud::renew(source, &target, refused));
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
                    account: credentials.map(|c| c.username().to_string()).unwrap_or_default(),
                };
                let slot = self.options.tokens.slot(&key);
                // One fetch at a time per key: layers refused together share the new token.
                let mut cached = slot.lock().await;
                if let Some(token) = cached.as_ref()
                    && token.fresh()
                    && used != Some(token.header())
                {
                    tracing::debug!(realm = %redact_url(realm), service, scope = key.scope, "reusing a cached registry token");
                    return Ok(token.header().clone());
                }
                let started = Instant::now();
                let max_body = self.options.max_body_bytes;
                let mut fetched = token::fetch(http, method, scope, credentials, deadline, max_body).await;
                if fetched.as_ref().is_err_and(|e| e.status == Some(401)) {
                    // The token endpoint refused the credentials: a cloud's are fetched anew once.
                    let renewed = self.renewed_credentials(credentials).await?;
                    if renewed != credentials {
                        fetched = token::fetch(http, method, scope, renewed, deadline, max_body).await;
                    }
                }
                *self.spent.lock().unwrap_or_else(|p| p.into_inner()) += started.elapsed();
                let token = fetched?;
                let header = token.header().clone();
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
                    .or_else(docker_config::default_path)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "no path".into()),
                self.options.registry_host
            ),
            Some(Auth::Basic { .. }) => "none are configured".to_string(),
            Some(source @ (Auth::Cloud(_) | Auth::Auto)) => {
                cloud::no_credentials_hint(source, &self.options.registry_host)
            }
        }
    }
}

async fn resolve_credentials(options: &AuthOptions) -> Result<Option<Credentials>, ProbeError> {
    match &options.source {
        None => Ok(None),
        Some(Auth::Basic { username, password }) => {
            let password = read_password(password)?;
            Ok(Some(Credentials::new(username.clone(), Secret::Password(password))))
        }
        Some(Auth::DockerConfig(path)) => {
            docker_config::lookup(path.as_deref(), &options.registry_host).await.map_err(|e| {
                let host = &options.registry_host;
                e.context(format_args!("credentials for {host}"))
            })
        }
        Some(source @ (Auth::Cloud(_) | Auth::Auto)) => cloud::credentials(source, &options.cloud_target()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
