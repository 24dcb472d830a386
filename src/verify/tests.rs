//! Layers built in memory, verified end to end; each test asserts the exact reason.

use std::io::{self, BufRead, Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

const PYTHON: &[u8] = b"#!/bin/sh\necho python\n";

fn long_path() -> String {
    format!("usr/share/{}/module.py", "very-long-directory-name".repeat(5))
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(1_700_000_000);
    header
}

fn append_file(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = header(tar::EntryType::Regular, data.len() as u64, mode);
    builder.append_data(&mut h, path, data).unwrap();
}

fn append_dir(builder: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    builder.append_data(&mut h, path, io::empty()).unwrap();
}

/// Write the name field as given (the builder would clean `./` and reject `/`).
fn append_raw_name(builder: &mut tar::Builder<Vec<u8>>, name: &[u8], data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    builder.append(&h, data).unwrap();
}

/// A layer with every entry kind a runtime must accept.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    append_dir(&mut b, "usr/");
    append_dir(&mut b, "usr/bin/");
    append_file(&mut b, "usr/bin/python3", PYTHON, 0o755);
    let mut link = header(tar::EntryType::Link, 0, 0o755);
    b.append_link(&mut link, "usr/bin/python", "usr/bin/python3").unwrap();
    let mut symlink = header(tar::EntryType::Symlink, 0, 0o777);
    b.append_link(&mut symlink, "usr/bin/py", "python3").unwrap();
    // A PAX long path (> 100 bytes) and a GNU long name.
    let long = long_path();
    b.append_pax_extensions([("path", long.as_bytes())]).unwrap();
    append_raw_name(&mut b, b"module.py", b"print('pax')\n");
    append_file(&mut b, &format!("opt/{}", "gnu-long-name-".repeat(10)), b"gnu", 0o644);
    // Whiteouts: a deleted file and an opaque directory.
    append_file(&mut b, "etc/.wh.motd", b"", 0o644);
    append_file(&mut b, "var/cache/.wh..wh..opq", b"", 0o644);
    append_raw_name(&mut b, b"./etc/hosts", b"127.0.0.1 localhost\n");
    append_raw_name(&mut b, b"/etc/absolute", b"abs\n");
    append_file(&mut b, "data/big.bin", &patterned(300_000), 0o600);
    b.into_inner().unwrap()
}

const SAMPLE_ENTRIES: u64 = 12;

/// Bytes that compress somewhat, like real files.
fn patterned(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            if i % 3 == 0 { (state >> 24) as u8 } else { b'a' + (i % 7) as u8 }
        })
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn spec(blob: &[u8], compression: Compression, tar: &[u8]) -> LayerSpec {
    LayerSpec {
        digest: Digest::of(blob),
        size: blob.len() as u64,
        compression: Some(compression),
        diff_id: Some(Digest::of(tar)),
        mode: CheckMode::Full,
        limits: LayerLimits::UNLIMITED,
    }
}

/// Verified on one thread and with the decoder on its own: the same report both ways.
fn verify(blob: &[u8], spec: &LayerSpec) -> LayerReport {
    let staged = verify_layer_in(blob, spec, None, stage::Staging::Now);
    let unstaged = verify_layer_in(blob, spec, None, stage::Staging::Never);
    assert_eq!(staged, unstaged, "staging changed the report");
    unstaged
}

#[track_caller]
fn assert_verified(report: &LayerReport) {
    assert_eq!(report.error, None, "{report:?}");
    assert!(report.is_ok());
}

#[track_caller]
fn assert_reason(report: &LayerReport, reason: Reason) {
    assert_eq!(report.reason(), Some(reason), "{report:?}");
}

#[test]
fn gzip_layer_verifies() {
    let tar = sample_tar();
    let blob = gzip(&tar);
    let report = verify(&blob, &spec(&blob, Compression::Gzip, &tar));
    assert_verified(&report);
    assert_eq!(report.bytes, blob.len() as u64);
    assert_eq!(report.computed_digest, Some(Digest::of(&blob)));
    assert_eq!(report.uncompressed_bytes, Some(tar.len() as u64));
    assert_eq!(report.computed_diff_id, Some(Digest::of(&tar)));
    assert_eq!(report.tar_entries, SAMPLE_ENTRIES);
    assert_eq!(report.check, CheckMode::Full);
}

#[test]
fn multi_member_gzip_verifies() {
    let tar = sample_tar();
    let (head, tail) = tar.split_at(tar.len() / 2 + 77);
    let blob = [gzip(head), gzip(tail)].concat();
    let report = verify(&blob, &spec(&blob, Compression::Gzip, &tar));
    assert_verified(&report);
    assert_eq!(report.uncompressed_bytes, Some(tar.len() as u64));
    assert_eq!(report.tar_entries, SAMPLE_ENTRIES);
}

