//! One blob read through a frontend and judged by the verifier: the registry's answer is
//! read chunk by chunk and handed to [`verify::verify_layer`] on a blocking thread, so
//! memory stays flat whatever the blob's size and the verdict — reason and message — is
//! the verifier's. The pull's layers and the canary's read-back both read blobs this way,
//! and both write the blob's `layers[]` entry with the functions here.
//!
//! What it is not: it fetches nothing (the registry client does) and retries nothing
//! (the probe that asks decides); it adds to a verdict only where the bytes came from.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Response;
use url::Url;

use crate::digest::Digest;
use crate::probe::bandwidth::Bandwidth;
use crate::reason::{ProbeError, Reason};
use crate::registry::client::BlobSource;
use crate::registry::errors::{classify_transport, is_incomplete_body};
use crate::result::{Check, LayerCheck};
use crate::verify::{self, CheckMode, ChunkReader, LayerReport};

/// Chunks and bytes buffered between the network and the verifier of one blob: enough
/// to keep the verifier fed while the connection is read, little enough that memory stays
/// flat (the HTTP client's chunks grow to several hundred KiB on a fast connection).
const CHANNEL_CHUNKS: usize = 64;
const CHANNEL_BYTES: usize = 1 << 20;

/// Stream the body of `response` into `verifier`, run on a blocking thread over the
/// chunks as they arrive; `on_chunk` sees each chunk's length as it is handed over. A
/// body that ends early just ends (the verifier counts the bytes); a failed read reaches
/// the verifier as the failure of its source.
pub async fn verify_body(
    mut response: Response,
    mut on_chunk: impl FnMut(usize),
    bandwidth: Option<&Bandwidth>,
    verifier: impl FnOnce(ChunkReader) -> LayerReport + Send + 'static,
) -> Result<LayerReport, ProbeError> {
    let (sender, reader) = verify::chunk_channel(CHANNEL_CHUNKS, CHANNEL_BYTES);
    let verifier = tokio::task::spawn_blocking(move || verifier(reader));
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                on_chunk(chunk.len());
                if let Some(cap) = bandwidth {
                    cap.take(chunk.len()).await;
                }
                if sender.send(Ok(chunk)).await.is_err() {
                    break; // the verifier has seen enough (e.g. more bytes than the descriptor)
                }
            }
            Ok(None) => break,
            Err(e) if is_incomplete_body(&e) => break,
            Err(e) => {
                let _ = sender.send(Err(classify_transport(&e, "reading the body"))).await;
                break;
            }
        }
    }
    drop(sender);
    verifier
        .await
        .map_err(|join| ProbeError::new(Reason::DecompressError, format!("verifier stopped unexpectedly: {join}")))
}

/// Bytes from an address-pinned frontend itself came from its address, not from whatever
/// its name resolves to: `served_by` says so. Bytes from elsewhere (a redirect) keep their host.
pub fn attribute_to_pin(source: &mut BlobSource, pin: Option<SocketAddr>, base: &Url) {
    let (Some(addr), Some(host)) = (pin, base.host_str()) else { return };
    let host_port = match base.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    if source.served_by.as_deref() == Some(host_port.as_str()) {
        source.served_by = Some(addr.to_string());
    }
}

/// A verdict on bytes, with the cache that answered and the host that sent them.
pub fn with_cache(mut err: ProbeError, source: &BlobSource) -> ProbeError {
    if let Some(cache) = &source.cache_status {
        err.message.push_str(&format!(", cache {cache}"));
        if let Some(by) = &source.served_by {
            err.message.push_str(&format!(" on {by}"));
        }
    }
    err
}

/// The `layers[]` entry of a blob not read (yet): nothing received, no verdict.
pub fn unread(digest: &Digest, media_type: &str, size: u64) -> LayerCheck {
    LayerCheck {
        digest: digest.to_string(),
        media_type: media_type.to_string(),
        size,
        ok: true,
        reason: None,
        check: None,
        bytes: 0,
        uncompressed_bytes: None,
        duration_seconds: 0.0,
        cache_status: None,
        served_by: None,
        error: None,
    }
}

/// The entry of a blob that failed before the verifier judged its bytes, or without them.
pub fn failed(entry: LayerCheck, err: &ProbeError, source: Option<&BlobSource>) -> LayerCheck {
    LayerCheck {
        ok: false,
        reason: Some(err.reason),
        cache_status: source.and_then(|s| s.cache_status.clone()),
        served_by: source.and_then(|s| s.served_by.clone()),
        error: Some(crate::redact::redact_text(&err.message)),
        ..entry
    }
}

/// The entry of a blob the verifier judged: what arrived, from where, in how long, and
/// `error`, the verdict as the probe words it (`None`: verified).
pub fn judged(
    entry: LayerCheck,
    report: &LayerReport,
    source: &BlobSource,
    took: Duration,
    error: Option<&ProbeError>,
) -> LayerCheck {
    LayerCheck {
        ok: error.is_none(),
        reason: error.map(|e| e.reason),
        check: Some(match report.check {
            CheckMode::Full => Check::Full,
            CheckMode::DigestOnly => Check::DigestOnly,
        }),
        bytes: report.bytes,
        uncompressed_bytes: report.uncompressed_bytes,
        duration_seconds: took.as_secs_f64(),
        cache_status: source.cache_status.clone(),
        served_by: source.served_by.clone(),
        error: error.map(|e| crate::redact::redact_text(&e.message)),
        ..entry
    }
}
