//! gzip, inflated by ISA-L's igzip: a reader over its streaming state, member after
//! member, as `gzip -d` and the Go runtimes read a layer.
//!
//! Why ISA-L: on the layers registries hold it inflates 6 % (already-compressed
//! files) to 33 % (logs, text) faster than zlib-rs, 20 % on machine code, and
//! inflate is more than half of what a layer check costs. Its own `Read` wrappers
//! are slow on stored blocks; this loop hands it the caller's buffer, so a stored
//! block is one copy.
//!
//! Each member's header (RFC 1952: the fixed ten bytes, then the optional extra
//! field, name, comment and header CRC) is read here, byte by byte as it arrives,
//! never stored beyond its fixed part: ISA-L's own header reader loses its place
//! when an extra field or a name arrives split over several reads, as a body read
//! from the network may. ISA-L inflates the deflate data and checks the trailer
//! (CRC-32 and length, `ISAL_GZIP_NO_HDR_VER`). After a member, any byte that
//! follows must begin another member: trailing garbage is an error, as it is for
//! `gzip -d` and Go's reader.
//!
//! One of pullprobe's two modules with `unsafe` code (the other is `sha256.rs`): the
//! calls into the C library and the `vzeroupper` after each, each with the reason it is
//! sound.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};

use isal_sys::igzip_lib as isal;

/// A decoder of gzip members read from `input`.
pub struct IgzipDecoder<R> {
    input: R,
    state: State,
    phase: Phase,
    /// A failure is final: the stream is not read past it.
    failed: Option<(io::ErrorKind, String)>,
    /// What ISA-L had inflated into its own buffer when it met invalid data, given out
    /// before the failure: every byte before the fault is read, whatever the size of the
    /// caller's buffers (so a layer's report does not depend on them).
    salvaged: VecDeque<u8>,
}

enum Phase {
    /// Reading a member's header.
    Header(Header),
    /// Inflating a member's deflate data, then checking its trailer.
    Deflate,
    /// A member ended; the next byte, if any, starts another.
    Between,
}

/// ISA-L's state, owned: its buffers and counters, and pointers into the caller's
/// buffers that are set before each call and cleared after it.
struct State(Box<isal::inflate_state>);

// SAFETY: the state holds no thread-affine resource (no thread-local, no lock, no
// handle), only plain data and the `next_in`/`next_out` pointers, which are null
// between calls ([`IgzipDecoder::read`] clears them); so moving it to the thread
// that verifies a staged layer is sound.
unsafe impl Send for State {}

impl State {
    fn new() -> State {
        let layout = std::alloc::Layout::new::<isal::inflate_state>();
        // SAFETY: `inflate_state` is a C struct of integers, arrays and raw pointers,
        // for which all-zero bytes are a valid value, so the zeroed allocation (of the
        // global allocator, with the type's layout, not null) is a valid `Box`;
        // `isal_inflate_init` then sets every field the decoder reads. Allocated in
        // place, it never sits on the stack (it is about 100 KiB).
        let mut state = unsafe {
            let raw = std::alloc::alloc_zeroed(layout).cast::<isal::inflate_state>();
            if raw.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            let mut state = Box::from_raw(raw);
            isal::isal_inflate_init(&mut *state);
            state
        };
        // Raw deflate, then the gzip trailer, checked.
        state.crc_flag = isal::ISAL_GZIP_NO_HDR_VER;
        State(state)
    }

    /// Ready for the deflate data of another member.
    fn reset(&mut self) {
        // SAFETY: the state was initialised in `new`; a reset keeps `crc_flag`.
        unsafe { isal::isal_inflate_reset(&mut *self.0) };
    }
}

impl<R: BufRead> IgzipDecoder<R> {
    pub fn new(input: R) -> Self {
        IgzipDecoder {
            input,
            state: State::new(),
            phase: Phase::Header(Header::default()),
            failed: None,
            salvaged: VecDeque::new(),
        }
    }

