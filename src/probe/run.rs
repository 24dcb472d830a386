//! Running many pulls: every (target, frontend) pair, frontends of one image
//! in parallel, bounded by `concurrency`, results in a stable order.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::frontend::Frontend;
use crate::probe::pull::{self, Progress, PullTarget};
use crate::registry::transport::TransportOptions;
use crate::result::ProbeResult;

/// One image to pull through each of its frontends.
#[derive(Debug, Clone)]
pub struct PullJob {
    pub target: PullTarget,
    pub frontends: Vec<Frontend>,
    pub transport: TransportOptions,
}

/// Run every job through every frontend; results in job order, then frontend order.
pub async fn run_jobs(jobs: Vec<PullJob>, concurrency: usize, progress: Option<Progress>) -> Vec<ProbeResult> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::new();
    for job in jobs {
        let job = Arc::new(job);
        for frontend in job.frontends.clone() {
            let job = job.clone();
            let permits = permits.clone();
            let progress = progress.clone();
            handles.push(tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                pull::pull(&job.target, &frontend, &job.transport, progress).await
            }));
        }
    }
    let mut results = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(mut r) => results.append(&mut r),
            Err(e) => tracing::error!(error = %e, "a probe task stopped unexpectedly"),
        }
    }
    results
}
