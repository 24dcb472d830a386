//! The hand-over from the async download to the blocking verifier: a bounded channel of
//! body chunks, read on the other side as a plain [`Read`].
//!
//! The HTTP side `send`s each chunk as it arrives, sends `Err(ProbeError)` when the
//! transfer fails (timeout, reset, …) and drops the sender at the end of the body. The
//! verifier runs [`super::verify_layer`] over the [`ChunkReader`] on a `spawn_blocking`
//! thread. At most `capacity` chunks wait in between, so memory is bounded by
//! `capacity` × chunk size. When the verifier stops early (a body longer than its
//! descriptor, a failed source) it drops the reader and the next `send` fails: stop
//! downloading then.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use crate::reason::ProbeError;

use super::source_error;

/// A bounded channel of body chunks from an async task to a blocking reader.
pub fn chunk_channel(capacity: usize) -> (ChunkSender, ChunkReader) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let reader = ChunkReader { rx, chunk: Bytes::new(), failure: None, done: false };
    (ChunkSender { tx }, reader)
}

/// The verifier has stopped reading; the rest of the body is not wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the layer verifier stopped reading")]
pub struct ReaderClosed;

/// The async end: chunks of the body, or the transfer's failure. Dropping it ends the body.
#[derive(Debug, Clone)]
pub struct ChunkSender {
    tx: mpsc::Sender<Result<Bytes, ProbeError>>,
}

impl ChunkSender {
    /// Wait for room and hand over one chunk (or the failure that ends the transfer).
    pub async fn send(&self, chunk: Result<Bytes, ProbeError>) -> Result<(), ReaderClosed> {
        self.tx.send(chunk).await.map_err(|_| ReaderClosed)
    }
}

/// The blocking end: a [`Read`] over the chunks. Must run outside the async executor
/// (a `spawn_blocking` thread), as it blocks waiting for the next chunk.
#[derive(Debug)]
pub struct ChunkReader {
    rx: mpsc::Receiver<Result<Bytes, ProbeError>>,
    /// The unread rest of the current chunk.
    chunk: Bytes,
    /// Once the sender reports a failure, every later read returns it.
    failure: Option<ProbeError>,
    done: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.chunk.is_empty() {
            if let Some(failure) = &self.failure {
                return Err(source_error(failure.clone()));
            }
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(failure)) => self.failure = Some(failure),
                None => self.done = true,
            }
        }
        let mut n = self.take_into(buf);
        // Fill the rest from chunks already waiting, without blocking: the decoder
        // then works on larger slices.
        while n < buf.len() && self.failure.is_none() {
            match self.rx.try_recv() {
                Ok(Ok(chunk)) => self.chunk = chunk,
                Ok(Err(failure)) => self.failure = Some(failure),
                Err(_) => break,
            }
            n += self.take_into(&mut buf[n..]);
        }
        Ok(n)
    }
}

impl ChunkReader {
    fn take_into(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        n
    }
}
