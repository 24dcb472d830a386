//! Faults injected into a real distribution registry's storage, and images
//! pushed broken, pulled by the real `pullprobe` binary: each failure must come
//! out with its exact reason, its phase, the digest it is about (in the error and
//! in the layer entry) and the bytes that actually arrived.

mod common;

use common::images::{gzip, push_with_a_lost_layer, raw_layer, tar_bytes, unique_image};
use common::verdict::{
    assert_failed, assert_layer_failed, assert_layer_verified, error_naming, layer_entry, pretty, pull_json,
};
use common::*;
use image_builder::{Digest, Format, GeneratedContent, Image, ImageBuilder, LayerBuilder, LayerCompression};

/// The sha256 of what the registry now stores for a blob.
fn stored_digest(registry: &Registry, digest: &Digest) -> Digest {
    Digest::of(&std::fs::read(registry.blob_data_path(digest)).expect("reading blob data"))
}

#[tokio::test]
async fn deleted_blob_is_truncated_behind_the_descriptor_cache_and_unknown_after_a_restart() {
    let mut registry = Registry::start();
    let pushed = push(&registry, "fault/deleted", "v1", unique_image(&registry.scratch(), 1, Format::Oci)).await;
    let gone = &pushed.content.layers[1];
    registry.delete_blob(&gone.digest());

    // The in-memory descriptor cache still knows the blob: 200, full Content-Length, no body.
    let pull = pull_json(&[&pushed.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "blob_truncated", "blob");
    assert!(result["registry_error"].is_null(), "{}", pretty(result));
    error_naming(result, &gone.digest());
    assert_layer_failed(layer_entry(result, &gone.digest()), "blob_truncated", gone.blob.size, 0);
    assert_layer_verified(
        layer_entry(result, &pushed.content.layers[0].digest()),
        &pushed.content.layers[0],
        Format::Oci,
    );
    assert_eq!(result.u64_field("retries"), Some(0), "integrity failures are not retried");

    // After a restart the registry looks at storage: 404 BLOB_UNKNOWN.
    registry.restart();
    let pull = pull_json(&[&pushed.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "blob_unknown", "blob");
    assert_eq!(result.registry_error(), Some("BLOB_UNKNOWN"), "{}", pretty(result));
    error_naming(result, &gone.digest());
    let entry = layer_entry(result, &gone.digest());
    assert_layer_failed(entry, "blob_unknown", gone.blob.size, 0);
    assert!(entry["check"].is_null(), "nothing was checked: {}", pretty(entry));
}

#[tokio::test]
async fn truncated_blob_is_blob_truncated_with_and_without_the_cache() {
    let mut registry = Registry::start();
    let pushed = push(&registry, "fault/truncated", "v1", unique_image(&registry.scratch(), 2, Format::Oci)).await;
    let cut = &pushed.content.layers[0];
    registry.truncate_blob(&cut.digest(), 100);

    // Cached descriptor: Content-Length is the full size, the body stops after 100 bytes.
    // Restarted: Content-Length 100 and a complete short body. The same verdict.
    for when in ["cached", "restarted"] {
        if when == "restarted" {
            registry.restart();
        }
        let pull = pull_json(&[&pushed.reference]);
        assert_eq!(pull.code, 1, "{when}: {}", pull.dump());
        let result = pull.only();
        assert_failed(result, "blob_truncated", "blob");
        let error = error_naming(result, &cut.digest());
        assert!(error.contains(&format!("got 100 of {} bytes", cut.blob.size)), "{when}: {error}");
        assert_layer_failed(layer_entry(result, &cut.digest()), "blob_truncated", cut.blob.size, 100);
        assert_eq!(layer_entry(result, &pushed.content.layers[1].digest())["ok"], true, "{when}");
    }
}

#[tokio::test]
async fn flipped_byte_is_blob_digest_mismatch() {
    let registry = Registry::start();
    let pushed = push(&registry, "fault/flipped", "v1", unique_image(&registry.scratch(), 3, Format::Oci)).await;
    let bad = &pushed.content.layers[1];
    registry.flip_byte(&bad.digest(), bad.blob.size / 2);
    let served = stored_digest(&registry, &bad.digest());

    let pull = pull_json(&[&pushed.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "blob_digest_mismatch", "blob");
    let error = error_naming(result, &bad.digest());
    assert!(error.contains(&format!("got {served} ({} bytes of {})", bad.blob.size, bad.blob.size)), "{error}");
    let entry = layer_entry(result, &bad.digest());
    assert_layer_failed(entry, "blob_digest_mismatch", bad.blob.size, bad.blob.size);
    assert_eq!(result.u64_field("retries"), Some(0));
}

#[tokio::test]
async fn corrupt_config_fails_in_the_config_phase() {
    let registry = Registry::start();
    let pushed = push(&registry, "fault/config", "v1", unique_image(&registry.scratch(), 4, Format::Oci)).await;
    let config = &pushed.content.config;
    registry.flip_byte(&config.digest, 2);
    let served = stored_digest(&registry, &config.digest);

    let pull = pull_json(&[&pushed.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "blob_digest_mismatch", "config");
    let error = error_naming(result, &config.digest);
    assert!(error.contains(&served.to_string()), "names what was served: {error}");
    assert!(result.layers().is_empty(), "no layer is pulled without a config:\n{}", pretty(result));
    assert_eq!(result.str_field("manifest_digest"), Some(pushed.digest.to_string().as_str()));
}

/// An image whose second layer descriptor names a blob that was pushed, then lost from storage.
async fn push_image_with_a_lost_layer(registry: &Registry, seed: u64) -> (Pushed<Image>, Digest, u64) {
    let honest = unique_image(&registry.scratch(), seed, Format::Oci);
    let lost_bytes = format!("a blob that will be lost {seed}");
    let (pushed, lost) = push_with_a_lost_layer(registry, "fault/lost", "v1", &honest, 1, lost_bytes.as_bytes()).await;
    (pushed, lost.digest, lost.size)
}

#[tokio::test]
async fn manifest_naming_a_lost_blob_with_and_without_the_descriptor_cache() {
    let cached = Registry::start();
    let (pushed, lost, size) = push_image_with_a_lost_layer(&cached, 5).await;
    let pull = pull_json(&[&pushed.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "blob_truncated", "blob");
    error_naming(result, &lost);
    assert_layer_failed(layer_entry(result, &lost), "blob_truncated", size, 0);

    let uncached = Registry::start_with(RegistryOptions { blob_descriptor_cache: false, ..RegistryOptions::default() });
    let (pushed, lost, size) = push_image_with_a_lost_layer(&uncached, 6).await;
    let pull = pull_json(&[&pushed.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "blob_unknown", "blob");
    assert_eq!(result.registry_error(), Some("BLOB_UNKNOWN"), "{}", pretty(result));
    error_naming(result, &lost);
    assert_layer_failed(layer_entry(result, &lost), "blob_unknown", size, 0);
    let first = &pushed.content.layers[0];
    assert_layer_verified(layer_entry(result, &first.digest()), first, Format::Oci);
}

#[tokio::test]
async fn unknown_tag_repository_and_digest_are_manifest_unknown() {
    let registry = Registry::start();
    let pushed = push(&registry, "fault/present", "v1", unique_image(&registry.scratch(), 7, Format::Oci)).await;
    let absent_digest = Digest::of(b"no manifest has this digest");
    // distribution's filesystem storage answers MANIFEST_UNKNOWN for a repository it
    // never saw too (NAME_UNKNOWN, which other registries send, maps to the same reason).
    let cases = [
        registry.reference("fault/present", "no-such-tag"),
        registry.reference("fault/present", &absent_digest.to_string()),
        registry.reference("fault/never-pushed", "v1"),
    ];
    for reference in cases {
        let pull = pull_json(&[&reference]);
        assert_eq!(pull.code, 1, "{reference}: {}", pull.dump());
        let result = pull.only();
        assert_failed(result, "manifest_unknown", "manifest");
        assert_eq!(result.registry_error(), Some("MANIFEST_UNKNOWN"), "{reference}: {}", pretty(result));
        assert!(result["manifest_digest"].is_null(), "{}", pretty(result));
        assert!(result.layers().is_empty());
        assert_eq!(result.u64_field("retries"), Some(0));
    }
    assert_eq!(pull_json(&[&pushed.reference]).code, 0, "the image that is there passes");
}

/// distribution stores a manifest as a blob and, asked for it by digest (or by a tag
/// that links to that digest), serves whatever that blob's data file holds without
/// hashing it, with `Docker-Content-Digest` set to the digest it looked up. Replacing
/// the data file with another valid manifest therefore serves the wrong document
/// under the right name: by digest the bytes disagree with the reference, by tag
/// with the header. Either way `manifest_digest_mismatch`.
#[tokio::test]
async fn manifest_replaced_in_storage_is_manifest_digest_mismatch() {
    let registry = Registry::start();
    let dir = registry.scratch();
    let pushed = push(&registry, "fault/replaced", "v1", unique_image(&dir, 8, Format::Oci)).await;
    let other = push(&registry, "fault/other", "v1", unique_image(&dir, 9, Format::Oci)).await;
    registry.replace_blob(&pushed.digest, &other.content.manifest.bytes);

    let pull = pull_json(&[&pushed.by_digest()]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "manifest_digest_mismatch", "manifest");
    let error = error_naming(result, &pushed.digest);
    assert!(error.contains(&format!("the bytes served hash to {}", other.digest)), "{error}");
    assert!(result.layers().is_empty(), "a mismatching manifest is not followed");
    // manifest_digest records what was served.
    assert_eq!(result.str_field("manifest_digest"), Some(other.digest.to_string().as_str()));

    let pull = pull_json(&[&pushed.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "manifest_digest_mismatch", "manifest");
    let error = error_naming(result, &pushed.digest);
    assert!(error.contains("Docker-Content-Digest"), "{error}");
    assert!(error.contains(&other.digest.to_string()), "{error}");
}

#[tokio::test]
async fn platform_manifest_replaced_in_storage_is_manifest_digest_mismatch() {
    let registry = Registry::start();
    let index = push_multi_arch_index(&registry, "fault/index", "v1").await;
    let arm64 = index.content.image_for("linux/arm64/v8").unwrap();
    let amd64 = &index.content.images[0];
    registry.replace_blob(&arm64.digest(), &amd64.manifest.bytes);

    let pull = pull_json(&["--platform", "all", &index.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    assert_eq!(pull.results.len(), 2, "{}", pull.dump());
    assert!(pull.for_platform("linux/amd64").is_ok(), "{}", pull.dump());
    let result = pull.for_platform("linux/arm64/v8");
    assert_failed(result, "manifest_digest_mismatch", "manifest");
    let error = error_naming(result, &arm64.digest());
    assert!(error.contains(&amd64.digest().to_string()), "{error}");
    assert!(result.layers().is_empty());
}

#[tokio::test]
async fn valid_gzip_of_the_wrong_tar_is_diff_id_mismatch() {
    let registry = Registry::start();
    let dir = registry.scratch();
    let honest = unique_image(&dir, 10, Format::Oci);
    // The config says layer 1 unpacks to layer 2's tar.
    let wrong = honest.layers[1].diff_id;
    let lying =
        ImageBuilder::new(Format::Oci).layers(honest.layers.clone()).lie_about_diff_id(0, wrong).build(&dir).unwrap();
    let pushed = push(&registry, "fault/diff-id", "v1", lying).await;

    let pull = pull_json(&[&pushed.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "diff_id_mismatch", "blob");
    let layer = &honest.layers[0];
    let error = error_naming(result, &layer.digest());
    assert!(
        error.contains(&format!(
            "uncompressed sha256 {} ({} bytes), config diff_id {wrong}",
            layer.diff_id, layer.uncompressed_size
        )),
        "{error}"
    );
    let entry = layer_entry(result, &layer.digest());
    assert_layer_failed(entry, "diff_id_mismatch", layer.blob.size, layer.blob.size);
    assert_eq!(entry.str_field("check"), Some("full"));
    assert_eq!(entry.u64_field("uncompressed_bytes"), Some(layer.uncompressed_size));
    assert_layer_verified(layer_entry(result, &honest.layers[1].digest()), &honest.layers[1], Format::Oci);
}

#[tokio::test]
async fn cut_gzip_stream_that_matches_its_descriptor_is_decompress_error() {
    let registry = Registry::start();
    let dir = registry.scratch();
    let builder = LayerBuilder::new().file("srv/data.bin", GeneratedContent::random(11, 200_000));
    let whole = builder.write(&dir, LayerCompression::Gzip).unwrap();
    let bytes = whole.blob.read().unwrap();
    let cut = &bytes[..bytes.len() * 6 / 10];
    // The descriptor names the cut bytes: digest and size agree, the gzip stream ends early.
    let layer = raw_layer(&dir, cut, &tar_bytes(&builder), LayerCompression::Gzip);
    let good = unique_image(&dir, 11, Format::Oci).layers[0].clone();
    let image = ImageBuilder::new(Format::Oci).layer(good.clone()).layer(layer.clone()).build(&dir).unwrap();
    let pushed = push(&registry, "fault/cut-gzip", "v1", image).await;

    let pull = pull_json(&[&pushed.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "decompress_error", "blob");
    error_naming(result, &layer.digest());
    let entry = layer_entry(result, &layer.digest());
    assert_layer_failed(entry, "decompress_error", cut.len() as u64, cut.len() as u64);
    assert_eq!(entry.str_field("check"), Some("full"));
    let unpacked = entry.u64_field("uncompressed_bytes").unwrap_or_else(|| panic!("{}", pretty(entry)));
    assert!(unpacked < layer.uncompressed_size, "{unpacked} of {}", layer.uncompressed_size);
    assert_layer_verified(layer_entry(result, &good.digest()), &good, Format::Oci);
}

#[tokio::test]
async fn corrupt_tar_inside_valid_gzip_is_tar_error() {
    let registry = Registry::start();
    let dir = registry.scratch();
    let builder = LayerBuilder::new()
        .file("srv/first.txt", GeneratedContent::text(12, 1000))
        .file("srv/second.bin", GeneratedContent::random(12, 5000));
    let mut tar = tar_bytes(&builder);
    // The second header starts after the first header (512) and its data (1000 → 1024):
    // break its checksum field.
    let second_header = 512 + 1024;
    assert_eq!(&tar[second_header..second_header + 14], b"srv/second.bin");
    tar[second_header + 148] ^= 0x07;
    // The config's diff_id is the corrupt tar's: only the tar itself is wrong.
    let layer = raw_layer(&dir, &gzip(&tar), &tar, LayerCompression::Gzip);
    let image = ImageBuilder::new(Format::Oci).layer(layer.clone()).build(&dir).unwrap();
    let pushed = push(&registry, "fault/bad-tar", "v1", image).await;

    let pull = pull_json(&[&pushed.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "tar_error", "blob");
    error_naming(result, &layer.digest());
    let entry = layer_entry(result, &layer.digest());
    assert_layer_failed(entry, "tar_error", layer.blob.size, layer.blob.size);
    assert_eq!(entry.str_field("check"), Some("full"));
}

#[tokio::test]
async fn layer_size_lies_are_size_mismatch_when_smaller_and_truncated_when_larger() {
    let registry = Registry::start();
    let dir = registry.scratch();
    let honest = unique_image(&dir, 13, Format::Oci);
    let layer = &honest.layers[1];
    let size = layer.blob.size;
    for (repo, claimed, reason, bytes) in [
        ("fault/size-small", size - 7, "blob_size_mismatch", size - 7 + 1),
        ("fault/size-large", size + 7, "blob_truncated", size),
    ] {
        let lying = ImageBuilder::new(Format::Oci)
            .layers(honest.layers.clone())
            .lie_about_layer_size(1, claimed)
            .build(&dir)
            .unwrap();
        let pushed = push(&registry, repo, "v1", lying).await;
        let pull = pull_json(&[&pushed.reference]);
        assert_eq!(pull.code, 1, "{repo}: {}", pull.dump());
        let result = pull.only();
        assert_failed(result, reason, "blob");
        error_naming(result, &layer.digest());
        // Smaller: one byte past the descriptor is enough to know, and no more is read.
        assert_layer_failed(layer_entry(result, &layer.digest()), reason, claimed, bytes);
        assert_layer_verified(layer_entry(result, &honest.layers[0].digest()), &honest.layers[0], Format::Oci);
    }
}
