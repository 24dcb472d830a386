//! One round: every (target, frontend) pair pulled, frontends of one image in
//! parallel, bounded by `concurrency`, results in a stable order; then the
//! round-wide verdicts — frontends that disagree on a tag, and content
//! failures found through one frontend carried to the others that served the
//! same digest (checked there by digest only).

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::digest::Digest;
use crate::frontend::Frontend;
use crate::probe::budget::RoundBudget;
use crate::probe::canary::{self, CanaryJob};
use crate::probe::consistency::check_frontends;
use crate::probe::ledger::BlobLedger;
use crate::probe::node_order;
use crate::probe::pull::{Progress, PullTarget, RoundContext};
use crate::reason::{Phase, ProbeError};
use crate::registry::transport::TransportOptions;
use crate::result::ProbeResult;

/// One image to pull through each of its frontends.
#[derive(Debug, Clone)]
pub struct PullJob {
    pub target: PullTarget,
    pub frontends: Vec<Frontend>,
    pub transport: TransportOptions,
}

/// How one round runs.
#[derive(Debug, Clone, Default)]
pub struct RoundOptions {
    /// Pulls (image × frontend) at once.
    pub concurrency: usize,
    /// `limits.max_round_bytes`; `None` for no round budget.
    pub max_round_bytes: Option<u64>,
    /// The round number, which picks the rotation group when the budget is short.
    pub round: u64,
    pub progress: Option<Progress>,
    /// A limit on pulls shared with other rounds (serve's global concurrency); else `concurrency`.
    pub permits: Option<Arc<Semaphore>>,
}

/// Run one round of pulls and canary probes side by side: pull results (job
/// order, then frontend order), then canary results (the same order).
pub async fn run_round(jobs: Vec<PullJob>, canaries: Vec<CanaryJob>, options: RoundOptions) -> Vec<ProbeResult> {
    let (mut results, canary_results) = tokio::join!(run_jobs(jobs, options), canary::run_all(canaries));
    results.extend(canary_results);
    results
}

/// Run one round; results in job order, then frontend order.
pub async fn run_jobs(jobs: Vec<PullJob>, options: RoundOptions) -> Vec<ProbeResult> {
    let ledger = Arc::new(BlobLedger::new());
    let pulls: usize = jobs.iter().map(|j| j.frontends.len()).sum();
    let budget = options.max_round_bytes.map(|limit| Arc::new(RoundBudget::new(limit, pulls, options.round)));
    let round = RoundContext { progress: options.progress, ledger: Some(ledger.clone()), budget };
    let concurrency = options.concurrency;
    let permits = options.permits.clone().unwrap_or_else(|| Arc::new(Semaphore::new(concurrency.max(1))));
    let mut handles = Vec::new();
    for job in jobs {
        let job = Arc::new(job);
        for frontend in job.frontends.clone() {
            let job = job.clone();
            let permits = permits.clone();
            let round = round.clone();
            let handle = tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                node_order::pull(&job.target, &frontend, &job.transport, round).await
            });
            handles.push(handle);
        }
    }
    let mut results = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(mut r) => results.append(&mut r),
            Err(e) => tracing::error!(error = %e, "a probe task stopped unexpectedly"),
        }
    }
    carry_content_failures(&mut results, &ledger);
    check_frontends(&mut results);
    results
}

/// A layer checked by digest only passed because its bytes equal the digest;
/// if the content behind that digest failed its full check elsewhere this
/// round, the same verdict holds here.
fn carry_content_failures(results: &mut [ProbeResult], ledger: &BlobLedger) {
    for result in results.iter_mut() {
        let mut first: Option<ProbeError> = None;
        for (index, layer) in result.layers.iter_mut().enumerate() {
            if !layer.ok || layer.check.as_deref() != Some("digest_only") {
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