    fn fail(&mut self, kind: io::ErrorKind, message: String) -> io::Error {
        self.failed = Some((kind, message.clone()));
        io::Error::new(kind, message)
    }

    /// One call into ISA-L with what the reader holds: `Ok(0)` when it gave no bytes
    /// (the member may have ended, or the input was taken into its own buffer).
    fn inflate(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let input = self.input.fill_buf()?;
        let given = input.len().min(u32::MAX as usize);
        let state = &mut *self.state.0;
        state.next_in = input.as_ptr().cast_mut();
        state.avail_in = given as u32;
        state.next_out = out.as_mut_ptr();
        state.avail_out = out.len().min(u32::MAX as usize) as u32;
        // SAFETY: `next_in`/`avail_in` describe `input`, borrowed from the reader and
        // alive for this call; ISA-L only reads it (the pointer is `*mut` in its C
        // signature). `next_out`/`avail_out` describe `out`, exclusively borrowed.
        // ISA-L keeps no pointer into either after it returns: what it must hold on
        // to it copies into the state's own buffers; both pointers are cleared below
        // and set again before every call.
        let status = unsafe { isal::isal_inflate(state) };
        clear_upper_vector_state();
        state.next_in = std::ptr::null_mut();
        state.next_out = std::ptr::null_mut();
        let finished = state.block_state == isal::isal_block_state_ISAL_BLOCK_FINISH;
        // After some faults ISA-L's count of input left runs below zero (seen as
        // u32::MAX; valgrind saw no read past the input): it is not trusted then.
        let lost_count = state.avail_in as usize > given;
        let consumed = given.saturating_sub(state.avail_in as usize);
        let produced = out.len().min(u32::MAX as usize) - state.avail_out as usize;
        self.input.consume(consumed);
        if status < 0 {
            let error = self.fail(io::ErrorKind::InvalidData, format!("invalid gzip stream: {}", describe(status)));
            let state = &*self.state.0;
            let pending = usize::try_from(state.tmp_out_processed).ok()..usize::try_from(state.tmp_out_valid).ok();
            if let (Some(start), Some(end)) = (pending.start, pending.end)
                && let Some(bytes) = state.tmp_out_buffer.get(start..end)
            {
                self.salvaged.extend(bytes);
            }
            if produced > 0 {
                return Ok(produced);
            }
            return match self.salvaged.is_empty() {
                true => Err(error),
                false => self.salvaged.read(out),
            };
        }
        if lost_count {
            return Err(self
                .fail(io::ErrorKind::InvalidData, "invalid gzip stream: the inflater lost count of its input".into()));
        }
        if finished {
            self.phase = Phase::Between;
        } else if produced == 0 && given == 0 {
            return Err(self.fail(io::ErrorKind::UnexpectedEof, "gzip stream cut short".into()));
        } else if produced == 0 && consumed == 0 {
            // Input and room for output, and nothing taken or given: never loop on it.
            return Err(self.fail(io::ErrorKind::InvalidData, "invalid gzip stream: the inflater is stuck".into()));
        }
        Ok(produced)
    }
}

