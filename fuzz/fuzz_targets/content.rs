//! The content-assertion walk: layers of files, directories, symlinks, hard links
//! and whiteouts (`.wh.NAME`, `.wh..wh..opq`) over a small set of names, so that
//! paths collide, shadow, link and delete each other, judged against path
//! assertions through the real tar walk.
//!
//! Layers are walked the first time in two orders, bottom first and in an order
//! the input picks, as parallel walks may finish in any order; where both orders
//! reach a verdict it must be the same, and every failure is `content_missing`,
//! `content_mismatch` or `too_large` with a bounded message.
//!
//! The fuzzing build tracks at most 64 paths (`MAX_TRACKED_PATHS`, 1,024 otherwise):
//! the cap's logic is the same, and a link loop reaches it in a few entries instead
//! of spending every input on expanding to 1,024 paths.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use image_builder::{Entry, LayerBuilder};
use libfuzzer_sys::fuzz_target;
use pullprobe::config::{PathExpectation, PathType};
use pullprobe::digest::Digest;
use pullprobe::reason::{ProbeError, Reason};
use pullprobe::verify::content::{ContentOutcome, ContentPlan, MAX_WALKS};
use pullprobe_fuzz::check_error;

const MAX_LAYERS: usize = 4;
const MAX_ENTRIES: usize = 24;
const MAX_ASSERTIONS: usize = 6;
const MAX_DEPTH: usize = 5;

/// Path components: few enough that entries meet, with whiteouts and the dot forms.
const NAMES: [&str; 15] =
    ["a", "b", "c", "bin", "usr", "sh", "dash", ".wh.a", ".wh.b", ".wh.bin", ".wh.usr", ".wh..wh..opq", "..", ".", ""];

/// Contents of files, so that `sha256:` assertions can hold.
const CONTENTS: [&[u8]; 4] = [b"", b"#!/bin/sh\n", b"key = value\n", &[0u8; 600]];

#[derive(Arbitrary, Debug)]
struct Input {
    layers: Vec<Vec<FuzzEntry>>,
    assertions: Vec<FuzzAssertion>,
    order: u16,
}

#[derive(Arbitrary, Debug)]
struct FuzzPath {
    /// 0: relative, 1: `/`, 2: `./`.
    prefix: u8,
    parts: Vec<u8>,
    trailing_slash: bool,
}

impl FuzzPath {
    fn text(&self) -> String {
        let parts: Vec<&str> =
            self.parts.iter().take(MAX_DEPTH).map(|p| NAMES[usize::from(*p) % NAMES.len()]).collect();
        let prefix = ["", "/", "./"][usize::from(self.prefix % 3)];
        let slash = if self.trailing_slash { "/" } else { "" };
        format!("{prefix}{}{slash}", parts.join("/"))
    }
}

#[derive(Arbitrary, Debug)]
enum FuzzKind {
    File(u8),
    Dir,
    Symlink(FuzzPath),
    HardLink(FuzzPath),
}

#[derive(Arbitrary, Debug)]
struct FuzzEntry {
    path: FuzzPath,
    kind: FuzzKind,
    mode: Option<u16>,
}

#[derive(Arbitrary, Debug)]
struct FuzzAssertion {
    path: FuzzPath,
    absent: bool,
    kind: Option<u8>,
    min_size: Option<u16>,
    mode: Option<u16>,
    sha256: Option<u8>,
}

impl FuzzAssertion {
    fn expectation(&self) -> PathExpectation {
        let path = format!("/{}", self.path.text().trim_start_matches('/'));
        PathExpectation {
            path,
            absent: self.absent,
            kind: self.kind.map(|k| [PathType::File, PathType::Dir, PathType::Symlink][usize::from(k % 3)]),
            min_size: self.min_size.map(u64::from),
            mode: self.mode.map(|m| u32::from(m) & 0o7777),
            sha256: self.sha256.map(|c| Digest::of(CONTENTS[usize::from(c) % CONTENTS.len()])),
        }
    }
}

fn layer(entries: &[FuzzEntry]) -> Vec<u8> {
    let mut builder = LayerBuilder::new();
    for e in entries.iter().take(MAX_ENTRIES) {
        let path = e.path.text();
        let mut entry = match &e.kind {
            FuzzKind::File(c) => Entry::file(&path, CONTENTS[usize::from(*c) % CONTENTS.len()]),
            FuzzKind::Dir => Entry::dir(&path),
            FuzzKind::Symlink(target) => Entry::symlink(&path, &target.text()),
            FuzzKind::HardLink(target) => Entry::hard_link(&path, &target.text()),
        };
        if let Some(mode) = e.mode {
            entry = entry.mode(u32::from(mode) & 0o7777);
        }
        builder = builder.entry(entry);
    }
    builder.write_tar(Vec::new()).expect("a tar in memory")
}

fuzz_target!(|input: Input| {
    let tars: Vec<Vec<u8>> = input.layers.iter().take(MAX_LAYERS).map(|l| layer(l)).collect();
    let assertions: Vec<PathExpectation> =
        input.assertions.iter().take(MAX_ASSERTIONS).map(FuzzAssertion::expectation).collect();
    let bottom_first: Vec<usize> = (0..tars.len()).collect();
    let mut picked = bottom_first.clone();
    if !picked.is_empty() {
        let rotate = usize::from(input.order) % picked.len();
        picked.rotate_left(rotate);
        if input.order & 0x8000 != 0 {
            picked.reverse();
        }
    }
    let bottom = judge(&tars, &assertions, &bottom_first);
    let other = judge(&tars, &assertions, &picked);
    if let (Some(bottom), Some(other)) = (&bottom, &other) {
        assert_eq!(bottom, other, "the walk order {picked:?} changed the verdict");
    }
    for failures in [bottom, other].iter().flatten() {
        for failure in failures {
            check_error("content", failure, &[Reason::ContentMissing, Reason::ContentMismatch, Reason::TooLarge]);
        }
    }
});

/// The verdict after walking every layer in `order`, then again as the plan asks;
/// `None` if still undecided after [`MAX_WALKS`] walks (a pull then fails `too_large`).
fn judge(tars: &[Vec<u8>], assertions: &[PathExpectation], order: &[usize]) -> Option<Vec<ProbeError>> {
    let digests: Vec<Digest> = tars.iter().map(|t| Digest::of(t)).collect();
    let plan = ContentPlan::new(assertions, digests);
    for index in order {
        walk(&plan, *index, &tars[*index]);
    }
    for _ in 1..MAX_WALKS {
        match plan.evaluate() {
            ContentOutcome::Decided(failures) => return Some(failures),
            ContentOutcome::WalkAgain(again) => {
                assert!(!again.is_empty(), "walk again, but no layer named");
                for index in again {
                    walk(&plan, index, &tars[index]);
                }
            }
        }
    }
    match plan.evaluate() {
        ContentOutcome::Decided(failures) => Some(failures),
        ContentOutcome::WalkAgain(_) => None,
    }
}

fn walk(plan: &Arc<ContentPlan>, index: usize, tar: &[u8]) {
    let report = plan.walk_tar(index, tar);
    assert!(report.is_ok(), "a layer written by the image builder: {:?}", report.error);
}
