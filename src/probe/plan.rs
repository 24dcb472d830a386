//! From configuration to pull jobs: which image, which frontends, which TLS
//! settings and limits, for a configured probe or an ad-hoc reference. `now`
//! and `serve` both plan through here, so a probe means the same in both.

use std::time::Duration;

use crate::config::{Config, Expectations, ProbeConfig, ProbeKind, RegistryConfig};
use crate::frontend::{self, Frontend};
use crate::platform::PlatformSelection;
use crate::probe::expect;
use crate::probe::pull::{PullLimits, PullTarget};
use crate::probe::run::PullJob;
use crate::reference::ImageReference;
use crate::registry::transport::TransportOptions;

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

async fn frontends(
    registry: Option<&RegistryConfig>,
    image: &ImageReference,
    overrides: &Overrides,
) -> Result<Vec<Frontend>, String> {
    if overrides.frontends.is_empty() {
        return frontend::configured_frontends(registry, image, overrides.plain_http).await;
    }
    overrides.frontends.iter().map(|f| frontend::parse_frontend_arg(f, image, overrides.plain_http)).collect()
}

/// The job of a configured `image:` probe. Frontends are resolved now (`dns`
/// frontends are re-resolved every time a job is planned).
pub async fn job_for_probe(config: &Config, probe: &ProbeConfig, overrides: &Overrides) -> Result<PullJob, String> {
    if !matches!(probe.kind, ProbeKind::Image { .. }) {
        return Err(format!("probe {:?}: `{}:` probes are not pulls", probe.name, probe.kind.key()));
    }
    let (image, registry) = config.resolve_image(probe).map_err(|e| e.to_string())?;
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
    let transport = transport_for(config, registry, overrides);
    let frontends = frontends(registry, &image, overrides).await?;
    Ok(PullJob { target, frontends, transport })
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
    let transport = transport_for(config, registry, overrides);
    let frontends = frontends(registry, &image, overrides).await?;
    Ok(PullJob { target, frontends, transport })
}

fn capped(configured: Duration, cap: Option<Duration>) -> Duration {
    match cap {
        Some(cap) => configured.min(cap),
        None => configured,
    }
}
