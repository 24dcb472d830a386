//! Unit tests of the final-filesystem rules: layers built in memory, walked through the
//! real tar walk with an observer, judged by the plan. Each case names its rule.

use std::sync::Arc;

use super::observe::{Bloom, Touch};
use super::*;
use crate::config::PathType;
use image_builder::{Entry, LayerBuilder};

/// In which order the layers are walked the first time: in order, or top layer first
/// (the worst case for links: nothing lower is known when a layer streams).
#[derive(Clone, Copy, PartialEq)]
enum Order {
    Bottom,
    Top,
}

struct Judged {
    failures: Vec<ProbeError>,
    /// Layer walks, the first walk of every layer included.
    walks: usize,
    digests: Vec<Digest>,
}

impl Judged {
    fn reasons(&self) -> Vec<Reason> {
        self.failures.iter().map(|f| f.reason).collect()
    }

    fn message(&self) -> &str {
        assert_eq!(self.failures.len(), 1, "want one failure: {:?}", self.failures);
        &self.failures[0].message
    }
}

fn tar(layer: &LayerBuilder) -> Vec<u8> {
    layer.write_tar(Vec::new()).unwrap()
}

fn walk(plan: &Arc<ContentPlan>, index: usize, tar: &[u8]) {
    let report = plan.walk_tar(index, tar);
    assert!(report.is_ok(), "{:?}", report.error);
}

fn judge_in(order: Order, layers: &[LayerBuilder], assertions: &[PathExpectation]) -> Judged {
    let tars: Vec<Vec<u8>> = layers.iter().map(tar).collect();
    let digests: Vec<Digest> = tars.iter().map(|t| Digest::of(t)).collect();
    let plan = ContentPlan::new(assertions, digests.clone());
    let mut first: Vec<usize> = (0..tars.len()).collect();
    if order == Order::Top {
        first.reverse();
    }
    for index in &first {
        walk(&plan, *index, &tars[*index]);
    }
    let mut walks = tars.len();
    for _ in 1..MAX_WALKS {
        match plan.evaluate() {
            ContentOutcome::Decided(failures) => return Judged { failures, walks, digests },
            ContentOutcome::WalkAgain(again) => {
                for index in again {
                    walk(&plan, index, &tars[index]);
                    walks += 1;
                }
            }
        }
    }
    match plan.evaluate() {
        ContentOutcome::Decided(failures) => Judged { failures, walks, digests },
        other => panic!("undecided after {MAX_WALKS} walks: {other:?}"),
    }
}

/// Judge in both orders; the verdicts must agree.
fn judge(layers: &[LayerBuilder], assertions: &[PathExpectation]) -> Judged {
    let bottom = judge_in(Order::Bottom, layers, assertions);
    let top = judge_in(Order::Top, layers, assertions);
    assert_eq!(bottom.failures, top.failures, "the walk order changed the verdict");
    bottom
}

fn exists(path: &str) -> PathExpectation {
    PathExpectation::exists(path)
}

fn absent(path: &str) -> PathExpectation {
    PathExpectation::absent(path)
}

fn typed(path: &str, kind: PathType) -> PathExpectation {
    PathExpectation { kind: Some(kind), ..exists(path) }
}

fn sized(path: &str, min_size: u64) -> PathExpectation {
    PathExpectation { min_size: Some(min_size), ..exists(path) }
}

fn moded(path: &str, mode: u32) -> PathExpectation {
    PathExpectation { mode: Some(mode), ..exists(path) }
}

fn hashed(path: &str, content: &[u8]) -> PathExpectation {
    PathExpectation { sha256: Some(Digest::of(content)), ..exists(path) }
}

fn passes(layers: &[LayerBuilder], assertion: PathExpectation) {
    let judged = judge(layers, std::slice::from_ref(&assertion));
    assert!(judged.failures.is_empty(), "{assertion:?} should hold: {:?}", judged.failures);
}

fn fails(layers: &[LayerBuilder], assertion: PathExpectation, reason: Reason) -> String {
    let judged = judge(layers, std::slice::from_ref(&assertion));
    assert_eq!(judged.reasons(), [reason], "{assertion:?}: {:?}", judged.failures);
    judged.message().to_string()
}

fn added_replaced_removed() -> Vec<LayerBuilder> {
    vec![
        LayerBuilder::new().dir("srv").file("srv/app.conf", "one\n").file("srv/keep", "kept\n"),
        LayerBuilder::new().entry(Entry::file("srv/app.conf", "two two\n").mode(0o600)),
        LayerBuilder::new().whiteout("srv/app.conf"),
    ]
}

