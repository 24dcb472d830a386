//! The compressed stream as the registry sent it: sha256 and byte count against the
//! manifest descriptor, bounded by the descriptor size.
//!
//! The first four steps of the verdict are decided here, where the bytes arrive: a failed
//! source, a body longer than the descriptor, a body shorter than it, a wrong sha256. This
//! reader never reads more than `size + 1` bytes from its source, whatever it offers.

use std::fmt;
use std::io::{self, ErrorKind, Read};

use crate::digest::{Digest, DigestHasher};
use crate::reason::{ProbeError, Reason};

/// A failure of the byte source (network: timeout, reset, …), carried inside an
/// [`io::Error`] so the verifier can tell a transport failure from bad data.
/// Build one with [`source_error`].
#[derive(Debug)]
pub struct SourceError(pub ProbeError);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SourceError {}

/// Wrap a transport failure for a [`Read`] source handed to [`super::verify_layer`]:
/// the verdict then carries that error's reason and message.
pub fn source_error(error: ProbeError) -> io::Error {
    io::Error::other(SourceError(error))
}

/// How reading the compressed stream stopped early.
enum Stop {
    /// The source returned an error; already turned into the verdict.
    Source(ProbeError),
    /// The source had a byte beyond the descriptor size.
    Oversized,
}

/// Hashes and counts the compressed stream as it passes through, stopping one byte past
/// the descriptor size.
pub(super) struct BlobReader<R> {
    source: R,
    expected_size: u64,
    /// Covers the first `expected_size` bytes only.
    hasher: DigestHasher,
    /// Every byte taken from the source, including a byte past the descriptor size.
    bytes: u64,
    stop: Option<Stop>,
    eof: bool,
}

/// The verdict on the compressed stream.
pub(super) struct BlobCheck {
    pub bytes: u64,
    /// sha256 of the first `min(bytes, size)` bytes; `None` when the source failed.
    pub digest: Option<Digest>,
    pub error: Option<ProbeError>,
}

impl<R: Read> BlobReader<R> {
    pub fn new(source: R, expected_size: u64) -> Self {
        BlobReader { source, expected_size, hasher: DigestHasher::new(), bytes: 0, stop: None, eof: false }
    }

    /// Read and hash whatever the source still has, up to one byte past the descriptor
    /// size. Failures are kept for [`BlobReader::finish`].
    pub fn drain(&mut self, scratch: &mut [u8]) {
        while let Ok(n) = self.read(scratch) {
            if n == 0 {
                break;
            }
        }
    }

    pub fn finish(self, expected_digest: &Digest) -> BlobCheck {
        let size = self.expected_size;
        let got = self.bytes;
        match self.stop {
            Some(Stop::Source(error)) => BlobCheck { bytes: got, digest: None, error: Some(error) },
            Some(Stop::Oversized) => {
                let digest = self.hasher.finish();
                let head =
                    if digest == *expected_digest { "match the digest" } else { "do not match the digest either" };
                let message = format!(
                    "body is longer than the descriptor size {size} (stopped at {got} bytes; the first {size} bytes {head})"
                );
                BlobCheck {
                    bytes: got,
                    digest: Some(digest),
                    error: Some(ProbeError::new(Reason::BlobSizeMismatch, message)),
                }
            }
            None => {
                let digest = self.hasher.finish();
                let error = if got < size {
                    Some(ProbeError::new(Reason::BlobTruncated, format!("got {got} of {size} bytes")))
                } else if digest != *expected_digest {
                    let message = format!("got {digest} ({got} bytes of {size}), expected {expected_digest}");
                    Some(ProbeError::new(Reason::BlobDigestMismatch, message))
                } else {
                    None
                };
                BlobCheck { bytes: got, digest: Some(digest), error }
            }
        }
    }

    fn stopped_error(&self) -> io::Error {
        match &self.stop {
            Some(Stop::Source(error)) => source_error(error.clone()),
            _ => io::Error::new(ErrorKind::InvalidData, "blob is longer than its descriptor size"),
        }
    }

    fn read_source(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.source.read(buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.stop = Some(Stop::Source(self.source_failure(e)));
                    return Err(self.stopped_error());
                }
                Ok(n) => return Ok(n.min(buf.len())),
            }
        }
    }

    fn source_failure(&self, error: io::Error) -> ProbeError {
        let (got, size) = (self.bytes, self.expected_size);
        if let Some(SourceError(failure)) = error.get_ref().and_then(|e| e.downcast_ref::<SourceError>()) {
            let mut failure = failure.clone();
            failure.message = format!("{} (after {got} of {size} bytes)", failure.message);
            return failure;
        }
        match error.kind() {
            ErrorKind::UnexpectedEof => {
                ProbeError::new(Reason::BlobTruncated, format!("got {got} of {size} bytes: {error}"))
            }
            ErrorKind::TimedOut => {
                ProbeError::new(Reason::Timeout, format!("reading the blob: {error} (after {got} of {size} bytes)"))
            }
            _ => ProbeError::new(
                Reason::ConnectError,
                format!("reading the blob: {error} (after {got} of {size} bytes)"),
            ),
        }
    }
}

impl<R: Read> Read for BlobReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.is_some() {
            return Err(self.stopped_error());
        }
        if self.eof || buf.is_empty() {
            return Ok(0);
        }
        let remaining = self.expected_size - self.bytes.min(self.expected_size);
        if remaining == 0 {
            // Everything announced has arrived: one more byte means the body is too long.
            let mut probe = [0u8; 1];
            let n = self.read_source(&mut probe)?;
            if n == 0 {
                self.eof = true;
                return Ok(0);
            }
            self.bytes += n as u64;
            self.stop = Some(Stop::Oversized);
            return Err(self.stopped_error());
        }
        let want = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = self.read_source(&mut buf[..want])?;
        if n == 0 {
            self.eof = true;
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}
