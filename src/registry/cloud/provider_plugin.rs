//! Kubelet credential provider plugins (`credentialprovider.kubelet.k8s.io/v1`),
//! run as the kubelet runs them: a `CredentialProviderRequest` (`{apiVersion,
//! kind, image}`) on stdin, a `CredentialProviderResponse` on stdout, the plugin
//! killed when it does not answer in time.
//!
//! The answer's `auth` map (`"<host glob>[/path]": {username, password}`) is matched
//! against the image the way the kubelet matches it — the same keyring as a pod's
//! image pull secrets ([`PullSecretKeyring`]) — and cached per `cacheKeyType`
//! (`Image`, `Registry`, `Global`) for `cacheDuration`. One plugin run is in flight
//! per registry.
//!
//! A plugin that fails, hangs or prints something else is `auth_failed` with the
//! start of its stderr; what it prints on stdout is never shown.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Target;
use super::cache::Flights;
use super::endpoint::{detail, failed};
use crate::config::CredentialProvider;
use crate::reason::ProbeError;
use crate::redact::json_error_position;
use crate::registry::credentials::Credentials;
use crate::registry::docker_config::{PullSecretFormat, PullSecretKeyring};

const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";
/// How long a plugin may take before it is killed (as long as a Docker credential helper).
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer without `cacheDuration` is kept.
const DEFAULT_CACHE_DURATION: Duration = Duration::from_secs(5 * 60);
/// Largest stderr read from a plugin, and how much of it a message quotes.
const MAX_STDERR_BYTES: u64 = 64 * 1024;
const MAX_STDERR_SHOWN: usize = 512;

/// Answers by cache key (`<plugin>|image|<image>`, `…|registry|<host>`, `…|global`).
static ANSWERS: LazyLock<Mutex<HashMap<String, Answer>>> = LazyLock::new(Mutex::default);
/// One run in flight per (plugin, registry).
static RUNS: LazyLock<Flights> = LazyLock::new(Flights::default);

#[derive(Clone)]
struct Answer {
    keyring: PullSecretKeyring,
    expires: Instant,
}

/// What a plugin is asked about: the image (`host/repo:tag`, else the registry alone),
/// its registry and repository.
struct Asked<'a> {
    image: String,
    host: &'a str,
    repository: &'a str,
}

impl<'a> Asked<'a> {
    fn of(target: &Target<'a>) -> Self {
        Asked {
            image: target.image.map(ToString::to_string).unwrap_or_else(|| target.host.to_string()),
            host: target.host,
            repository: target.image.map(|i| i.repository.as_str()).unwrap_or_default(),
        }
    }
}

/// The credentials the plugin gives for `target`, from a cached answer or a new run.
pub(super) async fn credentials(
    plugin: &CredentialProvider,
    target: &Target<'_>,
) -> Result<Option<Credentials>, ProbeError> {
    let asked = Asked::of(target);
    if let Some(found) = cached(plugin, &asked, None) {
        return Ok(found);
    }
    run_once(plugin, &asked, None, target.max_body_bytes).await
}

/// After the registry refused `refused`: the plugin run again, unless another probe already did.
pub(super) async fn renew(
    plugin: &CredentialProvider,
    target: &Target<'_>,
    refused: Option<&Credentials>,
) -> Result<Option<Credentials>, ProbeError> {
    run_once(plugin, &Asked::of(target), Some(refused), target.max_body_bytes).await
}

/// One run per (plugin, registry) at a time: callers that waited get the answer it cached.
/// With `refused`, an answer that gives those credentials again does not count.
async fn run_once(
    plugin: &CredentialProvider,
    target: &Asked<'_>,
    refused: Option<Option<&Credentials>>,
    max_body: u64,
) -> Result<Option<Credentials>, ProbeError> {
    let flight = format!("{}|{}", plugin_key(plugin), target.host);
    RUNS.run(&flight, || async {
        // A run that finished while this caller waited answers for it.
        match cached(plugin, target, refused) {
            Some(found) => Ok(found),
            None => run(plugin, target, max_body).await,
        }
    })
    .await
}

/// A key for the plugin (command, arguments, environment); never shown.
fn plugin_key(plugin: &CredentialProvider) -> String {
    format!("{:?}", (&plugin.command, &plugin.args, &plugin.env))
}