#[test]
fn a_later_layer_replaces_a_file_and_a_whiteout_removes_it() {
    let layers = added_replaced_removed();
    let two = &layers[..2];
    passes(two, sized("/srv/app.conf", 8));
    passes(two, moded("/srv/app.conf", 0o600));
    passes(two, hashed("/srv/app.conf", b"two two\n"));
    let message = fails(two, hashed("/srv/app.conf", b"one\n"), Reason::ContentMismatch);
    assert!(message.contains("layer 2 sha256:"), "{message}");
    fails(two, sized("/srv/app.conf", 9), Reason::ContentMismatch);
    fails(two, moded("/srv/app.conf", 0o644), Reason::ContentMismatch);

    let judged = judge(&layers, &[exists("/srv/app.conf")]);
    assert_eq!(judged.reasons(), [Reason::ContentMissing]);
    let message = judged.message();
    assert!(message.starts_with("/srv/app.conf: not in the image: whited out"), "{message}");
    assert!(message.contains(&format!("layer 3 {}", judged.digests[2])), "{message}");
    passes(&layers, absent("/srv/app.conf"));
    passes(&layers, hashed("/srv/keep", b"kept\n"));
    passes(&layers, typed("/srv", PathType::Dir));
}

#[test]
fn an_opaque_directory_hides_lower_layers_but_not_its_own() {
    let layers = vec![
        LayerBuilder::new()
            .dir("opt/cache")
            .file("opt/cache/old", "o")
            .file("opt/cache/sub/deep", "d")
            .file("opt/x", "x"),
        LayerBuilder::new().opaque_whiteout("opt/cache").file("opt/cache/new", "n"),
    ];
    let message = fails(&layers, exists("/opt/cache/old"), Reason::ContentMissing);
    assert!(message.contains("makes /opt/cache opaque"), "{message}");
    passes(&layers, absent("/opt/cache/sub/deep"));
    passes(&layers, absent("/opt/cache/sub"));
    passes(&layers, typed("/opt/cache", PathType::Dir));
    passes(&layers, typed("/opt/cache/new", PathType::File));
    passes(&layers, exists("/opt/x"));
}

#[test]
fn whiteouts_do_not_remove_their_own_layer_s_entries() {
    let layers = vec![
        LayerBuilder::new().file("etc/motd", "old"),
        LayerBuilder::new().file("etc/motd", "new").whiteout("etc/motd"),
    ];
    passes(&layers, hashed("/etc/motd", b"new"));
}

#[test]
fn a_hard_link_keeps_the_content_of_a_target_deleted_later() {
    let layers = vec![
        LayerBuilder::new()
            .dir("data")
            .entry(Entry::file("data/orig", "linked content\n").mode(0o640))
            .hard_link("data/link", "data/orig"),
        LayerBuilder::new().whiteout("data/orig"),
    ];
    passes(&layers, absent("/data/orig"));
    passes(&layers, typed("/data/link", PathType::File));
    passes(&layers, moded("/data/link", 0o640));
    passes(&layers, hashed("/data/link", b"linked content\n"));
    let message = fails(&layers, sized("/data/link", 100), Reason::ContentMismatch);
    assert!(message.contains("a hard link to /data/orig in layer 1"), "{message}");
    // The target streamed before the link named it: one more walk of layer 1.
    let judged = judge_in(Order::Bottom, &layers, &[hashed("/data/link", b"linked content\n")]);
    assert_eq!((judged.failures.len(), judged.walks), (0, 3));
}

#[test]
fn a_hard_link_keeps_the_old_content_when_its_target_is_replaced() {
    let layers = vec![
        LayerBuilder::new().file("bin/tool", "v1").hard_link("bin/tool-alias", "bin/tool"),
        LayerBuilder::new().file("bin/tool", "version 2"),
    ];
    passes(&layers, hashed("/bin/tool-alias", b"v1"));
    passes(&layers, hashed("/bin/tool", b"version 2"));
}

#[test]
fn symlink_chains_resolve_inside_the_image_root() {
    let layers = vec![
        LayerBuilder::new()
            .dir("srv/releases/v2")
            .file("srv/releases/v2/app.conf", "listen = 8080\n")
            .symlink("srv/current", "releases/v2"),
        LayerBuilder::new().symlink("srv/live", "/srv/current").symlink("srv/escape", "../../../../srv/live"),
    ];
    passes(&layers, hashed("/srv/live/app.conf", b"listen = 8080\n"));
    passes(&layers, typed("/srv/escape/app.conf", PathType::File));
    passes(&layers, typed("/srv/live", PathType::Dir));
    passes(&layers, typed("/srv/live", PathType::Symlink));
    let message = fails(&layers, typed("/srv/live", PathType::File), Reason::ContentMismatch);
    assert!(message.contains("resolved to /srv/releases/v2"), "{message}");
    fails(&layers, typed("/srv/live/app.conf", PathType::Symlink), Reason::ContentMismatch);
}

