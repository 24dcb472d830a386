//! The final filesystem, computed from the layers' observations for exactly the paths an
//! assertion walks through, layer by layer in order (the rules are in the module above).
//!
//! A fact that no walk recorded completely is never guessed: it is noted as a need (layer,
//! path) and the plan has that layer walked again; a verdict counts only without needs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::observe::{LayerObservations, Observed, Touch};
use super::{ancestors, display, join, parent};
use crate::config::{PathExpectation, PathType};
use crate::digest::Digest;
use crate::reason::{ProbeError, Reason};
use crate::verify::EntryKind;

/// Symlinks followed in one lookup before giving up, as Linux does (`ELOOP`).
const MAX_SYMLINKS: usize = 40;
/// Hard links to hard links (each to an earlier entry) followed before giving up.
const MAX_HARD_LINK_DEPTH: usize = 16;

/// What is needed of a path's final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Need {
    /// Exact type and mode (not only "a directory, walk on").
    metadata: bool,
    /// A file's sha256.
    hash: bool,
}

/// Walking through a directory on the way to an asserted path.
const WALK: Need = Need { metadata: false, hash: false };

#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeKind {
    Absent,
    Dir {
        mode: u32,
    },
    File {
        size: u64,
        mode: u32,
        sha256: Option<Digest>,
    },
    Symlink {
        target: String,
    },
    /// Devices, FIFOs, sockets.
    Other {
        mode: u32,
    },
}

/// Why a path is what it is: the layer that last touched it (0-based) and how.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Never,
    Entry {
        layer: usize,
    },
    /// Created as the parent of the layer's entries below it.
    Implied {
        layer: usize,
    },
    HardLink {
        layer: usize,
        target: String,
    },
    WhitedOut {
        layer: usize,
        path: String,
    },
    Opaque {
        layer: usize,
        dir: String,
    },
    Replaced {
        layer: usize,
        ancestor: String,
    },
    BrokenHardLink {
        layer: usize,
        target: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: NodeKind,
    origin: Origin,
}

impl Node {
    fn absent(origin: Origin) -> Node {
        Node { kind: NodeKind::Absent, origin }
    }

    fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }

    fn is_absent(&self) -> bool {
        self.kind == NodeKind::Absent
    }
}

/// Where a lookup ended.
enum Lookup {
    Found {
        path: String,
        node: Node,
    },
    /// `path` is the component that was not there (or not a directory, or a link loop).
    Missing {
        path: String,
        node: Node,
        problem: Option<String>,
    },
}

/// The final filesystem of one image, as far as the observations tell.
pub(super) struct FinalFilesystem<'a> {
    layers: &'a [&'a LayerObservations],
    digests: &'a [Digest],
    /// Facts no walk recorded completely: layer → path → a file there must be hashed.
    needs: BTreeMap<usize, BTreeMap<String, bool>>,
    /// Every path whose facts the verdict looked at, in any layer.
    consulted: BTreeSet<String>,
}

/// What a verdict that is not complete yet asks for.
pub(super) struct Needs {
    /// Layer → paths to track from the start of a new walk (and whether to hash files there).
    pub(super) walks: BTreeMap<usize, BTreeMap<String, bool>>,
    /// Every path the verdict looked at: what tracking must keep.
    pub(super) consulted: BTreeSet<String>,
}

