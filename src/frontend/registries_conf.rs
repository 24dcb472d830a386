//! CRI-O's and podman's registries.conf, read as containers/image reads it
//! (containers-registries.conf(5), version 2; the deprecated version 1 lists
//! are read for `insecure` and `block`).
//!
//! The `[[registry]]` whose `prefix` (else `location`) is the longest prefix
//! of the image reference applies: its `[[registry.mirror]]` entries are
//! tried in order, then its `location` (the reference's own registry when no
//! entry matches or `location` is empty). A mirror's `location` replaces the
//! prefix (`prefix = "example.com/foo"`, `location = "mirror/bar"`: the image
//! `example.com/foo/app` is `bar/app` on `mirror`). `insecure` allows
//! certificates that do not verify and plain HTTP when HTTPS does not answer.
//! `pull-from-mirror` (`all`, `digest-only`, `tag-only`) and
//! `mirror-by-digest-only` decide which references a node sends to a mirror.
//! The first source that serves the manifest serves the whole image.
//!
//! `blocked = true` for the image fails the plan: nodes cannot pull it.
//! Settings about short names (`unqualified-search-registries`, `aliases`,
//! `short-name-mode`) and credentials are accepted and do not matter for a
//! full reference; `proxy` is reported as not applied; any other key is an
//! error at its position.

use std::ops::Range;
use std::path::Path;

use url::Url;

use super::HostSettings;
use super::node::{NodeHost, NodeHosts};
use super::toml_file::{Table, TomlFile, Value, entries, get, quoted};
use crate::config::ConfigError;
use crate::reference::ImageReference;
use crate::registry::mirrors::Walk;

const TOP_KEYS: &[&str] = &[
    "unqualified-search-registries",
    "short-name-mode",
    "credential-helpers",
    "additional-layer-store-auth-helper",
    "aliases",
    "registry",
    "registries",
];
const REGISTRY_KEYS: &[&str] =
    &["prefix", "location", "insecure", "blocked", "mirror", "mirror-by-digest-only", "proxy"];
const MIRROR_KEYS: &[&str] = &["location", "insecure", "pull-from-mirror", "proxy"];
const V1_KEYS: &[&str] = &["search", "insecure", "block"];

/// Which references a node sends to a mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFromMirror {
    All,
    DigestOnly,
    TagOnly,
}

/// One `[[registry]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    pub prefix: String,
    /// Empty only for a wildcard prefix: the reference is used as it is.
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    pub mirrors: Vec<MirrorEntry>,
    /// `FILE:LINE:COLUMN` of the entry, for messages.
    pub at: String,
    pub notes: Vec<String>,
}

/// One `[[registry.mirror]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorEntry {
    pub location: String,
    pub insecure: bool,
    pub pull_from: PullFromMirror,
    pub notes: Vec<String>,
}

/// The node's hosts for `image` as the registries.conf `file` configures them.
pub fn node_hosts(file: &Path, registry_url: &Url, image: &ImageReference) -> Result<NodeHosts, ConfigError> {
    let toml = TomlFile::read(file)?;
    let registries = parse(&toml)?;
    let mut hosts = hosts_for(&registries, registry_url, image)?;
    if let Some(drop_ins) = drop_ins(file)
        && let Some(last) = hosts.last_mut()
    {
        last.notes.push(drop_ins);
    }
    Ok(NodeHosts { hosts, walk: Walk::FirstSource })
}

/// A note when registries.conf.d beside the file holds drop-ins: they are not read.
fn drop_ins(file: &Path) -> Option<String> {
    let dir = file.with_extension("conf.d");
    let count = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "conf"))
        .count();
    (count > 0).then(|| format!("{count} drop-in files in {} are not read: only {}", dir.display(), file.display()))
}