#[test]
fn merged_usr_is_decided_in_one_walk() {
    let layers = vec![
        LayerBuilder::new()
            .symlink("bin", "usr/bin")
            .dir("usr/bin")
            .file("usr/bin/dash", "#!dash\n")
            .symlink("usr/bin/sh", "dash"),
    ];
    let assertion = PathExpectation { min_size: Some(7), mode: Some(0o644), ..typed("/bin/sh", PathType::File) };
    let judged = judge_in(Order::Bottom, &layers, &[assertion]);
    assert_eq!((judged.failures.len(), judged.walks), (0, 1), "{:?}", judged.failures);
    // `dash` streamed before `sh` named it: its content needs one more walk.
    let judged = judge_in(Order::Bottom, &layers, &[hashed("/bin/sh", b"#!dash\n")]);
    assert_eq!((judged.failures.len(), judged.walks), (0, 2), "{:?}", judged.failures);
}

#[test]
fn links_across_layers_walked_out_of_order_get_another_walk() {
    let layers = vec![
        LayerBuilder::new().dir("usr/lib").file("usr/lib/libc.so", "libc"),
        LayerBuilder::new().symlink("lib", "usr/lib"),
    ];
    // Layer 1 streamed before layer 2 said where /lib leads.
    let judged = judge_in(Order::Bottom, &layers, &[hashed("/lib/libc.so", b"libc")]);
    assert_eq!((judged.failures.len(), judged.walks), (0, 3), "{:?}", judged.failures);
}

#[test]
fn dangling_symlinks_and_loops() {
    let layers =
        vec![LayerBuilder::new().symlink("etc/gone", "/nowhere").symlink("loop/a", "b").symlink("loop/b", "a")];
    passes(&layers, typed("/etc/gone", PathType::Symlink));
    let message = fails(&layers, absent("/etc/gone"), Reason::ContentMismatch);
    assert!(message.contains("a symlink to \"/nowhere\""), "{message}");
    let message = fails(&layers, exists("/etc/gone"), Reason::ContentMissing);
    assert!(message.contains("/nowhere no layer has it"), "{message}");
    let message = fails(&layers, exists("/loop/a"), Reason::ContentMissing);
    assert!(message.contains("more than 40 symlinks"), "{message}");
}

#[test]
fn entries_below_a_removed_directory_bring_it_back() {
    let layers = vec![
        LayerBuilder::new().dir("var/lib/old").file("var/lib/old/state", "s"),
        LayerBuilder::new().whiteout("var/lib"),
        LayerBuilder::new().file("var/lib/new/state", "n"),
    ];
    passes(&layers, typed("/var/lib", PathType::Dir));
    passes(&layers, moded("/var/lib", 0o755));
    passes(&layers, absent("/var/lib/old"));
    passes(&layers, exists("/var/lib/new/state"));
}

#[test]
fn a_non_directory_over_a_directory_removes_what_was_under_it() {
    let layers =
        vec![LayerBuilder::new().file("etc/conf.d/app", "a"), LayerBuilder::new().file("etc/conf.d", "now a file")];
    let message = fails(&layers, exists("/etc/conf.d/app"), Reason::ContentMissing);
    assert!(message.contains("/etc/conf.d is a regular file"), "{message}");
    passes(&layers, typed("/etc/conf.d", PathType::File));
}

#[test]
fn a_directory_over_a_directory_keeps_its_contents_and_takes_the_new_mode() {
    let layers = vec![
        LayerBuilder::new().entry(Entry::dir("srv").mode(0o755)).file("srv/a", "a"),
        LayerBuilder::new().entry(Entry::dir("srv").mode(0o700)),
    ];
    passes(&layers, exists("/srv/a"));
    passes(&layers, moded("/srv", 0o700));
}

#[test]
fn every_failure_is_reported_in_assertion_order() {
    let layers = added_replaced_removed();
    let judged = judge(&layers, &[exists("/srv/app.conf"), exists("/srv/keep"), typed("/srv/keep", PathType::Dir)]);
    assert_eq!(judged.reasons(), [Reason::ContentMissing, Reason::ContentMismatch]);
}

