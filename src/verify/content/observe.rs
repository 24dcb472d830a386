//! One walk of one layer: what its entries say about the tracked paths, and a Bloom
//! filter of every path the layer touched, for facts that nobody tracked in time.
//!
//! The last [`WINDOW_ENTRIES`] entries are kept (headers only) before they go into the
//! filter, so a path that starts being tracked because a link names it is still seen
//! complete if the layer touched it only that recently: `usr/bin/sh -> dash` comes after
//! `usr/bin/dash` in a sorted tar. A file's content is not kept: a `sha256` assertion
//! reached through such a backward link costs one more walk of that layer.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Read};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{ContentPlan, Seen, ancestors, join, normalise, parent};
use crate::digest::{Digest, DigestHasher};
use crate::verify::{EntryInfo, EntryKind, EntryVisitor};

/// 128 KiB per layer walk: a false "maybe" costs one more walk of that layer, nothing else.
const BLOOM_BITS: u64 = 1 << 20;
const BLOOM_PROBES: u64 = 4;
/// Entries kept in the window before their keys go into the Bloom filter (headers only).
pub const WINDOW_ENTRIES: usize = 1024;

/// One of the recent entries of the window, and what it did.
#[derive(Debug)]
enum Windowed {
    Entry(String, Observed),
    /// The path it removes.
    Whiteout(String),
    /// The directory it makes opaque.
    Opaque(String),
}

impl Windowed {
    /// The directory the tar entry itself is in: it and every ancestor have something under them.
    fn directory(&self) -> &str {
        match self {
            Windowed::Entry(path, _) | Windowed::Whiteout(path) => parent(path),
            Windowed::Opaque(dir) => dir,
        }
    }
}

/// What a layer did at a path, as Bloom filter keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Touch {
    /// A file, symlink, hard link or device at the path, or a whiteout of it.
    NonDir,
    /// A directory entry at the path.
    Dir,
    /// An opaque marker in the path.
    Opaque,
    /// Some entry (whiteouts included) below the path.
    Under,
}

impl Touch {
    pub(super) const ALL: [Touch; 4] = [Touch::NonDir, Touch::Dir, Touch::Opaque, Touch::Under];
}

/// One tar entry at a tracked path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Observed {
    /// Position in the layer (1-based), for hard links to earlier entries.
    pub seq: u64,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    /// Symlink target as written; hard link target normalised.
    pub link: Option<String>,
    /// Only for files at paths whose content an assertion hashes.
    pub sha256: Option<Digest>,
}

/// What one walk of one layer recorded.
#[derive(Debug)]
pub(super) struct LayerObservations {
    /// The last entry at each tracked path.
    pub entries: HashMap<String, Observed>,
    /// Tracked paths this layer whites out.
    pub whiteouts: HashSet<String>,
    /// Tracked directories this layer makes opaque.
    pub opaque: HashSet<String>,
    /// Tracked paths with an entry of this layer below them.
    pub under: HashSet<String>,
    /// Paths whose facts above are complete (tracked from before the layer touched them),
    /// and whether files there were hashed.
    pub covered: HashMap<String, bool>,
    pub bloom: Bloom,
}

#[derive(Debug, Clone, Copy)]
struct Cover {
    complete: bool,
    hash: bool,
    hash_complete: bool,
}

/// The [`EntryVisitor`] of one layer walk for a [`ContentPlan`].
#[derive(Debug)]
pub struct LayerObserver {
    plan: Arc<ContentPlan>,
    index: usize,
    /// The plan's generation when `tracked` was last brought up to date.
    generation: u64,
    /// How far `tracked` has read the plan's changes.
    seen: Seen,
    tracked: BTreeMap<String, bool>,
    /// Tracked paths and their ancestors.
    covers: HashMap<String, Cover>,
    /// The directory of the previous entry: its ancestors are already marked.
    last_dir: Option<String>,
    /// The directory of the entry last moved from the window into the Bloom filter.
    evicted_dir: Option<String>,
    seq: u64,
    window: VecDeque<Windowed>,
    observations: LayerObservations,
}

impl LayerObserver {
    pub(super) fn new(plan: Arc<ContentPlan>, index: usize) -> LayerObserver {
        let mut observer = LayerObserver {
            plan,
            index,
            generation: 0,
            seen: Seen::default(),
            tracked: BTreeMap::new(),
            covers: HashMap::new(),
            last_dir: None,
            evicted_dir: None,
            seq: 0,
            window: VecDeque::with_capacity(WINDOW_ENTRIES),
            observations: LayerObservations {
                entries: HashMap::new(),
                whiteouts: HashSet::new(),
                opaque: HashSet::new(),
                under: HashSet::new(),
                covered: HashMap::new(),
                bloom: Bloom::new(),
            },
        };
        observer.refresh();
        observer
    }