/// ISA-L's AVX-512 code (the CRC-32 of the gzip trailer) returns without `vzeroupper`,
/// leaving the upper halves of the vector registers in use. Until something clears
/// them, every SSE instruction after it pays for that, and SHA-NI has only SSE
/// encodings: the sha256 of both streams, which runs between two calls into ISA-L,
/// hashed at 1.33 GB/s instead of 1.80 (AMD EPYC). One `vzeroupper` after each call
/// gives that quarter of the hashing time back.
fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX, which defines `vzeroupper`. It zeroes bits 128 and up
        // of the vector registers, which hold nothing across this call: the calling
        // convention leaves every vector register to the caller, so the compiler keeps
        // no value in one over the call to `zero_upper`.
        unsafe { zero_upper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[allow(unused_unsafe)] // the intrinsic is safe to call here in newer Rust, not in 1.85
unsafe fn zero_upper() {
    // SAFETY: this function is compiled for AVX and only called where the CPU has it.
    unsafe { std::arch::x86_64::_mm256_zeroupper() };
}

impl<R: BufRead> Read for IgzipDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.salvaged.is_empty() {
            return self.salvaged.read(out);
        }
        if let Some((kind, message)) = &self.failed {
            return Err(io::Error::new(*kind, message.clone()));
        }
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match &mut self.phase {
                Phase::Between => {
                    if self.input.fill_buf()?.is_empty() {
                        return Ok(0);
                    }
                    self.phase = Phase::Header(Header::default());
                }
                Phase::Header(header) => {
                    let input = self.input.fill_buf()?;
                    if input.is_empty() {
                        return Err(self.fail(io::ErrorKind::UnexpectedEof, "gzip stream cut short in a header".into()));
                    }
                    match header.feed(input) {
                        Ok((used, done)) => {
                            self.input.consume(used);
                            if done {
                                self.state.reset();
                                self.phase = Phase::Deflate;
                            }
                        }
                        Err(why) => {
                            return Err(self.fail(io::ErrorKind::InvalidData, format!("invalid gzip header: {why}")));
                        }
                    }
                }
                Phase::Deflate => match self.inflate(out)? {
                    0 => continue,
                    n => return Ok(n),
                },
            }
        }
    }
}

const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
/// Flags RFC 1952 reserves: a reader must refuse them.
const RESERVED: u8 = 0xe0;

/// Where a member's header is, fed the bytes as they come.
#[derive(Default)]
struct Header {
    /// The fixed part: ID1 ID2 CM FLG MTIME(4) XFL OS.
    fixed: [u8; 10],
    /// Bytes of the header read so far.
    at: usize,
    /// Of the extra field: its two length bytes, then its bytes left.
    extra_len: [u8; 2],
    extra_left: Option<usize>,
    /// The name and then the comment are read to their NUL.
    name_done: bool,
    comment_done: bool,
    crc_read: usize,
    /// CRC-32 of the header bytes before the header CRC.
    crc: Crc32,
}

impl Header {
    fn flags(&self) -> u8 {
        self.fixed[3]
    }

    /// Take bytes of `input`: how many were the header's, and whether it is complete.
    fn feed(&mut self, input: &[u8]) -> Result<(usize, bool), String> {
        let mut used = 0;
        while used < input.len() {
            if self.complete() {
                return Ok((used, true));
            }
            let byte = input[used];
            used += 1;
            self.take(byte)?;
        }
        Ok((used, self.complete()))
    }

    fn complete(&self) -> bool {
        self.at >= 10
            && (self.flags() & FEXTRA == 0 || self.extra_left == Some(0))
            && (self.flags() & FNAME == 0 || self.name_done)
            && (self.flags() & FCOMMENT == 0 || self.comment_done)
            && (self.flags() & FHCRC == 0 || self.crc_read == 2)
    }

