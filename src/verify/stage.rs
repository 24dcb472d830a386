//! One layer across two cores: the decoder (the compressed side and the inflater) on a
//! thread of its own, the decompressed side (sha256 of the tar, the tar walk) on the
//! caller's, joined by a bounded queue of byte buffers.
//!
//! Inflating is more than half of a layer's CPU and the tar side (with the compressed
//! stream's sha256, hashed beside the tar's: `sha256.rs`) most of the rest, so one large
//! layer, which used to finish alone on one core while the others idled, now uses two.
//! The queue holds at most [`QUEUE_BUFFERS`] buffers of [`BUFFER_SIZE`] bytes that the
//! walk has not read, and the buffers go back to the decoder once read: memory stays
//! flat, and a decoder never runs further ahead of the walk than that (a decompression
//! bomb stops when the cap on the consumer side stops reading).
//!
//! A second thread pays only where a core would otherwise idle: it costs CPU (the
//! hand-over and one more copy of the tar stream), so a layer is staged only while the
//! cores this process's verifications hold or are about to take are fewer than it has
//! (a cgroup CPU quota counts). A verification holds one core; a pull holds a
//! [`Claim`] of as many as it verifies layers at once, or fewer once fewer layers are
//! left, from its first layer to its last, including the moments between one layer's
//! end and the next one's start. That is decided again at every read, not once: a
//! pull's layers start on one thread each (two layers keep two cores busy without a
//! hand-over), and the layer that finishes last — often not the largest: a small gzip
//! of text inflates to a large tar — moves its decoder to a thread of its own once it
//! is alone (its stream is unchanged: the decoder carries on where it was). A layer
//! never goes back to one thread.
//!
//! What the consumer reads is exactly what the decoder returned, in order, errors
//! included: the verdict does not depend on whether or when a layer was staged. When the
//! consumer stops early (a tar error, the uncompressed cap) it drops its end and the
//! decoder thread stops at its next hand-over.

use std::io::{self, ErrorKind, Read};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SendError, Sender, SyncSender, TryRecvError, channel, sync_channel};
use std::thread::Scope;

use super::BUFFER_SIZE;

/// Buffers of decompressed bytes waiting for the walk (256 KiB in all).
const QUEUE_BUFFERS: usize = 4;

/// Compressed layers smaller than this are checked on one thread: their work is over
/// before a second thread would pay for itself.
const MIN_STAGED_BYTES: u64 = 1 << 20;

/// Layer verifications in progress in this process, outside any pull's [`Claim`].
static IN_PROGRESS: AtomicUsize = AtomicUsize::new(0);

/// Cores claimed by the pulls in progress in this process.
static CLAIMED: AtomicUsize = AtomicUsize::new(0);

/// One layer verification in progress outside a [`Claim`], counted while it lives.
pub(super) struct Busy(());

impl Busy {
    pub fn start() -> Busy {
        IN_PROGRESS.fetch_add(1, Ordering::Relaxed);
        Busy(())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        IN_PROGRESS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The cores one pull's layers hold or are about to take: as many as it verifies at
/// once, or as many layers as it has left when that is fewer. Made before the pull's
/// first layer starts and told of each layer as it ends, so that no running layer
/// stages for a core the pull's next layer is about to take; whatever is left is
/// released when the claim is dropped. Its layers are verified with
/// [`verify_claimed_layer`](super::verify_claimed_layer), not counted again.
#[derive(Debug)]
pub struct Claim {
    at_once: usize,
    left: AtomicUsize,
}

impl Claim {
    pub fn new(at_once: usize, layers: usize) -> Claim {
        let at_once = at_once.max(1);
        CLAIMED.fetch_add(layers.min(at_once), Ordering::Relaxed);
        Claim { at_once, left: AtomicUsize::new(layers) }
    }

    /// One of the layers is over (verified, failed, or never to start).
    pub fn layer_done(&self) {
        let Ok(before) = self.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)) else {
            return;
        };
        let released = before.min(self.at_once) - (before - 1).min(self.at_once);
        CLAIMED.fetch_sub(released, Ordering::Relaxed);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED.fetch_sub(self.left.load(Ordering::Relaxed).min(self.at_once), Ordering::Relaxed);
    }
}

/// The cores this process may use (a cgroup CPU quota counts), read once.
pub(super) fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Cores this process's verifications hold or are about to take.
fn cores_at_work() -> usize {
    IN_PROGRESS.load(Ordering::Relaxed) + CLAIMED.load(Ordering::Relaxed)
}

