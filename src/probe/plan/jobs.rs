//! One job, planned: the pull of a listed, discovered or ad-hoc image, or a
//! canary — its labels, limits, credentials and frontends. Frontends are
//! resolved here (`dns` frontends are re-resolved every time a job is planned).

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Expectations, ProbeConfig, ProbeKind, RegistryConfig, SignaturePolicy};
use crate::frontend::{self, Frontend};
use crate::platform::PlatformSelection;
use crate::probe::canary::CanaryJob;
use crate::probe::connection::{self, ConnectionOverrides};
use crate::probe::discover::Target;
use crate::probe::expect;
use crate::probe::plan::{Overrides, PlanError};
use crate::probe::pull::{PullLimits, PullTarget};
use crate::probe::run::PullJob;
use crate::reference::ImageReference;
use crate::registry::auth::AuthOptions;
use crate::registry::transport::{TransportOptions, proxy_for};

/// The caps of `limits:` that bound one pull.
fn pull_limits(config: &Config) -> PullLimits {
    PullLimits {
        max_manifest_bytes: config.limits.max_manifest_bytes,
        max_pull_bytes: config.limits.max_pull_bytes,
        max_uncompressed_bytes: config.limits.max_uncompressed_bytes,
        max_uncompressed_ratio: config.limits.max_uncompressed_ratio,
    }
}

/// Layers verified at once per pull: one per core keeps inflate busy without
/// oversubscribing a small pod; at least two so the network overlaps the CPU.
fn layer_concurrency() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8)
}

/// An address-pinned frontend cannot be honoured through a proxy (the proxy
/// connects by name): refuse it rather than probe some other address unpinned.
fn check_pinned_without_proxy(probe: &str, frontends: &[Frontend]) -> Result<(), PlanError> {
    for frontend in frontends.iter().filter(|f| f.pin.is_some()) {
        if let Some(proxy) = proxy_for(&frontend.url) {
            let message = format!(
                "frontend {}: an address-pinned frontend cannot be probed through the proxy {proxy} \
                 (from HTTPS_PROXY/HTTP_PROXY/ALL_PROXY): the proxy connects by name, not to the pinned address. \
                 Add {} to NO_PROXY, or probe the registry by name (no address frontends)",
                frontend.label,
                frontend.url.host_str().unwrap_or_default()
            );
            return Err(PlanError::probe(probe, message));
        }
    }
    Ok(())
}

/// The frontends `probe` goes through: the registry's configured ones, or exactly `--frontend`'s.
async fn frontends(
    probe: &str,
    registry: Option<&RegistryConfig>,
    image: &ImageReference,
    overrides: &ConnectionOverrides,
) -> Result<Vec<Frontend>, PlanError> {
    let frontends = if overrides.frontends.is_empty() {
        frontend::configured_frontends(registry, image, overrides.plain_http).await
    } else {
        overrides
            .frontends
            .iter()
            .map(|f| frontend::parse_frontend_arg(f, image, overrides.plain_http))
            .collect::<Result<Vec<_>, _>>()
    };
    let frontends = frontends.map_err(|message| PlanError::probe(probe, message))?;
    check_pinned_without_proxy(probe, &frontends)?;
    Ok(frontends)
}

/// `expect` with `--expect-path`'s paths added.
fn expectations(expect: &Expectations, overrides: &Overrides) -> Result<Expectations, PlanError> {
    expect::with_paths(expect, &overrides.expect_paths).map_err(PlanError::ExpectPath)
}

/// What a pull checks, apart from where it pulls from: a probe's settings, or
/// the defaults for an ad-hoc image.
struct Checks<'a> {
    probe: &'a str,
    platforms: PlatformSelection,
    timeout: Duration,
    expect: &'a Expectations,
    signatures: Option<&'a SignaturePolicy>,
}

impl<'a> Checks<'a> {
    fn of_probe(config: &'a Config, probe: &'a ProbeConfig) -> Checks<'a> {
        Checks {
            probe: &probe.name,
            platforms: config.platforms_for(probe),
            timeout: config.timeout_for(probe),
            expect: &probe.expect,
            signatures: probe.signatures.as_ref(),
        }
    }
}

/// The job of a configured `image:` probe without `tags:`.
pub async fn job_for_probe(config: &Config, probe: &ProbeConfig, overrides: &Overrides) -> Result<PullJob, PlanError> {
    if !matches!(probe.kind, ProbeKind::Image { tags: None, .. }) {
        return Err(PlanError::probe(
            &probe.name,
            format!("probe {:?}: only an `image:` probe without `tags:` is one pull", probe.name),
        ));
    }
    let (image, registry) = config.resolve_image(probe).map_err(|e| PlanError::probe(&probe.name, e.to_string()))?;
    pull_job(config, Checks::of_probe(config, probe), image, registry, None, overrides).await
}

