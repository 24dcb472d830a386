//! The layer phase: which layers are read this round, in what order and how many at
//! once. The pull is capped by `max_pull_bytes`; the round's budget may leave layers for
//! a later round (rotation, a warning on the result, never a failure); the rest run as
//! [`LayerJob`]s, `layer_concurrency` at a time, largest first. The entries of
//! `layers[]` stay in manifest order and the first failure in that order is the pull's.
//! The phase's time is split into `first_byte` and `transfer`.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::{AbortHandle, JoinHandle};

use super::config::ConfigBlob;
use super::layer_job::{FirstByte, LayerJob, failed_check, skipped_check};
use super::{PullRun, PullState, SharedState, lock};
use crate::manifest::{BlobRef, ImageManifest};
use crate::probe::budget::Selection;
use crate::reason::{Phase, ProbeError, Reason};
use crate::registry::client::RegistryClient;
use crate::result::LayerCheck;
use crate::verify::Claim;
use crate::verify::content::ContentPlan;

impl PullRun<'_> {
    /// `max_pull_bytes`: the compressed bytes of one image through one frontend.
    pub(super) fn check_pull_size(&self, image: &ImageManifest) -> Result<(), ProbeError> {
        // Saturating: descriptor sizes come from the registry and may add up past u64.
        let total = image.layers.iter().fold(0u64, |sum, l| sum.saturating_add(l.size));
        let limit = self.target.limits.max_pull_bytes;
        if total > limit {
            return Err(ProbeError::new(
                Reason::TooLarge,
                format!("image layers total {total} bytes, over max_pull_bytes {limit}"),
            ));
        }
        Ok(())
    }

    /// Every layer of `image` this round reads, verified; the others marked skipped.
    pub(super) async fn pull_layers(
        &self,
        client: &RegistryClient,
        image: &ImageManifest,
        config: &ConfigBlob,
        state: &SharedState,
        content: Option<Arc<ContentPlan>>,
    ) -> Result<(), ProbeError> {
        lock(state).phase = Some(Phase::Blob);
        let started = Instant::now();
        let first_byte = FirstByte::default();
        let selection = self.round.budget.as_ref().map(|b| b.select(&self.frontend.label, &image.layers));
        let mut schedule = Schedule::default();
        for (index, (layer, diff_id)) in image.layers.iter().zip(&config.diff_ids).enumerate() {
            if !self.reads(selection.as_ref(), index, layer) {
                if let Some(progress) = &lock(state).progress {
                    progress.forgo(layer.size);
                }
                schedule.skip(index, layer);
                continue;
            }
            schedule.queue(LayerJob {
                is_image: config.image.is_some(),
                first_byte: first_byte.clone(),
                content: content.clone(),
                ..self.layer_job(client, state, index, layer.clone(), *diff_id)
            });
        }
        schedule.dispatch(self.target.layer_concurrency);
        let first_failure = schedule.finish(state).await;
        let mut s = lock(state);
        if !schedule.skipped.is_empty() {
            s.warnings.push(rotation_warning(&schedule.skipped, selection.as_ref()));
        }
        record_transfer(&mut s, started, &first_byte);
        first_failure.map_or(Ok(()), Err)
    }

    /// Whether this round reads layer `index`: in the rotation's group, and within the round's total.
    fn reads(&self, selection: Option<&Selection>, index: usize, layer: &BlobRef) -> bool {
        let selected = selection.is_none_or(|s| s.read[index]);
        selected && self.round.budget.as_ref().is_none_or(|b| b.reserve(layer.size))
    }
}

/// One layer's place in `layers[]`: left for a later round, or a task verifying it.
enum Slot {
    Skipped(LayerCheck),
    Task(BlobRef, JoinHandle<(LayerCheck, Option<ProbeError>)>),
}

/// A layer's turn to run: its permit, and the pull's claim on cores.
type Turn = (OwnedSemaphorePermit, Arc<Claim>);