#[test]
fn zstd_with_two_frames_verifies() {
    let tar = sample_tar();
    let (head, tail) = tar.split_at(5000);
    let blob = [zstd(head), zstd(tail)].concat();
    let report = verify(&blob, &spec(&blob, Compression::Zstd, &tar));
    assert_verified(&report);
    assert_eq!(report.computed_diff_id, Some(Digest::of(&tar)));
    assert_eq!(report.tar_entries, SAMPLE_ENTRIES);
}

#[test]
fn uncompressed_layer_verifies() {
    let tar = sample_tar();
    let report = verify(&tar, &spec(&tar, Compression::None, &tar));
    assert_verified(&report);
    assert_eq!(report.computed_diff_id, Some(Digest::of(&tar)));
    assert_eq!(report.uncompressed_bytes, Some(tar.len() as u64));
    assert_eq!(report.tar_entries, SAMPLE_ENTRIES);
}

#[test]
fn empty_layer_verifies() {
    let tar = tar::Builder::new(Vec::new()).into_inner().unwrap();
    assert_eq!(tar, vec![0u8; 1024]);
    let blob = gzip(&tar);
    let report = verify(&blob, &spec(&blob, Compression::Gzip, &tar));
    assert_verified(&report);
    assert_eq!(report.tar_entries, 0);
    assert_eq!(report.uncompressed_bytes, Some(1024));
}

#[test]
fn padding_after_end_of_archive_is_part_of_the_diff_id() {
    let mut tar = sample_tar();
    tar.extend_from_slice(&[0u8; 9216]); // blocking factor 20, as GNU tar writes
    let blob = gzip(&tar);
    let report = verify(&blob, &spec(&blob, Compression::Gzip, &tar));
    assert_verified(&report);
    assert_eq!(report.uncompressed_bytes, Some(tar.len() as u64));
    assert_eq!(report.computed_diff_id, Some(Digest::of(&tar)));

    // The same layer whose config lists the diff_id of the tar without the padding.
    let unpadded = &tar[..tar.len() - 9216];
    let mut wrong = spec(&blob, Compression::Gzip, &tar);
    wrong.diff_id = Some(Digest::of(unpadded));
    assert_reason(&verify(&blob, &wrong), Reason::DiffIdMismatch);
}

#[test]
fn truncated_body_is_blob_truncated() {
    let tar = sample_tar();
    let blob = gzip(&tar);
    let spec = spec(&blob, Compression::Gzip, &tar);
    let cut = &blob[..blob.len() - 100];
    let report = verify(cut, &spec);
    assert_reason(&report, Reason::BlobTruncated);
    let message = &report.error.as_ref().unwrap().message;
    assert_eq!(message, &format!("got {} of {} bytes", cut.len(), blob.len()));

    // A body that is empty although the headers promised it all.
    assert_reason(&verify(&[], &spec), Reason::BlobTruncated);
}

#[test]
fn one_flipped_byte_is_blob_digest_mismatch() {
    let tar = sample_tar();
    let blob = gzip(&tar);
    let spec = spec(&blob, Compression::Gzip, &tar);
    let mut bad = blob.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x01;
    let report = verify(&bad, &spec);
    assert_reason(&report, Reason::BlobDigestMismatch);
    let message = &report.error.as_ref().unwrap().message;
    let n = blob.len();
    assert!(message.contains(&format!("({n} bytes of {n})")), "{message}");
    assert!(message.contains(&Digest::of(&bad).to_string()), "{message}");
    assert!(message.contains(&Digest::of(&blob).to_string()), "{message}");
}

#[test]
fn extra_bytes_are_blob_size_mismatch() {
    let tar = sample_tar();
    let blob = gzip(&tar);
    let spec = spec(&blob, Compression::Gzip, &tar);
    let longer = [blob.as_slice(), b"extra"].concat();
    let report = verify(&longer, &spec);
    assert_reason(&report, Reason::BlobSizeMismatch);
    assert_eq!(report.bytes, blob.len() as u64 + 1);
    assert_eq!(report.computed_digest, Some(Digest::of(&blob)));
}

/// Counts what is taken from an endless source, offered 64 KiB at a time.
struct Endless {
    taken: u64,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        buf.fill(0x55);
        self.taken += buf.len() as u64;
        Ok(buf.len())
    }
}

impl BufRead for Endless {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        Ok(&[0x55; 64 * 1024])
    }

    fn consume(&mut self, amount: usize) {
        self.taken += amount as u64;
    }
}

