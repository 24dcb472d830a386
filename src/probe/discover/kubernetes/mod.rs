//! `kubernetes: {namespaces, label_selector, …}`: the images a cluster's workloads use.
//!
//! Lists, through the API server, the Deployments, StatefulSets, DaemonSets,
//! CronJobs and Jobs (their pod templates: the images about to be pulled) and
//! the Pods of the selected namespaces, page by page (`limit` + `continue`),
//! and keeps each distinct image reference of their containers, init containers
//! and ephemeral containers: digests as pinned, tags as written, normalised as
//! Docker does (`nginx` is `docker.io/library/nginx:latest`). With
//! `pull_secrets`, each image gets the credentials of an `imagePullSecrets`
//! entry of a workload that uses it, chosen as the kubelet chooses
//! ([`PullSecretKeyring`]).
//!
//! A reference that does not parse, a pull secret that is missing or
//! unreadable, images over `max_images`: discovery goes on and says so in
//! [`Workloads::warnings`]. A listing the API server refuses fails the whole
//! discovery (`discovery_failed`), naming the request, the status, the API's
//! message and, for a `403`, the RBAC permission that is missing.
//!
//! Not here: pulling the images (the planner makes a pull job of each) or
//! reading anything but the fields needed ([`objects`]).

mod api;
pub mod objects;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::StatusCode;

use self::api::{ApiClient, ApiError, discovery_error};
use self::objects::{Kind, List, Secret, Spec};
use crate::config::KubernetesDiscovery;
use crate::reason::ProbeError;
use crate::reference::ImageReference;
use crate::registry::credentials::Credentials;
use crate::registry::docker_config::{PullSecretFormat, PullSecretKeyring};

pub use self::api::SERVICE_ACCOUNT_DIR;

/// Objects per page asked for; halved while a page is over the size cap.
pub const PAGE_SIZE: u32 = 100;
/// `used_by` entries kept per image.
const MAX_USED_BY: usize = 5;
/// Distinct sets of pull secrets remembered per image.
const MAX_SECRET_SETS: usize = 8;
/// Names read from one `imagePullSecrets`.
const MAX_SECRETS_PER_POD: usize = 16;
/// Distinct Secrets read in one run.
const MAX_SECRETS: usize = 256;
/// Largest Secret read (pull secrets are a few KiB): with [`MAX_SECRETS`], memory stays bounded.
const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// Warnings about references kept in full; the rest are counted.
const MAX_REFERENCE_WARNINGS: usize = 20;
/// Distinct references counted over `max_images` (memory stays bounded beyond).
const MAX_OVERFLOW_COUNTED: usize = 10_000;

/// One distinct image reference the workloads use.
#[derive(Debug, Clone)]
pub struct WorkloadImage {
    /// As parsed from the Pod spec (digests as pinned, tags as written).
    pub image: ImageReference,
    /// From the `imagePullSecrets` of a Pod that uses it, for the image's registry host.
    pub credentials: Option<Credentials>,
    /// A few `namespace/kind/name` that use it, for the result's context.
    pub used_by: Vec<String>,
}

/// What one discovery run found.
#[derive(Debug, Clone, Default)]
pub struct Workloads {
    /// Distinct images, sorted by reference, at most `max_images`.
    pub images: Vec<WorkloadImage>,
    /// Worth knowing, not failures: references that do not parse, pull secrets
    /// that cannot be read, images left out over `max_images`. Never a secret.
    pub warnings: Vec<String>,
}

/// The images of the workloads `rule` selects and what is worth knowing about them.
/// `max_body_bytes` caps each response (one page of a list, one Secret); the whole
/// discovery ends within `timeout`.
pub async fn workloads(
    rule: &KubernetesDiscovery,
    max_body_bytes: u64,
    timeout: Duration,
) -> Result<Workloads, ProbeError> {
    // A little inside `timeout`, so that a caller holding the same deadline gets this
    // error, which names the request that was waited for, rather than its own.
    let budget = timeout.saturating_sub((timeout / 20).min(Duration::from_secs(1)));
    let deadline = Instant::now() + budget;
    match tokio::time::timeout(budget, discover(rule, max_body_bytes, deadline)).await {
        Ok(found) => found,
        Err(_) => Err(discovery_error(format!("listing the cluster's workloads did not finish within {timeout:?}"))),
    }
}

