//! From configuration to a [`Plan`]: the jobs of one run, each ready to
//! probe — which image, which frontends, which TLS settings and limits.
//! `now`, `check`, `serve` and `/probe` all plan through here and run the plan
//! with [`crate::probe::run::run`], so a probe means the same in every mode.
//!
//! [`plan_probe`] plans one configured probe of any kind; a discovery rule is
//! expanded there, once per run, into one pull job per image, and what the rule
//! learns about an image travels on its job. The shard ([`crate::shard`])
//! narrows the run after that expansion and before any job is built (no DNS
//! lookups, no credentials for images another shard owns), the same in every mode.
//! [`command`] plans what the command line asks for, [`jobs`] builds one job.

pub mod command;
pub mod jobs;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::config::{Config, ConfigError, ProbeConfig, ProbeKind, RegistryConfig};
use crate::platform::{PlatformError, PlatformSelection};
use crate::probe::connection::{self, ConnectionOverrides};
use crate::probe::discover::{self, Coverage, Found, RuleError};
use crate::probe::run::{Job, PullJob};
use crate::shard::{self, Shard};

pub use self::command::{CommandPlan, Request, plan_command};
pub use self::jobs::{job_for_image, job_for_probe};

/// What the command line (or a `/probe` request) overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub connection: ConnectionOverrides,
    /// `--platform`: instead of each probe's `platforms`.
    pub platforms: Option<PlatformSelection>,
    /// `--expect-path`: paths that must exist, added to every probe's `expect:`.
    pub expect_paths: Vec<String>,
    /// `--shard`: only the images this shard owns.
    pub shard: Shard,
}

/// Why a run cannot be planned: pullprobe's own problem (a usage or config
/// error), never the registry's — `now` exits 2, `check` is UNKNOWN, `serve`
/// logs it and keeps the probe's last series.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// probes.yaml does not load or validate (`FILE:LINE:COLUMN: message`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--platform` is not a platform selection.
    #[error("--platform {given:?}: {error}")]
    Platform {
        given: String,
        #[source]
        error: PlatformError,
    },
    /// `--expect-path` is not an absolute path.
    #[error("{0}")]
    ExpectPath(String),
    /// `--probe NAME` names no probe of the config.
    #[error("--probe {0:?}: no such probe in the config")]
    UnknownProbe(String),
    /// `--probe NAME` with images and no `--config`: there is no probe to select.
    #[error("--probe {0:?} needs the config that has it (-c probes.yaml); with an IMAGE and no -c there are no probes")]
    ProbeWithoutConfig(String),
    /// No job left (with the canaries `--no-push` skipped).
    #[error("nothing to probe: give an IMAGE or a config with probes{}", skipped_canaries_note(*.skipped_canaries))]
    NothingToProbe { skipped_canaries: usize },
    /// One probe cannot be probed as written: a configured probe, or an ad-hoc
    /// image (`probe` is then its reference). The message names what is wrong.
    #[error("{message}")]
    Probe { probe: String, message: String },
}

impl PlanError {
    fn probe(probe: &str, message: impl Into<String>) -> PlanError {
        PlanError::Probe { probe: probe.to_string(), message: message.into() }
    }
}

impl From<RuleError> for PlanError {
    fn from(error: RuleError) -> PlanError {
        let message = error.to_string();
        PlanError::Probe { probe: error.probe, message }
    }
}

fn skipped_canaries_note(skipped: usize) -> String {
    if skipped > 0 { format!(" (--no-push skipped {skipped} canary probe(s))") } else { String::new() }
}

/// One run, planned.
#[derive(Debug, Default)]
pub struct Plan {
    /// Every job of the run, in plan order.
    pub jobs: Vec<Job>,
    /// Per discovery probe (by name), failed or not: what its rule stands for
    /// now, so series of images it did not probe this run are kept.
    pub coverage: BTreeMap<String, Coverage>,
    /// Per probe whose images are all known this run (not one whose discovery
    /// failed): the `image` labels of the units ([`shard::unit`]) this shard
    /// owns, probed this run or not. What an output still holds of that probe
    /// under another image of this shard's is gone.
    pub owned: BTreeMap<String, BTreeSet<String>>,
}

impl Plan {
    /// The plan of a probe of one unit: its job and `image` label, if this shard owns it.
    fn of(probe: &str, job: Option<(String, Job)>) -> Plan {
        let (label, jobs): (BTreeSet<String>, Vec<Job>) = job.into_iter().unzip();
        Plan { jobs, owned: BTreeMap::from([(probe.to_string(), label)]), ..Plan::default() }
    }

    /// The jobs of `other` after this plan's.
    pub fn extend(&mut self, other: Plan) {
        self.jobs.extend(other.jobs);
        self.coverage.extend(other.coverage);
        for (probe, units) in other.owned {
            self.owned.entry(probe).or_default().extend(units);
        }
    }

