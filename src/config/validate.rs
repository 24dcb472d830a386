//! From the raw serde shapes to a checked [`Config`]: every parse of a value
//! and every rule that spans fields, each error at the position of the value.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use regex::{Regex, RegexBuilder};
use serde_saphyr::{Location, Spanned};
use url::Url;

use super::error::{ConfigError, Position};
use super::raw::*;
use super::units::{parse_duration, parse_size};
use super::{
    AlertAfter, AlertingConfig, AlertmanagerConfig, Auth, CanaryConfig, CatalogDiscovery, CloudAuth, Config,
    CredentialProvider, Defaults, EndpointAccess, EndpointAuth, Expectations, FileKey, FrontendSet, FrontendSpec,
    KubernetesDiscovery, Limits, NodeMirrors, PasswordSource, PathExpectation, PathType, ProbeConfig, ProbeKind,
    PushgatewayConfig, RESERVED_LABELS, RegistryConfig, RequiredReferrer, ServeConfig, SignaturePolicy, TagRule,
    TargetPattern, TlsConfig, unknown_registry,
};
use crate::platform::{Platform, PlatformSelection};
use crate::reference::{self, ImageReference};

/// Parser settings for probes.yaml: one document, duplicate keys refused, and
/// budgets far above any real config but far below what hurts (alias bombs,
/// deep nesting, huge inputs).
pub(super) fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(super::MAX_CONFIG_BYTES as usize),
            max_events: 200_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 32,
            max_documents: 2, // a second document is then reported as such
            max_nodes: 100_000,
            max_total_scalar_bytes: 4 << 20,
            max_merge_keys: 100,
            max_recorded_anchor_events: 100_000,
            max_recorded_anchor_bytes: 4 << 20,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 1_000,
        },
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        with_snippet: false,
    }
}

type Result<T> = std::result::Result<T, ConfigError>;

/// Check `raw` and build the [`Config`]; the first error wins.
pub(super) fn build(raw: RawConfig, file: &str) -> Result<Config> {
    let v = Validator { file };
    let defaults = v.defaults(raw.defaults)?;
    let limits = v.limits(raw.limits)?;
    let after_at = raw.alerting.as_ref().and_then(|a| a.after.as_ref()).map(|a| a.referenced);
    let alerting = v.alerting(raw.alerting, &defaults)?;
    let warnings = after_at.and_then(|at| v.after_without_pushgateway(&at, &alerting)).into_iter().collect();
    let mut config = Config {
        file: file.to_string(),
        alerting,
        serve: v.serve(raw.serve)?,
        defaults,
        limits,
        registries: Vec::new(),
        probes: Vec::new(),
        warnings,
    };
    let mut seen: HashMap<String, Location> = HashMap::new();
    for registry in raw.registries.unwrap_or_default() {
        if let Some(first) = seen.get(&registry.name.value) {
            return Err(v.error(
                &registry.name.referenced,
                format!("registry `{}` is defined twice (first at line {})", registry.name.value, first.line()),
            ));
        }
        seen.insert(registry.name.value.clone(), registry.name.referenced);
        config.registries.push(v.registry(registry)?);
    }
    let mut seen: HashMap<String, Location> = HashMap::new();
    for probe in raw.probes.unwrap_or_default() {
        if let Some(first) = seen.get(&probe.name.value) {
            return Err(v.error(
                &probe.name.referenced,
                format!("probe `{}` is defined twice (first at line {})", probe.name.value, first.line()),
            ));
        }
        seen.insert(probe.name.value.clone(), probe.name.referenced);
        let probe = v.probe(probe, &config)?;
        config.probes.push(probe);
    }
    Ok(config)
}

struct Validator<'a> {
    file: &'a str,
}