async fn discover(rule: &KubernetesDiscovery, max_body_bytes: u64, deadline: Instant) -> Result<Workloads, ProbeError> {
    let client = ApiClient::new(rule, max_body_bytes, deadline)?;
    let mut seen = Seen::new(rule);
    let namespaces: Vec<Option<&str>> = match rule.namespaces.is_empty() {
        true => vec![None],
        false => rule.namespaces.iter().map(|ns| Some(ns.as_str())).collect(),
    };
    for namespace in namespaces {
        for kind in Kind::ALL {
            list(&client, rule, kind, namespace, &mut seen).await?;
        }
    }
    let mut secrets = SecretReader::new(&client);
    let mut images = Vec::new();
    for (_, entry) in std::mem::take(&mut seen.images) {
        let credentials = match rule.pull_secrets {
            true => secrets.credentials_for(&entry.image, &entry.secret_sets).await,
            false => None,
        };
        images.push(WorkloadImage { image: entry.image, credentials, used_by: entry.used_by });
    }
    let mut warnings = seen.warnings();
    warnings.extend(secrets.warnings);
    Ok(Workloads { images, warnings })
}

/// Every page of `kind` in `namespace` (all namespaces: `None`) into `seen`.
async fn list(
    client: &ApiClient,
    rule: &KubernetesDiscovery,
    kind: Kind,
    namespace: Option<&str>,
    seen: &mut Seen<'_>,
) -> Result<(), ProbeError> {
    let path = kind.path(namespace);
    let permission = Permission { verb: "list", kind, namespace };
    let mut continue_token: Option<String> = None;
    let mut page_size = PAGE_SIZE;
    let mut restarted = false;
    loop {
        let limit = page_size.to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(selector) = &rule.label_selector {
            query.push(("labelSelector", selector.as_str()));
        }
        if let Some(token) = &continue_token {
            query.push(("continue", token.as_str()));
        }
        let page: List = match client.get(&path, &query).await {
            Ok(page) => page,
            Err(ApiError::TooLarge { .. }) if page_size > 1 => {
                page_size /= 2;
                continue;
            }
            // The continue token expired (the listing took too long): the API says to start over.
            Err(ApiError::Refused { status: StatusCode::GONE, .. }) if continue_token.is_some() && !restarted => {
                restarted = true;
                continue_token = None;
                continue;
            }
            Err(err) => return Err(request_error(client, &path, &permission, err)),
        };
        if let Some(found) = page.kind.as_deref().filter(|k| *k != kind.list_kind()) {
            let err = ApiError::Failed(format!("the response is a {found:?}, not a {}", kind.list_kind()));
            return Err(request_error(client, &path, &permission, err));
        }
        for object in page.items.iter().flatten() {
            let meta = object.metadata.as_ref();
            let name = meta.and_then(|m| m.name.as_deref()).unwrap_or("?");
            let object_namespace = meta.and_then(|m| m.namespace.as_deref()).or(namespace).unwrap_or("?");
            if let Some(spec) = kind.pod_spec(object) {
                seen.add(&format!("{object_namespace}/{}/{name}", kind.name()), object_namespace, spec);
            }
        }
        let next = page.metadata.and_then(|m| m.continue_token).filter(|t| !t.is_empty());
        match next {
            None => return Ok(()),
            Some(token) if continue_token.as_ref() == Some(&token) => {
                let err = ApiError::Failed("the API server sent the same continue token twice".into());
                return Err(request_error(client, &path, &permission, err));
            }
            Some(token) => continue_token = Some(token),
        }
    }
}

/// What a request needs in RBAC, named when it is refused.
struct Permission<'a> {
    verb: &'static str,
    kind: Kind,
    namespace: Option<&'a str>,
}

impl fmt::Display for Permission<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = match self.kind.group() {
            "" => "the core API group".to_string(),
            g => format!("API group {g:?}"),
        };
        write!(f, "`{}` on `{}` ({group}) ", self.verb, self.kind.resource())?;
        match self.namespace {
            Some(ns) => write!(f, "in namespace {ns}"),
            None => f.write_str("in every namespace (a ClusterRole)"),
        }
    }
}

