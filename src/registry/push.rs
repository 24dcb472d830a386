//! Pushing blobs and manifests through the registry's upload API, as `docker push` does.
//!
//! A blob is uploaded monolithically (`POST` a session, `PUT <Location>&digest=…`
//! with the body) or in chunks (`POST`, `PATCH` each chunk with `Content-Range`,
//! `PUT ?digest=`), always following the `Location` the registry last returned,
//! relative or absolute. Bodies from files are streamed, never read whole.
//!
//! Requests go out through a [`PushClient`]: a bare HTTP client (anonymous), or
//! the registry's [`Transport`], which answers `401` challenges for the
//! repository's `pull,push` scope with the configured credentials and sends the
//! request again — so a body sent that way must be in memory. `Authorization`
//! only ever goes to the registry's own origin: a `Location` on another host
//! (a registry handing uploads to its storage) gets the request without it.
//!
//! A failed request becomes a [`ProbeError`] that names the request of the
//! session that failed ("PATCH chunk 2 of 4: HTTP status 404
//! (BLOB_UPLOAD_UNKNOWN: …)") and carries the registry's error code. The reason
//! is `upload_failed`, except when the registry refused the credentials
//! (`auth_failed`, naming the scope asked for), asked us to slow down
//! (`rate_limited`), or could not be reached at all (`connect_error`, `timeout`).
//!
//! This module knows nothing about verdicts or how images are built: anything
//! that lists its blobs and manifests ([`PushableImage`]) can be pushed.

use std::io::{self, SeekFrom};
use std::path::Path;

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RANGE};
use reqwest::{Body, Client, Method, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use url::Url;

use crate::digest::Digest;
use crate::reason::{ProbeError, Reason};
use crate::registry::errors::{RequestKind, classify_status, retry_after};
use crate::registry::scope::Scope;
use crate::registry::transport::Transport;

/// How much of an error body is read (the registry's JSON error is a few hundred bytes).
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// The size of the reads that feed a streamed file body.
const FILE_READ_BYTES: usize = 256 * 1024;

/// Where a blob's bytes come from.
#[derive(Debug, Clone)]
pub enum BlobSource<'a> {
    Memory(Bytes),
    /// A file holding exactly the blob; streamed.
    File(&'a Path),
}

/// A blob to upload: its digest, its size and its bytes.
#[derive(Debug, Clone)]
pub struct BlobToPush<'a> {
    pub digest: Digest,
    pub size: u64,
    pub source: BlobSource<'a>,
}

/// A manifest to put: the media type goes into `Content-Type`.
#[derive(Debug, Clone)]
pub struct ManifestToPush<'a> {
    pub media_type: &'a str,
    pub digest: Digest,
    pub bytes: Bytes,
}

/// Something [`push_image`] can push: an image, an index, an artifact.
pub trait PushableImage {
    /// Every blob (configs, layers), each once.
    fn blobs(&self) -> Vec<BlobToPush<'_>>;
    /// Every manifest, children before the manifests that list them; the last one is what the tag names.
    fn manifests(&self) -> Vec<ManifestToPush<'_>>;
}

/// How a blob's bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMethod {
    /// `POST`, then one `PUT` with the whole body.
    Monolithic,
    /// `POST`, a `PATCH` per chunk of `chunk_size` bytes, then an empty `PUT`.
    Chunked { chunk_size: u64 },
}

/// What [`push_blob`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPushed {
    Uploaded,
    /// `HEAD` found the blob in the repository; nothing was sent.
    AlreadyPresent,
}

/// How a push's requests are sent.
#[derive(Clone, Copy)]
pub enum PushClient<'a> {
    /// A bare HTTP client: every request anonymous, a `401` is the answer.
    Plain(&'a Client),
    /// The registry's transport: `401` challenges are answered for the
    /// repository's `pull,push` scope and the request is sent again.
    Authenticating(&'a Transport),
}

impl std::fmt::Debug for PushClient<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PushClient::Plain(_) => "PushClient::Plain",
            PushClient::Authenticating(_) => "PushClient::Authenticating",
        })
    }
}

impl<'a> From<&'a Client> for PushClient<'a> {
    fn from(client: &'a Client) -> Self {
        PushClient::Plain(client)
    }
}

impl<'a> From<&'a Transport> for PushClient<'a> {
    fn from(transport: &'a Transport) -> Self {
        PushClient::Authenticating(transport)
    }
}

/// The body of one push request.
#[derive(Debug)]
pub enum UploadBody {
    /// Bytes in memory: sent again as they are when a challenge asks for authentication.
    Memory(Bytes),
    /// A stream (a file): sent once, so only without a challenge to answer (a bare client, another host).
    Stream(Body),
}

