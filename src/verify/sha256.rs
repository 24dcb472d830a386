//! sha256 of a layer's two streams, two blocks at a time: the compressed stream's blocks
//! are hashed beside the tar stream's, in one loop that keeps both in flight.
//!
//! Why: each SHA-NI round instruction waits for the one before it, so one stream leaves
//! the unit idle half the time, and two independent streams interleaved fill it. On the
//! AMD EPYC of docs/performance.md two streams hash at 3.59 GB/s together, against 1.80
//! one after the other. A layer check hashes every compressed byte and every tar byte,
//! and a layer's compressed stream is rarely longer than its tar, so the compressed
//! stream's hashing comes almost free.
//!
//! How: the compressed side copies the bytes it hands the decoder into a
//! [`CompressedQueue`]; every read of the tar stream takes as many queued bytes as it read
//! and hashes both together ([`update_both`]). What cannot be paired is hashed alone: tar
//! bytes beyond the compressed ones, a queue over its bound, what is left at the end.
//! Each lane is plain sha256 (FIPS 180-4) of its own stream, so the digests do not depend
//! on how the bytes were paired; only the order of the work changes.
//!
//! Without SHA-NI, or off x86-64, a pair is hashed one lane after the other by the `sha2`
//! crate's block function, which is also what hashes every unpaired block. The `unsafe`
//! code here is the SHA-NI loop and the view of a byte slice as 64-byte blocks, each with
//! the reason it is sound.
#![allow(unsafe_code)]

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sha2::block_api::compress256;

use crate::digest::Digest;

/// sha256's initial hash value (FIPS 180-4, 5.3.3).
const INITIAL: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// Streaming sha256 of one stream.
#[derive(Clone)]
pub(super) struct Sha256 {
    state: [u32; 8],
    /// The stream's last bytes, too few to fill a block yet.
    block: [u8; 64],
    filled: usize,
    len: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256 { state: INITIAL, block: [0; 64], filled: 0, len: 0 }
    }
}

impl Sha256 {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        let (blocks, tail) = as_blocks(self.top_up(data));
        compress256(&mut self.state, blocks);
        self.keep(tail);
    }

    pub fn finish(mut self) -> Digest {
        let bits = self.len.wrapping_mul(8);
        let mut last = [0u8; 64];
        last[..self.filled].copy_from_slice(&self.block[..self.filled]);
        last[self.filled] = 0x80;
        if self.filled >= 56 {
            // No room left for the length: it goes in a block of its own.
            compress256(&mut self.state, &[last]);
            last = [0; 64];
        }
        last[56..].copy_from_slice(&bits.to_be_bytes());
        compress256(&mut self.state, &[last]);
        let mut digest = [0u8; 32];
        for (bytes, word) in digest.chunks_exact_mut(4).zip(self.state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        Digest::from_bytes(digest)
    }

    /// Complete the block begun by earlier bytes, if any, from the head of `data`;
    /// returns the rest of `data`. Either the block is then empty or `data` is used up.
    fn top_up<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        if self.filled == 0 {
            return data;
        }
        let take = data.len().min(64 - self.filled);
        self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
        self.filled += take;
        if self.filled == 64 {
            compress256(&mut self.state, std::slice::from_ref(&self.block));
            self.filled = 0;
        }
        &data[take..]
    }

    /// Keep the bytes after the last whole block (fewer than 64) for the next update.
    fn keep(&mut self, tail: &[u8]) {
        self.block[self.filled..self.filled + tail.len()].copy_from_slice(tail);
        self.filled += tail.len();
    }
}

/// Hash `a_data` into `a` and `b_data` into `b`, the blocks of the two paired as far as
/// both go.
pub(super) fn update_both(a: &mut Sha256, a_data: &[u8], b: &mut Sha256, b_data: &[u8]) {
    a.len += a_data.len() as u64;
    b.len += b_data.len() as u64;
    let (a_blocks, a_tail) = as_blocks(a.top_up(a_data));
    let (b_blocks, b_tail) = as_blocks(b.top_up(b_data));
    compress_pair(&mut a.state, a_blocks, &mut b.state, b_blocks);
    a.keep(a_tail);
    b.keep(b_tail);
}

