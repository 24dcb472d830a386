//! Healthy images pulled by the real `pullprobe` binary from a real
//! distribution registry: every manifest kind, every layer kind, artifacts and
//! a layer of ~300 MB, each passing with the byte counts the builder knows.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::images::{
    EXAMPLE_ARTIFACT_BLOB, EXAMPLE_ARTIFACT_CONFIG, every_layer_kind_image, example_artifact, multi_arch_index,
    unique_image,
};
use common::verdict::{
    assert_failed, assert_layer_failed, assert_layers_verified, assert_passed, error_naming, layer_entry, pretty,
    pull_json,
};
use common::*;
use image_builder::{
    ArtifactBlob, ArtifactBuilder, CompressionLevel, Format, GeneratedContent, ImageBuilder, Index, Layer,
    LayerBuilder, LayerCompression,
};
use pullprobe::media_types;
use serde_json::Value;

#[tokio::test]
async fn oci_image_passes_with_every_byte_counted() {
    let registry = Registry::start();
    let pushed = push_small_image(&registry, "healthy/oci", "v1").await;
    let pull = pull_json(&[&pushed.reference]);
    assert_eq!(pull.code, 0, "{}", pull.dump());
    let result = pull.only();
    assert_passed(result);
    let address = registry.host_port();
    assert_eq!(result.str_field("probe"), Some(pushed.reference.as_str()));
    assert_eq!(result.str_field("kind"), Some("pull"));
    assert_eq!(result.str_field("image"), Some(pushed.reference.as_str()));
    assert_eq!(result.str_field("registry"), Some(address.as_str()));
    assert_eq!(result.str_field("frontend"), Some(address.as_str()));
    assert_eq!(result.str_field("location"), Some("default"));
    assert_eq!(result.str_field("platform"), Some("linux/amd64"));
    assert_eq!(result.str_field("manifest_digest"), Some(pushed.digest.to_string().as_str()));
    assert_eq!(result.u64_field("retries"), Some(0));
    assert!(result["tls_not_after"].is_null(), "plain HTTP has no certificate");
    for phase in ["manifest", "config", "transfer"] {
        assert!(result["phases"][phase].as_f64().is_some_and(|s| s >= 0.0), "phase {phase}:\n{}", pretty(result));
    }
    assert_layers_verified(result, &pushed.content.layers, Format::Oci);
    for layer in result.layers() {
        assert_eq!(layer.str_field("served_by"), Some(address.as_str()));
        assert!(layer["cache_status"].is_null(), "no cache in front of the registry");
    }
}

#[tokio::test]
async fn docker_schema2_image_passes() {
    let registry = Registry::start();
    let pushed = push_small_docker_image(&registry, "healthy/docker", "v1").await;
    let manifest: Value = serde_json::from_slice(&pushed.content.manifest.bytes).unwrap();
    assert_eq!(manifest["mediaType"], media_types::DOCKER_MANIFEST);
    let pull = pull_json(&[&pushed.reference]);
    assert_eq!(pull.code, 0, "{}", pull.dump());
    let result = pull.only();
    assert_passed(result);
    assert_eq!(result.str_field("platform"), Some("linux/amd64"));
    assert_eq!(result.str_field("manifest_digest"), Some(pushed.digest.to_string().as_str()));
    assert_layers_verified(result, &pushed.content.layers, Format::Docker);
    // Pinned by digest, the same image passes too.
    let pull = pull_json(&[&pushed.by_digest()]);
    assert_eq!(pull.code, 0, "{}", pull.dump());
    assert_layers_verified(pull.only(), &pushed.content.layers, Format::Docker);
}

