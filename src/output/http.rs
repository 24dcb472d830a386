//! The HTTP side of delivering outputs (Alertmanager, Pushgateway): one client
//! per endpoint with its CA, client certificate and credentials from
//! probes.yaml, and requests retried with backoff within a fixed budget.
//!
//! Secrets (passwords, tokens) are read when the client is built and only ever
//! go into the `Authorization` header; errors name the endpoint by its
//! redacted URL.

use std::fmt;
use std::time::{Duration, Instant};

use url::Url;

use crate::config::{EndpointAccess, EndpointAuth, PasswordSource};
use crate::redact::{redact_text, redact_url};

/// How long one request may take, and how long one delivery may keep retrying.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Per request: connect, send and read the answer.
    pub request_timeout: Duration,
    /// No new attempt starts after this much time since the first.
    pub budget: Duration,
    /// Wait after the first failed attempt; doubled after each further one.
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            request_timeout: Duration::from_secs(10),
            budget: Duration::from_secs(30),
            first_backoff: Duration::from_millis(500),
        }
    }
}

/// Why a delivery failed, for the log line and the summary on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    /// The endpoint, redacted (`http://am-0:9093/`).
    pub endpoint: String,
    pub message: String,
    pub attempts: u32,
    /// Whether another attempt could succeed (not for a 4xx answer other than 408/429).
    pub retryable: bool,
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (after {} attempt(s))", self.endpoint, self.message, self.attempts)
    }
}

impl std::error::Error for DeliveryError {}

/// A client for one endpoint (an Alertmanager replica, a Pushgateway).
#[derive(Clone)]
pub struct EndpointClient {
    pub base: Url,
    http: reqwest::Client,
    authorization: Option<String>,
    policy: RetryPolicy,
}

impl fmt::Debug for EndpointClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointClient").field("base", &redact_url(&self.base)).finish_non_exhaustive()
    }
}

impl EndpointClient {
    /// A client for `base` with the TLS and credentials of `access`. Fails if a
    /// CA, certificate or secret cannot be read: a configuration problem.
    pub fn new(base: &Url, access: &EndpointAccess, policy: RetryPolicy) -> Result<Self, DeliveryError> {
        let fail =
            |message: String| DeliveryError { endpoint: redact_url(base), message, attempts: 0, retryable: false };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("pullprobe/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(policy.request_timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &access.tls.ca_file {
            let pem = std::fs::read(path).map_err(|e| fail(format!("tls ca_file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| fail(format!("tls ca_file {}: {e}", path.display())))?;
            builder = builder.tls_certs_merge(certs);
        }
        if let (Some(cert), Some(key)) = (&access.tls.client_cert, &access.tls.client_key) {
            let mut pem = std::fs::read(cert).map_err(|e| fail(format!("tls client_cert {}: {e}", cert.display())))?;
            pem.push(b'\n');
            pem.extend(std::fs::read(key).map_err(|e| fail(format!("tls client_key {}: {e}", key.display())))?);
            let identity =
                reqwest::Identity::from_pem(&pem).map_err(|e| fail(format!("tls client certificate: {e}")))?;
            builder = builder.identity(identity);
        }
        let authorization = match &access.auth {
            None => None,
            Some(EndpointAuth::Basic { username, password }) => {
                let password = read_secret(password).map_err(fail)?;
                use base64::Engine as _;
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
                Some(format!("Basic {token}"))
            }
            Some(EndpointAuth::Bearer(token)) => Some(format!("Bearer {}", read_secret(token).map_err(fail)?)),
        };
        let http = builder.build().map_err(|e| fail(format!("cannot build the HTTP client: {e}")))?;
        Ok(EndpointClient { base: base.clone(), http, authorization, policy })
    }

    /// The same endpoint with another retry policy (a read-back that must not hold up delivery).
    pub fn with_policy(&self, policy: RetryPolicy) -> Self {
        EndpointClient { policy, ..self.clone() }
    }

    /// The endpoint as shown in logs.
    pub fn name(&self) -> String {
        redact_url(&self.base)
    }

    /// `base` joined with `path` (which starts with `/`), keeping a path prefix of `base`.
    pub fn url(&self, path_and_query: &str) -> Result<Url, DeliveryError> {
        let base = self.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path_and_query}")).map_err(|e| self.error(format!("bad URL: {e}"), false))
    }

    fn error(&self, message: String, retryable: bool) -> DeliveryError {
        DeliveryError { endpoint: self.name(), message: redact_text(&message), attempts: 1, retryable }
    }

    /// One request, no retry; the body of a 2xx answer, else an error.
    pub async fn send_once(
        &self,
        method: reqwest::Method,
        url: &Url,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<bytes::Bytes, DeliveryError> {
        let mut request = self.http.request(method, url.clone()).timeout(self.policy.request_timeout);
        if let Some(value) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type).body(bytes);
        }
        let response = request.send().await.map_err(|e| self.error(error_chain(&e), true))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.error(error_chain(&e), true))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_string();
            let retryable = !status.is_client_error() || matches!(status.as_u16(), 408 | 429);
            return Err(self.error(format!("HTTP {status}: {text}"), retryable));
        }
        Ok(body)
    }

    /// [`Self::send_once`] retried with backoff until it succeeds or the budget is spent.
    /// A 4xx answer other than 408/429 is not retried: sending it again cannot help.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &Url,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<bytes::Bytes, DeliveryError> {
        let started = Instant::now();
        let mut backoff = self.policy.first_backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.send_once(method.clone(), url, body.clone()).await {
                Ok(bytes) => return Ok(bytes),
                Err(mut e) => {
                    e.attempts = attempts;
                    if !e.retryable || started.elapsed() + backoff >= self.policy.budget {
                        return Err(e);
                    }
                    tracing::debug!(endpoint = %e.endpoint, attempt = attempts, error = %e.message, "retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
    }
}

/// A password or token from its file (trailing newline removed) or environment variable.
fn read_secret(source: &PasswordSource) -> Result<String, String> {
    match source {
        PasswordSource::File(path) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
        PasswordSource::Env(name) => {
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set or not UTF-8"))
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}