/// `data` as whole 64-byte blocks, and the bytes after the last of them.
fn as_blocks(data: &[u8]) -> (&[[u8; 64]], &[u8]) {
    let whole = data.len() / 64;
    // SAFETY: `[u8; 64]` has the alignment of `u8` and every bit pattern is a valid
    // value, so the first `whole * 64` bytes of `data` are `whole` such arrays, borrowed
    // for as long as `data` is.
    let blocks = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<[u8; 64]>(), whole) };
    (blocks, &data[whole * 64..])
}

/// Compress `a_blocks` into `a` and `b_blocks` into `b`: as many as both have two at a
/// time, the rest of the longer alone.
fn compress_pair(a: &mut [u32; 8], a_blocks: &[[u8; 64]], b: &mut [u32; 8], b_blocks: &[[u8; 64]]) {
    let paired = a_blocks.len().min(b_blocks.len());
    let (a_paired, a_rest) = a_blocks.split_at(paired);
    let (b_paired, b_rest) = b_blocks.split_at(paired);
    #[cfg(test)]
    PAIRED_BLOCKS.with(|count| count.set(count.get() + paired as u64));
    if paired > 0 && !compress_interleaved(a, a_paired, b, b_paired) {
        compress256(a, a_paired);
        compress256(b, b_paired);
    }
    compress256(a, a_rest);
    compress256(b, b_rest);
}

