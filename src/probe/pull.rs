//! The pull probe: one image through one frontend, end to end, the way a
//! container runtime pulls it — manifest (and index), config, every layer
//! streamed once and verified — returning one [`ProbeResult`] per platform.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::config::Expectations;
use crate::digest::Digest;
use crate::frontend::Frontend;
use crate::manifest::{self, BlobRef, ImageManifest, IndexEntry, Manifest};
use crate::media_types;
use crate::platform::{Platform, PlatformSelection};
use crate::probe::budget::RoundBudget;
use crate::probe::expect;
use crate::probe::ledger::BlobLedger;
use crate::reason::{Phase, ProbeError, Reason};
use crate::reference::ImageReference;
use crate::registry::client::{BlobSource, RegistryClient};
use crate::registry::transport::{TransportOptions, classify_transport, is_incomplete_body, response_deadline};
use crate::result::{LayerCheck, ProbeResult};
use crate::verify::content::{ContentOutcome, ContentPlan, MAX_WALKS};
use crate::verify::{self, CheckMode, LayerLimits, LayerSpec};

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
}

/// Live byte counter for a progress display.
pub type Progress = Arc<AtomicU64>;

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
}

impl PullState {
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

type SharedState = Arc<Mutex<PullState>>;

fn lock(state: &SharedState) -> std::sync::MutexGuard<'_, PullState> {
    // A panic elsewhere must not take the result with it.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the pulls of one round share.
#[derive(Debug, Clone, Default)]
pub struct RoundContext {
    /// Live byte counter for a progress display.
    pub progress: Option<Progress>,
    /// Layers already checked in full this round (decompress once per digest).
    pub ledger: Option<Arc<BlobLedger>>,
    /// The round's bandwidth budget and rotation.
    pub budget: Option<Arc<RoundBudget>>,
}

/// Pull `target` through `frontend`: one result per selected platform.
pub async fn pull(
    target: &PullTarget,
    frontend: &Frontend,
    options: &TransportOptions,
    round: RoundContext,
) -> Vec<ProbeResult> {
    let run =
        PullRun { target, frontend, options, progress: round.progress, ledger: round.ledger, budget: round.budget };
    run.execute().await
}

struct PullRun<'a> {
    target: &'a PullTarget,
    frontend: &'a Frontend,
    options: &'a TransportOptions,
    progress: Option<Progress>,
    ledger: Option<Arc<BlobLedger>>,
    budget: Option<Arc<RoundBudget>>,
}

/// The manifest named by the reference, verified.
struct TopManifest {
    digest: Digest,
    manifest: Manifest,
}

