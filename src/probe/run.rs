//! One run of a plan: its jobs to results, the same for `now`, `check`, a
//! scheduled run in `serve` and `/probe`. Every kind of job has one entry
//! point of one shape — the job and the round in, its results out — as
//! blackbox_exporter's probers do: an image pulled through each of its
//! frontends in parallel, a canary pushed and read back, a probe whose
//! discovery failed while planning (its result is already known).
//!
//! All jobs share one limit on concurrent work. After the pulls, the
//! round-wide verdicts: frontends that disagree on a tag or on its referrers, and content failures
//! found through one frontend carried to the others that served the same
//! digest (checked there by digest only).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::digest::Digest;
use crate::frontend::Frontend;
use crate::probe::bandwidth::Bandwidth;
use crate::probe::budget::RoundBudget;
use crate::probe::canary::{self, CanaryJob};
use crate::probe::consistency::{check_frontends, check_referrers};
use crate::probe::ledger::BlobLedger;
use crate::probe::node_order;
use crate::probe::progress::RunProgress;
use crate::probe::pull::{PullTarget, RoundContext};
use crate::reason::{Phase, ProbeError};
use crate::registry::transport::TransportOptions;
use crate::result::{Check, ProbeResult};

/// One unit of a run, planned and ready to probe.
#[derive(Debug, Clone)]
pub enum Job {
    /// An image, through each of its frontends.
    Pull(PullJob),
    /// A write-path canary: push, then read back through each frontend.
    Canary(CanaryJob),
    /// A probe whose discovery failed while planning: its `discovery_failed` result.
    DiscoveryFailed(ProbeResult),
}

impl Job {
    /// The `probe` label of the job's results.
    pub fn probe_name(&self) -> &str {
        match self {
            Job::Pull(job) => &job.target.probe,
            Job::Canary(job) => &job.probe,
            Job::DiscoveryFailed(result) => &result.probe,
        }
    }

    fn rank(&self) -> Rank {
        match self {
            Job::DiscoveryFailed(_) => Rank::DiscoveryFailed,
            Job::Pull(_) => Rank::Pull,
            Job::Canary(_) => Rank::Canary,
        }
    }

    /// The job's entry point: each kind's has the same shape.
    async fn probe(self, round: &Round) -> Vec<ProbeResult> {
        match self {
            Job::Pull(job) => probe_pull(job, round).await,
            Job::Canary(job) => probe_canary(job, round).await,
            Job::DiscoveryFailed(result) => discovery_failed(result, round).await,
        }
    }
}

/// Where a job's results stand in a run's results: what failed while
/// planning, then the pulls, then the canaries (each kind in plan order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    DiscoveryFailed,
    Pull,
    Canary,
}

/// One image to pull through each of its frontends, and what planning learned
/// about it that the pull does not (discovery's `used_by` and warnings).
#[derive(Debug, Clone)]
pub struct PullJob {
    pub target: PullTarget,
    pub frontends: Vec<Frontend>,
    pub transport: TransportOptions,
    /// The workloads that use the image (`kubernetes:`): on each of its results.
    pub used_by: Vec<String>,
    /// Worth knowing, not failures: on the first of its results.
    pub warnings: Vec<String>,
}

impl PullJob {
    /// Put what planning learned on the job's results.
    fn stamp(&self, results: &mut [ProbeResult]) {
        if !self.used_by.is_empty() {
            for result in results.iter_mut() {
                result.used_by = self.used_by.clone();
            }
        }
        if let Some(first) = results.first_mut() {
            first.warnings.extend(self.warnings.iter().cloned());
        }
    }
}

/// How one round runs.
#[derive(Debug, Clone, Default)]
pub struct RoundOptions {
    /// Pulls (image × frontend) and canaries at once.
    pub concurrency: usize,
    /// `limits.max_round_bytes`; `None` for no round budget.
    pub max_round_bytes: Option<u64>,
    /// The round number, which picks the rotation group when the budget is short.
    pub round: u64,
    /// What a progress display shows of the round's pulls.
    pub progress: Option<Arc<RunProgress>>,
    /// A limit shared with other rounds (serve's global concurrency); else `concurrency`.
    pub permits: Option<Arc<Semaphore>>,
    /// A cap on bytes per second shared with other rounds (`limits.max_bytes_per_second`).
    pub bandwidth: Option<Arc<Bandwidth>>,
}

impl RoundOptions {
    /// Round number `round` of `config`'s probes: `defaults.concurrency` at
    /// once, within `limits.max_round_bytes`.
    pub fn of(config: &Config, round: u64) -> RoundOptions {
        RoundOptions {
            concurrency: config.defaults.concurrency.max(1),
            max_round_bytes: Some(config.limits.max_round_bytes),
            round,
            ..RoundOptions::default()
        }
    }
}

/// What the jobs of one round share.
struct Round {
    permits: Arc<Semaphore>,
    ledger: Arc<BlobLedger>,
    pull: RoundContext,
}

impl Round {
    fn new(jobs: &[Job], options: RoundOptions) -> Round {
        let ledger = Arc::new(BlobLedger::new());
        let pulls: usize = jobs
            .iter()
            .map(|job| match job {
                Job::Pull(job) => job.frontends.len(),
                _ => 0,
            })
            .sum();
        let budget = options.max_round_bytes.map(|limit| Arc::new(RoundBudget::new(limit, pulls, options.round)));
        let pull = RoundContext {
            progress: options.progress,
            ledger: Some(ledger.clone()),
            budget,
            bandwidth: options.bandwidth,
        };
        let permits = options.permits.unwrap_or_else(|| Arc::new(Semaphore::new(options.concurrency.max(1))));
        Round { permits, ledger, pull }
    }
}