#[cfg(test)]
thread_local! {
    /// Blocks hashed in pairs on this thread: the tests' evidence that pairing happens.
    pub(super) static PAIRED_BLOCKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Both lanes in one SHA-NI loop, where the CPU has it; `false` (nothing done) otherwise.
fn compress_interleaved(a: &mut [u32; 8], a_blocks: &[[u8; 64]], b: &mut [u32; 8], b_blocks: &[[u8; 64]]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if sha_ni::available() {
        // SAFETY: the CPU has every feature `sha_ni::compress_pair` is compiled for.
        unsafe { sha_ni::compress_pair(a, a_blocks, b, b_blocks) };
        return true;
    }
    let _ = (a, a_blocks, b, b_blocks);
    false
}

/// Two sha256 lanes interleaved with the SHA-NI instructions. The rounds of each lane
/// are the usual SHA-NI sequence (Intel's white paper "New Instructions Supporting the
/// Secure Hash Algorithm on Intel Architecture Processors", as the `sha2` crate writes
/// it); the lanes share no register.
#[cfg(target_arch = "x86_64")]
mod sha_ni {
    use std::arch::x86_64::*;

    /// sha256's round constants (FIPS 180-4, 4.2.2).
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, //
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, //
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, //
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, //
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, //
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, //
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, //
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ];

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("ssse3")
            && std::arch::is_x86_feature_detected!("sse4.1")
    }

    /// Four rounds of one lane, message words `w` (already scheduled) from round `4 * i`.
    macro_rules! rounds {
        ($abef:ident, $cdgh:ident, $w:expr, $i:expr) => {{
            let k = _mm_loadu_si128(K.as_ptr().add($i * 4).cast());
            let wk = _mm_add_epi32($w, k);
            $cdgh = _mm_sha256rnds2_epu32($cdgh, $abef, wk);
            $abef = _mm_sha256rnds2_epu32($abef, $cdgh, _mm_shuffle_epi32(wk, 0x0E));
        }};
    }

    /// The next four message words from the sixteen before them, then their four rounds.
    macro_rules! schedule_rounds {
        ($abef:ident, $cdgh:ident, $w0:ident, $w1:ident, $w2:ident, $w3:ident, $w4:ident, $i:expr) => {{
            let t = _mm_add_epi32(_mm_sha256msg1_epu32($w0, $w1), _mm_alignr_epi8($w3, $w2, 4));
            $w4 = _mm_sha256msg2_epu32(t, $w3);
            rounds!($abef, $cdgh, $w4, $i);
        }};
    }

    /// A block's sixteen message words, big-endian, in four registers.
    macro_rules! load_block {
        ($block:expr, $mask:expr) => {{
            let p: *const __m128i = $block.as_ptr().cast();
            (
                _mm_shuffle_epi8(_mm_loadu_si128(p), $mask),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(1)), $mask),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(2)), $mask),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(3)), $mask),
            )
        }};
    }

    /// Compress `a_blocks` into `a` and `b_blocks` into `b`, one block of each per turn
    /// (as many turns as the shorter has).
    ///
    /// # Safety
    /// The CPU must have SHA, SSSE3 and SSE4.1 ([`available`]; SSE2 is part of x86-64).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_pair(
        a: &mut [u32; 8],
        a_blocks: &[[u8; 64]],
        b: &mut [u32; 8],
        b_blocks: &[[u8; 64]],
    ) {
        // SAFETY: this function is compiled for the features its intrinsics need and is
        // only called where the CPU has them. Every load reads 16 bytes inside a block or
        // a state array (64 and 32 bytes, unaligned loads), every store writes inside a
        // state array, and `K.add(i * 4)` stays inside the 64 constants (i ≤ 15).
        unsafe {
            let mask = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
            let (mut a_abef, mut a_cdgh) = load_state(a);
            let (mut b_abef, mut b_cdgh) = load_state(b);
            for (x, y) in a_blocks.iter().zip(b_blocks) {
                let (a_abef_in, a_cdgh_in, b_abef_in, b_cdgh_in) = (a_abef, a_cdgh, b_abef, b_cdgh);
                let (mut a0, mut a1, mut a2, mut a3) = load_block!(x, mask);
                let (mut b0, mut b1, mut b2, mut b3) = load_block!(y, mask);
                let (mut a4, mut b4);
                rounds!(a_abef, a_cdgh, a0, 0);
                rounds!(b_abef, b_cdgh, b0, 0);
                rounds!(a_abef, a_cdgh, a1, 1);
                rounds!(b_abef, b_cdgh, b1, 1);
                rounds!(a_abef, a_cdgh, a2, 2);
                rounds!(b_abef, b_cdgh, b2, 2);
                rounds!(a_abef, a_cdgh, a3, 3);
                rounds!(b_abef, b_cdgh, b3, 3);
                schedule_rounds!(a_abef, a_cdgh, a0, a1, a2, a3, a4, 4);
                schedule_rounds!(b_abef, b_cdgh, b0, b1, b2, b3, b4, 4);
                schedule_rounds!(a_abef, a_cdgh, a1, a2, a3, a4, a0, 5);
                schedule_rounds!(b_abef, b_cdgh, b1, b2, b3, b4, b0, 5);
                schedule_rounds!(a_abef, a_cdgh, a2, a3, a4, a0, a1, 6);
                schedule_rounds!(b_abef, b_cdgh, b2, b3, b4, b0, b1, 6);
                schedule_rounds!(a_abef, a_cdgh, a3, a4, a0, a1, a2, 7);
                schedule_rounds!(b_abef, b_cdgh, b3, b4, b0, b1, b2, 7);
                schedule_rounds!(a_abef, a_cdgh, a4, a0, a1, a2, a3, 8);
                schedule_rounds!(b_abef, b_cdgh, b4, b0, b1, b2, b3, 8);
                schedule_rounds!(a_abef, a_cdgh, a0, a1, a2, a3, a4, 9);
                schedule_rounds!(b_abef, b_cdgh, b0, b1, b2, b3, b4, 9);
                schedule_rounds!(a_abef, a_cdgh, a1, a2, a3, a4, a0, 10);
                schedule_rounds!(b_abef, b_cdgh, b1, b2, b3, b4, b0, 10);
                schedule_rounds!(a_abef, a_cdgh, a2, a3, a4, a0, a1, 11);
                schedule_rounds!(b_abef, b_cdgh, b2, b3, b4, b0, b1, 11);
                schedule_rounds!(a_abef, a_cdgh, a3, a4, a0, a1, a2, 12);
                schedule_rounds!(b_abef, b_cdgh, b3, b4, b0, b1, b2, 12);
                schedule_rounds!(a_abef, a_cdgh, a4, a0, a1, a2, a3, 13);
                schedule_rounds!(b_abef, b_cdgh, b4, b0, b1, b2, b3, 13);
                schedule_rounds!(a_abef, a_cdgh, a0, a1, a2, a3, a4, 14);
                schedule_rounds!(b_abef, b_cdgh, b0, b1, b2, b3, b4, 14);
                schedule_rounds!(a_abef, a_cdgh, a1, a2, a3, a4, a0, 15);
                schedule_rounds!(b_abef, b_cdgh, b1, b2, b3, b4, b0, 15);
                a_abef = _mm_add_epi32(a_abef, a_abef_in);
                a_cdgh = _mm_add_epi32(a_cdgh, a_cdgh_in);
                b_abef = _mm_add_epi32(b_abef, b_abef_in);
                b_cdgh = _mm_add_epi32(b_cdgh, b_cdgh_in);
            }
            store_state(a, a_abef, a_cdgh);
            store_state(b, b_abef, b_cdgh);
        }
    }

    /// The state words as SHA-NI holds them: (A, B, E, F) and (C, D, G, H).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn load_state(state: &[u32; 8]) -> (__m128i, __m128i) {
        // SAFETY: two unaligned 16-byte loads inside the 32-byte array; the caller
        // guarantees the features.
        unsafe {
            let p: *const __m128i = state.as_ptr().cast();
            let cdab = _mm_shuffle_epi32(_mm_loadu_si128(p), 0xB1);
            let efgh = _mm_shuffle_epi32(_mm_loadu_si128(p.add(1)), 0x1B);
            (_mm_alignr_epi8(cdab, efgh, 8), _mm_blend_epi16(efgh, cdab, 0xF0))
        }
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn store_state(state: &mut [u32; 8], abef: __m128i, cdgh: __m128i) {
        // SAFETY: two unaligned 16-byte stores inside the 32-byte array; the caller
        // guarantees the features.
        unsafe {
            let feba = _mm_shuffle_epi32(abef, 0x1B);
            let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
            let p: *mut __m128i = state.as_mut_ptr().cast();
            _mm_storeu_si128(p, _mm_blend_epi16(feba, dchg, 0xF0));
            _mm_storeu_si128(p.add(1), _mm_alignr_epi8(dchg, feba, 8));
        }
    }
}

