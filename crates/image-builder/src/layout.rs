//! OCI image layouts: a directory with `oci-layout`, `index.json` and
//! `blobs/sha256/<hex>`, which skopeo, umoci and container engines read
//! (`skopeo copy oci:DIR:TAG docker://…`).
//!
//! Build into the layout's own directory and the blobs are already in place;
//! anything built elsewhere is copied in. Each tag is an `index.json` entry with
//! the `org.opencontainers.image.ref.name` annotation.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::Parts;
use crate::blob::{blob_path, write_blob};
use crate::digest::Digest;
use crate::manifest::{Descriptor, IndexManifest, to_json};
use crate::media_types;

/// The annotation that gives an `index.json` entry its tag.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// A layout being written; [`finish`](Layout::finish) writes `index.json` and `oci-layout`.
pub struct Layout {
    dir: PathBuf,
    entries: Vec<Descriptor>,
}

impl Layout {
    /// A layout in `dir` (created if missing). An `index.json` already there is replaced on finish.
    pub fn new(dir: &Path) -> io::Result<Layout> {
        fs::create_dir_all(dir.join("blobs").join("sha256"))?;
        Ok(Layout { dir: dir.to_path_buf(), entries: Vec::new() })
    }

    /// Store `parts` (blobs, then manifests as blobs) and list it under `tag`; its manifest digest.
    pub fn add(&mut self, parts: &impl Parts, tag: &str) -> io::Result<Digest> {
        for blob in parts.blobs() {
            let path = blob_path(&self.dir, &blob.digest);
            if !path.exists() {
                fs::copy(&blob.path, &path)?;
            }
        }
        for manifest in parts.manifests() {
            write_blob(&self.dir, &manifest.bytes)?;
        }
        let mut descriptor = parts.descriptor();
        descriptor.annotations.insert(REF_NAME_ANNOTATION.to_string(), tag.to_string());
        let digest = descriptor.digest;
        self.entries.push(descriptor);
        Ok(digest)
    }

    pub fn finish(self) -> io::Result<()> {
        let index = IndexManifest {
            schema_version: 2,
            media_type: media_types::OCI_INDEX.to_string(),
            manifests: self.entries,
            annotations: BTreeMap::new(),
        };
        fs::write(self.dir.join("index.json"), to_json(&index))?;
        fs::write(self.dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, ImageBuilder, IndexBuilder, LayerBuilder, LayerCompression, Platform};

    #[test]
    fn a_layout_holds_every_part_and_names_each_tag() {
        let elsewhere = tempfile::tempdir().unwrap();
        let layout_dir = tempfile::tempdir().unwrap();
        let layer = LayerBuilder::new().file("a", "a").write(elsewhere.path(), LayerCompression::Gzip).unwrap();
        let amd64 = ImageBuilder::new(Format::Oci).layer(layer.clone()).build(elsewhere.path()).unwrap();
        let arm64 = ImageBuilder::new(Format::Oci)
            .platform(Platform::linux_arm64_v8())
            .layer(layer)
            .build(layout_dir.path())
            .unwrap();
        let index = IndexBuilder::new(Format::Oci).image(amd64.clone()).image(arm64).build();

        let mut layout = Layout::new(layout_dir.path()).unwrap();
        assert_eq!(layout.add(&amd64, "one").unwrap(), amd64.digest());
        assert_eq!(layout.add(&index, "all").unwrap(), index.digest());
        layout.finish().unwrap();

        let written: IndexManifest =
            serde_json::from_slice(&fs::read(layout_dir.path().join("index.json")).unwrap()).unwrap();
        let tags: Vec<&str> = written.manifests.iter().map(|d| d.annotations[REF_NAME_ANNOTATION].as_str()).collect();
        assert_eq!(tags, ["one", "all"]);
        assert_eq!(written.manifests[0].platform, Some(Platform::linux_amd64()));
        for blob in index.blobs() {
            assert_eq!(Digest::of(&fs::read(blob_path(layout_dir.path(), &blob.digest)).unwrap()), blob.digest);
        }
        for manifest in index.manifests() {
            assert!(blob_path(layout_dir.path(), &manifest.digest).is_file());
        }
        assert!(layout_dir.path().join("oci-layout").is_file());
    }
}
