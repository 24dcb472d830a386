//! Content assertions: what must (or must not) be at a path of the image's **final**
//! filesystem — every layer applied in order, the way a runtime unpacks it — checked
//! while the layers stream through [`verify_layer`](super::verify_layer), in flat memory.
//!
//! What it is not: it knows nothing about HTTP, configs or retries. `probe::pull` gives
//! each layer walk a [`LayerObserver`] (an [`EntryVisitor`](super::EntryVisitor)) made by
//! one [`ContentPlan`] per pull, and asks the plan for the verdict once every layer is in.
//!
//! # The final filesystem
//!
//! Layers are applied bottom to top; within a layer, entries in archive order. These are
//! the rules of the OCI image spec ("Applying changesets") as containerd (overlayfs
//! snapshotter or naive apply) and umoci unpack them:
//!
//! 1. Names: `./` and leading `/` are dropped; a later entry for the same path replaces the
//!    earlier one. A directory over a directory keeps its contents (only its metadata
//!    changes); any other replacement removes what was there, contents included.
//! 2. `DIR/.wh.NAME` removes `DIR/NAME` and everything under it **from lower layers**.
//! 3. `DIR/.wh..wh..opq` hides everything lower layers have under `DIR`; `DIR` stays.
//! 4. Whiteouts never remove what their own layer adds, whatever the order in the archive
//!    (the spec's rule; umoci and containerd's opaque handling keep the layer's own paths).
//!    Whiteout files themselves never appear in the filesystem.
//! 5. A missing parent directory is created (mode 0755), also for whiteout entries
//!    (containerd and overlayfs do so): an entry under a path makes that path a directory.
//! 6. A hard link is the same inode as its target at the moment it is unpacked: its type,
//!    size, mode and content are the target's (an earlier entry of the same layer, or what
//!    lower layers have at that path); deleting or replacing the target later does not
//!    change the link. A link to nothing fails the unpack: the path counts as missing.
//! 7. Symlinks are resolved when an assertion is checked, like the kernel inside a chroot
//!    of the root filesystem: absolute targets start at the image root, `..` stops at the
//!    root, at most 40 links per lookup (`ELOOP`). Every check follows symlinks, as `stat`
//!    does, except `type: symlink` and `absent: true`, which look at the path itself
//!    (`lstat`: a dangling symlink is not absent).
//!
//! Not modelled, because no image builder writes them: an entry whose *parent* path passes
//! through a symlink is applied at its literal name (containerd and umoci would write
//! through the link), and a hard link's target is taken literally (its parent components
//! are not resolved through symlinks).
//!
//! # One pass, flat memory, parallel layers
//!
//! Layers are walked in parallel, so no walk knows what lower or higher layers hold. Each
//! layer's observer records only what can matter for the **tracked paths** — the asserted
//! paths and their ancestors: entries at them, whiteouts of them, opaque markers in them,
//! and whether anything lies under them (rule 5); a file's sha256 is computed, in the same
//! pass, only for an asserted `sha256`. The verdict is computed afterwards, layer by
//! layer in order.
//!
//! Links lead elsewhere: `/bin/sh` may be `bin -> usr/bin` and `usr/bin/sh -> dash`. When
//! an observer meets a symlink at or above a tracked path, or a hard link at one, it adds
//! the path it leads to to the plan's shared set of tracked paths, and every walk tracks it
//! from its next entry on. A walk that had already streamed past entries for a newly
//! tracked path would have missed them, so each observer keeps the headers of its last
//! [`WINDOW_ENTRIES`] entries and a fixed-size Bloom filter (128 KiB) of everything older
//! that its layer touched. A path tracked late is complete if the filter says the layer
//! never touched it before the window; the window's entries at it are recorded after the
//! fact. When the verdict needs a fact that no walk has complete and the filter says the
//! layer may have it, the verdict is not guessed — that layer is walked again, tracking
//! everything needed from the start (`probe::pull` re-downloads it; the result warns).
//! Sorted layer tars keep a directory together, so `usr/bin/sh -> dash` needs no second
//! walk; a `sha256` reached through a link to an earlier entry does (its content has
//! streamed past), and so does a link whose target a parallel walk passed before the link
//! was seen.
//!
//! The number of tracked paths is capped ([`MAX_TRACKED_PATHS`]), and so are the walks
//! ([`MAX_WALKS`]); a verdict that needs more is `too_large`, never a guess. When the
//! cap is reached, the paths links led the walks to that the verdict never looked at go
//! first, so whether a verdict needs more does not depend on the order the walks ran in
//! (the walk cap still may: a walk that saw a link late needs a second pass). Memory is the
//! tracked paths, the window and the Bloom filter per layer walk, and the records of
//! tracked paths: it does not grow with the number of files in the image.
//!
//! This is also why such a pull checks every layer in full on every frontend rather than
//! using the round's decompress-once ledger: a layer checked by digest only is never
//! decompressed, so its entries would never be seen.

