//! The HTTP client under the registry client: TLS settings, address pinning,
//! redirect limits, connection timings (measured by
//! [`crate::registry::connect_timing`]), and the one way a request is sent:
//! anonymously first, answering a challenge through [`crate::registry::auth`].
//! A request that gets no answer becomes a reason code in
//! [`crate::registry::errors`].

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderMap};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::config::IpFamily;
use crate::reason::{ProbeError, Reason};
use crate::registry::auth::{AuthOptions, Authenticator};
use crate::registry::connect_timing::{self, ConnectTimings, TimedConnectLayer, TimingSlot};
use crate::registry::errors::{DnsFailure, classify_transport, error_chain};
use crate::registry::scope::Scope;
use crate::registry::tls::{self, TlsObservations, TlsSettings};

/// Longest wait for response headers when no deadline is given (`response_timeout`).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach one frontend of a registry.
#[derive(Debug, Clone, Default)]
pub struct TransportOptions {
    /// Skip certificate verification (`--insecure`).
    pub insecure: bool,
    /// Extra CA certificates (PEM) trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// More such files (a mirror's `ca` list in containerd's hosts.toml).
    pub extra_ca_files: Vec<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Connect this host name to this address instead of resolving it; Host and SNI stay the name.
    pub pin: Option<(String, SocketAddr)>,
    pub max_redirects: usize,
    pub connect_timeout: Option<Duration>,
    /// Longest silence while reading a response before it counts as stalled.
    pub read_timeout: Option<Duration>,
    /// Longest wait from sending a request to its complete response headers (the
    /// first-byte deadline: a server that trickles its headers cannot hold a pull).
    pub response_timeout: Option<Duration>,
    /// Credentials and the token cache; `None`: anonymous (Bearer challenges still get anonymous tokens).
    pub auth: Option<AuthOptions>,
    /// Only addresses of this family are connected to (`ip_family:`); a name
    /// with none of them fails the lookup (`dns_error`). A pinned address is used as given.
    pub ip_family: IpFamily,
}

/// The first-byte deadline of one pull: a third of its timeout, between 2 s and 30 s.
pub fn response_deadline(timeout: Duration) -> Duration {
    (timeout / 3).clamp(Duration::from_secs(2), DEFAULT_RESPONSE_TIMEOUT)
}

/// A reqwest client plus the timings of the connections it makes, what its TLS
/// handshakes saw, and the authentication state of the registry it talks to.
#[derive(Clone)]
pub struct Transport {
    pub http: reqwest::Client,
    timings: Arc<TimingSlot>,
    tls: Arc<TlsObservations>,
    auth: Arc<Authenticator>,
    response_timeout: Duration,
    /// The last `RateLimit-Remaining` the registry sent (`u64::MAX`: none yet).
    ratelimit_remaining: Arc<AtomicU64>,
}