#[test]
fn paths_and_ancestors() {
    assert_eq!(normalise("/usr//bin/./x/"), "usr/bin/x");
    assert_eq!(normalise("/../a/../../b"), "b");
    assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a/b", "a", ""]);
    assert_eq!(ancestors("a").collect::<Vec<_>>(), [""]);
    assert_eq!(ancestors("").count(), 0);
}

#[test]
fn the_bloom_filter_never_forgets() {
    let mut bloom = Bloom::new();
    for i in 0..50_000 {
        bloom.insert(Touch::NonDir, &format!("usr/share/doc/package-{i}/copyright"));
    }
    for i in 0..50_000 {
        assert!(bloom.may_contain(Touch::NonDir, &format!("usr/share/doc/package-{i}/copyright")));
    }
    let false_positives =
        (0..10_000).filter(|i| bloom.may_contain(Touch::NonDir, &format!("usr/lib/other-{i}"))).count();
    assert!(false_positives < 50, "{false_positives} false positives in 10000");
    assert!(!bloom.may_contain(Touch::Dir, "usr/share/doc/package-1/copyright"));
}

#[test]
fn a_backward_link_beyond_the_window_gets_another_walk() {
    let mut layer = LayerBuilder::new().file("srv/target", "far away");
    for i in 0..super::observe::WINDOW_ENTRIES + 10 {
        layer = layer.file(&format!("srv/filler/{i:05}"), "");
    }
    let layers = vec![layer.symlink("srv/link", "target")];
    let judged = judge_in(Order::Bottom, &layers, &[sized("/srv/link", 8)]);
    assert_eq!((judged.failures.len(), judged.walks), (0, 2), "{:?}", judged.failures);
    let judged = judge_in(Order::Bottom, &layers, &[sized("/srv/link", 9)]);
    assert_eq!(judged.reasons(), [Reason::ContentMismatch]);
}

#[test]
fn too_many_paths_behind_links_is_too_large_not_a_guess() {
    let count = MAX_TRACKED_PATHS + 5;
    let mut lower = LayerBuilder::new();
    for i in 0..count {
        lower = lower.file(&format!("b/f{i}"), "x");
    }
    let layers = vec![lower, LayerBuilder::new().symlink("a", "b")];
    let assertions: Vec<PathExpectation> = (0..count).map(|i| exists(&format!("/a/f{i}"))).collect();
    let judged = judge_in(Order::Bottom, &layers, &assertions);
    assert_eq!(judged.reasons(), [Reason::TooLarge]);
    let cap = format!("more than {MAX_TRACKED_PATHS} paths");
    assert!(judged.message().contains(&cap), "{}", judged.message());
}

#[test]
fn observers_read_only_the_tracked_paths_they_have_not_seen() {
    let plan = ContentPlan::new(&[exists("/usr/bin/sh")], vec![Digest::of(b"")]);
    let first = plan.tracked_since(Seen::default());
    assert_eq!(first.changes, vec![("usr/bin/sh".to_string(), false)]);
    assert!(!first.whole);

    plan.track([("usr/bin/dash".to_string(), false), ("usr/bin/sh".to_string(), false)]);
    plan.track([("usr/bin/sh".to_string(), true)]);
    let next = plan.tracked_since(first.seen);
    assert_eq!(next.changes, vec![("usr/bin/dash".into(), false), ("usr/bin/sh".into(), true)], "a new path, a hash");
    assert!(next.generation > first.generation);
    assert!(plan.tracked_since(next.seen).changes.is_empty(), "nothing new");

    // Dropping paths at the cap makes every observer read the set whole.
    lock(&plan.tracked).keep_only(|path| path == "usr/bin/sh");
    let after = plan.tracked_since(next.seen);
    assert!(after.whole);
    assert_eq!(after.changes, vec![("usr/bin/sh".to_string(), true)]);
}

#[test]
fn a_link_met_through_another_link_sees_every_path_it_leads_to() {
    // `b -> a` names `a` and `a/y` in one update; `a -> w`, still in the window, must
    // then lead both on (to `w` and `w/y`) in this walk, not in a second one.
    let layers = vec![LayerBuilder::new().dir("w").file("w/y", "y").symlink("a", "w").symlink("b", "a")];
    let judged = judge_in(Order::Bottom, &layers, &[typed("/b", PathType::Dir), hashed("/b/y", b"y")]);
    assert_eq!(judged.failures, vec![]);
    let judged = judge_in(Order::Bottom, &layers, &[exists("/b"), typed("/b/y", PathType::File)]);
    assert_eq!((judged.failures.len(), judged.walks), (0, 1), "{:?}", judged.failures);
}
