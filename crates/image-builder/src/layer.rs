//! Layers: a list of tar entries (files, directories, symlinks, hard links,
//! whiteouts) written once, streamed, into a compressed blob file, with the
//! blob's digest and size and the tar's diff_id computed in the same pass.
//!
//! Entries are descriptions, not data: a 300 MB file is a [`GeneratedContent`]
//! that is produced while the tar is written. Headers are USTAR, with a PAX
//! extended header for a path or link target longer than 100 bytes (as Go's
//! archive/tar, and so BuildKit and Docker, write them). Every entry has a fixed
//! mtime, owner and mode unless told otherwise, so the same builder always gives
//! the same digests.

use std::io::{self, Write};
use std::path::Path;

use bytes::Bytes;
use tar::{EntryType, Header};

use super::blob::{Blob, BlobWriter, HashingWriter};
use super::compression::{Compression, CompressionLevel, Compressor, LayerCompression};
use super::content::GeneratedContent;
use super::manifest::Format;
use crate::digest::Digest;
use crate::media_types;

/// The mtime of every entry that does not set its own (2020-09-13T12:26:40Z).
pub const DEFAULT_MTIME: u64 = 1_600_000_000;

const USTAR_NAME_BYTES: usize = 100;

/// The bytes of a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    Bytes(Bytes),
    Generated(GeneratedContent),
}

impl FileContent {
    pub fn len(&self) -> u64 {
        match self {
            FileContent::Bytes(b) => b.len() as u64,
            FileContent::Generated(g) => g.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<&[u8]> for FileContent {
    fn from(b: &[u8]) -> Self {
        FileContent::Bytes(Bytes::copy_from_slice(b))
    }
}

impl<const N: usize> From<&[u8; N]> for FileContent {
    fn from(b: &[u8; N]) -> Self {
        FileContent::Bytes(Bytes::copy_from_slice(b))
    }
}

impl From<&str> for FileContent {
    fn from(s: &str) -> Self {
        FileContent::Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<Vec<u8>> for FileContent {
    fn from(v: Vec<u8>) -> Self {
        FileContent::Bytes(Bytes::from(v))
    }
}

impl From<Bytes> for FileContent {
    fn from(b: Bytes) -> Self {
        FileContent::Bytes(b)
    }
}

impl From<GeneratedContent> for FileContent {
    fn from(g: GeneratedContent) -> Self {
        FileContent::Generated(g)
    }
}

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File(FileContent),
    Dir,
    Symlink { target: String },
    HardLink { target: String },
}

/// One tar entry with its metadata. Paths are relative (a leading `/` is dropped);
/// directories get a trailing `/` as Docker writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits; `None` is 0644 for files, 0755 for directories, 0777 for symlinks.
    pub mode: Option<u32>,
    pub uid: u64,
    pub gid: u64,
    /// `None` is the layer's mtime ([`DEFAULT_MTIME`] unless set).
    pub mtime: Option<u64>,
}

impl Entry {
    fn new(path: &str, kind: EntryKind) -> Self {
        Entry { path: path.trim_start_matches('/').to_string(), kind, mode: None, uid: 0, gid: 0, mtime: None }
    }

    pub fn file(path: &str, content: impl Into<FileContent>) -> Self {
        Entry::new(path, EntryKind::File(content.into()))
    }

    pub fn dir(path: &str) -> Self {
        Entry::new(path, EntryKind::Dir)
    }

    pub fn symlink(path: &str, target: &str) -> Self {
        Entry::new(path, EntryKind::Symlink { target: target.to_string() })
    }

    /// A hard link to an earlier entry of the same layer (`target` is that entry's path).
    pub fn hard_link(path: &str, target: &str) -> Self {
        Entry::new(path, EntryKind::HardLink { target: target.trim_start_matches('/').to_string() })
    }

    /// The whiteout that deletes `path` from lower layers: an empty file `dir/.wh.NAME`.
    pub fn whiteout(path: &str) -> Self {
        let path = path.trim_start_matches('/').trim_end_matches('/');
        let whiteout = match path.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/.wh.{name}"),
            None => format!(".wh.{path}"),
        };
        Entry::file(&whiteout, &b""[..])
    }

    /// The opaque whiteout that hides everything lower layers have in `dir`: `dir/.wh..wh..opq`.
    pub fn opaque_whiteout(dir: &str) -> Self {
        let dir = dir.trim_start_matches('/').trim_end_matches('/');
        let path = if dir.is_empty() { ".wh..wh..opq".to_string() } else { format!("{dir}/.wh..wh..opq") };
        Entry::file(&path, &b""[..])
    }

    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = Some(mtime);
        self
    }
}

/// A layer being described. Chain entries, then [`write`](LayerBuilder::write) it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
    mtime: u64,
    level: CompressionLevel,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        LayerBuilder { entries: Vec::new(), mtime: DEFAULT_MTIME, level: CompressionLevel::default() }
    }
}