/// Every `[[registry]]` of the file, checked.
pub fn parse(file: &TomlFile) -> Result<Vec<RegistryEntry>, ConfigError> {
    let top = file.parse()?;
    file.known_keys(&top, TOP_KEYS, "registries.conf")?;
    let mut registries = Vec::new();
    if let Some(value) = get(&top, "registry") {
        for item in file.array("registry", value)? {
            registries.push(registry(file, item)?);
        }
    }
    if let Some(value) = get(&top, "registries") {
        if !registries.is_empty() {
            return Err(file.error(
                &value.span(),
                "the version 1 `[registries.…]` lists and version 2 `[[registry]]` tables cannot be mixed",
            ));
        }
        registries = version_1(file, value)?;
    }
    for (index, entry) in registries.iter().enumerate() {
        if let Some(first) = registries[..index].iter().find(|e| e.prefix == entry.prefix) {
            return Err(ConfigError::new(
                &file.name,
                None,
                format!("prefix {:?} is defined twice ({} and {})", entry.prefix, first.at, entry.at),
            ));
        }
    }
    Ok(registries)
}

fn registry(file: &TomlFile, item: &Value<'_>) -> Result<RegistryEntry, ConfigError> {
    let table = file.table("registry", item)?;
    file.known_keys(table, REGISTRY_KEYS, "[[registry]]")?;
    let at = file.location(&item.span());
    let text = |key: &str| get(table, key).map(|v| file.string(key, v).map(|s| (s, v.span()))).transpose();
    let flag = |key: &str| get(table, key).map(|v| file.boolean(key, v)).transpose().map(|b| b.unwrap_or(false));
    let location = text("location")?;
    let prefix = text("prefix")?;
    let location_text = location.as_ref().map(|(l, _)| trim_location(l)).unwrap_or_default();
    let (prefix, prefix_span) = match prefix {
        Some((p, span)) if !trim_location(&p).is_empty() => (trim_location(&p), span),
        _ => (location_text.clone(), location.as_ref().map(|(_, s)| s.clone()).unwrap_or(item.span())),
    };
    if location_text.is_empty() && !prefix.starts_with("*.") {
        return Err(file.error(&item.span(), "[[registry]] needs a `location` (or a wildcard `prefix = \"*.…\"`)"));
    }
    check_wildcard(file, "prefix", &prefix, &prefix_span)?;
    if let Some((l, span)) = &location {
        check_location(file, "location", l, span)?;
    }
    let by_digest_only = flag("mirror-by-digest-only")?;
    let mut entry = RegistryEntry {
        prefix,
        location: location_text,
        insecure: flag("insecure")?,
        blocked: flag("blocked")?,
        mirrors: Vec::new(),
        at,
        notes: Vec::new(),
    };
    if let Some(value) = get(table, "proxy") {
        entry.notes.push(proxy_note(file, value)?);
    }
    if let Some(value) = get(table, "mirror") {
        for item in file.array("mirror", value)? {
            entry.mirrors.push(mirror(file, item, by_digest_only)?);
        }
    }
    Ok(entry)
}

fn mirror(file: &TomlFile, item: &Value<'_>, by_digest_only: bool) -> Result<MirrorEntry, ConfigError> {
    let table: &Table<'_> = file.table("mirror", item)?;
    file.known_keys(table, MIRROR_KEYS, "[[registry.mirror]]")?;
    let Some(value) = get(table, "location") else {
        return Err(file.error(&item.span(), "[[registry.mirror]] needs a `location`"));
    };
    let location = file.string("location", value)?;
    check_location(file, "location", &location, &value.span())?;
    let insecure = get(table, "insecure").map(|v| file.boolean("insecure", v)).transpose()?.unwrap_or(false);
    let pull_from = match get(table, "pull-from-mirror") {
        None => {
            if by_digest_only {
                PullFromMirror::DigestOnly
            } else {
                PullFromMirror::All
            }
        }
        Some(value) if by_digest_only => {
            return Err(file.error(
                &value.span(),
                "`pull-from-mirror` cannot be set when the registry has `mirror-by-digest-only`",
            ));
        }
        Some(value) => match file.string("pull-from-mirror", value)?.as_str() {
            "" | "all" => PullFromMirror::All,
            "digest-only" => PullFromMirror::DigestOnly,
            "tag-only" => PullFromMirror::TagOnly,
            other => {
                return Err(file.error(
                    &value.span(),
                    format!("`pull-from-mirror`: expected all, digest-only or tag-only, got {other:?}"),
                ));
            }
        },
    };
    let mut notes = Vec::new();
    if let Some(value) = get(table, "proxy") {
        notes.push(proxy_note(file, value)?);
    }
    Ok(MirrorEntry { location: trim_location(&location), insecure, pull_from, notes })
}