/// The most compressed bytes queued at once: past it the oldest are hashed alone. The
/// compressed side queues at most 64 KiB at a time (`blob.rs`), and a decoder rarely
/// takes far more than it returns. The bound is reached by a staged decoder running
/// ahead of the tar side (on data that compresses little) and by a stream that inflates
/// to little or nothing (empty gzip members, huge header fields).
const MAX_QUEUED: usize = 128 * 1024;

/// The compressed stream's bytes on their way to be hashed beside the tar stream's:
/// queued by the compressed side as the decoder is handed them, taken by the tar side
/// ([`CompressedQueue::hash_beside`]). A handle to shared state: the two sides are on
/// two threads while a layer is staged (`stage.rs`).
#[derive(Clone)]
pub(super) struct CompressedQueue(Arc<Mutex<Queued>>);

struct Queued {
    /// The compressed stream's sha256, up to the first queued byte.
    hasher: Sha256,
    /// Allocated once, never beyond [`MAX_QUEUED`].
    bytes: Vec<u8>,
    /// Bytes before this one are hashed.
    start: usize,
}

impl Queued {
    fn waiting(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    fn hash_waiting_alone(&mut self) {
        self.hasher.update(&self.bytes[self.start..]);
        self.bytes.clear();
        self.start = 0;
    }
}

impl CompressedQueue {
    /// Queue the bytes after `hashed`, which holds the stream's sha256 so far.
    pub fn new(hashed: Sha256) -> Self {
        let queued = Queued { hasher: hashed, bytes: Vec::with_capacity(MAX_QUEUED), start: 0 };
        CompressedQueue(Arc::new(Mutex::new(queued)))
    }

