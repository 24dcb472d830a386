//! One runnable image: written layers, a config (`architecture`, `os`, `created`,
//! `rootfs.diff_ids`) and an OCI or Docker schema 2 manifest over them.
//!
//! The builder can be told to lie — a layer descriptor with a digest of a blob
//! that does not exist, a wrong size, a wrong diff_id — through the `lie_*`
//! helpers or the general `edit_config` / `edit_manifest` hooks, which run on
//! the documents just before they are serialised. Note that distribution
//! refuses a manifest that names a blob it does not have: push the blob, push
//! the manifest, then delete the blob from storage.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::blob::{Blob, write_blob};
use super::layer::Layer;
use super::manifest::{Descriptor, Format, ImageConfig, ImageManifest, ManifestBytes, RootFs, to_json};
use crate::Parts;
use crate::digest::Digest;
use crate::platform::Platform;

/// The `created` time of images that do not set one: the epoch, as reproducible builds write.
pub const DEFAULT_CREATED: &str = "1970-01-01T00:00:00Z";

type ConfigEdit = Box<dyn FnOnce(&mut ImageConfig)>;
type ManifestEdit = Box<dyn FnOnce(&mut ImageManifest)>;

/// An image being described; [`build`](ImageBuilder::build) writes its config and serialises its manifest.
pub struct ImageBuilder {
    format: Format,
    platform: Platform,
    created: Option<String>,
    runtime_config: serde_json::Map<String, serde_json::Value>,
    layers: Vec<Layer>,
    annotations: BTreeMap<String, String>,
    config_edits: Vec<ConfigEdit>,
    manifest_edits: Vec<ManifestEdit>,
}

impl ImageBuilder {
    /// An image for linux/amd64 created at the epoch, with no layers yet.
    pub fn new(format: Format) -> Self {
        ImageBuilder {
            format,
            platform: Platform::linux_amd64(),
            created: Some(DEFAULT_CREATED.to_string()),
            runtime_config: serde_json::Map::new(),
            layers: Vec::new(),
            annotations: BTreeMap::new(),
            config_edits: Vec::new(),
            manifest_edits: Vec::new(),
        }
    }

    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    pub fn layers(mut self, layers: impl IntoIterator<Item = Layer>) -> Self {
        self.layers.extend(layers);
        self
    }

    pub fn created(mut self, created: OffsetDateTime) -> Self {
        self.created = Some(created.format(&Rfc3339).unwrap_or_else(|_| DEFAULT_CREATED.to_string()));
        self
    }

    /// Leave `created` out of the config.
    pub fn no_created(mut self) -> Self {
        self.created = None;
        self
    }

    /// A key of the runtime config (`Env`, `Cmd`, `WorkingDir`, …).
    pub fn runtime_config(mut self, key: &str, value: serde_json::Value) -> Self {
        self.runtime_config.insert(key.to_string(), value);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    /// Change the config just before it is written (the manifest then describes the changed config).
    pub fn edit_config(mut self, edit: impl FnOnce(&mut ImageConfig) + 'static) -> Self {
        self.config_edits.push(Box::new(edit));
        self
    }

    /// Change the manifest just before it is serialised.
    pub fn edit_manifest(mut self, edit: impl FnOnce(&mut ImageManifest) + 'static) -> Self {
        self.manifest_edits.push(Box::new(edit));
        self
    }

    /// The descriptor of layer `index` names `digest` (a blob that is not part of the image).
    pub fn lie_about_layer_digest(self, index: usize, digest: Digest) -> Self {
        self.edit_manifest(move |m| {
            if let Some(layer) = m.layers.get_mut(index) {
                layer.digest = digest;
            }
        })
    }

    /// The descriptor of layer `index` claims `size` bytes.
    pub fn lie_about_layer_size(self, index: usize, size: u64) -> Self {
        self.edit_manifest(move |m| {
            if let Some(layer) = m.layers.get_mut(index) {
                layer.size = size;
            }
        })
    }

    /// The config lists `diff_id` for layer `index`.
    pub fn lie_about_diff_id(self, index: usize, diff_id: Digest) -> Self {
        self.edit_config(move |c| {
            if let Some(d) = c.rootfs.diff_ids.get_mut(index) {
                *d = diff_id;
            }
        })
    }

    /// Write the config blob into `dir` and serialise the manifest.
    pub fn build(self, dir: &Path) -> io::Result<Image> {
        let mut config = ImageConfig {
            created: self.created,
            architecture: self.platform.architecture.clone(),
            os: self.platform.os.clone(),
            variant: self.platform.variant.clone(),
            config: self.runtime_config,
            rootfs: RootFs::layers(self.layers.iter().map(|l| l.diff_id).collect()),
        };
        for edit in self.config_edits {
            edit(&mut config);
        }
        let config_blob = write_blob(dir, &to_json(&config))?;

        let mut manifest = ImageManifest {
            schema_version: 2,
            media_type: self.format.manifest_media_type().to_string(),
            artifact_type: None,
            config: Descriptor::new(self.format.config_media_type(), config_blob.digest, config_blob.size),
            layers: self
                .layers
                .iter()
                .map(|l| Descriptor::new(l.media_type(self.format), l.blob.digest, l.blob.size))
                .collect(),
            annotations: self.annotations,
        };
        for edit in self.manifest_edits {
            edit(&mut manifest);
        }
        Ok(Image {
            manifest: ManifestBytes::of(self.format.manifest_media_type(), &manifest),
            config: config_blob,
            layers: self.layers,
            platform: self.platform,
            format: self.format,
        })
    }
}

/// A built image: everything needed to push it and to know what a correct pull finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub manifest: ManifestBytes,
    pub config: Blob,
    pub layers: Vec<Layer>,
    pub platform: Platform,
    pub format: Format,
}

