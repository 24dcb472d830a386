//! Reading from a registry through one frontend: manifests and small blobs
//! into capped buffers, layer blobs as streams.
//!
//! Every request carries the one `Accept` header of [`crate::media_types`];
//! every failure leaves here as a [`ProbeError`] with its reason decided.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use reqwest::{Response, StatusCode};
use url::Url;

use crate::digest::Digest;
use crate::media_types::MANIFEST_ACCEPT;
use crate::reason::{ProbeError, Reason};
use crate::registry::connect_timing::ConnectTimings;
use crate::registry::errors::{RequestKind, classify_status, classify_transport};
use crate::registry::route::MirrorRoute;
use crate::registry::scope::Scope;
use crate::registry::transport::Transport;

/// Largest registry error body read to find its error code.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A registry as seen through one frontend.
#[derive(Clone)]
pub struct RegistryClient {
    transport: Transport,
    base: Url,
    /// Prepended to every repository (a proxy-cache project).
    repository_prefix: String,
    /// containerd-style `?ns=` naming the upstream registry, for mirrors.
    ns: Option<String>,
    /// A mirror's API root, repository names and headers.
    route: MirrorRoute,
    /// A node's order of hosts: manifests and blobs are asked of them instead.
    order: Option<Arc<dyn RequestOrder>>,
}

/// A request's answer, on its way.
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, ProbeError>> + Send + 'a>>;

/// Requests answered by other hosts than a client's own (a node's order of mirrors,
/// [`crate::registry::mirrors::MirrorOrder`]). Boxed and `Send` by signature: the
/// hosts' own clients are called back from inside.
pub trait RequestOrder: Send + Sync {
    fn manifest<'a>(&'a self, repository: &'a str, reference: &'a str, max_bytes: u64) -> Answer<'a, ManifestResponse>;
    fn blob<'a>(&'a self, repository: &'a str, digest: &'a Digest) -> Answer<'a, BlobResponse>;
}

/// A manifest as the registry sent it.
#[derive(Debug, Clone)]
pub struct ManifestResponse {
    pub body: Bytes,
    pub content_type: Option<String>,
    /// The `Docker-Content-Digest` header, unparsed (a registry may send garbage).
    pub docker_content_digest: Option<String>,
    pub took: Duration,
    /// Expiry of the certificate the frontend presented (RFC 3339), for https.
    pub tls_not_after: Option<String>,
}

/// Where the bytes of a blob came from.
#[derive(Debug, Clone, Default)]
pub struct BlobSource {
    pub content_length: Option<u64>,
    /// `HIT`, `MISS`, … from `X-Cache-Status`, `X-Cache` or `CF-Cache-Status`.
    pub cache_status: Option<String>,
    /// host[:port] that sent the bytes, after redirects.
    pub served_by: Option<String>,
    pub docker_content_digest: Option<String>,
}

/// An open blob download: headers read, body not yet.
pub struct BlobResponse {
    pub response: Response,
    pub source: BlobSource,
}

impl RegistryClient {
    /// `base` is the frontend's URL: scheme, host, port (and an optional path prefix).
    pub fn new(transport: Transport, base: Url) -> Self {
        RegistryClient {
            transport,
            base,
            repository_prefix: String::new(),
            ns: None,
            route: MirrorRoute::default(),
            order: None,
        }
    }

    /// Form requests the way this mirror host expects them.
    pub fn with_route(mut self, route: MirrorRoute) -> Self {
        self.route = route;
        self
    }

    /// Send manifest and blob requests through a node's order of hosts (this
    /// client's transport stays the one timings and tokens are read from).
    pub fn with_order(mut self, order: Arc<dyn RequestOrder>) -> Self {
        self.order = Some(order);
        self
    }

    /// Route requests the way a mirror or proxy cache expects: a repository prefix and/or `?ns=`.
    pub fn with_mirror_routing(mut self, repository_prefix: Option<String>, ns: Option<String>) -> Self {
        self.repository_prefix = repository_prefix.unwrap_or_default();
        self.ns = ns;
        self
    }

    pub fn timings(&self) -> ConnectTimings {
        self.transport.timings()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.transport.http
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The headers a mirror host wants on every request.
    pub(super) fn route_headers(&self) -> &HeaderMap {
        &self.route.headers
    }

    /// The token scope for reading `repository` on this frontend (with its prefix).
    pub(super) fn pull_scope(&self, repository: &str) -> Scope {
        Scope::pull(&format!("{}{}", self.repository_prefix, self.route.repository(repository)))
    }

    /// `/v2/<prefix><repository>/<rest>` on this frontend, with `?ns=` for mirrors.
    pub(super) fn url(&self, repository: &str, rest: &str) -> Result<Url, ProbeError> {
        let joined = format!(
            "{}{}/{}{}/{rest}",
            self.base.as_str().trim_end_matches('/'),
            self.route.api_root(),
            self.repository_prefix,
            self.route.repository(repository)
        );
        let mut url = Url::parse(&joined)
            .map_err(|e| ProbeError::new(Reason::ManifestInvalid, format!("bad request URL {joined:?}: {e}")))?;
        if let Some(ns) = &self.ns {
            url.query_pairs_mut().append_pair("ns", ns);
        }
        Ok(url)
    }

    /// `GET /v2/<repo>/manifests/<reference>` with every manifest type accepted.
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
        max_bytes: u64,
    ) -> Result<ManifestResponse, ProbeError> {
        if let Some(order) = &self.order {
            return order.manifest(repository, reference, max_bytes).await;
        }
        let started = Instant::now();
        let url = self.url(repository, &format!("manifests/{reference}"))?;
        let what = format!("manifest {repository}:{reference}");
        let headers = &self.route.headers;
        let response = self
            .transport
            .send(
                |http| http.get(url.clone()).headers(headers.clone()).header(ACCEPT, MANIFEST_ACCEPT),
                &self.pull_scope(repository),
                &what,
            )
            .await?;
        let response = check_status(response, RequestKind::Manifest, &what).await?;
        let content_type = header_str(response.headers(), CONTENT_TYPE.as_str());
        let docker_content_digest = header_str(response.headers(), "docker-content-digest");
        let tls_not_after = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .and_then(certificate_not_after);
        let body = read_capped(response, max_bytes, &what).await?;
        Ok(ManifestResponse { body, content_type, docker_content_digest, took: started.elapsed(), tls_not_after })
    }

