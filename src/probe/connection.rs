//! How pullprobe reaches a registry: the TLS and HTTP settings of a client,
//! whom it authenticates as, the registry's own URL, and how long the work
//! may take. Pulls, canaries and discovery's listings all connect through
//! here, so a registry's `tls:` and `auth:` mean the same to each of them.
//!
//! Which frontends a pull goes through is the planner's decision
//! ([`crate::probe::plan`]), not this module's.

use std::time::Duration;

use url::Url;

use crate::config::{Auth, Config, ConfigError, PasswordSource, RegistryConfig};
use crate::redact;
use crate::reference::ImageReference;
use crate::registry::auth::AuthOptions;
use crate::registry::credentials::read_password;
use crate::registry::tls::{self, TlsSettings};
use crate::registry::transport::TransportOptions;

/// What the command line (or a `/probe` request) changes about connecting.
#[derive(Debug, Clone, Default)]
pub struct ConnectionOverrides {
    /// `--plain-http`: http even for a registry that is not on loopback.
    pub plain_http: bool,
    /// `--insecure`: TLS certificates are not verified.
    pub insecure: bool,
    /// `--frontend`: exactly these addresses or URLs are probed, each separately.
    pub frontends: Vec<String>,
    /// A shorter deadline than the configured one (a scrape's timeout).
    pub timeout: Option<Duration>,
}

/// TLS and HTTP settings for a registry (or for an ad-hoc reference), without credentials.
pub fn transport_for(
    config: &Config,
    registry: Option<&RegistryConfig>,
    overrides: &ConnectionOverrides,
) -> TransportOptions {
    let mut transport = TransportOptions {
        insecure: overrides.insecure,
        max_redirects: config.limits.max_redirects as usize,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(30)),
        ip_family: registry.map(|r| r.ip_family).unwrap_or_default(),
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

/// The registry's own URL, where pushes and listings go (never a pinned
/// frontend: a load balancer routes them as it would a client's); http with `--plain-http`.
pub fn registry_url(registry: &RegistryConfig, overrides: &ConnectionOverrides) -> Url {
    let mut url = registry.url.clone();
    if overrides.plain_http {
        let _ = url.set_scheme("http");
    }
    url
}

/// `configured`, shortened to `cap` when one is given (a scrape's timeout).
pub fn capped(configured: Duration, cap: Option<Duration>) -> Duration {
    match cap {
        Some(cap) => configured.min(cap),
        None => configured,
    }
}

/// pullprobe's own files that a registry's `tls:` and `auth:` name, read and
/// parsed as a run would read them. A missing, unreadable or malformed one is
/// pullprobe's problem, not the registry's: a [`ConfigError`] at the key's
/// position in probes.yaml (`now` exits 2, `check` is UNKNOWN, `serve` skips
/// the probe and exports `pullprobe_config_error`), never a page to the
/// registry's owners.
pub fn check_files(config: &Config, registry: &RegistryConfig) -> Result<(), ConfigError> {
    for file in &registry.files {
        let problem = match file.key {
            "password_file" => read_password(&PasswordSource::File(file.path.clone())).err().map(|e| e.message),
            "docker_config" => docker_config_problem(&file.path),
            "ca_file" => tls_problem(TlsSettings { ca_file: Some(&file.path), ..TlsSettings::default() }),
            "client_cert" | "client_key" => registry.tls.as_ref().and_then(|tls| {
                let settings = TlsSettings {
                    client_cert: tls.client_cert.as_deref(),
                    client_key: tls.client_key.as_deref(),
                    ..TlsSettings::default()
                };
                tls_problem(settings).filter(|message| message.contains(file.key))
            }),
            _ => None,
        };
        if let Some(problem) = problem {
            let message = format!(
                "registry {:?}: `{}` {}: {problem} (a file of pullprobe's own: fix it here, the registry is not at fault)",
                registry.name,
                file.key,
                file.path.display()
            );
            return Err(ConfigError::new(&config.file, file.position, message));
        }
    }
    Ok(())
}

/// [`check_files`] for every registry.
pub fn check_all_files(config: &Config) -> Result<(), ConfigError> {
    config.registries.iter().try_for_each(|registry| check_files(config, registry))
}

fn tls_problem(settings: TlsSettings<'_>) -> Option<String> {
    tls::client_config(&settings).err().map(|e| e.message)
}

/// A Docker config that cannot be read or is not JSON (its text is never quoted: it holds secrets).
fn docker_config_problem(path: &std::path::Path) -> Option<String> {
    match std::fs::read(path) {
        Err(e) => Some(e.to_string()),
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .err()
            .map(|e| format!("not JSON: {}", redact::json_error_position(&e))),
    }
}
