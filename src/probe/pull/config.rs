//! The config phase: the config blob, judged by the verifier's digest-only path like
//! every other blob (sha256 and size against the manifest's descriptor), then read for
//! what the layers must be: one `rootfs.diff_ids` entry per layer, and the platform.
//! An artifact whose config is not an image config has no diff_ids: its blobs get
//! digest and size checks only.

use std::time::Instant;

use super::{PullRun, SharedState, lock};
use crate::digest::Digest;
use crate::manifest::{self, BlobRef, ImageConfig, ImageManifest};
use crate::media_types;
use crate::probe::blob;
use crate::reason::{Phase, ProbeError, Reason};
use crate::registry::client::RegistryClient;
use crate::verify::{self, LayerSpec};

/// What the config says the layers are.
pub(super) struct ConfigBlob {
    /// The image config; `None` for an artifact (not unpacked).
    pub image: Option<ImageConfig>,
    /// The diff_id of each layer, in manifest order; `None` where unknown (artifacts).
    pub diff_ids: Vec<Option<Digest>>,
}

impl PullRun<'_> {
    /// The config blob of `image`, verified and read.
    pub(super) async fn fetch_config(
        &self,
        client: &RegistryClient,
        image: &ImageManifest,
        state: &SharedState,
    ) -> Result<ConfigBlob, ProbeError> {
        lock(state).phase = Some(Phase::Config);
        let started = Instant::now();
        let body = self.config_bytes(client, &image.config).await?;
        let config = if media_types::is_image_config(&image.config.media_type) {
            self.image_config(&body, image, state)?
        } else {
            ConfigBlob { image: None, diff_ids: vec![None; image.layers.len()] }
        };
        lock(state).add_phase("config", started.elapsed());
        Ok(config)
    }

    /// The config's bytes, at most `max_manifest_bytes`, with the verifier's verdict on them.
    async fn config_bytes(&self, client: &RegistryClient, config: &BlobRef) -> Result<bytes::Bytes, ProbeError> {
        let limit = self.target.limits.max_manifest_bytes;
        if config.size > limit {
            return Err(ProbeError::new(
                Reason::TooLarge,
                format!("config {} is {} bytes, over the limit of {limit}", config.digest.short(), config.size),
            ));
        }
        let what = format!("config {}", config.digest);
        let (body, source) = client
            .small_blob(&self.target.image.repository, &config.digest, limit)
            .await
            .map_err(|e| e.context(&what))?;
        let report = verify::verify_layer(&body[..], &LayerSpec::digest_only(config.digest, config.size), None);
        match report.error {
            Some(err) => Err(blob::with_cache(err.context(what), &source)),
            None => Ok(body),
        }
    }

    /// An image config: one diff_id per layer, and the platform it was built for.
    fn image_config(&self, body: &[u8], image: &ImageManifest, state: &SharedState) -> Result<ConfigBlob, ProbeError> {
        let mut parsed = manifest::parse_image_config(body)?;
        if parsed.diff_ids.len() != image.layers.len() {
            return Err(ProbeError::new(
                Reason::ManifestInvalid,
                format!(
                    "manifest lists {} layers but config {} has {} diff_ids",
                    image.layers.len(),
                    image.config.digest.short(),
                    parsed.diff_ids.len()
                ),
            ));
        }
        if let Some(platform) = &parsed.platform {
            lock(state).platform = Some(platform.to_string());
        }
        let diff_ids = std::mem::take(&mut parsed.diff_ids).into_iter().map(Some).collect();
        Ok(ConfigBlob { image: Some(parsed), diff_ids })
    }
}