#[test]
fn endless_body_is_read_one_byte_past_the_descriptor_only() {
    for compression in [Compression::Gzip, Compression::None] {
        let mut source = Endless { taken: 0 };
        let spec = LayerSpec {
            digest: Digest::of(b"x"),
            size: 100_000,
            compression: Some(compression),
            diff_id: None,
            mode: CheckMode::Full,
            limits: LayerLimits::UNLIMITED,
        };
        let report = verify_layer(&mut source, &spec, None);
        assert_reason(&report, Reason::BlobSizeMismatch);
        assert_eq!(source.taken, 100_001);
        assert_eq!(report.bytes, 100_001);
    }
}

#[test]
fn gzip_of_another_tar_is_diff_id_mismatch() {
    let tar = sample_tar();
    let other = {
        let mut b = tar::Builder::new(Vec::new());
        append_file(&mut b, "etc/os-release", b"ID=other\n", 0o644);
        b.into_inner().unwrap()
    };
    let blob = gzip(&other);
    let report = verify(&blob, &spec(&blob, Compression::Gzip, &tar));
    assert_reason(&report, Reason::DiffIdMismatch);
    assert_eq!(report.computed_diff_id, Some(Digest::of(&other)));
    assert_eq!(report.tar_entries, 1);
}

#[test]
fn truncated_gzip_matching_its_descriptor_is_decompress_error() {
    let tar = sample_tar();
    let full = gzip(&tar);
    let blob = &full[..full.len() / 2];
    let report = verify(blob, &spec(blob, Compression::Gzip, &tar));
    assert_reason(&report, Reason::DecompressError);
    assert_eq!(report.computed_diff_id, None);

    let full = zstd(&tar);
    let blob = &full[..full.len() - 3];
    assert_reason(&verify(blob, &spec(blob, Compression::Zstd, &tar)), Reason::DecompressError);
}

#[test]
fn decompress_errors_do_not_hide_the_root_cause() {
    let tar = sample_tar();
    let blob = gzip(&tar);
    let spec = spec(&blob, Compression::Gzip, &tar);
    // Garbage early in the deflate stream breaks decompression at once; the digest wins.
    let mut bad = blob.clone();
    for b in &mut bad[20..60] {
        *b = 0xff;
    }
    let report = verify(&bad, &spec);
    assert_reason(&report, Reason::BlobDigestMismatch);
    assert_eq!(report.bytes, blob.len() as u64);
    // Cut in the middle: the decoder fails first, truncation is still the verdict.
    assert_reason(&verify(&bad[..blob.len() / 2], &spec), Reason::BlobTruncated);
}

#[test]
fn gzip_with_trailing_garbage_is_decompress_error() {
    let tar = sample_tar();
    let blob = [gzip(&tar), b"not gzip".to_vec()].concat();
    assert_reason(&verify(&blob, &spec(&blob, Compression::Gzip, &tar)), Reason::DecompressError);
}

#[test]
fn wrong_compression_is_decompress_error() {
    let tar = sample_tar();
    let blob = zstd(&tar);
    assert_reason(&verify(&blob, &spec(&blob, Compression::Gzip, &tar)), Reason::DecompressError);
    let blob = gzip(&tar);
    assert_reason(&verify(&blob, &spec(&blob, Compression::Zstd, &tar)), Reason::DecompressError);
}

#[test]
fn corrupt_tar_in_valid_gzip_is_tar_error() {
    let mut tar = sample_tar();
    tar[3] ^= 0x20; // a name byte of the first header: the checksum no longer matches
    let blob = gzip(&tar);
    let report = verify(&blob, &spec(&blob, Compression::Gzip, &tar));
    assert_reason(&report, Reason::TarError);
    assert!(report.error.as_ref().unwrap().message.contains("checksum"), "{report:?}");

    let noise = patterned(4096);
    let blob = gzip(&noise);
    assert_reason(&verify(&blob, &spec(&blob, Compression::Gzip, &noise)), Reason::TarError);
}

#[test]
fn tar_cut_inside_an_entry_is_tar_error() {
    let tar = sample_tar();
    let cut = &tar[..tar.len() - 200_000];
    let blob = gzip(cut);
    let report = verify(&blob, &spec(&blob, Compression::Gzip, cut));
    assert_reason(&report, Reason::TarError);
    let message = &report.error.as_ref().unwrap().message;
    assert!(message.contains(&format!("at byte {} of the tar stream", cut.len())), "{message}");
}

#[test]
fn oversized_pax_record_is_tar_error_not_memory() {
    let mut b = tar::Builder::new(Vec::new());
    let huge = vec![b'a'; 6 << 20];
    b.append_pax_extensions([("comment", huge.as_slice())]).unwrap();
    append_file(&mut b, "etc/hosts", b"x", 0o644);
    let tar = b.into_inner().unwrap();
    let blob = gzip(&tar);
    let report = verify(&blob, &spec(&blob, Compression::Gzip, &tar));
    assert_reason(&report, Reason::TarError);
    assert!(report.error.as_ref().unwrap().message.contains("over"), "{report:?}");
}