/// A failed listing as `discovery_failed`: the request, the status, the API's message,
/// and for `401`/`403` what to fix.
fn request_error(client: &ApiClient, path: &str, permission: &Permission<'_>, err: ApiError) -> ProbeError {
    let what = format!("GET {path} on {}", client.server());
    let hint = match &err {
        ApiError::Refused { status: StatusCode::FORBIDDEN, .. } => {
            format!(" — the service account lacks the RBAC permission {permission}")
        }
        ApiError::Refused { status: StatusCode::UNAUTHORIZED, .. } => match client.token_file() {
            Some(file) => format!(" — the API server did not accept the token of {}", file.display()),
            None => " — no token is configured (`token_file:`)".to_string(),
        },
        ApiError::Refused { status: StatusCode::NOT_FOUND, .. } => {
            format!(" — the API server does not serve {}", permission.kind.resource())
        }
        ApiError::TooLarge { limit } => format!(
            " — one {} is larger than the {limit}-byte cap on a response (limits.max_manifest_bytes)",
            permission.kind.name()
        ),
        _ => String::new(),
    };
    let err = match err {
        ApiError::TooLarge { .. } => String::new(),
        other => format!(": {other}"),
    };
    discovery_error(format!("{what}{err}{hint}"))
}

/// The distinct images seen so far, bounded by `max_images`, and what could not be used.
struct Seen<'a> {
    rule: &'a KubernetesDiscovery,
    images: BTreeMap<String, Entry>,
    /// Distinct references left out over `max_images` (counted up to a bound).
    overflow: BTreeSet<String>,
    overflow_capped: bool,
    /// `(where, why)` of references that do not parse, a few; the rest counted.
    unparsed: Vec<String>,
    unparsed_more: usize,
    /// Images of other registries than the probe's `registry:`.
    other_registry: BTreeSet<String>,
}

struct Entry {
    image: ImageReference,
    used_by: Vec<String>,
    /// `(namespace, pull secret names)` of the workloads using it, in the order seen.
    secret_sets: Vec<(String, Vec<String>)>,
}

impl<'a> Seen<'a> {
    fn new(rule: &'a KubernetesDiscovery) -> Self {
        Seen {
            rule,
            images: BTreeMap::new(),
            overflow: BTreeSet::new(),
            overflow_capped: false,
            unparsed: Vec::new(),
            unparsed_more: 0,
            other_registry: BTreeSet::new(),
        }
    }

    fn add(&mut self, workload: &str, namespace: &str, spec: &Spec) {
        let mut secrets = spec.pull_secrets();
        secrets.truncate(MAX_SECRETS_PER_POD);
        for (container, raw) in spec.images() {
            let image = match ImageReference::parse(raw) {
                Ok(image) => image,
                Err(e) => {
                    self.unparsable(format!("{workload} container {container:?}: {e}"));
                    continue;
                }
            };
            if let Some(host) = &self.rule.registry_host
                && !image.registry.eq_ignore_ascii_case(host)
            {
                if self.other_registry.len() < MAX_OVERFLOW_COUNTED {
                    self.other_registry.insert(image.registry.clone());
                }
                continue;
            }
            self.insert(image, workload, namespace, &secrets);
        }
    }

    fn insert(&mut self, image: ImageReference, workload: &str, namespace: &str, secrets: &[String]) {
        let key = image.to_string();
        if !self.images.contains_key(&key) {
            if self.images.len() >= self.rule.max_images {
                // Keep the first `max_images` references in order, whatever order they come in.
                let Some(last) = self.images.keys().next_back().cloned() else { return };
                if key > last {
                    self.count_overflow(key);
                    return;
                }
                self.images.remove(&last);
                self.count_overflow(last);
            }
            self.images.insert(key.clone(), Entry { image, used_by: Vec::new(), secret_sets: Vec::new() });
        }
        let Some(entry) = self.images.get_mut(&key) else { return };
        if entry.used_by.len() < MAX_USED_BY && !entry.used_by.iter().any(|u| u == workload) {
            entry.used_by.push(workload.to_string());
        }
        if !secrets.is_empty()
            && entry.secret_sets.len() < MAX_SECRET_SETS
            && !entry.secret_sets.iter().any(|(ns, names)| ns == namespace && names == secrets)
        {
            entry.secret_sets.push((namespace.to_string(), secrets.to_vec()));
        }
    }

    fn count_overflow(&mut self, key: String) {
        if self.overflow.len() < MAX_OVERFLOW_COUNTED {
            self.overflow.insert(key);
        } else {
            self.overflow_capped = true;
        }
    }

    fn unparsable(&mut self, warning: String) {
        if self.unparsed.len() < MAX_REFERENCE_WARNINGS {
            if !self.unparsed.contains(&warning) {
                self.unparsed.push(warning);
            }
        } else {
            self.unparsed_more += 1;
        }
    }

    fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> =
            self.unparsed.iter().map(|w| format!("{w}: not probed (a reference Docker cannot pull)")).collect();
        if self.unparsed_more > 0 {
            warnings.push(format!("{} more container images do not parse as references", self.unparsed_more));
        }
        if !self.overflow.is_empty() {
            let more = if self.overflow_capped { "more than " } else { "" };
            let first = self.overflow.iter().next().map(String::as_str).unwrap_or_default();
            warnings.push(format!(
                "{more}{} more distinct images are not probed: over `max_images` ({}), which keeps the first in \
                 order of reference (the next is {first})",
                self.overflow.len(),
                self.rule.max_images
            ));
        }
        warnings
    }
}

/// The decoded payload of an image pull Secret and its format.
type Payload = (Vec<u8>, PullSecretFormat);

/// Reads image pull Secrets once each, and finds the credentials for an image.
struct SecretReader<'a> {
    client: &'a ApiClient,
    /// `(namespace, name)` → the payload, or `None` when it cannot be used (warned once).
    read: HashMap<(String, String), Option<Payload>>,
    warnings: Vec<String>,
    over_limit: bool,
}

impl<'a> SecretReader<'a> {
    fn new(client: &'a ApiClient) -> Self {
        SecretReader { client, read: HashMap::new(), warnings: Vec::new(), over_limit: false }
    }

    /// The credentials the kubelet would use for `image` in the first workload whose
    /// pull secrets have some; `None`: anonymous.
    async fn credentials_for(&mut self, image: &ImageReference, sets: &[(String, Vec<String>)]) -> Option<Credentials> {
        for (namespace, names) in sets {
            let mut keyring = PullSecretKeyring::default();
            for name in names {
                let Some((payload, format)) = self.payload(namespace, name).await else { continue };
                let source = format!("imagePullSecret {namespace}/{name}");
                if let Err(e) = keyring.add(&payload, format, &source) {
                    self.warnings.push(format!("{}: ignored", e.message));
                    self.read.insert((namespace.clone(), name.clone()), None);
                }
            }
            if let Some(credentials) = keyring.lookup(&image.registry, &image.repository) {
                return Some(credentials.clone());
            }
        }
        None
    }

    async fn payload(&mut self, namespace: &str, name: &str) -> Option<Payload> {
        let key = (namespace.to_string(), name.to_string());
        if let Some(known) = self.read.get(&key) {
            return known.clone();
        }
        if self.read.len() >= MAX_SECRETS {
            if !self.over_limit {
                self.over_limit = true;
                self.warnings.push(format!(
                    "more than {MAX_SECRETS} distinct image pull secrets: the rest are not read, their images are \
                     pulled anonymously"
                ));
            }
            return None;
        }
        let outcome = match self.fetch(namespace, name).await {
            Ok(payload) => Some(payload),
            Err(why) => {
                self.warnings.push(format!(
                    "imagePullSecret {namespace}/{name}: {why}; images that need it are pulled anonymously"
                ));
                None
            }
        };
        self.read.insert(key, outcome.clone());
        outcome
    }

    async fn fetch(&self, namespace: &str, name: &str) -> Result<Payload, String> {
        let valid_name = !name.is_empty()
            && name.len() <= 253
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'));
        if !valid_name {
            return Err("not a Secret name".into());
        }
        let path = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
        let secret: Secret = self.client.get_limited(&path, &[], MAX_SECRET_BYTES).await.map_err(|err| match err {
            ApiError::Refused { status: StatusCode::NOT_FOUND, .. } => "there is no such Secret".to_string(),
            ApiError::Refused { status: StatusCode::FORBIDDEN, message } => format!(
                "GET {path}: HTTP 403 — the service account lacks the RBAC permission `get` on `secrets` (the core \
                 API group) in namespace {namespace}{}",
                message.map(|m| format!(" ({m})")).unwrap_or_default()
            ),
            other => format!("GET {path}: {other}"),
        })?;
        let secret_type = secret.secret_type.unwrap_or_default();
        let data = secret.data.unwrap_or_default();
        let (encoded, format) = match secret_type.as_str() {
            "kubernetes.io/dockerconfigjson" => (data.docker_config_json, PullSecretFormat::DockerConfigJson),
            "kubernetes.io/dockercfg" => (data.docker_cfg, PullSecretFormat::DockerCfg),
            other => {
                return Err(format!(
                    "of type {other:?}, not kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg"
                ));
            }
        };
        let key = match format {
            PullSecretFormat::DockerConfigJson => ".dockerconfigjson",
            PullSecretFormat::DockerCfg => ".dockercfg",
        };
        let encoded = encoded.filter(|e| !e.is_empty()).ok_or_else(|| format!("{secret_type} without `{key}`"))?;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| format!("`{key}` is not base64"))?;
        Ok((payload, format))
    }
}
