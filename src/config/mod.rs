//! probes.yaml: types, parsing with file:line:column errors, and validation. Nothing else.
//!
//! [`Config::load`] reads the file into `raw` serde shapes (unknown keys are
//! errors), then `validate` checks them and builds the typed [`Config`], so a
//! value that parses is a value the prober can use without checking again.
//! Every error — a YAML syntax error, a typo'd key, a duration that is not a
//! duration, a probe naming a registry that does not exist — is one
//! [`ConfigError`] that displays as `FILE:LINE:COLUMN: message`.
//!
//! Nothing here touches the network or the files that the config names
//! (password files, CA files): those are read when used. Signature keys are
//! the exception: they are read and parsed while validating, so a key that is
//! missing or is not an ECDSA P-256 public key is a configuration error that
//! names the file, never a probe that fails every signature.

mod alerting;
mod error;
mod probe;
mod raw;
mod registry;
mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Duration;

pub use alerting::{
    AlertAfter, AlertingConfig, AlertmanagerConfig, EndpointAccess, EndpointAuth, PushgatewayConfig, RESERVED_LABELS,
};
pub use error::{ConfigError, Position};
pub use probe::{
    CanaryConfig, CatalogDiscovery, Expectations, KubernetesDiscovery, PathExpectation, PathType, ProbeConfig,
    ProbeKind, RequiredReferrer, Severity, SignaturePolicy, TagRule,
};
pub use registry::{
    Auth, CloudAuth, CredentialProvider, FileKey, FrontendAddressError, FrontendSet, FrontendSpec, IpFamily,
    NodeMirrors, PasswordSource, RegistryConfig, TlsConfig,
};
pub use units::{DurationError, SizeError, format_duration, parse_duration, parse_size};

use crate::platform::PlatformSelection;
use crate::reference::ImageReference;

/// probes.yaml larger than this is refused before parsing.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// The whole of probes.yaml, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, as named in errors.
    pub file: String,
    pub defaults: Defaults,
    pub limits: Limits,
    pub registries: Vec<RegistryConfig>,
    pub probes: Vec<ProbeConfig>,
    pub alerting: AlertingConfig,
    pub serve: ServeConfig,
    /// Not errors: keys that load and run, but probably not as meant, each at
    /// its position (`validate` prints them).
    pub warnings: Vec<ConfigError>,
}

/// `defaults:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Between rounds in `serve` (default 5m).
    pub interval: Duration,
    /// One (image, frontend, platform) pull (default 2m).
    pub timeout: Duration,
    /// Default `[linux/amd64]`.
    pub platforms: PlatformSelection,
    /// Where this prober runs: a label on alerts and pushes (default `default`).
    pub location: String,
    /// Frontends and probes run in parallel (default 4).
    pub concurrency: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            interval: Duration::from_secs(5 * 60),
            timeout: Duration::from_secs(2 * 60),
            platforms: PlatformSelection::default(),
            location: "default".to_string(),
            concurrency: 4,
        }
    }
}

/// `limits:`: every cap in one place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Manifests, configs, token and error bodies (default 4 MiB).
    pub max_manifest_bytes: u64,
    /// Compressed bytes of one image through one frontend (default 16 GiB).
    pub max_pull_bytes: u64,
    /// `serve`: compressed bytes of one whole round (default 20 GiB); at least `max_pull_bytes`.
    pub max_round_bytes: u64,
    /// Uncompressed ÷ compressed bytes of a layer; 0 = off (default), else at least 1.
    pub max_uncompressed_ratio: f64,
    /// Uncompressed bytes of one layer (default 64 GiB).
    pub max_uncompressed_bytes: u64,
    /// Redirects followed for one request (default 5).
    pub max_redirects: u32,
    /// `serve`: one cap on the bytes per second all pulls of the process read
    /// together; 0 is off.
    pub max_bytes_per_second: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 << 20,
            max_pull_bytes: 16 << 30,
            max_round_bytes: 20 << 30,
            max_uncompressed_ratio: 0.0,
            max_uncompressed_bytes: 64 << 30,
            max_redirects: 5,
            max_bytes_per_second: 0,
        }
    }
}

/// `serve:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServeConfig {
    /// What `/probe?target=…` may fetch besides the configured probes.
    pub allow_targets: Vec<TargetPattern>,
}

impl ServeConfig {
    /// Whether `/probe?target=` may probe this reference (as written or normalised).
    pub fn allows(&self, target: &str) -> bool {
        self.allow_targets.iter().any(|p| p.matches(target))
    }
}

/// A glob over image references: `*` matches any run of characters, including `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPattern(pub String);

impl TargetPattern {
    pub fn matches(&self, target: &str) -> bool {
        crate::glob::matches(self.0.as_bytes(), target.as_bytes(), None)
    }
}

impl Default for Config {
    /// No registries, no probes, every default: the configuration of an ad-hoc
    /// `pullprobe now IMAGE`.
    fn default() -> Self {
        Config {
            file: "<command line>".to_string(),
            defaults: Defaults::default(),
            limits: Limits::default(),
            registries: Vec::new(),
            probes: Vec::new(),
            alerting: AlertingConfig::default(),
            serve: ServeConfig::default(),
            warnings: Vec::new(),
        }
    }
}