mod filesystem;
mod observe;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::PathExpectation;
use crate::digest::Digest;
use crate::reason::{ProbeError, Reason};

pub use observe::{LayerObserver, WINDOW_ENTRIES};

use filesystem::FinalFilesystem;
use observe::LayerObservations;

/// Paths tracked at once for one pull: the asserted paths plus where links lead.
///
/// A fuzzing build caps it at 64: the logic is the same at any cap, and a fuzzer's link
/// loops then reach it in 64 steps rather than spend each input expanding to 1,024.
pub const MAX_TRACKED_PATHS: usize = if cfg!(fuzzing) { 64 } else { 1024 };

/// Walks of one layer for one verdict: the first plus re-walks for facts a walk missed.
pub const MAX_WALKS: usize = 4;

/// One pull's path assertions, the paths its layer walks track, and what they saw.
#[derive(Debug)]
pub struct ContentPlan {
    assertions: Vec<PathExpectation>,
    /// Layer digests in manifest order, for messages.
    layers: Vec<Digest>,
    tracked: Mutex<TrackedPaths>,
    /// Bumped whenever a path is added to `tracked`, so observers notice cheaply.
    generation: AtomicU64,
    walked: Mutex<Vec<Option<LayerObservations>>>,
}

/// Normalised paths (no leading `/`, root is `""`) and whether a file there needs its sha256.
#[derive(Debug, Default)]
struct TrackedPaths {
    paths: BTreeMap<String, bool>,
    /// Every change to `paths` in order (a new path, or one that now needs its sha256), so
    /// that an observer reads only what it has not seen: a walk through a link loop adds
    /// paths one entry at a time, up to the cap.
    changes: Vec<(String, bool)>,
    /// Bumped when paths are dropped (at the cap); `changes` then starts over with the
    /// paths kept, and observers read it whole.
    epoch: u64,
}

/// How far an observer has read [`TrackedPaths::changes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    epoch: u64,
    changes: usize,
}

/// What an observer has not seen of the tracked paths.
#[derive(Debug)]
struct TrackedUpdate {
    /// The plan's generation this update is current for.
    generation: u64,
    seen: Seen,
    /// Paths were dropped: `changes` is every tracked path, to replace what the observer had.
    whole: bool,
    changes: Vec<(String, bool)>,
}

/// What the plan concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentOutcome {
    /// Every assertion decided: the failures, in assertion order (empty: all hold).
    Decided(Vec<ProbeError>),
    /// These layers (0-based) must be walked again, with a fresh observer each.
    WalkAgain(Vec<usize>),
}

impl ContentPlan {
    /// A plan for the assertions of one pull of an image with these layers.
    pub fn new(assertions: &[PathExpectation], layers: Vec<Digest>) -> Arc<ContentPlan> {
        let mut tracked = TrackedPaths::default();
        for assertion in assertions {
            tracked.add(&normalise(&assertion.path), assertion.sha256.is_some(), usize::MAX);
        }
        let walked = layers.iter().map(|_| None).collect();
        Arc::new(ContentPlan {
            assertions: assertions.to_vec(),
            layers,
            tracked: Mutex::new(tracked),
            generation: AtomicU64::new(1),
            walked: Mutex::new(walked),
        })
    }

    /// The visitor for one walk of layer `index` (0-based); hand it back with
    /// [`LayerObserver::finish`] when the walk is complete.
    pub fn observer(self: &Arc<Self>, index: usize) -> LayerObserver {
        LayerObserver::new(self.clone(), index)
    }

    /// Walk layer `index`, an uncompressed tar held in memory, into this plan (its
    /// digest and size taken from the bytes; no other check): how tests and fuzzing
    /// feed a plan its layers. The walk counts only when the report is ok.
    pub fn walk_tar(self: &Arc<Self>, index: usize, tar: &[u8]) -> super::LayerReport {
        let spec = super::LayerSpec {
            digest: Digest::of(tar),
            size: tar.len() as u64,
            compression: Some(super::Compression::None),
            diff_id: None,
            mode: super::CheckMode::Full,
            limits: super::LayerLimits::UNLIMITED,
        };
        let mut observer = self.observer(index);
        let report = super::verify_layer(tar, &spec, Some(&mut observer));
        if report.is_ok() {
            observer.finish();
        }
        report
    }

