//! From configuration to pull jobs: which image, which frontends, which TLS
//! settings and limits, for a configured probe or an ad-hoc reference. `now`
//! and `serve` both plan through here, so a probe means the same in both.

use std::time::Duration;

use crate::config::{Auth, Config, Expectations, ProbeConfig, ProbeKind, RegistryConfig};
use crate::frontend::{self, Frontend};
use crate::platform::PlatformSelection;
use crate::probe::canary::CanaryJob;
use crate::probe::discover;
use crate::probe::expect;
use crate::probe::pull::{PullLimits, PullTarget};
use crate::probe::run::PullJob;
use crate::reference::ImageReference;
use crate::registry::auth::AuthOptions;
use crate::registry::transport::{TransportOptions, proxy_for};
use crate::result::ProbeResult;

/// What the command line (or a `/probe` request) overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub plain_http: bool,
    pub insecure: bool,
    pub platforms: Option<PlatformSelection>,
    /// Frontends given as addresses or URLs: exactly these are probed.
    pub frontends: Vec<String>,
    /// A shorter deadline than the configured one (a scrape timeout).
    pub timeout: Option<Duration>,
    /// `--expect-path`: paths that must exist, added to every probe's `expect:`.
    pub expect_paths: Vec<String>,
}

/// The caps of `limits:` that bound one pull.
pub fn pull_limits(config: &Config) -> PullLimits {
    PullLimits {
        max_manifest_bytes: config.limits.max_manifest_bytes,
        max_pull_bytes: config.limits.max_pull_bytes,
        max_uncompressed_bytes: config.limits.max_uncompressed_bytes,
        max_uncompressed_ratio: config.limits.max_uncompressed_ratio,
    }
}

/// Layers verified at once per pull: one per core keeps inflate busy without
/// oversubscribing a small pod; at least two so the network overlaps the CPU.
pub fn layer_concurrency() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8)
}

/// TLS and HTTP settings for a registry (or for an ad-hoc reference).
pub fn transport_for(config: &Config, registry: Option<&RegistryConfig>, overrides: &Overrides) -> TransportOptions {
    let mut transport = TransportOptions {
        insecure: overrides.insecure,
        max_redirects: config.limits.max_redirects as usize,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(30)),
        ..TransportOptions::default()
    };
    if let Some(tls) = registry.and_then(|r| r.tls.as_ref()) {
        transport.ca_file = tls.ca_file.clone();
        transport.client_cert = tls.client_cert.clone();
        transport.client_key = tls.client_key.clone();
    }
    transport
}

/// Who requests to `image`'s registry authenticate as: the configured registry's
/// `auth:` (none: anonymous); for a reference without a configured registry, the
/// Docker config (`$DOCKER_CONFIG/config.json`), as the Docker CLI does.
/// `max_body_bytes` caps token and error bodies (`limits.max_manifest_bytes`).
pub fn auth_for(max_body_bytes: u64, registry: Option<&RegistryConfig>, image: &ImageReference) -> AuthOptions {
    let source = match registry {
        Some(registry) => registry.auth.clone(),
        None => Some(Auth::DockerConfig(None)),
    };
    let host = registry.map(|r| r.host()).unwrap_or_else(|| image.registry.clone());
    AuthOptions::new(source, host, max_body_bytes).for_image(image)
}

/// `base` with a registry's TLS settings and credentials ([`auth_for`]) applied.
pub fn for_registry(
    base: &TransportOptions,
    max_body_bytes: u64,
    registry: Option<&RegistryConfig>,
    image: &ImageReference,
) -> TransportOptions {
    let mut transport = base.clone();
    if let Some(tls) = registry.and_then(|r| r.tls.as_ref()) {
        transport.ca_file = tls.ca_file.clone();
        transport.client_cert = tls.client_cert.clone();
        transport.client_key = tls.client_key.clone();
    }
    transport.auth = Some(auth_for(max_body_bytes, registry, image));
    transport
}