    /// The next bytes of the compressed stream.
    pub fn push(&self, mut data: &[u8]) {
        let mut guard = self.lock();
        let queued = &mut *guard;
        // Past the bound, the oldest bytes are hashed alone: those waiting, then the
        // head of `data` if it is itself over the bound.
        let over = (queued.waiting().len() + data.len()).saturating_sub(MAX_QUEUED);
        if over > 0 {
            let from_waiting = over.min(queued.waiting().len());
            queued.hasher.update(&queued.bytes[queued.start..queued.start + from_waiting]);
            queued.start += from_waiting;
            let (head, rest) = data.split_at(over - from_waiting);
            queued.hasher.update(head);
            data = rest;
        }
        if queued.bytes.len() + data.len() > MAX_QUEUED {
            // Room at the end runs out: the bytes waiting move to the front.
            let start = std::mem::take(&mut queued.start);
            queued.bytes.drain(..start);
        }
        queued.bytes.extend_from_slice(data);
    }

    /// Hash `tar`, the next bytes of the tar stream, into `tar_hasher`, and beside them as
    /// many queued bytes as there are tar bytes. Only the paired part is hashed under the
    /// lock: a staged decoder queueing its next bytes waits for no more than that.
    pub fn hash_beside(&self, tar_hasher: &mut Sha256, tar: &[u8]) {
        let alone = {
            let mut guard = self.lock();
            let queued = &mut *guard;
            let take = queued.waiting().len().min(tar.len());
            let (beside, alone) = tar.split_at(take);
            let end = queued.start + take;
            update_both(tar_hasher, beside, &mut queued.hasher, &queued.bytes[queued.start..end]);
            queued.start = end;
            if queued.start == queued.bytes.len() {
                queued.bytes.clear();
                queued.start = 0;
            }
            alone
        };
        tar_hasher.update(alone);
    }

    /// The compressed stream's sha256 so far, every queued byte included; the queue is
    /// empty afterwards.
    pub fn take_hasher(&self) -> Sha256 {
        let mut queued = self.lock();
        queued.hash_waiting_alone();
        queued.hasher.clone()
    }

    /// Compressed bytes waiting to be hashed.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.lock().waiting().len()
    }