    fn take(&mut self, byte: u8) -> Result<(), String> {
        let flags = self.flags();
        if self.at < 10 {
            self.fixed[self.at] = byte;
            self.at += 1;
            self.crc.update(byte);
            match self.at {
                2 if self.fixed[..2] != [0x1f, 0x8b] => {
                    return Err(format!("bad magic number {:02x} {:02x}", self.fixed[0], self.fixed[1]));
                }
                3 if self.fixed[2] != 8 => {
                    return Err(format!("compression method {}, not deflate (8)", self.fixed[2]));
                }
                4 if self.fixed[3] & RESERVED != 0 => {
                    return Err(format!("reserved flags set ({:#04x})", self.fixed[3]));
                }
                _ => {}
            }
            return Ok(());
        }
        self.at += 1;
        if flags & FEXTRA != 0 && self.extra_left != Some(0) {
            self.crc.update(byte);
            match self.extra_left {
                None if self.at == 11 => self.extra_len[0] = byte,
                None => {
                    self.extra_len[1] = byte;
                    self.extra_left = Some(usize::from(u16::from_le_bytes(self.extra_len)));
                }
                Some(left) => self.extra_left = Some(left - 1),
            }
        } else if flags & FNAME != 0 && !self.name_done {
            self.crc.update(byte);
            self.name_done = byte == 0;
        } else if flags & FCOMMENT != 0 && !self.comment_done {
            self.crc.update(byte);
            self.comment_done = byte == 0;
        } else {
            // FHCRC: the low 16 bits of the CRC-32 of the header before it.
            let expected = (self.crc.value() & 0xffff) as u16;
            let shift = 8 * self.crc_read;
            self.crc_read += 1;
            if (expected >> shift) as u8 != byte {
                return Err("the header CRC does not match the header".into());
            }
        }
        Ok(())
    }
}

/// CRC-32 (IEEE, reflected) of a header's bytes, a bit at a time: headers are short.
struct Crc32(u32);

impl Default for Crc32 {
    fn default() -> Self {
        Crc32(!0)
    }
}

impl Crc32 {
    fn update(&mut self, byte: u8) {
        self.0 ^= u32::from(byte);
        for _ in 0..8 {
            self.0 = (self.0 >> 1) ^ (0xedb8_8320 & (self.0 & 1).wrapping_neg());
        }
    }

    fn value(&self) -> u32 {
        !self.0
    }
}