impl LayerBuilder {
    /// An empty layer (a tar of only its end-of-archive blocks) until entries are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// The mtime of entries that do not set their own.
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    pub fn compression_level(mut self, level: CompressionLevel) -> Self {
        self.level = level;
        self
    }

    pub fn entry(mut self, entry: Entry) -> Self {
        self.entries.push(entry);
        self
    }

    pub fn file(self, path: &str, content: impl Into<FileContent>) -> Self {
        self.entry(Entry::file(path, content))
    }

    pub fn dir(self, path: &str) -> Self {
        self.entry(Entry::dir(path))
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(Entry::symlink(path, target))
    }

    pub fn hard_link(self, path: &str, target: &str) -> Self {
        self.entry(Entry::hard_link(path, target))
    }

    pub fn whiteout(self, path: &str) -> Self {
        self.entry(Entry::whiteout(path))
    }

    pub fn opaque_whiteout(self, dir: &str) -> Self {
        self.entry(Entry::opaque_whiteout(dir))
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Write the uncompressed tar into any writer (for tests of tar readers).
    pub fn write_tar<W: Write>(&self, out: W) -> io::Result<W> {
        let mut tar = tar::Builder::new(out);
        for entry in &self.entries {
            append_entry(&mut tar, entry, self.mtime)?;
        }
        tar.into_inner()
    }

    /// Write the layer blob into `dir` (streamed: memory does not grow with the layer).
    pub fn write(&self, dir: &Path, compression: LayerCompression) -> io::Result<Layer> {
        let compressor = Compressor::new(BlobWriter::create(dir)?, compression, self.level)?;
        let mut tar = tar::Builder::new(HashingWriter::new(compressor));
        for entry in &self.entries {
            append_entry(&mut tar, entry, self.mtime)?;
        }
        // The end-of-archive blocks go into a member or frame of their own.
        tar.get_mut().get_mut().split_here()?;
        let (diff_id, uncompressed_size, compressor) = tar.into_inner()?.finish();
        let blob = compressor.finish()?.finish()?;
        Ok(Layer { blob, diff_id, uncompressed_size, compression })
    }
}

/// A written layer: its blob and what a manifest and a config say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub blob: Blob,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    pub compression: LayerCompression,
}

impl Layer {
    pub fn digest(&self) -> Digest {
        self.blob.digest
    }

    /// The layer media type in a manifest of this format. Docker schema 2 has no
    /// zstd type; Docker and BuildKit use the OCI one there too.
    pub fn media_type(&self, format: Format) -> &'static str {
        match (format, self.compression.compression()) {
            (Format::Oci, Compression::None) => media_types::OCI_LAYER_TAR,
            (Format::Oci, Compression::Gzip) => media_types::OCI_LAYER_GZIP,
            (Format::Docker, Compression::None) => media_types::DOCKER_LAYER_TAR,
            (Format::Docker, Compression::Gzip) => media_types::DOCKER_LAYER_GZIP,
            (_, Compression::Zstd) => media_types::OCI_LAYER_ZSTD,
        }
    }
}

fn append_entry<W: Write>(tar: &mut tar::Builder<W>, entry: &Entry, default_mtime: u64) -> io::Result<()> {
    let mtime = entry.mtime.unwrap_or(default_mtime);
    let (entry_type, default_mode, size, link) = match &entry.kind {
        EntryKind::File(content) => (EntryType::Regular, 0o644, content.len(), None),
        EntryKind::Dir => (EntryType::Directory, 0o755, 0, None),
        EntryKind::Symlink { target } => (EntryType::Symlink, 0o777, 0, Some(target.as_str())),
        EntryKind::HardLink { target } => (EntryType::Link, 0o644, 0, Some(target.as_str())),
    };
    let mut path = entry.path.clone();
    if entry.kind == EntryKind::Dir && !path.ends_with('/') {
        path.push('/');
    }

    let mut pax = Vec::new();
    if path.len() > USTAR_NAME_BYTES {
        pax_record(&mut pax, "path", &path);
    }
    if let Some(link) = link.filter(|l| l.len() > USTAR_NAME_BYTES) {
        pax_record(&mut pax, "linkpath", link);
    }
    if !pax.is_empty() {
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::XHeader);
        set_name(&mut header, &pax_header_name(&path));
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_size(pax.len() as u64);
        header.set_cksum();
        tar.append(&header, &pax[..])?;
    }

    let mut header = Header::new_ustar();
    header.set_entry_type(entry_type);
    set_name(&mut header, &path);
    if let Some(link) = link {
        let bytes = link.as_bytes();
        let n = bytes.len().min(USTAR_NAME_BYTES);
        header.as_old_mut().linkname[..n].copy_from_slice(&bytes[..n]);
    }
    header.set_mode(entry.mode.unwrap_or(default_mode));
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(mtime);
    header.set_size(size);
    header.set_cksum();
    match &entry.kind {
        EntryKind::File(FileContent::Bytes(bytes)) => tar.append(&header, &bytes[..]),
        EntryKind::File(FileContent::Generated(content)) => tar.append(&header, content.reader()),
        _ => tar.append(&header, io::empty()),
    }
}