/// Whether the decoder of a layer is worth a thread of its own while `at_work` cores
/// (its own included) are held or about to be taken, of `cores`.
pub(super) fn worth_staging(at_work: usize, cores: usize) -> bool {
    at_work < cores
}

/// When to stage the decoder of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Staging {
    /// At once (tests: the verdict is the same either way).
    #[cfg(test)]
    Now,
    /// Never.
    Never,
    /// Whenever, at a read, a core of this process would idle ([`worth_staging`]).
    WhenACoreIdles,
}

impl Staging {
    /// Decoders of compressed layers of `size` bytes: smaller ones are done before a
    /// thread would pay.
    pub(super) fn for_layer(size: u64) -> Staging {
        if size >= MIN_STAGED_BYTES && cores() > 1 { Staging::WhenACoreIdles } else { Staging::Never }
    }
}

/// Run `consume` on this thread over what `decoder` reads: the decoder runs here too
/// until `staging` says to move it to a thread of its own.
pub(super) fn adaptive<D, T>(decoder: D, staging: Staging, consume: impl FnOnce(&mut dyn Read) -> T) -> T
where
    D: Read + Send,
{
    std::thread::scope(|scope| {
        let mut reader = Adaptive::new(scope, decoder, staging);
        consume(&mut reader)
        // `reader` is dropped here: a staged decoder still running stops at its next send.
    })
}

/// A decoder read on the caller's thread, or from its own thread through a queue.
pub(super) struct Adaptive<'scope, 'env, D: Read + Send> {
    scope: &'scope Scope<'scope, 'env>,
    staging: Staging,
    /// The decoder, while it runs on the caller's thread.
    inline: Option<D>,
    staged: Option<StagedReader>,
}

impl<'scope, 'env, D: Read + Send + 'scope> Adaptive<'scope, 'env, D> {
    fn new(scope: &'scope Scope<'scope, 'env>, decoder: D, staging: Staging) -> Self {
        Adaptive { scope, staging, inline: Some(decoder), staged: None }
    }

    /// Move the decoder to a thread of its own (it stays here if none can be started).
    fn stage(&mut self) {
        let Some(decoder) = self.inline.take() else { return };
        self.staging = Staging::Never;
        let (full_tx, full_rx) = sync_channel::<Message>(QUEUE_BUFFERS);
        let (empty_tx, empty_rx) = channel::<Vec<u8>>();
        // The decoder is handed over once the thread exists: if none can be started,
        // the hand-over fails and gives it back.
        let (hand_tx, hand_rx) = sync_channel::<D>(1);
        let thread = std::thread::Builder::new().name("pullprobe-decode".into());
        let _ = thread.spawn_scoped(self.scope, move || {
            if let Ok(decoder) = hand_rx.recv() {
                decode(decoder, &full_tx, &empty_rx);
            }
        });
        match hand_tx.send(decoder) {
            Ok(()) => {
                let reader =
                    StagedReader { rx: full_rx, back: empty_tx, current: Vec::new(), pos: 0, filled: 0, end: None };
                self.staged = Some(reader);
            }
            Err(SendError(decoder)) => self.inline = Some(decoder),
        }
    }
}

impl<'scope, D: Read + Send + 'scope> Read for Adaptive<'scope, '_, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let stage = match self.staging {
            #[cfg(test)]
            Staging::Now => true,
            Staging::Never => false,
            Staging::WhenACoreIdles => worth_staging(cores_at_work(), cores()),
        };
        if stage {
            self.stage();
        }
        match (&mut self.inline, &mut self.staged) {
            (Some(decoder), _) => decoder.read(buf),
            (None, Some(staged)) => staged.read(buf),
            (None, None) => Err(io::Error::other("the decoder was lost on its way to a thread of its own")),
        }
    }
}

/// One hand-over from the decoder thread.
enum Message {
    /// A buffer holding this many decompressed bytes at its start.
    Bytes(Vec<u8>, usize),
    /// The decoder's error: the last message.
    Failed(io::Error),
    /// The stream ended: the last message.
    End,
}

/// The decoder thread: read into recycled buffers and hand them over until the stream
/// ends, fails, or the consumer is gone.
fn decode<D: Read>(mut decoder: D, full: &SyncSender<Message>, empty: &Receiver<Vec<u8>>) {
    loop {
        let mut buffer = match empty.try_recv() {
            Ok(buffer) => buffer,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => vec![0u8; BUFFER_SIZE],
        };
        let message = match decoder.read(&mut buffer) {
            Ok(0) => Message::End,
            Ok(n) => Message::Bytes(buffer, n.min(BUFFER_SIZE)),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => Message::Failed(e),
        };
        let last = !matches!(message, Message::Bytes(..));
        if full.send(message).is_err() || last {
            return;
        }
    }
}