/// The layer tasks of one pull, in manifest order, and their turns to run.
#[derive(Default)]
struct Schedule {
    slots: Vec<Slot>,
    /// Indexes of the layers left for a later round.
    skipped: Vec<usize>,
    /// (size, index, the layer's turn): a task waits for its turn before it starts.
    turns: Vec<(u64, usize, oneshot::Sender<Turn>)>,
    running: AbortOnDrop,
}

impl Schedule {
    fn skip(&mut self, index: usize, layer: &BlobRef) {
        self.skipped.push(index);
        self.slots.push(Slot::Skipped(skipped_check(layer)));
    }

    fn queue(&mut self, mut job: LayerJob) {
        let (turn, my_turn) = oneshot::channel::<Turn>();
        self.turns.push((job.layer.size, job.index, turn));
        let layer = job.layer.clone();
        let task = tokio::spawn(async move {
            // The permit is held until the layer is verified; `Err` only when the pull is
            // being dropped.
            let _permit = my_turn.await.map(|(permit, claim)| {
                job.claim = Some(claim);
                permit
            });
            job.run().await
        });
        self.running.0.push(task.abort_handle());
        self.slots.push(Slot::Task(layer, task));
    }

    /// Give the queued layers their turns, `concurrency` at a time. Largest layers first:
    /// the pull ends when its last layer does, so the long ones start at once and the
    /// small ones fill the gaps beside them.
    fn dispatch(&mut self, concurrency: usize) {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut turns = std::mem::take(&mut self.turns);
        turns.sort_by_key(|(size, index, _)| (std::cmp::Reverse(*size), *index));
        // The cores these layers take, for the verifier's choice of when to give a
        // layer's decoder a thread of its own.
        let claim = Arc::new(Claim::new(concurrency, turns.len()));
        let dispatcher = tokio::spawn(async move {
            for (_, _, turn) in turns {
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                // A layer task that is gone hands the permit straight back.
                if turn.send((permit, claim.clone())).is_err() {
                    claim.layer_done();
                }
            }
        });
        self.running.0.push(dispatcher.abort_handle());
    }

    /// Wait for every layer in manifest order, keeping the state's `layers` current;
    /// the first failure in that order.
    async fn finish(&mut self, state: &SharedState) -> Option<ProbeError> {
        let mut checks = Vec::with_capacity(self.slots.len());
        let mut first_failure = None;
        for slot in std::mem::take(&mut self.slots) {
            let (check, error) = match slot {
                Slot::Skipped(check) => (check, None),
                Slot::Task(layer, task) => task.await.unwrap_or_else(|join| {
                    let err =
                        ProbeError::new(Reason::DecompressError, format!("verifier stopped unexpectedly: {join}"));
                    (failed_check(&layer, &err, None), Some(err))
                }),
            };
            first_failure = first_failure.or(error);
            checks.push(check);
            lock(state).layers = checks.clone();
        }
        first_failure
    }
}

/// Layer tasks stop when their pull is dropped (deadline passed), not later.
#[derive(Default)]
struct AbortOnDrop(Vec<AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// The warning for layers the round's byte budget left unread.
fn rotation_warning(skipped: &[usize], selection: Option<&Selection>) -> String {
    let listed: Vec<String> = skipped.iter().map(|i| (i + 1).to_string()).collect();
    let rotation = match selection {
        Some(sel) if sel.groups > 1 => format!(
            "; rotation group {} of {}: every layer is read through this frontend within {} rounds",
            sel.group + 1,
            sel.groups,
            sel.groups
        ),
        _ => "; the round's byte budget was spent".to_string(),
    };
    format!("max_round_bytes: layers {} not read this round{rotation}", listed.join(", "))
}

/// The phase's time: until the first byte of any layer, then the transfer.
fn record_transfer(state: &mut PullState, started: Instant, first_byte: &FirstByte) {
    let first = *first_byte.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(first) = first {
        state.add_phase("first_byte", first.saturating_duration_since(started));
        state.add_phase("transfer", first.elapsed());
    } else {
        state.add_phase("transfer", started.elapsed());
    }
}
