//! The canary image, built in memory, unique to one run: one uncompressed tar
//! layer holding a single file of random bytes, an OCI image config that
//! names the run, and an OCI image manifest.
//!
//! It is an ordinary image — `docker pull`, skopeo or a pullprobe pull probe
//! can read it — so the registry treats it as it treats every push. The
//! random content makes every blob new to the registry: nothing is skipped
//! as "already present", every run really writes.

use bytes::Bytes;
use rand::RngCore;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::digest::Digest;
use crate::media_types::{OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST};

/// A tar archive is made of 512-byte blocks.
const TAR_BLOCK: u64 = 512;
/// A header block, at least one data block and the two-block end-of-archive marker.
pub const MIN_LAYER_BYTES: u64 = 4 * TAR_BLOCK;
/// The one file in the layer.
pub const FILE_NAME: &str = "pullprobe-canary";
/// The config label naming the run (its tag).
pub const RUN_LABEL: &str = "org.pullprobe.canary.run";

/// One blob of the canary image.
#[derive(Debug, Clone)]
pub struct CanaryBlob {
    pub digest: Digest,
    pub media_type: &'static str,
    pub bytes: Bytes,
}

impl CanaryBlob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        CanaryBlob { digest: Digest::of(&bytes), media_type, bytes: Bytes::from(bytes) }
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// `layer sha256:0123456789ab` / `config sha256:…`, for messages.
    pub fn describe(&self) -> String {
        let role = if self.media_type == OCI_CONFIG { "config" } else { "layer" };
        format!("{role} {}", self.digest.short())
    }
}

/// What one canary run pushes and reads back.
#[derive(Debug, Clone)]
pub struct CanaryImage {
    /// The per-run tag the manifest is pushed under.
    pub tag: String,
    pub layer: CanaryBlob,
    pub config: CanaryBlob,
    pub manifest: CanaryBlob,
}

/// The size of the canary layer for a configured `size`: rounded up to whole
/// tar blocks, at least [`MIN_LAYER_BYTES`].
pub fn layer_size(size: u64) -> u64 {
    size.max(MIN_LAYER_BYTES).div_ceil(TAR_BLOCK) * TAR_BLOCK
}

impl CanaryImage {
    /// Build the image for one run: a layer of [`layer_size`]`(size)` bytes.
    pub fn build(size: u64, tag: &str, created: OffsetDateTime) -> Result<CanaryImage, String> {
        let layer_bytes = layer_size(size);
        let data_len = layer_bytes - 3 * TAR_BLOCK;
        let mut data = vec![0u8; usize::try_from(data_len).map_err(|_| format!("size {size} is too large"))?];
        rand::rng().fill_bytes(&mut data);
        let created_unix = created.unix_timestamp().max(0) as u64;
        let mut header = tar::Header::new_ustar();
        header.set_path(FILE_NAME).map_err(|e| format!("tar header: {e}"))?;
        header.set_size(data_len);
        header.set_mode(0o644);
        header.set_mtime(created_unix);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut builder = tar::Builder::new(Vec::with_capacity(layer_bytes as usize));
        builder.append(&header, data.as_slice()).map_err(|e| format!("tar: {e}"))?;
        let tar = builder.into_inner().map_err(|e| format!("tar: {e}"))?;
        debug_assert_eq!(tar.len() as u64, layer_bytes);
        let layer = CanaryBlob::new(OCI_LAYER_TAR, tar);

        let created = created.replace_nanosecond(0).unwrap_or(created).format(&Rfc3339).unwrap_or_default();
        let config = json!({
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {RUN_LABEL: tag}},
            // Uncompressed: the layer's digest is its diff_id.
            "rootfs": {"type": "layers", "diff_ids": [layer.digest.to_string()]},
            "history": [{"created": created, "created_by": "pullprobe write-path canary"}],
        });
        let config = CanaryBlob::new(OCI_CONFIG, serde_json::to_vec(&config).map_err(|e| e.to_string())?);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest.to_string(), "size": config.size()},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": layer.digest.to_string(), "size": layer.size()}],
            "annotations": {"org.opencontainers.image.created": created},
        });
        let manifest = CanaryBlob::new(OCI_MANIFEST, serde_json::to_vec(&manifest).map_err(|e| e.to_string())?);
        Ok(CanaryImage { tag: tag.to_string(), layer, config, manifest })
    }

    /// The blobs the manifest lists, config first.
    pub fn blobs(&self) -> [&CanaryBlob; 2] {
        [&self.config, &self.layer]
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::manifest::{Manifest, parse_manifest};

    #[test]
    fn layer_sizes_are_whole_tar_blocks() {
        assert_eq!(layer_size(1), MIN_LAYER_BYTES);
        assert_eq!(layer_size(4 << 20), 4 << 20);
        assert_eq!(layer_size(4097), 4608);
    }

    #[test]
    fn the_image_is_a_real_image_and_unique() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let a = CanaryImage::build(10_000, "pullprobe-canary-x-1700000000", at).unwrap();
        let b = CanaryImage::build(10_000, "pullprobe-canary-x-1700000000", at).unwrap();
        assert_ne!(a.layer.digest, b.layer.digest, "random content: every run pushes new blobs");
        assert_eq!(a.layer.size(), 10_240);

        let mut archive = tar::Archive::new(&a.layer.bytes[..]);
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some(FILE_NAME));
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        assert_eq!(content.len() as u64, 10_240 - 3 * TAR_BLOCK);
        drop(entry);
        assert!(entries.next().is_none());

        let Manifest::Image(manifest) = parse_manifest(&a.manifest.bytes, Some(OCI_MANIFEST)).unwrap() else {
            panic!("not an image manifest");
        };
        assert_eq!(manifest.config.digest, a.config.digest);
        assert_eq!(manifest.layers.len(), 1);
        assert_eq!(manifest.layers[0].digest, a.layer.digest);
        assert_eq!(manifest.layers[0].size, a.layer.size());
        let config: serde_json::Value = serde_json::from_slice(&a.config.bytes).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], a.layer.digest.to_string());
        assert_eq!(config["config"]["Labels"][RUN_LABEL], "pullprobe-canary-x-1700000000");
    }
}
