//! What `now` and `check` ask for, planned: images given on the command line,
//! the probes of a config (all, or those named), and the command line's
//! overrides, into one [`Plan`] with the options of its round.

use std::path::PathBuf;

use crate::config::{Config, ProbeConfig, ProbeKind};
use crate::platform::PlatformSelection;
use crate::probe::connection::{self, ConnectionOverrides};
use crate::probe::plan::{self, Overrides, Plan, PlanError};
use crate::probe::run::{Job, RoundOptions};
use crate::shard::Shard;

/// One run the command line asks for, as given (DESIGN.md, "Commands").
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Image references to probe with the config's defaults.
    pub images: Vec<String>,
    /// probes.yaml; with no image and no config, `./probes.yaml`.
    pub config: Option<PathBuf>,
    /// `--probe`: only these probes of the config.
    pub probes: Vec<String>,
    /// `--frontend`: exactly these frontends, each separately.
    pub frontends: Vec<String>,
    /// `--platform`: `all` or OS/ARCH[/VARIANT], instead of each probe's.
    pub platform: Option<String>,
    pub plain_http: bool,
    pub insecure: bool,
    /// `--expect-path`: added to every probe's `expect:`.
    pub expect_paths: Vec<String>,
    /// `--no-push`: skip `canary:` probes.
    pub no_push: bool,
    /// The round number (default: the wall clock over the interval).
    pub round: Option<u64>,
    /// `--shard`: only the images this shard owns ([`Shard::ALL`] without it).
    pub shard: Shard,
}

impl Request {
    /// Whether the run sees fewer frontends or platforms than its probes have:
    /// then it cannot tell which of their series vanished.
    pub fn narrows(&self) -> bool {
        !self.frontends.is_empty() || self.platform.is_some()
    }
}

/// A command-line run, planned.
#[derive(Debug)]
pub struct CommandPlan {
    pub plan: Plan,
    /// The config read, if any (its `alerting:` and severities are delivery's).
    pub config: Option<Config>,
    /// How its round runs (`defaults.concurrency`, `limits.max_round_bytes`, the round number).
    pub options: RoundOptions,
}

/// Plan what the command line asks for: the images given (with the config's
/// defaults and limits, or the built-in ones), then the config's probes it selects.
pub async fn plan_command(request: &Request) -> Result<CommandPlan, PlanError> {
    let config_path = match (&request.config, request.images.is_empty()) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => Some(PathBuf::from("probes.yaml")),
        (None, false) => None,
    };
    if let (None, Some(probe)) = (&config_path, request.probes.first()) {
        return Err(PlanError::ProbeWithoutConfig(probe.clone()));
    }
    let config = match &config_path {
        Some(path) => Some(Config::load(path)?),
        None => None,
    };
    let platforms = match &request.platform {
        Some(given) => {
            Some(PlatformSelection::parse(given).map_err(|error| PlanError::Platform { given: given.clone(), error })?)
        }
        None => None,
    };
    if request.insecure {
        tracing::warn!("--insecure: TLS certificates are not verified");
    }
    let overrides = Overrides {
        connection: ConnectionOverrides {
            plain_http: request.plain_http,
            insecure: request.insecure,
            frontends: request.frontends.clone(),
            timeout: None,
        },
        platforms,
        expect_paths: request.expect_paths.clone(),
        shard: request.shard,
    };
    let base = config.clone().unwrap_or_default();
    let mut planned = Plan::default();
    for raw in &request.images {
        let job = plan::job_for_image(&base, raw, &overrides).await?;
        if let Some(registry) = base.registry_for(&job.target.image) {
            connection::check_files(&base, registry)?;
        }
        if request.shard.owns(&job.target.image.to_string()) {
            planned.jobs.push(Job::Pull(job));
        }
    }
    let mut skipped_canaries = 0;
    if let Some(config) = &config {
        for probe in selected_probes(config, request)? {
            if matches!(probe.kind, ProbeKind::Canary(_)) && request.no_push {
                skipped_canaries += 1;
                continue;
            }
            plan::check_probe_files(config, probe)?;
            let slot = request.round.unwrap_or_else(|| plan::clock_slot(config.interval_for(probe)));
            planned.extend(plan::plan_probe(config, probe, &overrides, slot).await?);
        }
    }
    // A shard may own nothing of a small config: an empty run, not a mistake.
    if planned.jobs.is_empty() && !request.shard.is_split() {
        return Err(PlanError::NothingToProbe { skipped_canaries });
    }
    let round = request.round.unwrap_or_else(|| plan::clock_slot(base.defaults.interval));
    Ok(CommandPlan { plan: planned, options: RoundOptions::of(&base, round), config })
}

/// The config's probes the request runs, in config order: those `--probe`
/// names, else all — or none when images are given with `-c` and no
/// `--probe` (the config then gives defaults, not probes).
fn selected_probes<'a>(config: &'a Config, request: &Request) -> Result<Vec<&'a ProbeConfig>, PlanError> {
    if let Some(unknown) = request.probes.iter().find(|wanted| !config.probes.iter().any(|p| &p.name == *wanted)) {
        return Err(PlanError::UnknownProbe(unknown.clone()));
    }
    if !request.images.is_empty() && request.probes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(config.probes.iter().filter(|p| request.probes.is_empty() || request.probes.contains(&p.name)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "registries:\n  - name: prod\n    url: https://docker-registry.example.org\nprobes:\n  \
                          - {name: write-path, registry: prod, canary: {repository: pullprobe/canary}}\n";

    fn with_config(request: Request) -> (tempfile::TempDir, Request) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("probes.yaml");
        std::fs::write(&path, CONFIG).expect("probes.yaml written");
        (dir, Request { config: Some(path), ..request })
    }

    #[tokio::test]
    async fn a_probe_without_a_config_is_a_usage_error() {
        let request = Request { images: vec!["alpine".into()], probes: vec!["golden".into()], ..Request::default() };
        let error = plan_command(&request).await.expect_err("--probe without -c");
        assert!(matches!(error, PlanError::ProbeWithoutConfig(_)), "{error:?}");
        assert!(error.to_string().contains("needs the config"), "{error}");
    }

    #[tokio::test]
    async fn a_platform_that_does_not_parse_is_a_usage_error() {
        let request = Request { images: vec!["alpine".into()], platform: Some("linux".into()), ..Request::default() };
        let error = plan_command(&request).await.expect_err("linux alone is not a platform");
        assert!(matches!(&error, PlanError::Platform { given, .. } if given == "linux"), "{error:?}");
        assert!(error.to_string().starts_with("--platform \"linux\": expected a platform"), "{error}");
    }

    #[tokio::test]
    async fn a_probe_the_config_does_not_have_is_named() {
        let (_dir, request) = with_config(Request { probes: vec!["golden-base".into()], ..Request::default() });
        let error = plan_command(&request).await.expect_err("no such probe");
        assert!(matches!(&error, PlanError::UnknownProbe(name) if name == "golden-base"), "{error:?}");
        assert_eq!(error.to_string(), "--probe \"golden-base\": no such probe in the config");
    }

    #[tokio::test]
    async fn skipped_canaries_leave_nothing_to_probe_and_say_so() {
        let (_dir, request) = with_config(Request { no_push: true, ..Request::default() });
        let error = plan_command(&request).await.expect_err("the only probe is a canary");
        assert!(matches!(error, PlanError::NothingToProbe { skipped_canaries: 1 }), "{error:?}");
        assert!(error.to_string().ends_with("(--no-push skipped 1 canary probe(s))"), "{error}");
    }
}
