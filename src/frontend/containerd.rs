//! containerd's registry host configuration, read as containerd reads it
//! (`config_path`, conventionally /etc/containerd/certs.d; containerd's
//! docs/hosts.md and core/remotes/docker/config/hosts.go):
//!
//! - the directory of the image's registry host: `<host>_<port>_`, then
//!   `<host>:<port>`, then `_default`; none: the node pulls from the registry itself;
//! - in it, `hosts.toml`: each `[host."…"]` in file order, then `server` (the
//!   registry's own URL when absent) — the node's order of hosts;
//! - a directory without hosts.toml: Docker's certificate layout (`*.crt`
//!   trusted, `*.cert` with its `*.key` offered) for the registry itself.
//!
//! Per host: `capabilities` (`pull`, `resolve`, `push`; all three when absent),
//! `skip_verify`, `ca` (one path or a list), `client` (a path, a list of paths,
//! or a list of `[cert, key]` pairs), `[header]`, `override_path` (the URL's
//! path is the API root instead of `<path>/v2`), `dial_timeout`. Relative
//! paths are relative to the hosts.toml. A host other than the image's
//! registry gets `?ns=<registry>` on every request. An unknown key is an error
//! at its position; `proxy` is read and reported as not applied.

use std::path::{Path, PathBuf};

use reqwest::header::{HeaderName, HeaderValue};
use url::Url;

use super::HostSettings;
use super::node::{NodeHost, NodeHosts};
use super::toml_file::{Table, TomlFile, Value, entries, get, quoted};
use crate::config::{ConfigError, parse_duration};
use crate::reference::{DOCKER_HUB, DOCKER_HUB_API_HOST, ImageReference};
use crate::registry::mirrors::Walk;

/// Keys of a host entry (and of the top level, which configures `server`).
const HOST_KEYS: &[&str] =
    &["capabilities", "ca", "client", "skip_verify", "header", "override_path", "dial_timeout", "proxy"];
/// Keys only the top level has.
const TOP_ONLY_KEYS: &[&str] = &["server", "host"];

/// The node's hosts for `image`, as the hosts directory `dir` configures them.
pub fn node_hosts(dir: &Path, registry_url: &Url, image: &ImageReference) -> Result<NodeHosts, ConfigError> {
    let name = dir.display().to_string();
    if !dir.is_dir() {
        return Err(ConfigError::new(
            &name,
            None,
            "not a directory: `containerd:` names containerd's config_path (e.g. /etc/containerd/certs.d)",
        ));
    }
    let server = || default_server(registry_url, image);
    let Some(host_dir) = host_dirs(dir, &image.registry).into_iter().find(|d| d.is_dir()) else {
        let mut only = server();
        only.notes.push(format!(
            "{name} has no directory for {} and no _default: nodes pull from the registry itself",
            image.registry
        ));
        return Ok(NodeHosts { hosts: vec![only], walk: Walk::EachRequest });
    };
    let file = host_dir.join("hosts.toml");
    let hosts = if std::fs::metadata(&file).is_ok_and(|m| m.len() > 0) {
        parse(&TomlFile::read(&file)?, registry_url, image)?
    } else {
        vec![certificate_files(&host_dir, server())?]
    };
    Ok(NodeHosts { hosts, walk: Walk::EachRequest })
}

/// Where containerd looks for a host's configuration, in order (Unix).
fn host_dirs(root: &Path, host: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some((name, port)) = host.rsplit_once(':').filter(|(name, _)| !name.is_empty()) {
        dirs.push(root.join(format!("{name}_{port}_")));
    }
    dirs.push(root.join(host));
    dirs.push(root.join("_default"));
    dirs
}

/// hosts.toml: its `[host."…"]` entries in file order, then the server.
pub fn parse(file: &TomlFile, registry_url: &Url, image: &ImageReference) -> Result<Vec<NodeHost>, ConfigError> {
    let top = file.parse()?;
    let known: Vec<&str> = HOST_KEYS.iter().chain(TOP_ONLY_KEYS).copied().collect();
    file.known_keys(&top, &known, "hosts.toml")?;
    let mut hosts = Vec::new();
    if let Some(value) = get(&top, "host") {
        for (key, span, entry) in entries(file.table("host", value)?) {
            let what = format!("[host.{:?}]", shown_host(key));
            let entry = file.table(&what, entry)?;
            file.known_keys(entry, HOST_KEYS, &what)?;
            let (url, path, api_root) = host_url(file, key, &span, override_path(file, entry)?)?;
            hosts.push(host(file, url, path, api_root, entry, image)?);
        }
    }
    let server = match get(&top, "server") {
        Some(value) => {
            let text = file.string("server", value)?;
            let (url, path, api_root) = host_url(file, &text, &value.span(), override_path(file, &top)?)?;
            host(file, url, path, api_root, &top, image)?
        }
        None => {
            // containerd's default host: the registry, with every capability whatever the top level says.
            let mut server = host(file, registry_url.clone(), String::new(), None, &top, image)?;
            server.ns = None;
            server.pulls = true;
            server.resolves = true;
            server
        }
    };
    hosts.push(server);
    Ok(hosts)
}