/// A tar header for a 10 GiB file followed by its zeros, as gzip members of 64 MiB of
/// zeros each: about 10 MB compressed.
fn gzip_bomb() -> Vec<u8> {
    let size: u64 = 10 << 30;
    let mut h = header(tar::EntryType::Regular, size, 0o644);
    h.set_path("zeros").unwrap();
    h.set_cksum();
    let mut blob = gzip(h.as_bytes());
    let chunk = gzip(&vec![0u8; 64 << 20]);
    for _ in 0..(size >> 26) {
        blob.extend_from_slice(&chunk);
    }
    blob
}

#[test]
fn gzip_bomb_stops_at_max_uncompressed_bytes() {
    let blob = gzip_bomb();
    let mut spec = spec(&blob, Compression::Gzip, b"");
    spec.limits.max_uncompressed_bytes = 200 << 20;
    let started = Instant::now();
    let report = verify(&blob, &spec);
    assert_reason(&report, Reason::TooLarge);
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert_eq!(report.uncompressed_bytes, Some((200 << 20) + 1));
    assert_eq!(report.bytes, blob.len() as u64, "compressed stream still drained");
    let message = &report.error.as_ref().unwrap().message;
    assert!(message.contains("max_uncompressed_bytes 209715200"), "{message}");
}

#[test]
fn ratio_limit_is_too_large() {
    let tar = {
        let mut b = tar::Builder::new(Vec::new());
        append_file(&mut b, "zeros", &vec![0u8; 4 << 20], 0o644);
        b.into_inner().unwrap()
    };
    let blob = gzip(&tar);
    let mut spec = spec(&blob, Compression::Gzip, &tar);
    spec.limits.max_uncompressed_ratio = 10.0;
    let report = verify(&blob, &spec);
    assert_reason(&report, Reason::TooLarge);
    let message = &report.error.as_ref().unwrap().message;
    assert!(message.contains("max_uncompressed_ratio 10"), "{message}");

    // Within the limits (exactly at the byte cap is allowed).
    spec.limits = LayerLimits { max_uncompressed_bytes: tar.len() as u64, max_uncompressed_ratio: 10_000.0 };
    assert_verified(&verify(&blob, &spec));
}

/// Yields `data`, then fails with `error`.
struct FailingSource {
    data: io::Cursor<Vec<u8>>,
    error: Option<io::Error>,
}

impl Read for FailingSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_from_buffer(self, buf)
    }
}

impl BufRead for FailingSource {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.data.fill_buf()?.is_empty() {
            return Err(self.error.take().unwrap_or_else(|| io::Error::other("again")));
        }
        self.data.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.data.consume(amount);
    }
}

