//! Manifests, indexes and image configs as pullprobe reads them: only the
//! fields a pull needs, parsed strictly enough to reject what a runtime would,
//! with `manifest_invalid` / `unsupported_media_type` errors that say what is wrong.
//!
//! These are plain serde structs rather than `oci-spec` types: a prober must
//! accept Docker schema 2 and OCI alike, report *which* field is malformed, and
//! never fail on extra fields that a registry or builder adds.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::Digest;
use crate::media_types::{self, ManifestKind};
use crate::platform::Platform;
use crate::reason::{ProbeError, Reason};
use crate::redact::json_error;

/// A content descriptor: what a manifest says about a blob or a child manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<DescriptorPlatform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DescriptorPlatform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A descriptor whose digest and size have been checked.
#[derive(Debug, Clone)]
pub struct BlobRef {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// One image: its config and layers.
#[derive(Debug, Clone)]
pub struct ImageManifest {
    pub media_type: String,
    pub config: BlobRef,
    pub layers: Vec<BlobRef>,
}

/// One platform entry of an index.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub manifest: BlobRef,
    pub platform: Option<Platform>,
    /// BuildKit attestations and other non-runnable entries (`unknown/unknown`).
    pub is_attestation: bool,
}

/// A parsed manifest document.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image(ImageManifest),
    Index(Vec<IndexEntry>),
}

fn invalid(message: impl Into<String>) -> ProbeError {
    ProbeError::new(Reason::ManifestInvalid, message)
}

fn check_descriptor(d: &Descriptor, what: &str) -> Result<BlobRef, ProbeError> {
    let digest: Digest = d.digest.parse().map_err(|e| invalid(format!("{what}: {e}")))?;
    let size =
        u64::try_from(d.size).map_err(|_| invalid(format!("{what} {}: negative size {}", digest.short(), d.size)))?;
    Ok(BlobRef { media_type: d.media_type.clone(), digest, size })
}

/// Broken JSON, or JSON whose values do not fit (a size beyond int64, a missing digest).
fn json_invalid(what: &str, e: &serde_json::Error) -> ProbeError {
    let detail = json_error(e);
    match e.classify() {
        serde_json::error::Category::Data => invalid(format!("{what} is JSON of the wrong shape: {detail}")),
        _ => invalid(format!("{what} is not valid JSON: {detail}")),
    }
}

fn schema1_unsupported() -> ProbeError {
    ProbeError::new(
        Reason::UnsupportedMediaType,
        "Docker schema 1 manifest: deprecated, unverifiable layer digests; push the image again with schema 2 or OCI",
    )
}

/// Parse a manifest body. `content_type` is the response header, used when the
/// document itself has no `mediaType` (allowed by OCI).
pub fn parse_manifest(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ProbeError> {
    let raw: RawDocument = serde_json::from_slice(body).map_err(|e| json_invalid("manifest", &e))?;
    // Schema 1 documents carry no mediaType: recognise them before looking for one.
    if raw.schema_version == Some(1) {
        return Err(schema1_unsupported());
    }
    let header_type = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_string());
    let media_type = match (&raw.media_type, &header_type) {
        (Some(t), _) if !t.is_empty() => t.clone(),
        (_, Some(t)) if media_types::manifest_kind(t).is_some() => t.clone(),
        // An OCI document without mediaType: tell index and image apart by shape.
        _ if raw.manifests.is_some() => media_types::OCI_INDEX.to_string(),
        _ if raw.config.is_some() => media_types::OCI_MANIFEST.to_string(),
        _ => {
            return Err(invalid(format!(
                "manifest has no mediaType and Content-Type {:?} is not a manifest type",
                header_type.unwrap_or_default()
            )));
        }
    };
    if media_type == media_types::DOCKER_SCHEMA1 || media_type == media_types::DOCKER_SCHEMA1_SIGNED {
        return Err(schema1_unsupported());
    }
    if raw.schema_version != Some(2) {
        return Err(invalid(format!("schemaVersion is {:?}, want 2", raw.schema_version)));
    }
    match media_types::manifest_kind(&media_type) {
        Some(ManifestKind::Image) => {
            let config = raw.config.as_ref().ok_or_else(|| invalid("image manifest has no config"))?;
            let config = check_descriptor(config, "config")?;
            let layers = raw.layers.as_deref().ok_or_else(|| invalid("image manifest has no layers list"))?;
            let layers = layers
                .iter()
                .enumerate()
                .map(|(i, d)| check_descriptor(d, &format!("layer {}", i + 1)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Manifest::Image(ImageManifest { media_type, config, layers }))
        }
        Some(ManifestKind::Index) => {
            let entries = raw.manifests.as_deref().ok_or_else(|| invalid("index has no manifests list"))?;
            let mut out = Vec::with_capacity(entries.len());
            for (i, d) in entries.iter().enumerate() {
                let manifest = check_descriptor(d, &format!("index entry {}", i + 1))?;
                let platform = d.platform.as_ref().map(|p| Platform {
                    os: p.os.clone(),
                    architecture: p.architecture.clone(),
                    variant: p.variant.clone().filter(|v| !v.is_empty()),
                });
                let is_attestation =
                    d.annotations.get("vnd.docker.reference.type").is_some_and(|t| t == "attestation-manifest")
                        || platform.as_ref().is_some_and(|p| p.os == "unknown" && p.architecture == "unknown");
                out.push(IndexEntry { manifest, platform, is_attestation });
            }
            Ok(Manifest::Index(out))
        }
        None => Err(ProbeError::new(
            Reason::UnsupportedMediaType,
            format!("manifest media type {media_type:?} is not an image manifest or index"),
        )),
    }
}

/// The parts of an image config a pull checks.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    pub platform: Option<Platform>,
    pub diff_ids: Vec<Digest>,
    pub created: Option<String>,
    /// `config.Labels`; a value that is not a string is left out.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    created: Option<String>,
    rootfs: Option<RawRootfs>,
    #[serde(default)]
    config: Option<RawRuntimeConfig>,
}

