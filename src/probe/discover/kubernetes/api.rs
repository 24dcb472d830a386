//! The API server client of discovery: where the API server is (in-cluster
//! defaults or `api_server:`), the bearer token (read anew each run), TLS with
//! the cluster CA, and `GET` of one JSON object with a size cap and the run's
//! deadline. A refused request is an [`ApiError`] that keeps the HTTP status and
//! the API's own `Status.message`; what it means is decided by the caller, who
//! knows what was asked for.
//!
//! The token never leaves this file: it is sent as a sensitive header and no
//! error or log line quotes it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Client, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::config::KubernetesDiscovery;
use crate::reason::{ProbeError, Reason};
use crate::redact::redact_text;
use crate::registry::errors::{classify_transport, error_chain};
use crate::registry::tls::{self, TlsSettings};

/// Where a Pod finds its service account.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Longest token file read.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;
/// Longest `Status.message` quoted in an error.
const MAX_MESSAGE_CHARS: usize = 500;
/// Longest wait for a connection, within the run's deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for one discovery run.
pub struct ApiClient {
    http: Client,
    base: Url,
    token: Option<HeaderValue>,
    /// Where the token came from, for a `401`.
    token_file: Option<PathBuf>,
    max_body_bytes: u64,
    deadline: Instant,
}

/// Why a `GET` did not yield its object.
#[derive(Debug)]
pub enum ApiError {
    /// The API server answered with this status; `message` is its `Status.message` (redacted, shortened).
    Refused { status: StatusCode, message: Option<String> },
    /// The body is larger than the cap.
    TooLarge { limit: u64 },
    /// No answer, a broken connection, the deadline, or a body that is not the expected JSON.
    Failed(String),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Refused { status, message: Some(m) } => write!(f, "HTTP {status}: {m}"),
            ApiError::Refused { status, message: None } => write!(f, "HTTP {status}"),
            ApiError::TooLarge { limit } => write!(f, "the response is larger than {limit} bytes"),
            ApiError::Failed(why) => f.write_str(why),
        }
    }
}

impl ApiClient {
    /// The API server of `rule` (or the in-cluster one), with its token read now.
    pub fn new(rule: &KubernetesDiscovery, max_body_bytes: u64, deadline: Instant) -> Result<ApiClient, ProbeError> {
        let (base, token_file, ca_file) = match &rule.api_server {
            Some(url) => (url.clone(), rule.token_file.clone(), rule.ca_file.clone()),
            None => {
                let dir = Path::new(SERVICE_ACCOUNT_DIR);
                (
                    in_cluster_url()?,
                    Some(rule.token_file.clone().unwrap_or_else(|| dir.join("token"))),
                    Some(rule.ca_file.clone().unwrap_or_else(|| dir.join("ca.crt"))),
                )
            }
        };
        let token = token_file.as_deref().map(read_token).transpose()?;
        let (tls_config, _) = tls::client_config(&TlsSettings {
            insecure: false,
            ca_file: ca_file.as_deref(),
            extra_ca_files: &[],
            client_cert: None,
            client_key: None,
        })
        .map_err(|e| discovery_error(format!("the API server's TLS settings: {}", e.message)))?;
        let http = Client::builder()
            .user_agent(concat!("pullprobe/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .use_preconfigured_tls(tls_config)
            .build()
            .map_err(|e| discovery_error(format!("cannot build the API client: {}", error_chain(&e))))?;
        Ok(ApiClient { http, base, token, token_file, max_body_bytes, deadline })
    }

    /// The API server's URL as shown in errors.
    pub fn server(&self) -> String {
        crate::redact::redact_url(&self.base)
    }

    /// The file the token came from, if any.
    pub fn token_file(&self) -> Option<&Path> {
        self.token_file.as_deref()
    }

    /// `GET path?query` and its JSON body as `T`, at most `max_body_bytes` of it.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, ApiError> {
        self.get_limited(path, query, self.max_body_bytes).await
    }

    /// [`ApiClient::get`] with a smaller cap on the body (a Secret).
    pub async fn get_limited<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        limit: u64,
    ) -> Result<T, ApiError> {
        let limit = limit.min(self.max_body_bytes);
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ApiError::Failed("the deadline passed before the request".into()));
        }
        let mut request = self.http.get(url).header(ACCEPT, "application/json").timeout(remaining);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        let mut response = request.send().await.map_err(|e| ApiError::Failed(transport_failure(&e, remaining)))?;
        let status = response.status();
        if !status.is_success() {
            // A Status object is small; a proxy's error page is cut short.
            let body = read_body(&mut response, limit.min(64 * 1024)).await.unwrap_or_default();
            let message = serde_json::from_slice::<super::objects::Status>(&body)
                .ok()
                .and_then(|s| s.message.or(s.reason))
                .filter(|m| !m.trim().is_empty())
                .map(|m| shorten(&redact_text(m.trim())));
            return Err(ApiError::Refused { status, message });
        }
        let body = read_body(&mut response, limit).await?;
        serde_json::from_slice(&body).map_err(|e| {
            // serde_json names a line and column and what it expected, never the input.
            ApiError::Failed(format!("the response is not the JSON object expected ({e})"))
        })
    }
}

/// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, as client-go's in-cluster config builds it.
fn in_cluster_url() -> Result<Url, ProbeError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let (Some(host), Some(port)) = (var("KUBERNETES_SERVICE_HOST"), var("KUBERNETES_SERVICE_PORT")) else {
        return Err(discovery_error(
            "not running in a Kubernetes cluster (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set): \
             set `api_server:` on the probe (and `token_file:`, `ca_file:` as needed)"
                .to_string(),
        ));
    };
    let host = host.trim();
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    Url::parse(&format!("https://{host}:{}", port.trim())).map_err(|e| {
        discovery_error(format!("KUBERNETES_SERVICE_HOST {host:?} and KUBERNETES_SERVICE_PORT {port:?}: {e}"))
    })
}

/// The bearer token in `path`, surrounding whitespace dropped, as a sensitive header value.
fn read_token(path: &Path) -> Result<HeaderValue, ProbeError> {
    use std::io::Read;
    let fail = |why: String| discovery_error(format!("token_file {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_BYTES + 1).read_to_end(&mut bytes).map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_TOKEN_BYTES {
        return Err(fail(format!("larger than {MAX_TOKEN_BYTES} bytes")));
    }
    let token = String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(fail("it is empty".into()));
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| fail("it holds characters a token cannot have".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// At most `limit` bytes of the body; more is [`ApiError::TooLarge`].
async fn read_body(response: &mut reqwest::Response, limit: u64) -> Result<Vec<u8>, ApiError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() as u64 + chunk.len() as u64 > limit {
                    return Err(ApiError::TooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(ApiError::Failed(format!("reading the response: {}", redact_text(&error_chain(&e))))),
        }
    }
}

fn transport_failure(err: &reqwest::Error, remaining: Duration) -> String {
    if err.is_timeout() {
        return format!("no complete answer within the {remaining:.1?} left of the discovery's timeout");
    }
    // The reason code of the transport is not ours to keep (discovery failed); its words are.
    classify_transport(err, "request failed").message
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_MESSAGE_CHARS {
        return text.to_string();
    }
    let mut short: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    short.push('…');
    short
}

pub fn discovery_error(message: String) -> ProbeError {
    ProbeError::new(Reason::DiscoveryFailed, message)
}
