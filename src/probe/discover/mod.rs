//! Discovery: the probes that find their images instead of naming one.
//! `image:` with `tags:` pulls the newest matching tags of a repository,
//! `catalog:` a rotating sample of the registry's repositories, and
//! `kubernetes:` the images a cluster's workloads use. Each yields a bounded
//! set of [`Target`]s, each then pulled and verified like a listed image,
//! under the rule's name as the `probe` label. What a rule learns about an
//! image besides its name (the workloads using it, warnings) travels on its
//! target to the results of its pull.
//!
//! Listing goes through the registry's own URL (not each frontend: which images
//! exist is the registry's answer; whether each frontend serves them is the pull's).
//! A listing that fails is a `discovery_failed` result of the probe, so it pages
//! like a failed pull.

pub mod catalog;
pub mod kubernetes;
pub mod order;
pub mod tags;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use url::Url;

use crate::config::{CatalogDiscovery, Config, KubernetesDiscovery, ProbeConfig, RegistryConfig, TagRule};
use crate::probe::connection::{self, ConnectionOverrides};
use crate::reason::{Phase, ProbeError, Reason};
use crate::reference::ImageReference;
use crate::registry::credentials::Credentials;
use crate::registry::transport::Transport;
use crate::result::ProbeResult;
use crate::result::{Kind, now_utc_millis};

/// One image a rule selected for this run.
#[derive(Debug, Clone)]
pub struct Target {
    pub image: ImageReference,
    /// The configured registry (by name) whose TLS settings and frontends apply.
    pub registry: Option<String>,
    /// Credentials that override the registry's (a workload's pull secret).
    pub credentials: Option<Credentials>,
    /// The workloads that use it (`kubernetes:`), for each of its results.
    pub used_by: Vec<String>,
    /// Worth knowing, not failures (a workload image that does not parse, a pull
    /// secret that cannot be read): the rule's warnings ride on its first target,
    /// so they reach the first result of the probe.
    pub warnings: Vec<String>,
}

impl Target {
    fn new(image: ImageReference, registry: Option<String>) -> Target {
        Target { image, registry, credentials: None, used_by: Vec::new(), warnings: Vec::new() }
    }
}

/// What a rule stands for now, beyond the images it pulls this run.
#[derive(Debug, Clone)]
pub struct Coverage {
    /// Every image the rule stands for now, probed this run or not (the catalog
    /// probes a sample of these per run): their series and alerts outlive a run
    /// that did not probe them.
    pub candidates: Vec<String>,
    /// Runs needed to probe every candidate once (1 unless sampled).
    pub rounds_to_cover: u64,
}

/// What one expansion of a rule found.
#[derive(Debug, Clone)]
pub struct Found {
    /// The images pulled this run.
    pub targets: Vec<Target>,
    pub coverage: Coverage,
    /// Set when the discovery failed: the result that pages.
    pub failure: Option<ProbeResult>,
}

impl Found {
    /// Every target is pulled this run; the rule's `warnings` go with the first.
    fn of(mut targets: Vec<Target>, warnings: Vec<String>) -> Found {
        let candidates = targets.iter().map(|t| t.image.to_string()).collect();
        with_rule_warnings(&mut targets, warnings);
        Found { targets, coverage: Coverage { candidates, rounds_to_cover: 1 }, failure: None }
    }

    fn failed(failure: ProbeResult) -> Found {
        Found {
            targets: Vec::new(),
            coverage: Coverage { candidates: Vec::new(), rounds_to_cover: 1 },
            failure: Some(failure),
        }
    }
}

/// A rule's warnings ride on its first target (with no target, nothing reports them).
fn with_rule_warnings(targets: &mut [Target], warnings: Vec<String>) {
    if let Some(first) = targets.first_mut() {
        first.warnings.extend(warnings);
    }
}

/// A rule that cannot be expanded as written (a listing that fails is a
/// result, not this): the probe cannot be planned.
#[derive(Debug, Clone, thiserror::Error)]
#[error("probe {probe:?}: {message}")]
pub struct RuleError {
    pub probe: String,
    pub message: String,
}

impl RuleError {
    fn new(probe: &ProbeConfig, message: impl Into<String>) -> RuleError {
        RuleError { probe: probe.name.clone(), message: message.into() }
    }
}

