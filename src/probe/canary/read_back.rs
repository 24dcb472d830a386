//! Reading the pushed canary back through one frontend: the manifest by the
//! run's tag and every blob by digest, each checked byte for byte (sha256 and
//! size), polled until all of it is served or the consistency deadline passes.
//!
//! Something not there yet (404, `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`) and
//! transient trouble are polled again; bytes that are there but wrong are a
//! verdict at once (integrity failures are never retried). At the deadline,
//! what is still not served is `not_replicated`, naming each missing piece;
//! a frontend that kept failing otherwise keeps that failure's reason.

use std::time::{Duration, Instant};

use super::image::{CanaryBlob, CanaryImage};
use crate::digest::Digest;
use crate::frontend::Frontend;
use crate::probe::blob;
use crate::reason::{ProbeError, Reason};
use crate::registry::client::RegistryClient;
use crate::registry::transport::TransportOptions;
use crate::result::{Check, LayerCheck};
use crate::verify::{self, ChunkReader, LayerSpec};

/// The first pause between polls; it doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(1);
/// Every request may take at least this long, even when the deadline is nearer.
const ATTEMPT_FLOOR: Duration = Duration::from_secs(5);

/// What reading back through one frontend found.
#[derive(Debug, Default)]
pub struct ReadBack {
    /// Seconds from the end of the push until the frontend served everything.
    pub visible_after: Option<Duration>,
    pub failure: Option<ProbeError>,
    /// One check per blob (config, layer).
    pub blobs: Vec<LayerCheck>,
    /// `dns`, `connect` of the frontend's first connection.
    pub phases: Vec<(&'static str, f64)>,
    /// The manifest's bytes were served and hash to the pushed digest.
    pub manifest_served: bool,
}

/// One thing to read back.
#[derive(Debug)]
enum Piece<'a> {
    Manifest,
    Blob(&'a CanaryBlob),
}

#[derive(Debug)]
enum State {
    /// Not served yet; the last answer.
    Pending(Option<ProbeError>),
    Served(LayerCheck),
}

/// Poll `frontend` until it serves the whole image or `deadline` passes.
pub async fn read_back(
    frontend: &Frontend,
    transport: &TransportOptions,
    repository: &str,
    image: &CanaryImage,
    max_manifest_bytes: u64,
    pushed_at: Instant,
    deadline: Instant,
) -> ReadBack {
    let client = match frontend.client(transport) {
        Ok(client) => client,
        Err(err) => return ReadBack { failure: Some(err), ..ReadBack::default() },
    };
    let reader = Reader { client: &client, frontend, repository, image, max_manifest_bytes };
    let mut pieces: Vec<(Piece, State)> = vec![(Piece::Manifest, State::Pending(None))];
    pieces.extend(image.blobs().into_iter().map(|b| (Piece::Blob(b), State::Pending(None))));
    let mut pause = POLL_FIRST;
    let outcome = loop {
        for (piece, state) in pieces.iter_mut() {
            if matches!(state, State::Served(_)) {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now()).max(ATTEMPT_FLOOR);
            let answer = match tokio::time::timeout(left, reader.fetch(piece)).await {
                Ok(answer) => answer,
                Err(_) => Err(ProbeError::new(Reason::Timeout, format!("no answer within {left:?}"))),
            };
            match answer {
                Ok(check) => *state = State::Served(check),
                Err(err) if is_final(&err) => {
                    *state = State::Pending(Some(err.clone()));
                    break;
                }
                Err(err) => *state = State::Pending(Some(err)),
            }
        }
        if let Some(err) = pieces.iter().find_map(|(piece, s)| match s {
            State::Pending(Some(err)) if is_final(err) => Some(err.clone().context(reader.describe(piece))),
            _ => None,
        }) {
            break Err(err);
        }
        if pieces.iter().all(|(_, s)| matches!(s, State::Served(_))) {
            break Ok(pushed_at.elapsed());
        }
        let now = Instant::now();
        if now >= deadline {
            break Err(missing_at_deadline(&reader, &pieces, deadline.saturating_duration_since(pushed_at)));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(POLL_MAX);
    };
    let phases = connection_phases(&client);
    let manifest_served = matches!(pieces[0].1, State::Served(_));
    let blobs = pieces
        .into_iter()
        .filter_map(|(piece, state)| match (piece, state) {
            (Piece::Manifest, _) => None,
            (Piece::Blob(_), State::Served(check)) => Some(check),
            (Piece::Blob(blob), State::Pending(last)) => Some(unserved_check(blob, last.as_ref())),
        })
        .collect();
    match outcome {
        Ok(after) => ReadBack { visible_after: Some(after), failure: None, blobs, phases, manifest_served },
        Err(err) => ReadBack { visible_after: None, failure: Some(err), blobs, phases, manifest_served },
    }
}

/// `dns`, `connect`, `tls` (https only) and `auth` of the frontend's connection.
fn connection_phases(client: &RegistryClient) -> Vec<(&'static str, f64)> {
    let timings = client.timings();
    let auth = client.transport().auth_time();
    [("dns", timings.dns), ("connect", timings.connect), ("tls", timings.tls), ("auth", auth)]
        .into_iter()
        .filter_map(|(phase, took)| took.map(|took| (phase, took.as_secs_f64())))
        .collect()
}

/// Bytes that are there but wrong: waiting cannot fix them.
fn is_final(err: &ProbeError) -> bool {
    err.reason.is_integrity() && !matches!(err.reason, Reason::ManifestUnknown | Reason::BlobUnknown)
}

/// Still "not there" (404) for every missing piece: `not_replicated`, naming
/// each; else the first other failure (unreachable, 5xx, refused), with its reason.
fn missing_at_deadline(reader: &Reader<'_>, pieces: &[(Piece<'_>, State)], waited: Duration) -> ProbeError {
    let missing: Vec<(&Piece, Option<&ProbeError>)> = pieces
        .iter()
        .filter_map(|(piece, state)| match state {
            State::Pending(last) => Some((piece, last.as_ref())),
            State::Served(_) => None,
        })
        .collect();
    let absent = |err: Option<&ProbeError>| {
        err.is_none_or(|e| matches!(e.reason, Reason::ManifestUnknown | Reason::BlobUnknown))
    };
    if let Some((piece, Some(err))) = missing.iter().find(|(_, err)| !absent(*err)) {
        let mut err = (*err).clone();
        err.message = format!(
            "frontend {} still failing {:.1}s after the push: {}: {}",
            reader.frontend.label,
            waited.as_secs_f64(),
            reader.describe(piece),
            err.message
        );
        return err;
    }
    let listed: Vec<String> = missing
        .iter()
        .map(|(piece, last)| match last {
            Some(err) => format!("{} (last answer: {})", reader.describe(piece), err.message),
            None => reader.describe(piece),
        })
        .collect();
    let registry_error = missing.iter().find_map(|(_, last)| last.and_then(|e| e.registry_error.clone()));
    ProbeError::new(
        Reason::NotReplicated,
        format!(
            "frontend {} still does not serve {} {:.1}s after the push",
            reader.frontend.label,
            listed.join("; "),
            waited.as_secs_f64()
        ),
    )
    .with_registry_error(registry_error)
}