impl Validator<'_> {
    fn error(&self, at: &Location, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, Position::from_location(*at), message)
    }

    fn duration(&self, key: &str, text: &Text) -> Result<Duration> {
        parse_duration(&text.value).map_err(|e| self.error(&text.referenced, format!("`{key}`: {e}")))
    }

    /// A duration that must be more than zero (an interval, a timeout).
    fn positive_duration(&self, key: &str, text: &Text) -> Result<Duration> {
        let d = self.duration(key, text)?;
        if d.is_zero() {
            return Err(self.error(&text.referenced, format!("`{key}`: must be more than 0s, got {:?}", text.value)));
        }
        Ok(d)
    }

    fn size(&self, key: &str, text: &Text) -> Result<u64> {
        parse_size(&text.value).map_err(|e| self.error(&text.referenced, format!("`{key}`: {e}")))
    }

    fn count(&self, key: &str, n: &Spanned<u64>, min: u64, max: u64) -> Result<u64> {
        if n.value < min || n.value > max {
            return Err(
                self.error(&n.referenced, format!("`{key}`: expected a number from {min} to {max}, got {}", n.value))
            );
        }
        Ok(n.value)
    }

    fn non_empty(&self, key: &str, text: &Text) -> Result<String> {
        if text.value.trim().is_empty() || text.value.chars().any(char::is_control) {
            return Err(
                self.error(&text.referenced, format!("`{key}`: must not be empty or contain control characters"))
            );
        }
        Ok(text.value.clone())
    }

    fn path(&self, key: &str, text: &Text) -> Result<PathBuf> {
        self.non_empty(key, text).map(PathBuf::from)
    }

    /// `[a-zA-Z0-9_.-]{1,128}`: probe and registry names are label values and URL parts.
    fn name(&self, what: &str, text: &Text) -> Result<String> {
        let s = &text.value;
        let valid = !s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !valid {
            return Err(self.error(
                &text.referenced,
                format!("{what} name {s:?}: expected 1 to 128 of letters, digits, `_`, `.` and `-`"),
            ));
        }
        Ok(s.clone())
    }

    /// An http(s) URL with a host and no credentials; with `root_only`, no path,
    /// query or fragment either (registries and frontends answer at `/v2/`).
    fn url(&self, key: &str, text: &Text, root_only: bool) -> Result<Url> {
        let fail = |why: String| self.error(&text.referenced, format!("`{key}`: {why}"));
        let url = Url::parse(text.value.trim())
            .map_err(|e| fail(format!("expected an http:// or https:// URL, got {:?} ({e})", text.value)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(fail(format!("expected an http:// or https:// URL, got scheme {:?}", url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(fail(format!("URL {:?} has no host", text.value)));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(fail("credentials do not belong in a URL: use `auth:`".to_string()));
        }
        if root_only && (url.path() != "/" || url.query().is_some() || url.fragment().is_some()) {
            return Err(fail(format!(
                "URL {:?} has a path; a registry answers at /v2/ of its root (use repository_prefix for a proxy's path)",
                text.value
            )));
        }
        Ok(url)
    }

    fn regex(&self, key: &str, text: &Text) -> Result<Regex> {
        RegexBuilder::new(&text.value).size_limit(1 << 20).build().map_err(|e| {
            // The regex crate explains over several lines; its last line says what is wrong.
            let text_of_error = e.to_string();
            let why = text_of_error.lines().last().unwrap_or_default().trim_start_matches("error: ");
            self.error(&text.referenced, format!("`{key}`: invalid regular expression {:?}: {why}", text.value))
        })
    }

    fn platforms(&self, key: &str, raw: &Spanned<RawPlatforms>) -> Result<PlatformSelection> {
        let platform = |text: &str, at: &Location| {
            if text.trim().eq_ignore_ascii_case("all") {
                return Err(self.error(at, format!("`{key}`: `all` is not one platform: write `{key}: all`")));
            }
            Platform::parse(text).map_err(|e| self.error(at, format!("`{key}`: {e}")))
        };
        match &raw.value {
            ScalarOr::Scalar(Scalar::Text(s)) if s.trim().eq_ignore_ascii_case("all") => Ok(PlatformSelection::All),
            ScalarOr::Scalar(Scalar::Text(s)) => Ok(PlatformSelection::List(vec![platform(s, &raw.referenced)?])),
            ScalarOr::Scalar(other) => Err(self.error(
                &raw.referenced,
                format!("`{key}`: expected `all` or a list of platforms like [linux/amd64], got {other}"),
            )),
            ScalarOr::Structured(list) if list.is_empty() => Err(self
                .error(&raw.referenced, format!("`{key}`: the list is empty; write `all` or at least one platform"))),
            ScalarOr::Structured(list) => {
                let list = list.iter().map(|p| platform(&p.value, &p.referenced)).collect::<Result<Vec<_>>>()?;
                Ok(PlatformSelection::List(list))
            }
        }
    }

    fn defaults(&self, raw: Option<RawDefaults>) -> Result<Defaults> {
        let mut defaults = Defaults::default();
        let Some(raw) = raw else { return Ok(defaults) };
        if let Some(t) = &raw.interval {
            defaults.interval = self.positive_duration("interval", t)?;
        }
        if let Some(t) = &raw.timeout {
            defaults.timeout = self.positive_duration("timeout", t)?;
        }
        if let Some(p) = &raw.platforms {
            defaults.platforms = self.platforms("platforms", p)?;
        }
        if let Some(t) = &raw.location {
            defaults.location = self.non_empty("location", t)?;
        }
        if let Some(n) = &raw.concurrency {
            defaults.concurrency = self.count("concurrency", n, 1, 256)? as usize;
        }
        Ok(defaults)
    }

    fn limits(&self, raw: Option<RawLimits>) -> Result<Limits> {
        let mut limits = Limits::default();
        let Some(raw) = raw else { return Ok(limits) };
        let positive = |key: &str, text: &Text| -> Result<u64> {
            match self.size(key, text)? {
                0 => Err(self.error(&text.referenced, format!("`{key}`: must be more than 0 bytes"))),
                n => Ok(n),
            }
        };
        if let Some(t) = &raw.max_manifest_bytes {
            limits.max_manifest_bytes = positive("max_manifest_bytes", t)?;
        }
        if let Some(t) = &raw.max_pull_bytes {
            limits.max_pull_bytes = positive("max_pull_bytes", t)?;
        }
        if let Some(t) = &raw.max_round_bytes {
            limits.max_round_bytes = positive("max_round_bytes", t)?;
        }
        if let Some(n) = &raw.max_uncompressed_ratio {
            if !(n.value == 0.0 || (n.value >= 1.0 && n.value.is_finite())) {
                return Err(self.error(
                    &n.referenced,
                    format!("`max_uncompressed_ratio`: expected 0 (off) or a ratio of at least 1, got {}", n.value),
                ));
            }
            limits.max_uncompressed_ratio = n.value;
        }
        if let Some(t) = &raw.max_uncompressed_bytes {
            limits.max_uncompressed_bytes = positive("max_uncompressed_bytes", t)?;
        }
        if let Some(text) = &raw.max_bytes_per_second {
            let rate = self.size("max_bytes_per_second", text)?;
            if rate != 0 && rate < 1024 {
                return Err(self.error(
                    &text.referenced,
                    format!("`max_bytes_per_second`: 0 (off) or at least 1KiB, got {rate} bytes"),
                ));
            }
            limits.max_bytes_per_second = rate;
        }
        if let Some(n) = &raw.max_redirects {
            limits.max_redirects = self.count("max_redirects", n, 0, 100)? as u32;
        }
        if limits.max_round_bytes < limits.max_pull_bytes {
            let at = raw.max_round_bytes.as_ref().or(raw.max_pull_bytes.as_ref()).map(|t| t.referenced);
            return Err(ConfigError::new(
                self.file,
                at.and_then(Position::from_location),
                format!(
                    "`max_round_bytes` ({}) is less than `max_pull_bytes` ({}): one pull must fit in a round",
                    limits.max_round_bytes, limits.max_pull_bytes
                ),
            ));
        }
        Ok(limits)
    }

    fn registry(&self, raw: RawRegistry) -> Result<RegistryConfig> {
        let name = self.name("registry", &raw.name)?;
        let url = self.url("url", &raw.url, true)?;
        let mut registry = RegistryConfig::new(&name, url);
        if let Some(frontends) = &raw.frontends {
            registry.frontends = self.frontends(frontends)?;
        }
        registry.ip_family = raw.ip_family.unwrap_or_default();
        if let (FrontendSet::List(list), Some(frontends)) = (&registry.frontends, &raw.frontends) {
            let reachable = list.iter().any(|spec| match spec {
                FrontendSpec::Address { ip, .. } => registry.ip_family.allows(*ip),
                FrontendSpec::Endpoint { .. } => true,
            });
            if !reachable {
                return Err(self.error(
                    &frontends.referenced,
                    format!(
                        "`frontends`: no address is {}: `ip_family` leaves nothing to probe",
                        registry.ip_family.describe()
                    ),
                ));
            }
        }
        if let Some(auth) = &raw.auth {
            registry.auth = self.auth(auth)?;
        }
        if let Some(tls) = &raw.tls {
            registry.tls = Some(self.tls(tls)?);
        }
        registry.files = self.file_keys(&raw);
        Ok(registry)
    }

    fn frontends(&self, raw: &Spanned<RawFrontends>) -> Result<FrontendSet> {
        let expected = "expected `dns`, `single`, or a list of addresses (10.0.0.1, 10.0.0.2:8443, [2001:db8::1]:443) \
                        and {name, url} maps (or a node's mirrors: {containerd: DIR} or {registries_conf: FILE})";
        let list = match &raw.value {
            ScalarOr::Scalar(Scalar::Text(s)) if s == "single" => return Ok(FrontendSet::Single),
            ScalarOr::Scalar(Scalar::Text(s)) if s == "dns" => return Ok(FrontendSet::Dns),
            ScalarOr::Scalar(other) => {
                return Err(self.error(&raw.referenced, format!("`frontends`: {expected}, got {other}")));
            }
            ScalarOr::Structured(RawFrontendForm::Node(node)) => {
                return self.node_mirrors(node, &raw.referenced).map(FrontendSet::Node);
            }
            ScalarOr::Structured(RawFrontendForm::List(list)) => list,
        };
        if list.is_empty() {
            return Err(self.error(&raw.referenced, "`frontends`: the list is empty; leave it out for `single`"));
        }
        let mut frontends: Vec<FrontendSpec> = Vec::new();
        for entry in list {
            let frontend = match &entry.value {
                ScalarOr::Scalar(Scalar::Text(s)) => FrontendSpec::parse_address(s.trim())
                    .map_err(|e| self.error(&entry.referenced, format!("`frontends`: {e}")))?,
                ScalarOr::Scalar(other) => {
                    return Err(self.error(&entry.referenced, format!("`frontends`: {expected}, got {other}")));
                }
                ScalarOr::Structured(endpoint) => self.endpoint(endpoint)?,
            };
            if frontends.iter().any(|f| f.label() == frontend.label()) {
                return Err(self.error(
                    &entry.referenced,
                    format!("`frontends`: `{}` is listed twice; each frontend needs its own label", frontend.label()),
                ));
            }
            frontends.push(frontend);
        }
        Ok(FrontendSet::List(frontends))
    }

    /// `{containerd: DIR}` or `{registries_conf: FILE}`: exactly one, an absolute path
    /// (the file is read when the probe is planned: a node's configuration changes at run time).
    fn node_mirrors(&self, raw: &RawNodeMirrors, at: &Location) -> Result<NodeMirrors> {
        let (key, text, wrap): (&str, &Text, fn(PathBuf) -> NodeMirrors) = match (&raw.containerd, &raw.registries_conf)
        {
            (Some(dir), None) => ("containerd", dir, NodeMirrors::Containerd),
            (None, Some(file)) => ("registries_conf", file, NodeMirrors::RegistriesConf),
            (Some(_), Some(second)) => {
                return Err(self.error(
                    &second.referenced,
                    "`frontends`: give one of `containerd` and `registries_conf`: a node runs one container runtime",
                ));
            }
            (None, None) => {
                return Err(self.error(at, "`frontends`: the map needs `containerd: DIR` or `registries_conf: FILE`"));
            }
        };
        let path = self.path(key, text)?;
        if !path.is_absolute() {
            return Err(self.error(
                &text.referenced,
                format!("`{key}`: expected an absolute path (a node's own is /etc/…), got {:?}", text.value),
            ));
        }
        Ok(wrap(path))
    }

    fn endpoint(&self, raw: &RawFrontendEndpoint) -> Result<FrontendSpec> {
        let name = self.name("frontend", &raw.name)?;
        let url = self.url("url", &raw.url, true)?;
        let repository_prefix = match &raw.repository_prefix {
            None => None,
            Some(text) => {
                let prefix = text.value.trim_matches('/');
                let probe = format!("x.invalid/{prefix}/x");
                if prefix.is_empty() || ImageReference::parse_name(&probe).is_err() || text.value.starts_with('/') {
                    return Err(self.error(
                        &text.referenced,
                        format!(
                            "`repository_prefix`: expected repository path components like dockerhub-proxy/, got {:?}",
                            text.value
                        ),
                    ));
                }
                Some(format!("{prefix}/"))
            }
        };
        let ns = match &raw.ns {
            None => None,
            Some(text) => {
                let probe = format!("{}/x/y", text.value);
                let valid = ImageReference::names_registry(&probe)
                    && ImageReference::parse_name(&probe).is_ok_and(|r| r.repository == "x/y");
                if !valid {
                    return Err(self.error(
                        &text.referenced,
                        format!("`ns`: expected a registry host like docker.io or ghcr.io, got {:?}", text.value),
                    ));
                }
                Some(text.value.clone())
            }
        };
        Ok(FrontendSpec::Endpoint { name, url, repository_prefix, ns })
    }

    fn auth(&self, raw: &Spanned<ScalarOr<RawAuth>>) -> Result<Option<Auth>> {
        let auth = match &raw.value {
            ScalarOr::Scalar(Scalar::Text(s)) if s == "auto" => return Ok(Some(Auth::Auto)),
            ScalarOr::Scalar(other) => {
                return Err(self.error(
                    &raw.referenced,
                    format!(
                        "`auth`: expected `auto` or one of {{docker_config: …}}, {{username: …, password_file|password_env: …}}, \
                         {{ecr: {{}}}}, {{gcp: {{}}}}, {{acr: {{}}}}, {{credential_provider: {{command: …}}}}; got {other}"
                    ),
                ));
            }
            ScalarOr::Structured(auth) => auth,
        };
        if let Some(cloud) = self.cloud_auth(auth)? {
            return Ok(Some(Auth::Cloud(cloud)));
        }
        let docker_config = match &auth.docker_config {
            None | Some(Spanned { value: Scalar::Bool(false), .. }) => None,
            Some(Spanned { value: Scalar::Bool(true), .. }) => Some(None),
            Some(Spanned { value: Scalar::Text(path), .. }) if !path.trim().is_empty() => {
                Some(Some(PathBuf::from(path)))
            }
            Some(other) => {
                return Err(self.error(
                    &other.referenced,
                    format!(
                        "`docker_config`: expected true ($DOCKER_CONFIG/config.json) or the path of a config.json, got {}",
                        other.value
                    ),
                ));
            }
        };
        let password = match (&auth.password_file, &auth.password_env) {
            (Some(_), Some(env)) => {
                return Err(self.error(
                    &env.referenced,
                    "`auth`: at most one password source: `password_file` or `password_env`, not both",
                ));
            }
            (Some(file), None) => Some((PasswordSource::File(self.path("password_file", file)?), file.referenced)),
            (None, Some(env)) => {
                if !is_env_name(&env.value) {
                    return Err(self.error(
                        &env.referenced,
                        format!("`password_env`: expected an environment variable name, got {:?}", env.value),
                    ));
                }
                Some((PasswordSource::Env(env.value.clone()), env.referenced))
            }
            (None, None) => None,
        };
        match (docker_config, &auth.username, password) {
            (Some(_), Some(user), _) => {
                Err(self.error(&user.referenced, "`auth`: `docker_config` and `username` are alternatives; use one"))
            }
            (Some(_), None, Some((_, at))) => {
                Err(self.error(&at, "`auth`: a password goes with `username`, not with `docker_config`"))
            }
            (Some(path), None, None) => Ok(Some(Auth::DockerConfig(path))),
            (None, Some(user), Some((password, _))) => {
                Ok(Some(Auth::Basic { username: self.non_empty("username", user)?, password }))
            }
            (None, Some(user), None) => {
                Err(self.error(&user.referenced, "`auth`: `username` needs `password_file` or `password_env`"))
            }
            (None, None, Some((_, at))) => Err(self.error(&at, "`auth`: a password needs `username`")),
            (None, None, None) => Ok(None),
        }
    }

    /// The cloud form of `auth:` (`ecr`, `gcp`, `acr`, `credential_provider`), if it is one;
    /// it goes alone.
    fn cloud_auth(&self, auth: &RawAuth) -> Result<Option<CloudAuth>> {
        let mut forms: Vec<(CloudAuth, Location)> = Vec::new();
        for (cloud, value) in [(CloudAuth::Ecr, &auth.ecr), (CloudAuth::Gcp, &auth.gcp), (CloudAuth::Acr, &auth.acr)] {
            if let Some(value) = value {
                forms.push((cloud, value.referenced));
            }
        }
        if let Some(provider) = &auth.credential_provider {
            let provider_auth = CloudAuth::CredentialProvider(self.credential_provider(&provider.value)?);
            forms.push((provider_auth, provider.referenced));
        }
        let mut forms = forms.into_iter();
        let Some((cloud, at)) = forms.next() else { return Ok(None) };
        let second = forms.next();
        let other = second.as_ref().map(|(c, _)| c.key()).or_else(|| {
            [
                auth.docker_config.as_ref().map(|_| "docker_config"),
                auth.username.as_ref().map(|_| "username"),
                auth.password_file.as_ref().map(|_| "password_file"),
                auth.password_env.as_ref().map(|_| "password_env"),
            ]
            .into_iter()
            .flatten()
            .next()
        });
        if let Some(other) = other {
            let at = second.map_or(at, |(_, second_at)| second_at);
            return Err(self.error(&at, format!("`auth`: `{}` and `{other}` are alternatives; use one", cloud.key())));
        }
        Ok(Some(cloud))
    }

    /// `credential_provider: {command, args, env}`.
    fn credential_provider(&self, raw: &RawCredentialProvider) -> Result<CredentialProvider> {
        let command = self.path("command", &raw.command)?;
        let mut args = Vec::new();
        for arg in raw.args.iter().flatten() {
            if arg.value.chars().any(char::is_control) {
                return Err(self.error(&arg.referenced, "`args`: an argument must not contain control characters"));
            }
            args.push(arg.value.clone());
        }
        let mut env = Vec::new();
        if let Some(vars) = &raw.env {
            for (name, value) in &vars.value {
                if !is_env_name(name) || value.contains('\0') {
                    return Err(self.error(
                        &vars.referenced,
                        format!("`env`: expected environment variable names with values, got {name:?}"),
                    ));
                }
                env.push((name.clone(), value.clone()));
            }
        }
        Ok(CredentialProvider { command, args, env })
    }

    /// The files a registry's `tls:` and `auth:` name, with their positions (already validated).
    fn file_keys(&self, raw: &RawRegistry) -> Vec<FileKey> {
        let mut files = Vec::new();
        let mut named = |key: &'static str, text: &Text| {
            files.push(FileKey {
                key,
                path: PathBuf::from(text.value.trim()),
                position: Position::from_location(text.referenced),
            });
        };
        if let Some(tls) = &raw.tls {
            for (key, text) in [
                ("ca_file", &tls.value.ca_file),
                ("client_cert", &tls.value.client_cert),
                ("client_key", &tls.value.client_key),
            ] {
                text.iter().for_each(|t| named(key, t));
            }
        }
        if let Some(Spanned { value: ScalarOr::Structured(auth), .. }) = &raw.auth {
            auth.password_file.iter().for_each(|t| named("password_file", t));
            if let Some(Spanned { value: Scalar::Text(path), referenced, .. }) = &auth.docker_config {
                files.push(FileKey {
                    key: "docker_config",
                    path: PathBuf::from(path.trim()),
                    position: Position::from_location(*referenced),
                });
            }
        }
        files
    }

    fn tls(&self, raw: &Spanned<RawTls>) -> Result<TlsConfig> {
        let tls = &raw.value;
        let path = |key: &str, t: &Option<Text>| t.as_ref().map(|t| self.path(key, t)).transpose();
        let config = TlsConfig {
            ca_file: path("ca_file", &tls.ca_file)?,
            client_cert: path("client_cert", &tls.client_cert)?,
            client_key: path("client_key", &tls.client_key)?,
        };
        if config.client_cert.is_some() != config.client_key.is_some() {
            let at = tls.client_cert.as_ref().or(tls.client_key.as_ref()).map_or(raw.referenced, |t| t.referenced);
            return Err(self.error(&at, "`tls`: `client_cert` and `client_key` go together"));
        }
        Ok(config)
    }

    fn probe(&self, raw: RawProbe, config: &Config) -> Result<ProbeConfig> {
        let name = self.name("probe", &raw.name)?;
        if let Some(registry) = &raw.registry {
            if config.registry(&registry.value).is_none() {
                return Err(self.error(&registry.referenced, unknown_registry(&registry.value, &config.registries)));
            }
        }
        let kinds: Vec<(&'static str, Location)> = [
            ("image", raw.image.as_ref().map(|s| s.referenced)),
            ("catalog", raw.catalog.as_ref().map(|s| s.referenced)),
            ("kubernetes", raw.kubernetes.as_ref().map(|s| s.referenced)),
            ("canary", raw.canary.as_ref().map(|s| s.referenced)),
        ]
        .into_iter()
        .filter_map(|(key, at)| at.map(|at| (key, at)))
        .collect();
        let one_of = "a probe has exactly one of `image`, `catalog`, `kubernetes`, `canary`";
        if let [(first, _), (second, at), ..] = kinds.as_slice() {
            return Err(self.error(at, format!("probe `{name}` has both `{first}` and `{second}`: {one_of}")));
        }
        if let (Some(tags), None) = (&raw.tags, &raw.image) {
            return Err(self.error(&tags.referenced, "`tags` goes with `image`: it picks the tags of that repository"));
        }
        let needs_registry = |key: &str, verb: &str, at: &Location| match raw.registry {
            Some(_) => Ok(()),
            None => Err(self.error(at, format!("`{key}` needs `registry:`, the registry to {verb}"))),
        };
        let kind = match (&raw.image, &raw.catalog, &raw.kubernetes, &raw.canary) {
            (Some(image), ..) => {
                let tags = raw.tags.as_ref().map(|t| self.tags(t)).transpose()?;
                ProbeKind::Image { image: image.value.trim().to_string(), tags }
            }
            (_, Some(catalog), ..) => {
                needs_registry("catalog", "list", &catalog.referenced)?;
                ProbeKind::Catalog(self.catalog(&catalog.value)?)
            }
            (_, _, Some(kubernetes), _) => {
                let mut rule = self.kubernetes(&kubernetes.value)?;
                rule.registry_host = raw.registry.as_ref().and_then(|r| config.registry(&r.value)).map(|r| r.host());
                ProbeKind::Kubernetes(rule)
            }
            (_, _, _, Some(canary)) => {
                needs_registry("canary", "push to", &canary.referenced)?;
                ProbeKind::Canary(self.canary(&canary.value)?)
            }
            (None, None, None, None) => {
                return Err(self.error(&raw.name.referenced, format!("probe `{name}`: {one_of}; it has none")));
            }
        };
        let mut probe = ProbeConfig::new(&name, kind);
        probe.origin.name = Position::from_location(raw.name.referenced);
        probe.origin.registry = raw.registry.as_ref().and_then(|r| Position::from_location(r.referenced));
        probe.origin.image = raw.image.as_ref().and_then(|i| Position::from_location(i.referenced));
        probe.registry = raw.registry.map(|r| r.value);
        probe.severity = raw.severity.unwrap_or_default();
        if let Some(expect) = &raw.expect {
            if raw.canary.is_some() {
                return Err(self.error(&expect.referenced, "`expect` goes with pulled images, not with `canary`"));
            }
            probe.expect = self.expect(&expect.value)?;
        }
        if let Some(signatures) = &raw.signatures {
            if raw.canary.is_some() {
                return Err(
                    self.error(&signatures.referenced, "`signatures` goes with pulled images, not with `canary`")
                );
            }
            probe.signatures = Some(self.signatures(&signatures.value, &signatures.referenced)?);
        }
        if let Some(t) = &raw.interval {
            probe.interval = Some(self.positive_duration("interval", t)?);
        }
        if let Some(t) = &raw.timeout {
            probe.timeout = Some(self.positive_duration("timeout", t)?);
        }
        if let Some(p) = &raw.platforms {
            probe.platforms = Some(self.platforms("platforms", p)?);
        }
        if matches!(probe.kind, ProbeKind::Image { .. }) {
            let (reference, _) = config.resolve_image(&probe)?;
            if let (Some(tags), true) = (&raw.tags, reference.tag.is_some() || reference.digest.is_some()) {
                return Err(self.error(
                    &tags.referenced,
                    format!(
                        "`tags` picks the tags of `image`, so `image` must have no tag or digest (got {:?})",
                        probe_image(&probe)
                    ),
                ));
            }
        }
        Ok(probe)
    }

    fn tags(&self, raw: &Spanned<RawTags>) -> Result<TagRule> {
        let pattern = self.regex("match", &raw.value.pattern)?;
        let newest = match &raw.value.newest {
            Some(n) => self.count("newest", n, 1, 1_000)? as usize,
            None => 1,
        };
        Ok(TagRule { pattern, newest })
    }

    fn catalog(&self, raw: &RawCatalog) -> Result<CatalogDiscovery> {
        let pattern = raw.pattern.as_ref().map(|p| self.regex("match", p)).transpose()?;
        let sample = match &raw.sample {
            Some(n) => self.count("sample", n, 1, 100_000)? as usize,
            None => 5,
        };
        let tag = match &raw.tag {
            Some(t) if reference::is_valid_tag(&t.value) => t.value.clone(),
            Some(t) => {
                return Err(self.error(&t.referenced, format!("`tag`: {:?} is not a valid tag", t.value)));
            }
            None => reference::DEFAULT_TAG.to_string(),
        };
        Ok(CatalogDiscovery { pattern, sample, tag })
    }

    fn kubernetes(&self, raw: &RawKubernetes) -> Result<KubernetesDiscovery> {
        let mut rule = KubernetesDiscovery::default();
        for ns in raw.namespaces.iter().flatten() {
            let s = &ns.value;
            let valid = !s.is_empty()
                && s.len() <= 63
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-');
            if !valid {
                return Err(self.error(
                    &ns.referenced,
                    format!("`namespaces`: {s:?} is not a Kubernetes namespace name (lowercase letters, digits, `-`)"),
                ));
            }
            if !rule.namespaces.contains(s) {
                rule.namespaces.push(s.clone());
            }
        }
        if let Some(selector) = &raw.label_selector {
            rule.label_selector = Some(self.label_selector(selector)?);
        }
        if let Some(text) = &raw.api_server {
            let url = self.url("api_server", text, false)?;
            if url.query().is_some() || url.fragment().is_some() {
                return Err(self.error(
                    &text.referenced,
                    format!(
                        "`api_server`: expected the API server's base URL, without query or fragment, got {:?}",
                        text.value
                    ),
                ));
            }
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if url.scheme() == "http" && !loopback {
                return Err(self.error(
                    &text.referenced,
                    format!(
                        "`api_server`: plain http:// only to a loopback address (kubectl proxy); use https:// for {:?}",
                        url.host_str().unwrap_or_default()
                    ),
                ));
            }
            rule.api_server = Some(url);
        }
        rule.token_file = raw.token_file.as_ref().map(|t| self.path("token_file", t)).transpose()?;
        rule.ca_file = raw.ca_file.as_ref().map(|t| self.path("ca_file", t)).transpose()?;
        if let Some(pull_secrets) = raw.pull_secrets {
            rule.pull_secrets = pull_secrets;
        }
        if let Some(n) = &raw.max_images {
            rule.max_images = self.count("max_images", n, 1, 10_000)? as usize;
        }
        Ok(rule)
    }

    /// A label selector as the API server parses it: requirements separated by commas,
    /// each `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`,
    /// `key notin (a,b)`, `key>N` or `key<N`.
    fn label_selector(&self, text: &Text) -> Result<String> {
        let selector = text.value.trim();
        let fail = |why: String| {
            self.error(&text.referenced, format!("`label_selector`: {why} (e.g. `app=web,tier in (frontend,api)`)"))
        };
        if selector.is_empty() || selector.len() > 4096 || selector.chars().any(char::is_control) {
            return Err(fail(format!("expected a Kubernetes label selector, got {:?}", text.value)));
        }
        const KEY: &str = r"(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?";
        const VALUE: &str = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?";
        let requirement = Regex::new(&format!(
            r"^(?:!?\s*{KEY}|{KEY}\s*(?:==?|!=)\s*{VALUE}|{KEY}\s*[<>]\s*[0-9]+|{KEY}\s+(?:in|notin)\s*\(\s*{VALUE}(?:\s*,\s*{VALUE})*\s*\))$"
        ))
        .map_err(|e| fail(format!("internal pattern: {e}")))?;
        let mut depth = 0usize;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, c) in selector.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    parts.push(&selector[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&selector[start..]);
        for part in parts {
            if !requirement.is_match(part.trim()) {
                return Err(fail(format!("{:?} is not a label requirement", part.trim())));
            }
        }
        Ok(selector.to_string())
    }

    fn canary(&self, raw: &RawCanary) -> Result<CanaryConfig> {
        let mut canary = CanaryConfig::default();
        let repo = &raw.repository;
        let valid = ImageReference::parse_name(&format!("x.invalid/{}", repo.value))
            .is_ok_and(|r| r.repository == repo.value && r.tag.is_none() && r.digest.is_none());
        if !valid {
            return Err(self.error(
                &repo.referenced,
                format!(
                    "`repository`: expected a repository path like pullprobe/canary (no tag), got {:?}",
                    repo.value
                ),
            ));
        }
        canary.repository = repo.value.clone();
        if let Some(t) = &raw.consistency_deadline {
            canary.consistency_deadline = self.positive_duration("consistency_deadline", t)?;
        }
        if let Some(t) = &raw.size {
            canary.size = self.size("size", t)?;
            if canary.size == 0 {
                return Err(self.error(&t.referenced, "`size`: must be more than 0 bytes"));
            }
        }
        if let Some(t) = &raw.chunk_size {
            canary.chunk_size = self.size("chunk_size", t)?;
        }
        if canary.chunk_size == 0 || canary.chunk_size > canary.size {
            let at = raw.chunk_size.as_ref().or(raw.size.as_ref()).map_or(repo.referenced, |t| t.referenced);
            return Err(self.error(
                &at,
                format!(
                    "`chunk_size`: must be from 1 byte to `size` ({} bytes), got {}",
                    canary.size, canary.chunk_size
                ),
            ));
        }
        if let Some(n) = &raw.sessions {
            canary.sessions = self.count("sessions", n, 1, 100)? as usize;
        }
        Ok(canary)
    }

    fn expect(&self, raw: &RawExpect) -> Result<Expectations> {
        let mut expect = Expectations::default();
        for entry in raw.paths.iter().flatten() {
            let (path, at) = match &entry.value {
                ScalarOr::Scalar(Scalar::Text(path)) => (path.clone(), entry.referenced),
                ScalarOr::Structured(p) => (p.path.value.clone(), p.path.referenced),
                ScalarOr::Scalar(other) => {
                    return Err(self.error(
                        &entry.referenced,
                        format!(
                            "`paths`: expected a path like /etc/app.conf or {{path: …, absent: true}}, got {other}"
                        ),
                    ));
                }
            };
            if !path.starts_with('/') || path.chars().any(char::is_control) {
                return Err(
                    self.error(&at, format!("`paths`: expected an absolute path like /etc/app.conf, got {path:?}"))
                );
            }
            let mut expectation = PathExpectation::exists(&path);
            if let ScalarOr::Structured(p) = &entry.value {
                self.path_checks(p, &mut expectation)?;
            }
            expect.paths.push(expectation);
        }
        if let Some(t) = &raw.max_age {
            expect.max_age = Some(self.positive_duration("max_age", t)?);
        }
        if let Some(labels) = &raw.labels {
            if let Some(key) = labels.value.keys().find(|k| k.is_empty() || k.chars().any(char::is_control)) {
                return Err(self.error(&labels.referenced, format!("`labels`: {key:?} is not a label key")));
            }
            expect.labels = labels.value.clone();
        }
        Ok(expect)
    }

    /// `signatures: {require, keys, platforms}`. `require` defaults to `[cosign]`; each
    /// key file is read and must be an ECDSA P-256 public key in PEM.
    fn signatures(&self, raw: &RawSignatures, at: &Location) -> Result<SignaturePolicy> {
        let mut require = Vec::new();
        match &raw.require {
            None => require.push(RequiredReferrer::Cosign),
            Some(list) if list.value.is_empty() => {
                return Err(self.error(
                    &list.referenced,
                    "`require`: the list is empty; name at least one kind (cosign, or an artifactType), or leave it out for [cosign]",
                ));
            }
            Some(list) => {
                for kind in &list.value {
                    let required = self.required_referrer(kind)?;
                    if !require.contains(&required) {
                        require.push(required);
                    }
                }
            }
        }
        let mut keys = Vec::new();
        for key in raw.keys.iter().flatten() {
            let path = self.path("keys", key)?;
            let pem = std::fs::read(&path).map_err(|e| {
                self.error(&key.referenced, format!("`keys`: cannot read {}: {}", path.display(), io_reason(&e)))
            })?;
            let text = String::from_utf8_lossy(&pem);
            let parsed = crate::signature::PublicKey::from_pem(&key.value, &text)
                .map_err(|why| self.error(&key.referenced, format!("`keys`: {} {why}", path.display())))?;
            keys.push(parsed);
        }
        if raw.keys.as_ref().is_some_and(Vec::is_empty) {
            return Err(self.error(at, "`keys`: the list is empty; leave it out to check signatures without keys"));
        }
        Ok(SignaturePolicy { require, keys, platforms: raw.platforms.unwrap_or(false) })
    }

    /// `cosign`, or an artifactType: a media type `type/subtype` (RFC 6838 characters).
    fn required_referrer(&self, kind: &Text) -> Result<RequiredReferrer> {
        let value = kind.value.trim();
        if value == "cosign" {
            return Ok(RequiredReferrer::Cosign);
        }
        let token = |s: &str| {
            !s.is_empty() && s.len() <= 127 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        match value.split_once('/') {
            Some((kind_type, subtype)) if token(kind_type) && token(subtype) => {
                Ok(RequiredReferrer::ArtifactType(value.to_string()))
            }
            _ => Err(self.error(
                &kind.referenced,
                format!(
                    "`require`: unknown kind {value:?}: expected `cosign` or an artifactType (a media type like application/spdx+json)"
                ),
            )),
        }
    }

    /// `type`, `min_size`, `mode`, `sha256` and `absent` of one `{path: …}` entry.
    fn path_checks(&self, raw: &RawPathExpect, expectation: &mut PathExpectation) -> Result<()> {
        expectation.absent = raw.absent;
        if let Some(kind) = &raw.kind {
            expectation.kind = Some(match kind.value.as_str() {
                "file" => PathType::File,
                "dir" | "directory" => PathType::Dir,
                "symlink" => PathType::Symlink,
                other => {
                    return Err(
                        self.error(&kind.referenced, format!("`type`: expected file, dir or symlink, got {other:?}"))
                    );
                }
            });
        }
        if let Some(size) = &raw.min_size {
            expectation.min_size = Some(self.size("min_size", size)?);
        }
        if let Some(mode) = &raw.mode {
            let digits = mode.value.trim();
            let digits = digits.strip_prefix("0o").unwrap_or(digits);
            let parsed = u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777 && !digits.is_empty());
            let Some(parsed) = parsed else {
                return Err(self.error(
                    &mode.referenced,
                    format!("`mode`: expected octal permission bits like \"0755\" or \"4755\", got {:?}", mode.value),
                ));
            };
            expectation.mode = Some(parsed);
        }
        if let Some(sha) = &raw.sha256 {
            let text = sha.value.trim();
            let full = if text.starts_with("sha256:") { text.to_string() } else { format!("sha256:{text}") };
            let digest = full.parse().map_err(|_| {
                self.error(&sha.referenced, format!("`sha256`: expected 64 lowercase hex characters, got {text:?}"))
            })?;
            expectation.sha256 = Some(digest);
        }
        let at = &raw.path.referenced;
        let checks = expectation.kind.is_some()
            || expectation.min_size.is_some()
            || expectation.mode.is_some()
            || expectation.sha256.is_some();
        if expectation.absent && checks {
            return Err(self.error(at, "`absent: true` cannot be combined with `type`, `min_size`, `mode` or `sha256`"));
        }
        let content_checks = expectation.min_size.is_some() || expectation.sha256.is_some();
        match expectation.kind {
            Some(PathType::Symlink) if content_checks || expectation.mode.is_some() => Err(self.error(
                at,
                "`type: symlink` checks the link itself; `min_size`, `mode` and `sha256` go with the file it points to",
            )),
            Some(PathType::Dir) if content_checks => {
                Err(self.error(at, "`min_size` and `sha256` are for regular files, not `type: dir`"))
            }
            _ => Ok(()),
        }
    }

    fn alerting(&self, raw: Option<RawAlerting>, defaults: &Defaults) -> Result<AlertingConfig> {
        let mut alerting = AlertingConfig::default();
        let Some(raw) = raw else { return Ok(alerting) };
        if let Some(am) = &raw.alertmanager {
            let urls = am.value.urls.iter().map(|u| self.url("urls", u, false)).collect::<Result<Vec<_>>>()?;
            if urls.is_empty() {
                return Err(self.error(&am.referenced, "`alertmanager`: `urls` is empty; list at least one"));
            }
            let mut labels = std::collections::BTreeMap::new();
            if let Some(raw_labels) = &am.value.labels {
                for (key, value) in &raw_labels.value {
                    let valid = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        && !key.starts_with("__");
                    if !valid {
                        return Err(self.error(
                            &raw_labels.referenced,
                            format!("`labels`: {key:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not __…)"),
                        ));
                    }
                    if RESERVED_LABELS.contains(&key.as_str()) {
                        return Err(self.error(
                            &raw_labels.referenced,
                            format!("`labels`: `{key}` is set by pullprobe itself; choose another name"),
                        ));
                    }
                    labels.insert(key.clone(), value.clone());
                }
            }
            let runbook_url = am.value.runbook_url.as_ref().map(|u| self.url("runbook_url", u, false)).transpose()?;
            let resolve_timeout = match &am.value.resolve_timeout {
                Some(t) => self.positive_duration("resolve_timeout", t)?,
                None => defaults.interval.saturating_mul(4),
            };
            let access = self.endpoint_access(&am.value.auth, &am.value.tls)?;
            alerting.alertmanager = Some(AlertmanagerConfig { urls, labels, runbook_url, resolve_timeout, access });
        }
        if let Some(pg) = &raw.pushgateway {
            let url = self.url("url", &pg.url, false)?;
            let job = match &pg.job {
                Some(job) => self.non_empty("job", job)?,
                None => "pullprobe".to_string(),
            };
            let access = self.endpoint_access(&pg.auth, &pg.tls)?;
            alerting.pushgateway = Some(PushgatewayConfig { url, job, access });
        }
        if let Some(after) = &raw.after {
            alerting.after = self.after(after)?;
        }
        Ok(alerting)
    }

    /// `auth:` and `tls:` of an Alertmanager or a Pushgateway.
    fn endpoint_access(
        &self,
        auth: &Option<Spanned<RawEndpointAuth>>,
        tls: &Option<Spanned<RawTls>>,
    ) -> Result<EndpointAccess> {
        let tls = tls.as_ref().map(|t| self.tls(t)).transpose()?.unwrap_or_default();
        let Some(raw) = auth else { return Ok(EndpointAccess { auth: None, tls }) };
        let a = &raw.value;
        let password = self.secret_source("password", &a.password_file, &a.password_env)?;
        let token = self.secret_source("bearer_token", &a.bearer_token_file, &a.bearer_token_env)?;
        let auth = match (&a.username, password, token) {
            (Some(user), Some(password), None) => {
                EndpointAuth::Basic { username: self.non_empty("username", user)?, password }
            }
            (None, None, Some(token)) => EndpointAuth::Bearer(token),
            (Some(_), _, Some(_)) | (None, Some(_), Some(_)) => {
                return Err(self.error(
                    &raw.referenced,
                    "`auth`: `username` + a password and a bearer token are alternatives; use one",
                ));
            }
            (Some(user), None, None) => {
                return Err(self.error(&user.referenced, "`auth`: `username` needs `password_file` or `password_env`"));
            }
            (None, Some(_), None) => return Err(self.error(&raw.referenced, "`auth`: a password needs `username`")),
            (None, None, None) => {
                return Err(self.error(
                    &raw.referenced,
                    "`auth`: expected {username, password_file|password_env} or {bearer_token_file|bearer_token_env}",
                ));
            }
        };
        Ok(EndpointAccess { auth: Some(auth), tls })
    }

    /// A secret read at run time from `<key>_file` or `<key>_env` (at most one).
    fn secret_source(&self, key: &str, file: &Option<Text>, env: &Option<Text>) -> Result<Option<PasswordSource>> {
        match (file, env) {
            (Some(_), Some(env)) => Err(self
                .error(&env.referenced, format!("`auth`: at most one source: `{key}_file` or `{key}_env`, not both"))),
            (Some(file), None) => Ok(Some(PasswordSource::File(self.path(&format!("{key}_file"), file)?))),
            (None, Some(env)) => {
                if !is_env_name(&env.value) {
                    return Err(self.error(
                        &env.referenced,
                        format!("`{key}_env`: expected an environment variable name, got {:?}", env.value),
                    ));
                }
                Ok(Some(PasswordSource::Env(env.value.clone())))
            }
            (None, None) => Ok(None),
        }
    }

    /// `after` above 1 without a Pushgateway: `now` (a CronJob, a fresh process
    /// each run) counts failed runs only through the Pushgateway's read-back, so
    /// there every failure pages on its first run. `serve` counts in memory.
    fn after_without_pushgateway(&self, at: &Location, alerting: &AlertingConfig) -> Option<ConfigError> {
        let waits = alerting.after.default > 1 || alerting.after.integrity > 1;
        (waits && alerting.pushgateway.is_none()).then(|| {
            self.error(
                at,
                "`after`: without `alerting.pushgateway`, `pullprobe now` cannot count failed runs (only a \
                 Pushgateway keeps them between CronJob runs), so every failure pages on its first run; \
                 `serve` counts them in memory",
            )
        })
    }

    fn after(&self, raw: &Spanned<ScalarOr<RawAfter>>) -> Result<AlertAfter> {
        const MAX: u64 = 1_000;
        match &raw.value {
            ScalarOr::Scalar(Scalar::Integer(n)) if (1..=i128::from(MAX)).contains(n) => {
                let n = *n as u32;
                Ok(AlertAfter { default: n, integrity: n })
            }
            ScalarOr::Scalar(other) => Err(self.error(
                &raw.referenced,
                format!(
                    "`after`: expected a number of failed runs from 1 to {MAX}, or {{default: N, integrity: N}}, got {other}"
                ),
            )),
            ScalarOr::Structured(map) => {
                let default = match &map.default {
                    Some(n) => self.count("default", n, 1, MAX)? as u32,
                    None => 1,
                };
                let integrity = match &map.integrity {
                    Some(n) => self.count("integrity", n, 1, MAX)? as u32,
                    None => default,
                };
                Ok(AlertAfter { default, integrity })
            }
        }
    }

    fn serve(&self, raw: Option<RawServe>) -> Result<ServeConfig> {
        let mut serve = ServeConfig::default();
        let Some(raw) = raw else { return Ok(serve) };
        for pattern in raw.allow_targets.into_iter().flatten() {
            if pattern.value.is_empty() || pattern.value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(self.error(
                    &pattern.referenced,
                    format!(
                        "`allow_targets`: expected a reference pattern like registry.example.org/*, got {:?}",
                        pattern.value
                    ),
                ));
            }
            serve.allow_targets.push(TargetPattern(pattern.value.clone()));
        }
        Ok(serve)
    }
}

/// Why a file could not be read, without the OS's error number.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// `NAME`: a letter or `_`, then letters, digits and `_`.
fn is_env_name(name: &str) -> bool {
    name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn probe_image(probe: &ProbeConfig) -> &str {
    match &probe.kind {
        ProbeKind::Image { image, .. } => image,
        _ => "",
    }
}
