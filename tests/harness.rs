//! Proves the test harness and the image builder against independent peers:
//! a real distribution registry, a real nginx cache, and skopeo (which checks
//! every digest it fetches). Nothing here uses pullprobe's own pull code.

mod common;

use std::io::Read;
use std::process::Command;

use common::images::{
    EXAMPLE_ARTIFACT_CONFIG, Upload, blob_to_push, every_layer_kind_image, example_artifact, multi_arch_index,
    push_with_a_lost_layer, unique_image,
};
use common::process::run_with_timeout;
use common::*;
use image_builder::{
    Compression, Digest, Format, GeneratedContent, ImageBuilder, ImageConfig, IndexManifest, LayerBuilder,
    LayerCompression,
};
use pullprobe::media_types;
use pullprobe::reason::Reason;
use pullprobe::registry::push::{
    BlobPushed, BlobSource, BlobToPush, UploadMethod, UploadSession, push_blob, push_image,
};

#[tokio::test]
async fn oci_and_docker_images_pass_skopeo() {
    let registry = Registry::start();
    let oci = push_small_image(&registry, "small/oci", "v1").await;
    let docker = push_small_docker_image(&registry, "small/docker", "v1").await;
    for (pushed, media_type) in [(&oci, media_types::OCI_MANIFEST), (&docker, media_types::DOCKER_MANIFEST)] {
        let raw = skopeo::inspect_raw(&pushed.reference).unwrap();
        assert_eq!(raw, pushed.content.manifest.bytes, "the registry serves the bytes we pushed");
        assert_eq!(Digest::of(&raw), pushed.digest);
        let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(manifest["mediaType"], media_type);

        let copied = skopeo::copy_to_dir(&pushed.by_digest(), &[]).unwrap();
        let files = copied.files();
        assert!(files.contains(&pushed.content.config.digest.hex()), "{files:?}");
        for layer in &pushed.content.layers {
            assert!(files.contains(&layer.digest().hex()), "{files:?}");
        }
    }
}

#[tokio::test]
async fn every_layer_kind_passes_skopeo_and_unpacks_to_its_diff_id() {
    let registry = Registry::start();
    let image = every_layer_kind_image(&registry.scratch());
    let method = UploadMethod::Chunked { chunk_size: 256 * 1024 };
    let pushed = push_via(&registry.url(), &registry, "kinds", "all", image, method).await;
    skopeo::copy_to_dir(&pushed.reference, &[]).unwrap();

    // Independent of the builder's encoders: decode what the registry stored and hash the tar.
    for layer in &pushed.content.layers {
        let stored = std::fs::read(registry.blob_data_path(&layer.digest())).unwrap();
        assert_eq!(Digest::of(&stored), layer.digest());
        let mut tar = Vec::new();
        match layer.compression.compression() {
            Compression::None => tar = stored.clone(),
            Compression::Gzip => {
                flate2::read::MultiGzDecoder::new(&stored[..]).read_to_end(&mut tar).unwrap();
            }
            Compression::Zstd => {
                zstd::stream::read::Decoder::new(&stored[..]).unwrap().read_to_end(&mut tar).unwrap();
            }
        }
        assert_eq!(Digest::of(&tar), layer.diff_id, "{:?}", layer.compression);
    }

    // GNU tar reads the first layer's entry kinds, PAX long path included.
    let first = registry.blob_data_path(&pushed.content.layers[0].digest());
    let mut tar = Command::new("tar");
    tar.arg("-tvzf").arg(&first);
    let listing = run_with_timeout(&mut tar, std::time::Duration::from_secs(30));
    assert_eq!(listing.code, 0, "{}", listing.stderr);
    let long_path = format!("srv/{}/file.txt", "long-directory-name".repeat(8));
    assert!(listing.stdout.contains(&long_path), "{}", listing.stdout);
    assert!(listing.stdout.contains("usr/bin/tool-link link to usr/bin/tool"), "{}", listing.stdout);
    assert!(listing.stdout.contains("usr/bin/alias -> tool"), "{}", listing.stdout);
    assert!(listing.stdout.contains("-rwxr-xr-x 1000/1000"), "{}", listing.stdout);
    let whiteouts = registry.blob_data_path(&pushed.content.layers[5].digest());
    let mut tar = Command::new("tar");
    tar.arg("-tzf").arg(&whiteouts);
    let listing = run_with_timeout(&mut tar, std::time::Duration::from_secs(30));
    assert_eq!(listing.stdout, "srv/.wh.plain.txt\nusr/bin/.wh..wh..opq\n");
}