/// An address-pinned frontend cannot be honoured through a proxy (the proxy
/// connects by name): refuse it rather than probe some other address unpinned.
pub fn check_pinned_without_proxy(frontends: &[Frontend]) -> Result<(), String> {
    for frontend in frontends.iter().filter(|f| f.pin.is_some()) {
        if let Some(proxy) = proxy_for(&frontend.url) {
            return Err(format!(
                "frontend {}: an address-pinned frontend cannot be probed through the proxy {proxy} \
                 (from HTTPS_PROXY/HTTP_PROXY/ALL_PROXY): the proxy connects by name, not to the pinned address. \
                 Add {} to NO_PROXY, or probe the registry by name (no address frontends)",
                frontend.label,
                frontend.url.host_str().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

async fn frontends(
    registry: Option<&RegistryConfig>,
    image: &ImageReference,
    overrides: &Overrides,
) -> Result<Vec<Frontend>, String> {
    let frontends = if overrides.frontends.is_empty() {
        frontend::configured_frontends(registry, image, overrides.plain_http).await?
    } else {
        overrides
            .frontends
            .iter()
            .map(|f| frontend::parse_frontend_arg(f, image, overrides.plain_http))
            .collect::<Result<Vec<_>, _>>()?
    };
    check_pinned_without_proxy(&frontends)?;
    Ok(frontends)
}

/// The job of a configured `image:` probe without `tags:`. Frontends are resolved
/// now (`dns` frontends are re-resolved every time a job is planned).
pub async fn job_for_probe(config: &Config, probe: &ProbeConfig, overrides: &Overrides) -> Result<PullJob, String> {
    if !matches!(probe.kind, ProbeKind::Image { tags: None, .. }) {
        return Err(format!("probe {:?}: only an `image:` probe without `tags:` is one pull", probe.name));
    }
    let (image, registry) = config.resolve_image(probe).map_err(|e| e.to_string())?;
    pull_job(config, probe, image, registry, None, overrides).await
}

/// One pull of `image` for `probe` (a listed or a discovered image), with the
/// registry's TLS settings and frontends, and its credentials unless `credentials`
/// (a workload's pull secret) says otherwise.
async fn pull_job(
    config: &Config,
    probe: &ProbeConfig,
    image: ImageReference,
    registry: Option<&RegistryConfig>,
    credentials: Option<AuthOptions>,
    overrides: &Overrides,
) -> Result<PullJob, String> {
    let target = PullTarget {
        probe: probe.name.clone(),
        registry: registry.map(|r| r.name.clone()).unwrap_or_else(|| image.registry.clone()),
        image: image.clone(),
        location: config.defaults.location.clone(),
        platforms: overrides.platforms.clone().unwrap_or_else(|| config.platforms_for(probe)),
        timeout: capped(config.timeout_for(probe), overrides.timeout),
        limits: pull_limits(config),
        layer_concurrency: layer_concurrency(),
        expect: expect::with_paths(&probe.expect, &overrides.expect_paths)?,
    };
    let mut transport = transport_for(config, registry, overrides);
    transport.auth = Some(credentials.unwrap_or_else(|| auth_for(config.limits.max_manifest_bytes, registry, &image)));
    let frontends = frontends(registry, &image, overrides).await?;
    Ok(PullJob { target, frontends, transport })
}

/// What one run of a probe pulls. A discovery rule (`tags:`, `catalog:`,
/// `kubernetes:`) is expanded here, once per run; when the discovery itself
/// fails, the run has a `discovery_failed` result instead of jobs, so it pages.
#[derive(Debug, Default)]
pub struct ProbePlan {
    pub jobs: Vec<PullJob>,
    /// Results of what failed before any pull (the discovery).
    pub failed: Vec<ProbeResult>,
    /// For a discovery rule: what it found this run.
    pub discovery: Option<discover::Found>,
}

/// Plan one run of a pull probe: `image:` (with or without `tags:`), `catalog:`
/// or `kubernetes:`. `slot` numbers the run for the catalog's rotating sample
/// (consecutive runs, consecutive slots). A canary is not planned here
/// ([`canary_job_for_probe`]). `Err` is a planning error (the config cannot be
/// probed as written); a registry or API server that fails to answer is a result.
pub async fn plan_probe(
    config: &Config,
    probe: &ProbeConfig,
    overrides: &Overrides,
    slot: u64,
) -> Result<ProbePlan, String> {
    let found = match &probe.kind {
        ProbeKind::Image { tags: None, .. } => {
            return Ok(ProbePlan {
                jobs: vec![job_for_probe(config, probe, overrides).await?],
                ..ProbePlan::default()
            });
        }
        ProbeKind::Canary(_) => return Err(format!("probe {:?}: a canary is not a pull probe", probe.name)),
        ProbeKind::Image { tags: Some(rule), .. } => {
            let (repository, registry) = config.resolve_image(probe).map_err(|e| e.to_string())?;
            discover::tags(config, probe, &repository, registry, rule, overrides).await?
        }
        ProbeKind::Catalog(rule) => discover::catalog(config, probe, rule, overrides, slot).await?,
        ProbeKind::Kubernetes(rule) => discover::kubernetes(config, probe, rule, overrides).await?,
    };
    let mut plan = ProbePlan::default();
    plan.failed.extend(found.failure.clone());
    for target in found.targets.clone() {
        let registry = target.registry.as_deref().and_then(|name| config.registry(name));
        let credentials = target
            .credentials
            .map(|c| AuthOptions::with_credentials(c, target.image.registry.clone(), config.limits.max_manifest_bytes));
        plan.jobs.push(pull_job(config, probe, target.image, registry, credentials, overrides).await?);
    }
    plan.discovery = Some(found);
    Ok(plan)
}

/// The job of a `canary:` probe: push through the registry's URL (scheme forced
/// to http by `plain_http`), read back through its frontends (or the overrides').
pub async fn canary_job_for_probe(
    config: &Config,
    probe: &ProbeConfig,
    overrides: &Overrides,
) -> Result<CanaryJob, String> {
    let ProbeKind::Canary(canary) = &probe.kind else {
        return Err(format!("probe {:?}: `{}:` probes are not canaries", probe.name, probe.kind.key()));
    };
    let registry = probe
        .registry
        .as_deref()
        .and_then(|name| config.registry(name))
        .ok_or_else(|| format!("probe {:?}: a canary needs the `registry:` it pushes to", probe.name))?;
    let repository = ImageReference::parse_name(&format!("{}/{}", registry.host(), canary.repository))
        .map_err(|e| format!("probe {:?}: `repository`: {e}", probe.name))?;
    let mut push_url = registry.url.clone();
    if overrides.plain_http {
        let _ = push_url.set_scheme("http");
    }
    Ok(CanaryJob {
        probe: probe.name.clone(),
        registry: registry.name.clone(),
        location: config.defaults.location.clone(),
        canary: canary.clone(),
        push_url,
        frontends: frontends(Some(registry), &repository, overrides).await?,
        transport: TransportOptions {
            auth: Some(auth_for(config.limits.max_manifest_bytes, Some(registry), &repository)),
            ..transport_for(config, Some(registry), overrides)
        },
        timeout: capped(config.timeout_for(probe), overrides.timeout),
        max_manifest_bytes: config.limits.max_manifest_bytes,
        repository,
    })
}

/// The job of an ad-hoc reference (`now IMAGE`, `/probe?target=`): the config's
/// defaults and limits, and the TLS settings and frontends of a configured
/// registry with the same host, if any.
pub async fn job_for_image(config: &Config, raw: &str, overrides: &Overrides) -> Result<PullJob, String> {
    let image = ImageReference::parse(raw).map_err(|e| format!("image {raw:?}: {e}"))?;
    let registry = config.registry_for(&image);
    let target = PullTarget {
        probe: raw.to_string(),
        registry: registry.map(|r| r.name.clone()).unwrap_or_else(|| image.registry.clone()),
        image: image.clone(),
        location: config.defaults.location.clone(),
        platforms: overrides.platforms.clone().unwrap_or_else(|| config.defaults.platforms.clone()),
        timeout: capped(config.defaults.timeout, overrides.timeout),
        limits: pull_limits(config),
        layer_concurrency: layer_concurrency(),
        expect: expect::with_paths(&Expectations::default(), &overrides.expect_paths)?,
    };
    let mut transport = transport_for(config, registry, overrides);
    transport.auth = Some(auth_for(config.limits.max_manifest_bytes, registry, &image));
    let frontends = frontends(registry, &image, overrides).await?;
    Ok(PullJob { target, frontends, transport })
}

/// The number of a scheduled run: consecutive runs one interval apart get
/// consecutive numbers, so a CronJob (and `serve` across restarts) rotates the
/// round budget and the catalog's sample without keeping state.
pub fn clock_slot(interval: Duration) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_secs() / interval.as_secs().max(1)
}

/// `configured`, shortened to `cap` when one is given (a scrape's timeout).
pub(crate) fn capped(configured: Duration, cap: Option<Duration>) -> Duration {
    match cap {
        Some(cap) => configured.min(cap),
        None => configured,
    }
}