    /// Decide every assertion from what the walks saw, or name the layers to walk again.
    /// A layer never handed back counts as one to walk.
    pub fn evaluate(&self) -> ContentOutcome {
        let walked = lock(&self.walked);
        let missing: Vec<usize> = (0..self.layers.len()).filter(|i| walked[*i].is_none()).collect();
        if !missing.is_empty() {
            return ContentOutcome::WalkAgain(missing);
        }
        let layers: Vec<&LayerObservations> = walked.iter().flatten().collect();
        let mut filesystem = FinalFilesystem::new(&layers, &self.layers);
        let failures: Vec<ProbeError> =
            self.assertions.iter().filter_map(|assertion| filesystem.check(assertion)).collect();
        let needs = filesystem.into_needs();
        if needs.walks.is_empty() {
            return ContentOutcome::Decided(failures);
        }
        let mut tracked = lock(&self.tracked);
        if !tracked.add_needs(&needs.walks) {
            // Where links led the walks may have filled the set with paths the verdict
            // never looks at (a link loop expands without end while the lookup stops at
            // 40 links): keep the asserted paths and what the verdict consulted, so that
            // whether the cap is reached does not depend on the order of the walks.
            tracked.keep_only(|path| needs.consulted.contains(path));
            for assertion in &self.assertions {
                tracked.add(&normalise(&assertion.path), assertion.sha256.is_some(), usize::MAX);
            }
            if !tracked.add_needs(&needs.walks) {
                let message = format!(
                    "the path assertions need more than {MAX_TRACKED_PATHS} paths tracked (the lookups, through links, pass {} paths)",
                    needs.consulted.len()
                );
                return ContentOutcome::Decided(vec![ProbeError::new(Reason::TooLarge, message)]);
            }
        }
        let again = needs.walks.keys().copied().collect();
        self.generation.fetch_add(1, Ordering::SeqCst);
        ContentOutcome::WalkAgain(again)
    }

    /// Add the paths links lead to (during a walk); quietly ignored past the cap, since
    /// the verdict asks for whatever it still misses.
    fn track(&self, paths: impl IntoIterator<Item = (String, bool)>) {
        let mut tracked = lock(&self.tracked);
        let mut changed = false;
        for (path, hash) in paths {
            changed |= tracked.add(&path, hash, MAX_TRACKED_PATHS) == Some(true);
        }
        if changed {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The changes to the tracked paths after `seen`.
    fn tracked_since(&self, seen: Seen) -> TrackedUpdate {
        // Read before the paths: a change between the two is read now, and the next
        // call, seeing the newer generation, finds nothing more.
        let generation = self.generation.load(Ordering::SeqCst);
        let tracked = lock(&self.tracked);
        let whole = seen.epoch != tracked.epoch;
        let from = if whole { 0 } else { seen.changes.min(tracked.changes.len()) };
        TrackedUpdate {
            generation,
            seen: Seen { epoch: tracked.epoch, changes: tracked.changes.len() },
            whole,
            changes: tracked.changes[from..].to_vec(),
        }
    }

    fn hand_back(&self, index: usize, observations: LayerObservations) {
        if let Some(slot) = lock(&self.walked).get_mut(index) {
            *slot = Some(observations);
        }
    }
}

impl TrackedPaths {
    /// Track every path of `needs` (layer → path → hash): false if one would pass the cap.
    fn add_needs(&mut self, needs: &BTreeMap<usize, BTreeMap<String, bool>>) -> bool {
        needs.values().flatten().all(|(path, hash)| self.add(path, *hash, MAX_TRACKED_PATHS).is_some())
    }

    /// Track `path` (hashing files there if `hash`): `Some(changed)`, or `None` if a
    /// new path would pass `cap`.
    fn add(&mut self, path: &str, hash: bool, cap: usize) -> Option<bool> {
        let full = self.paths.len() >= cap;
        let changed = match self.paths.get_mut(path) {
            Some(h) => {
                let changed = hash && !*h;
                *h |= hash;
                Some(changed)
            }
            None if full => None,
            None => {
                self.paths.insert(path.to_string(), hash);
                Some(true)
            }
        };
        if changed == Some(true) {
            self.changes.push((path.to_string(), hash));
        }
        changed
    }

    /// Drop every path but those `keep` names; observers will read the rest whole.
    fn keep_only(&mut self, keep: impl Fn(&str) -> bool) {
        self.paths.retain(|path, _| keep(path));
        self.changes = self.paths.iter().map(|(path, hash)| (path.clone(), *hash)).collect();
        self.epoch += 1;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking walk must not take the verdict with it.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// `/usr//bin/./x/` → `usr/bin/x`; `..` is resolved lexically, stopping at the root
/// (right for tracking; the verdict resolves `..` step by step through symlinks).
fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// `a/b/c` → `a/b`; `a` → `""`; `""` → `""`.
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// `("a/b", "c")` → `a/b/c`; `("", "c")` → `c`.
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

/// The ancestors of `path`, nearest first, ending with the root `""`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = if path.is_empty() { None } else { Some(parent(path)) };
    std::iter::from_fn(move || {
        let current = next?;
        next = if current.is_empty() { None } else { Some(parent(current)) };
        Some(current)
    })
}

/// `/usr/bin` for humans.
fn display(path: &str) -> String {
    format!("/{path}")
}