/// ISA-L's error codes (`igzip_lib.h`), as a person reads them.
fn describe(status: i32) -> String {
    match status {
        isal::ISAL_INVALID_BLOCK => "an invalid deflate block".into(),
        isal::ISAL_INVALID_SYMBOL => "an invalid Huffman code or symbol".into(),
        isal::ISAL_INVALID_LOOKBACK => "a back-reference before the start of the data".into(),
        isal::ISAL_INCORRECT_CHECKSUM => "the trailer's CRC-32 or length does not match the data".into(),
        other => format!("ISA-L error {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Read, Write};

    use super::IgzipDecoder;

    fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// Text, runs, and bytes deflate cannot shrink (stored blocks).
    pub(super) fn sample() -> Vec<u8> {
        let mut data = Vec::new();
        for i in 0..20_000u32 {
            data.extend_from_slice(format!("line {i} of a log, status {}\n", i % 7).as_bytes());
        }
        data.extend(std::iter::repeat_n(0u8, 100_000));
        let mut x = 0x9e37_79b9_u32;
        data.extend((0..200_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        }));
        data
    }

    /// Everything the decoder gives, read `chunk` bytes at a time from input fed
    /// `feed` bytes at a time.
    fn inflate(blob: &[u8], feed: usize, chunk: usize) -> std::io::Result<Vec<u8>> {
        let mut decoder = IgzipDecoder::new(BufReader::with_capacity(feed, blob));
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            match decoder.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// The state components of the vector registers that are not in their initial
    /// state, as `xgetbv` with ECX = 1 tells (XINUSE), or `None` on a CPU that cannot.
    #[cfg(target_arch = "x86_64")]
    #[allow(unused_unsafe)] // `__cpuid_count` is safe to call in newer Rust, not in 1.85
    fn vector_state_in_use() -> Option<u64> {
        use std::arch::x86_64::{__cpuid_count, __get_cpuid_max};

        #[target_feature(enable = "xsave")]
        unsafe fn xinuse() -> u64 {
            // SAFETY: the caller checked that the CPU has XSAVE and XGETBV with ECX = 1.
            unsafe { std::arch::x86_64::_xgetbv(1) }
        }

        if !std::arch::is_x86_feature_detected!("xsave") {
            return None;
        }
        // SAFETY: `cpuid` exists on every x86-64 CPU; leaf 0xD is asked only where the
        // highest leaf reaches it.
        let xgetbv1 = unsafe { __get_cpuid_max(0).0 >= 0xd && __cpuid_count(0xd, 1).eax & (1 << 2) != 0 };
        // SAFETY: XSAVE and XGETBV with ECX = 1 are there, checked just above.
        xgetbv1.then(|| unsafe { xinuse() })
    }

    /// SHA-NI runs between two calls into the decoder, and ISA-L's AVX-512 code returns
    /// without `vzeroupper`: with the upper halves of the vector registers left in use,
    /// sha256 ran at three quarters of its speed. Checked after every read of both
    /// decoders (libzstd leaves them clean today). On a CPU without XINUSE this checks
    /// nothing, and says so.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_decoders_give_the_vector_registers_back_clean() {
        use crate::verify::{Compression, decoder};

        // Upper halves of ymm0-15 (bit 2) and of zmm0-15 (bit 6).
        const UPPER: u64 = (1 << 2) | (1 << 6);
        if vector_state_in_use().is_none() {
            eprintln!("this CPU does not report which vector state is in use (xgetbv ECX=1): nothing to check");
            return;
        }
        let data = sample();
        let gzip = gzip(&data, 6);
        let zstd = zstd::encode_all(&data[..], 3).unwrap();
        for (compression, blob) in [(Compression::Gzip, &gzip), (Compression::Zstd, &zstd)] {
            let mut decoder = decoder(compression, &blob[..]).unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0;
            loop {
                let n = decoder.read(&mut buf).expect("a valid stream");
                let in_use = vector_state_in_use().unwrap_or(0);
                assert_eq!(
                    in_use & UPPER,
                    0,
                    "{compression:?}, after {total} bytes: XINUSE {in_use:#x}, upper vector state left in use"
                );
                if n == 0 {
                    break;
                }
                total += n;
            }
            assert_eq!(total, data.len(), "{compression:?}");
        }
    }

    #[test]
    fn every_buffer_size_gives_the_same_bytes_as_zlib() {
        let data = sample();
        for level in [0, 1, 6, 9] {
            let blob = gzip(&data, level);
            for (feed, chunk) in [(64 * 1024, 64 * 1024), (1, 7), (13, 1), (4096, 512), (1 << 20, 100_003)] {
                let out = inflate(&blob, feed, chunk).unwrap_or_else(|e| panic!("level {level} {feed}/{chunk}: {e}"));
                assert!(out == data, "level {level}, fed {feed}, read {chunk}: {} bytes of {}", out.len(), data.len());
            }
        }
    }

    #[test]
    fn members_follow_each_other_and_headers_may_carry_names() {
        let data = sample();
        let named = {
            let mut encoder = flate2::GzBuilder::new()
                .filename("layer.tar")
                .comment("a comment")
                .extra(vec![1, 2, 3, 4])
                .write(Vec::new(), flate2::Compression::default());
            encoder.write_all(&data[..1000]).unwrap();
            encoder.finish().unwrap()
        };
        let blob = [gzip(&data[1000..5000], 6), named, gzip(b"", 6), gzip(&data[..1000], 1)].concat();
        let want = [&data[1000..5000], &data[..1000], &data[..1000]].concat();
        for feed in [1, 3, 64 * 1024] {
            assert!(inflate(&blob, feed, 777).unwrap() == want, "fed {feed}");
        }
    }

    #[test]
    fn broken_streams_are_errors_that_say_why() {
        let data = sample();
        let blob = gzip(&data, 6);
        let error = |blob: &[u8]| inflate(blob, 4096, 4096).expect_err("an error").to_string();

        let mut crc = blob.clone();
        let at = crc.len() - 8;
        crc[at] ^= 0xff;
        assert!(error(&crc).contains("CRC-32 or length"), "{}", error(&crc));
        assert!(error(&blob[..blob.len() - 3]).contains("cut short"));
        assert!(error(&blob[..10]).contains("cut short"));
        assert!(error(b"").contains("cut short"));
        let zip_after = [blob.clone(), b"PK\x03\x04".to_vec()].concat();
        assert_eq!(error(&zip_after), "invalid gzip header: bad magic number 50 4b");
        assert_eq!(error(&[blob.clone(), vec![0x1f]].concat()), "gzip stream cut short in a header");
        assert_eq!(error(b"not gzip at all"), "invalid gzip header: bad magic number 6e 6f");
        let mut method = blob.clone();
        method[2] = 7;
        assert_eq!(error(&method), "invalid gzip header: compression method 7, not deflate (8)");
        let mut reserved = blob.clone();
        reserved[3] = 0x20;
        assert_eq!(error(&reserved), "invalid gzip header: reserved flags set (0x20)");

        // A fault mid-stream: every byte before it is read, then the error, again on every read.
        let mut flipped = gzip(&data, 1);
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x10;
        let mut decoder = IgzipDecoder::new(BufReader::new(&flipped[..]));
        let mut got = Vec::new();
        let failure = decoder.read_to_end(&mut got).expect_err("a fault");
        assert_eq!(failure.kind(), std::io::ErrorKind::InvalidData, "{failure}");
        // Bytes before the fault are the data's (a fault may decode to more bytes than the data has).
        assert!(data.starts_with(&got[..got.len().min(1000)]), "{} bytes", got.len());
        assert_eq!(decoder.read(&mut [0u8; 16]).unwrap_err().to_string(), failure.to_string());
    }

    /// A header with every optional field, its CRC (FHCRC) right or wrong.
    #[test]
    fn a_header_crc_is_checked() {
        let data = b"the layer's bytes".repeat(100);
        let plain = gzip(&data, 6);
        let mut header = vec![0x1f, 0x8b, 8, 0x02 | 0x04 | 0x08 | 0x10, 0, 0, 0, 0, 0, 255];
        header.extend_from_slice(&[3, 0, b'a', b'b', b'c']);
        header.extend_from_slice(b"name.tar\0a comment\0");
        let crc = {
            let mut crc = super::Crc32::default();
            header.iter().for_each(|b| crc.update(*b));
            crc.value()
        };
        // The standard check value of CRC-32 (IEEE): the table-free loop is that CRC.
        let mut check = super::Crc32::default();
        b"123456789".iter().for_each(|b| check.update(*b));
        assert_eq!(check.value(), 0xcbf4_3926);
        let with_crc = |crc: u16| [header.clone(), crc.to_le_bytes().to_vec(), plain[10..].to_vec()].concat();
        for feed in [1, 2, 64 * 1024] {
            assert!(inflate(&with_crc(crc as u16), feed, 4096).unwrap() == data, "fed {feed}");
        }
        let wrong = inflate(&with_crc(crc as u16 ^ 1), 64, 4096).unwrap_err();
        assert_eq!(wrong.to_string(), "invalid gzip header: the header CRC does not match the header");
    }

    #[test]
    fn a_fault_gives_the_same_bytes_whatever_the_buffers() {
        let data = sample();
        let mut flipped = gzip(&data, 6);
        let middle = flipped.len() / 3;
        flipped[middle] ^= 0x04;
        let count = |feed: usize, chunk: usize| {
            let mut decoder = IgzipDecoder::new(BufReader::with_capacity(feed, &flipped[..]));
            let mut buf = vec![0u8; chunk];
            let mut total = 0;
            while let Ok(n @ 1..) = decoder.read(&mut buf) {
                total += n;
            }
            total
        };
        let first = count(64 * 1024, 64 * 1024);
        for (feed, chunk) in [(1, 512), (4096, 32 * 1024), (65_536, 1), (7, 100_000)] {
            assert_eq!(count(feed, chunk), first, "fed {feed}, read {chunk}");
        }
    }
}
