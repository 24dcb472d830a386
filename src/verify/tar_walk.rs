//! Walking the tar headers of a decompressed layer to the real end, as an unpacker would,
//! without keeping any entry's data.
//!
//! The `tar` crate parses headers (checksums, PAX records, GNU long names and sparse
//! maps) and skips entry data through a 32 KiB scratch buffer. One guard is added: the
//! crate reads PAX records and GNU long names into memory whole, so the bytes it may read
//! between two entries are bounded (the Go runtimes refuse such records over 1 MiB);
//! past that the walk fails with `tar_error` instead of growing memory.

use std::cell::Cell;
use std::io::{self, ErrorKind, Read};

use tar::EntryType;

use crate::reason::{ProbeError, Reason};

/// Bytes of headers and extension records (PAX, GNU long name and link, sparse maps)
/// the walk may read for one entry, beyond that entry's own data.
const METADATA_BUDGET: u64 = 4 << 20;

/// What kind of filesystem object a tar entry creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    /// Devices, FIFOs and anything else.
    Other,
}

/// One tar entry, as the walk hands it to an [`EntryVisitor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// PAX path, GNU long name or header name, without leading `./` or `/` and without a
    /// trailing `/` (the root directory is `""`). Not UTF-8: replaced lossily.
    pub path: String,
    pub kind: EntryKind,
    /// Size of the entry's data (for a sparse file, its full size).
    pub size: u64,
    /// Permission bits and the rest of the mode field; 0 if the field does not parse.
    pub mode: u32,
    /// Target of a symlink (as written) or hard link (normalised like `path`).
    pub link_name: Option<String>,
}

/// Called once per tar entry, in archive order. `data` yields the entry's data; read
/// all, some or none of it — what is left is skipped (and still hashed).
///
/// An error stops the walk. The layer's verdict is then `tar_error`, unless the error
/// wraps a [`ProbeError`] (`io::Error::other(probe_error)`), whose reason is used, or
/// the stream itself failed (truncated, corrupt, too large), which wins.
pub trait EntryVisitor {
    fn visit(&mut self, entry: &EntryInfo, data: &mut dyn Read) -> io::Result<()>;
}

/// How far the walk got.
pub(super) struct TarWalk {
    /// Entries seen, not counting PAX global headers.
    pub entries: u64,
    pub failure: Option<ProbeError>,
}

/// Walk the archive in `stream` to its end-of-archive marker (or the end of the stream).
/// The caller drains what follows.
pub(super) fn walk<R: Read>(stream: R, mut visitor: Option<&mut dyn EntryVisitor>) -> TarWalk {
    let budget = Cell::new(METADATA_BUDGET);
    let over_budget = Cell::new(false);
    let position = Cell::new(0);
    let mut archive = tar::Archive::new(BudgetReader {
        inner: stream,
        budget: &budget,
        over_budget: &over_budget,
        position: &position,
    });
    let mut walk = TarWalk { entries: 0, failure: None };
    let mut entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => {
            walk.failure = Some(tar_error(&e, 0, 0));
            return walk;
        }
    };
    loop {
        let mut entry = match entries.next() {
            None => return walk,
            Some(Ok(entry)) => entry,
            Some(Err(e)) => {
                walk.failure = Some(if over_budget.get() {
                    let message = format!(
                        "tar headers and extension records of entry {} are over {METADATA_BUDGET} bytes",
                        walk.entries + 1
                    );
                    ProbeError::new(Reason::TarError, message)
                } else {
                    tar_error(&e, walk.entries, position.get())
                });
                return walk;
            }
        };
        // This entry's data (an upper bound for sparse files) plus the next headers.
        let data_blocks = entry.size().checked_add(511).map_or(u64::MAX, |s| s & !511);
        budget.set(data_blocks.saturating_add(METADATA_BUDGET));

        let entry_type = entry.header().entry_type();
        if entry_type.is_pax_global_extensions() {
            // Archive-wide defaults; unpackers ignore them and so does the count.
            continue;
        }
        walk.entries += 1;
        let Some(visitor) = visitor.as_deref_mut() else {
            continue;
        };
        let info = entry_info(&entry, entry_type);
        let mut data = EntryData { entry: &mut entry, remaining: info.size, truncated: false };
        if let Err(e) = visitor.visit(&info, &mut data) {
            let failure = match e.get_ref().and_then(|inner| inner.downcast_ref::<ProbeError>()) {
                Some(probe_error) => probe_error.clone(),
                None if data.truncated => tar_error(&e, walk.entries, position.get()),
                None => ProbeError::new(Reason::TarError, format!("entry visitor at {:?}: {e}", info.path)),
            };
            walk.failure = Some(failure);
            return walk;
        }
    }
}

fn tar_error(error: &io::Error, entries: u64, position: u64) -> ProbeError {
    ProbeError::new(
        Reason::TarError,
        format!("tar: {error} (after {entries} entries, at byte {position} of the tar stream)"),
    )
}

fn entry_info<R: Read>(entry: &tar::Entry<'_, R>, entry_type: EntryType) -> EntryInfo {
    let kind = match entry_type {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => EntryKind::File,
        EntryType::Directory => EntryKind::Dir,
        EntryType::Symlink => EntryKind::Symlink,
        EntryType::Link => EntryKind::Hardlink,
        _ => EntryKind::Other,
    };
    let link_name = entry.link_name_bytes().map(|bytes| match kind {
        EntryKind::Hardlink => normalise_path(&bytes),
        _ => String::from_utf8_lossy(&bytes).into_owned(),
    });
    EntryInfo {
        path: normalise_path(&entry.path_bytes()),
        kind,
        size: entry.size(),
        mode: entry.header().mode().unwrap_or(0),
        link_name,
    }
}

/// `./usr/bin/` and `/usr/bin` are both `usr/bin`; `./` is `""`.
fn normalise_path(raw: &[u8]) -> String {
    let path = String::from_utf8_lossy(raw);
    let mut rest: &str = &path;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('/') {
            rest = r;
        } else {
            break;
        }
    }
    let rest = rest.trim_end_matches('/');
    if rest == "." { String::new() } else { rest.to_owned() }
}

/// Limits what the tar crate may read before the walk sees the next entry.
struct BudgetReader<'a, R> {
    inner: R,
    budget: &'a Cell<u64>,
    over_budget: &'a Cell<bool>,
    /// Bytes of the tar stream read so far, for messages.
    position: &'a Cell<u64>,
}

impl<R: Read> Read for BudgetReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let budget = self.budget.get();
        if budget == 0 && !buf.is_empty() {
            self.over_budget.set(true);
            return Err(io::Error::new(ErrorKind::InvalidData, "tar metadata over budget"));
        }
        let want = buf.len().min(usize::try_from(budget).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?.min(want);
        self.budget.set(budget - n as u64);
        self.position.set(self.position.get() + n as u64);
        Ok(n)
    }
}

/// An entry's data for the visitor: an early end is an error, not a short file.
struct EntryData<'e, R> {
    entry: &'e mut R,
    remaining: u64,
    truncated: bool,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.entry.read(&mut buf[..want])?.min(want);
        if n == 0 {
            self.truncated = true;
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("archive ends {} bytes before the end of the entry", self.remaining),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