impl PullRun<'_> {
    fn client(&self) -> Result<RegistryClient, ProbeError> {
        let mut options = self.options.clone();
        options.response_timeout = Some(response_deadline(self.target.timeout));
        self.frontend.client(&options)
    }

    /// `host:port` of the frontend's URL and its pinned address, for `served_by`.
    fn pinned_host(&self, client: &RegistryClient) -> Option<(String, String)> {
        let addr = self.frontend.pin?;
        let base = client.base();
        let host = base.host_str()?;
        let host_port = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        Some((host_port, addr.to_string()))
    }

    async fn execute(&self) -> Vec<ProbeResult> {
        let started_at = now_rfc3339();
        let started = Instant::now();
        let top_state = SharedState::default();
        let mut retries = 0;
        let top = loop {
            let attempt = async {
                let client = self.client()?;
                let top = self.fetch_top(&client, &top_state).await;
                record_connection(&client, &top_state);
                top
            };
            match self.within_deadline(attempt, &top_state, started).await {
                Ok(top) => break top,
                Err(err) if retries == 0 && should_retry(&err, started.elapsed(), self.target.timeout) => {
                    retries += 1;
                    wait_before_retry(&err).await;
                    *lock(&top_state) = PullState::default();
                }
                Err(err) => {
                    let state = std::mem::take(&mut *lock(&top_state));
                    return vec![self.result(state, Some(err), retries, &started_at, started)];
                }
            }
        };
        let top_state = std::mem::take(&mut *lock(&top_state));
        match top.manifest {
            Manifest::Image(image) => {
                let clock = Some((started_at.clone(), started));
                vec![self.pull_platform(PlatformSource::Single(image), &top.digest, top_state, retries, clock).await]
            }
            Manifest::Index(entries) => self.pull_index(entries, &top.digest, top_state, retries).await,
        }
    }

    /// Run a step in what is left of the deadline of a pull begun at `started`
    /// (a retry does not get a fresh one); a timeout names the phase it hit.
    async fn within_deadline<T>(
        &self,
        step: impl Future<Output = Result<T, ProbeError>>,
        state: &SharedState,
        started: Instant,
    ) -> Result<T, ProbeError> {
        let left = self.target.timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, step).await {
            Ok(result) => result,
            Err(_) => {
                let mut s = lock(state);
                let phase = s.phase.map(|p| p.as_str()).unwrap_or("connect");
                let stalled = s.stalled_layers();
                let reading =
                    if stalled.is_empty() { String::new() } else { format!("; still reading {}", stalled.join(", ")) };
                Err(ProbeError::new(
                    Reason::Timeout,
                    format!("no result within the timeout of {:?} (in phase {phase}{reading})", self.target.timeout),
                ))
            }
        }
    }

    async fn fetch_top(&self, client: &RegistryClient, state: &SharedState) -> Result<TopManifest, ProbeError> {
        lock(state).phase = Some(Phase::Manifest);
        let image = &self.target.image;
        let response =
            client.manifest(&image.repository, &image.reference_str(), self.target.limits.max_manifest_bytes).await?;
        lock(state).add_phase("manifest", response.took);
        let computed = Digest::of(&response.body);
        {
            let mut s = lock(state);
            s.manifest_digest = Some(computed.to_string());
            s.tls_not_after = response.tls_not_after.clone();
        }
        if let Some(wanted) = &image.digest {
            if *wanted != computed {
                return Err(ProbeError::new(
                    Reason::ManifestDigestMismatch,
                    format!("manifest for {image}: reference digest is {wanted}, the bytes served hash to {computed}"),
                ));
            }
        } else {
            match response.docker_content_digest.as_deref().map(str::parse::<Digest>) {
                Some(Ok(header)) if header != computed => {
                    return Err(ProbeError::new(
                        Reason::ManifestDigestMismatch,
                        format!(
                            "manifest for {image}: Docker-Content-Digest says {header}, the bytes served hash to {computed}"
                        ),
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => lock(state).warnings.push(format!("unusable Docker-Content-Digest header: {e}")),
                None => lock(state)
                    .warnings
                    .push("no Docker-Content-Digest header; the computed manifest digest is recorded".into()),
            }
        }
        let manifest = manifest::parse_manifest(&response.body, response.content_type.as_deref())?;
        Ok(TopManifest { digest: computed, manifest })
    }

    async fn pull_index(
        &self,
        entries: Vec<IndexEntry>,
        index_digest: &Digest,
        base: PullState,
        retries: u32,
    ) -> Vec<ProbeResult> {
        let runnable: Vec<&IndexEntry> = entries.iter().filter(|e| !e.is_attestation).collect();
        let mut results = Vec::new();
        let mut wanted: Vec<(Option<Platform>, Option<&IndexEntry>)> = Vec::new();
        match &self.target.platforms {
            PlatformSelection::All => {
                for entry in &runnable {
                    wanted.push((entry.platform.clone(), Some(*entry)));
                }
            }
            PlatformSelection::List(list) => {
                for platform in list {
                    let found =
                        runnable.iter().find(|e| e.platform.as_ref().is_some_and(|p| platform.matches(p))).copied();
                    wanted.push((Some(platform.clone()), found));
                }
            }
        }
        for (platform, entry) in wanted {
            let mut state = PullState {
                manifest_digest: base.manifest_digest.clone(),
                phases: base.phases.clone(),
                warnings: base.warnings.clone(),
                tls_not_after: base.tls_not_after.clone(),
                ratelimit_remaining: base.ratelimit_remaining,
                ..PullState::default()
            };
            state.platform = platform.as_ref().map(|p| p.to_string());
            match entry {
                Some(entry) => {
                    results.push(
                        self.pull_platform(PlatformSource::Index(entry.clone()), index_digest, state, retries, None)
                            .await,
                    );
                }
                None => {
                    let available: Vec<String> =
                        runnable.iter().filter_map(|e| e.platform.as_ref().map(|p| p.to_string())).collect();
                    state.phase = Some(Phase::Manifest);
                    let err = ProbeError::new(
                        Reason::PlatformMissing,
                        format!(
                            "index {} has no {} image (it has: {})",
                            index_digest.short(),
                            platform.map(|p| p.to_string()).unwrap_or_default(),
                            if available.is_empty() { "none".to_string() } else { available.join(", ") }
                        ),
                    );
                    results.push(self.result(state, Some(err), retries, &now_rfc3339(), Instant::now()));
                }
            }
        }
        results
    }

    /// One platform's image: its manifest (from an index), config and layers, with one retry of transient failures.
    async fn pull_platform(
        &self,
        source: PlatformSource,
        top_digest: &Digest,
        base: PullState,
        mut retries: u32,
        clock: Option<(String, Instant)>,
    ) -> ProbeResult {
        // A single image continues the deadline its manifest fetch began; each
        // platform of an index has a deadline of its own.
        let (started_at, started) = clock.unwrap_or_else(|| (now_rfc3339(), Instant::now()));
        loop {
            let state: SharedState = Arc::new(Mutex::new(PullState {
                phase: None,
                manifest_digest: base.manifest_digest.clone(),
                platform: base.platform.clone(),
                phases: base.phases.clone(),
                layers: Vec::new(),
                warnings: base.warnings.clone(),
                tls_not_after: base.tls_not_after.clone(),
                ratelimit_remaining: base.ratelimit_remaining,
                ..PullState::default()
            }));
            let attempt = async {
                let client = self.client()?;
                let outcome = self.pull_image(&client, &source, top_digest, &state).await;
                record_connection(&client, &state);
                outcome
            };
            let outcome = self.within_deadline(attempt, &state, started).await;
            let failure = outcome.err();
            if let Some(err) = &failure
                && retries == 0
                && should_retry(err, started.elapsed(), self.target.timeout)
            {
                retries += 1;
                wait_before_retry(err).await;
                continue;
            }
            let state = std::mem::take(&mut *lock(&state));
            return self.result(state, failure, retries, &started_at, started);
        }
    }

    async fn pull_image(
        &self,
        client: &RegistryClient,
        source: &PlatformSource,
        top_digest: &Digest,
        state: &SharedState,
    ) -> Result<(), ProbeError> {
        let repository = &self.target.image.repository;
        let limits = self.target.limits;
        let image = match source {
            PlatformSource::Single(image) => image.clone(),
            PlatformSource::Index(entry) => {
                lock(state).phase = Some(Phase::Manifest);
                let digest = entry.manifest.digest;
                let response = client.manifest(repository, &digest.to_string(), limits.max_manifest_bytes).await?;
                lock(state).add_phase("manifest", response.took);
                let computed = Digest::of(&response.body);
                if computed != digest || response.body.len() as u64 != entry.manifest.size {
                    return Err(ProbeError::new(
                        Reason::ManifestDigestMismatch,
                        format!(
                            "platform manifest {digest} (index {}): served {} bytes hashing to {computed}, index says {} bytes",
                            top_digest.short(),
                            response.body.len(),
                            entry.manifest.size
                        ),
                    ));
                }
                match manifest::parse_manifest(&response.body, response.content_type.as_deref())? {
                    Manifest::Image(image) => image,
                    Manifest::Index(_) => {
                        return Err(ProbeError::new(
                            Reason::ManifestInvalid,
                            format!(
                                "index entry {digest} is itself an index; nested indexes are not pulled by runtimes"
                            ),
                        ));
                    }
                }
            }
        };

        // Config.
        lock(state).phase = Some(Phase::Config);
        let config_started = Instant::now();
        let config = &image.config;
        if config.size > limits.max_manifest_bytes {
            return Err(ProbeError::new(
                Reason::TooLarge,
                format!(
                    "config {} is {} bytes, over the limit of {}",
                    config.digest.short(),
                    config.size,
                    limits.max_manifest_bytes
                ),
            ));
        }
        let (body, _) = client
            .small_blob(repository, &config.digest, limits.max_manifest_bytes)
            .await
            .map_err(|e| e.context(format_args!("config {}", config.digest)))?;
        let got = Digest::of(&body);
        if body.len() as u64 != config.size {
            let reason =
                if (body.len() as u64) < config.size { Reason::BlobTruncated } else { Reason::BlobSizeMismatch };
            return Err(ProbeError::new(
                reason,
                format!("config {}: got {} bytes, descriptor says {}", config.digest, body.len(), config.size),
            ));
        }
        if got != config.digest {
            return Err(ProbeError::new(
                Reason::BlobDigestMismatch,
                format!("config {}: got {got} ({} bytes of {})", config.digest, body.len(), config.size),
            ));
        }
        let is_image = media_types::is_image_config(&config.media_type);
        let mut image_config = None;
        let diff_ids = if is_image {
            let mut parsed = manifest::parse_image_config(&body)?;
            if parsed.diff_ids.len() != image.layers.len() {
                return Err(ProbeError::new(
                    Reason::ManifestInvalid,
                    format!(
                        "manifest lists {} layers but config {} has {} diff_ids",
                        image.layers.len(),
                        config.digest.short(),
                        parsed.diff_ids.len()
                    ),
                ));
            }
            let mut s = lock(state);
            if let Some(p) = &parsed.platform {
                s.platform = Some(p.to_string());
            }
            let diff_ids = std::mem::take(&mut parsed.diff_ids).into_iter().map(Some).collect();
            image_config = Some(parsed);
            diff_ids
        } else {
            vec![None; image.layers.len()]
        };
        lock(state).add_phase("config", config_started.elapsed());

        // Saturating: descriptor sizes come from the registry and may add up past u64.
        let total = image.layers.iter().fold(0u64, |sum, l| sum.saturating_add(l.size));
        if total > limits.max_pull_bytes {
            return Err(ProbeError::new(
                Reason::TooLarge,
                format!("image layers total {total} bytes, over max_pull_bytes {}", limits.max_pull_bytes),
            ));
        }

        let layer_digests = image.layers.iter().map(|l| l.digest).collect();
        let content = if is_image { expect::plan(&self.target.expect, layer_digests) } else { None };
        self.pull_layers(client, &image, diff_ids.clone(), is_image, state, content.clone()).await?;
        self.check_expectations(client, &image, &diff_ids, image_config.as_ref(), content, state).await
    }

    /// `expect:` once every layer passed: the path verdict (reading layers again while it
    /// asks, see `verify::content`), then labels and `max_age` (`probe::expect`).
    async fn check_expectations(
        &self,
        client: &RegistryClient,
        image: &ImageManifest,
        diff_ids: &[Option<Digest>],
        config: Option<&manifest::ImageConfig>,
        content: Option<Arc<ContentPlan>>,
        state: &SharedState,
    ) -> Result<(), ProbeError> {
        let wanted = &self.target.expect;
        if wanted.is_empty() {
            return Ok(());
        }
        let mut failures = Vec::new();
        match config {
            None => failures = expect::not_an_image(wanted, &image.config.media_type),
            Some(config) => {
                if let Some(plan) = content {
                    let skipped = lock(state).layers.iter().any(|l| l.check.as_deref() == Some("skipped"));
                    if skipped {
                        let warning = "path assertions not checked: max_round_bytes left layers unread this round";
                        lock(state).warnings.push(warning.to_string());
                    } else {
                        failures.extend(self.judge_paths(client, image, diff_ids, &plan, state).await?);
                    }
                }
                let mut warnings = Vec::new();
                failures.extend(expect::check_config(wanted, config, time::OffsetDateTime::now_utc(), &mut warnings));
                lock(state).warnings.extend(warnings);
            }
        }
        match expect::verdict(failures) {
            Some(err) => {
                lock(state).phase = Some(Phase::Content);
                Err(err)
            }
            None => Ok(()),
        }
    }

    /// The verdict of the path assertions; layers whose first walk missed a fact that
    /// links made necessary are read again (rare: see `verify::content`).
    async fn judge_paths(
        &self,
        client: &RegistryClient,
        image: &ImageManifest,
        diff_ids: &[Option<Digest>],
        plan: &Arc<ContentPlan>,
        state: &SharedState,
    ) -> Result<Vec<ProbeError>, ProbeError> {
        for walk in 2..=MAX_WALKS {
            let again = match plan.evaluate() {
                ContentOutcome::Decided(failures) => return Ok(failures),
                ContentOutcome::WalkAgain(again) => again,
            };
            let listed: Vec<String> = again.iter().map(|i| (i + 1).to_string()).collect();
            lock(state).warnings.push(format!(
                "path assertions read layers {} again (walk {walk}): links led to paths an earlier walk did not track",
                listed.join(", ")
            ));
            for index in again {
                let (Some(layer), Some(diff_id)) = (image.layers.get(index), diff_ids.get(index)) else { continue };
                let job = LayerJob {
                    client: client.clone(),
                    repository: self.target.image.repository.clone(),
                    index,
                    layer: layer.clone(),
                    diff_id: *diff_id,
                    is_image: true,
                    limits: self.target.limits,
                    progress: self.progress.clone(),
                    first_byte: Arc::default(),
                    ledger: None,
                    frontend: self.frontend.label.clone(),
                    state: state.clone(),
                    content: Some(plan.clone()),
                    pinned: self.pinned_host(client),
                };
                if let (_, Some(err)) = job.run().await {
                    return Err(err);
                }
            }
        }
        match plan.evaluate() {
            ContentOutcome::Decided(failures) => Ok(failures),
            ContentOutcome::WalkAgain(_) => Err(ProbeError::new(
                Reason::TooLarge,
                format!("path assertions still undecided after {MAX_WALKS} walks of a layer"),
            )),
        }
    }

    async fn pull_layers(
        &self,
        client: &RegistryClient,
        image: &ImageManifest,
        diff_ids: Vec<Option<Digest>>,
        is_image: bool,
        state: &SharedState,
        content: Option<Arc<ContentPlan>>,
    ) -> Result<(), ProbeError> {
        lock(state).phase = Some(Phase::Blob);
        let layers_started = Instant::now();
        let first_byte: Arc<Mutex<Option<Instant>>> = Arc::default();
        let permits = Arc::new(Semaphore::new(self.target.layer_concurrency.max(1)));
        let mut tasks = Vec::with_capacity(image.layers.len());
        let mut abort_on_drop = AbortOnDrop(Vec::with_capacity(image.layers.len()));
        let selection = self.budget.as_ref().map(|b| b.select(&self.frontend.label, &image.layers));
        let mut skipped = Vec::new();
        let mut turns = Vec::with_capacity(image.layers.len());
        for (index, (layer, diff_id)) in image.layers.iter().cloned().zip(diff_ids).enumerate() {
            let selected = selection.as_ref().is_none_or(|s| s.read[index]);
            let within_total = selected && self.budget.as_ref().is_none_or(|b| b.reserve(layer.size));
            if !within_total {
                skipped.push(index);
                let check = skipped_check(&layer);
                tasks.push(tokio::spawn(async move { (check, None) }));
                continue;
            }
            let job = LayerJob {
                client: client.clone(),
                repository: self.target.image.repository.clone(),
                index,
                layer,
                diff_id,
                is_image,
                limits: self.target.limits,
                progress: self.progress.clone(),
                first_byte: first_byte.clone(),
                ledger: self.ledger.clone(),
                frontend: self.frontend.label.clone(),
                state: state.clone(),
                content: content.clone(),
                pinned: self.pinned_host(client),
            };
            let (turn, my_turn) = oneshot::channel::<OwnedSemaphorePermit>();
            turns.push((job.layer.size, index, turn));
            let task = tokio::spawn(async move {
                // Held until the layer is verified; `Err` only when the pull is being dropped.
                let _permit = my_turn.await;
                job.run().await
            });
            abort_on_drop.0.push(task.abort_handle());
            tasks.push(task);
        }
        // Largest layers first: the pull ends when its last layer does, so the long
        // ones start at once and the small ones fill the gaps beside them.
        turns.sort_by_key(|(size, index, _)| (std::cmp::Reverse(*size), *index));
        let dispatcher = tokio::spawn(async move {
            for (_, _, turn) in turns {
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                // A layer task that is gone hands the permit straight back.
                let _ = turn.send(permit);
            }
        });
        abort_on_drop.0.push(dispatcher.abort_handle());
        let mut checks = Vec::with_capacity(tasks.len());
        let mut first_failure: Option<ProbeError> = None;
        for (index, task) in tasks.into_iter().enumerate() {
            let (check, error) = match task.await {
                Ok(done) => done,
                Err(join) => {
                    let layer = &image.layers[index];
                    let err =
                        ProbeError::new(Reason::DecompressError, format!("verifier stopped unexpectedly: {join}"));
                    (failed_check(layer, &err, None), Some(err))
                }
            };
            if first_failure.is_none()
                && let Some(err) = error
            {
                first_failure = Some(err);
            }
            checks.push(check);
            lock(state).layers = checks.clone();
        }
        let mut s = lock(state);
        if !skipped.is_empty() {
            let listed: Vec<String> = skipped.iter().map(|i| (i + 1).to_string()).collect();
            let rotation = match &selection {
                Some(sel) if sel.groups > 1 => format!(
                    "; rotation group {} of {}: every layer is read through this frontend within {} rounds",
                    sel.group + 1,
                    sel.groups,
                    sel.groups
                ),
                _ => "; the round's byte budget was spent".to_string(),
            };
            s.warnings.push(format!("max_round_bytes: layers {} not read this round{rotation}", listed.join(", ")));
        }
        let first = *first_byte.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(first) = first {
            s.add_phase("first_byte", first.saturating_duration_since(layers_started));
            s.add_phase("transfer", first.elapsed());
        } else {
            s.add_phase("transfer", layers_started.elapsed());
        }
        match first_failure {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn result(
        &self,
        state: PullState,
        failure: Option<ProbeError>,
        retries: u32,
        started_at: &str,
        started: Instant,
    ) -> ProbeResult {
        let platform = state.platform.clone().unwrap_or_else(|| match &self.target.platforms {
            PlatformSelection::List(list) if list.len() == 1 => list[0].to_string(),
            _ => "unknown".to_string(),
        });
        let (reason, phase, error, registry_error) = match failure {
            Some(err) => {
                // Failing to reach the frontend at all is the connect phase, whichever request tried.
                let unreachable = matches!(err.reason, Reason::ConnectError | Reason::DnsError | Reason::TlsError);
                let phase = if unreachable && state.manifest_digest.is_none() {
                    Some(Phase::Connect)
                } else if err.reason == Reason::AuthFailed {
                    Some(Phase::Auth)
                } else {
                    state.phase.or(Some(Phase::Connect))
                };
                let mut message = crate::redact::redact_text(&err.message);
                if let Some(retry_after) = err.retry_after {
                    message.push_str(&format!(" (Retry-After {retry_after}s)"));
                }
                (Some(err.reason), phase, Some(message), err.registry_error)
            }
            None => (None, None, None, None),
        };
        ProbeResult {
            probe: self.target.probe.clone(),
            kind: "pull".to_string(),
            image: self.target.image.to_string(),
            registry: self.target.registry.clone(),
            frontend: self.frontend.label.clone(),
            location: self.target.location.clone(),
            platform,
            ok: reason.is_none(),
            reason,
            phase,
            error,
            registry_error,
            retries,
            manifest_digest: state.manifest_digest,
            started_at: started_at.to_string(),
            duration_seconds: started.elapsed().as_secs_f64(),
            phases: state.phases,
            tls_not_after: state.tls_not_after,
            layers: state.layers,
            ratelimit_remaining: state.ratelimit_remaining,
            used_by: Vec::new(),
            mirror_position: None,
            warnings: state.warnings,
        }
    }
}

/// Layer tasks stop when their pull is dropped (deadline passed), not later.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

enum PlatformSource {
    Single(ImageManifest),
    Index(IndexEntry),
}

fn record_connection(client: &RegistryClient, state: &SharedState) {
    let timings = client.timings();
    let mut s = lock(state);
    if let Some(dns) = timings.dns {
        s.phases.entry("dns".into()).or_insert(dns.as_secs_f64());
    }
    if let Some(connect) = timings.connect {
        s.phases.entry("connect".into()).or_insert(connect.as_secs_f64());
    }
    if let Some(auth) = client.transport().auth_time() {
        *s.phases.entry("auth".into()).or_default() += auth.as_secs_f64();
    }
    if let Some(remaining) = client.transport().ratelimit_remaining() {
        s.ratelimit_remaining = Some(remaining);
    }
}

/// Transient failures get one more try, if the deadline leaves room for it.
fn should_retry(err: &ProbeError, elapsed: Duration, timeout: Duration) -> bool {
    match err.reason {
        Reason::RateLimited => err.retry_after.is_some_and(|s| elapsed + Duration::from_secs(s) < timeout),
        _ => err.is_transient() && !err.reason.is_integrity() && elapsed < timeout,
    }
}

/// A rate-limited registry asked for a pause (`Retry-After`): honour it before the retry.
async fn wait_before_retry(err: &ProbeError) {
    if err.reason == Reason::RateLimited
        && let Some(seconds) = err.retry_after
    {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
    }
}

/// One layer: download, stream into a blocking verifier, report.
struct LayerJob {
    client: RegistryClient,
    repository: String,
    index: usize,
    layer: BlobRef,
    diff_id: Option<Digest>,
    is_image: bool,
    limits: PullLimits,
    progress: Option<Progress>,
    first_byte: Arc<Mutex<Option<Instant>>>,
    ledger: Option<Arc<BlobLedger>>,
    frontend: String,
    state: SharedState,
    /// Path assertions: the walk feeds an observer, and the layer is always checked in
    /// full (never by digest only through the ledger: its entries must be seen).
    content: Option<Arc<ContentPlan>>,
    /// For an address-pinned frontend: (`host:port` of its URL, the address really connected to).
    pinned: Option<(String, String)>,
}

/// Chunks and bytes buffered between the network and the verifier of one layer: enough
/// to keep the verifier fed while the connection is read, little enough that memory stays
/// flat (the HTTP client's chunks grow to several hundred KiB on a fast connection).
const CHANNEL_CHUNKS: usize = 64;
const CHANNEL_BYTES: usize = 1 << 20;

impl LayerJob {
    fn label(&self) -> String {
        format!("layer {} {}", self.index + 1, self.layer.digest)
    }

    /// Verify the layer, keeping the pull's state current so a timeout can say what was still being read.
    async fn run(self) -> (LayerCheck, Option<ProbeError>) {
        let mut pending = skipped_check(&self.layer);
        pending.check = None;
        lock(&self.state).active_layers.insert(self.index, pending);
        let (index, state) = (self.index, self.state.clone());
        let (check, error) = self.verify().await;
        let mut s = lock(&state);
        s.active_layers.remove(&index);
        s.done_layers.insert(index, check.clone());
        (check, error)
    }

    async fn verify(self) -> (LayerCheck, Option<ProbeError>) {
        let started = Instant::now();
        let compression = if self.is_image {
            match media_types::layer_compression(&self.layer.media_type) {
                Some(c) => Some(c),
                None => {
                    let err = ProbeError::new(
                        Reason::UnsupportedMediaType,
                        format!("layer media type {:?} is not one pullprobe can unpack", self.layer.media_type),
                    )
                    .context(self.label());
                    return (failed_check(&self.layer, &err, None), Some(err));
                }
            }
        } else {
            None
        };
        let blob = match self.client.blob(&self.repository, &self.layer.digest).await {
            Ok(blob) => blob,
            Err(err) => {
                let err = err.context(self.label());
                let mut check = failed_check(&self.layer, &err, None);
                check.duration_seconds = started.elapsed().as_secs_f64();
                return (check, Some(err));
            }
        };
        let mut source = blob.source.clone();
        // Bytes from the pinned frontend itself came from its address, not from whatever the name resolves to.
        if let (Some((host, addr)), Some(by)) = (&self.pinned, &source.served_by)
            && by == host
        {
            source.served_by = Some(addr.clone());
        }
        let mode = match (&self.ledger, compression) {
            (Some(ledger), Some(_)) if self.content.is_none() => ledger.claim(&self.layer.digest, &self.frontend),
            _ => CheckMode::Full,
        };
        let spec = LayerSpec {
            digest: self.layer.digest,
            size: self.layer.size,
            compression,
            diff_id: self.diff_id,
            mode,
            limits: LayerLimits {
                max_uncompressed_bytes: self.limits.max_uncompressed_bytes,
                max_uncompressed_ratio: self.limits.max_uncompressed_ratio,
            },
        };
        let (sender, reader) = verify::chunk_channel(CHANNEL_CHUNKS, CHANNEL_BYTES);
        let observer = self.content.as_ref().filter(|_| compression.is_some()).map(|plan| plan.observer(self.index));
        let verifier = tokio::task::spawn_blocking(move || {
            let mut observer = observer;
            let visitor = observer.as_mut().map(|o| o as &mut dyn verify::EntryVisitor);
            let report = verify::verify_layer(reader, &spec, visitor);
            if let Some(observer) = observer.filter(|_| report.is_ok()) {
                observer.finish();
            }
            report
        });
        let mut response = blob.response;
        let what = self.label();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if let Ok(mut first) = self.first_byte.lock() {
                        first.get_or_insert_with(Instant::now);
                    }
                    if let Some(progress) = &self.progress {
                        progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    if sender.send(Ok(chunk)).await.is_err() {
                        break; // the verifier has seen enough (e.g. more bytes than the descriptor)
                    }
                }
                Ok(None) => break,
                Err(e) if is_incomplete_body(&e) => break, // short body: the verifier counts the bytes
                Err(e) => {
                    let _ = sender.send(Err(classify_transport(&e, &what))).await;
                    break;
                }
            }
        }
        drop(sender);
        let report = match verifier.await {
            Ok(report) => report,
            Err(join) => {
                let err = ProbeError::new(Reason::DecompressError, format!("verifier stopped unexpectedly: {join}"))
                    .context(self.label());
                return (failed_check(&self.layer, &err, Some(&source)), Some(err));
            }
        };
        if mode == CheckMode::Full
            && compression.is_some()
            && self.content.is_none()
            && let Some(ledger) = &self.ledger
        {
            ledger.settle(&self.layer.digest, &self.frontend, report.error.as_ref());
        }
        let error = report.error.clone().map(|e| {
            let mut e = e.context(self.label());
            if let Some(cache) = &source.cache_status {
                e.message.push_str(&format!(", cache {cache}"));
                if let Some(by) = &source.served_by {
                    e.message.push_str(&format!(" on {by}"));
                }
            }
            e
        });
        let check = LayerCheck {
            digest: self.layer.digest.to_string(),
            media_type: self.layer.media_type.clone(),
            size: self.layer.size,
            ok: error.is_none(),
            reason: error.as_ref().map(|e| e.reason),
            check: Some(report.check.as_str().to_string()),
            bytes: report.bytes,
            uncompressed_bytes: report.uncompressed_bytes,
            duration_seconds: started.elapsed().as_secs_f64(),
            cache_status: source.cache_status.clone(),
            served_by: source.served_by.clone(),
            error: error.as_ref().map(|e| crate::redact::redact_text(&e.message)),
        };
        (check, error)
    }
}

/// A layer left for a later round by the bandwidth rotation: not a failure.
fn skipped_check(layer: &BlobRef) -> LayerCheck {
    LayerCheck {
        digest: layer.digest.to_string(),
        media_type: layer.media_type.clone(),
        size: layer.size,
        ok: true,
        reason: None,
        check: Some("skipped".to_string()),
        bytes: 0,
        uncompressed_bytes: None,
        duration_seconds: 0.0,
        cache_status: None,
        served_by: None,
        error: None,
    }
}

fn failed_check(layer: &BlobRef, err: &ProbeError, source: Option<&BlobSource>) -> LayerCheck {
    LayerCheck {
        digest: layer.digest.to_string(),
        media_type: layer.media_type.clone(),
        size: layer.size,
        ok: false,
        reason: Some(err.reason),
        check: None,
        bytes: 0,
        uncompressed_bytes: None,
        duration_seconds: 0.0,
        cache_status: source.and_then(|s| s.cache_status.clone()),
        served_by: source.and_then(|s| s.served_by.clone()),
        error: Some(crate::redact::redact_text(&err.message)),
    }
}

/// Now, as RFC 3339 UTC with millisecond precision.
pub fn now_rfc3339() -> String {
    // Millisecond precision: run times derived from it (last success) must order runs a second apart.
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_millisecond(now.millisecond()).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