#[test]
fn source_error_mid_stream_keeps_its_reason() {
    let tar = sample_tar();
    let blob = gzip(&tar);
    let spec = spec(&blob, Compression::Gzip, &tar);
    let source = FailingSource {
        data: io::Cursor::new(blob[..blob.len() / 3].to_vec()),
        error: Some(source_error(ProbeError::new(Reason::Timeout, "no body bytes for 30s"))),
    };
    let report = verify_layer(source, &spec, None);
    assert_reason(&report, Reason::Timeout);
    assert_eq!(report.computed_digest, None);
    let message = &report.error.as_ref().unwrap().message;
    assert!(message.starts_with("no body bytes for 30s"), "{message}");

    let source = FailingSource {
        data: io::Cursor::new(blob[..blob.len() / 3].to_vec()),
        error: Some(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed")),
    };
    assert_reason(&verify_layer(source, &spec, None), Reason::BlobTruncated);
}

#[test]
fn digest_only_skips_decompression() {
    let noise = patterned(4096);
    let blob = gzip(&noise); // not a tar: a full check would fail
    let mut spec = spec(&blob, Compression::Gzip, &noise);
    spec.mode = CheckMode::DigestOnly;
    let report = verify(&blob, &spec);
    assert_verified(&report);
    assert_eq!(report.check, CheckMode::DigestOnly);
    assert_eq!(report.uncompressed_bytes, None);
    assert_eq!(report.computed_diff_id, None);

    // Not a layer (artifact blob, config): digest and size only, even in full mode.
    let config = br#"{"architecture":"amd64"}"#;
    let spec = LayerSpec {
        digest: Digest::of(config),
        size: config.len() as u64,
        compression: None,
        diff_id: None,
        mode: CheckMode::Full,
        limits: LayerLimits::UNLIMITED,
    };
    let report = verify(config, &spec);
    assert_verified(&report);
    assert_eq!(report.check, CheckMode::DigestOnly);
    assert_reason(&verify(b"{}", &spec), Reason::BlobTruncated);
}

#[test]
fn a_digest_only_spec_decides_size_truncation_and_digest() {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let spec = LayerSpec::digest_only(Digest::of(config), config.len() as u64);
    let report = verify_layer(&config[..], &spec, None);
    assert_verified(&report);
    assert_eq!((report.check, report.bytes), (CheckMode::DigestOnly, config.len() as u64));

    assert_reason(&verify_layer(&config[..5], &spec, None), Reason::BlobTruncated);
    let longer = [&config[..], b"\n"].concat();
    assert_reason(&verify_layer(&longer[..], &spec, None), Reason::BlobSizeMismatch);
    let mut flipped = config.to_vec();
    flipped[2] ^= 1;
    let report = verify_layer(&flipped[..], &spec, None);
    assert_reason(&report, Reason::BlobDigestMismatch);
    let message = report.error.map(|e| e.message).unwrap_or_default();
    assert!(message.contains(&Digest::of(&flipped).to_string()), "names what was served: {message}");
}

#[test]
fn check_mode_serialises_in_snake_case() {
    let json = serde_json::to_string(&[CheckMode::Full, CheckMode::DigestOnly]).unwrap();
    assert_eq!(json, r#"["full","digest_only"]"#);
    assert_eq!(CheckMode::DigestOnly.as_str(), "digest_only");
}

/// Records every entry and the content of the files it is asked about.
#[derive(Default)]
struct Recorder {
    entries: Vec<EntryInfo>,
    contents: Vec<(String, Vec<u8>)>,
    wanted: Vec<&'static str>,
}

impl EntryVisitor for Recorder {
    fn visit(&mut self, entry: &EntryInfo, data: &mut dyn Read) -> io::Result<()> {
        self.entries.push(entry.clone());
        if self.wanted.contains(&entry.path.as_str()) {
            let mut content = Vec::new();
            data.read_to_end(&mut content)?;
            self.contents.push((entry.path.clone(), content));
        } else if entry.path == "data/big.bin" {
            // Read part of it: the walk skips the rest.
            let mut part = [0u8; 1000];
            data.read_exact(&mut part)?;
        }
        Ok(())
    }
}

#[test]
fn visitor_sees_every_entry_in_order() {
    let tar = sample_tar();
    let blob = gzip(&tar);
    let mut recorder = Recorder { wanted: vec!["usr/bin/python3", "etc/hosts"], ..Recorder::default() };
    let report = verify_layer(&blob[..], &spec(&blob, Compression::Gzip, &tar), Some(&mut recorder));
    assert_verified(&report);
    let seen: Vec<(&str, EntryKind)> = recorder.entries.iter().map(|e| (e.path.as_str(), e.kind)).collect();
    let long = long_path();
    let gnu_long = format!("opt/{}", "gnu-long-name-".repeat(10));
    assert_eq!(
        seen,
        vec![
            ("usr", EntryKind::Dir),
            ("usr/bin", EntryKind::Dir),
            ("usr/bin/python3", EntryKind::File),
            ("usr/bin/python", EntryKind::Hardlink),
            ("usr/bin/py", EntryKind::Symlink),
            (long.as_str(), EntryKind::File),
            (gnu_long.as_str(), EntryKind::File),
            ("etc/.wh.motd", EntryKind::File),
            ("var/cache/.wh..wh..opq", EntryKind::File),
            ("etc/hosts", EntryKind::File),
            ("etc/absolute", EntryKind::File),
            ("data/big.bin", EntryKind::File),
        ]
    );
    let python = &recorder.entries[2];
    assert_eq!((python.mode, python.size), (0o755, PYTHON.len() as u64));
    assert_eq!(recorder.entries[3].link_name.as_deref(), Some("usr/bin/python3"));
    assert_eq!(recorder.entries[4].link_name.as_deref(), Some("python3"));
    assert_eq!(recorder.entries[11].size, 300_000);
    assert_eq!(
        recorder.contents,
        vec![
            ("usr/bin/python3".to_owned(), PYTHON.to_vec()),
            ("etc/hosts".to_owned(), b"127.0.0.1 localhost\n".to_vec()),
        ]
    );
}

struct Refuses(io::Error);

impl EntryVisitor for Refuses {
    fn visit(&mut self, _: &EntryInfo, _: &mut dyn Read) -> io::Result<()> {
        let error = std::mem::replace(&mut self.0, io::Error::other("again"));
        Err(error)
    }
}

#[test]
fn visitor_errors_stop_the_walk() {
    let tar = sample_tar();
    let blob = gzip(&tar);
    let spec = spec(&blob, Compression::Gzip, &tar);
    let mut visitor = Refuses(io::Error::other(ProbeError::new(Reason::ContentMismatch, "mode 0644")));
    let report = verify_layer(&blob[..], &spec, Some(&mut visitor));
    assert_reason(&report, Reason::ContentMismatch);
    assert_eq!(report.computed_diff_id, None);

    let mut visitor = Refuses(io::Error::other("disk full"));
    assert_reason(&verify_layer(&blob[..], &spec, Some(&mut visitor)), Reason::TarError);

    // The blob's own failure still wins over the visitor's.
    let mut visitor = Refuses(io::Error::other("disk full"));
    assert_reason(&verify_layer(&blob[..100], &spec, Some(&mut visitor)), Reason::BlobTruncated);
}

#[test]
fn visitor_reading_a_truncated_entry_gets_an_error() {
    let tar = sample_tar();
    let cut = &tar[..tar.len() - 200_000];
    let blob = gzip(cut);
    let mut recorder = Recorder { wanted: vec!["data/big.bin"], ..Recorder::default() };
    let report = verify_layer(&blob[..], &spec(&blob, Compression::Gzip, cut), Some(&mut recorder));
    assert_reason(&report, Reason::TarError);
    let message = &report.error.as_ref().unwrap().message;
    assert!(message.contains("archive ends") && message.contains("after 12 entries"), "{message}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

#[test]
fn chunk_channel_feeds_a_blocking_verifier() {
    let tar = sample_tar();
    let blob = Bytes::from(gzip(&tar));
    let spec = spec(&blob, Compression::Gzip, &tar);
    let report = runtime().block_on(async {
        let (tx, reader) = chunk_channel(4, 1 << 20);
        let verifier = tokio::task::spawn_blocking(move || verify_layer(reader, &spec, None));
        for chunk in blob.chunks(1000) {
            tx.send(Ok(blob.slice_ref(chunk))).await.unwrap();
        }
        drop(tx);
        verifier.await.unwrap()
    });
    assert_verified(&report);
    assert_eq!(report.tar_entries, SAMPLE_ENTRIES);
}

#[test]
fn chunk_channel_carries_the_transfer_failure() {
    let tar = sample_tar();
    let blob = Bytes::from(gzip(&tar));
    let spec = spec(&blob, Compression::Gzip, &tar);
    let report = runtime().block_on(async {
        let (tx, reader) = chunk_channel(2, 1 << 20);
        let verifier = tokio::task::spawn_blocking(move || verify_layer(reader, &spec, None));
        tx.send(Ok(blob.slice(..blob.len() / 2))).await.unwrap();
        let reset = ProbeError::new(Reason::ConnectError, "connection reset");
        tx.send(Err(reset)).await.unwrap();
        verifier.await.unwrap()
    });
    assert_reason(&report, Reason::ConnectError);
    assert!(report.error.unwrap().message.starts_with("connection reset"));
}

#[test]
fn chunk_channel_stops_an_endless_body() {
    let tar = sample_tar();
    let blob = Bytes::from(gzip(&tar));
    let spec = spec(&blob, Compression::Gzip, &tar);
    let (sent, report) = runtime().block_on(async {
        let (tx, reader) = chunk_channel(4, 8192);
        let verifier = tokio::task::spawn_blocking(move || verify_layer(reader, &spec, None));
        let mut sent = 0usize;
        loop {
            let chunk = if sent < blob.len() {
                blob.slice(sent..(sent + 4096).min(blob.len()))
            } else {
                Bytes::from_static(&[0u8; 4096])
            };
            let len = chunk.len();
            if tx.send(Ok(chunk)).await.is_err() {
                break;
            }
            sent += len;
        }
        (sent, verifier.await.unwrap())
    });
    assert_reason(&report, Reason::BlobSizeMismatch);
    // Beyond what the verifier read, only the channel's byte budget, the chunk that
    // waited for it, and what the reader had joined of the small chunks (64 KiB at most).
    assert!(sent <= blob.len() + 8192 + 4096 + 64 * 1024, "{sent} of a {}-byte blob", blob.len());
}

#[test]
fn chunk_channel_holds_at_most_its_byte_budget() {
    runtime().block_on(async {
        let (tx, mut reader) = chunk_channel(64, 10_000);
        for _ in 0..2 {
            tx.send(Ok(Bytes::from(vec![1u8; 4000]))).await.unwrap();
        }
        // A third chunk of 4000 bytes would hold 12000: it waits until the reader finishes one.
        let third = futures_util::FutureExt::now_or_never(tx.send(Ok(Bytes::from(vec![2u8; 4000]))));
        assert!(third.is_none(), "the third chunk went over the budget");
        let reading = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 4000];
            std::io::Read::read_exact(&mut reader, &mut buf).unwrap();
            reader
        });
        let reader = reading.await.unwrap();
        tx.send(Ok(Bytes::from(vec![2u8; 4000]))).await.unwrap();
        // A chunk over the whole budget still goes through, alone; a dropped reader ends the wait.
        drop(reader);
        assert!(tx.send(Ok(Bytes::from(vec![3u8; 50_000]))).await.is_err());
    });
}

/// A source between the blob and the decoder that records where the decoder reads.
struct Watched<R> {
    inner: R,
    /// (address, length) of every buffer handed to the decoder.
    seen: Vec<(usize, usize)>,
    /// Bytes the decoder had copied out through `read`.
    copied: usize,
}

impl<R: BufRead> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copied += n;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Watched<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let buf = self.inner.fill_buf()?;
        self.seen.push((buf.as_ptr() as usize, buf.len()));
        Ok(buf)
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
    }
}

