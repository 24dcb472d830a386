//! The pull probe: one image through one frontend, end to end, the way a
//! container runtime pulls it — manifest (and index), config, every layer
//! streamed once and verified — returning one [`ProbeResult`] per platform.
//!
//! This file is the entry point, what a pull is given, the state it keeps and its
//! steps in order. Each phase has a file of its own: `manifest.rs` (the reference's
//! manifest, an index's platforms), `config.rs` (the config blob and the diff_ids it
//! promises), `layers.rs` (which layers are read, in what order, how many at once),
//! `layer_job.rs` (one layer streamed into the verifier) and `expectations.rs`
//! (`expect:` once the layers passed), `referrers.rs` (`signatures:`: the image's
//! referrers on this frontend). `attempt.rs` is what every step runs inside:
//! the deadline, one retry of transient failures, and the result a pull ends in.

mod attempt;
mod config;
mod expectations;
mod layer_job;
mod layers;
mod manifest;
mod referrers;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Expectations, SignaturePolicy};
use crate::digest::Digest;
use crate::frontend::Frontend;
use crate::manifest::{ImageManifest, Manifest};
use crate::platform::PlatformSelection;
use crate::probe::bandwidth::Bandwidth;
use crate::probe::budget::RoundBudget;
use crate::probe::expect;
use crate::probe::ledger::BlobLedger;
use crate::probe::progress::{PlatformProgress, PullProgress, RunProgress};
use crate::reason::{Phase, ProbeError, Reason};
use crate::reference::ImageReference;
use crate::registry::client::RegistryClient;
use crate::registry::transport::TransportOptions;
use crate::result::{LayerCheck, ProbeResult, ReferrerCheck, now_utc_millis};

use manifest::PlatformSource;

/// Caps that keep one pull bounded whatever the registry sends.
#[derive(Debug, Clone, Copy)]
pub struct PullLimits {
    pub max_manifest_bytes: u64,
    pub max_pull_bytes: u64,
    pub max_uncompressed_bytes: u64,
    pub max_uncompressed_ratio: f64,
}

impl Default for PullLimits {
    fn default() -> Self {
        PullLimits {
            max_manifest_bytes: 4 << 20,
            max_pull_bytes: 16 << 30,
            max_uncompressed_bytes: 64 << 30,
            max_uncompressed_ratio: 0.0,
        }
    }
}

/// What to pull and how to label it.
#[derive(Debug, Clone)]
pub struct PullTarget {
    pub probe: String,
    pub image: ImageReference,
    /// The `registry` label.
    pub registry: String,
    pub location: String,
    pub platforms: PlatformSelection,
    /// For one (image, frontend, platform).
    pub timeout: Duration,
    pub limits: PullLimits,
    /// Layers downloaded and verified at once.
    pub layer_concurrency: usize,
    /// Content and freshness assertions (`expect:`, `--expect-path`).
    pub expect: Expectations,
    /// `signatures:`: the referrers each frontend must serve.
    pub signatures: Option<Arc<SignaturePolicy>>,
}

/// What the pulls of one round share.
#[derive(Debug, Clone, Default)]
pub struct RoundContext {
    /// What a progress display shows of the round's pulls (`now` on a terminal).
    pub progress: Option<Arc<RunProgress>>,
    /// Layers already checked in full this round (decompress once per digest).
    pub ledger: Option<Arc<BlobLedger>>,
    /// The round's bandwidth budget and rotation.
    pub budget: Option<Arc<RoundBudget>>,
    /// The process's cap on bytes per second (`limits.max_bytes_per_second`).
    pub bandwidth: Option<Arc<Bandwidth>>,
}

/// Pull `target` through `frontend`: one result per selected platform.
pub async fn pull(
    target: &PullTarget,
    frontend: &Frontend,
    options: &TransportOptions,
    round: RoundContext,
) -> Vec<ProbeResult> {
    let progress = round.progress.as_ref().map(|p| p.start_pull(&target.image.to_string(), &frontend.label));
    PullRun { target, frontend, options, round, progress }.execute().await
}

/// One pull: what it was given.
struct PullRun<'a> {
    target: &'a PullTarget,
    frontend: &'a Frontend,
    options: &'a TransportOptions,
    round: RoundContext,
    /// This pull's bytes for a progress display; finished when the pull is.
    progress: Option<PullProgress>,
}

/// When a pull began: `started_at` for the result, and the start of its deadline.
#[derive(Debug, Clone)]
struct Clock {
    started_at: time::OffsetDateTime,
    started: Instant,
}

impl Clock {
    fn start() -> Clock {
        Clock { started_at: now_utc_millis(), started: Instant::now() }
    }
}

