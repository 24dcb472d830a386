//! The compressed stream as the registry sent it: sha256 and byte count against the
//! manifest descriptor, bounded by the descriptor size.
//!
//! The first four steps of the verdict are decided here, where the bytes arrive: a failed
//! source, a body longer than the descriptor, a body shorter than it, a wrong sha256. This
//! reader never takes more than `size + 1` bytes from its source, whatever it offers, and
//! hands the bytes on where the source holds them ([`BufRead`]): the decoder inflates
//! straight out of the download's chunks.
//!
//! While a layer is unpacked, the bytes are hashed by the tar stream's reader, beside its
//! own (`sha256.rs`): this reader queues them as it hands them out, and takes the hash
//! back for whatever is read after the tar side is done.

use std::fmt;
use std::io::{self, BufRead, ErrorKind, Read};

use crate::digest::Digest;
use crate::reason::{ProbeError, Reason};

use super::sha256::{CompressedQueue, Sha256};

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

/// Wrap a transport failure for a source handed to [`super::verify_layer`]:
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

/// The most handed out at once: the decoder then reads what was just hashed (or copied
/// into the queue) while it is still in the core's cache, however large the chunks the
/// source holds.
const OFFER_MAX: usize = 64 * 1024;

/// Hashes (or queues to be hashed beside the tar) and counts the compressed stream as it
/// passes through, stopping one byte past the descriptor size.
pub(super) struct BlobReader<R> {
    source: R,
    expected_size: u64,
    /// Covers the first `expected_size` bytes only.
    hasher: BlobHasher,
    /// Every byte taken from the source, including a byte past the descriptor size.
    bytes: u64,
    /// Bytes handed out (and hashed or queued) but not yet consumed: the head of the source's buffer.
    offered: usize,
    stop: Option<Stop>,
    eof: bool,
}

/// Where the compressed stream is hashed.
enum BlobHasher {
    /// Here, as the bytes are handed out.
    Here(Sha256),
    /// Beside the tar stream, by its reader (`sha256.rs`).
    BesideTar(CompressedQueue),
}

impl BlobHasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            BlobHasher::Here(hasher) => hasher.update(data),
            BlobHasher::BesideTar(queue) => queue.push(data),
        }
    }

    fn finish(self) -> Digest {
        match self {
            BlobHasher::Here(hasher) => hasher.finish(),
            BlobHasher::BesideTar(queue) => queue.take_hasher().finish(),
        }
    }
}

/// The verdict on the compressed stream.
pub(super) struct BlobCheck {
    pub bytes: u64,
    /// sha256 of the first `min(bytes, size)` bytes; `None` when the source failed.
    pub digest: Option<Digest>,
    pub error: Option<ProbeError>,
}

impl<R: BufRead> BlobReader<R> {
    pub fn new(source: R, expected_size: u64) -> Self {
        BlobReader {
            source,
            expected_size,
            hasher: BlobHasher::Here(Sha256::new()),
            bytes: 0,
            offered: 0,
            stop: None,
            eof: false,
        }
    }

    /// From now on, queue the bytes handed out for the tar stream's reader to hash
    /// beside its own (`sha256.rs`) until [`BlobReader::hash_here`].
    pub fn hash_beside_tar(&mut self) -> CompressedQueue {
        let queue = match &self.hasher {
            BlobHasher::Here(hasher) => CompressedQueue::new(hasher.clone()),
            BlobHasher::BesideTar(queue) => queue.clone(),
        };
        self.hasher = BlobHasher::BesideTar(queue.clone());
        queue
    }

    /// Hash the bytes handed out here again, once the tar stream's reader is done.
    pub fn hash_here(&mut self) {
        if let BlobHasher::BesideTar(queue) = &self.hasher {
            self.hasher = BlobHasher::Here(queue.take_hasher());
        }
    }

    /// Hash whatever the source still has, where it holds it, up to one byte past the
    /// descriptor size. Failures are kept for [`BlobReader::finish`].
    pub fn drain(&mut self) {
        while let Ok(buf) = self.fill_buf() {
            let n = buf.len();
            if n == 0 {
                break;
            }
            self.consume(n);
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

    /// How many bytes the source holds for us now, waiting for some if it holds none.
    fn fill_source(&mut self) -> io::Result<usize> {
        loop {
            match self.source.fill_buf() {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.stop = Some(Stop::Source(source_failure(e, self.bytes, self.expected_size)));
                    return Err(self.stopped_error());
                }
                Ok(buf) => return Ok(buf.len()),
            }
        }
    }
}

/// What a failure of the source after `got` of `size` bytes means for the verdict.
fn source_failure(error: io::Error, got: u64, size: u64) -> ProbeError {
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
        _ => ProbeError::new(Reason::ConnectError, format!("reading the blob: {error} (after {got} of {size} bytes)")),
    }
}

/// The source's own buffers, cut at one byte past the descriptor size. Bytes are hashed
/// or queued when first handed out, so a decoder reads them where the source holds them.
impl<R: BufRead> BufRead for BlobReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.stop.is_some() {
            return Err(self.stopped_error());
        }
        if self.eof {
            return Ok(&[]);
        }
        let remaining = self.expected_size - self.bytes.min(self.expected_size);
        if remaining == 0 {
            // Everything announced has arrived: one more byte means the body is too long.
            if self.fill_source()? == 0 {
                self.eof = true;
                return Ok(&[]);
            }
            self.source.consume(1);
            self.bytes += 1;
            self.stop = Some(Stop::Oversized);
            return Err(self.stopped_error());
        }
        let available = self.fill_source()?;
        if available == 0 {
            self.eof = true;
            return Ok(&[]);
        }
        let limit = available.min(OFFER_MAX).min(usize::try_from(remaining).unwrap_or(usize::MAX));
        // The bytes just counted, still in the source's buffer: a `BufRead` that holds
        // bytes hands them out again without reading. (Asked twice because a buffer
        // returned from inside `fill_source`'s retry loop would stay borrowed across its
        // iterations, which the borrow checker refuses.)
        let (got, size) = (self.bytes, self.expected_size);
        let buf = match self.source.fill_buf() {
            Ok(buf) => buf,
            Err(e) => {
                let failure = source_failure(e, got, size);
                self.stop = Some(Stop::Source(failure.clone()));
                return Err(source_error(failure));
            }
        };
        let offered = limit.min(buf.len());
        if let Some(new) = buf.get(self.offered..offered) {
            self.hasher.update(new);
            self.offered = offered;
        }
        Ok(&buf[..offered])
    }

    fn consume(&mut self, amount: usize) {
        let amount = amount.min(self.offered);
        self.source.consume(amount);
        self.offered -= amount;
        self.bytes += amount as u64;
    }
}

impl<R: BufRead> Read for BlobReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        super::read_from_buffer(self, buf)
    }
}