#[test]
fn the_decoder_reads_the_body_where_the_http_client_left_it() {
    let tar = sample_tar();
    for (compression, blob) in [(Compression::Gzip, gzip(&tar)), (Compression::Zstd, zstd(&tar))] {
        let blob = Bytes::from(blob);
        // Two chunks of the body, each larger than a joined one.
        let halves = [blob.slice(..blob.len() / 2), blob.slice(blob.len() / 2..)];
        let sent: Vec<(usize, usize)> = halves.iter().map(|h| (h.as_ptr() as usize, h.len())).collect();
        let (watched, check, inflated) = runtime().block_on(async {
            let (tx, reader) = chunk_channel(4, 1 << 20);
            let (size, digest) = (blob.len() as u64, Digest::of(&blob));
            let reading = tokio::task::spawn_blocking(move || {
                let mut blob = BlobReader::new(reader, size);
                let mut watched = Watched { inner: &mut blob, seen: Vec::new(), copied: 0 };
                let mut inflated = Vec::new();
                decompress::decoder(compression, &mut watched).unwrap().read_to_end(&mut inflated).unwrap();
                let watched = (watched.seen, watched.copied);
                blob.drain();
                (watched, blob.finish(&digest), inflated)
            });
            for half in halves {
                tx.send(Ok(half)).await.unwrap();
            }
            drop(tx);
            reading.await.unwrap()
        });
        let (seen, copied) = watched;
        assert_eq!(inflated, tar, "{compression:?}");
        assert_eq!(copied, 0, "{compression:?}: the decoder copied the body out instead of reading it in place");
        let inside = |(at, len): (usize, usize)| sent.iter().any(|&(start, n)| at >= start && at + len <= start + n);
        let read: Vec<_> = seen.into_iter().filter(|&(_, len)| len > 0).collect();
        assert!(
            !read.is_empty() && read.iter().all(|&buf| inside(buf)),
            "{compression:?}: read outside the chunks sent: {read:?}"
        );
        assert!(check.error.is_none(), "{compression:?}: {:?}", check.error);
        assert_eq!(check.bytes, blob.len() as u64);
    }
}