#[tokio::test]
async fn index_with_attestation_and_manifest_list_pass_skopeo() {
    let registry = Registry::start();
    let index = push_multi_arch_index(&registry, "multi", "v1").await;
    let raw = skopeo::inspect_raw(&index.reference).unwrap();
    assert_eq!(Digest::of(&raw), index.digest);
    let doc: IndexManifest = serde_json::from_slice(&raw).unwrap();
    assert_eq!(doc.manifests.len(), 3);
    let attestation = &doc.manifests[2];
    assert_eq!(attestation.platform.as_ref().unwrap().to_string(), "unknown/unknown");
    assert_eq!(attestation.annotations["vnd.docker.reference.type"], "attestation-manifest");
    assert_eq!(attestation.annotations["vnd.docker.reference.digest"], doc.manifests[0].digest.to_string());

    let arm64 =
        skopeo::copy_to_dir(&index.reference, &["--override-arch", "arm64", "--override-variant", "v8"]).unwrap();
    let arm64_image = index.content.image_for("linux/arm64/v8").unwrap();
    assert!(arm64.files().contains(&arm64_image.config.digest.hex()));
    let amd64 = skopeo::copy_to_dir(&index.reference, &["--override-os", "linux", "--override-arch", "amd64"]).unwrap();
    assert!(amd64.files().contains(&index.content.images[0].config.digest.hex()));
    let all = skopeo::copy_to_dir(&index.reference, &["--all"]).unwrap();
    let attestation_blob = index.content.artifacts[0].blobs[0].digest.hex();
    assert!(all.files().contains(&attestation_blob), "{:?}", all.files());

    let list = multi_arch_index(&registry.scratch(), Format::Docker);
    let list = push(&registry, "multi-docker", "v1", list).await;
    let raw = skopeo::inspect_raw(&list.reference).unwrap();
    let doc: IndexManifest = serde_json::from_slice(&raw).unwrap();
    assert_eq!(doc.media_type, media_types::DOCKER_MANIFEST_LIST);
    skopeo::copy_to_dir(&list.reference, &["--all"]).unwrap();
}

#[tokio::test]
async fn artifact_with_a_foreign_config_type_is_stored_as_pushed() {
    let registry = Registry::start();
    let artifact = push(&registry, "artifact", "v1", example_artifact(&registry.scratch())).await;
    let raw = skopeo::inspect_raw(&artifact.reference).unwrap();
    assert_eq!(raw, artifact.content.manifest.bytes);
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["config"]["mediaType"], EXAMPLE_ARTIFACT_CONFIG);
    let copied = skopeo::copy_to_dir(&artifact.reference, &[]);
    // skopeo copies artifacts as opaque blobs into a directory.
    let copied = copied.unwrap();
    for blob in &artifact.content.blobs {
        assert!(copied.files().contains(&blob.digest.hex()));
    }
}