impl Config {
    /// Read, parse and check probes.yaml.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_text(path, MAX_CONFIG_BYTES)?;
        Config::from_str_named(&text, &path.display().to_string())
    }

    /// Parse and check probes.yaml text; `file_name` is used in errors.
    pub fn from_str_named(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::new(
                file_name,
                None,
                format!("{} bytes: larger than {MAX_CONFIG_BYTES} bytes", text.len()),
            ));
        }
        let raw: Option<raw::RawConfig> = serde_saphyr::from_str_with_options(text, validate::yaml_options())
            .map_err(|e| ConfigError::from_yaml(file_name, &e))?;
        validate::build(raw.unwrap_or_default(), file_name)
    }

    pub fn registry(&self, name: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.name == name)
    }

    pub fn probe(&self, name: &str) -> Option<&ProbeConfig> {
        self.probes.iter().find(|p| p.name == name)
    }

    /// The configured registry an image reference points at (`host[:port]` equal to
    /// its URL's), for the auth, TLS and frontends of ad-hoc references.
    pub fn registry_for(&self, image: &ImageReference) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.host().eq_ignore_ascii_case(&image.registry))
    }

    /// Effective `interval` of a probe: its own, else `defaults.interval`.
    pub fn interval_for(&self, probe: &ProbeConfig) -> Duration {
        probe.interval.unwrap_or(self.defaults.interval)
    }

    /// Effective `timeout` of a probe: its own, else `defaults.timeout`.
    pub fn timeout_for(&self, probe: &ProbeConfig) -> Duration {
        probe.timeout.unwrap_or(self.defaults.timeout)
    }

    /// Effective `platforms` of a probe: its own, else `defaults.platforms`.
    pub fn platforms_for(&self, probe: &ProbeConfig) -> PlatformSelection {
        probe.platforms.as_ref().unwrap_or(&self.defaults.platforms).clone()
    }

    /// The image of an `image:` probe as a full reference, and the registry whose
    /// auth, TLS and frontends apply.
    ///
    /// With `registry: NAME`, `image:` is a repository in that registry
    /// (`registry: prod` + `image: wikimedia/buster:latest` →
    /// `docker-registry.example.org/wikimedia/buster:latest`); a leading
    /// `host/` equal to the registry's is accepted. Without `registry:`, `image:`
    /// must name its host (`127.0.0.1:5000/app:stable`, `docker.io/library/alpine`),
    /// and the configured registry with that host, if any, applies.
    ///
    /// With `tags:`, the reference has neither tag nor digest (the rule picks the
    /// tags); otherwise the tag defaults to `latest`. Errors point at `image:` or
    /// `registry:` in the file. Every probe of a loaded config resolves.
    pub fn resolve_image<'a>(
        &'a self,
        probe: &ProbeConfig,
    ) -> Result<(ImageReference, Option<&'a RegistryConfig>), ConfigError> {
        let error = |at: Option<Position>, message: String| ConfigError::new(&self.file, at, message);
        let ProbeKind::Image { image, tags } = &probe.kind else {
            return Err(error(
                probe.origin.name,
                format!("probe `{}` is a {} probe, not an image probe", probe.name, probe.kind.key()),
            ));
        };
        let parse = |s: &str| {
            let parsed = if tags.is_some() { ImageReference::parse_name(s) } else { ImageReference::parse(s) };
            parsed.map_err(|e| error(probe.origin.image, format!("`image`: {e}")))
        };
        match &probe.registry {
            Some(name) => {
                let Some(registry) = self.registry(name) else {
                    return Err(error(probe.origin.registry, unknown_registry(name, &self.registries)));
                };
                let host = registry.host();
                let path = match image.split_once('/') {
                    Some((first, rest)) if first.eq_ignore_ascii_case(&host) => rest,
                    _ => image.as_str(),
                };
                Ok((parse(&format!("{host}/{path}"))?, Some(registry)))
            }
            None => {
                if !ImageReference::names_registry(image) {
                    let names: Vec<&str> = self.registries.iter().map(|r| r.name.as_str()).collect();
                    let hint = if names.is_empty() {
                        String::new()
                    } else {
                        format!("`registry:` ({}) or ", names.join(", "))
                    };
                    return Err(error(
                        probe.origin.image,
                        format!(
                            "`image`: {image:?} names no registry host: add {hint}the host, e.g. docker.io/{image}"
                        ),
                    ));
                }
                let reference = parse(image)?;
                let registry = self.registry_for(&reference);
                Ok((reference, registry))
            }
        }
    }
}

/// A configuration file's text: at most `max_bytes`, UTF-8; errors name the file.
pub fn read_text(path: &Path, max_bytes: u64) -> Result<String, ConfigError> {
    let file = path.display().to_string();
    let unreadable = |e: std::io::Error| ConfigError::new(&file, None, format!("cannot read: {e}"));
    let size = std::fs::metadata(path).map_err(unreadable)?.len();
    if size > max_bytes {
        return Err(ConfigError::new(&file, None, format!("{size} bytes: larger than {max_bytes} bytes")));
    }
    let bytes = std::fs::read(path).map_err(unreadable)?;
    String::from_utf8(bytes).map_err(|e| {
        ConfigError::new(
            &file,
            None,
            format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
        )
    })
}

/// "no registry named `x` (configured: a, b)".
pub(crate) fn unknown_registry(name: &str, registries: &[RegistryConfig]) -> String {
    let names: Vec<&str> = registries.iter().map(|r| r.name.as_str()).collect();
    if names.is_empty() {
        format!("`registry`: no registry named `{name}`: `registries:` is empty")
    } else {
        format!("`registry`: no registry named `{name}` (configured: {})", names.join(", "))
    }
}