impl<'a> FinalFilesystem<'a> {
    pub(super) fn new(layers: &'a [&'a LayerObservations], digests: &'a [Digest]) -> Self {
        FinalFilesystem { layers, digests, needs: BTreeMap::new(), consulted: BTreeSet::new() }
    }

    /// What the verdict still needs (no walks: it is complete).
    pub(super) fn into_needs(self) -> Needs {
        Needs { walks: self.needs, consulted: self.consulted }
    }

    /// Check one assertion: `None` if it holds (or cannot be decided yet: see needs).
    pub(super) fn check(&mut self, assertion: &PathExpectation) -> Option<ProbeError> {
        let shown = &assertion.path;
        if assertion.absent {
            let need = Need { metadata: false, hash: false };
            return match self.lookup(shown, false, need) {
                Lookup::Missing { .. } => None,
                Lookup::Found { path, node } => Some(ProbeError::new(
                    Reason::ContentMismatch,
                    format!("{}: must be absent, found {}", self.name(shown, &path), self.describe(&node)),
                )),
            };
        }
        let need =
            Need { metadata: assertion.kind.is_some() || assertion.mode.is_some(), hash: assertion.sha256.is_some() };
        let follow = assertion.kind != Some(PathType::Symlink);
        let (path, node) = match self.lookup(shown, follow, need) {
            Lookup::Found { path, node } => (path, node),
            Lookup::Missing { path, node, problem } => {
                let wanted = normalised(shown);
                let why = match problem {
                    Some(problem) => format!("{} {problem}", display(&path)),
                    None if path == wanted => self.explain_absence(&node),
                    None => format!("{} {}", display(&path), self.explain_absence(&node)),
                };
                return Some(ProbeError::new(Reason::ContentMissing, format!("{shown}: not in the image: {why}")));
            }
        };
        let name = self.name(shown, &path);
        let found = self.describe(&node);
        let mismatch = |want: String| {
            Some(ProbeError::new(Reason::ContentMismatch, format!("{name}: want {want}, found {found}")))
        };
        if let Some(kind) = assertion.kind {
            let matches = matches!(
                (kind, &node.kind),
                (PathType::File, NodeKind::File { .. })
                    | (PathType::Dir, NodeKind::Dir { .. })
                    | (PathType::Symlink, NodeKind::Symlink { .. })
            );
            if !matches {
                return mismatch(format!("type {kind}"));
            }
        }
        if let Some(min_size) = assertion.min_size {
            match node.kind {
                NodeKind::File { size, .. } if size >= min_size => {}
                _ => return mismatch(format!("a regular file of at least {min_size} bytes")),
            }
        }
        if let Some(want) = assertion.mode {
            let mode = match node.kind {
                NodeKind::Dir { mode } | NodeKind::File { mode, .. } | NodeKind::Other { mode } => Some(mode & 0o7777),
                _ => None,
            };
            if mode != Some(want) {
                return mismatch(format!("mode {want:04o}"));
            }
        }
        if let Some(want) = assertion.sha256 {
            match &node.kind {
                NodeKind::File { sha256: Some(got), .. } if *got == want => {}
                NodeKind::File { sha256: Some(got), .. } => {
                    return mismatch(format!("{want}, content hashes to {got}"));
                }
                // Not hashed: the walk of that layer is being repeated (a need was noted).
                NodeKind::File { sha256: None, .. } => {}
                _ => return mismatch(format!("a regular file with {want}")),
            }
        }
        None
    }

    /// Resolve `path` from the root, following symlinks in every component and, if
    /// `follow_last`, in the last one too.
    fn lookup(&mut self, path: &str, follow_last: bool, need: Need) -> Lookup {
        let mut pending: VecDeque<String> = components(path).collect();
        let mut current = String::new();
        let mut symlinks = 0;
        while let Some(component) = pending.pop_front() {
            if component == ".." {
                current = parent(&current).to_string();
                continue;
            }
            let next = join(&current, &component);
            let last = pending.is_empty();
            let node = self.state(&next, if last { need } else { WALK }, self.layers.len(), 0);
            match &node.kind {
                NodeKind::Absent => return Lookup::Missing { path: next, node, problem: None },
                NodeKind::Symlink { target } if !last || follow_last => {
                    symlinks += 1;
                    if symlinks > MAX_SYMLINKS {
                        let problem = format!("is reached through more than {MAX_SYMLINKS} symlinks (a loop)");
                        return Lookup::Missing { path: next, node, problem: Some(problem) };
                    }
                    if target.is_empty() {
                        let problem = "is a symlink with an empty target".to_string();
                        return Lookup::Missing { path: next, node, problem: Some(problem) };
                    }
                    if target.starts_with('/') {
                        current.clear();
                    }
                    for part in components(target).collect::<Vec<_>>().into_iter().rev() {
                        pending.push_front(part);
                    }
                }
                NodeKind::Dir { .. } => current = next,
                _ if last => return Lookup::Found { path: next, node },
                _ => {
                    let problem = format!("is {}, not a directory", self.describe(&node));
                    return Lookup::Missing { path: next, node, problem: Some(problem) };
                }
            }
            if pending.is_empty() && matches!(node.kind, NodeKind::Dir { .. }) {
                return Lookup::Found { path: current, node };
            }
        }
        // The path ended at the root, or with `..`: a directory.
        let node = self.state(&current, need, self.layers.len(), 0);
        Lookup::Found { path: current, node }
    }

    /// The state of `path` (its literal name, no symlinks followed) after the first
    /// `layers` layers.
    fn state(&mut self, path: &str, need: Need, layers: usize, depth: usize) -> Node {
        let root = Node { kind: NodeKind::Dir { mode: 0o755 }, origin: Origin::Never };
        let mut node = if path.is_empty() { root } else { Node::absent(Origin::Never) };
        for layer in 0..layers {
            node = self.apply(layer, path, node, need, u64::MAX, depth);
        }
        node
    }

    /// Apply layer `layer` (its entries before position `before`) to `node` at `path`.
    fn apply(&mut self, layer: usize, path: &str, mut node: Node, need: Need, before: u64, depth: usize) -> Node {
        let observations = self.layers[layer];
        // 1. What lower layers left is removed by a whiteout, an opaque marker or a
        //    non-directory at an ancestor.
        if !node.is_absent() {
            for ancestor in ancestors(path) {
                if !self.known(layer, ancestor, &[Touch::NonDir, Touch::Opaque], false) {
                    continue;
                }
                let origin = if observations.whiteouts.contains(ancestor) {
                    Origin::WhitedOut { layer, path: ancestor.to_string() }
                } else if observations.opaque.contains(ancestor) {
                    Origin::Opaque { layer, dir: ancestor.to_string() }
                } else if observations.entries.get(ancestor).is_some_and(|o| o.kind != EntryKind::Dir && o.seq < before)
                {
                    Origin::Replaced { layer, ancestor: ancestor.to_string() }
                } else {
                    continue;
                };
                node = Node::absent(origin);
                break;
            }
        }
        // 2. The layer's own entry at the path wins over its own whiteouts.
        let touches: &[Touch] =
            if !need.metadata && node.is_dir() { &[Touch::NonDir] } else { &[Touch::NonDir, Touch::Dir] };
        if self.known(layer, path, touches, need.hash) {
            match observations.entries.get(path).filter(|o| o.seq < before) {
                // A directory over a directory: still a directory, which is all a walk needs.
                Some(o) if o.kind == EntryKind::Dir && node.is_dir() && !need.metadata => {}
                Some(o) => return self.entry_node(layer, path, o, need, depth),
                None if observations.whiteouts.contains(path) => {
                    node = Node::absent(Origin::WhitedOut { layer, path: path.to_string() });
                }
                None => {}
            }
        }
        // 3. A path with entries below it is a directory (created if it was not there).
        if node.is_absent() && self.known(layer, path, &[Touch::Under], false) && observations.under.contains(path) {
            node = Node { kind: NodeKind::Dir { mode: 0o755 }, origin: Origin::Implied { layer } };
        }
        node
    }

    fn entry_node(&mut self, layer: usize, path: &str, entry: &Observed, need: Need, depth: usize) -> Node {
        let origin = Origin::Entry { layer };
        let kind = match entry.kind {
            EntryKind::Dir => NodeKind::Dir { mode: entry.mode },
            // A sha256 is part of the answer only when asked for: whether a walk happened
            // to hash a file depends on the order the layers were walked in.
            EntryKind::File => {
                NodeKind::File { size: entry.size, mode: entry.mode, sha256: entry.sha256.filter(|_| need.hash) }
            }
            EntryKind::Symlink => NodeKind::Symlink { target: entry.link.clone().unwrap_or_default() },
            EntryKind::Other => NodeKind::Other { mode: entry.mode },
            EntryKind::Hardlink => {
                let target = entry.link.clone().unwrap_or_default();
                let broken = Node::absent(Origin::BrokenHardLink { layer, target: target.clone() });
                if depth >= MAX_HARD_LINK_DEPTH || target == path || target.is_empty() {
                    return broken;
                }
                // The target as it is when the link is unpacked: lower layers, then this
                // layer's entries before the link.
                let below = self.state(&target, need, layer, depth + 1);
                let linked = self.apply(layer, &target, below, need, entry.seq, depth + 1);
                return match linked.kind {
                    NodeKind::Absent | NodeKind::Dir { .. } => broken,
                    kind => Node { kind, origin: Origin::HardLink { layer, target } },
                };
            }
        };
        Node { kind, origin }
    }

    /// Whether layer `layer`'s observations of these touches at `path` are complete. If
    /// not, and the layer may have such a touch, a need is noted.
    fn known(&mut self, layer: usize, path: &str, touches: &[Touch], hash: bool) -> bool {
        let observations = self.layers[layer];
        if !self.consulted.contains(path) {
            self.consulted.insert(path.to_string());
        }
        if let Some(hashed) = observations.covered.get(path) {
            let file = observations.entries.get(path).is_some_and(|o| o.kind == EntryKind::File);
            if *hashed || !hash || !file {
                return true;
            }
        }
        if !touches.iter().any(|touch| observations.bloom.may_contain(*touch, path)) {
            return true;
        }
        let hashed = self.needs.entry(layer).or_default().entry(path.to_string()).or_default();
        *hashed |= hash;
        false
    }

    fn layer(&self, index: usize) -> String {
        match self.digests.get(index) {
            Some(digest) => format!("layer {} {digest}", index + 1),
            None => format!("layer {}", index + 1),
        }
    }

    /// `/bin/sh` or, when symlinks led elsewhere, `/bin/sh (resolved to /usr/bin/dash)`.
    fn name(&self, shown: &str, resolved: &str) -> String {
        if normalised(shown) == resolved {
            shown.to_string()
        } else {
            format!("{shown} (resolved to {})", display(resolved))
        }
    }

    /// What is at a path, and which layer made it so.
    fn describe(&self, node: &Node) -> String {
        let what = match &node.kind {
            NodeKind::Absent => "nothing".to_string(),
            NodeKind::Dir { mode } => format!("a directory, mode {:04o}", mode & 0o7777),
            NodeKind::File { size, mode, sha256 } => {
                let hash = sha256.map(|d| format!(", {d}")).unwrap_or_default();
                format!("a regular file of {size} bytes, mode {:04o}{hash}", mode & 0o7777)
            }
            NodeKind::Symlink { target } => format!("a symlink to {target:?}"),
            NodeKind::Other { mode } => format!("a device, FIFO or socket, mode {:04o}", mode & 0o7777),
        };
        let from = match &node.origin {
            Origin::Entry { layer } => format!("from {}", self.layer(*layer)),
            Origin::Implied { layer } => format!("implied by entries below it in {}", self.layer(*layer)),
            Origin::HardLink { layer, target } => {
                format!("a hard link to {} in {}", display(target), self.layer(*layer))
            }
            other => self.explain_absence(&Node::absent(other.clone())),
        };
        format!("{what} ({from})")
    }

    /// Why nothing is at a path.
    fn explain_absence(&self, node: &Node) -> String {
        match &node.origin {
            Origin::WhitedOut { layer, path } => format!("whited out ({}) by {}", display(path), self.layer(*layer)),
            Origin::Opaque { layer, dir } => {
                format!("hidden by {}, which makes {} opaque", self.layer(*layer), display(dir))
            }
            Origin::Replaced { layer, ancestor } => {
                format!("removed by {}, which puts a non-directory at {}", self.layer(*layer), display(ancestor))
            }
            Origin::BrokenHardLink { layer, target } => format!(
                "{} hard-links it to {}, where there is no file (runtimes fail to unpack this)",
                self.layer(*layer),
                display(target)
            ),
            Origin::Never | Origin::Entry { .. } | Origin::Implied { .. } | Origin::HardLink { .. } => {
                "no layer has it".to_string()
            }
        }
    }
}

/// The names of a path, `.` and empty ones dropped (`..` kept for the walk).
fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_string)
}

/// A path as the filesystem names it, for comparing with where a lookup ended.
fn normalised(path: &str) -> String {
    super::normalise(path)
}