fn cache_keys(plugin: &CredentialProvider, target: &Asked<'_>) -> [String; 3] {
    let plugin = plugin_key(plugin);
    [
        format!("{plugin}|image|{}", target.image),
        format!("{plugin}|registry|{}", target.host),
        format!("{plugin}|global"),
    ]
}

/// A fresh cached answer's credentials (image, then registry, then global answers);
/// with `refused`, an answer giving those credentials is dropped instead.
fn cached(
    plugin: &CredentialProvider,
    target: &Asked<'_>,
    refused: Option<Option<&Credentials>>,
) -> Option<Option<Credentials>> {
    let mut answers = ANSWERS.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    answers.retain(|_, answer| answer.expires > now);
    for key in cache_keys(plugin, target) {
        let Some(answer) = answers.get(&key) else { continue };
        let credentials = lookup(plugin, &answer.keyring, target);
        if refused.is_some_and(|refused| refused == credentials.as_ref()) {
            answers.remove(&key);
            continue;
        }
        return Some(credentials);
    }
    None
}

/// The credentials an answer gives for `target`, as the kubelet matches its keys.
fn lookup(plugin: &CredentialProvider, keyring: &PullSecretKeyring, target: &Asked<'_>) -> Option<Credentials> {
    let found = keyring.lookup(target.host, target.repository)?;
    Some(found.clone().with_origin(format!("credentials from credential provider {}", plugin.command.display())))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    cache_key_type: String,
    #[serde(default)]
    cache_duration: Option<String>,
    /// `{"<host glob>[/path]": {"username": …, "password": …}}`: a `.dockercfg` map.
    #[serde(default)]
    auth: Option<serde_json::Value>,
}

/// What a plugin's answer is cached under (`cacheKeyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKeyType {
    /// This image only.
    Image,
    /// Every image of the registry.
    Registry,
    /// Every image.
    Global,
}

/// A plugin's `CredentialProviderResponse`, checked.
#[derive(Debug, Clone)]
pub struct PluginAnswer {
    pub cache_key_type: CacheKeyType,
    /// How long the answer is kept (`cacheDuration`, else five minutes); zero: not kept.
    pub cache_duration: Duration,
    /// The `auth` map, looked up as the kubelet looks it up.
    pub keyring: PullSecretKeyring,
}

/// Read what plugin `name` printed on `stdout` when asked about `image`. A refusal
/// is `auth_failed`, ends with the start of `stderr` (redacted), and never
/// quotes a value of the `auth` map.
pub fn read_response(stdout: &[u8], stderr: &[u8], name: &str, image: &str) -> Result<PluginAnswer, ProbeError> {
    let said = || stderr_excerpt(stderr);
    let response: Response = serde_json::from_slice(stdout).map_err(|e| {
        failed(
            name,
            format!("printed no CredentialProviderResponse JSON for {image} ({}){}", json_error_position(&e), said()),
        )
    })?;
    if response.api_version != API_VERSION || response.kind != "CredentialProviderResponse" {
        return Err(failed(
            name,
            format!(
                "answered apiVersion {:?}, kind {:?}; expected {API_VERSION}, CredentialProviderResponse{}",
                detail(&response.api_version),
                detail(&response.kind),
                said()
            ),
        ));
    }
    let cache_key_type = match response.cache_key_type.as_str() {
        "Image" => CacheKeyType::Image,
        "Registry" => CacheKeyType::Registry,
        "Global" => CacheKeyType::Global,
        other => {
            return Err(failed(name, format!("cacheKeyType {:?}: expected Image, Registry or Global", detail(other))));
        }
    };
    let cache_duration = match response.cache_duration.as_deref() {
        None | Some("") => DEFAULT_CACHE_DURATION,
        Some(text) => parse_go_duration(text)
            .ok_or_else(|| failed(name, format!("cacheDuration {:?} is not a duration", detail(text))))?,
    };
    let mut keyring = PullSecretKeyring::default();
    if let Some(auth) = &response.auth {
        let payload = serde_json::to_vec(auth).map_err(|e| failed(name, e))?;
        keyring.add(&payload, PullSecretFormat::DockerCfg, name)?;
    }
    Ok(PluginAnswer { cache_key_type, cache_duration, keyring })
}