/// How the decoder's stream ended, once it has.
enum Ended {
    Clean,
    /// Kind and text of the decoder's error, returned again on every later read.
    Failed(ErrorKind, String),
}

/// The consumer's end: a [`Read`] over the decoder's output.
pub(super) struct StagedReader {
    rx: Receiver<Message>,
    back: Sender<Vec<u8>>,
    /// A whole buffer (it goes back to the decoder as it came), filled up to `filled`.
    current: Vec<u8>,
    pos: usize,
    filled: usize,
    end: Option<Ended>,
}

impl StagedReader {
    fn fill(&mut self) {
        if !self.current.is_empty() {
            // The decoder may be gone already; the buffer is then freed here.
            let _ = self.back.send(std::mem::take(&mut self.current));
        }
        self.pos = 0;
        self.filled = 0;
        match self.rx.recv() {
            Ok(Message::Bytes(buffer, n)) => {
                self.filled = n.min(buffer.len());
                self.current = buffer;
            }
            Ok(Message::Failed(e)) => self.end = Some(Ended::Failed(e.kind(), e.to_string())),
            Ok(Message::End) => self.end = Some(Ended::Clean),
            // The decoder thread died without a word: never mistake that for the end.
            Err(_) => {
                let text = "the decoder thread stopped before the end of the stream".to_string();
                self.end = Some(Ended::Failed(ErrorKind::Other, text));
            }
        }
    }
}

