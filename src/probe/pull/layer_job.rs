//! One layer's job: its blob fetched through the frontend and streamed into the verifier
//! (digest, size, and for image layers decompression, diff_id and the tar walk, feeding
//! the content observer when `expect:` has paths), its `layers[]` entry written from the
//! verdict. The pull's state is kept current so a timeout can say what was still read.
//!
//! The round's ledger decides how much to check: the first frontend to reach a digest
//! checks it in full, the others by digest and size only (`probe::ledger`); a pull with
//! path assertions always checks in full, since a digest-only check sees no entries.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use reqwest::Response;

use super::{PullLimits, PullRun, SharedState, lock};
use crate::digest::Digest;
use crate::manifest::BlobRef;
use crate::media_types::{self, Compression};
use crate::probe::bandwidth::Bandwidth;
use crate::probe::blob;
use crate::probe::ledger::BlobLedger;
use crate::probe::progress::PlatformProgress;
use crate::reason::{ProbeError, Reason};
use crate::registry::client::{BlobSource, RegistryClient};
use crate::result::{Check, LayerCheck};
use crate::verify::content::ContentPlan;
use crate::verify::{self, CheckMode, ChunkReader, EntryVisitor, LayerLimits, LayerReport, LayerSpec};

/// When the first byte of any layer of the pull arrived.
pub(super) type FirstByte = Arc<Mutex<Option<Instant>>>;

/// One layer: download, stream into a blocking verifier, report.
pub(super) struct LayerJob {
    pub client: RegistryClient,
    pub repository: String,
    pub index: usize,
    pub layer: BlobRef,
    pub diff_id: Option<Digest>,
    /// An image layer (unpacked); else an artifact blob (digest and size only).
    pub is_image: bool,
    pub limits: PullLimits,
    /// Where the platform's bytes are counted for a progress display.
    pub progress: Option<PlatformProgress>,
    /// The process's cap on bytes per second, if any.
    pub bandwidth: Option<Arc<Bandwidth>>,
    pub first_byte: FirstByte,
    pub ledger: Option<Arc<BlobLedger>>,
    pub frontend: String,
    /// The frontend's pinned address, for `served_by`.
    pub pin: Option<SocketAddr>,
    pub state: SharedState,
    /// Path assertions: the walk feeds an observer, and the layer is always checked in
    /// full (never by digest only through the ledger: its entries must be seen).
    pub content: Option<Arc<ContentPlan>>,
    /// The pull's claim on cores, which counts this layer's (told when it is over).
    pub claim: Option<Arc<verify::Claim>>,
}

impl PullRun<'_> {
    /// The job for layer `index` of this pull: an image layer, checked as the ledger says.
    pub(super) fn layer_job(
        &self,
        client: &RegistryClient,
        state: &SharedState,
        index: usize,
        layer: BlobRef,
        diff_id: Option<Digest>,
    ) -> LayerJob {
        LayerJob {
            client: client.clone(),
            repository: self.target.image.repository.clone(),
            index,
            layer,
            diff_id,
            is_image: true,
            limits: self.target.limits,
            progress: lock(state).progress.clone(),
            bandwidth: self.round.bandwidth.clone(),
            first_byte: FirstByte::default(),
            ledger: self.round.ledger.clone(),
            frontend: self.frontend.label.clone(),
            pin: self.frontend.pin,
            state: state.clone(),
            content: None,
            claim: None,
        }
    }
}

impl LayerJob {
    fn label(&self) -> String {
        format!("layer {} {}", self.index + 1, self.layer.digest)
    }

    /// Verify the layer, keeping the pull's state current so a timeout can say what was still being read.
    pub async fn run(self) -> (LayerCheck, Option<ProbeError>) {
        let claim = self.claim.clone();
        let pending = blob::unread(&self.layer.digest, &self.layer.media_type, self.layer.size);
        lock(&self.state).active_layers.insert(self.index, pending);
        let (index, state) = (self.index, self.state.clone());
        let (check, error) = self.verify().await;
        if let Some(claim) = claim {
            claim.layer_done();
        }
        let mut s = lock(&state);
        s.active_layers.remove(&index);
        s.done_layers.insert(index, check.clone());
        (check, error)
    }