#[tokio::test]
async fn storage_faults_make_skopeo_fail() {
    let registry = Registry::start();
    type Fault = fn(&Registry, &Digest);
    let faults: [(&str, Fault); 4] = [
        ("delete", |r, d| r.delete_blob(d)),
        ("truncate", |r, d| r.truncate_blob(d, 100)),
        ("flip", |r, d| r.flip_byte(d, 10)),
        ("replace", |r, d| r.replace_blob(d, b"something else entirely")),
    ];
    for (seed, (name, fault)) in faults.into_iter().enumerate() {
        let pushed = push(
            &registry,
            &format!("fault/{name}"),
            "v1",
            unique_image(&registry.scratch(), seed as u64 + 100, Format::Oci),
        )
        .await;
        skopeo::copy_to_dir(&pushed.reference, &[]).unwrap();
        fault(&registry, &pushed.content.layers[1].digest());
        let err = skopeo::copy_to_dir(&pushed.reference, &[]).err().unwrap_or_else(|| panic!("{name}: copy succeeded"));
        assert!(!err.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn lying_manifests_are_pushed_and_caught_where_they_can_be() {
    let registry = Registry::start();
    let dir = registry.scratch();
    let honest = unique_image(&registry.scratch(), 200, Format::Oci);

    // A wrong diff_id: the registry cannot tell (only a pull that unpacks can).
    let wrong = Digest::of(b"not the tar");
    let lying =
        ImageBuilder::new(Format::Oci).layers(honest.layers.clone()).lie_about_diff_id(0, wrong).build(&dir).unwrap();
    let lying = push(&registry, "lie/diff-id", "v1", lying).await;
    let config: ImageConfig = serde_json::from_slice(&lying.content.config.read().unwrap()).unwrap();
    assert_eq!(config.rootfs.diff_ids[0], wrong);
    skopeo::copy_to_dir(&lying.reference, &[]).unwrap();

    // A wrong size: distribution stores the manifest and serves the blob's real length;
    // skopeo 1.9 checks digests only and copies it (a size check is the prober's job).
    let size = honest.layers[1].blob.size;
    let lying = ImageBuilder::new(Format::Oci)
        .layers(honest.layers.clone())
        .lie_about_layer_size(1, size + 7)
        .build(&dir)
        .unwrap();
    let lying = push(&registry, "lie/size", "v1", lying).await;
    let manifest: serde_json::Value = serde_json::from_slice(&skopeo::inspect_raw(&lying.reference).unwrap()).unwrap();
    assert_eq!(manifest["layers"][1]["size"], size + 7);
    let blob_path = format!("/v2/lie/size/blobs/{}", honest.layers[1].digest());
    let head = http_request("HEAD", &registry.host_port(), &blob_path, &[]).unwrap();
    assert_eq!(head.header("content-length"), Some(size.to_string().as_str()));
    skopeo::copy_to_dir(&lying.reference, &[]).unwrap();

    // A digest of a blob the registry does not have: distribution refuses the manifest.
    let missing = Digest::of(b"no such blob");
    let lying = ImageBuilder::new(Format::Oci)
        .layers(honest.layers.clone())
        .lie_about_layer_digest(1, missing)
        .build(&dir)
        .unwrap();
    let err = push_image(&client(), &registry.url(), "lie/missing", "v1", &Upload(&lying), UploadMethod::Monolithic)
        .await
        .unwrap_err();
    assert_eq!(err.reason, Reason::UploadFailed);
    assert_eq!(err.registry_error.as_deref(), Some("MANIFEST_BLOB_UNKNOWN"), "{err}");
    assert!(err.message.starts_with("PUT manifest lie/missing:v1: HTTP status 400"), "{err}");
    // So such a manifest is served by pushing its blob, then deleting it from storage.
    let (lying, _) = push_with_a_lost_layer(&registry, "lie/missing", "v1", &honest, 1, b"decoy").await;
    assert!(skopeo::copy_to_dir(&lying.reference, &[]).is_err());
}

#[tokio::test]
async fn restart_keeps_storage_and_forgets_the_descriptor_cache() {
    let mut registry = Registry::start();
    let kept = push(&registry, "restart/kept", "v1", unique_image(&registry.scratch(), 300, Format::Oci)).await;
    let gone = push(&registry, "restart/gone", "v1", unique_image(&registry.scratch(), 301, Format::Oci)).await;
    let layer = gone.content.layers[0].digest();
    let path = format!("/v2/restart/gone/blobs/{layer}");
    registry.delete_blob(&layer);

    // The in-memory cache still knows the blob: HEAD 200, GET 200 with a Content-Length and no body.
    let head = http_request("HEAD", &registry.host_port(), &path, &[]).unwrap();
    assert_eq!(head.status, 200);
    let get = http_get(&registry.host_port(), &path).unwrap();
    assert_eq!(get.status, 200);
    assert_eq!(get.header("content-length"), Some(gone.content.layers[0].blob.size.to_string().as_str()));
    assert!(get.body.is_empty(), "{} body bytes", get.body.len());

    registry.restart();
    let head = http_request("HEAD", &registry.host_port(), &path, &[]).unwrap();
    assert_eq!(head.status, 404, "after a restart the cache is gone");
    skopeo::copy_to_dir(&kept.reference, &[]).unwrap();
    assert_eq!(skopeo::inspect_raw(&gone.reference).unwrap(), gone.content.manifest.bytes);
}

#[tokio::test]
async fn nginx_cache_hits_and_serves_a_poisoned_blob() {
    let registry = Registry::start();
    let cache = Nginx::start_cache(&registry.host_port());
    let pushed = push(&registry, "cached", "v1", unique_image(&registry.scratch(), 400, Format::Oci)).await;
    let layer = &pushed.content.layers[0];
    let path = format!("/v2/cached/blobs/{}", layer.digest());

    let first = http_get(&cache.host_port(), &path).unwrap();
    assert_eq!((first.status, first.header("x-cache-status")), (200, Some("MISS")));
    cache.wait_for_cached_blob(&layer.digest());
    let second = http_get(&cache.host_port(), &path).unwrap();
    assert_eq!((second.status, second.header("x-cache-status")), (200, Some("HIT")));
    assert_eq!(Digest::of(&second.body), layer.digest());
    assert!(
        cache.access_log().contains(&format!("host=127.0.0.1 \"GET {path} HTTP/1.0\" 200")),
        "{}",
        cache.access_log()
    );

    let via_cache = format!("{}/cached:v1", cache.host_port());
    skopeo::copy_to_dir(&via_cache, &[]).unwrap();

    cache.corrupt_cached_blob(&layer.digest(), 5);
    let poisoned = http_get(&cache.host_port(), &path).unwrap();
    assert_eq!((poisoned.status, poisoned.header("x-cache-status")), (200, Some("HIT")));
    assert_eq!(poisoned.body.len() as u64, layer.blob.size);
    assert_eq!(poisoned.header("docker-content-digest"), Some(layer.digest().to_string().as_str()));
    assert_ne!(Digest::of(&poisoned.body), layer.digest());
    assert!(skopeo::copy_to_dir(&via_cache, &[]).is_err());
    // The registry itself is fine.
    skopeo::copy_to_dir(&pushed.reference, &[]).unwrap();
    let errors = cache.error_log();
    assert!(!["[emerg]", "[alert]", "[crit]"].iter().any(|level| errors.contains(level)), "{errors}");
}

#[tokio::test]
async fn uploads_stream_files_skip_present_blobs_and_name_the_failed_request() {
    let registry = Registry::start();
    let proxy = Nginx::start_proxy(&registry.host_port());
    let client = client();
    let layer = LayerBuilder::new()
        .file("big.bin", GeneratedContent::random(500, 12 << 20))
        .write(&registry.scratch(), LayerCompression::None)
        .unwrap();
    assert!(layer.blob.data.is_none(), "a big blob is only on disk");
    let blob = blob_to_push(&layer.blob);
    assert!(matches!(blob.source, BlobSource::File(_)));

    let monolithic = push_blob(&client, &registry.url(), "up/mono", &blob, UploadMethod::Monolithic).await.unwrap();
    assert_eq!(monolithic, BlobPushed::Uploaded);
    let again = push_blob(&client, &registry.url(), "up/mono", &blob, UploadMethod::Monolithic).await.unwrap();
    assert_eq!(again, BlobPushed::AlreadyPresent);
    // Through nginx: the registry's Locations are absolute URLs of the proxy.
    let chunked = UploadMethod::Chunked { chunk_size: 5 << 20 };
    assert_eq!(push_blob(&client, &proxy.url(), "up/chunked", &blob, chunked).await.unwrap(), BlobPushed::Uploaded);
    assert!(proxy.access_log().contains("\"PATCH /v2/up/chunked/blobs/uploads/"));
    assert_eq!(
        std::fs::read(registry.blob_data_path(&layer.digest())).unwrap(),
        std::fs::read(&layer.blob.path).unwrap()
    );

    // An upload session lost between chunks (as on storage that is not consistent).
    let data = bytes::Bytes::from(vec![9u8; 2000]);
    let mut session = UploadSession::start(&client, &registry.url(), "up/lost").await.unwrap();
    session.patch(data.slice(..1000).into(), 1000, "chunk 1 of 2").await.unwrap();
    assert_eq!(session.offset(), 1000);
    for dir in registry.upload_sessions("up/lost") {
        std::fs::remove_dir_all(dir).unwrap();
    }
    let err = session.patch(data.slice(1000..).into(), 1000, "chunk 2 of 2").await.unwrap_err();
    assert_eq!(err.reason, Reason::UploadFailed);
    assert_eq!(err.registry_error.as_deref(), Some("BLOB_UPLOAD_UNKNOWN"));
    assert!(err.message.starts_with("PATCH chunk 2 of 2: HTTP status 404 (BLOB_UPLOAD_UNKNOWN"), "{err}");

    // A blob whose bytes do not match its digest is refused at the closing PUT.
    let other = pullprobe::digest::Digest::of(b"other");
    let wrong = BlobToPush { digest: other, size: 5, source: BlobSource::Memory("bytes".into()) };
    let err = push_blob(&client, &registry.url(), "up/wrong", &wrong, UploadMethod::Chunked { chunk_size: 2 })
        .await
        .unwrap_err();
    assert_eq!(err.registry_error.as_deref(), Some("DIGEST_INVALID"), "{err}");
    assert!(err.message.contains("PUT (closing the upload): HTTP status 400"), "{err}");
}

#[test]
fn pullprobe_binary_runs_under_the_harness() {
    let (code, stdout, stderr) = run_pullprobe(&["--help"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("now"), "{stdout}");
}
