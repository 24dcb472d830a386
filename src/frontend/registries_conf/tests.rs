//! registries.conf as containers/image reads it: the examples of
//! containers-registries.conf(5) (tests/fixtures/mirrors/registries.conf, each
//! file citing its section), matching, rewriting, and the errors pullprobe reports.

use std::path::{Path, PathBuf};

use url::Url;

use super::*;
use crate::config::Position;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mirrors/registries.conf").join(name)
}

fn image(s: &str) -> ImageReference {
    ImageReference::parse(s).unwrap()
}

/// (URL, what the repository becomes there, used, insecure) of each source.
fn sources(hosts: &[NodeHost], repository: &str) -> Vec<(String, String, bool, bool)> {
    hosts
        .iter()
        .map(|h| (h.url.to_string(), h.settings.route().repository(repository), h.used, h.settings.skip_verify))
        .collect()
}

#[test]
fn the_manual_example_tries_each_mirror_then_the_location() {
    let example = Url::parse("https://example.com").unwrap();
    let hosts = node_hosts(&fixture("example.conf"), &example, &image("example.com/foo/image:latest")).unwrap();
    assert_eq!(hosts.walk, Walk::FirstSource);
    // "a pull of example.com/foo/image:latest will try: 1. example-mirror-0.local/mirror-for-foo/image:latest
    //  2. example-mirror-1.local/mirrors/foo/image:latest 3. internal-registry-for-example.com/bar/image:latest"
    assert_eq!(
        sources(&hosts.hosts, "foo/image"),
        [
            ("https://example-mirror-0.local/".into(), "mirror-for-foo/image".into(), true, false),
            ("https://example-mirror-1.local/".into(), "mirrors/foo/image".into(), true, true),
            ("https://internal-registry-for-example.com/".into(), "bar/image".into(), true, false),
        ]
    );
    assert!(hosts.hosts[1].http_fallback && !hosts.hosts[0].http_fallback);
    assert!(hosts.hosts[0].notes[0].contains("example.conf:13:9: `proxy = \"http://proxy.example.com:8000\"`"));

    // "pulling the image registry.com/image:latest will hence only reach out to mirror.registry.com"
    let registry_com = Url::parse("https://registry.com").unwrap();
    let hosts = node_hosts(&fixture("example.conf"), &registry_com, &image("registry.com/image:latest")).unwrap();
    assert_eq!(
        sources(&hosts.hosts, "image"),
        [
            ("https://mirror.registry.com/".into(), "image".into(), true, false),
            ("https://registry.com/".into(), "image".into(), true, false),
        ]
    );

    // No entry matches: the registry itself.
    let other = Url::parse("http://127.0.0.1:5000").unwrap();
    let hosts = node_hosts(&fixture("example.conf"), &other, &image("127.0.0.1:5000/a:1")).unwrap();
    assert_eq!(sources(&hosts.hosts, "a"), [("http://127.0.0.1:5000/".into(), "a".into(), true, false)]);
    assert!(hosts.hosts[0].notes[0].contains("no [[registry]] matches"));
}

#[test]
fn pull_from_mirror_decides_which_references_go_to_a_mirror() {
    let hub = Url::parse("https://registry-1.docker.io").unwrap();
    let file = fixture("pull-from-mirror.conf");
    let tag = image("docker.io/library/alpine:3");
    let hosts = node_hosts(&file, &hub, &tag).unwrap();
    assert_eq!(
        sources(&hosts.hosts, "library/alpine"),
        [
            ("https://mirror.gcr.io/".into(), "library/alpine".into(), true, false),
            ("https://digests.example.com/".into(), "dockerhub/library/alpine".into(), false, true),
            ("https://tags.example.com/".into(), "dockerhub/library/alpine".into(), true, false),
            ("https://registry-1.docker.io/".into(), "library/alpine".into(), true, false),
        ]
    );
    assert!(hosts.hosts[1].notes[0].contains("digest-only"), "{:?}", hosts.hosts[1].notes);
    let by_digest = tag.with_digest(crate::digest::Digest::of(b"x"));
    let used: Vec<bool> = node_hosts(&file, &hub, &by_digest).unwrap().hosts.iter().map(|h| h.used).collect();
    assert_eq!(used, [true, true, false, true]);

    // mirror-by-digest-only: every mirror of the registry is digest-only.
    let quay = Url::parse("https://quay.io").unwrap();
    let used: Vec<bool> =
        node_hosts(&file, &quay, &image("quay.io/org/app:1")).unwrap().hosts.iter().map(|h| h.used).collect();
    assert_eq!(used, [false, true]);

    // A wildcard prefix with no location: the reference as it is, after the mirror.
    let sub = Url::parse("https://a.b.example.org").unwrap();
    let hosts = node_hosts(&file, &sub, &image("a.b.example.org/team/app:1")).unwrap();
    assert_eq!(
        sources(&hosts.hosts, "team/app"),
        [
            ("https://example-org-mirror.example.com/".into(), "team/app".into(), true, false),
            ("https://a.b.example.org/".into(), "team/app".into(), true, false),
        ]
    );
}