impl Transport {
    pub fn new(options: &TransportOptions) -> Result<Self, ProbeError> {
        let timings = Arc::new(TimingSlot::default());
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("pullprobe/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(options.max_redirects))
            .dns_resolver(Arc::new(TimedResolver { slot: timings.clone(), family: options.ip_family }))
            .connector_layer(TimedConnectLayer { slot: timings.clone() })
            .tls_info(true)
            .pool_max_idle_per_host(8);
        if let Some(t) = options.connect_timeout {
            builder = builder.connect_timeout(t);
        }
        if let Some(t) = options.read_timeout {
            builder = builder.read_timeout(t);
        }
        if let Some((host, addr)) = &options.pin {
            builder = builder.resolve(host, *addr);
        }
        let (mut tls_config, tls) = tls::client_config(&TlsSettings {
            insecure: options.insecure,
            ca_file: options.ca_file.as_deref(),
            extra_ca_files: &options.extra_ca_files,
            client_cert: options.client_cert.as_deref(),
            client_key: options.client_key.as_deref(),
        })?;
        tls_config.resumption = connect_timing::timed_resumption();
        builder = builder.use_preconfigured_tls(tls_config);
        let http = builder
            .build()
            .map_err(|e| ProbeError::new(Reason::TlsError, format!("cannot build HTTP client: {}", error_chain(&e))))?;
        Ok(Transport {
            http,
            timings,
            tls,
            auth: Arc::new(Authenticator::new(options.auth.clone().unwrap_or_default())),
            response_timeout: options.response_timeout.unwrap_or(DEFAULT_RESPONSE_TIMEOUT),
            ratelimit_remaining: Arc::new(AtomicU64::new(u64::MAX)),
        })
    }

    /// DNS, TCP connect and TLS handshake of the first connection this client opened.
    pub fn timings(&self) -> ConnectTimings {
        self.timings.timings()
    }

    /// Seconds spent getting registry tokens, if any were asked for.
    pub fn auth_time(&self) -> Option<Duration> {
        self.auth.time_spent()
    }

    /// The last `RateLimit-Remaining` a response carried (Docker Hub: `76;w=21600` is 76).
    pub fn ratelimit_remaining(&self) -> Option<u64> {
        let value = self.ratelimit_remaining.load(Ordering::Relaxed);
        (value != u64::MAX).then_some(value)
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// Send a request the way container runtimes do: anonymously, or with what
    /// an earlier challenge asked for; on `401` with a challenge, authenticate
    /// for `scope` and retry once. `build` makes the request (again for the retry).
    /// A request refused again is `auth_failed`, naming the realm, service and status.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
        scope: &Scope,
        what: &str,
    ) -> Result<Response, ProbeError> {
        let deadline = self.response_timeout;
        let mut used = self.auth.preemptive(&self.http, scope, deadline).await.map_err(|e| e.context(what))?;
        // A refused token is fetched anew once per request (it expired, or came stale).
        let mut refresh_left = true;
        loop {
            let response = self.send_once(build(&self.http), used.as_ref(), what).await?;
            let status = response.status();
            let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
            let Some(sent) = used.as_ref() else {
                if status != StatusCode::UNAUTHORIZED {
                    return Ok(response);
                }
                let answer = self.auth.answer(response.headers(), &self.http, scope, None, deadline).await;
                match answer.map_err(|e| e.context(what))? {
                    Some(header) => used = Some(header),
                    None => return Ok(response), // no challenge we can answer: the status speaks for itself
                }
                continue;
            };
            if !refused {
                return Ok(response);
            }
            let is_token = sent.as_bytes().starts_with(b"Bearer ");
            if status == StatusCode::UNAUTHORIZED && (is_token || self.auth.renews_credentials()) && refresh_left {
                refresh_left = false;
                let answer = self.auth.answer(response.headers(), &self.http, scope, Some(sent), deadline).await;
                if let Some(header) = answer.map_err(|e| e.context(what))? {
                    tracing::debug!(request = what, "registry token refused; fetching a fresh one");
                    used = Some(header);
                    continue;
                }
            }
            let body = small_body(response).await;
            return Err(self.auth.refused(status, &body, scope).await.context(what));
        }
    }

    /// Send without `Authorization`, whatever earlier challenges asked for: for a URL on
    /// another host than the registry (an upload `Location` on the registry's storage),
    /// where the registry's credentials and tokens must never go.
    pub async fn send_without_auth(&self, request: RequestBuilder, what: &str) -> Result<Response, ProbeError> {
        self.send_once(request, None, what).await
    }

    /// One request under the first-byte deadline, noting what every response says.
    async fn send_once(
        &self,
        request: RequestBuilder,
        authorization: Option<&reqwest::header::HeaderValue>,
        what: &str,
    ) -> Result<Response, ProbeError> {
        let request = match authorization {
            Some(value) => request.header(AUTHORIZATION, value.clone()),
            None => request,
        };
        let sent = match tokio::time::timeout(self.response_timeout, request.send()).await {
            Ok(sent) => sent,
            Err(_) => {
                return Err(ProbeError::new(
                    Reason::Timeout,
                    format!("{what}: no response headers within {:?}", self.response_timeout),
                ));
            }
        };
        let response = sent.map_err(|e| {
            let mut err = classify_transport(&e, what);
            if self.tls.client_cert_missing() {
                err.reason = Reason::TlsError;
                err.message.push_str(&format!("; {CLIENT_CERT_MISSING}"));
            }
            err
        })?;
        tracing::debug!(
            request = what,
            status = response.status().as_u16(),
            version = ?response.version(),
            url = %crate::redact::redact_url(response.url()),
            "registry response"
        );
        if let Some(remaining) = ratelimit_remaining(response.headers()) {
            self.ratelimit_remaining.store(remaining, Ordering::Relaxed);
        }
        if response.status() == StatusCode::BAD_REQUEST && self.tls.client_cert_missing() {
            return Err(ProbeError::new(
                Reason::TlsError,
                format!("{what}: {CLIENT_CERT_MISSING}; the frontend answered HTTP status 400"),
            )
            .with_status(400));
        }
        Ok(response)
    }
}

const CLIENT_CERT_MISSING: &str = "the frontend asked for a client certificate in the TLS handshake and none is \
     configured (tls.client_cert and tls.client_key)";

/// The proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, less `NO_PROXY`) that
/// requests to `url` go through, credentials removed; reqwest applies the same
/// rules (hyper-util's matcher) to every client it builds.
pub fn proxy_for(url: &url::Url) -> Option<String> {
    let uri: hyper::Uri = url.as_str().parse().ok()?;
    let intercept = hyper_util::client::proxy::matcher::Matcher::from_env().intercept(&uri)?;
    let shown = url::Url::parse(&intercept.uri().to_string())
        .map(|u| crate::redact::redact_url(&u))
        .unwrap_or_else(|_| "a proxy".to_string());
    Some(shown)
}

/// `RateLimit-Remaining: 76;w=21600` (Docker Hub) → 76.
pub fn ratelimit_remaining(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get("ratelimit-remaining")?.to_str().ok()?;
    value.split(';').next()?.trim().parse().ok()
}

/// The first 64 KiB of an error body, for its registry error code.
async fn small_body(mut response: Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= 64 * 1024 {
            body.truncate(64 * 1024);
            break;
        }
    }
    body
}

/// DNS resolution through the system resolver, timed, with a typed error so
/// a failed lookup is `dns_error` and not a generic connect failure.
struct TimedResolver {
    slot: Arc<TimingSlot>,
    family: IpFamily,
}

impl reqwest::dns::Resolve for TimedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let slot = self.slot.clone();
        let family = self.family;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let started = Instant::now();
            let result = tokio::net::lookup_host((host.as_str(), 0)).await;
            let took = started.elapsed();
            slot.record_dns(took);
            connect_timing::note_dns(took);
            let failure = |cause| Box::new(DnsFailure { host: host.clone(), cause }) as Box<dyn StdError + Send + Sync>;
            let addrs: Vec<SocketAddr> = result.map_err(failure)?.filter(|a| family.allows(a.ip())).collect();
            if addrs.is_empty() {
                let why = format!("no {} address (ip_family: {family:?})", family.describe());
                return Err(failure(std::io::Error::new(std::io::ErrorKind::NotFound, why)));
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