    async fn verify(self) -> (LayerCheck, Option<ProbeError>) {
        let started = Instant::now();
        let compression = match self.compression() {
            Ok(compression) => compression,
            Err(err) => return (failed_check(&self.layer, &err, None), Some(err)),
        };
        let response = match self.client.blob(&self.repository, &self.layer.digest).await {
            Ok(response) => response,
            Err(err) => {
                let err = err.context(self.label());
                let check = failed_check(&self.layer, &err, None);
                return (LayerCheck { duration_seconds: started.elapsed().as_secs_f64(), ..check }, Some(err));
            }
        };
        let mut source = response.source;
        blob::attribute_to_pin(&mut source, self.pin, self.client.base());
        let mode = self.check_mode(compression);
        let report = match self.stream(response.response, compression, mode).await {
            Ok(report) => report,
            Err(err) => {
                let err = err.context(self.label());
                return (failed_check(&self.layer, &err, Some(&source)), Some(err));
            }
        };
        self.settle(mode, compression, &report);
        let error = report.error.clone().map(|e| blob::with_cache(e.context(self.label()), &source));
        let entry = blob::unread(&self.layer.digest, &self.layer.media_type, self.layer.size);
        (blob::judged(entry, &report, &source, started.elapsed(), error.as_ref()), error)
    }

    /// How an image layer is unpacked (`None`: an artifact blob, not unpacked).
    fn compression(&self) -> Result<Option<Compression>, ProbeError> {
        if !self.is_image {
            return Ok(None);
        }
        match media_types::layer_compression(&self.layer.media_type) {
            Some(compression) => Ok(Some(compression)),
            None => Err(ProbeError::new(
                Reason::UnsupportedMediaType,
                format!("layer media type {:?} is not one pullprobe can unpack", self.layer.media_type),
            )
            .context(self.label())),
        }
    }

    /// In full, unless the round's ledger says another frontend checks this digest's content.
    fn check_mode(&self, compression: Option<Compression>) -> CheckMode {
        match (&self.ledger, compression) {
            (Some(ledger), Some(_)) if self.content.is_none() => ledger.claim(&self.layer.digest, &self.frontend),
            _ => CheckMode::Full,
        }
    }

    /// The body into the verifier on a blocking thread, counted for progress as it arrives.
    async fn stream(
        &self,
        response: Response,
        compression: Option<Compression>,
        mode: CheckMode,
    ) -> Result<LayerReport, ProbeError> {
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
        let observer = self.content.as_ref().filter(|_| compression.is_some()).map(|plan| plan.observer(self.index));
        let claimed = self.claim.is_some();
        let verifier = move |reader: ChunkReader| {
            let mut observer = observer;
            let visitor = observer.as_mut().map(|o| o as &mut dyn EntryVisitor);
            let report = if claimed {
                verify::verify_claimed_layer(reader, &spec, visitor)
            } else {
                verify::verify_layer(reader, &spec, visitor)
            };
            if let Some(observer) = observer.filter(|_| report.is_ok()) {
                observer.finish();
            }
            report
        };
        blob::verify_body(response, |len| self.count(len), self.bandwidth.as_deref(), verifier).await
    }

    /// A chunk arrived: the pull's first byte, and the progress display.
    fn count(&self, len: usize) {
        if let Ok(mut first) = self.first_byte.lock() {
            first.get_or_insert_with(Instant::now);
        }
        if let Some(progress) = &self.progress {
            progress.read(len as u64);
        }
    }

    /// A full check tells the round's ledger how it went: content verified, or the claim released.
    fn settle(&self, mode: CheckMode, compression: Option<Compression>, report: &LayerReport) {
        if mode == CheckMode::Full
            && compression.is_some()
            && self.content.is_none()
            && let Some(ledger) = &self.ledger
        {
            ledger.settle(&self.layer.digest, &self.frontend, report.error.as_ref());
        }
    }
}

/// A layer left for a later round by the bandwidth rotation: not a failure.
pub(super) fn skipped_check(layer: &BlobRef) -> LayerCheck {
    let entry = blob::unread(&layer.digest, &layer.media_type, layer.size);
    LayerCheck { check: Some(Check::Skipped), ..entry }
}

/// A layer that failed before (or without) a verdict on its bytes.
pub(super) fn failed_check(layer: &BlobRef, err: &ProbeError, source: Option<&BlobSource>) -> LayerCheck {
    blob::failed(blob::unread(&layer.digest, &layer.media_type, layer.size), err, source)
}