#[test]
fn version_1_lists_are_read() {
    let registries = parse(&TomlFile::read(&fixture("version-1.conf")).unwrap()).unwrap();
    let flags: Vec<(&str, bool, bool)> =
        registries.iter().map(|r| (r.prefix.as_str(), r.insecure, r.blocked)).collect();
    assert_eq!(
        flags,
        [
            ("registry1.com", false, false),
            ("registry2.com", false, false),
            ("registry3.com", true, false),
            ("registry.untrusted.com", false, true),
            ("registry.unsafe.com", false, true),
        ]
    );
    let untrusted = Url::parse("https://registry.untrusted.com").unwrap();
    let err = node_hosts(&fixture("version-1.conf"), &untrusted, &image("registry.untrusted.com/a:1")).unwrap_err();
    assert!(err.to_string().contains("blocked"), "{err}");
}

#[test]
fn prefixes_match_as_containers_image_matches_them() {
    assert_eq!(matching_prefix("example.com/foo/image:latest", "example.com/foo"), Some(15));
    assert_eq!(matching_prefix("example.com/foobar/image:latest", "example.com/foo"), None);
    assert_eq!(matching_prefix("example.com/foo", "example.com/foo"), Some(15));
    assert_eq!(matching_prefix("example.com/foo@sha256:x", "example.com/foo"), Some(15));
    assert_eq!(matching_prefix("a.b.example.com/x:1", "*.example.com"), Some(15));
    assert_eq!(matching_prefix("example.com/x:1", "*.example.com"), None);
    assert_eq!(matching_prefix("other.com/a.example.com/x", "*.example.com"), None);
    let entries = parse(&TomlFile::from_text(
        "r.conf",
        PathBuf::new(),
        "[[registry]]\nlocation = \"example.com\"\n[[registry]]\nprefix = \"example.com/foo\"\nlocation = \"m.io/x\"\n"
            .into(),
    ))
    .unwrap();
    assert_eq!(entry_for(&entries, &image("example.com/foo/app:1")).unwrap().prefix, "example.com/foo");
    assert_eq!(entry_for(&entries, &image("example.com/bar/app:1")).unwrap().prefix, "example.com");
}

fn error_at(text: &str) -> (Option<Position>, String) {
    let err = parse(&TomlFile::from_text("registries.conf", PathBuf::new(), text.to_string())).unwrap_err();
    (err.position, err.message)
}

#[test]
fn unknown_keys_and_bad_values_are_errors_at_their_position() {
    let (at, message) = error_at("[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocaton = \"m.io\"\n");
    assert_eq!(at, Some(Position { line: 4, column: 1 }));
    assert!(message.starts_with("unknown key `locaton` in [[registry.mirror]]"), "{message}");

    let (at, message) = error_at("unqualified-search-registries = []\nmirors = 1\n");
    assert_eq!(at, Some(Position { line: 2, column: 1 }));
    assert!(message.starts_with("unknown key `mirors` in registries.conf"), "{message}");

    let (at, message) = error_at(
        "[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"sometimes\"\n",
    );
    assert_eq!(at, Some(Position { line: 5, column: 20 }));
    assert!(message.contains("expected all, digest-only or tag-only"), "{message}");

    let (at, message) = error_at(
        "[[registry]]\nlocation = \"r.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.io\"\n\
         pull-from-mirror = \"all\"\n",
    );
    assert_eq!(at, Some(Position { line: 6, column: 20 }));
    assert!(message.contains("mirror-by-digest-only"), "{message}");

    let (at, message) = error_at("[[registry]]\nlocation = \"https://r.io\"\n");
    assert_eq!(at, Some(Position { line: 2, column: 12 }));
    assert!(message.contains("expected host[:port][/path]"), "{message}");

    let (_, message) =
        error_at("[[registry]]\nlocation = \"r.io\"\n[[registry]]\nprefix = \"r.io\"\nlocation = \"s.io\"\n");
    assert!(message.contains("defined twice"), "{message}");

    let (_, message) = error_at("[[registry]]\nlocation = \"r.io\"\n[registries.search]\nregistries = [\"a.io\"]\n");
    assert!(message.contains("cannot be mixed"), "{message}");
}