/// The runtime part of an image config (`config`), as far as a pull reads it.
#[derive(Debug, Deserialize)]
struct RawRuntimeConfig {
    #[serde(default, rename = "Labels")]
    labels: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
struct RawRootfs {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Parse an image config (only for image config media types).
pub fn parse_image_config(body: &[u8]) -> Result<ImageConfig, ProbeError> {
    let raw: RawConfig = serde_json::from_slice(body).map_err(|e| json_invalid("image config", &e))?;
    let rootfs = raw.rootfs.ok_or_else(|| invalid("image config has no rootfs"))?;
    if rootfs.kind != "layers" {
        return Err(invalid(format!("image config rootfs.type is {:?}, want \"layers\"", rootfs.kind)));
    }
    let diff_ids = rootfs
        .diff_ids
        .iter()
        .enumerate()
        .map(|(i, d)| d.parse::<Digest>().map_err(|e| invalid(format!("image config diff_ids[{i}]: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let platform = match (raw.os, raw.architecture) {
        (Some(os), Some(architecture)) if !os.is_empty() && !architecture.is_empty() => {
            Some(Platform { os, architecture, variant: raw.variant.filter(|v| !v.is_empty()) })
        }
        _ => None,
    };
    let labels = raw
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, value)| match value {
            serde_json::Value::String(value) => Some((key, value)),
            _ => None,
        })
        .collect();
    Ok(ImageConfig { platform, diff_ids, created: raw.created, labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_an_oci_manifest() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{DIGEST}","size":2}},"layers":[{{"mediaType":"{}","digest":"{DIGEST}","size":10}}],"extra":1}}"#,
            media_types::OCI_MANIFEST,
            media_types::OCI_CONFIG,
            media_types::OCI_LAYER_GZIP
        );
        let Manifest::Image(m) = parse_manifest(body.as_bytes(), None).unwrap() else { panic!("not an image") };
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].size, 10);
    }

    #[test]
    fn rejects_bad_documents_with_reasons() {
        let cases: &[(&[u8], Reason)] = &[
            (b"{not json", Reason::ManifestInvalid),
            (b"[]", Reason::ManifestInvalid),
            (br#"{"schemaVersion":1,"fsLayers":[]}"#, Reason::UnsupportedMediaType),
            (br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, Reason::UnsupportedMediaType),
            (br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#, Reason::ManifestInvalid),
            (
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"md5:00","size":1},"layers":[]}"#,
                Reason::ManifestInvalid,
            ),
        ];
        for (body, reason) in cases {
            let err = parse_manifest(body, None).unwrap_err();
            assert_eq!(err.reason, *reason, "{}: {}", String::from_utf8_lossy(body), err.message);
        }
    }

    #[test]
    fn negative_sizes_are_invalid() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"digest":"{DIGEST}","size":-1}},"layers":[]}}"#,
            media_types::OCI_MANIFEST
        );
        assert_eq!(parse_manifest(body.as_bytes(), None).unwrap_err().reason, Reason::ManifestInvalid);
    }

    #[test]
    fn config_needs_layers_rootfs() {
        let cfg =
            format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{DIGEST}"]}}}}"#);
        let parsed = parse_image_config(cfg.as_bytes()).unwrap();
        assert_eq!(parsed.diff_ids.len(), 1);
        assert!(parsed.labels.is_empty());
        let labelled = r#"{"config":{"Labels":{"org.opencontainers.image.vendor":"Example","n":1}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let labels = parse_image_config(labelled.as_bytes()).unwrap().labels;
        assert_eq!(
            labels.into_iter().collect::<Vec<_>>(),
            [("org.opencontainers.image.vendor".into(), "Example".into())]
        );
        assert_eq!(parsed.platform.unwrap().to_string(), "linux/amd64");
        assert_eq!(parse_image_config(b"{}").unwrap_err().reason, Reason::ManifestInvalid);
    }
}
