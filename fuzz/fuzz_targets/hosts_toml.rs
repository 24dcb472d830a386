//! containerd's hosts.toml as a node's `config_path` holds it, for one of a few
//! images and registries (the first input byte picks one). A refused file says
//! where (`hosts.toml:LINE:COLUMN`, inside the text) in one bounded line; an
//! accepted one gives one host per `[host."…"]` in file order and then the
//! server (the registry itself when `server` is absent), each an http(s) base URL
//! with a host and nothing else, `?ns=` only off the image's registry. Neither
//! an error nor a note quotes a `[header]` value or a URL's password, and the
//! frontends the hosts become have distinct labels and bounded notes.

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use pullprobe::frontend::containerd::parse;
use pullprobe::frontend::node::{NODE_ORDER, NodeHosts, as_frontends};
use pullprobe::frontend::toml_file::{Table, TomlFile, entries, get};
use pullprobe::registry::mirrors::Walk;
use pullprobe_fuzz::{check_config_error, check_message, image_and_text, url_passwords};
use toml::de::DeValue;

/// (image, the registry's URL) pairs the first byte picks from.
const IMAGES: &[(&str, &str)] = &[
    ("docker.io/library/alpine:3", "https://registry-1.docker.io"),
    ("myregistry.io:5000/team/app:1", "https://myregistry.io:5000"),
    (
        "127.0.0.1:5000/a@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "http://127.0.0.1:5000",
    ),
    ("ghcr.io/org/app:1", "https://ghcr.io"),
];

/// Header values shorter than this may occur in a message by chance.
const MIN_SECRET_LEN: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((image, registry, input)) = image_and_text(data, IMAGES) else { return };
    let file = TomlFile::from_text("hosts.toml", PathBuf::from("/etc/containerd/certs.d/docker.io"), input.into());
    let mut secrets = url_passwords(input, MIN_SECRET_LEN);
    secrets.extend(schemeless_hosts(&file).iter().flat_map(|host| {
        // containerd reads `user:password@mirror` as https://user:password@mirror.
        url_passwords(&format!("https://{host}"), MIN_SECRET_LEN).into_iter().map(|p| format!("\"{}", &p[3..]))
    }));
    secrets.extend(header_values(&file).into_iter().filter(|v| secret_like(v, input)));
    let hosts = match parse(&file, &registry, &image) {
        Ok(hosts) => hosts,
        Err(e) => {
            check_config_error(&e, "hosts.toml", input);
            for secret in &secrets {
                assert!(!e.message.contains(secret.as_str()), "the error quotes {secret:?}: {e}");
            }
            return;
        }
    };
    let table = file.parse().expect("parsed once");
    let host_entries = get(&table, "host").map(|h| table_of(h.get_ref()).map_or(0, |t| t.len())).unwrap_or(0);
    assert_eq!(hosts.len(), host_entries + 1, "one host per [host.\"…\"], then the server");
    for host in &hosts {
        let url = &host.url;
        assert!(matches!(url.scheme(), "http" | "https"), "{url}");
        assert!(url.host_str().is_some_and(|h| !h.is_empty()), "{url}");
        assert_eq!(url.path(), "/", "{url}: a base URL");
        assert!(url.query().is_none() && url.fragment().is_none() && url.username().is_empty(), "{url}");
        assert!(!host.resolves || host.pulls, "{url}: resolves without pulling");
        assert!(!host.http_fallback || url.scheme() == "https", "{url}: falls back to http from http");
        assert!(host.ns.is_none() || host.ns.as_deref() == Some(image.registry.as_str()), "{url}: ns {:?}", host.ns);
        if let Some(root) = &host.settings.api_root {
            assert!(root.is_empty() || root.starts_with('/'), "{url}: API root {root:?}");
        }
        for note in &host.notes {
            check_message("note", note);
            for secret in &secrets {
                assert!(!note.contains(secret.as_str()), "a note quotes {secret:?}: {note}");
            }
        }
    }
    let last = hosts.last().expect("the server");
    if get(&table, "server").is_none() {
        // An http:// registry with TLS settings is tried over https first, as any host.
        let mut asked = last.url.clone();
        if last.http_fallback {
            let _ = asked.set_scheme("http");
        }
        assert_eq!(asked, registry, "no `server`: the registry itself comes last");
        assert!(last.pulls && last.resolves && last.ns.is_none(), "the registry itself, with every capability");
    }
    let node = NodeHosts { hosts, walk: Walk::EachRequest };
    let frontends = as_frontends(&node, &image);
    let mut labels: Vec<&str> = frontends.iter().map(|f| f.label.as_str()).collect();
    let pulling = node.hosts.iter().filter(|h| h.pulls).count();
    let ordered = node.hosts.iter().any(|h| h.pulls && h.used);
    assert_eq!(frontends.len(), pulling + usize::from(ordered), "{labels:?}");
    assert_eq!(labels.last() == Some(&NODE_ORDER), ordered, "{labels:?}");
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), frontends.len(), "two frontends share a label");
});

/// Every `[header]` value of the file, at the top and under each host.
fn header_values(file: &TomlFile) -> Vec<String> {
    let Ok(top) = file.parse() else { return Vec::new() };
    let mut tables: Vec<&Table<'_>> = vec![&top];
    if let Some(hosts) = get(&top, "host").and_then(|h| table_of(h.get_ref())) {
        tables.extend(entries(hosts).filter_map(|(_, _, v)| table_of(v.get_ref())));
    }
    let mut values = Vec::new();
    for table in tables {
        let Some(headers) = get(table, "header").and_then(|h| table_of(h.get_ref())) else { continue };
        for (_, _, value) in entries(headers) {
            match value.get_ref() {
                DeValue::String(s) => values.push(s.to_string()),
                DeValue::Array(items) => values.extend(items.iter().filter_map(|i| match i.get_ref() {
                    DeValue::String(s) => Some(s.to_string()),
                    _ => None,
                })),
                _ => {}
            }
        }
    }
    values
}

/// The `[host."…"]` keys written without a scheme.
fn schemeless_hosts(file: &TomlFile) -> Vec<String> {
    let Ok(top) = file.parse() else { return Vec::new() };
    let Some(hosts) = get(&top, "host").and_then(|h| table_of(h.get_ref())) else { return Vec::new() };
    entries(hosts).map(|(key, _, _)| key.to_string()).filter(|key| !key.starts_with("http")).collect()
}

fn table_of<'t, 'i>(value: &'t DeValue<'i>) -> Option<&'t Table<'i>> {
    match value {
        DeValue::Table(table) => Some(table),
        _ => None,
    }
}

/// A value that a message quoting it would give away: long enough, not made of the
/// lowercase words messages are made of, and written once (not also a key or a host).
fn secret_like(value: &str, input: &str) -> bool {
    value.chars().count() >= MIN_SECRET_LEN
        && !value.chars().all(|c| c.is_ascii_lowercase() || " -_.,`".contains(c))
        && input.matches(value).count() == 1
}