impl Read for StagedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.filled {
            match &self.end {
                Some(Ended::Clean) => return Ok(0),
                Some(Ended::Failed(kind, text)) => return Err(io::Error::new(*kind, text.clone())),
                None => self.fill(),
            }
        }
        let n = buf.len().min(self.filled - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder that returns these results in turn, then the end.
    struct Script(std::vec::IntoIter<io::Result<Vec<u8>>>);

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.next() {
                None => Ok(0),
                Some(Err(e)) => Err(e),
                Some(Ok(bytes)) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len())
                }
            }
        }
    }

    fn read_all(reader: &mut (impl Read + ?Sized)) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    /// The decoder on a thread of its own from the first read.
    fn staged<D: Read + Send, T>(decoder: D, consume: impl FnOnce(&mut dyn Read) -> T) -> T {
        adaptive(decoder, Staging::Now, consume)
    }

    #[test]
    fn a_layer_is_staged_only_while_a_core_would_idle() {
        assert!(worth_staging(1, 2), "alone on two cores");
        assert!(!worth_staging(2, 2), "two layers already keep two cores busy");
        assert!(!worth_staging(1, 1), "one core: nothing to gain");
        assert!(worth_staging(3, 4));
        assert_eq!(
            Staging::for_layer(MIN_STAGED_BYTES - 1),
            Staging::Never,
            "a small layer is over before a thread pays"
        );
        let large = if cores() > 1 { Staging::WhenACoreIdles } else { Staging::Never };
        assert_eq!(Staging::for_layer(MIN_STAGED_BYTES), large, "one core: never");
    }

    /// The only test that claims cores: `CLAIMED` moves by what it does alone.
    #[test]
    fn a_pull_claims_the_cores_its_layers_hold_or_are_about_to_take() {
        let claimed = || CLAIMED.load(Ordering::Relaxed);
        let before = claimed();
        let claim = Claim::new(2, 5);
        assert_eq!(claimed() - before, 2, "five layers, two at once");
        for _ in 0..3 {
            claim.layer_done();
        }
        assert_eq!(
            claimed() - before,
            2,
            "two layers left: still both cores, between one's end and the next one's start too"
        );
        claim.layer_done();
        assert_eq!(claimed() - before, 1, "one layer left: the other core is free for its decoder");
        claim.layer_done();
        claim.layer_done();
        assert_eq!(claimed(), before, "never below nothing");
        drop(claim);
        assert_eq!(claimed(), before);

        let abandoned = Claim::new(8, 3);
        assert_eq!(claimed() - before, 3);
        drop(abandoned);
        assert_eq!(claimed(), before, "a pull dropped midway releases what it had claimed");

        // While every core is claimed, a decoder stays on the reading thread.
        let busy = Claim::new(cores(), cores());
        let data = vec![5u8; 3 * BUFFER_SIZE];
        let staged = std::thread::scope(|scope| {
            let reader = &mut Adaptive::new(scope, &data[..], Staging::WhenACoreIdles);
            let (out, error) = read_all(reader);
            assert!(error.is_none() && out == data);
            reader.staged.is_some()
        });
        assert!(!staged, "every core is taken: no thread of its own");
        drop(busy);
    }

    #[test]
    fn a_decoder_moved_mid_stream_carries_on_where_it_was() {
        let data: Vec<u8> = (0..5 * BUFFER_SIZE + 3).map(|i| (i % 253) as u8).collect();
        let (out, staged, thread) = std::thread::scope(|scope| {
            let reader = &mut Adaptive::new(scope, &data[..], Staging::Never);
            let mut head = vec![0u8; BUFFER_SIZE + 5];
            reader.read_exact(&mut head).unwrap();
            assert!(reader.staged.is_none(), "read on this thread so far");
            reader.stage();
            let (mut rest, error) = read_all(reader);
            assert!(error.is_none(), "{error:?}");
            head.append(&mut rest);
            (head, reader.staged.is_some(), reader.inline.is_none())
        });
        assert!(staged && thread, "the decoder went to its own thread");
        assert_eq!(out, data);
    }

    #[test]
    fn the_consumer_reads_what_the_decoder_read_in_order() {
        let data: Vec<u8> = (0..3 * BUFFER_SIZE + 11).map(|i| (i % 251) as u8).collect();
        let (out, error) = staged(&data[..], |reader| read_all(reader));
        assert!(error.is_none(), "{error:?}");
        assert_eq!(out, data);
    }

    /// Short reads must not shrink the recycled buffers (each read would then ask the
    /// decoder for less, down to a byte at a time).
    #[test]
    fn short_reads_do_not_shrink_the_buffers() {
        struct Short(usize);
        impl Read for Short {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                assert_eq!(buf.len(), BUFFER_SIZE, "the decoder is offered a whole buffer");
                self.0 += 1;
                Ok(if self.0 > 50 { 0 } else { 1 + self.0 % 3 })
            }
        }
        let (out, error) = staged(Short(0), |reader| read_all(reader));
        assert!(error.is_none(), "{error:?}");
        assert_eq!(out.len(), (1..=50).map(|i| 1 + i % 3).sum::<usize>());
    }

    #[test]
    fn a_decoder_error_reaches_the_consumer_after_the_bytes_before_it_and_stays() {
        let script = Script(
            vec![Ok(b"abc".to_vec()), Ok(b"def".to_vec()), Err(io::Error::new(ErrorKind::InvalidData, "corrupt"))]
                .into_iter(),
        );
        let (out, again) = staged(script, |reader| {
            let first = read_all(reader);
            let mut buf = [0u8; 4];
            (first, reader.read(&mut buf).map_err(|e| (e.kind(), e.to_string())))
        });
        assert_eq!(out.0, b"abcdef");
        let error = out.1.expect("the decoder's error");
        assert_eq!((error.kind(), error.to_string()), (ErrorKind::InvalidData, "corrupt".to_string()));
        assert_eq!(again, Err((ErrorKind::InvalidData, "corrupt".to_string())));
    }

    #[test]
    fn a_consumer_that_stops_early_stops_an_endless_decoder() {
        // io::repeat never ends: only the dropped reader stops the thread, and the
        // scope would hang if it did not.
        let first = staged(io::repeat(7), |reader| {
            let mut buf = [0u8; 10];
            reader.read(&mut buf).map(|n| buf[..n].to_vec())
        });
        assert_eq!(first.expect("bytes"), vec![7u8; 10]);
    }

    #[test]
    fn a_decoder_that_panics_is_an_error_not_the_end_of_the_stream() {
        struct Panics(bool);
        impl Read for Panics {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    panic!("decoder bug");
                }
                buf[0] = 1;
                Ok(1)
            }
        }
        let seen = std::sync::Mutex::new(None);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            staged(Panics(false), |reader| *seen.lock().unwrap() = Some(read_all(reader)))
        }));
        let (bytes, error) = seen.into_inner().unwrap().expect("the consumer ran");
        assert_eq!(bytes, [1]);
        assert!(error.is_some_and(|e| e.to_string().contains("decoder thread stopped")));
        // The scope re-raises the thread's panic once the consumer is done.
        assert!(outcome.is_err(), "the decoder's panic is not swallowed");
    }
}