/// The job of an image a discovery rule found for `probe`, carrying what the
/// rule learnt about it to its results.
pub(super) async fn discovered_job(
    config: &Config,
    probe: &ProbeConfig,
    target: Target,
    overrides: &Overrides,
) -> Result<PullJob, PlanError> {
    let registry = target.registry.as_deref().and_then(|name| config.registry(name));
    let credentials = target
        .credentials
        .map(|c| AuthOptions::with_credentials(c, target.image.registry.clone(), config.limits.max_manifest_bytes));
    let checks = Checks::of_probe(config, probe);
    let job = pull_job(config, checks, target.image, registry, credentials, overrides).await?;
    Ok(PullJob { used_by: target.used_by, warnings: target.warnings, ..job })
}

/// The job of an ad-hoc reference (`now IMAGE`, `/probe?target=`): the config's
/// defaults and limits, and the TLS settings and frontends of a configured
/// registry with the same host, if any. Its `probe` label is the reference as given.
pub async fn job_for_image(config: &Config, raw: &str, overrides: &Overrides) -> Result<PullJob, PlanError> {
    let image = ImageReference::parse(raw).map_err(|e| PlanError::probe(raw, format!("image {raw:?}: {e}")))?;
    let registry = config.registry_for(&image);
    let no_expectations = Expectations::default();
    let checks = Checks {
        probe: raw,
        platforms: config.defaults.platforms.clone(),
        timeout: config.defaults.timeout,
        expect: &no_expectations,
        signatures: None,
    };
    pull_job(config, checks, image, registry, None, overrides).await
}

/// One pull of `image`, with the registry's TLS settings and frontends, and its
/// credentials unless `credentials` (a workload's pull secret) says otherwise.
async fn pull_job(
    config: &Config,
    checks: Checks<'_>,
    image: ImageReference,
    registry: Option<&RegistryConfig>,
    credentials: Option<AuthOptions>,
    overrides: &Overrides,
) -> Result<PullJob, PlanError> {
    let connection = &overrides.connection;
    let target = PullTarget {
        probe: checks.probe.to_string(),
        registry: registry.map(|r| r.name.clone()).unwrap_or_else(|| image.registry.clone()),
        image: image.clone(),
        location: config.defaults.location.clone(),
        platforms: overrides.platforms.clone().unwrap_or(checks.platforms),
        timeout: connection::capped(checks.timeout, connection.timeout),
        limits: pull_limits(config),
        layer_concurrency: layer_concurrency(),
        expect: expectations(checks.expect, overrides)?,
        signatures: checks.signatures.cloned().map(Arc::new),
    };
    let mut transport = connection::transport_for(config, registry, connection);
    transport.auth =
        Some(credentials.unwrap_or_else(|| connection::auth_for(config.limits.max_manifest_bytes, registry, &image)));
    let frontends = frontends(checks.probe, registry, &image, connection).await?;
    Ok(PullJob { target, frontends, transport, used_by: Vec::new(), warnings: Vec::new() })
}

/// The job of a `canary:` probe: push through the registry's URL (scheme forced
/// to http by `plain_http`), read back through its frontends (or the overrides').
pub(super) async fn canary_job(
    config: &Config,
    probe: &ProbeConfig,
    overrides: &Overrides,
) -> Result<CanaryJob, PlanError> {
    let connection = &overrides.connection;
    let ProbeKind::Canary(canary) = &probe.kind else {
        let message = format!("probe {:?}: `{}:` probes are not canaries", probe.name, probe.kind.key());
        return Err(PlanError::probe(&probe.name, message));
    };
    let registry = probe.registry.as_deref().and_then(|name| config.registry(name)).ok_or_else(|| {
        PlanError::probe(&probe.name, format!("probe {:?}: a canary needs the `registry:` it pushes to", probe.name))
    })?;
    let repository = ImageReference::parse_name(&format!("{}/{}", registry.host(), canary.repository))
        .map_err(|e| PlanError::probe(&probe.name, format!("probe {:?}: `repository`: {e}", probe.name)))?;
    Ok(CanaryJob {
        probe: probe.name.clone(),
        registry: registry.name.clone(),
        location: config.defaults.location.clone(),
        canary: canary.clone(),
        push_url: connection::registry_url(registry, connection),
        frontends: frontends(&probe.name, Some(registry), &repository, connection).await?,
        transport: TransportOptions {
            auth: Some(connection::auth_for(config.limits.max_manifest_bytes, Some(registry), &repository)),
            ..connection::transport_for(config, Some(registry), connection)
        },
        timeout: connection::capped(config.timeout_for(probe), connection.timeout),
        max_manifest_bytes: config.limits.max_manifest_bytes,
        repository,
    })
}
