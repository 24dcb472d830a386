//! hosts.toml as containerd reads it: the examples of containerd's docs/hosts.md
//! (tests/fixtures/mirrors/containerd, each file citing its section), and the
//! errors pullprobe reports where containerd would skip a key.

use std::path::{Path, PathBuf};

use url::Url;

use super::*;
use crate::config::Position;

fn fixtures(example: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mirrors/containerd").join(example)
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn image(s: &str) -> ImageReference {
    ImageReference::parse(s).unwrap()
}

fn hub() -> Url {
    url("https://registry-1.docker.io")
}

/// (base URL, api root, pulls, resolves, ns) of one host.
type Summary = (String, Option<String>, bool, bool, Option<String>);

fn summary(hosts: &NodeHosts) -> Vec<Summary> {
    hosts
        .hosts
        .iter()
        .map(|h| (h.url.to_string(), h.settings.api_root.clone(), h.pulls, h.resolves, h.ns.clone()))
        .collect()
}

fn docker_io() -> Option<String> {
    Some("docker.io".to_string())
}

#[test]
fn the_simple_default_host_config() {
    let hosts = node_hosts(&fixtures("simple"), &hub(), &image("docker.io/library/alpine:3")).unwrap();
    assert_eq!(hosts.walk, Walk::EachRequest);
    assert_eq!(
        summary(&hosts),
        [
            ("https://registry-1.docker.io/".into(), None, true, true, None),
            // `server` comes last, with every capability; docker.io is the image's own registry: no ns.
            ("https://docker.io/".into(), None, true, true, None),
        ]
    );
}

#[test]
fn a_local_mirror_for_docker() {
    let dir = fixtures("local-mirror");
    let hosts = node_hosts(&dir, &hub(), &image("docker.io/library/alpine:3")).unwrap();
    assert_eq!(
        summary(&hosts),
        [
            ("https://public-mirror.example.com/".into(), None, true, false, docker_io()),
            ("https://docker-mirror.internal/".into(), None, true, true, docker_io()),
            ("https://registry-1.docker.io/".into(), None, true, true, None),
        ]
    );
    // A relative `ca` is relative to the hosts.toml.
    assert_eq!(hosts.hosts[1].settings.ca_files, [dir.join("docker.io/docker-mirror.crt")]);
}

#[test]
fn the_default_namespace_serves_every_registry() {
    let ghcr = url("https://ghcr.io");
    let hosts = node_hosts(&fixtures("default-mirror"), &ghcr, &image("ghcr.io/org/app:1")).unwrap();
    assert_eq!(
        summary(&hosts),
        [
            ("https://registry.example.com/".into(), None, true, true, Some("ghcr.io".into())),
            // No `server`: the registry itself, after every host.
            ("https://ghcr.io/".into(), None, true, true, None),
        ]
    );
    let hosts = node_hosts(&fixtures("default-server"), &ghcr, &image("ghcr.io/org/app:1")).unwrap();
    assert_eq!(summary(&hosts), [("https://registry.example.com/".into(), None, true, true, Some("ghcr.io".into()))]);
}

#[test]
fn proxies_are_read_and_reported_as_not_applied() {
    let mine = url("https://my-registry.io");
    let hosts = node_hosts(&fixtures("proxy"), &mine, &image("my-registry.io/app:1")).unwrap();
    assert_eq!(hosts.hosts.len(), 1);
    let note = &hosts.hosts[0].notes[0];
    assert!(note.contains("hosts.toml:4:9: `proxy = \"http://my-proxy:8080\"` is not applied"), "{note}");

    let hosts = node_hosts(&fixtures("mirror-proxy"), &mine, &image("my-registry.io/app:1")).unwrap();
    assert_eq!(hosts.hosts[0].url.as_str(), "https://mirror.my-registry.io/");
    assert!(hosts.hosts[0].notes[0].contains("`proxy`") || hosts.hosts[0].notes[0].contains("proxy ="));
    assert!(hosts.hosts[1].notes.is_empty());
}

#[test]
fn an_http_host_with_tls_settings_is_tried_over_https_first() {
    let hosts = node_hosts(&fixtures("skip-verify"), &hub(), &image("docker.io/library/alpine:3")).unwrap();
    let mirror = &hosts.hosts[0];
    assert_eq!(mirror.url.as_str(), "https://192.168.31.250:5000/");
    assert!(mirror.http_fallback && mirror.settings.skip_verify);
    assert_eq!((mirror.pulls, mirror.resolves), (true, true));
}

#[test]
fn every_host_field_of_the_reference() {
    let dir = fixtures("host-fields");
    let registry = url("https://myregistry.io:5000");
    let hosts = node_hosts(&dir, &registry, &image("myregistry.io:5000/team/app:1")).unwrap();
    let ns = Some("myregistry.io:5000".to_string());
    assert_eq!(
        summary(&hosts),
        [
            ("https://mirror.registry/".into(), None, true, false, ns.clone()),
            ("https://mirror-bak.registry/".into(), Some("/us/v2".into()), true, false, ns.clone()),
            ("http://mirror.registry/".into(), None, true, false, ns.clone()),
            ("https://test-1.registry/".into(), None, true, true, ns.clone()),
            ("https://test-2.registry/".into(), None, true, true, ns.clone()),
            ("https://test-3.registry/".into(), None, true, true, ns.clone()),
            ("https://non-compliant-mirror.registry/".into(), Some("/v2/upstream".into()), true, false, ns),
            ("https://myregistry.io:5000/".into(), None, true, true, None),
        ]
    );
    let [mirror, bak, _, test1, test2, test3, ..] = hosts.hosts.as_slice() else { panic!() };
    let headers: Vec<(&str, &str)> =
        mirror.settings.headers.iter().map(|(k, v)| (k.as_str(), v.to_str().unwrap())).collect();
    assert_eq!(headers, [("x-custom-2", "value1"), ("x-custom-2", "value2")]);
    assert_eq!(mirror.settings.ca_files, [PathBuf::from("/etc/certs/mirror.pem")]);
    assert!(!mirror.settings.skip_verify && bak.settings.skip_verify);
    assert_eq!(
        test1.settings.ca_files,
        [PathBuf::from("/etc/certs/test-1-ca.pem"), PathBuf::from("/etc/certs/special.pem")]
    );
    assert_eq!(
        test1.settings.client_pair,
        Some((PathBuf::from("/etc/certs/client.cert"), PathBuf::from("/etc/certs/client.key")))
    );
    assert!(test1.notes[0].contains("2 client certificates"), "{:?}", test1.notes);
    // One file holds certificate and key.
    let pem = PathBuf::from("/etc/certs/client.pem");
    assert_eq!(test2.settings.client_pair, Some((pem.clone(), pem)));
    let first = PathBuf::from("/etc/certs/client-1.pem");
    assert_eq!(test3.settings.client_pair, Some((first.clone(), first)));
}

#[test]
fn host_directories_are_found_as_containerd_finds_them() {
    let root = Path::new("/etc/containerd/certs.d");
    assert_eq!(
        host_dirs(root, "myregistry.io:5000"),
        [root.join("myregistry.io_5000_"), root.join("myregistry.io:5000"), root.join("_default")]
    );
    assert_eq!(host_dirs(root, "docker.io"), [root.join("docker.io"), root.join("_default")]);

    // No directory for the host and no _default: the registry alone, with a note saying so.
    let hosts = node_hosts(&fixtures("simple"), &url("https://quay.io"), &image("quay.io/org/app:1")).unwrap();
    assert_eq!(summary(&hosts), [("https://quay.io/".into(), None, true, true, None)]);
    assert!(hosts.hosts[0].notes[0].contains("no directory for quay.io"), "{:?}", hosts.hosts[0].notes);

    // Not a directory at all: the configuration points nowhere.
    let err = node_hosts(&fixtures("missing"), &hub(), &image("docker.io/library/alpine:3")).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn docker_certificate_files_configure_the_registry() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("registry.example.org");
    std::fs::create_dir(&dir).unwrap();
    for name in ["ca.crt", "client.cert", "client.key", "README"] {
        std::fs::write(dir.join(name), "x").unwrap();
    }
    let registry = url("https://registry.example.org");
    let hosts = node_hosts(root.path(), &registry, &image("registry.example.org/app:1")).unwrap();
    assert_eq!(hosts.hosts.len(), 1);
    let settings = &hosts.hosts[0].settings;
    assert_eq!(settings.ca_files, [dir.join("ca.crt")]);
    assert_eq!(settings.client_pair, Some((dir.join("client.cert"), dir.join("client.key"))));
}

fn parse_text(text: &str) -> Result<Vec<NodeHost>, ConfigError> {
    let file = TomlFile::from_text("hosts.toml", PathBuf::from("/etc/containerd/certs.d/docker.io"), text.to_string());
    parse(&file, &hub(), &image("docker.io/library/alpine:3"))
}

fn error_at(text: &str) -> (Option<Position>, String) {
    let err = parse_text(text).unwrap_err();
    (err.position, err.message)
}

#[test]
fn unknown_keys_and_bad_values_are_errors_at_their_position() {
    let (at, message) = error_at("server = \"https://registry-1.docker.io\"\nskip_verfy = true\n");
    assert_eq!(at, Some(Position { line: 2, column: 1 }));
    assert!(message.starts_with("unknown key `skip_verfy` in hosts.toml"), "{message}");

    let (at, message) = error_at("[host.\"https://m\"]\n  capabilities = [\"pull\"]\n  servr = \"x\"\n");
    assert_eq!(at, Some(Position { line: 3, column: 3 }));
    assert!(message.contains("unknown key `servr` in [host.\"https://m\"]"), "{message}");

    let (at, message) = error_at("[host.\"https://m\"]\n  capabilities = [\"pull\", \"mirror\"]\n");
    assert_eq!(at, Some(Position { line: 2, column: 27 }));
    assert!(message.contains("unknown capability \"mirror\""), "{message}");

    let (at, message) = error_at("[host.\"https://m\"]\n  dial_timeout = \"soon\"\n");
    assert_eq!(at, Some(Position { line: 2, column: 18 }));
    assert!(message.starts_with("`dial_timeout`"), "{message}");

    let (at, message) = error_at("[host.\"https://m\".header]\n  \"bad header\" = \"x\"\n");
    assert_eq!(at, Some(Position { line: 2, column: 3 }));
    assert!(message.contains("not an HTTP header name"), "{message}");

    let (at, message) = error_at("[host.\"https://\"]\n");
    assert_eq!(at, Some(Position { line: 1, column: 7 }));
    assert!(message.contains("is not a URL"), "{message}");

    let (at, message) = error_at("[host.\"https://m\"]\n  client = [[\"only-one\"]]\n");
    assert_eq!(at, Some(Position { line: 2, column: 13 }));
    assert!(message.contains("[certificate, key]"), "{message}");
}

#[test]
fn paths_capabilities_and_timeouts_read_as_containerd_reads_them() {
    let hosts = parse_text(
        "[host.\"mirror.example.com/some/path/\"]\n  capabilities = [\"PULL\", \"Resolve\"]\n  dial_timeout = \"1s\"\n\
         [host.\"https://m2/v2\"]\n  capabilities = [\"resolve\"]\n[host.\"https://m3\"]\n  override_path = true\n",
    )
    .unwrap();
    // No scheme: https. A path gains /v2; one ending in /v2 keeps it; override_path makes it the root.
    assert_eq!(hosts[0].url.as_str(), "https://mirror.example.com/");
    assert_eq!(hosts[0].settings.api_root.as_deref(), Some("/some/path/v2"));
    assert_eq!(hosts[0].path, "/some/path");
    assert_eq!((hosts[0].pulls, hosts[0].resolves), (true, true));
    assert_eq!(hosts[0].settings.dial_timeout, Some(std::time::Duration::from_secs(1)));
    assert_eq!(hosts[1].settings.api_root, None);
    // `resolve` without `pull`: not a host for pulls.
    assert_eq!((hosts[1].pulls, hosts[1].resolves), (false, false));
    assert_eq!(hosts[2].settings.api_root.as_deref(), Some(""));
}
