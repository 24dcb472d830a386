//! The content phase: `expect:` once every layer passed. The path verdict comes from the
//! walks the layers already had (`verify::content`), reading a layer again only where
//! links made a fact necessary that its first walk did not track; then the config's
//! labels and `max_age` (`probe::expect`). A failure is one error of phase `content`.

use std::sync::Arc;

use super::config::ConfigBlob;
use super::layer_job::LayerJob;
use super::{PullRun, SharedState, lock};
use crate::digest::Digest;
use crate::manifest::ImageManifest;
use crate::probe::expect;
use crate::reason::{Phase, ProbeError, Reason};
use crate::registry::client::RegistryClient;
use crate::result::Check;
use crate::verify::content::{ContentOutcome, ContentPlan, MAX_WALKS};

impl PullRun<'_> {
    /// `expect:` once every layer passed: the path verdict (reading layers again while it
    /// asks, see `verify::content`), then labels and `max_age` (`probe::expect`).
    pub(super) async fn check_expectations(
        &self,
        client: &RegistryClient,
        image: &ImageManifest,
        config: &ConfigBlob,
        content: Option<Arc<ContentPlan>>,
        state: &SharedState,
    ) -> Result<(), ProbeError> {
        let wanted = &self.target.expect;
        if wanted.is_empty() {
            return Ok(());
        }
        let Some(image_config) = &config.image else {
            return fail_content(expect::not_an_image(wanted, &image.config.media_type), state);
        };
        let mut failures = Vec::new();
        if let Some(plan) = content {
            let skipped = lock(state).layers.iter().any(|l| l.check == Some(Check::Skipped));
            if skipped {
                let warning = "path assertions not checked: max_round_bytes left layers unread this round";
                lock(state).warnings.push(warning.to_string());
            } else {
                failures.extend(self.judge_paths(client, image, &config.diff_ids, &plan, state).await?);
            }
        }
        let mut warnings = Vec::new();
        failures.extend(expect::check_config(wanted, image_config, time::OffsetDateTime::now_utc(), &mut warnings));
        lock(state).warnings.extend(warnings);
        fail_content(failures, state)
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
                if let Some(progress) = &lock(state).progress {
                    progress.expect_more(layer.size);
                }
                let job = LayerJob {
                    content: Some(plan.clone()),
                    ..self.layer_job(client, state, index, layer.clone(), *diff_id)
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
}

/// The `expect:` verdict: the first failure's reason, every failure listed, phase `content`.
fn fail_content(failures: Vec<ProbeError>, state: &SharedState) -> Result<(), ProbeError> {
    match expect::verdict(failures) {
        Some(err) => {
            lock(state).phase = Some(Phase::Content);
            Err(err)
        }
        None => Ok(()),
    }
}
