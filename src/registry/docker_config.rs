//! Credentials from a Docker `config.json` or a mounted `.dockerconfigjson`
//! (the same JSON): `credHelpers` (per registry), then `credsStore`, then
//! `auths` (`auth` = base64 of `user:password`, or `username`/`password`, or an
//! `identitytoken`). Helpers run as `docker-credential-<name> get` with the
//! registry on stdin, under a deadline, as the Docker CLI runs them.
//!
//! Nothing here is ever printed: errors name the file, the key and the helper,
//! never a value.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::reason::{ProbeError, Reason};
use crate::redact::json_error_position;
use crate::reference::DOCKER_HUB;
use crate::registry::credentials::{Credentials, Secret};

/// How long a credential helper may take.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest config file or helper answer read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The key the Docker CLI files Docker Hub credentials under, and hands to helpers.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Default, Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// What a credential helper prints for `get`.
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// The credentials for `registry_host` (`docker.io`, `registry.example.org:5000`).
/// `path` None is the default location, where a missing file means "no credentials";
/// a named file that is missing or unreadable is an error.
pub async fn lookup(path: Option<&Path>, registry_host: &str) -> Result<Option<Credentials>, ProbeError> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => match default_path() {
            Some(p) => (p, false),
            None => return Ok(None),
        },
    };
    let text = match read_limited(&path).await {
        Ok(text) => text,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(config_error(&path, &format!("cannot read it: {e}"))),
    };
    let config: DockerConfigFile = serde_json::from_slice(&text)
        .map_err(|e| config_error(&path, &format!("not a Docker config ({})", json_error_position(&e))))?;
    if let Some(helper) = find(&config.cred_helpers, registry_host) {
        return run_helper(helper, &helper_server(registry_host)).await;
    }
    if let Some(store) = config.creds_store.as_deref().filter(|s| !s.is_empty())
        && let Some(found) = run_helper(store, &helper_server(registry_host)).await?
    {
        return Ok(Some(found));
    }
    match find(&config.auths, registry_host) {
        Some(entry) => entry_credentials(entry, &format!("Docker config {}", path.display()), registry_host),
        None => Ok(None),
    }
}

async fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = tokio::fs::File::open(path).await?;
    let mut text = Vec::new();
    file.take(MAX_CONFIG_BYTES).read_to_end(&mut text).await?;
    Ok(text)
}

fn config_error(path: &Path, problem: &str) -> ProbeError {
    source_error(&format!("Docker config {}", path.display()), problem)
}

fn source_error(source: &str, problem: &str) -> ProbeError {
    ProbeError::new(Reason::AuthFailed, format!("{source}: {problem}"))
}

/// `host[:port]` of a config key written as a host, a URL (`https://host/v1/`) or Docker Hub's aliases.
pub fn normalize_key(key: &str) -> String {
    let key = key.trim();
    let rest = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = rest.split('/').next().unwrap_or_default().to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_string(),
        _ => host,
    }
}

fn find<'a, T>(map: &'a std::collections::BTreeMap<String, T>, registry_host: &str) -> Option<&'a T> {
    let wanted = normalize_key(registry_host);
    map.get(registry_host).or_else(|| map.iter().find(|(k, _)| normalize_key(k) == wanted).map(|(_, v)| v))
}

/// What a helper is asked for: Docker Hub's legacy key, else the host.
fn helper_server(registry_host: &str) -> String {
    if normalize_key(registry_host) == DOCKER_HUB { DOCKER_HUB_KEY.to_string() } else { registry_host.to_string() }
}

fn entry_credentials(entry: &AuthEntry, source: &str, host: &str) -> Result<Option<Credentials>, ProbeError> {
    let bad = |what: &str| source_error(source, &format!("auths entry for {host}: {what}"));
    let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
    if let Some(encoded) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad("`auth` is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("`auth` is not UTF-8"))?;
        let (user, pass) = decoded.split_once(':').ok_or_else(|| bad("`auth` is not base64 of user:password"))?;
        username = Some(user.to_string());
        password = Some(pass.to_string());
    }
    if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        let username = username.unwrap_or_default();
        return Ok(Some(Credentials::new(username, Secret::IdentityToken(token.to_string()))));
    }
    match (username, password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials::new(u, Secret::Password(p)))),
        (None, None) => Ok(None),
        _ => Err(bad("needs both a user name and a password")),
    }
}

