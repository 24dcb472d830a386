//! Artifacts: OCI manifests whose config is not an image config (a Helm chart,
//! an SBOM, `application/vnd.example.thing.v1+json`) over arbitrary blobs that
//! are not tar layers, and BuildKit-style attestation manifests.
//!
//! An attestation manifest is an OCI image manifest with an image config for
//! `unknown/unknown` whose "layers" are in-toto statements; the index entry that
//! points at it carries `vnd.docker.reference.type: attestation-manifest` and
//! `vnd.docker.reference.digest: <subject manifest digest>` (see `IndexBuilder::attestation`).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use bytes::Bytes;

use super::blob::{Blob, write_blob};
use super::image::Image;
use super::manifest::{Descriptor, ImageConfig, ImageManifest, ManifestBytes, RootFs, to_json};
use crate::Parts;
use crate::digest::Digest;
use crate::media_types;
use crate::platform::Platform;

/// The annotation BuildKit puts on an in-toto statement layer.
pub const IN_TOTO_PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";

/// One blob of an artifact, with its media type and annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactBlob {
    pub media_type: String,
    pub data: ArtifactData,
    pub annotations: BTreeMap<String, String>,
}

/// The bytes of an artifact blob: in memory, or a blob already written (a big one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactData {
    Bytes(Bytes),
    Written(Blob),
}

impl ArtifactBlob {
    pub fn new(media_type: &str, data: impl Into<Bytes>) -> Self {
        ArtifactBlob {
            media_type: media_type.to_string(),
            data: ArtifactData::Bytes(data.into()),
            annotations: BTreeMap::new(),
        }
    }

    pub fn written(media_type: &str, blob: Blob) -> Self {
        ArtifactBlob {
            media_type: media_type.to_string(),
            data: ArtifactData::Written(blob),
            annotations: BTreeMap::new(),
        }
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }
}

type ManifestEdit = Box<dyn FnOnce(&mut ImageManifest)>;

/// An artifact being described.
pub struct ArtifactBuilder {
    config_media_type: String,
    config: Bytes,
    artifact_type: Option<String>,
    blobs: Vec<ArtifactBlob>,
    annotations: BTreeMap<String, String>,
    manifest_edits: Vec<ManifestEdit>,
}

impl ArtifactBuilder {
    /// An artifact whose config blob has this media type and these bytes.
    pub fn new(config_media_type: &str, config: impl Into<Bytes>) -> Self {
        ArtifactBuilder {
            config_media_type: config_media_type.to_string(),
            config: config.into(),
            artifact_type: None,
            blobs: Vec::new(),
            annotations: BTreeMap::new(),
            manifest_edits: Vec::new(),
        }
    }

    /// An artifact with the OCI 1.1 empty config (`{}`, [`media_types::OCI_EMPTY`]) and an `artifactType`.
    pub fn with_empty_config(artifact_type: &str) -> Self {
        ArtifactBuilder::new(media_types::OCI_EMPTY, &b"{}"[..]).artifact_type(artifact_type)
    }

    pub fn artifact_type(mut self, artifact_type: &str) -> Self {
        self.artifact_type = Some(artifact_type.to_string());
        self
    }

    pub fn blob(mut self, blob: ArtifactBlob) -> Self {
        self.blobs.push(blob);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    pub fn edit_manifest(mut self, edit: impl FnOnce(&mut ImageManifest) + 'static) -> Self {
        self.manifest_edits.push(Box::new(edit));
        self
    }

    /// Write the config and the blobs into `dir` and serialise the manifest.
    pub fn build(self, dir: &Path) -> io::Result<Artifact> {
        let config = write_blob(dir, &self.config)?;
        let mut blobs = Vec::new();
        let mut layers = Vec::new();
        for artifact_blob in self.blobs {
            let blob = match artifact_blob.data {
                ArtifactData::Bytes(bytes) => write_blob(dir, &bytes)?,
                ArtifactData::Written(blob) => blob,
            };
            let mut descriptor = Descriptor::new(&artifact_blob.media_type, blob.digest, blob.size);
            descriptor.annotations = artifact_blob.annotations;
            layers.push(descriptor);
            blobs.push(blob);
        }
        let mut manifest = ImageManifest {
            schema_version: 2,
            media_type: media_types::OCI_MANIFEST.to_string(),
            artifact_type: self.artifact_type,
            config: Descriptor::new(&self.config_media_type, config.digest, config.size),
            layers,
            annotations: self.annotations,
        };
        for edit in self.manifest_edits {
            edit(&mut manifest);
        }
        Ok(Artifact { manifest: ManifestBytes::of(media_types::OCI_MANIFEST, &manifest), config, blobs })
    }
}

/// A BuildKit-style attestation manifest holding these statements (typically
/// [`in_toto_statement`]s annotated with [`IN_TOTO_PREDICATE_TYPE_ANNOTATION`]).
/// Add it to an index with `IndexBuilder::attestation`, which names its subject.
pub fn attestation(statements: Vec<ArtifactBlob>) -> ArtifactBuilder {
    let unknown = Platform::unknown();
    let diff_ids: Vec<Digest> = statements
        .iter()
        .map(|s| match &s.data {
            ArtifactData::Bytes(bytes) => Digest::of(bytes),
            ArtifactData::Written(blob) => blob.digest,
        })
        .collect();
    let config = ImageConfig {
        created: None,
        architecture: unknown.architecture,
        os: unknown.os,
        variant: None,
        config: serde_json::Map::new(),
        rootfs: RootFs::layers(diff_ids),
    };
    statements.into_iter().fold(ArtifactBuilder::new(media_types::OCI_CONFIG, to_json(&config)), ArtifactBuilder::blob)
}

/// An in-toto statement (v0.1, as BuildKit writes) about `subject` with an empty predicate.
pub fn in_toto_statement(subject: &Image, predicate_type: &str) -> Bytes {
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": predicate_type,
        "subject": [{"name": "_", "digest": {"sha256": subject.digest().hex()}}],
        "predicate": {},
    });
    Bytes::from(to_json(&statement))
}

/// A built artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub manifest: ManifestBytes,
    pub config: Blob,
    pub blobs: Vec<Blob>,
}

impl Artifact {
    pub fn digest(&self) -> Digest {
        self.manifest.digest
    }
}

impl Parts for Artifact {
    fn blobs(&self) -> Vec<&Blob> {
        let mut blobs = vec![&self.config];
        for blob in &self.blobs {
            if blobs.iter().all(|b| b.digest != blob.digest) {
                blobs.push(blob);
            }
        }
        blobs
    }

    fn manifests(&self) -> Vec<&ManifestBytes> {
        vec![&self.manifest]
    }

    fn descriptor(&self) -> Descriptor {
        self.manifest.descriptor()
    }
}
