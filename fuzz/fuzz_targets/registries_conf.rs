//! CRI-O's and podman's registries.conf for one of a few images (the first input
//! byte picks one). A refused file says where in one bounded line. An accepted one
//! has distinct prefixes, a location for every entry but a wildcard; the entry
//! that applies is the one with the longest prefix `matching_prefix` finds, and
//! a prefix matches only where the reference continues with `/`, `:` or `@`.
//! The node's sources are the entry's mirrors in order and then its location —
//! the registry's own URL when that is the image's registry, and alone when no
//! entry matches — each an http(s) base URL with a host; plain HTTP is only a
//! fallback of `insecure` hosts. No error or note quotes a URL's password; the
//! frontends the sources become have distinct labels and bounded notes.

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use pullprobe::frontend::node::{NODE_ORDER, NodeHosts, as_frontends};
use pullprobe::frontend::registries_conf::{RegistryEntry, entry_for, hosts_for, matching_prefix, parse};
use pullprobe::frontend::toml_file::TomlFile;
use pullprobe::registry::mirrors::Walk;
use pullprobe_fuzz::{check_config_error, check_message, image_and_text, url_passwords};

/// (image, the registry's URL) pairs the first byte picks from.
const IMAGES: &[(&str, &str)] = &[
    ("docker.io/library/alpine:3", "https://registry-1.docker.io"),
    ("example.com/foo/image:latest", "https://example.com"),
    (
        "registry.com/image@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "https://registry.com",
    ),
    ("a.b.example.org/team/app:1", "https://a.b.example.org"),
    ("127.0.0.1:5000/a:1", "http://127.0.0.1:5000"),
    ("quay.io/org/app:1", "https://quay.io"),
];

/// Passwords shorter than this may occur in a message by chance.
const MIN_SECRET_LEN: usize = 6;

fuzz_target!(|data: &[u8]| {
    let Some((image, registry, input)) = image_and_text(data, IMAGES) else { return };
    let secrets = url_passwords(input, MIN_SECRET_LEN);
    let no_secret = |what: &str, message: &str| {
        for secret in &secrets {
            assert!(!message.contains(secret.as_str()), "{what} quotes {secret:?}: {message}");
        }
    };
    // Prefix matching of any two lines of text.
    let mut lines = input.lines();
    if let (Some(reference), Some(prefix)) = (lines.next(), lines.next()) {
        check_match(reference, prefix);
    }
    let file = TomlFile::from_text("registries.conf", PathBuf::new(), input.into());
    let registries = match parse(&file) {
        Ok(registries) => registries,
        Err(e) => {
            check_config_error(&e, "registries.conf", input);
            no_secret("the error", &e.message);
            return;
        }
    };
    for (index, entry) in registries.iter().enumerate() {
        assert!(!entry.prefix.is_empty(), "an empty prefix at {}", entry.at);
        assert!(registries[..index].iter().all(|e| e.prefix != entry.prefix), "{} twice", entry.prefix);
        if let Some(domain) = entry.prefix.strip_prefix("*.") {
            assert!(!domain.is_empty() && !domain.contains(['/', '*']), "{}", entry.prefix);
        } else {
            assert!(!entry.location.is_empty(), "{}: no location", entry.prefix);
        }
        entry.notes.iter().for_each(|n| no_secret("a note", n));
        entry.mirrors.iter().flat_map(|m| &m.notes).for_each(|n| no_secret("a note", n));
    }
    let reference = image.to_string();
    for entry in &registries {
        check_match(&reference, &entry.prefix);
    }
    let applies = entry_for(&registries, &image);
    assert_eq!(applies.map(|e| &e.prefix), longest_match(&registries, &reference).map(|e| &e.prefix));
    let hosts = match hosts_for(&registries, &registry, &image) {
        Ok(hosts) => hosts,
        Err(e) => {
            check_config_error(&e, "registries.conf", input);
            no_secret("the error", &e.message);
            let entry = applies.expect("an error comes from the entry that applies");
            assert!(e.file == entry.at && e.position.is_none(), "{e}: the entry's place");
            return;
        }
    };
    let Some(entry) = applies else {
        assert_eq!(hosts.len(), 1, "no entry: the registry alone");
        assert_eq!(hosts[0].url, registry);
        return;
    };
    assert!(!entry.blocked, "a blocked image has no sources");
    assert_eq!(hosts.len(), entry.mirrors.len() + 1, "the mirrors, then the location");
    let location = hosts.last().expect("the location");
    let own = entry.location.is_empty()
        || entry.location.split('/').next().is_some_and(|h| h.eq_ignore_ascii_case(&image.registry));
    if own {
        assert_eq!(location.url, registry, "the image's own registry is its own URL");
    }
    for host in &hosts {
        let url = &host.url;
        assert!(matches!(url.scheme(), "http" | "https"), "{url}");
        assert!(url.host_str().is_some_and(|h| !h.is_empty()), "{url}");
        assert_eq!(url.path(), "/", "{url}: a base URL");
        assert!(!host.http_fallback || (url.scheme() == "https" && host.settings.skip_verify), "{url}");
        assert!(host.pulls && host.resolves, "{url}");
        for note in &host.notes {
            check_message("note", note);
            no_secret("a note", note);
        }
    }
    let node = NodeHosts { hosts, walk: Walk::FirstSource };
    let frontends = as_frontends(&node, &image);
    let mut labels: Vec<&str> = frontends.iter().map(|f| f.label.as_str()).collect();
    assert_eq!(labels.last(), Some(&NODE_ORDER), "the location is always used");
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), frontends.len(), "two frontends share a label");
});

/// The entry whose prefix matches the most of `reference` (the first of equals).
fn longest_match<'a>(registries: &'a [RegistryEntry], reference: &str) -> Option<&'a RegistryEntry> {
    let mut best: Option<(usize, &RegistryEntry)> = None;
    for entry in registries {
        if let Some(len) = matching_prefix(reference, &entry.prefix)
            && best.is_none_or(|(longest, _)| len >= longest)
        {
            best = Some((len, entry));
        }
    }
    best.map(|(_, entry)| entry)
}

/// A prefix matches a whole part of the reference: a plain prefix itself, a
/// wildcard a subdomain within the host; the reference goes on with `/`, `:`, `@` or ends.
fn check_match(reference: &str, prefix: &str) {
    let Some(len) = matching_prefix(reference, prefix) else {
        if !prefix.starts_with('*') {
            let rest = reference.strip_prefix(prefix);
            assert!(rest.is_none_or(|r| !(r.is_empty() || r.starts_with([':', '/', '@']))), "{prefix} {reference}");
        }
        return;
    };
    let matched = reference.get(..len).expect("a character boundary");
    let rest = &reference[len..];
    assert!(rest.is_empty() || rest.starts_with([':', '/', '@']), "{prefix:?} matched {matched:?} of {reference:?}");
    match prefix.strip_prefix('*') {
        // A wildcard as registries.conf allows it: `*.example.com`.
        Some(domain) if domain.starts_with('.') && !domain.contains(['/', '*']) => {
            assert!(matched.ends_with(domain) && !matched.contains('/'), "{prefix:?} {matched:?}")
        }
        Some(_) => {}
        None => assert_eq!(matched, prefix),
    }
}
