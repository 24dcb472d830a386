//! The decompressed stream: its sha256 (the `diff_id` of the image config) and byte
//! count, capped by the uncompressed-size limits. Each read also hashes as many of the
//! compressed stream's queued bytes beside it (`sha256.rs`).
//!
//! Every decompressed byte passes through here exactly once, whether the tar walk
//! reads it, skips it, or drains it after the end-of-archive marker. A failure of the
//! decoder below (`decompress_error`) or the cap (`too_large`) is recorded where it
//! happens and latched: later reads fail the same way, because a decoder that has
//! failed may otherwise answer as if the stream had ended.

use std::io::{self, ErrorKind, Read};

use crate::digest::Digest;
use crate::reason::{ProbeError, Reason};

use super::LayerLimits;
use super::sha256::{CompressedQueue, Sha256};

/// The largest decompressed size allowed for one layer, and which limit set it.
#[derive(Debug, Clone, Copy)]
pub(super) struct UncompressedCap {
    bytes: u64,
    limit: CapLimit,
}

#[derive(Debug, Clone, Copy)]
enum CapLimit {
    None,
    Bytes,
    Ratio { ratio: f64, compressed: u64 },
}

impl UncompressedCap {
    pub fn new(limits: &LayerLimits, compressed_size: u64) -> Self {
        let mut cap = UncompressedCap { bytes: u64::MAX, limit: CapLimit::None };
        if limits.max_uncompressed_bytes > 0 {
            cap.bytes = limits.max_uncompressed_bytes;
            cap.limit = CapLimit::Bytes;
        }
        let ratio = limits.max_uncompressed_ratio;
        if ratio > 0.0 {
            // `as` saturates: a huge ratio means no cap from it.
            let by_ratio = (ratio * compressed_size as f64) as u64;
            if by_ratio < cap.bytes {
                cap.bytes = by_ratio;
                cap.limit = CapLimit::Ratio { ratio, compressed: compressed_size };
            }
        }
        cap
    }

    fn exceeded(&self, got: u64) -> ProbeError {
        let message = match self.limit {
            CapLimit::Ratio { ratio, compressed } => format!(
                "uncompressed stream is over max_uncompressed_ratio {ratio} x {compressed} compressed bytes = {} bytes (stopped at {got})",
                self.bytes
            ),
            _ => format!("uncompressed stream is over max_uncompressed_bytes {} (stopped at {got})", self.bytes),
        };
        ProbeError::new(Reason::TooLarge, message)
    }
}

/// How the decompressed stream is hashed.
pub(super) enum TarHashing {
    /// Not at all: the stream is the blob itself (an uncompressed layer), whose digest
    /// is the diff_id.
    None,
    /// Beside the compressed stream's bytes, taken from this queue (`sha256.rs`).
    BesideCompressed(CompressedQueue),
}

/// Hashes (optionally) and counts the decompressed stream, failing once it passes the cap.
pub(super) struct DiffIdReader<R> {
    decoder: R,
    /// What the decoder is, for messages ("gzip", "zstd").
    format: &'static str,
    /// The stream's sha256 and the queue of compressed bytes to hash beside it; `None`
    /// when the stream is not hashed ([`TarHashing::None`]).
    hashing: Option<(Sha256, CompressedQueue)>,
    bytes: u64,
    cap: UncompressedCap,
    failure: Option<ProbeError>,
    eof: bool,
}

impl<R: Read> DiffIdReader<R> {
    pub fn new(decoder: R, format: &'static str, hashing: TarHashing, cap: UncompressedCap) -> Self {
        let hashing = match hashing {
            TarHashing::None => None,
            TarHashing::BesideCompressed(queue) => Some((Sha256::new(), queue)),
        };
        DiffIdReader { decoder, format, hashing, bytes: 0, cap, failure: None, eof: false }
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// A failure of the decoder or the cap, if one happened.
    pub fn failure(&self) -> Option<&ProbeError> {
        self.failure.as_ref()
    }

    /// Read the stream to its end (everything after the tar end-of-archive marker is
    /// part of the diff_id too).
    pub fn drain(&mut self, scratch: &mut [u8]) -> io::Result<()> {
        while self.read(scratch)? > 0 {}
        Ok(())
    }

    /// Read to its end without a failure.
    pub fn is_complete(&self) -> bool {
        self.eof && self.failure.is_none()
    }

    /// The diff_id, if the stream was hashed and read to its end without a failure.
    pub fn finish(self) -> Option<Digest> {
        if !self.is_complete() {
            return None;
        }
        self.hashing.map(|(hasher, _)| hasher.finish())
    }

    fn latched(&self) -> io::Error {
        io::Error::new(ErrorKind::InvalidData, "layer stream already failed")
    }
}

impl<R: Read> Read for DiffIdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failure.is_some() {
            return Err(self.latched());
        }
        if self.eof || buf.is_empty() {
            return Ok(0);
        }
        // Ask for at most one byte past the cap: enough to tell "at the cap" from "over it".
        let allowed = self.cap.bytes.saturating_sub(self.bytes).saturating_add(1);
        let want = buf.len().min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let n = match self.decoder.read(&mut buf[..want]) {
            Ok(n) => n.min(want),
            Err(e) if e.kind() == ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let message = format!("{} stream: {e} (after {} uncompressed bytes)", self.format, self.bytes);
                self.failure = Some(ProbeError::new(Reason::DecompressError, message));
                return Err(e);
            }
        };
        if n == 0 {
            self.eof = true;
            return Ok(0);
        }
        self.bytes += n as u64;
        if self.bytes > self.cap.bytes {
            self.failure = Some(self.cap.exceeded(self.bytes));
            return Err(self.latched());
        }
        if let Some((hasher, queue)) = &mut self.hashing {
            queue.hash_beside(hasher, &buf[..n]);
        }
        Ok(n)
    }
}