impl From<Bytes> for UploadBody {
    fn from(bytes: Bytes) -> Self {
        UploadBody::Memory(bytes)
    }
}

impl UploadBody {
    fn into_body(self) -> Body {
        match self {
            UploadBody::Memory(bytes) => Body::from(bytes),
            UploadBody::Stream(stream) => stream,
        }
    }
}

/// One request of a push, before it is sent.
struct PushRequest {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<UploadBody>,
}

impl PushRequest {
    fn new(method: Method, url: Url) -> Self {
        PushRequest { method, url, headers: HeaderMap::new(), body: None }
    }

    fn header(mut self, name: reqwest::header::HeaderName, value: impl Into<HeaderValue>) -> Self {
        self.headers.insert(name, value.into());
        self
    }

    fn body(mut self, body: UploadBody) -> Self {
        self.body = Some(body);
        self
    }
}

/// The repository a push writes to, and the registry URL that holds it (the origin credentials may go to).
#[derive(Debug, Clone)]
struct Target {
    registry: Url,
    repo: String,
}

impl PushClient<'_> {
    /// Send one request of a push to `target`'s repository; `label` names it in errors.
    async fn send(&self, target: &Target, request: PushRequest, label: &str) -> Result<Response, ProbeError> {
        let PushRequest { method, url, headers, body } = request;
        let build = |client: &Client, body: Option<Body>| {
            let request = client.request(method.clone(), url.clone()).headers(headers.clone());
            match body {
                Some(body) => request.body(body),
                None => request,
            }
        };
        match self {
            PushClient::Plain(client) => {
                build(client, body.map(UploadBody::into_body)).send().await.map_err(|e| transport_error(label, &e))
            }
            // Another host (storage the registry hands uploads to): never the registry's credentials.
            PushClient::Authenticating(transport) if !same_origin(&target.registry, &url) => {
                transport.send_without_auth(build(&transport.http, body.map(UploadBody::into_body)), label).await
            }
            PushClient::Authenticating(transport) => {
                let bytes = match body {
                    None => None,
                    Some(UploadBody::Memory(bytes)) => Some(bytes),
                    Some(UploadBody::Stream(_)) => {
                        return Err(ProbeError::new(
                            Reason::UploadFailed,
                            format!(
                                "{label}: a streamed body cannot go through an authenticating client \
                                 (it could not be sent again after a challenge)"
                            ),
                        ));
                    }
                };
                let scope = Scope::push_pull(&target.repo);
                transport.send(|client| build(client, bytes.clone().map(Body::from)), &scope, label).await
            }
        }
    }
}

/// Whether two URLs share scheme, host and port: where the registry's credentials may go.
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// Push every blob, then every child manifest by digest, then the top manifest
/// under `tag`. Returns the top manifest's digest.
pub async fn push_image<'c>(
    client: impl Into<PushClient<'c>>,
    base: &Url,
    repo: &str,
    tag: &str,
    image: &(impl PushableImage + ?Sized),
    method: UploadMethod,
) -> Result<Digest, ProbeError> {
    let client = client.into();
    for blob in image.blobs() {
        push_blob(client, base, repo, &blob, method).await?;
    }
    let manifests = image.manifests();
    let Some((top, children)) = manifests.split_last() else {
        return Err(ProbeError::new(Reason::UploadFailed, "nothing to push: the image has no manifest"));
    };
    for child in children {
        push_manifest(client, base, repo, &child.digest.to_string(), child).await?;
    }
    push_manifest(client, base, repo, tag, top).await
}

/// Upload a blob unless the repository already has it.
pub async fn push_blob<'c>(
    client: impl Into<PushClient<'c>>,
    base: &Url,
    repo: &str,
    blob: &BlobToPush<'_>,
    method: UploadMethod,
) -> Result<BlobPushed, ProbeError> {
    let client = client.into();
    if blob_exists(client, base, repo, &blob.digest).await? {
        return Ok(BlobPushed::AlreadyPresent);
    }
    upload_blob(client, base, repo, blob, method).await?;
    Ok(BlobPushed::Uploaded)
}

/// `HEAD /v2/<repo>/blobs/<digest>`: 200 is true, 404 is false, anything else an error.
pub async fn blob_exists<'c>(
    client: impl Into<PushClient<'c>>,
    base: &Url,
    repo: &str,
    digest: &Digest,
) -> Result<bool, ProbeError> {
    let target = Target { registry: base.clone(), repo: repo.to_string() };
    let url = endpoint(base, &format!("v2/{repo}/blobs/{digest}"))?;
    let response = client.into().send(&target, PushRequest::new(Method::HEAD, url), "HEAD blob").await?;
    match response.status() {
        s if s.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => Err(status_error("HEAD blob", response).await),
    }
}