/// The series a failed discovery reports on: `image` is what was being listed
/// (the repository, the registry's catalog, the cluster), `frontend` where.
struct Listing<'a> {
    config: &'a Config,
    probe: &'a ProbeConfig,
    image: String,
    registry: String,
    frontend: String,
    started: Instant,
    started_at: time::OffsetDateTime,
}

impl<'a> Listing<'a> {
    fn new(config: &'a Config, probe: &'a ProbeConfig, image: String, registry: String, frontend: String) -> Self {
        Listing { config, probe, image, registry, frontend, started: Instant::now(), started_at: now_utc_millis() }
    }

    fn failure(&self, err: ProbeError) -> ProbeResult {
        let err = if err.reason == Reason::DiscoveryFailed || err.reason == Reason::Timeout {
            err
        } else {
            // Whatever stopped the listing (a TLS error, a refused token), the probe could
            // not learn what to pull: that is the reason; the cause stays in the message.
            ProbeError { reason: Reason::DiscoveryFailed, ..err }
        };
        ProbeResult {
            probe: self.probe.name.clone(),
            kind: Kind::Pull,
            image: self.image.clone(),
            registry: self.registry.clone(),
            frontend: self.frontend.clone(),
            location: self.config.defaults.location.clone(),
            platform: "unknown".into(),
            ok: false,
            reason: Some(err.reason),
            phase: Some(Phase::Discovery),
            error: Some(crate::redact::redact_text(&err.message)),
            registry_error: err.registry_error,
            retries: 0,
            manifest_digest: None,
            started_at: self.started_at,
            duration_seconds: self.started.elapsed().as_secs_f64(),
            phases: BTreeMap::new(),
            tls_not_after: None,
            layers: Vec::new(),
            ratelimit_remaining: None,
            used_by: Vec::new(),
            mirror_position: None,
            referrers: None,
            warnings: Vec::new(),
        }
    }
}

/// A client for listing a registry through its own URL, with its TLS settings
/// and credentials, and the time a listing may take (the probe's timeout).
fn lister(
    config: &Config,
    probe: &ProbeConfig,
    registry: Option<&RegistryConfig>,
    image: &ImageReference,
    overrides: &ConnectionOverrides,
) -> Result<(Transport, Url, Duration), ProbeError> {
    let mut options = connection::transport_for(config, registry, overrides);
    options.auth = Some(connection::auth_for(config.limits.max_manifest_bytes, registry, image));
    let timeout = connection::capped(config.timeout_for(probe), overrides.timeout);
    options.response_timeout = Some(crate::registry::transport::response_deadline(timeout));
    let base = match registry {
        Some(registry) => connection::registry_url(registry, overrides),
        None => {
            crate::frontend::default_frontend(image, overrides.plain_http)
                .map_err(|e| ProbeError::new(Reason::DiscoveryFailed, e))?
                .url
        }
    };
    Ok((Transport::new(&options)?, base, timeout))
}

async fn within<T>(
    timeout: Duration,
    what: &str,
    work: impl Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ProbeError::new(Reason::Timeout, format!("{what} did not finish within {timeout:?}"))),
    }
}

/// `image: REPO` with `tags: {match, newest}`: the newest matching tags.
pub async fn tags(
    config: &Config,
    probe: &ProbeConfig,
    repository: &ImageReference,
    registry: Option<&RegistryConfig>,
    rule: &TagRule,
    overrides: &ConnectionOverrides,
) -> Result<Found, RuleError> {
    let registry_label = registry.map(|r| r.name.clone()).unwrap_or_else(|| repository.registry.clone());
    let listing = Listing::new(config, probe, repository.to_string(), registry_label, repository.registry.clone());
    let listed = async {
        let (transport, base, timeout) = lister(config, probe, registry, repository, overrides)?;
        let what = format!("listing the tags of {repository}");
        within(
            timeout,
            &what,
            tags::newest_tags(&transport, &base, &repository.repository, rule, config.limits.max_manifest_bytes),
        )
        .await
    };
    let tags = match listed.await {
        Ok(tags) => tags,
        Err(err) => return Ok(Found::failed(listing.failure(err.context(format!("tags of {repository}"))))),
    };
    if tags.is_empty() {
        let err = ProbeError::new(
            Reason::DiscoveryFailed,
            format!("no tag of {repository} matches `{}`: nothing to probe", rule.pattern.as_str()),
        );
        return Ok(Found::failed(listing.failure(err)));
    }
    let mut targets = Vec::new();
    for tag in tags {
        let image = repository.with_tag(&tag).map_err(|e| RuleError::new(probe, format!("tag {tag:?}: {e}")))?;
        targets.push(Target::new(image, registry.map(|r| r.name.clone())));
    }
    Ok(Found::of(targets, Vec::new()))
}