/// Version 1: `[registries.insecure] registries = […]` and `[registries.block]`, one entry per registry.
fn version_1(file: &TomlFile, value: &Value<'_>) -> Result<Vec<RegistryEntry>, ConfigError> {
    let table = file.table("registries", value)?;
    file.known_keys(table, V1_KEYS, "[registries]")?;
    let mut registries: Vec<RegistryEntry> = Vec::new();
    for (list, _, value) in entries(table) {
        let what = format!("registries.{list}");
        let inner = file.table(&what, value)?;
        file.known_keys(inner, &["registries"], &format!("[{what}]"))?;
        let Some(names) = get(inner, "registries") else { continue };
        for (name, span) in file.strings("registries", names)? {
            // A name is what `[[registry]]` would have as its prefix and location.
            let name = trim_location(&name);
            let location = if name.starts_with("*.") {
                check_wildcard(file, "registries", &name, &span)?;
                String::new()
            } else {
                check_location(file, "registries", &name, &span)?;
                name.clone()
            };
            let index = match registries.iter().position(|r| r.prefix == name) {
                Some(index) => index,
                None => {
                    registries.push(RegistryEntry {
                        prefix: name.clone(),
                        location,
                        insecure: false,
                        blocked: false,
                        mirrors: Vec::new(),
                        at: file.location(&span),
                        notes: Vec::new(),
                    });
                    registries.len() - 1
                }
            };
            match list.as_ref() {
                "insecure" => registries[index].insecure = true,
                "block" => registries[index].blocked = true,
                _ => {}
            }
        }
    }
    Ok(registries)
}

fn trim_location(text: &str) -> String {
    text.trim().trim_end_matches('/').to_string()
}

/// A wildcard prefix is `*.example.com`: a domain, no path, no other `*`.
fn check_wildcard(file: &TomlFile, key: &str, prefix: &str, span: &Range<usize>) -> Result<(), ConfigError> {
    match prefix.strip_prefix("*.") {
        Some(rest) if rest.is_empty() || rest.contains(['/', '*']) => {
            Err(file.error(span, format!("`{key}`: a wildcard is `*.example.com` only, got {}", quoted(prefix))))
        }
        _ => Ok(()),
    }
}

/// `host[:port][/path]`, as an image name would start.
fn check_location(file: &TomlFile, key: &str, text: &str, span: &Range<usize>) -> Result<(), ConfigError> {
    let location = trim_location(text);
    let valid = ImageReference::parse_name(&format!("{location}/x")).is_ok_and(|r| {
        r.tag.is_none() && r.digest.is_none() && ImageReference::names_registry(&format!("{location}/x"))
    });
    if !valid {
        return Err(file.error(span, format!("`{key}`: expected host[:port][/path], got {}", quoted(text))));
    }
    Ok(())
}

fn proxy_note(file: &TomlFile, value: &Value<'_>) -> Result<String, ConfigError> {
    let proxy = file.string("proxy", value)?;
    Ok(format!(
        "{}: `proxy = {}` is not applied: pullprobe connects directly (HTTPS_PROXY and NO_PROXY apply)",
        file.location(&value.span()),
        quoted(&proxy)
    ))
}

/// How much of `reference` a prefix matches (containers/image's `refMatchingPrefix`): the
/// prefix, ending where the reference continues with `/`, `:` or `@`, or where it ends.
pub fn matching_prefix(reference: &str, prefix: &str) -> Option<usize> {
    if let Some(domain) = prefix.strip_prefix('*') {
        // `*.example.com`: any subdomain, within the host part.
        let index = reference.find(domain)?;
        if reference[..index].contains('/') {
            return None;
        }
        let end = index + domain.len();
        return (end == reference.len() || matches!(reference.as_bytes()[end], b':' | b'/' | b'@')).then_some(end);
    }
    let rest = reference.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with([':', '/', '@'])).then_some(prefix.len())
}