/// Upload a blob in a new session, without asking first whether it exists.
pub async fn upload_blob<'c>(
    client: impl Into<PushClient<'c>>,
    base: &Url,
    repo: &str,
    blob: &BlobToPush<'_>,
    method: UploadMethod,
) -> Result<(), ProbeError> {
    upload_blob_inner(client.into(), base, repo, blob, method)
        .await
        .map_err(|e| e.context(format_args!("blob {} ({} bytes)", blob.digest.short(), blob.size)))
}

async fn upload_blob_inner(
    client: PushClient<'_>,
    base: &Url,
    repo: &str,
    blob: &BlobToPush<'_>,
    method: UploadMethod,
) -> Result<(), ProbeError> {
    check_source_size(blob).await?;
    let mut session = UploadSession::start(client, base, repo).await?;
    match method {
        UploadMethod::Monolithic => {
            let body = body_for(&blob.source, 0, blob.size).await?;
            session.finish(&blob.digest, Some((body, blob.size)), "PUT (monolithic)").await
        }
        UploadMethod::Chunked { chunk_size } => {
            let chunk_size = chunk_size.max(1);
            let chunks = blob.size.div_ceil(chunk_size);
            for chunk in 0..chunks {
                let offset = chunk * chunk_size;
                let len = chunk_size.min(blob.size - offset);
                let body = body_for(&blob.source, offset, len).await?;
                session.patch(body, len, &format!("chunk {} of {chunks}", chunk + 1)).await?;
            }
            session.finish(&blob.digest, None, "PUT (closing the upload)").await
        }
    }
}

/// Put a manifest under a tag or a digest. Returns its digest; a registry that
/// answers with another `Docker-Content-Digest` is an error.
pub async fn push_manifest<'c>(
    client: impl Into<PushClient<'c>>,
    base: &Url,
    repo: &str,
    reference: &str,
    manifest: &ManifestToPush<'_>,
) -> Result<Digest, ProbeError> {
    let label = format!("PUT manifest {repo}:{reference}");
    let target = Target { registry: base.clone(), repo: repo.to_string() };
    let url = endpoint(base, &format!("v2/{repo}/manifests/{reference}"))?;
    let content_type = HeaderValue::from_str(manifest.media_type)
        .map_err(|_| ProbeError::new(Reason::UploadFailed, format!("{label}: the media type is not a header value")))?;
    let request = PushRequest::new(Method::PUT, url)
        .header(CONTENT_TYPE, content_type)
        .body(UploadBody::Memory(manifest.bytes.clone()));
    let response = client.into().send(&target, request, &label).await?;
    if !response.status().is_success() {
        return Err(status_error(&label, response).await);
    }
    check_digest_header(response.headers(), &manifest.digest, &label)?;
    Ok(manifest.digest)
}

/// One upload session, for callers that drive the requests themselves (the write-path canary).
#[derive(Debug)]
pub struct UploadSession<'c> {
    client: PushClient<'c>,
    target: Target,
    location: Url,
    offset: u64,
}

