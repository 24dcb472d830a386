//! Indexes: an OCI image index or a Docker manifest list over several platform
//! images, plus BuildKit-style attestation entries and arbitrary artifacts.
//!
//! The index owns the images and artifacts it lists, so pushing it pushes
//! every blob, then every child manifest by digest, then the index.

use std::collections::BTreeMap;

use super::artifact::Artifact;
use super::blob::Blob;
use super::image::Image;
use super::manifest::{Descriptor, Format, IndexManifest, ManifestBytes};
use crate::Parts;
use crate::digest::Digest;
use crate::platform::Platform;

/// The annotation that marks an index entry as an attestation (BuildKit, Docker).
pub const REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";
/// Its value for an attestation manifest.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// The annotation naming the manifest an attestation is about.
pub const REFERENCE_DIGEST_ANNOTATION: &str = "vnd.docker.reference.digest";

type IndexEdit = Box<dyn FnOnce(&mut IndexManifest)>;

/// An index being described. Entries appear in the order they are added.
pub struct IndexBuilder {
    format: Format,
    entries: Vec<Descriptor>,
    images: Vec<Image>,
    artifacts: Vec<Artifact>,
    annotations: BTreeMap<String, String>,
    edits: Vec<IndexEdit>,
}

impl IndexBuilder {
    pub fn new(format: Format) -> Self {
        IndexBuilder {
            format,
            entries: Vec::new(),
            images: Vec::new(),
            artifacts: Vec::new(),
            annotations: BTreeMap::new(),
            edits: Vec::new(),
        }
    }

    /// An image, listed under its platform.
    pub fn image(mut self, image: Image) -> Self {
        self.entries.push(image.index_descriptor());
        self.images.push(image);
        self
    }

    /// An attestation manifest about `subject` (a manifest digest in this index),
    /// listed as `unknown/unknown` with the BuildKit annotations.
    pub fn attestation(mut self, attestation: Artifact, subject: Digest) -> Self {
        let mut descriptor = attestation.manifest.descriptor();
        descriptor.platform = Some(Platform::unknown());
        descriptor.annotations.insert(REFERENCE_DIGEST_ANNOTATION.to_string(), subject.to_string());
        descriptor.annotations.insert(REFERENCE_TYPE_ANNOTATION.to_string(), ATTESTATION_MANIFEST.to_string());
        self.entries.push(descriptor);
        self.artifacts.push(attestation);
        self
    }

    /// Any artifact, with or without a platform.
    pub fn artifact(mut self, artifact: Artifact, platform: Option<Platform>) -> Self {
        let mut descriptor = artifact.manifest.descriptor();
        descriptor.platform = platform;
        self.entries.push(descriptor);
        self.artifacts.push(artifact);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    /// Change the index just before it is serialised (an entry for a platform that is not there, …).
    pub fn edit_index(mut self, edit: impl FnOnce(&mut IndexManifest) + 'static) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// Serialise the index; the children are already written.
    pub fn build(self) -> Index {
        let mut index = IndexManifest {
            schema_version: 2,
            media_type: self.format.index_media_type().to_string(),
            manifests: self.entries,
            annotations: self.annotations,
        };
        for edit in self.edits {
            edit(&mut index);
        }
        Index {
            manifest: ManifestBytes::of(self.format.index_media_type(), &index),
            images: self.images,
            artifacts: self.artifacts,
        }
    }
}

/// A built index with the images and artifacts it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub manifest: ManifestBytes,
    pub images: Vec<Image>,
    pub artifacts: Vec<Artifact>,
}

impl Index {
    pub fn digest(&self) -> Digest {
        self.manifest.digest
    }

    /// The image for a platform (`linux/arm64/v8`).
    pub fn image_for(&self, platform: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.platform.to_string() == platform)
    }
}

impl Parts for Index {
    fn blobs(&self) -> Vec<&Blob> {
        let children = self.images.iter().map(|i| i.blobs()).chain(self.artifacts.iter().map(|a| a.blobs()));
        let mut blobs: Vec<&Blob> = Vec::new();
        for blob in children.flatten() {
            if blobs.iter().all(|b| b.digest != blob.digest) {
                blobs.push(blob);
            }
        }
        blobs
    }

    fn manifests(&self) -> Vec<&ManifestBytes> {
        let mut manifests: Vec<&ManifestBytes> = self.images.iter().map(|i| &i.manifest).collect();
        manifests.extend(self.artifacts.iter().map(|a| &a.manifest));
        manifests.push(&self.manifest);
        manifests
    }

    fn descriptor(&self) -> Descriptor {
        self.manifest.descriptor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_types;
    use crate::{ArtifactBlob, ImageBuilder, LayerBuilder, LayerCompression, attestation};

    #[test]
    fn index_lists_platforms_and_an_attestation_like_buildkit() {
        let dir = tempfile::tempdir().unwrap();
        let layer = LayerBuilder::new().file("a", "a").write(dir.path(), LayerCompression::Gzip).unwrap();
        let amd64 = ImageBuilder::new(Format::Oci).layer(layer.clone()).build(dir.path()).unwrap();
        let arm64 =
            ImageBuilder::new(Format::Oci).platform(Platform::linux_arm64_v8()).layer(layer).build(dir.path()).unwrap();
        let statement = ArtifactBlob::new(media_types::OCI_EMPTY, &b"{}"[..]);
        let att = attestation(vec![statement]).build(dir.path()).unwrap();
        let subject = amd64.digest();
        let index = IndexBuilder::new(Format::Oci).image(amd64).image(arm64).attestation(att, subject).build();

        let doc: IndexManifest = serde_json::from_slice(&index.manifest.bytes).unwrap();
        assert_eq!(doc.media_type, media_types::OCI_INDEX);
        let platforms: Vec<String> = doc.manifests.iter().map(|d| d.platform.as_ref().unwrap().to_string()).collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8", "unknown/unknown"]);
        assert_eq!(doc.manifests[2].annotations[REFERENCE_TYPE_ANNOTATION], ATTESTATION_MANIFEST);
        assert_eq!(doc.manifests[2].annotations[REFERENCE_DIGEST_ANNOTATION], subject.to_string());
        assert_eq!(index.image_for("linux/arm64/v8").unwrap().platform, Platform::linux_arm64_v8());
        // The shared layer is pushed once; children before the index.
        assert_eq!(index.blobs().len(), 5);
        let manifests = index.manifests();
        assert_eq!(manifests.len(), 4);
        assert_eq!(manifests[3].digest, index.digest());
    }
}