    /// Start a blob download; the caller streams the body.
    pub async fn blob(&self, repository: &str, digest: &Digest) -> Result<BlobResponse, ProbeError> {
        if let Some(order) = &self.order {
            return order.blob(repository, digest).await;
        }
        let url = self.url(repository, &format!("blobs/{digest}"))?;
        let what = format!("blob {}", digest.short());
        let headers = &self.route.headers;
        let response = self
            .transport
            .send(|http| http.get(url.clone()).headers(headers.clone()), &self.pull_scope(repository), &what)
            .await?;
        let source = blob_source(&response);
        let response = check_status(response, RequestKind::Blob, &what).await?;
        Ok(BlobResponse { response, source })
    }

    /// A small blob (an image config, a signature) read whole, at most `max_bytes`.
    pub async fn small_blob(
        &self,
        repository: &str,
        digest: &Digest,
        max_bytes: u64,
    ) -> Result<(Bytes, BlobSource), ProbeError> {
        let what = format!("blob {}", digest.short());
        let blob = self.blob(repository, digest).await?;
        let body = read_capped(blob.response, max_bytes, &what).await?;
        Ok((body, blob.source))
    }
}

/// The `notAfter` of a DER certificate as RFC 3339.
fn certificate_not_after(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let timestamp = cert.validity().not_after.timestamp();
    let at = time::OffsetDateTime::from_unix_timestamp(timestamp).ok()?;
    at.format(&time::format_description::well_known::Rfc3339).ok()
}

pub(super) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(256).collect())
}

fn blob_source(response: &Response) -> BlobSource {
    let headers = response.headers();
    let url = response.url();
    BlobSource {
        content_length: header_str(headers, CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse().ok()),
        cache_status: cache_status(headers),
        served_by: url.host_str().map(|h| match url.port() {
            Some(port) => format!("{h}:{port}"),
            None => h.to_string(),
        }),
        docker_content_digest: header_str(headers, "docker-content-digest"),
    }
}

/// Normalise the cache headers of nginx, Varnish/Squid/CloudFront and Cloudflare to `HIT`, `MISS`, ….
pub fn cache_status(headers: &HeaderMap) -> Option<String> {
    for name in ["x-cache-status", "cf-cache-status", "x-cache"] {
        let Some(value) = header_str(headers, name) else { continue };
        let upper = value.trim().to_ascii_uppercase();
        if upper.is_empty() {
            continue;
        }
        let first = upper.split([' ', ',']).next().unwrap_or("");
        let normalised = if first.contains("HIT") {
            "HIT".to_string()
        } else if first.contains("MISS") {
            "MISS".to_string()
        } else {
            first.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(32).collect()
        };
        // A value with no word in it (`-`, `, HIT`) says nothing: ask the next header.
        if !normalised.is_empty() {
            return Some(normalised);
        }
    }
    None
}

/// Pass a success through; turn anything else into the registry's reason.
pub(super) async fn check_status(response: Response, kind: RequestKind, what: &str) -> Result<Response, ProbeError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = crate::registry::errors::retry_after(response.headers());
    let body = read_capped(response, MAX_ERROR_BODY as u64, what).await.unwrap_or_default();
    let mut err = classify_status(status.as_u16(), &body, kind, retry_after).context(what);
    if status == StatusCode::NOT_FOUND && err.registry_error.is_none() {
        err.message.push_str(" (no registry error body)");
    }
    Err(err)
}

/// Read a whole body, failing with `too_large` past `max_bytes` without reading further.
pub(super) async fn read_capped(mut response: Response, max_bytes: u64, what: &str) -> Result<Bytes, ProbeError> {
    if let Some(len) = response.content_length()
        && len > max_bytes
    {
        return Err(ProbeError::new(
            Reason::TooLarge,
            format!("{what}: Content-Length {len} bytes is over the limit of {max_bytes} bytes"),
        ));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify_transport(&e, what))? {
        if body.len() as u64 + chunk.len() as u64 > max_bytes {
            return Err(ProbeError::new(
                Reason::TooLarge,
                format!("{what}: body is over the limit of {max_bytes} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
