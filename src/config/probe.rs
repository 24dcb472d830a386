//! Probes as configured: what to pull (or push), how loudly to page, what to expect.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use url::Url;

use super::error::Position;
use crate::digest::Digest;
use crate::platform::PlatformSelection;
use crate::signature::PublicKey;

/// One `probes:` entry.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Unique, `[a-zA-Z0-9_.-]+`; the `probe` label.
    pub name: String,
    /// The name of a configured registry: where `image:` lives, what `catalog:`
    /// lists and `canary:` pushes to; for `kubernetes:`, only that registry's images.
    pub registry: Option<String>,
    pub kind: ProbeKind,
    pub severity: Severity,
    pub expect: Expectations,
    /// `signatures:`: the referrers every frontend must serve for the image.
    pub signatures: Option<SignaturePolicy>,
    /// Overrides of `defaults:`; use [`Config::interval_for`](super::Config::interval_for) and friends.
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub platforms: Option<PlatformSelection>,
    /// Where the checked values were written, for errors found after loading.
    pub(super) origin: ProbeOrigin,
}

#[derive(Debug, Clone, Default)]
pub(super) struct ProbeOrigin {
    pub name: Option<Position>,
    pub registry: Option<Position>,
    pub image: Option<Position>,
}

impl ProbeConfig {
    /// A probe with the defaults of probes.yaml (severity critical, no expectations, no overrides).
    pub fn new(name: &str, kind: ProbeKind) -> Self {
        ProbeConfig {
            name: name.to_string(),
            registry: None,
            kind,
            severity: Severity::default(),
            expect: Expectations::default(),
            signatures: None,
            interval: None,
            timeout: None,
            platforms: None,
            origin: ProbeOrigin::default(),
        }
    }

    /// The position of the probe's `name:` in probes.yaml, when it came from a file.
    pub fn position(&self) -> Option<Position> {
        self.origin.name
    }
}

/// What a probe does: exactly one of `image`, `catalog`, `kubernetes`, `canary`.
#[derive(Debug, Clone)]
pub enum ProbeKind {
    /// Pull and verify one image, or with `tags` the newest matching tags of a repository.
    /// `image` is as written; [`Config::resolve_image`](super::Config::resolve_image) joins it with the registry.
    Image { image: String, tags: Option<TagRule> },
    /// Pull a sample of the registry's repositories.
    Catalog(CatalogDiscovery),
    /// Pull the images the cluster's workloads use.
    Kubernetes(KubernetesDiscovery),
    /// Push, then read back through every frontend.
    Canary(CanaryConfig),
}

impl ProbeKind {
    /// `image`, `catalog`, `kubernetes` or `canary`: the key that chose it.
    pub fn key(&self) -> &'static str {
        match self {
            ProbeKind::Image { .. } => "image",
            ProbeKind::Catalog(_) => "catalog",
            ProbeKind::Kubernetes(_) => "kubernetes",
            ProbeKind::Canary(_) => "canary",
        }
    }
}

/// `tags: {match: REGEX, newest: N}`.
#[derive(Debug, Clone)]
pub struct TagRule {
    pub pattern: Regex,
    /// How many of the matching tags are pulled, newest first; at least 1 (default 1).
    pub newest: usize,
}

/// `catalog: {match: REGEX, sample: N, tag: TAG}`: repositories from `/v2/_catalog`.
#[derive(Debug, Clone)]
pub struct CatalogDiscovery {
    /// Only repositories matching this are candidates (default: all).
    pub pattern: Option<Regex>,
    /// How many repositories are pulled per run (default 5).
    pub sample: usize,
    /// The tag pulled from each (default `latest`).
    pub tag: String,
}

/// `kubernetes: {namespaces, label_selector, api_server, token_file, ca_file, pull_secrets, max_images}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesDiscovery {
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
    /// A Kubernetes label selector (`app=web,tier!=cache`), passed to the API server as
    /// `labelSelector`: it selects Pods, and the Deployments, StatefulSets, DaemonSets,
    /// Jobs and CronJobs by their own labels.
    pub label_selector: Option<String>,
    /// The API server; `None`: the in-cluster one (`https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`).
    /// Plain `http://` only on loopback (`kubectl proxy`).
    pub api_server: Option<Url>,
    /// A bearer token, read anew each run (projected tokens rotate). `None`: the service
    /// account token when `api_server` is the in-cluster default, else no token.
    pub token_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for the API server besides the system roots. `None`:
    /// the service account's `ca.crt` when `api_server` is the in-cluster default.
    pub ca_file: Option<PathBuf>,
    /// Read each workload's `imagePullSecrets` and pull with them (default true).
    pub pull_secrets: bool,
    /// Distinct images probed per run at most (default 100); the rest are named in a warning.
    pub max_images: usize,
    /// With `registry:` on the probe: that registry's `host[:port]`; only its images are probed.
    pub registry_host: Option<String>,
}

