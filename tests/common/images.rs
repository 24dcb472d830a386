//! Standard test images, built with the `image_builder` crate and pushed
//! through the registry's real upload API (pullprobe's own push code), so a
//! test reads `let img = push_small_image(&registry, "small", "latest").await;`.
//!
//! The builder shares no types with pullprobe: [`Upload`] is the one seam
//! where what it built becomes what pullprobe's upload code reads.

use std::path::Path;

use image_builder::{
    Artifact, ArtifactBlob, ArtifactBuilder, Blob, Digest, Entry, Format, GeneratedContent,
    IN_TOTO_PREDICATE_TYPE_ANNOTATION, Image, ImageBuilder, Index, IndexBuilder, Layer, LayerBuilder, LayerCompression,
    ManifestBytes, Parts, Platform, attestation, in_toto_statement, write_blob,
};
use pullprobe::registry::push::{
    BlobSource, BlobToPush, ManifestToPush, PushableImage, UploadMethod, push_blob, push_image,
};
use url::Url;

use super::registry::Registry;

/// The layer media type of in-toto statements in attestation manifests. Test data:
/// pullprobe skips attestations and never needs to know it.
pub const IN_TOTO_JSON: &str = "application/vnd.in-toto+json";
/// A config media type that is not an image config (an artifact).
pub const EXAMPLE_ARTIFACT_CONFIG: &str = "application/vnd.example.thing.v1+json";
/// A blob media type of that artifact.
pub const EXAMPLE_ARTIFACT_BLOB: &str = "application/vnd.example.thing.data.v1";
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";

/// Something pushed: what was built, where it went and its manifest digest.
pub struct Pushed<T> {
    pub content: T,
    pub repo: String,
    pub tag: String,
    pub digest: Digest,
    /// `127.0.0.1:PORT/repo:tag`
    pub reference: String,
}

impl<T> Pushed<T> {
    /// `127.0.0.1:PORT/repo@sha256:…`
    pub fn by_digest(&self) -> String {
        let host = self.reference.split('/').next().unwrap_or_default();
        format!("{host}/{}@{}", self.repo, self.digest)
    }
}

/// Something the builder wrote, as pullprobe's upload code reads it.
pub struct Upload<'a, T: ?Sized>(pub &'a T);

impl<T: Parts + ?Sized> PushableImage for Upload<'_, T> {
    fn blobs(&self) -> Vec<BlobToPush<'_>> {
        self.0.blobs().into_iter().map(blob_to_push).collect()
    }

    fn manifests(&self) -> Vec<ManifestToPush<'_>> {
        self.0.manifests().into_iter().map(manifest_to_push).collect()
    }
}

/// A written blob as the upload code reads it: from memory when it is there, else streamed from its file.
pub fn blob_to_push(blob: &Blob) -> BlobToPush<'_> {
    let source = match &blob.data {
        Some(data) => BlobSource::Memory(data.clone()),
        None => BlobSource::File(&blob.path),
    };
    BlobToPush { digest: prober_digest(&blob.digest), size: blob.size, source }
}

fn manifest_to_push(manifest: &ManifestBytes) -> ManifestToPush<'_> {
    ManifestToPush {
        media_type: &manifest.media_type,
        digest: prober_digest(&manifest.digest),
        bytes: manifest.bytes.clone(),
    }
}

/// The same digest as pullprobe's type.
pub fn prober_digest(digest: &Digest) -> pullprobe::digest::Digest {
    pullprobe::digest::Digest::from_bytes(*digest.as_bytes())
}

/// A digest pullprobe computed, as the builder's type.
pub fn builder_digest(digest: &pullprobe::digest::Digest) -> Digest {
    digest.to_string().parse().expect("pullprobe prints sha256 digests")
}

/// A client for pushing (plain HTTP to loopback).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("reqwest client")
}

/// Push anything pushable to the registry under `repo:tag` (monolithic uploads).
pub async fn push<T: Parts>(registry: &Registry, repo: &str, tag: &str, content: T) -> Pushed<T> {
    push_via(&registry.url(), registry, repo, tag, content, UploadMethod::Monolithic).await
}

/// Push through any base URL (a frontend in front of `registry`) with a chosen upload method.
pub async fn push_via<T: Parts>(
    base: &Url,
    registry: &Registry,
    repo: &str,
    tag: &str,
    content: T,
    method: UploadMethod,
) -> Pushed<T> {
    let digest = push_image(&client(), base, repo, tag, &Upload(&content), method)
        .await
        .unwrap_or_else(|e| panic!("pushing {repo}:{tag} to {base}: {e}\nregistry log tail:\n{}", log_tail(registry)));
    let digest = builder_digest(&digest);
    Pushed { content, repo: repo.to_string(), tag: tag.to_string(), digest, reference: registry.reference(repo, tag) }
}