#[test]
fn tiny_chunks_verify_as_the_whole_body_does() {
    let tar = sample_tar();
    for (compression, blob) in [(Compression::Gzip, gzip(&tar)), (Compression::Zstd, zstd(&tar))] {
        let spec = spec(&blob, compression, &tar);
        let longer = [&blob[..], b"more"].concat();
        let shorter = &blob[..blob.len() - 100];
        for (body, reason) in
            [(&blob[..], None), (&longer[..], Some(Reason::BlobSizeMismatch)), (shorter, Some(Reason::BlobTruncated))]
        {
            for size in [1, 7, 5000] {
                let body = Bytes::copy_from_slice(body);
                let spec = spec.clone();
                let report = runtime().block_on(async {
                    let (tx, reader) = chunk_channel(64, 1 << 20);
                    let verifier = tokio::task::spawn_blocking(move || verify_layer(reader, &spec, None));
                    for chunk in body.chunks(size) {
                        if tx.send(Ok(body.slice_ref(chunk))).await.is_err() {
                            break;
                        }
                    }
                    drop(tx);
                    verifier.await.unwrap()
                });
                let context = format!("{compression:?}, {} of {} bytes in chunks of {size}", body.len(), blob.len());
                match reason {
                    None => {
                        assert!(report.is_ok(), "{context}: {:?}", report.error);
                        assert_eq!(report.tar_entries, SAMPLE_ENTRIES, "{context}");
                    }
                    Some(reason) => assert_eq!(report.reason(), Some(reason), "{context}: {:?}", report.error),
                }
            }
        }
    }
}

