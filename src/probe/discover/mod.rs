//! Discovery: the probes that find their images instead of naming one.
//! `image:` with `tags:` pulls the newest matching tags of a repository,
//! `catalog:` a rotating sample of the registry's repositories, and
//! `kubernetes:` the images a cluster's workloads use. Each yields a bounded
//! set of image references, each then pulled and verified like a listed one,
//! under the rule's name as the `probe` label.
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
use crate::probe::plan::{self, Overrides};
use crate::probe::pull::now_rfc3339;
use crate::reason::{Phase, ProbeError, Reason};
use crate::reference::ImageReference;
use crate::registry::auth::Credentials;
use crate::registry::transport::Transport;
use crate::result::ProbeResult;

/// One image a rule selected for this run.
#[derive(Debug, Clone)]
pub struct Target {
    pub image: ImageReference,
    /// The configured registry (by name) whose TLS settings and frontends apply.
    pub registry: Option<String>,
    /// Credentials that override the registry's (a workload's pull secret).
    pub credentials: Option<Credentials>,
    /// The workloads that use it (`kubernetes:`), for the results.
    pub used_by: Vec<String>,
}

/// What one expansion of a rule found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// The images pulled this run.
    pub targets: Vec<Target>,
    /// Every image the rule stands for now, probed this run or not (the catalog
    /// probes a sample of these per run): their series and alerts outlive a run
    /// that did not probe them.
    pub candidates: Vec<String>,
    /// Runs needed to probe every candidate once (1 unless sampled).
    pub rounds_to_cover: u64,
    /// Set when the discovery failed: the result that pages.
    pub failure: Option<ProbeResult>,
    /// Worth knowing, not failures (a workload image that does not parse, a pull
    /// secret that cannot be read); added to the first result of the run.
    pub warnings: Vec<String>,
}

impl Found {
    fn of(targets: Vec<Target>) -> Found {
        let candidates = targets.iter().map(|t| t.image.to_string()).collect();
        Found { targets, candidates, rounds_to_cover: 1, failure: None, warnings: Vec::new() }
    }

    fn failed(failure: ProbeResult) -> Found {
        Found { failure: Some(failure), rounds_to_cover: 1, ..Found::default() }
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
    started_at: String,
}

impl<'a> Listing<'a> {
    fn new(config: &'a Config, probe: &'a ProbeConfig, image: String, registry: String, frontend: String) -> Self {
        Listing { config, probe, image, registry, frontend, started: Instant::now(), started_at: now_rfc3339() }
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
            kind: "pull".into(),
            image: self.image.clone(),
            registry: self.registry.clone(),
            frontend: self.frontend.clone(),
            location: self.config.defaults.location.clone(),
            platform: "unknown".into(),
            ok: false,
            reason: Some(err.reason),
            phase: Some(Phase::Discovery),
            error: Some(err.message),
            registry_error: err.registry_error,
            retries: 0,
            manifest_digest: None,
            started_at: self.started_at.clone(),
            duration_seconds: self.started.elapsed().as_secs_f64(),
            phases: BTreeMap::new(),
            tls_not_after: None,
            layers: Vec::new(),
            ratelimit_remaining: None,
            used_by: Vec::new(),
            mirror_position: None,
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
    overrides: &Overrides,
) -> Result<(Transport, Url, Duration), ProbeError> {
    let mut options = plan::transport_for(config, registry, overrides);
    options.auth = Some(plan::auth_for(config.limits.max_manifest_bytes, registry, image));
    let timeout = plan::capped(config.timeout_for(probe), overrides.timeout);
    options.response_timeout = Some(crate::registry::transport::response_deadline(timeout));
    let base = match registry {
        Some(registry) => {
            let mut url = registry.url.clone();
            if overrides.plain_http {
                let _ = url.set_scheme("http");
            }
            url
        }
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
    overrides: &Overrides,
) -> Result<Found, String> {
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
        let image = repository.with_tag(&tag).map_err(|e| format!("probe {:?}: tag {tag:?}: {e}", probe.name))?;
        targets.push(Target {
            image,
            registry: registry.map(|r| r.name.clone()),
            credentials: None,
            used_by: Vec::new(),
        });
    }
    Ok(Found::of(targets))
}

/// `catalog: {match, sample, tag}`: this run's share of the matching repositories.
pub async fn catalog(
    config: &Config,
    probe: &ProbeConfig,
    rule: &CatalogDiscovery,
    overrides: &Overrides,
    slot: u64,
) -> Result<Found, String> {
    let registry = probe
        .registry
        .as_deref()
        .and_then(|name| config.registry(name))
        .ok_or_else(|| format!("probe {:?}: a catalog needs the `registry:` it lists", probe.name))?;
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
    let mut found =
        Found { rounds_to_cover: catalog::rounds_to_cover(repositories.len(), rule.sample), ..Found::default() };
    for repository in &repositories {
        match reference(repository) {
            Ok(image) => found.candidates.push(image.to_string()),
            Err(e) => found.warnings.push(e),
        }
    }
    for repository in catalog::rotating_sample(&repositories, rule.sample, slot) {
        if let Ok(image) = reference(&repository) {
            found.targets.push(Target {
                image,
                registry: Some(registry.name.clone()),
                credentials: None,
                used_by: Vec::new(),
            });
        }
    }
    Ok(found)
}

/// `kubernetes: {namespaces, label_selector}`: the distinct images of the workloads
/// (with `registry:`, only that registry's: the rule carries its host).
pub async fn kubernetes(
    config: &Config,
    probe: &ProbeConfig,
    rule: &KubernetesDiscovery,
    overrides: &Overrides,
) -> Result<Found, String> {
    let listing = Listing::new(config, probe, "kubernetes".into(), "kubernetes".into(), "api-server".into());
    let timeout = plan::capped(config.timeout_for(probe), overrides.timeout);
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
        })
        .collect();
    Ok(Found { warnings: found.warnings, ..Found::of(targets) })
}

/// What discovery knows that the pulls do not: each rule's warnings go on the
/// first result of its probe, the workloads using an image on each of its results.
pub fn annotate(results: &mut [ProbeResult], discovered: &[(String, Found)]) {
    for (probe, found) in discovered {
        if !found.warnings.is_empty()
            && let Some(first) = results.iter_mut().find(|r| &r.probe == probe)
        {
            first.warnings.extend(found.warnings.iter().cloned());
        }
        for target in found.targets.iter().filter(|t| !t.used_by.is_empty()) {
            let image = target.image.to_string();
            for result in results.iter_mut().filter(|r| &r.probe == probe && r.image == image) {
                result.used_by = target.used_by.clone();
            }
        }
    }
}