/// The registry itself, as a node with no configuration for it reaches it.
fn default_server(registry_url: &Url, image: &ImageReference) -> NodeHost {
    NodeHost { ns: ns_for(registry_url, image), ..NodeHost::registry(registry_url) }
}

fn override_path(file: &TomlFile, table: &Table<'_>) -> Result<bool, ConfigError> {
    get(table, "override_path").map(|v| file.boolean("override_path", v)).transpose().map(|v| v.unwrap_or(false))
}

/// A host key or `server` as containerd reads it: `https://` when no scheme is
/// given; the API root `<path>/v2` unless the path ends in `/v2` or
/// `override_path` says the path is the root. Returns the base URL (no path),
/// the path as written (for labels) and the API root when it is not `/v2`.
fn host_url(
    file: &TomlFile,
    raw: &str,
    span: &std::ops::Range<usize>,
    override_path: bool,
) -> Result<(Url, String, Option<String>), ConfigError> {
    let written = if raw.starts_with("http") { raw.to_string() } else { format!("https://{raw}") };
    let shown = shown_host(raw);
    let url = Url::parse(&written).map_err(|e| file.error(span, format!("host {shown:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(file.error(span, format!("host {shown:?}: expected http:// or https:// with a host")));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(file.error(span, format!("host {shown:?}: a host URL has no query, fragment or credentials")));
    }
    let path: String = {
        let segments: Vec<&str> = url.path().split('/').filter(|s| !s.is_empty() && *s != ".").collect();
        segments.iter().map(|s| format!("/{s}")).collect()
    };
    let api_root = if override_path {
        Some(path.clone())
    } else if path.is_empty() || path == "/v2" {
        None
    } else if path.ends_with("/v2") {
        Some(path.clone())
    } else {
        Some(format!("{path}/v2"))
    };
    let mut base = url;
    base.set_path("");
    Ok((base, path, api_root))
}

/// A host key or `server` as messages quote it: as written, without the user info
/// (`user:password@`) that containerd would read from it, with a scheme or without.
fn shown_host(raw: &str) -> String {
    if raw.starts_with("http") {
        return crate::redact::strip_userinfo(raw);
    }
    let shown = crate::redact::strip_userinfo(&format!("https://{raw}"));
    shown.strip_prefix("https://").unwrap_or(&shown).to_string()
}

/// One host: its capabilities and settings from `table` (a host entry, or the top level for `server`).
fn host(
    file: &TomlFile,
    url: Url,
    path: String,
    api_root: Option<String>,
    table: &Table<'_>,
    image: &ImageReference,
) -> Result<NodeHost, ConfigError> {
    let (pulls, resolves) = match get(table, "capabilities") {
        None => (true, true),
        Some(value) => {
            let (mut pull, mut resolve) = (false, false);
            for (capability, span) in file.strings("capabilities", value)? {
                match capability.to_ascii_lowercase().as_str() {
                    "pull" => pull = true,
                    "resolve" => resolve = true,
                    "push" => {}
                    _ => {
                        return Err(file.error(
                            &span,
                            format!("`capabilities`: unknown capability {capability:?} (pull, resolve, push)"),
                        ));
                    }
                }
            }
            (pull, pull && resolve)
        }
    };
    let mut notes = Vec::new();
    let mut settings = HostSettings { api_root, ..HostSettings::default() };
    let mut explicit_tls = false;
    if let Some(value) = get(table, "skip_verify") {
        settings.skip_verify = file.boolean("skip_verify", value)?;
        explicit_tls = true;
    }
    if let Some(value) = get(table, "ca") {
        settings.ca_files = file.strings("ca", value)?.into_iter().map(|(p, _)| file.path(&p)).collect();
        explicit_tls = true;
    }
    if let Some(value) = get(table, "client") {
        let pairs = client_pairs(file, value)?;
        if pairs.len() > 1 {
            notes.push(format!(
                "{} client certificates configured for {url}: pullprobe offers the first, {}",
                pairs.len(),
                quoted(&pairs[0].0.display().to_string())
            ));
        }
        settings.client_pair = pairs.into_iter().next();
        explicit_tls = true;
    }
    if let Some(value) = get(table, "header") {
        settings.headers = headers(file, value)?;
    }
    if let Some(value) = get(table, "dial_timeout") {
        let text = file.string("dial_timeout", value)?;
        let timeout = parse_duration(&text).map_err(|e| file.error(&value.span(), format!("`dial_timeout`: {e}")))?;
        settings.dial_timeout = Some(timeout);
    }
    if let Some(value) = get(table, "proxy") {
        let proxy = file.string("proxy", value)?;
        notes.push(format!(
            "{}: `proxy = {}` is not applied: pullprobe reaches {url} directly (HTTPS_PROXY and NO_PROXY apply)",
            file.location(&value.span()),
            quoted(&proxy)
        ));
    }
    // containerd tries HTTPS first for an http:// host with TLS settings (not on port 80).
    let mut url = url;
    let http_fallback = url.scheme() == "http" && explicit_tls && url.port() != Some(80);
    if http_fallback {
        let _ = url.set_scheme("https");
    }
    let ns = ns_for(&url, image);
    Ok(NodeHost { url, path, settings, pulls, resolves, used: true, http_fallback, ns, notes })
}

/// `?ns=` is sent to every host that is not the image's registry (containerd's `isProxy`).
fn ns_for(url: &Url, image: &ImageReference) -> Option<String> {
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => return None,
    };
    let same = host.eq_ignore_ascii_case(&image.registry)
        || (image.registry == DOCKER_HUB && host.eq_ignore_ascii_case(DOCKER_HUB_API_HOST));
    (!same).then(|| image.registry.clone())
}

/// `client`: a path (certificate and key in one file), a list of such paths, or a list of `[cert, key]` pairs.
fn client_pairs(file: &TomlFile, value: &Value<'_>) -> Result<Vec<(PathBuf, PathBuf)>, ConfigError> {
    use toml::de::DeValue;
    let single = |path: &str| (file.path(path), file.path(path));
    match value.get_ref() {
        DeValue::String(path) => Ok(vec![single(path)]),
        DeValue::Array(items) => items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(path) => Ok(single(path)),
                DeValue::Array(_) => {
                    let pair = file.strings("client", item)?;
                    match pair.as_slice() {
                        [(cert, _), (key, _)] if key.is_empty() => Ok(single(cert)),
                        [(cert, _), (key, _)] => Ok((file.path(cert), file.path(key))),
                        _ => Err(file.error(&item.span(), "`client`: a pair is [certificate, key]")),
                    }
                }
                _ => Err(file.error(&item.span(), "`client`: expected a path or a [certificate, key] pair")),
            })
            .collect(),
        _ => Err(file.error(&value.span(), "`client`: expected a path, a list of paths or of [cert, key] pairs")),
    }
}