/// The payload of a Kubernetes image pull secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullSecretFormat {
    /// `kubernetes.io/dockerconfigjson`, key `.dockerconfigjson`: `{"auths": {KEY: ENTRY}}`.
    DockerConfigJson,
    /// `kubernetes.io/dockercfg`, key `.dockercfg`: the legacy `{KEY: ENTRY}`.
    DockerCfg,
}

/// The credentials of a workload's image pull secrets, looked up for an image the way
/// the kubelet does (`credentialprovider.BasicDockerKeyring`): a key is `host[:port][/path]`
/// (a scheme and a `/v1/` or `/v2/` prefix of the path are dropped); it matches an image
/// when each dot-separated part of the host matches as a glob (`*.example.org`), the ports
/// are equal, and the path is a prefix of the image's repository path. The matching keys
/// are tried in reverse lexical order (the most specific first), credentials of one key in
/// the order of the secrets. Docker Hub keys (`https://index.docker.io/v1/`, `docker.io`)
/// match Docker Hub images. Credential helpers do not apply: a secret carries only `auths`.
#[derive(Debug, Default, Clone)]
pub struct PullSecretKeyring {
    /// (key host, key port, key path, credentials), in the order added.
    entries: Vec<KeyringEntry>,
}

#[derive(Debug, Clone)]
struct KeyringEntry {
    /// `host[:port][/path]`, host lowercase: the order of lookups.
    key: String,
    host: String,
    port: Option<String>,
    path: String,
    credentials: Credentials,
}

impl PullSecretKeyring {
    /// Add the entries of one secret's payload; `source` names it in errors (never a value).
    /// A payload that does not parse adds nothing.
    pub fn add(&mut self, payload: &[u8], format: PullSecretFormat, source: &str) -> Result<(), ProbeError> {
        let auths: std::collections::BTreeMap<String, AuthEntry> = match format {
            PullSecretFormat::DockerConfigJson => {
                let config: DockerConfigFile = serde_json::from_slice(payload).map_err(|e| {
                    source_error(source, &format!("not a .dockerconfigjson ({})", json_error_position(&e)))
                })?;
                config.auths
            }
            PullSecretFormat::DockerCfg => serde_json::from_slice(payload)
                .map_err(|e| source_error(source, &format!("not a .dockercfg ({})", json_error_position(&e))))?,
        };
        let mut added = Vec::new();
        for (key, entry) in &auths {
            let Some(credentials) = entry_credentials(entry, source, key)? else { continue };
            let (host, port, path) = keyring_key(key);
            if host.is_empty() {
                continue;
            }
            let key = format!("{host}{}{path}", port.as_deref().map(|p| format!(":{p}")).unwrap_or_default());
            added.push(KeyringEntry { key, host, port, path, credentials });
        }
        self.entries.extend(added);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credentials for an image of `registry_host` (`host[:port]` as references write it)
    /// and `repository`, or `None`: pull anonymously.
    pub fn lookup(&self, registry_host: &str, repository: &str) -> Option<&Credentials> {
        let target = normalize_key(registry_host);
        let (host, port) = split_port(&target);
        let path = format!("/{repository}");
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.port.as_deref() == port && host_matches(&e.host, host) && path.starts_with(&e.path))
            .max_by(|(i, a), (j, b)| a.key.cmp(&b.key).then(j.cmp(i)))
            .map(|(_, e)| &e.credentials)
    }
}

/// `(host, port, path)` of a keyring key, as the kubelet parses it: scheme dropped, a
/// `/v1/` or `/v2/` path prefix dropped, a lone `/` dropped; Docker Hub's aliases are `docker.io`.
fn keyring_key(key: &str) -> (String, Option<String>, String) {
    let key = key.trim();
    let rest = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = if path.starts_with("/v1/") || path.starts_with("/v2/") { &path[3..] } else { path };
    let path = if path == "/" { "" } else { path };
    let authority = normalize_key(authority);
    let (host, port) = split_port(&authority);
    (host.to_string(), port.map(str::to_string), path.to_string())
}

/// `host` and `port` of `host[:port]` (`[v6]:port` keeps its brackets on the host).
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let colon = if authority.starts_with('[') { authority.find("]:").map(|i| i + 1) } else { authority.rfind(':') };
    match colon {
        Some(i) => (&authority[..i], Some(&authority[i + 1..])),
        None => (authority, None),
    }
}

