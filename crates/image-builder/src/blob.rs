//! Blobs written to a directory: streamed to a file while their digest and size
//! are computed, then renamed to `<dir>/blobs/sha256/<hex>` (the OCI image-layout
//! path, so images built into one directory share identical layers).
//!
//! A blob of at most [`SMALL_BLOB_BYTES`] is also kept in memory; a bigger one
//! exists only on disk.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::digest::{Digest, DigestHasher};

/// Blobs up to this size are kept in memory as well as on disk.
pub const SMALL_BLOB_BYTES: u64 = 1 << 20;

/// A content-addressed blob on disk (and in memory when small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    /// Where the bytes are: `<dir>/blobs/sha256/<hex>`.
    pub path: PathBuf,
    /// The bytes, for a blob of at most [`SMALL_BLOB_BYTES`].
    pub data: Option<Bytes>,
}

impl Blob {
    /// The bytes, from memory or read from disk. For tests and small blobs only.
    pub fn read(&self) -> io::Result<Bytes> {
        match &self.data {
            Some(data) => Ok(data.clone()),
            None => fs::read(&self.path).map(Bytes::from),
        }
    }
}

/// Write bytes held in memory as a blob.
pub fn write_blob(dir: &Path, bytes: &[u8]) -> io::Result<Blob> {
    let mut writer = BlobWriter::create(dir)?;
    writer.write_all(bytes)?;
    writer.finish()
}

/// The path a blob with this digest has under `dir`.
pub fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(digest.hex())
}

/// A file being written under a temporary name, hashed and counted as it goes.
pub(crate) struct BlobWriter {
    dir: PathBuf,
    temp_path: PathBuf,
    file: BufWriter<File>,
    hasher: DigestHasher,
    small: Option<Vec<u8>>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl BlobWriter {
    pub(crate) fn create(dir: &Path) -> io::Result<Self> {
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs)?;
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp_path = dir.join("blobs").join(format!(".writing-{}-{n}", std::process::id()));
        let file = BufWriter::with_capacity(1 << 20, File::create(&temp_path)?);
        Ok(BlobWriter { dir: dir.to_path_buf(), temp_path, file, hasher: DigestHasher::new(), small: Some(Vec::new()) })
    }

    /// Flush, name the file by its digest and describe it.
    pub(crate) fn finish(mut self) -> io::Result<Blob> {
        self.file.flush()?;
        drop(self.file.into_inner().map_err(|e| e.into_error())?);
        let size = self.hasher.bytes();
        let digest = self.hasher.finish();
        let path = blob_path(&self.dir, &digest);
        fs::rename(&self.temp_path, &path)?;
        Ok(Blob { digest, size, path, data: self.small.map(Bytes::from) })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(small) = &mut self.small {
            if (small.len() + n) as u64 <= SMALL_BLOB_BYTES {
                small.extend_from_slice(&buf[..n]);
            } else {
                self.small = None;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Passes bytes through while hashing and counting them (the diff_id of a layer's tar).
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: DigestHasher,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: DigestHasher::new() }
    }

    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The digest and byte count of everything written, and the inner writer.
    pub(crate) fn finish(self) -> (Digest, u64, W) {
        let bytes = self.hasher.bytes();
        (self.hasher.finish(), bytes, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_blobs_are_named_by_digest_and_kept_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let blob = write_blob(dir.path(), b"hello").unwrap();
        assert_eq!(blob.digest, Digest::of(b"hello"));
        assert_eq!(blob.size, 5);
        assert_eq!(blob.path, blob_path(dir.path(), &blob.digest));
        assert_eq!(fs::read(&blob.path).unwrap(), b"hello");
        assert_eq!(blob.data.as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn big_blobs_live_on_disk_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; SMALL_BLOB_BYTES as usize + 1];
        let blob = write_blob(dir.path(), &data).unwrap();
        assert_eq!(blob.data, None);
        assert_eq!(blob.read().unwrap().len(), data.len());
    }
}
