//! Streaming verification of one blob the way a container runtime checks a layer, in
//! flat memory whatever its size: sha256 and byte count of the compressed stream against
//! the manifest descriptor (`blob.rs`), decompression by media type (`decompress.rs`),
//! sha256 and byte count of the tar stream against the config's `rootfs.diff_ids`
//! (`diff_id.rs`; the two sha256 are computed together, `sha256.rs`), and a walk of the
//! tar headers to the real end (`tar_walk.rs`), after which both streams are drained so
//! the digests cover every byte. `channel.rs` feeds it from an async download.
//!
//! What it is not: it knows nothing about HTTP, registries or retries. It reads any
//! [`BufRead`] (in place: the compressed bytes are inflated where the source holds
//! them) and returns a plain [`LayerReport`] whose reason is decided where the failure
//! was born; `probe` turns that into the layer entry of a result. It never writes files
//! and never keeps entry data: content assertions plug in through [`EntryVisitor`].
//!
//! The verdict, in priority order: the source failed (its own reason; an early end is
//! `blob_truncated`), `blob_size_mismatch`, `blob_truncated`, `blob_digest_mismatch`,
//! `decompress_error` / `tar_error` / `too_large` (whichever happened first), and
//! `diff_id_mismatch`. After a decompression or tar failure the compressed stream is still
//! read to its end, so a truncated or corrupted download is reported as such.

mod blob;
mod channel;
pub mod content;
mod decompress;
mod diff_id;
mod igzip;
mod sha256;
mod stage;
mod tar_walk;

#[cfg(test)]
mod tests;

use std::io::{BufRead, Read};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::reason::{ProbeError, Reason};

pub use crate::media_types::Compression;
pub use blob::{SourceError, source_error};
pub use channel::{ChunkReader, ChunkSender, ReaderClosed, chunk_channel};
pub use decompress::{decoder, decompressed_len};
pub use stage::Claim;
pub use tar_walk::{EntryInfo, EntryKind, EntryVisitor};

use blob::BlobReader;
use diff_id::{DiffIdReader, TarHashing, UncompressedCap};

/// `Read` for a [`BufRead`] whose buffer is the data itself: copy from it, then consume.
fn read_from_buffer<B: BufRead>(source: &mut B, buf: &mut [u8]) -> std::io::Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    let n = source.fill_buf()?.read(buf)?;
    source.consume(n);
    Ok(n)
}

/// Scratch for draining the tar stream past its end-of-archive marker: 64 KiB keeps it
/// out of the allocator's mmap range, where `read` into a buffer copies several times
/// slower.
const BUFFER_SIZE: usize = 64 * 1024;

/// How much of a blob was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckMode {
    /// Digest and size, then decompressed, diff_id checked and tar walked.
    Full,
    /// Digest and size only (already verified on another frontend, or not a layer).
    DigestOnly,
}

impl CheckMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckMode::Full => "full",
            CheckMode::DigestOnly => "digest_only",
        }
    }
}

/// Caps on one layer's decompressed stream; `0` turns a cap off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerLimits {
    pub max_uncompressed_bytes: u64,
    /// Decompressed bytes per byte of the descriptor size.
    pub max_uncompressed_ratio: f64,
}

impl LayerLimits {
    pub const UNLIMITED: LayerLimits = LayerLimits { max_uncompressed_bytes: 0, max_uncompressed_ratio: 0.0 };
}

/// What a blob should be, from the manifest descriptor and the image config.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    pub digest: Digest,
    pub size: u64,
    /// `None`: not a layer (config, artifact blob): digest and size only.
    pub compression: Option<Compression>,
    /// From the config's `rootfs.diff_ids`; `None` if unknown (then computed, not checked).
    pub diff_id: Option<Digest>,
    pub mode: CheckMode,
    pub limits: LayerLimits,
}

impl LayerSpec {
    /// A blob that is not unpacked (an image config, a read-back blob): sha256 and size
    /// against its descriptor, nothing else.
    pub fn digest_only(digest: Digest, size: u64) -> LayerSpec {
        LayerSpec {
            digest,
            size,
            compression: None,
            diff_id: None,
            mode: CheckMode::DigestOnly,
            limits: LayerLimits::UNLIMITED,
        }
    }
}

/// What verifying one blob found.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// Compressed bytes read (at most `size + 1`).
    pub bytes: u64,
    /// sha256 of the first `min(bytes, size)` bytes; `None` only if the source failed.
    pub computed_digest: Option<Digest>,
    /// Decompressed bytes read; `None` when not decompressed.
    pub uncompressed_bytes: Option<u64>,
    /// sha256 of the whole decompressed stream; `None` unless it was read to its end.
    pub computed_diff_id: Option<Digest>,
    /// Tar entries walked (PAX global headers not counted).
    pub tar_entries: u64,
    /// What was actually done: `DigestOnly` for non-layers too.
    pub check: CheckMode,
    /// `None`: verified.
    pub error: Option<ProbeError>,
}

impl LayerReport {
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    pub fn reason(&self) -> Option<Reason> {
        self.error.as_ref().map(|e| e.reason)
    }
}