/// The layers of one platform's result: each names its layer, carries its size and
/// every byte of it. Layers the index shares between platforms are fully checked once
/// per run and may be checked by digest and size only for the next platform.
fn assert_platform_layers(result: &Value, layers: &[Layer], format: Format) {
    assert_eq!(result.layers().len(), layers.len(), "{}", pretty(result));
    for (entry, layer) in result.layers().iter().zip(layers) {
        assert_eq!(entry.str_field("digest"), Some(layer.digest().to_string().as_str()), "{}", pretty(result));
        assert_eq!(entry.str_field("media_type"), Some(layer.media_type(format)));
        assert_eq!(entry["ok"], true, "{}", pretty(result));
        assert_eq!(entry.u64_field("size"), Some(layer.blob.size));
        assert_eq!(entry.u64_field("bytes"), Some(layer.blob.size));
        match entry.str_field("check") {
            Some("full") => assert_eq!(entry.u64_field("uncompressed_bytes"), Some(layer.uncompressed_size)),
            Some("digest_only") => assert!(entry["uncompressed_bytes"].is_null(), "{}", pretty(entry)),
            other => panic!("check {other:?}:\n{}", pretty(entry)),
        }
    }
}

/// Every layer of the index was fully checked (decompressed, diff_id, tar) by some result.
fn assert_every_layer_fully_checked(results: &[Value], index: &Index) {
    let full: BTreeSet<&str> = results
        .iter()
        .flat_map(|r| r.layers())
        .filter(|l| l.str_field("check") == Some("full"))
        .filter_map(|l| l.str_field("digest"))
        .collect();
    for layer in index.images.iter().flat_map(|i| &i.layers) {
        assert!(full.contains(layer.digest().to_string().as_str()), "{} never fully checked", layer.digest());
    }
}

#[tokio::test]
async fn index_with_platform_all_gives_one_result_per_platform_and_skips_the_attestation() {
    let registry = Registry::start();
    let index = push_multi_arch_index(&registry, "healthy/multi", "v1").await;
    let attestation = &index.content.artifacts[0];
    let pull = pull_json(&["--platform", "all", &index.reference]);
    assert_eq!(pull.code, 0, "{}", pull.dump());
    let platforms: Vec<&str> = pull.results.iter().filter_map(|r| r.str_field("platform")).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"], "the attestation (unknown/unknown) is no result");
    for (result, image) in pull.results.iter().zip(&index.content.images) {
        assert_passed(result);
        assert_eq!(result.str_field("manifest_digest"), Some(index.digest.to_string().as_str()));
        assert_platform_layers(result, &image.layers, Format::Oci);
        for blob in attestation.blobs.iter().chain([&attestation.config]) {
            let digest = blob.digest.to_string();
            assert!(result.layers().iter().all(|l| l.str_field("digest") != Some(&digest)), "attestation pulled");
        }
    }
    assert_every_layer_fully_checked(&pull.results, &index.content);

    // A Docker manifest list, the same way.
    let list = push(&registry, "healthy/list", "v1", multi_arch_index(&registry.scratch(), Format::Docker)).await;
    let pull = pull_json(&["--platform", "all", &list.reference]);
    assert_eq!(pull.code, 0, "{}", pull.dump());
    let platforms: Vec<&str> = pull.results.iter().filter_map(|r| r.str_field("platform")).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"]);
    for (result, image) in pull.results.iter().zip(&list.content.images) {
        assert_passed(result);
        assert_eq!(result.str_field("manifest_digest"), Some(list.digest.to_string().as_str()));
        assert_platform_layers(result, &image.layers, Format::Docker);
    }
    assert_every_layer_fully_checked(&pull.results, &list.content);
}

#[tokio::test]
async fn one_platform_of_an_index_matches_its_variant() {
    let registry = Registry::start();
    let index = push_multi_arch_index(&registry, "healthy/arm", "v1").await;
    let arm64 = index.content.image_for("linux/arm64/v8").expect("arm64 image");
    let pull = pull_json(&["--platform", "linux/arm64", &index.reference]);
    assert_eq!(pull.code, 0, "{}", pull.dump());
    let result = pull.only();
    assert_passed(result);
    assert_eq!(result.str_field("platform"), Some("linux/arm64/v8"), "the platform of the image pulled");
    assert_eq!(result.str_field("manifest_digest"), Some(index.digest.to_string().as_str()));
    assert_layers_verified(result, &arm64.layers, Format::Oci);

    // Without --platform the default linux/amd64 is pulled.
    let pull = pull_json(&[&index.reference]);
    assert_eq!(pull.code, 0, "{}", pull.dump());
    assert_eq!(pull.only().str_field("platform"), Some("linux/amd64"));
    assert_layers_verified(pull.only(), &index.content.images[0].layers, Format::Oci);
}