impl<'c> UploadSession<'c> {
    /// `POST /v2/<repo>/blobs/uploads/`: open a session.
    pub async fn start(client: impl Into<PushClient<'c>>, base: &Url, repo: &str) -> Result<Self, ProbeError> {
        let client = client.into();
        let label = "POST (starting the upload)";
        let target = Target { registry: base.clone(), repo: repo.to_string() };
        let url = endpoint(base, &format!("v2/{repo}/blobs/uploads/"))?;
        let request = PushRequest::new(Method::POST, url.clone()).header(CONTENT_LENGTH, HeaderValue::from(0));
        let response = client.send(&target, request, label).await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(status_error(label, response).await);
        }
        let location = next_location(&url, response.headers(), label)?;
        Ok(UploadSession { client, target, location, offset: 0 })
    }

    /// Where the next request of this session goes.
    pub fn location(&self) -> &Url {
        &self.location
    }

    /// How many bytes the session holds.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// `PATCH` the next `len` bytes; `label` names them in errors ("chunk 2 of 4").
    pub async fn patch(&mut self, body: UploadBody, len: u64, label: &str) -> Result<(), ProbeError> {
        let label = format!("PATCH {label}");
        let last = (self.offset + len).saturating_sub(1);
        let range = HeaderValue::from_str(&format!("{}-{last}", self.offset))
            .map_err(|_| ProbeError::new(Reason::UploadFailed, format!("{label}: bad Content-Range")))?;
        let request = PushRequest::new(Method::PATCH, self.location.clone())
            .header(CONTENT_RANGE, range)
            .header(CONTENT_LENGTH, HeaderValue::from(len))
            .body(body);
        let response = self.client.send(&self.target, request, &label).await?;
        if !response.status().is_success() {
            return Err(status_error(&label, response).await);
        }
        if let Some(range) = response.headers().get(RANGE).and_then(|v| v.to_str().ok()) {
            let end = range.rsplit('-').next().and_then(|n| n.trim().parse::<u64>().ok());
            if len > 0 && end != Some(last) {
                return Err(ProbeError::new(
                    Reason::UploadFailed,
                    format!("{label}: the registry holds bytes {range}, expected 0-{last}"),
                ));
            }
        }
        self.location = next_location(&self.location, response.headers(), &label)?;
        self.offset += len;
        Ok(())
    }

    /// `PUT <Location>&digest=…`, with the last bytes or none: close the session.
    pub async fn finish(self, digest: &Digest, body: Option<(UploadBody, u64)>, label: &str) -> Result<(), ProbeError> {
        let mut url = self.location.clone();
        url.query_pairs_mut().append_pair("digest", &digest.to_string());
        let (body, len) = body.unwrap_or_else(|| (UploadBody::Memory(Bytes::new()), 0));
        let request = PushRequest::new(Method::PUT, url).header(CONTENT_LENGTH, HeaderValue::from(len)).body(body);
        let response = self.client.send(&self.target, request, label).await?;
        if !response.status().is_success() {
            return Err(status_error(label, response).await);
        }
        check_digest_header(response.headers(), digest, label)
    }
}

/// `DELETE <Location>`: cancel an open upload session of `repo` on the registry at
/// `base`, so the registry frees what it holds.
pub async fn cancel_upload<'c>(
    client: impl Into<PushClient<'c>>,
    base: &Url,
    repo: &str,
    location: &Url,
) -> Result<(), ProbeError> {
    let label = "DELETE (cancelling the upload)";
    let target = Target { registry: base.clone(), repo: repo.to_string() };
    let response = client.into().send(&target, PushRequest::new(Method::DELETE, location.clone()), label).await?;
    if !response.status().is_success() {
        return Err(status_error(label, response).await);
    }
    Ok(())
}

/// `<base>/<path>`, keeping a path prefix the base URL may have.
pub(crate) fn endpoint(base: &Url, path: &str) -> Result<Url, ProbeError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    base.join(path)
        .map_err(|e| ProbeError::new(Reason::UploadFailed, format!("cannot build a URL from {base} and {path}: {e}")))
}

/// The session's next URL: the `Location` header, resolved against the request URL.
fn next_location(request: &Url, headers: &HeaderMap, label: &str) -> Result<Url, ProbeError> {
    let Some(location) = headers.get(LOCATION) else {
        return Err(ProbeError::new(Reason::UploadFailed, format!("{label}: the registry sent no Location header")));
    };
    let location = location
        .to_str()
        .map_err(|_| ProbeError::new(Reason::UploadFailed, format!("{label}: the Location header is not ASCII")))?;
    request
        .join(location)
        .map_err(|e| ProbeError::new(Reason::UploadFailed, format!("{label}: cannot use Location {location:?}: {e}")))
}

fn check_digest_header(headers: &HeaderMap, expected: &Digest, label: &str) -> Result<(), ProbeError> {
    let Some(value) = headers.get("docker-content-digest").and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    match value.parse::<Digest>() {
        Ok(got) if got == *expected => Ok(()),
        _ => Err(ProbeError::new(
            Reason::UploadFailed,
            format!("{label}: the registry stored {}, expected {expected}", value.chars().take(80).collect::<String>()),
        )),
    }
}

async fn check_source_size(blob: &BlobToPush<'_>) -> Result<(), ProbeError> {
    let actual = match &blob.source {
        BlobSource::Memory(bytes) => bytes.len() as u64,
        BlobSource::File(path) => tokio::fs::metadata(path).await.map_err(|e| file_error(path, &e))?.len(),
    };
    if actual != blob.size {
        return Err(ProbeError::new(
            Reason::UploadFailed,
            format!("the blob's source holds {actual} bytes, not the {} to upload", blob.size),
        ));
    }
    Ok(())
}