fn log_tail(registry: &Registry) -> String {
    let log = registry.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Push `honest` with its layer `index` replaced by a blob of `lost_bytes` that is
/// pushed and then deleted from storage: distribution refuses a manifest naming a
/// blob it lacks, so the blob goes first, then the manifest, then the blob.
/// The pushed image and the lost blob.
pub async fn push_with_a_lost_layer(
    registry: &Registry,
    repo: &str,
    tag: &str,
    honest: &Image,
    index: usize,
    lost_bytes: &[u8],
) -> (Pushed<Image>, Blob) {
    let dir = registry.scratch();
    let lost = write_blob(&dir, lost_bytes).expect("lost blob");
    let lying = ImageBuilder::new(honest.format)
        .platform(honest.platform.clone())
        .layers(honest.layers.clone())
        .lie_about_layer_digest(index, lost.digest)
        .lie_about_layer_size(index, lost.size)
        .build(&dir)
        .expect("lying image");
    push_blob(&client(), &registry.url(), repo, &blob_to_push(&lost), UploadMethod::Monolithic)
        .await
        .unwrap_or_else(|e| panic!("pushing the blob to lose to {repo}: {e}"));
    let pushed = push(registry, repo, tag, lying).await;
    registry.delete_blob(&lost.digest);
    (pushed, lost)
}

/// The base layer of the standard images: a few directories, files and a symlink.
pub fn base_layer() -> LayerBuilder {
    LayerBuilder::new()
        .dir("etc")
        .file("etc/os-release", "ID=pullprobe-test\nVERSION_ID=1\n")
        .file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        .dir("bin")
        .entry(Entry::file("bin/busybox", GeneratedContent::random(1, 64 * 1024)).mode(0o755))
        .symlink("bin/sh", "busybox")
}

/// The application layer of the standard images.
pub fn app_layer() -> LayerBuilder {
    LayerBuilder::new()
        .dir("srv/app")
        .file("srv/app/app.conf", "listen = 8080\n")
        .file("srv/app/data.txt", GeneratedContent::text(2, 200 * 1024))
}

/// A small two-layer gzip image for linux/amd64.
pub fn small_image(dir: &Path, format: Format) -> Image {
    let base = base_layer().write(dir, LayerCompression::Gzip).expect("base layer");
    let app = app_layer().write(dir, LayerCompression::Gzip).expect("app layer");
    ImageBuilder::new(format).layer(base).layer(app).build(dir).expect("small image")
}

pub async fn push_small_image(registry: &Registry, repo: &str, tag: &str) -> Pushed<Image> {
    push(registry, repo, tag, small_image(&registry.scratch(), Format::Oci)).await
}

pub async fn push_small_docker_image(registry: &Registry, repo: &str, tag: &str) -> Pushed<Image> {
    push(registry, repo, tag, small_image(&registry.scratch(), Format::Docker)).await
}

/// One image per platform (linux/amd64, linux/arm64/v8) sharing the base layer, and
/// for OCI a BuildKit-style attestation manifest for the amd64 image.
pub fn multi_arch_index(dir: &Path, format: Format) -> Index {
    let base = base_layer().write(dir, LayerCompression::Gzip).expect("base layer");
    let images: Vec<Image> = [(Platform::linux_amd64(), 10), (Platform::linux_arm64_v8(), 11)]
        .into_iter()
        .map(|(platform, seed)| {
            let arch = LayerBuilder::new()
                .file("srv/arch", platform.to_string().as_str())
                .file("srv/bin", GeneratedContent::random(seed, 32 * 1024))
                .write(dir, LayerCompression::Gzip)
                .expect("platform layer");
            ImageBuilder::new(format).platform(platform).layer(base.clone()).layer(arch).build(dir).expect("image")
        })
        .collect();
    let statement = ArtifactBlob::new(IN_TOTO_JSON, in_toto_statement(&images[0], SPDX_PREDICATE))
        .annotation(IN_TOTO_PREDICATE_TYPE_ANNOTATION, SPDX_PREDICATE);
    let att = attestation(vec![statement]).build(dir).expect("attestation");
    let subject = images[0].digest();
    let builder = images.into_iter().fold(IndexBuilder::new(format), IndexBuilder::image);
    match format {
        Format::Oci => builder.attestation(att, subject).build(),
        Format::Docker => builder.build(),
    }
}

pub async fn push_multi_arch_index(registry: &Registry, repo: &str, tag: &str) -> Pushed<Index> {
    push(registry, repo, tag, multi_arch_index(&registry.scratch(), Format::Oci)).await
}

/// An artifact: config of [`EXAMPLE_ARTIFACT_CONFIG`], two blobs that are not tars.
pub fn example_artifact(dir: &Path) -> Artifact {
    ArtifactBuilder::new(EXAMPLE_ARTIFACT_CONFIG, &br#"{"thing":"example"}"#[..])
        .blob(ArtifactBlob::new(EXAMPLE_ARTIFACT_BLOB, &b"not a tar at all"[..]))
        .blob(ArtifactBlob::new(EXAMPLE_ARTIFACT_BLOB, vec![0u8; 3000]).annotation("org.example.part", "2"))
        .build(dir)
        .expect("artifact")
}

/// One image with a layer of every kind: gzip with every entry type (directories,
/// files, a symlink, a hard link, a PAX long path), multi-member gzip, zstd,
/// multi-frame zstd, uncompressed, whiteouts, and an empty layer.
pub fn every_layer_kind_image(dir: &Path) -> Image {
    let long_path = format!("srv/{}/file.txt", "long-directory-name".repeat(8));
    let layers = [
        (
            LayerBuilder::new()
                .dir("usr/bin")
                .entry(Entry::file("usr/bin/tool", GeneratedContent::random(20, 100_000)).mode(0o755).owner(1000, 1000))
                .hard_link("usr/bin/tool-link", "usr/bin/tool")
                .symlink("usr/bin/alias", "tool")
                .file(&long_path, "deep\n"),
            LayerCompression::Gzip,
        ),
        (
            LayerBuilder::new().file("srv/text.log", GeneratedContent::text(21, 3 << 20)),
            LayerCompression::GzipMultiMember { split_every: 1 << 20 },
        ),
        (LayerBuilder::new().file("srv/zstd.bin", GeneratedContent::random(22, 300_000)), LayerCompression::Zstd),
        (
            LayerBuilder::new().file("srv/frames.log", GeneratedContent::text(23, 2 << 20)),
            LayerCompression::ZstdMultiFrame { split_every: 512 * 1024 },
        ),
        (LayerBuilder::new().file("srv/plain.txt", "uncompressed\n"), LayerCompression::None),
        (LayerBuilder::new().whiteout("srv/plain.txt").opaque_whiteout("usr/bin"), LayerCompression::Gzip),
        (LayerBuilder::new(), LayerCompression::Gzip),
    ];
    let built = layers.into_iter().map(|(builder, compression)| builder.write(dir, compression).expect("layer"));
    ImageBuilder::new(Format::Oci).layers(built).build(dir).expect("image")
}

/// A two-layer gzip image whose layers and config no other image with another
/// `seed` shares (registry storage is shared by digest, so a fault injected into
/// one image's blob must not reach another's).
pub fn unique_image(dir: &Path, seed: u64, format: Format) -> Image {
    let a = LayerBuilder::new()
        .file("srv/a.bin", GeneratedContent::random(seed, 50_000))
        .file("srv/seed", seed.to_string().as_str())
        .write(dir, LayerCompression::Gzip)
        .expect("layer a");
    let b = LayerBuilder::new()
        .file("srv/b.txt", GeneratedContent::text(seed, 80_000))
        .file("srv/seed", seed.to_string().as_str())
        .write(dir, LayerCompression::Gzip)
        .expect("layer b");
    ImageBuilder::new(format)
        .layer(a)
        .layer(b)
        .runtime_config("Env", serde_json::json!([format!("SEED={seed}")]))
        .build(dir)
        .expect("image")
}

/// A layer whose blob is exactly `blob` and whose config entry is the sha256 of
/// `tar` (what the blob should decompress to): for layers no encoder writes,
/// such as a cut gzip stream or a corrupt tar inside valid gzip.
pub fn raw_layer(dir: &Path, blob: &[u8], tar: &[u8], compression: LayerCompression) -> Layer {
    Layer {
        blob: write_blob(dir, blob).expect("raw layer blob"),
        diff_id: Digest::of(tar),
        uncompressed_size: tar.len() as u64,
        compression,
    }
}

/// One gzip member of `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// The plain tar of a layer, in memory.
pub fn tar_bytes(layer: &LayerBuilder) -> Vec<u8> {
    layer.write_tar(Vec::new()).expect("tar into memory")
}