/// Run the plugin for `target`, cache its answer, and look the target up in it.
async fn run(
    plugin: &CredentialProvider,
    target: &Asked<'_>,
    max_body: u64,
) -> Result<Option<Credentials>, ProbeError> {
    let name = format!("credential provider {}", plugin.command.display());
    let request =
        serde_json::json!({"apiVersion": API_VERSION, "kind": "CredentialProviderRequest", "image": &target.image});
    tracing::debug!(plugin = %plugin.command.display(), image = %target.image, "running a credential provider plugin");
    let (stdout, stderr) = execute(plugin, &name, request.to_string().as_bytes(), max_body).await?;
    let answer = read_response(&stdout, &stderr, &name, &target.image)?;
    let cache_key = match answer.cache_key_type {
        CacheKeyType::Image => format!("{}|image|{}", plugin_key(plugin), target.image),
        CacheKeyType::Registry => format!("{}|registry|{}", plugin_key(plugin), target.host),
        CacheKeyType::Global => format!("{}|global", plugin_key(plugin)),
    };
    let credentials = lookup(plugin, &answer.keyring, target);
    if credentials.is_none() {
        tracing::debug!(plugin = %plugin.command.display(), image = %target.image, "the plugin's auth map has no entry for the image");
    }
    if !answer.cache_duration.is_zero() {
        let answer = Answer { keyring: answer.keyring, expires: Instant::now() + answer.cache_duration };
        ANSWERS.lock().unwrap_or_else(|p| p.into_inner()).insert(cache_key, answer);
    }
    Ok(credentials)
}

/// Run the plugin with `input` on stdin; its stdout (at most `max_body` bytes) and stderr.
/// Killed when it does not finish within [`PLUGIN_TIMEOUT`].
async fn execute(
    plugin: &CredentialProvider,
    name: &str,
    input: &[u8],
    max_body: u64,
) -> Result<(Vec<u8>, Vec<u8>), ProbeError> {
    let mut child = tokio::process::Command::new(&plugin.command)
        .args(&plugin.args)
        .envs(plugin.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(name, format!("cannot run it: {e}")))?;
    let (mut stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let talk = async {
        if let Some(stdin) = stdin.as_mut() {
            // A plugin that exits without reading its request is judged by its answer.
            let _ = stdin.write_all(input).await;
        }
        drop(stdin.take());
        let read_out = async {
            let mut out = Vec::new();
            if let Some(s) = stdout {
                let _ = s.take(max_body.saturating_add(1)).read_to_end(&mut out).await;
            }
            out
        };
        let read_err = async {
            let mut err = Vec::new();
            if let Some(s) = stderr {
                let _ = s.take(MAX_STDERR_BYTES).read_to_end(&mut err).await;
            }
            err
        };
        let (out, err) = tokio::join!(read_out, read_err);
        (child.wait().await, out, err)
    };
    let (status, out, err) = match tokio::time::timeout(PLUGIN_TIMEOUT, talk).await {
        Ok(done) => done,
        Err(_) => {
            let _ = child.kill().await;
            return Err(failed(name, format!("no answer within {PLUGIN_TIMEOUT:?}; killed it")));
        }
    };
    let status = status.map_err(|e| failed(name, e))?;
    if !status.success() {
        return Err(failed(name, format!("exited with {status}{}", stderr_excerpt(&err))));
    }
    if out.len() as u64 > max_body {
        return Err(failed(name, format!("printed more than {max_body} bytes")));
    }
    Ok((out, err))
}

/// `; stderr: …` with the start of what the plugin wrote there (one line, redacted), or nothing.
fn stderr_excerpt(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let shown = crate::redact::redact_text(&flat);
    match shown.char_indices().nth(MAX_STDERR_SHOWN) {
        Some((cut, _)) => format!("; stderr: {}… ({} bytes)", &shown[..cut], stderr.len()),
        None => format!("; stderr: {shown}"),
    }
}

/// A Go duration as Kubernetes writes `cacheDuration`: `6h0m0s`, `1h30m`, `300ms`, `1.5h`, `0s`.
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("6h0m0s"), Some(Duration::from_secs(6 * 3600)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "5", "1d", "h", "-1s", "1..5s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stderr_is_one_bounded_redacted_line() {
        assert_eq!(stderr_excerpt(b""), "");
        assert_eq!(stderr_excerpt(b"no role\nfor node\n"), "; stderr: no role for node");
        let long = "e".repeat(100_000);
        let shown = stderr_excerpt(long.as_bytes());
        assert!(shown.len() < MAX_STDERR_SHOWN + 64 && shown.ends_with("(100000 bytes)"), "{shown}");
        assert!(!stderr_excerpt(b"Authorization: Bearer abc.def").contains("abc.def"));
    }
}