    /// Hand what this walk saw to the plan. Call it only after a walk that reached the
    /// end of the layer; a failed layer fails the pull before content is judged.
    pub fn finish(mut self) {
        // Until nothing more is tracked: a path covered from the window may lead on through
        // a link there (bounded by the cap on tracked paths).
        while self.plan.generation.load(Ordering::SeqCst) != self.generation {
            self.refresh();
        }
        while !self.window.is_empty() {
            self.remember_none();
        }
        self.observations.covered = self
            .covers
            .iter()
            .filter(|(_, c)| c.complete)
            .map(|(path, c)| (path.clone(), c.hash && c.hash_complete))
            .collect();
        self.plan.hand_back(self.index, self.observations);
    }

    /// Pick up paths other walks (or this one) started tracking.
    fn refresh(&mut self) {
        if self.plan.generation.load(Ordering::SeqCst) == self.generation {
            return;
        }
        let update = self.plan.tracked_since(self.seen);
        self.generation = update.generation;
        self.seen = update.seen;
        if update.whole {
            // Paths were dropped; what is covered stays covered (its records stay true).
            self.tracked.clear();
        }
        // Every change first: a link in the window that a new path covers must see the
        // other paths of the same update below it.
        for (path, hash) in &update.changes {
            *self.tracked.entry(path.clone()).or_default() |= *hash;
        }
        for (path, _) in &update.changes {
            let hash = self.tracked.get(path).copied().unwrap_or_default();
            self.cover(path, hash);
            for ancestor in ancestors(path) {
                self.cover(ancestor, false);
            }
        }
        // Newly covered directories must see the next entry under them.
        self.last_dir = None;
    }

    /// Track `path` from now on: complete if this layer has not touched it yet, or only
    /// within the window (whose entries at `path` are then recorded after the fact).
    fn cover(&mut self, path: &str, hash: bool) {
        if let Some(cover) = self.covers.get_mut(path) {
            if hash && !cover.hash {
                let file_seen = self.observations.entries.get(path).is_some_and(|o| o.kind == EntryKind::File);
                cover.hash = true;
                cover.hash_complete = cover.complete && !file_seen;
            }
            return;
        }
        let complete = !Touch::ALL.iter().any(|t| self.observations.bloom.may_contain(*t, path));
        if complete {
            for windowed in &self.window {
                match windowed {
                    Windowed::Entry(at, observed) if at == path => {
                        self.observations.entries.insert(path.to_string(), observed.clone());
                        // A link that streamed before anyone tracked it still leads somewhere.
                        match (observed.kind, observed.link.as_deref()) {
                            (EntryKind::Symlink, Some(target)) => self.follow_symlink(path, target),
                            (EntryKind::Hardlink, Some(target)) => self.follow_hard_link(path, target),
                            _ => {}
                        }
                    }
                    Windowed::Whiteout(removed) if removed == path => {
                        self.observations.whiteouts.insert(path.to_string());
                    }
                    Windowed::Opaque(dir) if dir == path => {
                        self.observations.opaque.insert(path.to_string());
                    }
                    _ => {}
                }
                let dir = windowed.directory();
                let below =
                    dir == path || path.is_empty() || dir.strip_prefix(path).is_some_and(|r| r.starts_with('/'));
                if below {
                    self.observations.under.insert(path.to_string());
                }
            }
        }
        // Content that already streamed past was not hashed.
        let file_seen = self.observations.entries.get(path).is_some_and(|o| o.kind == EntryKind::File);
        let hash_complete = complete && !file_seen;
        self.covers.insert(path.to_string(), Cover { complete, hash, hash_complete });
    }

    /// Keep an entry in the window; the oldest goes into the Bloom filter.
    fn remember(&mut self, windowed: Windowed) {
        if self.window.len() == WINDOW_ENTRIES {
            self.remember_none();
        }
        self.window.push_back(windowed);
    }

    /// Move the oldest entry of the window into the Bloom filter.
    fn remember_none(&mut self) {
        let Some(oldest) = self.window.pop_front() else { return };
        let bloom = &mut self.observations.bloom;
        match &oldest {
            Windowed::Entry(path, observed) if observed.kind == EntryKind::Dir => bloom.insert(Touch::Dir, path),
            Windowed::Entry(path, _) | Windowed::Whiteout(path) => bloom.insert(Touch::NonDir, path),
            Windowed::Opaque(dir) => bloom.insert(Touch::Opaque, dir),
        }
        let dir = oldest.directory();
        if self.evicted_dir.as_deref() != Some(dir) {
            for above in std::iter::once(dir).chain(ancestors(dir)) {
                bloom.insert(Touch::Under, above);
            }
            self.evicted_dir = Some(dir.to_string());
        }
    }

    fn note_ancestors(&mut self, dir: &str) {
        if self.last_dir.as_deref() == Some(dir) {
            return;
        }
        for above in std::iter::once(dir).chain(ancestors(dir)) {
            if self.covers.contains_key(above) {
                self.observations.under.insert(above.to_string());
            }
        }
        self.last_dir = Some(dir.to_string());
    }