/// The USTAR name field holds the first 100 bytes; a PAX `path` record carries the whole path.
fn set_name(header: &mut Header, path: &str) {
    let bytes = path.as_bytes();
    let n = bytes.len().min(USTAR_NAME_BYTES);
    header.as_old_mut().name[..n].copy_from_slice(&bytes[..n]);
}

/// `dir/PaxHeaders.0/name`, as Go's archive/tar names an extended header, cut to fit.
fn pax_header_name(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    let (dir, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    let full = if dir.is_empty() { format!("PaxHeaders.0/{name}") } else { format!("{dir}/PaxHeaders.0/{name}") };
    let mut end = full.len().min(USTAR_NAME_BYTES);
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    full[..end].to_string()
}

/// One PAX record: `"<len> <key>=<value>\n"`, where len counts the whole record including its own digits.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &str) {
    let rest = key.len() + value.len() + 3; // space, '=', newline
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}={value}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::content::GeneratedContent;

    fn sample() -> LayerBuilder {
        let long = format!("srv/{}/deep/file.txt", "d".repeat(140));
        LayerBuilder::new()
            .dir("etc")
            .file("etc/app.conf", "key = value\n")
            .entry(Entry::file("usr/bin/tool", vec![0x7f, b'E', b'L', b'F']).mode(0o755).owner(1000, 1001).mtime(42))
            .file("data/big.bin", GeneratedContent::random(3, 300_000))
            .symlink("etc/alias.conf", "app.conf")
            .hard_link("usr/bin/tool2", "/usr/bin/tool")
            .file(&long, "long")
            .symlink("srv/to-long", &long)
            .whiteout("var/lib/old")
            .opaque_whiteout("/opt/cache/")
    }

    #[test]
    fn tar_holds_every_kind_of_entry() {
        let tar = sample().write_tar(Vec::new()).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().to_string();
            let header = entry.header().clone();
            let link = entry.link_name().unwrap().map(|l| l.to_string_lossy().to_string());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            seen.push((path, header.entry_type(), header.mode().unwrap(), header.uid().unwrap(), link, data.len()));
        }
        let long = format!("srv/{}/deep/file.txt", "d".repeat(140));
        let paths: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "etc/",
                "etc/app.conf",
                "usr/bin/tool",
                "data/big.bin",
                "etc/alias.conf",
                "usr/bin/tool2",
                long.as_str(),
                "srv/to-long",
                "var/lib/.wh.old",
                "opt/cache/.wh..wh..opq"
            ]
        );
        assert_eq!(seen[0].1, EntryType::Directory);
        assert_eq!((seen[2].2, seen[2].3), (0o755, 1000));
        assert_eq!(seen[3].5, 300_000);
        assert_eq!((seen[4].1, seen[4].4.as_deref()), (EntryType::Symlink, Some("app.conf")));
        assert_eq!((seen[5].1, seen[5].4.as_deref()), (EntryType::Link, Some("usr/bin/tool")));
        assert_eq!(seen[7].4.as_deref(), Some(long.as_str()));
        assert_eq!(seen[8].5, 0);
    }

    #[test]
    fn layers_are_reproducible_and_digests_match_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let tar = sample().write_tar(Vec::new()).unwrap();
        for compression in [
            LayerCompression::None,
            LayerCompression::Gzip,
            LayerCompression::GzipMultiMember { split_every: 100_000 },
            LayerCompression::Zstd,
            LayerCompression::ZstdMultiFrame { split_every: 100_000 },
        ] {
            let a = sample().write(dir.path(), compression).unwrap();
            let b = sample().write(dir.path(), compression).unwrap();
            assert_eq!(a, b, "{compression:?}");
            let bytes = std::fs::read(&a.blob.path).unwrap();
            assert_eq!(Digest::of(&bytes), a.blob.digest);
            assert_eq!(bytes.len() as u64, a.blob.size);
            let mut plain = Vec::new();
            match compression.compression() {
                Compression::None => plain = bytes.clone(),
                Compression::Gzip => {
                    flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut plain).unwrap();
                }
                Compression::Zstd => plain = zstd::decode_all(&bytes[..]).unwrap(),
            }
            assert_eq!(plain, tar, "{compression:?}");
            assert_eq!(Digest::of(&plain), a.diff_id);
            assert_eq!(plain.len() as u64, a.uncompressed_size);
        }
    }

    #[test]
    fn empty_layer_is_the_end_of_archive_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let layer = LayerBuilder::new().write(dir.path(), LayerCompression::gzip_multi_member()).unwrap();
        assert_eq!(layer.uncompressed_size, 1024);
        assert_eq!(layer.diff_id, Digest::of(&[0u8; 1024]));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for value_len in [1, 5, 90, 95, 96, 97, 1000] {
            let mut out = Vec::new();
            pax_record(&mut out, "path", &"x".repeat(value_len));
            let text = String::from_utf8(out.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "{text}");
        }
    }
}