/// What a failed step leaves behind for the result.
#[derive(Debug, Default)]
struct PullState {
    phase: Option<Phase>,
    manifest_digest: Option<String>,
    platform: Option<String>,
    phases: BTreeMap<String, f64>,
    layers: Vec<LayerCheck>,
    warnings: Vec<String>,
    tls_not_after: Option<String>,
    /// The last `RateLimit-Remaining` the registry sent.
    ratelimit_remaining: Option<u64>,
    /// Layers being read now and layers finished, by index: what a timeout reports.
    active_layers: BTreeMap<usize, LayerCheck>,
    done_layers: BTreeMap<usize, LayerCheck>,
    /// The referrers examined (`signatures:`), once listed.
    referrers: Option<Vec<ReferrerCheck>>,
    /// The referrers' verdict on the image, reported if the pull itself passes.
    referrers_failure: Option<ProbeError>,
    /// Where the platform being pulled counts its bytes for a progress display.
    progress: Option<PlatformProgress>,
}

impl PullState {
    /// What a later step (a platform of an index, a retry) starts from: what the
    /// manifest taught, none of what a step did.
    fn carried(&self) -> PullState {
        PullState {
            manifest_digest: self.manifest_digest.clone(),
            platform: self.platform.clone(),
            phases: self.phases.clone(),
            warnings: self.warnings.clone(),
            tls_not_after: self.tls_not_after.clone(),
            ratelimit_remaining: self.ratelimit_remaining,
            referrers: self.referrers.clone(),
            referrers_failure: self.referrers_failure.clone(),
            progress: self.progress.clone(),
            ..PullState::default()
        }
    }

    /// On a timeout: the layers finished so far plus those still being read, marked `timeout`.
    fn stalled_layers(&mut self) -> Vec<String> {
        let mut stalled = Vec::new();
        let mut layers = self.done_layers.clone();
        for (index, check) in &self.active_layers {
            let mut check = check.clone();
            check.ok = false;
            check.reason = Some(Reason::Timeout);
            stalled.push(format!("layer {} {}", index + 1, check.digest));
            layers.insert(*index, check);
        }
        if !layers.is_empty() {
            self.layers = layers.into_values().collect();
        }
        stalled
    }

    fn add_phase(&mut self, name: &str, took: Duration) {
        *self.phases.entry(name.to_string()).or_default() += took.as_secs_f64();
    }
}

/// The state of the step running now, shared with its layer tasks.
type SharedState = Arc<Mutex<PullState>>;

fn lock(state: &SharedState) -> std::sync::MutexGuard<'_, PullState> {
    // A panic elsewhere must not take the result with it.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl PullRun<'_> {
    /// The manifest the reference names, then one pull per platform it selects.
    async fn execute(&self) -> Vec<ProbeResult> {
        let clock = Clock::start();
        let mut retries = 0;
        let fetch = |client: RegistryClient, state: SharedState| async move { self.fetch_top(&client, &state).await };
        let (state, top) = self.with_retry(&PullState::default(), clock.started, &mut retries, fetch).await;
        let top = match top {
            Ok(top) => top,
            Err(err) => return vec![self.result(state, Some(err), retries, &clock)],
        };
        let state = self.top_referrers(state, &top.digest, &clock, &mut retries).await;
        match top.manifest {
            // A single image continues the deadline its manifest fetch began.
            Manifest::Image(image) => {
                vec![self.pull_platform(PlatformSource::Single(image), &top.digest, state, retries, clock).await]
            }
            Manifest::Index(entries) => self.pull_index(entries, &top.digest, state, retries).await,
        }
    }

    /// One platform's image, with one retry of transient failures: its result.
    async fn pull_platform(
        &self,
        source: PlatformSource,
        top_digest: &Digest,
        mut base: PullState,
        mut retries: u32,
        clock: Clock,
    ) -> ProbeResult {
        base.progress = self.progress.as_ref().map(PullProgress::platform);
        let source = &source;
        let pull = |client: RegistryClient, state: SharedState| async move {
            self.pull_image(&client, source, top_digest, &state).await
        };
        let (state, outcome) = self.with_retry(&base, clock.started, &mut retries, pull).await;
        self.result(state, outcome.err(), retries, &clock)
    }

    /// The steps of one platform's pull: manifest, config, layers, then `expect:`.
    async fn pull_image(
        &self,
        client: &RegistryClient,
        source: &PlatformSource,
        top_digest: &Digest,
        state: &SharedState,
    ) -> Result<(), ProbeError> {
        let image = self.platform_manifest(client, source, top_digest, state).await?;
        let progress = lock(state).progress.clone();
        if let Some(progress) = &progress {
            progress.begin(bytes_to_read(&image));
        }
        let config = self.fetch_config(client, &image, state).await?;
        if let Some(progress) = &progress {
            progress.read(image.config.size);
        }
        self.check_pull_size(&image)?;
        let layer_digests = image.layers.iter().map(|l| l.digest).collect();
        let content = config.image.as_ref().and_then(|_| expect::plan(&self.target.expect, layer_digests));
        self.pull_layers(client, &image, &config, state, content.clone()).await?;
        self.check_expectations(client, &image, &config, content, state).await?;
        self.platform_referrers(client, source, state).await
    }
}

/// The bytes a platform's pull reads: its config and its layers, as the manifest says.
fn bytes_to_read(image: &ImageManifest) -> u64 {
    // Saturating: descriptor sizes come from the registry.
    image.layers.iter().fold(image.config.size, |sum, layer| sum.saturating_add(layer.size))
}
