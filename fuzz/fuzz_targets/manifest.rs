//! Manifests and indexes as a registry sends them: the body with the
//! Content-Type header the first input byte picks. A document that parses is
//! written again with the project's own serde types and must parse to the same
//! descriptors and platforms; one that does not is `manifest_invalid` or
//! `unsupported_media_type` with a bounded message.

#![no_main]

use std::collections::BTreeMap;

use image_builder::{Descriptor, ImageManifest, IndexManifest};
use libfuzzer_sys::fuzz_target;
use pullprobe::manifest::{BlobRef, IndexEntry, Manifest, parse_manifest};
use pullprobe::media_types::{self, ManifestKind};
use pullprobe::reason::Reason;
use pullprobe_fuzz::check_error;

/// Content-Type headers a registry sends with a manifest (or a proxy instead of one).
const CONTENT_TYPES: [Option<&str>; 8] = [
    None,
    Some(media_types::OCI_MANIFEST),
    Some(media_types::OCI_INDEX),
    Some(media_types::DOCKER_MANIFEST),
    Some(media_types::DOCKER_MANIFEST_LIST),
    Some("application/json; charset=utf-8"),
    Some(media_types::DOCKER_SCHEMA1_SIGNED),
    Some("text/html"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    let content_type = CONTENT_TYPES[usize::from(first) % CONTENT_TYPES.len()];
    let manifest = match parse_manifest(body, content_type) {
        Ok(manifest) => manifest,
        Err(e) => return check_error("manifest", &e, &[Reason::ManifestInvalid, Reason::UnsupportedMediaType]),
    };
    let printed = print(&manifest);
    let again = parse_manifest(&printed, None)
        .unwrap_or_else(|e| panic!("{manifest:?} printed as {}: {e}", String::from_utf8_lossy(&printed)));
    assert_eq!(summary(&again), summary(&manifest), "printed as {}", String::from_utf8_lossy(&printed));
});

fn descriptor(blob: &BlobRef) -> Descriptor {
    let digest = blob.digest.to_string().parse().expect("a parsed digest prints as one");
    Descriptor::new(&blob.media_type, digest, blob.size)
}

fn print(manifest: &Manifest) -> Vec<u8> {
    let printed = match manifest {
        Manifest::Image(image) => {
            assert_eq!(media_types::manifest_kind(&image.media_type), Some(ManifestKind::Image));
            serde_json::to_vec(&ImageManifest {
                schema_version: 2,
                media_type: image.media_type.clone(),
                artifact_type: None,
                config: descriptor(&image.config),
                layers: image.layers.iter().map(descriptor).collect(),
                annotations: BTreeMap::new(),
            })
        }
        Manifest::Index(entries) => serde_json::to_vec(&IndexManifest {
            schema_version: 2,
            media_type: media_types::OCI_INDEX.to_string(),
            manifests: entries.iter().map(index_descriptor).collect(),
            annotations: BTreeMap::new(),
        }),
    };
    printed.expect("a manifest serialises")
}

fn index_descriptor(entry: &IndexEntry) -> Descriptor {
    let mut d = descriptor(&entry.manifest);
    d.platform =
        entry.platform.as_ref().map(|p| image_builder::Platform::new(&p.os, &p.architecture, p.variant.as_deref()));
    if entry.is_attestation {
        d.annotations.insert("vnd.docker.reference.type".into(), "attestation-manifest".into());
    }
    d
}

/// What a pull reads from a manifest, comparable.
fn summary(manifest: &Manifest) -> String {
    let blob = |b: &BlobRef| format!("{} {} {}", b.media_type, b.digest, b.size);
    match manifest {
        Manifest::Image(image) => {
            let layers: Vec<String> = image.layers.iter().map(blob).collect();
            format!("image {} config {} layers {layers:?}", image.media_type, blob(&image.config))
        }
        Manifest::Index(entries) => {
            let entries: Vec<String> = entries
                .iter()
                .map(|e| format!("{} {:?} {}", blob(&e.manifest), e.platform, e.is_attestation))
                .collect();
            format!("index {entries:?}")
        }
    }
}