#[test]
fn small_chunks_waiting_are_joined_into_a_buffer_of_the_reader_s_own() {
    runtime().block_on(async {
        let (tx, reader) = chunk_channel(64, 10_000);
        for i in 0..10u8 {
            tx.send(Ok(Bytes::from(vec![i; 1000]))).await.unwrap();
        }
        // The budget is spent: another byte waits.
        assert!(futures_util::FutureExt::now_or_never(tx.send(Ok(Bytes::from_static(b"x")))).is_none());
        let (joined, mut reader) = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            let joined = reader.fill_buf().unwrap().to_vec();
            reader.consume(1000);
            (joined, reader)
        })
        .await
        .unwrap();
        let expected: Vec<u8> = (0..10u8).flat_map(|i| vec![i; 1000]).collect();
        assert_eq!(joined, expected, "the ten chunks, in order, as one buffer");
        // Copied out of the channel: their budget is back, unread as most of them are.
        for _ in 0..10 {
            tx.send(Ok(Bytes::from(vec![7u8; 1000]))).await.unwrap();
        }
        drop(tx);
        let rest = tokio::task::spawn_blocking(move || {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).unwrap();
            rest
        })
        .await
        .unwrap();
        assert_eq!(rest.len(), 9_000 + 10_000);
        assert_eq!(rest[..9_000], expected[1000..]);
    });
}

/// A source that breaks `BufRead`'s promise: asked again, it offers less than before.
struct Shrinking {
    data: Vec<u8>,
    at: usize,
    calls: usize,
}

impl Read for Shrinking {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_from_buffer(self, buf)
    }
}

impl BufRead for Shrinking {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.calls += 1;
        let rest = &self.data[self.at..];
        Ok(if self.calls % 2 == 0 { &rest[..rest.len() / 3] } else { rest })
    }

    fn consume(&mut self, amount: usize) {
        self.at = (self.at + amount).min(self.data.len());
    }
}

#[test]
fn a_source_that_breaks_its_promise_gets_a_verdict_not_a_panic() {
    let tar = sample_tar();
    let blob = gzip(&tar);
    for compression in [Compression::Gzip, Compression::None] {
        let source = Shrinking { data: blob.clone(), at: 0, calls: 0 };
        let report = verify_layer(source, &spec(&blob, compression, &tar), None);
        assert_eq!(report.check, CheckMode::Full, "{compression:?}");
    }
}

#[test]
fn a_blob_is_hashed_once_however_its_bytes_are_taken() {
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    for (size, oversized) in [(10_000, false), (6_001, true)] {
        let expected = Digest::of(&body[..size]);
        for step in [1, 7, 4096, 20_000] {
            let mut blob = BlobReader::new(&body[..], size as u64);
            loop {
                // Asked twice before taking anything: the same bytes, hashed once.
                let _ = blob.fill_buf();
                let Ok(buf) = blob.fill_buf() else { break };
                if buf.is_empty() {
                    break;
                }
                let take = step.min(buf.len());
                blob.consume(take);
            }
            let check = blob.finish(&expected);
            assert_eq!(check.digest, Some(expected), "size {size}, {step} bytes at a time");
            let reason = check.error.map(|e| e.reason);
            let want = if oversized { Some(Reason::BlobSizeMismatch) } else { None };
            assert_eq!(reason, want, "size {size}, {step} bytes at a time");
            assert_eq!(check.bytes, size as u64 + u64::from(oversized), "size {size}, {step} bytes at a time");
        }
    }
}

/// The compressed stream's sha256 is computed beside the tar's on the reading thread,
/// staged or not, and the digests are still each stream's own.
#[test]
fn a_layer_s_two_streams_are_hashed_together() {
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, "data/a.bin", &patterned(2 << 20), 0o644);
    append_file(&mut b, "data/b.bin", &patterned(777_777), 0o644);
    let tar = b.into_inner().unwrap();
    for (blob, compression) in [(gzip(&tar), Compression::Gzip), (zstd(&tar), Compression::Zstd)] {
        let blocks = blob.len() as u64 / 64;
        for staging in [stage::Staging::Never, stage::Staging::Now] {
            let before = sha256::PAIRED_BLOCKS.with(|count| count.get());
            let report = verify_layer_in(&blob[..], &spec(&blob, compression, &tar), None, staging);
            assert_verified(&report);
            assert_eq!(report.computed_digest, Some(Digest::of(&blob)));
            assert_eq!(report.computed_diff_id, Some(Digest::of(&tar)));
            let paired = sha256::PAIRED_BLOCKS.with(|count| count.get()) - before;
            let what =
                format!("{compression:?}, {staging:?}: {paired} of {blocks} compressed blocks hashed beside the tar");
            match staging {
                stage::Staging::Never => assert!(paired * 10 >= blocks * 9, "{what}"),
                // How many depends on how far ahead the decoder's thread runs: past the
                // queue's bound, it hashes the oldest bytes alone.
                _ => assert!(paired > 0, "{what}"),
            }
        }
    }
}