/// The entry that applies to `image`: the longest matching prefix.
pub fn entry_for<'a>(registries: &'a [RegistryEntry], image: &ImageReference) -> Option<&'a RegistryEntry> {
    let reference = image.to_string();
    registries
        .iter()
        .filter_map(|r| matching_prefix(&reference, &r.prefix).map(|len| (len, r)))
        .max_by_key(|(len, _)| *len)
        .map(|(_, r)| r)
}

/// The node's sources for `image`: the entry's mirrors in order, then its location.
pub fn hosts_for(
    registries: &[RegistryEntry],
    registry_url: &Url,
    image: &ImageReference,
) -> Result<Vec<NodeHost>, ConfigError> {
    let own = |notes: Vec<String>| NodeHost { notes, ..NodeHost::registry(registry_url) };
    let Some(entry) = entry_for(registries, image) else {
        return Ok(vec![own(vec![format!("no [[registry]] matches {image}: nodes pull from the registry itself")])]);
    };
    if entry.blocked {
        return Err(ConfigError::new(
            &entry.at,
            None,
            format!("pulls of {image} are blocked (`blocked = true`, prefix {:?}): nodes cannot pull it", entry.prefix),
        ));
    }
    // What of the repository the prefix names: replaced by each location's path.
    let prefix_path = if entry.prefix.starts_with("*.") {
        None
    } else {
        let path = entry.prefix.strip_prefix(&image.registry).map(|rest| rest.trim_start_matches('/'));
        match path {
            Some(path) if !path.contains([':', '@']) => Some(path.to_string()),
            _ => {
                return Err(ConfigError::new(
                    &entry.at,
                    None,
                    format!(
                        "prefix {:?} matches {image} by more than its repository path: pullprobe cannot rewrite it",
                        entry.prefix
                    ),
                ));
            }
        }
    };
    let by_digest = image.digest.is_some();
    let mut hosts = Vec::new();
    for mirror in &entry.mirrors {
        let used = match mirror.pull_from {
            PullFromMirror::All => true,
            PullFromMirror::DigestOnly => by_digest,
            PullFromMirror::TagOnly => !by_digest,
        };
        let mut host = source(entry, &mirror.location, mirror.insecure, prefix_path.as_deref(), image, registry_url)?;
        host.used = used;
        host.notes.extend(mirror.notes.iter().cloned());
        if !used {
            host.notes.push(match mirror.pull_from {
                PullFromMirror::DigestOnly => format!(
                    "nodes ask {} only for references by digest (pull-from-mirror = digest-only): \
                     probed by the digest the registry resolves",
                    mirror.location
                ),
                _ => format!(
                    "nodes ask {} only for references by tag (pull-from-mirror = tag-only): not used by nodes for {image}",
                    mirror.location
                ),
            });
        }
        hosts.push(host);
    }
    let mut primary = if entry.location.is_empty() {
        own(Vec::new())
    } else {
        source(entry, &entry.location, entry.insecure, prefix_path.as_deref(), image, registry_url)?
    };
    primary.notes.extend(entry.notes.iter().cloned());
    hosts.push(primary);
    Ok(hosts)
}

/// A source at `location` (`host[:port][/path]`): the registry's own URL when it is the image's
/// registry, else HTTPS (with plain HTTP as the fallback when `insecure`).
fn source(
    entry: &RegistryEntry,
    location: &str,
    insecure: bool,
    prefix_path: Option<&str>,
    image: &ImageReference,
    registry_url: &Url,
) -> Result<NodeHost, ConfigError> {
    let (host, path) = location.split_once('/').unwrap_or((location, ""));
    let same = host.eq_ignore_ascii_case(&image.registry);
    let url = if same {
        registry_url.clone()
    } else {
        Url::parse(&format!("https://{host}")).map_err(|e| {
            ConfigError::new(&entry.at, None, format!("location {location:?}: {host:?} is not a host: {e}"))
        })?
    };
    let rewrite = prefix_path.map(|from| (from.to_string(), path.to_string())).filter(|(from, to)| from != to);
    Ok(NodeHost {
        http_fallback: insecure && !same,
        url,
        path: if path.is_empty() { String::new() } else { format!("/{path}") },
        settings: HostSettings { skip_verify: insecure, rewrite, ..HostSettings::default() },
        pulls: true,
        resolves: true,
        used: true,
        ns: None,
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
