//! The hand-over from the async download to the blocking verifier: a bounded channel of
//! body chunks, read on the other side as a [`BufRead`] over the chunks themselves.
//!
//! The HTTP side `send`s each chunk as it arrives, sends `Err(ProbeError)` when the
//! transfer fails (timeout, reset, …) and drops the sender at the end of the body. The
//! verifier runs [`super::verify_layer`] over the [`ChunkReader`] on a `spawn_blocking`
//! thread, and its decoder reads the chunks where they are. At most `max_chunks` chunks
//! and `max_bytes` bytes wait in between (a chunk larger than `max_bytes` waits alone):
//! the HTTP client hands over chunks of anything from a few KiB to several hundred, so a
//! bound in chunks alone would let memory follow its buffer sizes. The reader also holds
//! what it joined of small chunks, a copy of at most 64 KiB outside the budget. When the
//! verifier stops early (a body longer than its descriptor, a failed source) it drops the
//! reader and the next `send` fails: stop downloading then.

use std::io::{self, BufRead, Read};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::{Semaphore, mpsc};

use crate::reason::ProbeError;

use super::source_error;

/// A channel of body chunks from an async task to a blocking reader, holding at most
/// `max_chunks` chunks and `max_bytes` bytes (at most 4 GiB) that the reader has not finished.
pub fn chunk_channel(max_chunks: usize, max_bytes: usize) -> (ChunkSender, ChunkReader) {
    let (tx, rx) = mpsc::channel(max_chunks.max(1));
    let max_bytes = max_bytes.clamp(1, u32::MAX as usize);
    let budget = Arc::new(Semaphore::new(max_bytes));
    let reader = ChunkReader {
        rx,
        chunk: Bytes::new(),
        held: 0,
        next: None,
        budget: budget.clone(),
        failure: None,
        done: false,
    };
    (ChunkSender { tx, budget, max_bytes }, reader)
}

/// One message: a chunk and the bytes of the budget it holds, or the transfer's failure.
type Message = Result<(Bytes, u32), ProbeError>;

/// The verifier has stopped reading; the rest of the body is not wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the layer verifier stopped reading")]
pub struct ReaderClosed;

/// The async end: chunks of the body, or the transfer's failure. Dropping it ends the body.
#[derive(Debug, Clone)]
pub struct ChunkSender {
    tx: mpsc::Sender<Message>,
    /// Bytes the reader may still be handed: taken here, given back as it finishes chunks.
    budget: Arc<Semaphore>,
    max_bytes: usize,
}

impl ChunkSender {
    /// Wait for room and hand over one chunk (or the failure that ends the transfer).
    pub async fn send(&self, chunk: Result<Bytes, ProbeError>) -> Result<(), ReaderClosed> {
        let message = match chunk {
            Ok(chunk) => {
                // A chunk over the whole budget takes all of it: it then waits alone.
                let held = chunk.len().min(self.max_bytes) as u32;
                if held > 0 {
                    // Closed when the reader is dropped: nobody will give the bytes back.
                    self.budget.acquire_many(held).await.map_err(|_| ReaderClosed)?.forget();
                }
                Ok((chunk, held))
            }
            Err(failure) => Err(failure),
        };
        self.tx.send(message).await.map_err(|_| ReaderClosed)
    }
}

/// A chunk shorter than this is joined with the small chunks already waiting behind it
/// before a decoder sees it: each call into the inflater has a fixed cost (ISA-L saves
/// 32 KiB of history after every call), which a server sending tiny chunks would
/// otherwise multiply.
const JOIN_BELOW: usize = 16 * 1024;

/// The most a joined chunk holds.
const JOINED_MAX: usize = 64 * 1024;

/// The blocking end: a [`BufRead`] over the chunks. Must run outside the async executor
/// (a `spawn_blocking` thread), as it blocks waiting for the next chunk.
#[derive(Debug)]
pub struct ChunkReader {
    rx: mpsc::Receiver<Message>,
    /// The unread rest of the current chunk.
    chunk: Bytes,
    /// Budget bytes the current chunk holds, given back when it is used up.
    held: u32,
    /// A message taken off the channel while joining small chunks that did not join.
    next: Option<Message>,
    budget: Arc<Semaphore>,
    /// Once the sender reports a failure, every later read returns it.
    failure: Option<ProbeError>,
    done: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        super::read_from_buffer(self, buf)
    }
}

/// The chunks themselves, as the HTTP client handed them over: a decoder reading through
/// this interface inflates straight out of the body's buffers, with no copy in between
/// (only chunks under 16 KiB are copied, to join those waiting behind them).
impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.chunk.is_empty() {
            if let Some(failure) = &self.failure {
                return Err(source_error(failure.clone()));
            }
            if self.done {
                break;
            }
            let message = match self.next.take() {
                Some(message) => Some(message),
                None => self.rx.blocking_recv(),
            };
            self.take(message);
            self.join_small_chunks();
        }
        Ok(&self.chunk)
    }

    fn consume(&mut self, amount: usize) {
        self.chunk.advance(amount.min(self.chunk.len()));
        if self.chunk.is_empty() {
            self.chunk = Bytes::new(); // drop the buffer now, not at the next chunk
            self.release();
        }
    }
}

impl ChunkReader {
    /// The next message replaces the used-up chunk, whose budget goes back to the sender.
    fn take(&mut self, message: Option<Message>) {
        self.release();
        match message {
            Some(Ok((chunk, held))) => {
                self.chunk = chunk;
                self.held = held;
            }
            Some(Err(failure)) => self.failure = Some(failure),
            None => self.done = true,
        }
    }

    /// A small chunk takes the chunks already waiting behind it (never waiting for
    /// more) into one buffer of at most [`JOINED_MAX`] bytes. The buffer is the reader's
    /// own, a copy: the chunks' budget goes back to the sender at once, as it would had
    /// they been read.
    fn join_small_chunks(&mut self) {
        let mut joined: Option<BytesMut> = None;
        let mut len = self.chunk.len();
        while len > 0 && len < JOIN_BELOW && self.next.is_none() {
            let Ok(message) = self.rx.try_recv() else { break };
            match message {
                Ok((chunk, held)) if len + chunk.len() <= JOINED_MAX => {
                    let buf = joined.get_or_insert_with(|| {
                        let mut buf = BytesMut::with_capacity(JOINED_MAX);
                        buf.extend_from_slice(&self.chunk);
                        buf
                    });
                    buf.extend_from_slice(&chunk);
                    self.budget.add_permits(held as usize);
                    len += chunk.len();
                }
                // A large chunk, or the end of the transfer: after what is joined.
                other => self.next = Some(other),
            }
        }
        if let Some(joined) = joined {
            self.chunk = joined.freeze();
            self.release();
        }
    }

    fn release(&mut self) {
        if self.held > 0 {
            self.budget.add_permits(self.held as usize);
            self.held = 0;
        }
    }
}

impl Drop for ChunkReader {
    fn drop(&mut self) {
        // A sender waiting for budget would otherwise wait forever.
        self.budget.close();
    }
}