#[tokio::test]
async fn absent_platform_is_platform_missing() {
    let registry = Registry::start();
    let index = push_multi_arch_index(&registry, "healthy/missing", "v1").await;
    let pull = pull_json(&["--platform", "linux/s390x", &index.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "platform_missing", "manifest");
    assert_eq!(result.str_field("platform"), Some("linux/s390x"));
    assert_eq!(result.str_field("manifest_digest"), Some(index.digest.to_string().as_str()));
    assert!(result.layers().is_empty(), "{}", pretty(result));
    let error = result.error_message().unwrap();
    assert!(error.contains("linux/s390x"), "{error}");
    assert!(error.contains("linux/amd64") && error.contains("linux/arm64/v8"), "lists what there is: {error}");
    assert!(!error.contains("unknown/unknown"), "the attestation is not a platform: {error}");
}

#[tokio::test]
async fn every_layer_kind_in_one_image_passes() {
    let registry = Registry::start();
    let image = every_layer_kind_image(&registry.scratch());
    let compressions: Vec<LayerCompression> = image.layers.iter().map(|l| l.compression).collect();
    assert!(matches!(
        compressions[..],
        [
            LayerCompression::Gzip,
            LayerCompression::GzipMultiMember { .. },
            LayerCompression::Zstd,
            LayerCompression::ZstdMultiFrame { .. },
            LayerCompression::None,
            LayerCompression::Gzip,
            LayerCompression::Gzip,
        ]
    ));
    // The last layer is empty: just the end-of-archive blocks.
    assert_eq!(image.layers[6].uncompressed_size, 1024);
    let pushed = push(&registry, "healthy/kinds", "v1", image).await;
    let pull = pull_json(&[&pushed.reference]);
    assert_eq!(pull.code, 0, "{}", pull.dump());
    let result = pull.only();
    assert_passed(result);
    assert_layers_verified(result, &pushed.content.layers, Format::Oci);
    let media: Vec<&str> = result.layers().iter().filter_map(|l| l.str_field("media_type")).collect();
    assert_eq!(
        media,
        [
            media_types::OCI_LAYER_GZIP,
            media_types::OCI_LAYER_GZIP,
            media_types::OCI_LAYER_ZSTD,
            media_types::OCI_LAYER_ZSTD,
            media_types::OCI_LAYER_TAR,
            media_types::OCI_LAYER_GZIP,
            media_types::OCI_LAYER_GZIP,
        ]
    );
}

#[tokio::test]
async fn artifact_blobs_get_digest_and_size_checks_only() {
    let registry = Registry::start();
    let artifact = push(&registry, "healthy/artifact", "v1", example_artifact(&registry.scratch())).await;
    let pull = pull_json(&[&artifact.reference]);
    assert_eq!(pull.code, 0, "{}", pull.dump());
    let result = pull.only();
    assert_passed(result);
    assert_eq!(result.str_field("manifest_digest"), Some(artifact.digest.to_string().as_str()));
    assert_eq!(result.layers().len(), artifact.content.blobs.len());
    for (entry, blob) in result.layers().iter().zip(&artifact.content.blobs) {
        let context = pretty(entry);
        assert_eq!(entry.str_field("digest"), Some(blob.digest.to_string().as_str()), "{context}");
        assert_eq!(entry.str_field("media_type"), Some(EXAMPLE_ARTIFACT_BLOB), "{context}");
        assert_eq!(entry.str_field("check"), Some("digest_only"), "{context}");
        assert_eq!(
            (entry.u64_field("size"), entry.u64_field("bytes")),
            (Some(blob.size), Some(blob.size)),
            "{context}"
        );
        assert!(entry["uncompressed_bytes"].is_null(), "an artifact blob is not decompressed: {context}");
    }

    // Digest-only is still a check of every byte: a flipped byte in a blob that is not a tar fails.
    let blob = &artifact.content.blobs[1];
    registry.flip_byte(&blob.digest, blob.size / 2);
    let pull = pull_json(&[&artifact.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "blob_digest_mismatch", "blob");
    error_naming(result, &blob.digest);
    let entry = layer_entry(result, &blob.digest);
    assert_layer_failed(entry, "blob_digest_mismatch", blob.size, blob.size);
    assert_eq!(entry.str_field("check"), Some("digest_only"));
    assert_eq!(layer_entry(result, &artifact.content.blobs[0].digest)["ok"], true);

    // And its size: a descriptor one byte short of the blob fails that blob.
    let short = artifact.content.blobs[0].clone();
    let lying = ArtifactBuilder::new(EXAMPLE_ARTIFACT_CONFIG, &br#"{"thing":"short"}"#[..])
        .blob(ArtifactBlob::written(EXAMPLE_ARTIFACT_BLOB, short.clone()))
        .edit_manifest(|m| m.layers[0].size -= 1)
        .build(&registry.scratch())
        .unwrap();
    let lying = push(&registry, "healthy/artifact-short", "v1", lying).await;
    let pull = pull_json(&[&lying.reference]);
    assert_eq!(pull.code, 1, "{}", pull.dump());
    let result = pull.only();
    assert_failed(result, "blob_size_mismatch", "blob");
    error_naming(result, &short.digest);
    assert_layer_failed(layer_entry(result, &short.digest), "blob_size_mismatch", short.size - 1, short.size);
}

/// Peak resident memory allowed for pulling layers of hundreds of megabytes: holding
/// one such layer (or a large share of one) in memory would break it.
const MAX_PEAK_RSS_MIB: u64 = 100;

#[tokio::test]
async fn layers_of_300_mb_stream_in_flat_memory() {
    let registry = Registry::start();
    let dir = registry.scratch();
    // Built at test time, never committed: ~300 MB of text as fast gzip, and ~300 MB of
    // random bytes as zstd (the compressed layer is as big as its content).
    let text = LayerBuilder::new()
        .compression_level(CompressionLevel::Fast)
        .file("srv/big.log", GeneratedContent::text(300, 300 << 20))
        .write(&dir, LayerCompression::Gzip)
        .expect("text layer");
    let random = LayerBuilder::new()
        .file("srv/big.bin", GeneratedContent::random(301, 300 << 20))
        .write(&dir, LayerCompression::Zstd)
        .expect("random layer");
    assert!(random.blob.size > 300 << 20, "{}", random.blob.size);
    assert!(text.uncompressed_size > 300 << 20, "{}", text.uncompressed_size);
    let small = unique_image(&dir, 302, Format::Oci).layers[0].clone();
    let image = ImageBuilder::new(Format::Oci).layer(small).layer(text).layer(random).build(&dir).expect("image");
    let pushed = push(&registry, "healthy/big", "v1", image).await;

    let run = run_pullprobe_measured(&["now", "-o", "json", &pushed.reference], Duration::from_secs(180));
    let results = json_results(&run.stdout);
    assert_eq!(run.code, 0, "{}\nstderr:\n{}", pretty(&results), run.stderr);
    assert_eq!(results.len(), 1);
    assert_passed(&results[0]);
    assert_layers_verified(&results[0], &pushed.content.layers, Format::Oci);
    let total: u64 = results[0].layers().iter().filter_map(|l| l.u64_field("bytes")).sum();
    assert!(total > 400 << 20, "{total} bytes pulled");
    eprintln!("pullprobe peak RSS: {} MiB for {} MiB pulled", run.peak_rss_kib / 1024, total >> 20);
    assert!(
        run.peak_rss_kib < MAX_PEAK_RSS_MIB * 1024,
        "pullprobe peaked at {} MiB pulling {} MiB; the limit is {MAX_PEAK_RSS_MIB} MiB",
        run.peak_rss_kib / 1024,
        total >> 20
    );
}
