//! The HTTP client under the registry client: TLS settings, address pinning,
//! redirect limits, connection timings, and the one place that turns a
//! transport error into a reason code.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::reason::{ProbeError, Reason};

/// How to reach one frontend of a registry.
#[derive(Debug, Clone, Default)]
pub struct TransportOptions {
    /// Skip certificate verification (`--insecure`).
    pub insecure: bool,
    /// Extra CA certificates (PEM) trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Connect this host name to this address instead of resolving it; Host and SNI stay the name.
    pub pin: Option<(String, SocketAddr)>,
    pub max_redirects: usize,
    pub connect_timeout: Option<Duration>,
    /// Longest silence while reading a response before it counts as stalled.
    pub read_timeout: Option<Duration>,
}

/// Connection timings of one client: the first DNS lookup and connection it made.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ConnectTimings {
    pub dns: Option<Duration>,
    /// TCP connect, plus the TLS handshake for https.
    pub connect: Option<Duration>,
}

#[derive(Debug, Default)]
struct TimingSlot {
    timings: Mutex<ConnectTimings>,
}

impl TimingSlot {
    fn record_dns(&self, took: Duration) {
        if let Ok(mut t) = self.timings.lock() {
            t.dns.get_or_insert(took);
        }
    }

    fn record_connect(&self, took: Duration) {
        if let Ok(mut t) = self.timings.lock() {
            if t.connect.is_none() {
                let dns = t.dns.unwrap_or_default();
                t.connect = Some(took.saturating_sub(dns));
            }
        }
    }
}

/// A reqwest client plus the timings of the connections it makes.
#[derive(Clone)]
pub struct Transport {
    pub http: reqwest::Client,
    timings: Arc<TimingSlot>,
}

impl Transport {
    pub fn new(options: &TransportOptions) -> Result<Self, ProbeError> {
        let timings = Arc::new(TimingSlot::default());
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("pullprobe/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(options.max_redirects))
            .dns_resolver(Arc::new(TimedResolver { slot: timings.clone() }))
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
        if options.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        if let Some(path) = &options.ca_file {
            let pem = read_config_file(path, "tls ca_file")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ProbeError::new(Reason::TlsError, format!("tls ca_file {}: {e}", path.display())))?;
            builder = builder.tls_certs_merge(certs);
        }
        match (&options.client_cert, &options.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read_config_file(cert, "tls client_cert")?;
                pem.push(b'\n');
                pem.extend(read_config_file(key, "tls client_key")?);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| ProbeError::new(Reason::TlsError, format!("tls client certificate: {e}")))?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(ProbeError::new(
                    Reason::TlsError,
                    "tls: client_cert and client_key must be given together",
                ));
            }
        }
        let http = builder
            .build()
            .map_err(|e| ProbeError::new(Reason::TlsError, format!("cannot build HTTP client: {}", error_chain(&e))))?;
        Ok(Transport { http, timings })
    }

    pub fn timings(&self) -> ConnectTimings {
        self.timings.timings.lock().map(|t| *t).unwrap_or_default()
    }
}

fn read_config_file(path: &PathBuf, what: &str) -> Result<Vec<u8>, ProbeError> {
    std::fs::read(path).map_err(|e| ProbeError::new(Reason::TlsError, format!("{what} {}: {e}", path.display())))
}

/// DNS resolution through the system resolver, timed, with a typed error so
/// a failed lookup is `dns_error` and not a generic connect failure.
struct TimedResolver {
    slot: Arc<TimingSlot>,
}

#[derive(Debug)]
struct DnsFailure {
    host: String,
    cause: std::io::Error,
}

impl std::fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot resolve {}: {}", self.host, self.cause)
    }
}

impl StdError for DnsFailure {}

impl reqwest::dns::Resolve for TimedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let slot = self.slot.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let started = Instant::now();
            let result = tokio::net::lookup_host((host.as_str(), 0)).await;
            slot.record_dns(started.elapsed());
            match result {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
                }
                Err(cause) => {
                    let failure = DnsFailure { host: host.clone(), cause };
                    Err(Box::new(failure) as Box<dyn StdError + Send + Sync>)
                }
            }
        })
    }
}

/// Times each new connection (DNS, TCP and TLS together; DNS is subtracted).
#[derive(Clone)]
struct TimedConnectLayer {
    slot: Arc<TimingSlot>,
}

impl<S> tower_layer::Layer<S> for TimedConnectLayer {
    type Service = TimedConnect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimedConnect { inner, slot: self.slot.clone() }
    }
}

#[derive(Clone)]
struct TimedConnect<S> {
    inner: S,
    slot: Arc<TimingSlot>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, Req> tower_service::Service<Req> for TimedConnect<S>
where
    S: tower_service::Service<Req>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let started = Instant::now();
        let slot = self.slot.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            if result.is_ok() {
                slot.record_connect(started.elapsed());
            }
            result
        })
    }
}

/// The error and its causes on one line, e.g. "error sending request: connection refused".
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

fn chain_has<T: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
    find_in_chain::<T>(err).is_some()
}

fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = inner.downcast_ref::<T>()
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

fn io_kind_in_chain(err: &(dyn StdError + 'static), kind: std::io::ErrorKind) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == kind) {
            return true;
        }
        current = e.source();
    }
    false
}

/// The reason for a failed request or body read: decided from the error's
/// types, never from its text. `what` says what was being fetched.
pub fn classify_transport(err: &reqwest::Error, what: &str) -> ProbeError {
    let chain = error_chain(err);
    let reason = if err.is_timeout() || io_kind_in_chain(err, std::io::ErrorKind::TimedOut) {
        Reason::Timeout
    } else if err.is_redirect() {
        Reason::RedirectLoop
    } else if chain_has::<DnsFailure>(err) {
        Reason::DnsError
    } else if chain_has::<rustls::Error>(err) {
        Reason::TlsError
    } else if err.is_connect() {
        Reason::ConnectError
    } else if err.is_body() || err.is_decode() {
        if io_kind_in_chain(err, std::io::ErrorKind::UnexpectedEof)
            || find_in_chain::<hyper::Error>(err).is_some_and(|h| h.is_incomplete_message())
        {
            Reason::BlobTruncated
        } else {
            Reason::ConnectError
        }
    } else {
        Reason::ConnectError
    };
    ProbeError::new(reason, format!("{what}: {}", crate::redact::redact_text(&chain)))
}

/// True for a body that ended before its Content-Length: the bytes are short, not the connection broken.
pub fn is_incomplete_body(err: &reqwest::Error) -> bool {
    io_kind_in_chain(err, std::io::ErrorKind::UnexpectedEof)
        || find_in_chain::<hyper::Error>(err).is_some_and(|h| h.is_incomplete_message())
}