/// A blob the frontend did not serve (its last answer), or did not get asked for
/// because the read-back stopped at an earlier verdict.
fn unserved_check(piece: &CanaryBlob, last: Option<&ProbeError>) -> LayerCheck {
    let (reason, error) = match last {
        Some(err) if err.reason == Reason::BlobUnknown => {
            (Some(Reason::NotReplicated), format!("not served (last answer: {})", err.message))
        }
        Some(err) => (Some(err.reason), err.message.clone()),
        None => (None, "not read: the read-back stopped at an earlier failure".to_string()),
    };
    LayerCheck {
        ok: false,
        reason,
        error: Some(crate::redact::redact_text(&error)),
        ..blob::unread(&piece.digest, piece.media_type, piece.size())
    }
}

struct Reader<'a> {
    client: &'a RegistryClient,
    frontend: &'a Frontend,
    repository: &'a str,
    image: &'a CanaryImage,
    max_manifest_bytes: u64,
}

impl Reader<'_> {
    fn describe(&self, piece: &Piece<'_>) -> String {
        match piece {
            Piece::Manifest => {
                format!("manifest {}:{} ({})", self.repository, self.image.tag, self.image.manifest.digest.short())
            }
            Piece::Blob(blob) => format!("blob {}", blob.describe()),
        }
    }

    async fn fetch(&self, piece: &Piece<'_>) -> Result<LayerCheck, ProbeError> {
        match piece {
            Piece::Manifest => self.manifest().await,
            Piece::Blob(blob) => self.blob(blob).await,
        }
    }

    /// The manifest by the run's tag: its bytes must hash to what was pushed.
    async fn manifest(&self) -> Result<LayerCheck, ProbeError> {
        let started = Instant::now();
        let response = self.client.manifest(self.repository, &self.image.tag, self.max_manifest_bytes).await?;
        let got = Digest::of(&response.body);
        if got != self.image.manifest.digest {
            return Err(ProbeError::new(
                Reason::ManifestDigestMismatch,
                format!("the bytes served hash to {got} ({} bytes)", response.body.len()),
            ));
        }
        let entry = blob::unread(&got, self.image.manifest.media_type, self.image.manifest.size());
        Ok(LayerCheck {
            check: Some(Check::DigestOnly),
            bytes: response.body.len() as u64,
            duration_seconds: started.elapsed().as_secs_f64(),
            ..entry
        })
    }

    /// A blob by digest, streamed into the verifier's digest-only check: sha256 and byte
    /// count against what was pushed, never more bytes read than pushed.
    async fn blob(&self, pushed: &CanaryBlob) -> Result<LayerCheck, ProbeError> {
        let started = Instant::now();
        let response = self.client.blob(self.repository, &pushed.digest).await?;
        let mut source = response.source;
        blob::attribute_to_pin(&mut source, self.frontend.pin, self.client.base());
        let spec = LayerSpec::digest_only(pushed.digest, pushed.size());
        let verifier = move |reader: ChunkReader| verify::verify_layer(reader, &spec, None);
        let report = blob::verify_body(response.response, |_| {}, None, verifier).await?;
        if let Some(err) = report.error {
            return Err(blob::with_cache(err, &source));
        }
        let entry = blob::unread(&pushed.digest, pushed.media_type, pushed.size());
        Ok(blob::judged(entry, &report, &source, started.elapsed(), None))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::Router;
    use axum::extract::{Request, State};
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use bytes::Bytes;
    use time::OffsetDateTime;
    use url::Url;

    use super::*;

    /// What a frontend serves in place of the pushed layer.
    type Edit = fn(&[u8]) -> Vec<u8>;

    /// A frontend on loopback serving the canary as pushed, except the layer, changed by `edit`.
    async fn frontend_serving(image: &CanaryImage, edit: Edit) -> Frontend {
        let app = Router::new().fallback(serve).with_state(Arc::new((image.clone(), edit)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Frontend::endpoint("f1", url)
    }

    async fn serve(State(served): State<Arc<(CanaryImage, Edit)>>, request: Request) -> Response {
        let (image, edit) = &*served;
        let path = request.uri().path();
        if path.ends_with(&format!("/manifests/{}", image.tag)) {
            return ([(header::CONTENT_TYPE, image.manifest.media_type)], image.manifest.bytes.clone()).into_response();
        }
        let body = if path.ends_with(&format!("/blobs/{}", image.layer.digest)) {
            Bytes::from(edit(&image.layer.bytes))
        } else if path.ends_with(&format!("/blobs/{}", image.config.digest)) {
            image.config.bytes.clone()
        } else {
            return StatusCode::NOT_FOUND.into_response();
        };
        ([("x-cache-status", "HIT")], body).into_response()
    }

    async fn read_back_through(edit: Edit) -> (CanaryImage, ReadBack) {
        let image = CanaryImage::build(4096, "pullprobe-canary-test-1", OffsetDateTime::now_utc()).unwrap();
        let frontend = frontend_serving(&image, edit).await;
        let now = Instant::now();
        let deadline = now + Duration::from_secs(5);
        let back = read_back(&frontend, &TransportOptions::default(), "canary", &image, 4 << 20, now, deadline).await;
        (image, back)
    }

    #[tokio::test]
    async fn a_canary_served_as_pushed_is_visible_with_every_blob_checked_by_digest() {
        let (image, back) = read_back_through(|bytes| bytes.to_vec()).await;
        assert!(back.failure.is_none(), "{:?}", back.failure);
        assert!(back.visible_after.is_some() && back.manifest_served, "{back:?}");
        assert_eq!(back.blobs.len(), image.blobs().len(), "{back:?}");
        for (check, pushed) in back.blobs.iter().zip(image.blobs()) {
            assert_eq!(check.digest, pushed.digest.to_string());
            assert_eq!((check.ok, check.check, check.bytes), (true, Some(Check::DigestOnly), pushed.size()));
            assert_eq!(check.cache_status.as_deref(), Some("HIT"));
        }
    }

    #[tokio::test]
    async fn wrong_bytes_get_the_verifiers_verdict_at_once() {
        let flipped: Edit = |bytes| {
            let mut bytes = bytes.to_vec();
            bytes[600] ^= 1;
            bytes
        };
        let cut: Edit = |bytes| bytes[..bytes.len() / 2].to_vec();
        let longer: Edit = |bytes| [bytes, b"x"].concat();
        let cases =
            [(flipped, Reason::BlobDigestMismatch), (cut, Reason::BlobTruncated), (longer, Reason::BlobSizeMismatch)];
        for (edit, reason) in cases {
            let (image, back) = read_back_through(edit).await;
            let failure = back.failure.expect("a verdict on the layer");
            assert_eq!(failure.reason, reason, "{}", failure.message);
            let names = failure.message.contains(&image.layer.describe()) && failure.message.contains("cache HIT");
            assert!(names, "names the layer and the cache that served it: {}", failure.message);
            let layer = back.blobs.iter().find(|b| b.digest == image.layer.digest.to_string()).expect("the layer");
            assert_eq!((layer.ok, layer.reason), (false, Some(reason)), "{layer:?}");
        }
    }
}
