//! The JSON documents of an image: descriptors, platforms, image manifests,
//! indexes and image configs, as plain serde structs, plus their serialised form.
//!
//! Serialisation is deterministic: fields in declaration order, maps sorted,
//! compact JSON. Every field is public so a test can make a document lie before
//! it is serialised (see the `edit_*` hooks of the builders).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media_types;
use crate::platform::Platform;

/// Which family of media types an image uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// OCI image manifest, OCI index, OCI config and layer types.
    Oci,
    /// Docker schema 2 manifest, manifest list, container config and rootfs layer types.
    Docker,
}

impl Format {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Format::Oci => media_types::OCI_MANIFEST,
            Format::Docker => media_types::DOCKER_MANIFEST,
        }
    }

    pub fn index_media_type(self) -> &'static str {
        match self {
            Format::Oci => media_types::OCI_INDEX,
            Format::Docker => media_types::DOCKER_MANIFEST_LIST,
        }
    }

    pub fn config_media_type(self) -> &'static str {
        match self {
            Format::Oci => media_types::OCI_CONFIG,
            Format::Docker => media_types::DOCKER_CONFIG,
        }
    }
}

/// A content descriptor: what a manifest says about a blob or a child manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            artifact_type: None,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

/// An OCI image manifest or a Docker schema 2 manifest (same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI index or a Docker manifest list (same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexManifest {
    pub schema_version: u32,
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image config: platform, creation time, the runtime config and the layers' diff_ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The runtime config (`Env`, `Cmd`, …); `{}` unless set.
    pub config: serde_json::Map<String, serde_json::Value>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

impl RootFs {
    pub fn layers(diff_ids: Vec<Digest>) -> Self {
        RootFs { kind: "layers".to_string(), diff_ids }
    }
}

/// A serialised manifest (image, index or artifact), as it is pushed and digested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBytes {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Bytes,
}

impl ManifestBytes {
    /// Any bytes under any media type: the rawest escape hatch (invalid JSON, a wrong `mediaType` field, …).
    pub fn new(media_type: &str, bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ManifestBytes { media_type: media_type.to_string(), digest: Digest::of(&bytes), bytes }
    }

    /// A document serialised as compact JSON.
    pub fn of<T: Serialize>(media_type: &str, document: &T) -> Self {
        ManifestBytes::new(media_type, to_json(document))
    }

    /// A descriptor of this manifest, for an index entry.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(&self.media_type, self.digest, self.bytes.len() as u64)
    }
}

/// Compact JSON of one of the documents above. They hold only strings, numbers,
/// digests and string-keyed maps, which always serialise.
pub(crate) fn to_json<T: Serialize>(document: &T) -> Vec<u8> {
    serde_json::to_vec(document).expect("image documents always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_serialise_in_the_usual_shape() {
        let mut d = Descriptor::new(media_types::OCI_MANIFEST, Digest::of(b"x"), 1);
        d.platform = Some(Platform::linux_arm64_v8());
        let json = String::from_utf8(to_json(&d)).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"mediaType":"{}","digest":"{}","size":1,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}"#,
                media_types::OCI_MANIFEST,
                Digest::of(b"x")
            )
        );
        assert_eq!(Platform::linux_arm64_v8().to_string(), "linux/arm64/v8");
    }
}