/// Verify one blob read from `source` against `spec`, inflating straight out of its
/// buffers (wrap a plain [`Read`] in a [`std::io::BufReader`]). Reads at most `spec.size + 1`
/// bytes and never panics on any input; blocks while `source` does, so run it on a
/// blocking thread. `visitor`, if given, sees every tar entry (full checks only). A
/// large compressed layer may be inflated on a second thread (`stage.rs`) while a core
/// would otherwise idle; the report is the same either way.
pub fn verify_layer<R: BufRead + Send>(
    source: R,
    spec: &LayerSpec,
    visitor: Option<&mut dyn EntryVisitor>,
) -> LayerReport {
    let _busy = stage::Busy::start();
    verify_claimed_layer(source, spec, visitor)
}

/// [`verify_layer`] for a layer of a pull whose [`Claim`] counts the core it takes.
pub fn verify_claimed_layer<R: BufRead + Send>(
    source: R,
    spec: &LayerSpec,
    visitor: Option<&mut dyn EntryVisitor>,
) -> LayerReport {
    verify_layer_in(source, spec, visitor, stage::Staging::for_layer(spec.size))
}

/// [`verify_layer`], with the decoder of a compressed layer moved to a thread of its own
/// as `staging` says (the verdict is the same either way).
fn verify_layer_in<R: BufRead + Send>(
    source: R,
    spec: &LayerSpec,
    visitor: Option<&mut dyn EntryVisitor>,
    staging: stage::Staging,
) -> LayerReport {
    let mut blob = BlobReader::new(source, spec.size);
    let unpacked = match (spec.mode, spec.compression) {
        (CheckMode::Full, Some(compression)) => Some(unpack(&mut blob, compression, spec, visitor, staging)),
        _ => None,
    };
    // The tar side is done: what the compressed side still hands out is hashed there.
    blob.hash_here();
    // Whatever the decoder or the walk left: the root cause of their failure may be here.
    blob.drain();
    let blob = blob.finish(&spec.digest);

    let mut report = LayerReport {
        bytes: blob.bytes,
        computed_digest: blob.digest,
        uncompressed_bytes: None,
        computed_diff_id: None,
        tar_entries: 0,
        check: CheckMode::DigestOnly,
        error: blob.error,
    };
    let Some(unpacked) = unpacked else {
        return report;
    };
    report.check = CheckMode::Full;
    report.uncompressed_bytes = Some(unpacked.bytes);
    report.tar_entries = unpacked.tar_entries;
    report.computed_diff_id = match spec.compression {
        // The stream is the blob itself: its digest is the diff_id.
        Some(Compression::None) if unpacked.complete => report.computed_digest,
        _ => unpacked.diff_id,
    };
    if report.error.is_none() {
        report.error = unpacked.failure.or_else(|| diff_id_mismatch(spec, &report));
    }
    report
}

fn diff_id_mismatch(spec: &LayerSpec, report: &LayerReport) -> Option<ProbeError> {
    let expected = spec.diff_id?;
    let got = report.computed_diff_id?;
    if got == expected {
        return None;
    }
    let bytes = report.uncompressed_bytes.unwrap_or(0);
    let message = format!("uncompressed sha256 {got} ({bytes} bytes), config diff_id {expected}");
    Some(ProbeError::new(Reason::DiffIdMismatch, message))
}

/// The decompressed side of one layer.
struct Unpacked {
    bytes: u64,
    /// The stream was read to its end without a failure.
    complete: bool,
    /// Its sha256, when it was hashed (compressed layers).
    diff_id: Option<Digest>,
    tar_entries: u64,
    /// `decompress_error`, `tar_error` or `too_large`.
    failure: Option<ProbeError>,
}

fn unpack<R: BufRead + Send>(
    blob: &mut BlobReader<R>,
    compression: Compression,
    spec: &LayerSpec,
    visitor: Option<&mut dyn EntryVisitor>,
    staging: stage::Staging,
) -> Unpacked {
    let format = match compression {
        Compression::None => "tar",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    };
    // The tar stream's reader hashes the compressed bytes too, beside its own (`sha256.rs`).
    let queue = (compression != Compression::None).then(|| blob.hash_beside_tar());
    let decoder = match decompress::decoder(compression, blob) {
        Ok(decoder) => decoder,
        Err(e) => {
            return Unpacked {
                bytes: 0,
                complete: false,
                diff_id: None,
                tar_entries: 0,
                failure: Some(ProbeError::new(Reason::DecompressError, format!("{format} decoder: {e}"))),
            };
        }
    };
    let cap = UncompressedCap::new(&spec.limits, spec.size);
    let Some(queue) = queue else {
        return walk_stream(DiffIdReader::new(decoder, format, TarHashing::None, cap), visitor);
    };
    let hashing = TarHashing::BesideCompressed(queue);
    stage::adaptive(decoder, staging, |reader| walk_stream(DiffIdReader::new(reader, format, hashing, cap), visitor))
}

/// Walk the decompressed stream's tar to its end and read what follows.
fn walk_stream<D: Read>(mut stream: DiffIdReader<D>, visitor: Option<&mut dyn EntryVisitor>) -> Unpacked {
    let walk = tar_walk::walk(&mut stream, visitor);
    if walk.failure.is_none() {
        // Padding after the end-of-archive marker is part of the diff_id.
        let _ = stream.drain(&mut vec![0u8; BUFFER_SIZE]);
    }
    // A failure of the stream under the walk is the cause of whatever the walk saw.
    let failure = stream.failure().cloned().or(walk.failure);
    let bytes = stream.bytes_read();
    let complete = failure.is_none() && stream.is_complete();
    let diff_id = if complete { stream.finish() } else { None };
    Unpacked { bytes, complete, diff_id, tar_entries: walk.entries, failure }
}