/// The body for bytes `offset..offset + len` of a blob: a slice of memory, or a file stream.
async fn body_for(source: &BlobSource<'_>, offset: u64, len: u64) -> Result<UploadBody, ProbeError> {
    match source {
        BlobSource::Memory(bytes) => Ok(UploadBody::Memory(bytes.slice(offset as usize..(offset + len) as usize))),
        BlobSource::File(path) => {
            let mut file = tokio::fs::File::open(path).await.map_err(|e| file_error(path, &e))?;
            file.seek(SeekFrom::Start(offset)).await.map_err(|e| file_error(path, &e))?;
            let stream = futures_util::stream::try_unfold((file, len), |(mut file, remaining)| async move {
                if remaining == 0 {
                    return Ok(None);
                }
                let mut buf = BytesMut::zeroed(remaining.min(FILE_READ_BYTES as u64) as usize);
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file ended before the blob size"));
                }
                buf.truncate(n);
                Ok::<_, io::Error>(Some((buf.freeze(), (file, remaining - n as u64))))
            });
            Ok(UploadBody::Stream(Body::wrap_stream(stream)))
        }
    }
}

fn file_error(path: &Path, e: &io::Error) -> ProbeError {
    ProbeError::new(Reason::UploadFailed, format!("reading {}: {e}", path.display()))
}

/// A request that got no HTTP answer.
fn transport_error(label: &str, e: &reqwest::Error) -> ProbeError {
    let reason = if e.is_timeout() {
        Reason::Timeout
    } else if e.is_connect() {
        Reason::ConnectError
    } else {
        Reason::UploadFailed
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ProbeError::new(reason, format!("{label}: {message}"))
}

/// A request the registry answered with an error status.
async fn status_error(label: &str, response: Response) -> ProbeError {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = read_capped(response).await;
    let mut error = classify_status(status, &body, RequestKind::Upload, retry_after);
    if !matches!(error.reason, Reason::AuthFailed | Reason::RateLimited) {
        error.reason = Reason::UploadFailed;
    }
    error.context(label)
}

async fn read_capped(mut response: Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = ERROR_BODY_LIMIT - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == ERROR_BODY_LIMIT {
            break;
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_base_path() {
        let plain = Url::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!(
            endpoint(&plain, "v2/a/b/blobs/uploads/").unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/"
        );
        let prefixed = Url::parse("https://example.org/mirror").unwrap();
        assert_eq!(
            endpoint(&prefixed, "v2/x/manifests/1").unwrap().as_str(),
            "https://example.org/mirror/v2/x/manifests/1"
        );
    }

    #[test]
    fn locations_may_be_relative_or_absolute() {
        let request = Url::parse("http://127.0.0.1:5000/v2/a/blobs/uploads/").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(LOCATION, "/v2/a/blobs/uploads/u1?_state=x".parse().unwrap());
        assert_eq!(
            next_location(&request, &headers, "POST").unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=x"
        );
        headers.insert(LOCATION, "http://other:1/up/u2".parse().unwrap());
        assert_eq!(next_location(&request, &headers, "POST").unwrap().as_str(), "http://other:1/up/u2");
        let e = next_location(&request, &HeaderMap::new(), "PATCH chunk 1 of 2").unwrap_err();
        assert_eq!(e.reason, Reason::UploadFailed);
        assert!(e.message.starts_with("PATCH chunk 1 of 2: "), "{}", e.message);
    }

    #[tokio::test]
    async fn a_stream_is_not_sent_where_a_challenge_could_ask_for_it_again() {
        let transport = Transport::new(&Default::default()).unwrap();
        let base = Url::parse("http://127.0.0.1:1").unwrap();
        let target = Target { registry: base.clone(), repo: "a".into() };
        let stream = futures_util::stream::iter([Ok::<_, io::Error>(Bytes::from_static(b"x"))]);
        let request = PushRequest::new(Method::PATCH, base.join("/v2/a/blobs/uploads/u").unwrap())
            .body(UploadBody::Stream(Body::wrap_stream(stream)));
        let err = PushClient::from(&transport).send(&target, request, "PATCH chunk 1 of 1").await.unwrap_err();
        assert_eq!(err.reason, Reason::UploadFailed);
        assert!(err.message.starts_with("PATCH chunk 1 of 1: a streamed body cannot go"), "{}", err.message);
    }

    #[test]
    fn a_digest_the_registry_did_not_store_is_an_error() {
        let d = Digest::of(b"a");
        let mut headers = HeaderMap::new();
        assert!(check_digest_header(&headers, &d, "PUT").is_ok());
        headers.insert("docker-content-digest", d.to_string().parse().unwrap());
        assert!(check_digest_header(&headers, &d, "PUT").is_ok());
        headers.insert("docker-content-digest", Digest::of(b"b").to_string().parse().unwrap());
        assert_eq!(check_digest_header(&headers, &d, "PUT").unwrap_err().reason, Reason::UploadFailed);
    }
}