    fn lock(&self) -> MutexGuard<'_, Queued> {
        // Nothing panics while holding the lock; if something did, the bytes queued are
        // still the stream's, in order.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha2(data: &[u8]) -> Digest {
        Digest::of(data)
    }

    /// Bytes no two offsets of which repeat in a short cycle.
    fn bytes(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// Lengths around every block and padding boundary.
    const LENGTHS: [usize; 14] = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 4096, 70_001];

    #[test]
    fn one_lane_is_sha256_whatever_the_updates() {
        for len in LENGTHS {
            let data = bytes(len, len as u32);
            let mut whole = Sha256::new();
            whole.update(&data);
            assert_eq!(whole.finish(), sha2(&data), "{len} bytes at once");
            for step in [1, 7, 63, 64, 65, 500] {
                let mut pieces = Sha256::new();
                for piece in data.chunks(step) {
                    pieces.update(piece);
                }
                assert_eq!(pieces.finish(), sha2(&data), "{len} bytes, {step} at a time");
            }
        }
    }

    #[test]
    fn two_lanes_are_each_their_own_sha256_however_they_are_split() {
        for a_len in LENGTHS {
            for b_len in LENGTHS {
                let (a_data, b_data) = (bytes(a_len, 1), bytes(b_len, 2));
                for (a_step, b_step) in [(4096, 4096), (64, 64), (1, 3), (100, 37), (8192, 512), (65, 6000)] {
                    let (mut a, mut b) = (Sha256::new(), Sha256::new());
                    let mut a_pieces = a_data.chunks(a_step);
                    let mut b_pieces = b_data.chunks(b_step);
                    loop {
                        match (a_pieces.next(), b_pieces.next()) {
                            (None, None) => break,
                            (x, y) => update_both(&mut a, x.unwrap_or(&[]), &mut b, y.unwrap_or(&[])),
                        }
                    }
                    let what = format!("{a_len} and {b_len} bytes, {a_step} and {b_step} at a time");
                    assert_eq!(a.finish(), sha2(&a_data), "lane a: {what}");
                    assert_eq!(b.finish(), sha2(&b_data), "lane b: {what}");
                }
            }
        }
    }

    #[test]
    fn interleaved_rounds_match_sha2_block_by_block() {
        let (a_data, b_data) = (bytes(64 * 37, 3), bytes(64 * 37, 4));
        let (a_blocks, _) = as_blocks(&a_data);
        let (b_blocks, _) = as_blocks(&b_data);
        let (mut a, mut b) = (INITIAL, INITIAL);
        let interleaved = compress_interleaved(&mut a, a_blocks, &mut b, b_blocks);
        let (mut a_one, mut b_one) = (INITIAL, INITIAL);
        compress256(&mut a_one, a_blocks);
        compress256(&mut b_one, b_blocks);
        if !interleaved {
            eprintln!("this CPU has no SHA-NI: the interleaved rounds were not run");
            return;
        }
        assert_eq!((a, b), (a_one, b_one));
    }

    #[test]
    fn tar_reads_hash_the_queued_compressed_bytes_beside_them() {
        let compressed = bytes(300_000, 5);
        let tar = bytes(1_000_000, 6);
        let mut head = Sha256::new();
        head.update(&compressed[..1000]);
        let queue = CompressedQueue::new(head);
        let mut tar_hasher = Sha256::new();
        let paired_before = PAIRED_BLOCKS.with(|c| c.get());
        // Compressed bytes arrive ahead of the tar they inflate to, a chunk at a time.
        let mut tar_pieces = tar.chunks(32 * 1024 + 11);
        for piece in compressed[1000..].chunks(64 * 1024) {
            queue.push(piece);
            for _ in 0..2 {
                queue.hash_beside(&mut tar_hasher, tar_pieces.next().unwrap_or(&[]));
            }
            assert!(queue.waiting() <= MAX_QUEUED);
        }
        for rest in tar_pieces {
            queue.hash_beside(&mut tar_hasher, rest);
        }
        let paired = PAIRED_BLOCKS.with(|c| c.get()) - paired_before;
        assert_eq!(queue.waiting(), 0, "every compressed byte is hashed beside a tar byte");
        assert!(paired >= (compressed.len() as u64 - 1000) / 64 - 64, "only {paired} blocks paired");
        assert_eq!(queue.take_hasher().finish(), sha2(&compressed));
        assert_eq!(tar_hasher.finish(), sha2(&tar));
    }

    #[test]
    fn a_queue_nobody_reads_stays_within_its_bound() {
        // A stream that inflates to nothing: the tar side never reads.
        let compressed = bytes(5 * MAX_QUEUED + 17, 7);
        let queue = CompressedQueue::new(Sha256::new());
        for piece in compressed.chunks(40_000) {
            queue.push(piece);
            assert!(queue.waiting() <= MAX_QUEUED);
        }
        queue.push(&bytes(MAX_QUEUED + 1, 8));
        assert_eq!(queue.waiting(), MAX_QUEUED, "a piece over the bound keeps its newest bytes queued");
        let mut whole = compressed.clone();
        whole.extend(bytes(MAX_QUEUED + 1, 8));
        let hasher = queue.take_hasher();
        assert_eq!(queue.waiting(), 0);
        assert_eq!(hasher.finish(), sha2(&whole));
    }
}