impl Default for KubernetesDiscovery {
    fn default() -> Self {
        KubernetesDiscovery {
            namespaces: Vec::new(),
            label_selector: None,
            api_server: None,
            token_file: None,
            ca_file: None,
            pull_secrets: true,
            max_images: 100,
            registry_host: None,
        }
    }
}

/// `canary: {repository, consistency_deadline, size, chunk_size, sessions}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryConfig {
    /// A repository path in the probe's registry.
    pub repository: String,
    /// How long a push may take to become visible through every frontend (default 30s).
    pub consistency_deadline: Duration,
    /// Bytes of the pushed blob (default 4 MiB).
    pub size: u64,
    /// Bytes per upload chunk (default 1 MiB); at most `size`.
    pub chunk_size: u64,
    /// Upload sessions per run (default 3).
    pub sessions: usize,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            repository: String::new(),
            consistency_deadline: Duration::from_secs(30),
            size: 4 << 20,
            chunk_size: 1 << 20,
            sessions: 3,
        }
    }
}

/// The `severity` label of a probe's alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `signatures: {require, keys, platforms}`: what admission control will look for,
/// checked on every frontend.
#[derive(Debug, Clone, PartialEq)]
pub struct SignaturePolicy {
    /// Each kind must be present (and valid) among the image's referrers; at least one.
    pub require: Vec<RequiredReferrer>,
    /// With keys, at least one signature of a required signature kind must verify with one of them.
    pub keys: Vec<PublicKey>,
    /// Each platform manifest of an index must be signed too (`cosign sign --recursive`).
    pub platforms: bool,
}

/// One entry of `signatures.require`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequiredReferrer {
    /// A cosign signature: the legacy `.sig` tag, a simple signing referrer, or a sigstore bundle.
    Cosign,
    /// A referrer of this artifactType (`application/spdx+json`, `application/vnd.in-toto+json`…).
    ArtifactType(String),
}

impl std::fmt::Display for RequiredReferrer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequiredReferrer::Cosign => f.write_str("cosign signature"),
            RequiredReferrer::ArtifactType(t) => write!(f, "referrer of artifactType {t}"),
        }
    }
}

/// `expect:` content and freshness assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// Checked on the final filesystem of the image (every layer applied).
    pub paths: Vec<PathExpectation>,
    /// The image config's `created` must be at most this old.
    pub max_age: Option<Duration>,
    /// `config.Labels` of the image config that must be present with these values.
    pub labels: BTreeMap<String, String>,
}

impl Expectations {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.max_age.is_none() && self.labels.is_empty()
    }
}

/// A path that must exist in the image (or, with `absent`, must not), with optional
/// checks of what it is. Every check follows symlinks (as `stat` and `test -f` do),
/// except `type: symlink`, which looks at the path itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathExpectation {
    /// Absolute, as written (`/srv/app.conf`).
    pub path: String,
    pub absent: bool,
    /// `type:`.
    pub kind: Option<PathType>,
    /// `min_size:` in bytes (regular files only).
    pub min_size: Option<u64>,
    /// `mode:` permission bits, setuid/setgid/sticky included (`0o7777` at most).
    pub mode: Option<u32>,
    /// `sha256:` of a regular file's content.
    pub sha256: Option<Digest>,
}

impl PathExpectation {
    /// `path` must exist, whatever it is.
    pub fn exists(path: &str) -> Self {
        PathExpectation { path: path.to_string(), absent: false, kind: None, min_size: None, mode: None, sha256: None }
    }

    /// Nothing may be at `path`.
    pub fn absent(path: &str) -> Self {
        PathExpectation { absent: true, ..PathExpectation::exists(path) }
    }
}

/// `type:` of a path expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathType {
    File,
    Dir,
    Symlink,
}

impl PathType {
    pub fn as_str(self) -> &'static str {
        match self {
            PathType::File => "file",
            PathType::Dir => "dir",
            PathType::Symlink => "symlink",
        }
    }
}

impl std::fmt::Display for PathType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