    /// A symlink at `path` (tracked, or above a tracked path): track where it leads.
    fn follow_symlink(&self, path: &str, target: &str) {
        let base = if target.starts_with('/') { "" } else { parent(path) };
        // `path` itself, then the paths below it: those from `path/` up to `path0`
        // (`0` sorts right after `/`).
        let (below, after) = (format!("{path}/"), format!("{path}0"));
        let under = self.tracked.range::<str, _>((Bound::Included(below.as_str()), Bound::Excluded(after.as_str())));
        let leads: Vec<(String, bool)> = self
            .tracked
            .get_key_value(path)
            .into_iter()
            .chain(under)
            .map(|(tracked, hash)| {
                let rest = &tracked[path.len()..];
                (normalise(&format!("{base}/{target}{rest}")), *hash)
            })
            .collect();
        self.plan.track(leads);
    }

    /// A hard link at a tracked `path`: its type, size, mode and content are its target's.
    fn follow_hard_link(&self, path: &str, target: &str) {
        if let Some(hash) = self.tracked.get(path) {
            self.plan.track([(normalise(target), *hash)]);
        }
    }
}

impl EntryVisitor for LayerObserver {
    fn visit(&mut self, entry: &EntryInfo, data: &mut dyn Read) -> io::Result<()> {
        self.refresh();
        self.seq += 1;
        let path = entry.path.as_str();
        if path.is_empty() {
            // `./`: the root directory's own metadata.
            self.observations.bloom.insert(Touch::Dir, path);
            if entry.kind == EntryKind::Dir {
                let observed = observed(self.seq, entry, None);
                self.observations.entries.insert(String::new(), observed);
            }
            return Ok(());
        }
        let dir = parent(path);
        self.note_ancestors(dir);
        let name = path.rsplit('/').next().unwrap_or(path);
        if name == ".wh..wh..opq" {
            if self.covers.contains_key(dir) {
                self.observations.opaque.insert(dir.to_string());
            }
            self.remember(Windowed::Opaque(dir.to_string()));
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let removed = join(dir, hidden);
            if self.covers.contains_key(&removed) {
                self.observations.whiteouts.insert(removed.clone());
            }
            self.remember(Windowed::Whiteout(removed));
            return Ok(());
        }
        let cover = self.covers.get(path).copied();
        let hash = cover.is_some_and(|c| c.hash) && entry.kind == EntryKind::File;
        let sha256 = if hash { Some(hash_content(data)?) } else { None };
        let observed = observed(self.seq, entry, sha256);
        if cover.is_some() {
            self.observations.entries.insert(path.to_string(), observed.clone());
            match (entry.kind, entry.link_name.as_deref()) {
                (EntryKind::Symlink, Some(target)) => self.follow_symlink(path, target),
                (EntryKind::Hardlink, Some(target)) => self.follow_hard_link(path, target),
                _ => {}
            }
        }
        self.remember(Windowed::Entry(path.to_string(), observed));
        Ok(())
    }
}

fn observed(seq: u64, entry: &EntryInfo, sha256: Option<Digest>) -> Observed {
    Observed { seq, kind: entry.kind, size: entry.size, mode: entry.mode, link: entry.link_name.clone(), sha256 }
}

fn hash_content(data: &mut dyn Read) -> io::Result<Digest> {
    let mut hasher = DigestHasher::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = data.read(&mut buffer)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..n]);
    }
}

/// A fixed-size Bloom filter of (touch, path) keys: "no" is certain, "maybe" is not.
pub(super) struct Bloom {
    bits: Vec<u64>,
    /// Nothing inserted yet: every answer is "no", without hashing.
    empty: bool,
}

impl std::fmt::Debug for Bloom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set: u32 = self.bits.iter().map(|w| w.count_ones()).sum();
        write!(f, "Bloom({set} of {BLOOM_BITS} bits set)")
    }
}

impl Bloom {
    pub(super) fn new() -> Bloom {
        Bloom { bits: vec![0; (BLOOM_BITS / 64) as usize], empty: true }
    }

    pub(super) fn insert(&mut self, touch: Touch, path: &str) {
        self.empty = false;
        for bit in probes(touch, path) {
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    pub(super) fn may_contain(&self, touch: Touch, path: &str) -> bool {
        !self.empty && probes(touch, path).all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// Double hashing with SipHash (fixed keys: the same in every walk).
fn probes(touch: Touch, path: &str) -> impl Iterator<Item = u64> {
    let tag = touch as u8;
    let mut first = DefaultHasher::new();
    (tag, path).hash(&mut first);
    let mut second = DefaultHasher::new();
    (path, tag, 0x9e37_79b9_u32).hash(&mut second);
    let (a, b) = (first.finish(), second.finish() | 1);
    (0..BLOOM_PROBES).map(move |i| a.wrapping_add(i.wrapping_mul(b)) % BLOOM_BITS)
}