/// Each dot-separated part of `pattern` matches the same part of `host` as a glob
/// (`*` any run, `?` one character), as the kubelet's `URLsMatch` does.
fn host_matches(pattern: &str, host: &str) -> bool {
    let (patterns, parts): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), host.split('.').collect());
    patterns.len() == parts.len()
        && patterns
            .iter()
            .zip(&parts)
            .all(|(p, h)| crate::glob::matches(p.as_bytes(), h.to_ascii_lowercase().as_bytes(), Some(b'?')))
}

/// `docker-credential-<name> get`, the server on stdin; `None` when the helper has nothing for it.
async fn run_helper(name: &str, server: &str) -> Result<Option<Credentials>, ProbeError> {
    let program = format!("docker-credential-{name}");
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(ProbeError::new(
            Reason::AuthFailed,
            format!("credential helper name {name:?} is not a plain name"),
        ));
    }
    let failed =
        |problem: String| ProbeError::new(Reason::AuthFailed, format!("credential helper {program}: {problem}"));
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot run it ({e}); is it on PATH?")))?;
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let talk = async {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(server.as_bytes()).await;
        }
        drop(stdin.take());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(MAX_CONFIG_BYTES).read_to_end(&mut out).await;
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(64 * 1024).read_to_end(&mut err).await;
        }
        let status = child.wait().await;
        (status, out, err)
    };
    let (status, out, err) = match tokio::time::timeout(HELPER_TIMEOUT, talk).await {
        Ok(done) => done,
        Err(_) => return Err(failed(format!("no answer within {HELPER_TIMEOUT:?} for {server}"))),
    };
    let status = status.map_err(|e| failed(format!("{e}")))?;
    if !status.success() {
        // The helper protocol reports a missing entry with this message (docker-credential-helpers'
        // ErrCredentialsNotFound): the registry is then reached anonymously.
        let said = String::from_utf8_lossy(if out.is_empty() { &err } else { &out }).to_string();
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(failed(format!("`get` for {server} failed ({status})")));
    }
    let answer: HelperAnswer =
        serde_json::from_slice(&out).map_err(|_| failed(format!("`get` for {server} printed no credentials JSON")))?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    // `<token>` as the user name marks an identity (refresh) token, as the Docker CLI reads it.
    let secret = if answer.username == "<token>" {
        Secret::IdentityToken(answer.secret)
    } else {
        Secret::Password(answer.secret)
    };
    let username = if answer.username == "<token>" { String::new() } else { answer.username };
    Ok(Some(Credentials::new(username, secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    #[test]
    fn keys_normalise() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("registry-1.docker.io"), "docker.io");
        assert_eq!(normalize_key("http://Registry.Example.org:5000/v2/"), "registry.example.org:5000");
        assert_eq!(helper_server("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(helper_server("r.example.org"), "r.example.org");
    }

    #[tokio::test]
    async fn auths_entries_in_every_form() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with:colons");
        let path = write(
            dir.path(),
            &format!(
                r#"{{"auths": {{
                    "https://r.example.org/v1/": {{"auth": "{b64}"}},
                    "other.example.org:5000": {{"username": "bob", "password": "pw"}},
                    "https://index.docker.io/v1/": {{"identitytoken": "refresh-me"}}
                }}}}"#
            ),
        );
        let creds = lookup(Some(&path), "r.example.org").await.unwrap().unwrap();
        assert_eq!(creds.username(), "alice");
        assert!(matches!(creds.secret(), Secret::Password(p) if p == "s3cret:with:colons"));
        let creds = lookup(Some(&path), "other.example.org:5000").await.unwrap().unwrap();
        assert_eq!(creds.username(), "bob");
        let creds = lookup(Some(&path), "docker.io").await.unwrap().unwrap();
        assert!(matches!(creds.secret(), Secret::IdentityToken(t) if t == "refresh-me"));
        assert!(lookup(Some(&path), "unknown.example.org").await.unwrap().is_none());
        // Debug never shows a secret.
        assert!(!format!("{creds:?}").contains("refresh-me"));
    }

    #[tokio::test]
    async fn broken_files_fail_without_quoting_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), r#"{"auths": {"r.example.org": {"auth": "!!not-base64-secretvalue"}}}"#);
        let err = lookup(Some(&path), "r.example.org").await.unwrap_err();
        assert_eq!(err.reason, Reason::AuthFailed);
        assert!(err.message.contains("not base64") && !err.message.contains("secretvalue"), "{}", err.message);
        let missing = dir.path().join("absent.json");
        let err = lookup(Some(&missing), "r.example.org").await.unwrap_err();
        assert!(err.message.contains("absent.json"), "{}", err.message);
        let err = lookup(Some(&write(dir.path(), "{\"auths\": 3}")), "r.example.org").await.unwrap_err();
        assert!(err.message.contains("not a Docker config"), "{}", err.message);
    }

    #[tokio::test]
    async fn helper_names_are_plain() {
        let err = run_helper("../../bin/sh", "r.example.org").await.unwrap_err();
        assert!(err.message.contains("not a plain name"), "{}", err.message);
        let err = run_helper("pullprobe-test-absent-helper", "r.example.org").await.unwrap_err();
        assert!(err.message.contains("docker-credential-pullprobe-test-absent-helper"), "{}", err.message);
    }

    fn keyring(secrets: &[(&str, PullSecretFormat)]) -> PullSecretKeyring {
        let mut keyring = PullSecretKeyring::default();
        for (i, (json, format)) in secrets.iter().enumerate() {
            keyring.add(json.as_bytes(), *format, &format!("secret {i}")).unwrap();
        }
        keyring
    }

    fn user(keyring: &PullSecretKeyring, host: &str, repository: &str) -> Option<String> {
        keyring.lookup(host, repository).map(|c| c.username().to_string())
    }

    #[test]
    fn pull_secrets_match_as_the_kubelet_matches() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let first = format!(
            r#"{{"auths": {{
                "https://r.example.org/v1/": {{"auth": "{}"}},
                "r.example.org/team": {{"username": "team", "password": "pw"}},
                "*.cache.example.org": {{"username": "glob", "password": "pw"}},
                "127.0.0.1:5000": {{"username": "local", "password": "pw"}},
                "https://index.docker.io/v1/": {{"username": "hub", "password": "pw"}},
                "empty.example.org": {{}}
            }}}}"#,
            b64("host:pw")
        );
        let legacy = r#"{"r.example.org/team": {"username": "second", "password": "pw"},
                         "other.example.org": {"username": "legacy", "password": "pw"}}"#;
        let keyring = keyring(&[(&first, PullSecretFormat::DockerConfigJson), (legacy, PullSecretFormat::DockerCfg)]);
        assert_eq!(user(&keyring, "r.example.org", "app").as_deref(), Some("host"));
        assert_eq!(user(&keyring, "r.example.org", "team/app").as_deref(), Some("team"), "the longer path first");
        assert_eq!(user(&keyring, "r.example.org", "teamwork").as_deref(), Some("team"), "a string prefix");
        assert_eq!(user(&keyring, "eqiad.cache.example.org", "x").as_deref(), Some("glob"));
        assert_eq!(user(&keyring, "a.eqiad.cache.example.org", "x"), None, "a glob is one host part");
        assert_eq!(user(&keyring, "127.0.0.1:5000", "x").as_deref(), Some("local"));
        assert_eq!(user(&keyring, "127.0.0.1:5001", "x"), None, "ports must be equal");
        assert_eq!(user(&keyring, "127.0.0.1", "x"), None);
        assert_eq!(user(&keyring, "docker.io", "library/nginx").as_deref(), Some("hub"));
        assert_eq!(user(&keyring, "other.example.org", "x").as_deref(), Some("legacy"));
        assert_eq!(user(&keyring, "empty.example.org", "x"), None, "an entry without credentials");
        assert_eq!(user(&keyring, "unknown.example.org", "x"), None);
    }

    #[test]
    fn broken_pull_secrets_name_the_secret_never_a_value() {
        let mut keyring = PullSecretKeyring::default();
        let err = keyring
            .add(
                br#"{"auths": {"r.example.org": {"auth": "!!secretvalue"}}}"#,
                PullSecretFormat::DockerConfigJson,
                "ns/regcred",
            )
            .unwrap_err();
        assert!(err.message.starts_with("ns/regcred: ") && !err.message.contains("secretvalue"), "{}", err.message);
        let err = keyring.add(b"{\"auths\": [1]}", PullSecretFormat::DockerConfigJson, "ns/x").unwrap_err();
        assert!(err.message.contains("not a .dockerconfigjson"), "{}", err.message);
        let err = keyring.add(b"[]", PullSecretFormat::DockerCfg, "ns/y").unwrap_err();
        assert!(err.message.contains("not a .dockercfg"), "{}", err.message);
        assert!(keyring.is_empty());
    }
}