/// Run one round: every job side by side. Results: discovery failures, then
/// pulls (job order, then frontend order), then canaries (job order, then
/// frontend order).
pub async fn run(jobs: Vec<Job>, options: RoundOptions) -> Vec<ProbeResult> {
    let round = Round::new(&jobs, options);
    let ranks: Vec<Rank> = jobs.iter().map(Job::rank).collect();
    let probed = futures_util::future::join_all(jobs.into_iter().map(|job| job.probe(&round))).await;
    let mut by_rank: BTreeMap<Rank, Vec<ProbeResult>> = BTreeMap::new();
    for (rank, results) in ranks.into_iter().zip(probed) {
        by_rank.entry(rank).or_default().extend(results);
    }
    if let Some(pulled) = by_rank.get_mut(&Rank::Pull) {
        carry_content_failures(pulled, &round.ledger);
        check_frontends(pulled);
        check_referrers(pulled);
    }
    by_rank.into_values().flatten().collect()
}

/// An image through each of its frontends in parallel, each pull holding a
/// permit: results in frontend order.
async fn probe_pull(job: PullJob, round: &Round) -> Vec<ProbeResult> {
    let job = Arc::new(job);
    let handles: Vec<JoinHandle<Vec<ProbeResult>>> = job
        .frontends
        .iter()
        .map(|frontend| {
            let (job, frontend, permits, context) =
                (job.clone(), frontend.clone(), round.permits.clone(), round.pull.clone());
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                node_order::pull(&job.target, &frontend, &job.transport, context).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(mut pulled) => results.append(&mut pulled),
            Err(e) => tracing::error!(error = %e, "a probe task stopped unexpectedly"),
        }
    }
    job.stamp(&mut results);
    results
}

/// A canary, holding one permit while it pushes and reads back.
async fn probe_canary(job: CanaryJob, round: &Round) -> Vec<ProbeResult> {
    let _permit = round.permits.acquire().await;
    canary::run(&job).await
}

/// A probe whose discovery failed while planning: nothing left to probe.
async fn discovery_failed(result: ProbeResult, _round: &Round) -> Vec<ProbeResult> {
    vec![result]
}

/// A layer checked by digest only passed because its bytes equal the digest;
/// if the content behind that digest failed its full check elsewhere this
/// round, the same verdict holds here.
fn carry_content_failures(results: &mut [ProbeResult], ledger: &BlobLedger) {
    for result in results.iter_mut() {
        let mut first: Option<ProbeError> = None;
        for (index, layer) in result.layers.iter_mut().enumerate() {
            if !layer.ok || layer.check != Some(Check::DigestOnly) {
                continue;
            }
            let Ok(digest) = layer.digest.parse::<Digest>() else { continue };
            let Some((found_on, err)) = ledger.content_failure(&digest) else { continue };
            let message = format!(
                "layer {} {digest}: {} (found through frontend {found_on}; same digest, same bytes)",
                index + 1,
                err.reason
            );
            layer.ok = false;
            layer.reason = Some(err.reason);
            layer.error = Some(message.clone());
            first.get_or_insert(ProbeError::new(err.reason, message));
        }
        if let Some(err) = first
            && result.ok
        {
            result.ok = false;
            result.reason = Some(err.reason);
            result.phase = Some(Phase::Blob);
            result.error = Some(err.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::output::history::tests::result;
    use crate::reason::Reason;
    use crate::reference::ImageReference;

    fn job(used_by: &[&str], warnings: &[&str]) -> PullJob {
        let image = ImageReference::parse("registry.example.org/base/buster:latest").expect("a valid reference");
        PullJob {
            target: PullTarget {
                probe: "golden-base".into(),
                registry: "prod".into(),
                image,
                location: "eqiad".into(),
                platforms: Default::default(),
                timeout: Duration::from_secs(60),
                limits: Default::default(),
                layer_concurrency: 2,
                expect: Default::default(),
                signatures: None,
            },
            frontends: Vec::new(),
            transport: Default::default(),
            used_by: used_by.iter().map(|s| s.to_string()).collect(),
            warnings: warnings.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn what_discovery_learnt_goes_on_the_jobs_own_results() {
        let t0 = "2026-11-23T06:00:00Z";
        let mut results = vec![result("10.0.0.1", None, t0), result("10.0.0.2", Some(Reason::BlobUnknown), t0)];
        results[0].warnings.push("unusable Docker-Content-Digest header".into());
        job(&["prod/deployment/app"], &["pull secret prod/regcred: unreadable"]).stamp(&mut results);
        assert!(results.iter().all(|r| r.used_by == ["prod/deployment/app"]));
        assert_eq!(
            results[0].warnings,
            ["unusable Docker-Content-Digest header", "pull secret prod/regcred: unreadable"]
        );
        assert!(results[1].warnings.is_empty());
        assert_eq!(results[1].reason, Some(Reason::BlobUnknown), "stamping never changes a verdict");
    }

    #[tokio::test]
    async fn discovery_failures_come_first_and_as_planned() {
        let failed = result("api-server", Some(Reason::DiscoveryFailed), "2026-11-23T06:00:00Z");
        let jobs = vec![Job::Pull(job(&[], &["never shown: the job has no frontend"])), Job::DiscoveryFailed(failed)];
        let results = run(jobs, RoundOptions { concurrency: 1, ..RoundOptions::default() }).await;
        assert_eq!(results.len(), 1, "a pull through no frontend has no result");
        assert_eq!((results[0].reason, results[0].frontend.as_str()), (Some(Reason::DiscoveryFailed), "api-server"));
    }
}