/// `[header]`: each key a header name, each value a string or a list of strings.
fn headers(file: &TomlFile, value: &Value<'_>) -> Result<Vec<(HeaderName, HeaderValue)>, ConfigError> {
    let mut headers = Vec::new();
    for (key, span, value) in entries(file.table("header", value)?) {
        let name = HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| file.error(&span, format!("`header`: {key:?} is not an HTTP header name")))?;
        for (text, at) in file.strings(&format!("header.{key}"), value)? {
            let value = HeaderValue::from_str(&text)
                .map_err(|_| file.error(&at, format!("`header.{key}`: not a valid header value")))?;
            headers.push((name.clone(), value));
        }
    }
    Ok(headers)
}

/// Docker's certificate layout in a host directory without hosts.toml: `*.crt`
/// are CAs, `*.cert` client certificates with the `*.key` of the same name (else the key is in the `.cert`).
fn certificate_files(dir: &Path, mut server: NodeHost) -> Result<NodeHost, ConfigError> {
    let name = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| ConfigError::new(&name, None, format!("cannot read: {e}")))?;
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    for path in files {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => server.settings.ca_files.push(path),
            Some("cert") if server.settings.client_pair.is_none() => {
                let key = path.with_extension("key");
                let key = if key.is_file() { key } else { path.clone() };
                server.settings.client_pair = Some((path, key));
            }
            _ => {}
        }
    }
    Ok(server)
}

#[cfg(test)]
mod tests;