impl Image {
    /// The manifest digest (what `repo@sha256:…` names).
    pub fn digest(&self) -> Digest {
        self.manifest.digest
    }

    /// The entry for this image in an index.
    pub fn index_descriptor(&self) -> Descriptor {
        let mut descriptor = self.manifest.descriptor();
        descriptor.platform = Some(self.platform.clone());
        descriptor
    }
}

impl Parts for Image {
    fn blobs(&self) -> Vec<&Blob> {
        let mut blobs = vec![&self.config];
        for layer in &self.layers {
            if blobs.iter().all(|b| b.digest != layer.blob.digest) {
                blobs.push(&layer.blob);
            }
        }
        blobs
    }

    fn manifests(&self) -> Vec<&ManifestBytes> {
        vec![&self.manifest]
    }

    fn descriptor(&self) -> Descriptor {
        self.index_descriptor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_types;
    use crate::{LayerBuilder, LayerCompression};

    fn image(dir: &Path, format: Format) -> ImageBuilder {
        let base = LayerBuilder::new().file("etc/os-release", "ID=test\n").write(dir, LayerCompression::Gzip).unwrap();
        let app = LayerBuilder::new().file("app/run", "#!/bin/sh\n").write(dir, LayerCompression::None).unwrap();
        ImageBuilder::new(format).layer(base).layer(app)
    }

    #[test]
    fn manifests_use_the_media_types_of_their_format() {
        let dir = tempfile::tempdir().unwrap();
        let oci = image(dir.path(), Format::Oci).build(dir.path()).unwrap();
        let m: ImageManifest = serde_json::from_slice(&oci.manifest.bytes).unwrap();
        assert_eq!(m.media_type, media_types::OCI_MANIFEST);
        assert_eq!(m.config.media_type, media_types::OCI_CONFIG);
        assert_eq!(m.layers[0].media_type, media_types::OCI_LAYER_GZIP);
        assert_eq!(m.layers[1].media_type, media_types::OCI_LAYER_TAR);

        let docker = image(dir.path(), Format::Docker).build(dir.path()).unwrap();
        let m: ImageManifest = serde_json::from_slice(&docker.manifest.bytes).unwrap();
        assert_eq!(docker.manifest.media_type, media_types::DOCKER_MANIFEST);
        assert_eq!(m.config.media_type, media_types::DOCKER_CONFIG);
        assert_eq!(m.layers[0].media_type, media_types::DOCKER_LAYER_GZIP);
        assert_eq!(m.layers[1].media_type, media_types::DOCKER_LAYER_TAR);
        // Same layers and config content: only the manifest differs.
        assert_eq!(oci.config, docker.config);
        assert_ne!(oci.digest(), docker.digest());

        let config: serde_json::Value = serde_json::from_slice(&oci.config.read().unwrap()).unwrap();
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["created"], DEFAULT_CREATED);
        assert_eq!(config["config"], serde_json::json!({}));
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(config["rootfs"]["diff_ids"][0], oci.layers[0].diff_id.to_string());
    }

    #[test]
    fn same_input_same_digest_and_lies_change_only_what_they_say() {
        let dir = tempfile::tempdir().unwrap();
        let honest = image(dir.path(), Format::Oci).build(dir.path()).unwrap();
        assert_eq!(honest, image(dir.path(), Format::Oci).build(dir.path()).unwrap());

        let missing = Digest::of(b"no such blob");
        let lying = image(dir.path(), Format::Oci)
            .lie_about_layer_digest(1, missing)
            .lie_about_layer_size(0, 3)
            .lie_about_diff_id(0, missing)
            .build(dir.path())
            .unwrap();
        let m: ImageManifest = serde_json::from_slice(&lying.manifest.bytes).unwrap();
        assert_eq!(m.layers[1].digest, missing);
        assert_eq!(m.layers[0].size, 3);
        let c: ImageConfig = serde_json::from_slice(&lying.config.read().unwrap()).unwrap();
        assert_eq!(c.rootfs.diff_ids, [missing, honest.layers[1].diff_id]);
        assert_eq!(m.config.digest, lying.config.digest, "the config descriptor matches the edited config");
    }
}
