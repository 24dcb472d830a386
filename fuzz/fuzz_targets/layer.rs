//! One layer through the verifier: arbitrary bytes as plain tar, gzip or zstd,
//! against a descriptor and a diff_id that are right or wrong, under the
//! uncompressed caps, with a visitor that reads entry data or skips it.
//!
//! Input: an 8-byte header, then the blob (or, with the `wrap` bit, a tar that
//! the target compresses itself, so the walk sees fuzzed tar through a valid
//! decoder):
//!
//! | byte | meaning |
//! | --- | --- |
//! | 0 | compression: 0 tar, 1 gzip, 2 zstd, 3 not a layer (digest only); bit 7: wrap |
//! | 1, 2 | descriptor size: 0 exact, 1 `len - byte2`, 2 `len + byte2` |
//! | 3 | bit 0: wrong digest; bits 1–2: diff_id none, right, wrong; bit 3: visitor reads data |
//! | 4–6 | `max_uncompressed_bytes` (0: off for tar, else at most 8 MiB) |
//! | 7 | `max_uncompressed_ratio` in quarters (0: off) |
//!
//! Besides "no panic, no hang, bounded memory": the verdict's reason is one a
//! layer can have, with a bounded message; a verified layer has the descriptor's
//! digest and size; no more than `size + 1` bytes are read; the decompressed count
//! stays within the cap; a layer compressed here never fails to decompress; and
//! a wrapped tar gets the same verdict, entry count and diff_id compressed or not;
//! and gzip bytes inflate (ISA-L) to what zlib-rs makes of them, or both refuse them.

#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use pullprobe::digest::Digest;
use pullprobe::reason::Reason;
use pullprobe::verify::{
    CheckMode, Compression, EntryInfo, EntryKind, EntryVisitor, LayerLimits, LayerReport, LayerSpec, decoder,
    verify_layer,
};
use pullprobe_fuzz::check_error;

/// Largest decompressed stream a case may produce: keeps every input well inside 1 s.
const MAX_CAP: u64 = 8 << 20;

/// Every reason a layer check can end with when its source never fails.
const LAYER_REASONS: [Reason; 7] = [
    Reason::BlobSizeMismatch,
    Reason::BlobTruncated,
    Reason::BlobDigestMismatch,
    Reason::DecompressError,
    Reason::TarError,
    Reason::TooLarge,
    Reason::DiffIdMismatch,
];

fuzz_target!(|data: &[u8]| {
    let Some((header, payload)) = data.split_first_chunk::<8>() else { return };
    let compression = match header[0] & 0x7f {
        0 => Some(Compression::None),
        1 => Some(Compression::Gzip),
        2 => Some(Compression::Zstd),
        3 => None,
        _ => return,
    };
    let wrap = header[0] & 0x80 != 0;
    let blob = match (wrap, compression) {
        (true, Some(compression)) => compress(compression, payload),
        _ => payload.to_vec(),
    };
    if compression == Some(Compression::Gzip) && !wrap {
        same_as_zlib(&blob);
    }
    let len = blob.len() as u64;
    let size = match header[1] % 3 {
        0 => len,
        1 => len.saturating_sub(u64::from(header[2])),
        _ => len + u64::from(header[2]),
    };
    let digest = match header[3] & 1 {
        0 => Digest::of(&blob),
        _ => Digest::of(b"something else"),
    };
    let tar = match (wrap, compression) {
        (true, _) => Some(payload.to_vec()),
        (false, Some(compression)) => decompress(compression, &blob),
        (false, None) => None,
    };
    let diff_id = match (header[3] >> 1) & 3 {
        1 => tar.as_deref().map(Digest::of),
        2 => Some(Digest::of(b"not this layer")),
        _ => None,
    };
    let cap = u64::from(u32::from_le_bytes([header[4], header[5], header[6], 0]));
    let max_uncompressed_bytes = match (cap, compression) {
        (0, Some(Compression::None)) => 0,
        _ => 1 + cap % MAX_CAP,
    };
    let limits = LayerLimits { max_uncompressed_bytes, max_uncompressed_ratio: f64::from(header[7]) / 4.0 };
    let spec = LayerSpec { digest, size, compression, diff_id, mode: CheckMode::Full, limits };
    let reads = header[3] & 8 != 0;
    let report = verify(&blob, &spec, reads);

    assert!(report.bytes <= size + 1, "read {} bytes of a {size}-byte blob", report.bytes);
    if let Some(error) = &report.error {
        check_error("layer", error, &LAYER_REASONS);
    } else {
        assert_eq!(report.computed_digest, Some(digest));
        assert_eq!(report.bytes, size);
    }
    assert_eq!(report.check == CheckMode::Full, compression.is_some());
    if let (Some(uncompressed), true) = (report.uncompressed_bytes, max_uncompressed_bytes > 0) {
        assert!(
            uncompressed <= max_uncompressed_bytes + 1,
            "{uncompressed} uncompressed bytes, cap {max_uncompressed_bytes}"
        );
    }
    if report.is_ok() && compression.is_some() {
        assert!(report.computed_diff_id.is_some(), "a verified layer has a diff_id");
        if let Some(expected) = diff_id {
            assert_eq!(report.computed_diff_id, Some(expected));
        }
    }

    // A layer compressed here, with its own digest and size, cannot fail to decompress.
    let sound = wrap && size == len && header[3] & 1 == 0;
    if !(sound && compression.is_some()) {
        return;
    }
    let reason = report.reason();
    assert!(
        !matches!(
            reason,
            Some(
                Reason::DecompressError | Reason::BlobDigestMismatch | Reason::BlobSizeMismatch | Reason::BlobTruncated
            )
        ),
        "{:?}",
        report.error
    );
    // The same tar, uncompressed, gets the same verdict on the tar stream.
    if compression == Some(Compression::None) || header[7] != 0 {
        return;
    }
    let plain = LayerSpec {
        digest: Digest::of(payload),
        size: payload.len() as u64,
        compression: Some(Compression::None),
        diff_id,
        mode: CheckMode::Full,
        limits: LayerLimits { max_uncompressed_ratio: 0.0, ..limits },
    };
    let uncompressed = verify(payload, &plain, reads);
    assert_eq!(uncompressed.reason(), reason, "compressed: {:?}, plain: {:?}", report.error, uncompressed.error);
    if report.is_ok() {
        assert_eq!(uncompressed.tar_entries, report.tar_entries);
        assert_eq!(uncompressed.uncompressed_bytes, report.uncompressed_bytes);
        assert_eq!(uncompressed.computed_diff_id, report.computed_diff_id);
    }
});