/// `catalog: {match, sample, tag}`: this run's share of the matching repositories.
pub async fn catalog(
    config: &Config,
    probe: &ProbeConfig,
    rule: &CatalogDiscovery,
    overrides: &ConnectionOverrides,
    slot: u64,
) -> Result<Found, RuleError> {
    let registry = probe
        .registry
        .as_deref()
        .and_then(|name| config.registry(name))
        .ok_or_else(|| RuleError::new(probe, "a catalog needs the `registry:` it lists"))?;
    let host = registry.host();
    // The registry itself, no repository: whose credentials and TLS settings list it.
    let catalog_image = ImageReference { registry: host.clone(), repository: String::new(), tag: None, digest: None };
    let listing = Listing::new(config, probe, format!("{host}/_catalog"), registry.name.clone(), host.clone());
    let listed = async {
        let (transport, base, timeout) = lister(config, probe, Some(registry), &catalog_image, overrides)?;
        let what = format!("listing the catalog of {host}");
        within(timeout, &what, catalog::repositories(&transport, &base, rule.pattern.as_ref())).await
    };
    let repositories = match listed.await {
        Ok(repositories) => repositories,
        Err(err) => return Ok(Found::failed(listing.failure(err.context(format!("catalog of {host}"))))),
    };
    if repositories.is_empty() {
        let pattern = rule.pattern.as_ref().map(|p| format!(" matching `{}`", p.as_str())).unwrap_or_default();
        let err = ProbeError::new(Reason::DiscoveryFailed, format!("the catalog of {host} has no repository{pattern}"));
        return Ok(Found::failed(listing.failure(err)));
    }
    let reference = |repository: &str| {
        ImageReference::parse(&format!("{host}/{repository}:{}", rule.tag))
            .map_err(|e| format!("probe {:?}: repository {repository:?}: {e}", probe.name))
    };
    let mut candidates = Vec::new();
    let mut warnings = Vec::new();
    for repository in &repositories {
        match reference(repository) {
            Ok(image) => candidates.push(image.to_string()),
            Err(e) => warnings.push(e),
        }
    }
    let mut targets: Vec<Target> = catalog::rotating_sample(&repositories, rule.sample, slot)
        .iter()
        .filter_map(|repository| reference(repository).ok())
        .map(|image| Target::new(image, Some(registry.name.clone())))
        .collect();
    with_rule_warnings(&mut targets, warnings);
    let coverage = Coverage { candidates, rounds_to_cover: catalog::rounds_to_cover(repositories.len(), rule.sample) };
    Ok(Found { targets, coverage, failure: None })
}

/// `kubernetes: {namespaces, label_selector}`: the distinct images of the workloads
/// (with `registry:`, only that registry's: the rule carries its host).
pub async fn kubernetes(
    config: &Config,
    probe: &ProbeConfig,
    rule: &KubernetesDiscovery,
    overrides: &ConnectionOverrides,
) -> Result<Found, RuleError> {
    let listing = Listing::new(config, probe, "kubernetes".into(), "kubernetes".into(), "api-server".into());
    let timeout = connection::capped(config.timeout_for(probe), overrides.timeout);
    let found = match kubernetes::workloads(rule, config.limits.max_manifest_bytes, timeout).await {
        Ok(found) => found,
        Err(err) => return Ok(Found::failed(listing.failure(err))),
    };
    if found.images.is_empty() {
        // A rule that probes nothing must not look like a healthy one.
        let mut message = String::from("no workload image found to probe");
        for warning in &found.warnings {
            message.push_str("; ");
            message.push_str(warning);
        }
        return Ok(Found::failed(listing.failure(ProbeError::new(Reason::DiscoveryFailed, message))));
    }
    let targets = found
        .images
        .into_iter()
        .map(|workload| Target {
            registry: config.registry_for(&workload.image).map(|r| r.name.clone()),
            image: workload.image,
            credentials: workload.credentials,
            used_by: workload.used_by,
            warnings: Vec::new(),
        })
        .collect();
    Ok(Found::of(targets, found.warnings))
}