    /// How many units (images, canaries) this shard owns.
    pub fn owned_units(&self) -> usize {
        self.owned.values().map(BTreeSet::len).sum()
    }

    /// The probes the run has jobs of.
    pub fn probes(&self) -> impl Iterator<Item = &str> {
        self.jobs.iter().map(Job::probe_name)
    }

    /// Every image to pull.
    pub fn pulls(&self) -> impl Iterator<Item = &PullJob> {
        self.jobs.iter().filter_map(|job| match job {
            Job::Pull(job) => Some(job),
            _ => None,
        })
    }

    /// Every image to pull, for a step that changes how (the frontends, the deadline).
    pub fn pulls_mut(&mut self) -> impl Iterator<Item = &mut PullJob> {
        self.jobs.iter_mut().filter_map(|job| match job {
            Job::Pull(job) => Some(job),
            _ => None,
        })
    }

    /// Shorten every pull's timeout to `limit` (`check -t`: the whole check's deadline).
    pub fn cap_pull_timeouts(&mut self, limit: Duration) {
        for job in self.pulls_mut() {
            job.target.timeout = job.target.timeout.min(limit);
        }
    }
}

/// Plan one run of a configured probe of any kind: `image:` (with or without
/// `tags:`), `catalog:`, `kubernetes:` or `canary:`. `slot` numbers the run for
/// the catalog's rotating sample (consecutive runs, consecutive slots). A
/// discovery rule whose listing fails plans its `discovery_failed` result, so
/// it pages; `Err` is for a probe that cannot be probed as written.
pub async fn plan_probe(
    config: &Config,
    probe: &ProbeConfig,
    overrides: &Overrides,
    slot: u64,
) -> Result<Plan, PlanError> {
    let connection = &overrides.connection;
    let shard = overrides.shard;
    let found = match &probe.kind {
        ProbeKind::Image { tags: None, .. } => {
            let (image, _) = config.resolve_image(probe).map_err(|e| PlanError::probe(&probe.name, e.to_string()))?;
            let label = image.to_string();
            let job = match shard.owns(&label) {
                true => Some((label, Job::Pull(job_for_probe(config, probe, overrides).await?))),
                false => None,
            };
            return Ok(Plan::of(&probe.name, job));
        }
        ProbeKind::Canary(_) => {
            let job = match shard.owns(shard::unit(true, &probe.name, "")) {
                true => {
                    let job = jobs::canary_job(config, probe, overrides).await?;
                    Some((job.repository.name(), Job::Canary(job)))
                }
                false => None,
            };
            return Ok(Plan::of(&probe.name, job));
        }
        ProbeKind::Image { tags: Some(rule), .. } => {
            let (repository, registry) =
                config.resolve_image(probe).map_err(|e| PlanError::probe(&probe.name, e.to_string()))?;
            discover::tags(config, probe, &repository, registry, rule, connection).await?
        }
        ProbeKind::Catalog(rule) => discover::catalog(config, probe, rule, connection, slot).await?,
        ProbeKind::Kubernetes(rule) => discover::kubernetes(config, probe, rule, connection).await?,
    };
    let Found { targets, mut coverage, failure } = found;
    let mut plan = Plan::default();
    coverage.candidates.retain(|image| shard.owns(image));
    match failure {
        // The listing's failure is one unit (what was listed), paged by one shard.
        Some(failure) => plan.jobs.extend(shard.owns(&failure.image).then_some(Job::DiscoveryFailed(failure))),
        None => {
            plan.owned.insert(probe.name.clone(), coverage.candidates.iter().cloned().collect());
        }
    }
    for target in targets.into_iter().filter(|t| shard.owns(&t.image.to_string())) {
        plan.jobs.push(Job::Pull(jobs::discovered_job(config, probe, target, overrides).await?));
    }
    plan.coverage.insert(probe.name.clone(), coverage);
    Ok(plan)
}

/// The registry a probe's work goes to (its `registry:`, or the one its image
/// names), whose files [`check_probe_files`] reads before a run.
fn probe_registry<'a>(config: &'a Config, probe: &ProbeConfig) -> Option<&'a RegistryConfig> {
    match &probe.registry {
        Some(name) => config.registry(name),
        None => config.resolve_image(probe).ok().and_then(|(_, registry)| registry),
    }
}

/// pullprobe's own files for a run of `probe` ([`connection::check_files`]):
/// an error is pullprobe's, never the registry's.
pub fn check_probe_files(config: &Config, probe: &ProbeConfig) -> Result<(), PlanError> {
    match probe_registry(config, probe) {
        Some(registry) => connection::check_files(config, registry).map_err(PlanError::Config),
        None => Ok(()),
    }
}

/// The number of a scheduled run: consecutive runs one interval apart get
/// consecutive numbers, so a CronJob (and `serve` across restarts) rotates the
/// round budget and the catalog's sample without keeping state.
pub fn clock_slot(interval: Duration) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_secs() / interval.as_secs().max(1)
}