/// The prober's gzip decoder (ISA-L) and zlib-rs read the same bytes the same way:
/// the same stream, or both refuse it (where they stop on a fault may differ).
fn same_as_zlib(blob: &[u8]) {
    let limit = MAX_CAP + 1;
    let (mut ours, mut zlib) = (Vec::new(), Vec::new());
    let ours_read = decoder(Compression::Gzip, blob).and_then(|d| d.take(limit).read_to_end(&mut ours));
    let zlib_read = flate2::read::MultiGzDecoder::new(blob).take(limit).read_to_end(&mut zlib);
    let whole = |read: &io::Result<usize>| matches!(read, Ok(n) if (*n as u64) < limit);
    match (&ours_read, &zlib_read) {
        (Err(_), Err(_)) => {}
        (Ok(_), Ok(_)) if whole(&ours_read) && whole(&zlib_read) => {
            assert!(ours == zlib, "ISA-L gave {} bytes, zlib-rs {}", ours.len(), zlib.len());
        }
        // One or both stopped at the limit: the bytes up to there agree.
        (Ok(_), Ok(_)) => {
            let common = ours.len().min(zlib.len());
            assert!(ours[..common] == zlib[..common], "ISA-L and zlib-rs differ within {common} bytes");
        }
        _ if !whole(&ours_read) && ours_read.is_ok() || !whole(&zlib_read) && zlib_read.is_ok() => {}
        _ => panic!("ISA-L: {ours_read:?} ({} bytes); zlib-rs: {zlib_read:?} ({} bytes)", ours.len(), zlib.len()),
    }
}

fn verify(blob: &[u8], spec: &LayerSpec, reads: bool) -> LayerReport {
    let mut visitor = Checker { reads };
    verify_layer(blob, spec, Some(&mut visitor))
}

/// Checks what the walk hands every visitor; reads the entry's data when asked to.
struct Checker {
    reads: bool,
}

impl EntryVisitor for Checker {
    fn visit(&mut self, entry: &EntryInfo, data: &mut dyn Read) -> io::Result<()> {
        let normal = |p: &str| !p.starts_with('/') && !p.starts_with("./") && !p.ends_with('/') && p != ".";
        assert!(normal(&entry.path), "{entry:?}");
        if entry.kind == EntryKind::Hardlink {
            // An empty link name is none: the content check calls such a link broken.
            assert!(entry.link_name.as_deref().is_none_or(normal), "{entry:?}");
        }
        if self.reads {
            let read = io::copy(data, &mut io::sink())?;
            assert!(read <= entry.size, "{read} bytes of a {}-byte entry", entry.size);
        }
        Ok(())
    }
}

fn compress(compression: Compression, tar: &[u8]) -> Vec<u8> {
    match compression {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(tar).expect("gzip into memory");
            encoder.finish().expect("gzip into memory")
        }
        Compression::Zstd => zstd::encode_all(tar, 1).expect("zstd into memory"),
    }
}

/// The decompressed stream of a blob, if it decompresses within the largest cap.
fn decompress(compression: Compression, blob: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let limit = MAX_CAP + 1;
    let read = match compression {
        Compression::None => return Some(blob.to_vec()),
        Compression::Gzip => flate2::read::MultiGzDecoder::new(blob).take(limit).read_to_end(&mut out),
        Compression::Zstd => zstd::Decoder::new(blob).ok()?.take(limit).read_to_end(&mut out),
    };
    read.ok().filter(|n| (*n as u64) < limit).map(|_| out)
}
