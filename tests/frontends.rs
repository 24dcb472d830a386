//! Probing each frontend of a registry separately, against real registries and
//! real nginx frontends: a poisoned cache found on the cache only, split-brain
//! storage behind one name found as `frontend_inconsistent`, a frontend that is
//! down, a name with several addresses probed once per address with the Host
//! header kept, and one full decompression per layer digest per round.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::images::Pushed;
use common::{Nginx, Registry, ResultJson, json_results, push, push_small_image, result_for, run_pullprobe};
use image_builder::Digest;
use image_builder::{Format, GeneratedContent, ImageBuilder, LayerBuilder, LayerCompression};
use serde_json::Value;

fn layer_digests(pushed: &Pushed<image_builder::Image>) -> Vec<Digest> {
    pushed.content.layers.iter().map(|l| l.blob.digest).collect()
}

fn layer_entry<'a>(result: &'a Value, digest: &Digest) -> &'a Value {
    let wanted = digest.to_string();
    result
        .layers()
        .iter()
        .find(|l| l.str_field("digest") == Some(wanted.as_str()))
        .unwrap_or_else(|| panic!("no layer {wanted} in {result}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poisoned_cache_fails_only_on_the_cache_frontend() {
    let registry = Registry::start();
    let pushed = push_small_image(&registry, "team/app", "1.0").await;
    let proxy = Nginx::start_proxy(&registry.host_port());
    let cache = Nginx::start_cache(&registry.host_port());
    let proxy_url = proxy.url().to_string();
    let cache_url = cache.url().to_string();
    let proxy_label = proxy_url.trim_end_matches('/');
    let cache_label = cache_url.trim_end_matches('/');

    // Warm the cache with a healthy pull, then corrupt one cached layer on disk.
    let (code, stdout, stderr) = run_pullprobe(&["now", "-o", "json", "--frontend", &cache_url, &pushed.reference]);
    assert_eq!(code, 0, "warming pull failed: {stdout}\n{stderr}");
    let victim = layer_digests(&pushed)[1];
    cache.corrupt_cached_blob(&victim, 100);

    let (code, stdout, stderr) =
        run_pullprobe(&["now", "-o", "json", "--frontend", &proxy_url, "--frontend", &cache_url, &pushed.reference]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let results = json_results(&stdout);
    assert_eq!(results.len(), 2, "{stdout}");

    let healthy = result_for(&results, proxy_label);
    assert!(healthy.is_ok(), "the plain proxy serves the registry's good bytes: {healthy}");

    let poisoned = result_for(&results, cache_label);
    assert_eq!(poisoned.reason(), Some("blob_digest_mismatch"), "{poisoned}");
    assert_eq!(poisoned.str_field("phase"), Some("blob"));
    let layer = layer_entry(poisoned, &victim);
    assert_eq!(layer.reason(), Some("blob_digest_mismatch"));
    assert_eq!(layer.str_field("cache_status"), Some("HIT"), "{layer}");
    assert_eq!(layer.str_field("served_by"), Some(cache.host_port().as_str()));
    let error = poisoned.error_message().unwrap_or_default();
    assert!(error.contains(&victim.to_string()) && error.contains("cache HIT"), "{error}");
    // The other layer of the cache frontend is fine.
    let other = layer_entry(poisoned, &layer_digests(&pushed)[0]);
    assert_eq!(other.get("ok"), Some(&Value::Bool(true)), "{other}");
}

#[tokio::test(flavor = "multi_thread")]
async fn split_storage_behind_one_name_is_frontend_inconsistent() {
    let site_a = Registry::start();
    let site_b = Registry::start();
    let on_a = push_small_image(&site_a, "team/app", "stable").await;
    let dir = site_b.scratch();
    let different = LayerBuilder::new().file("srv/version", "2").write(&dir, LayerCompression::Gzip).expect("layer");
    let image_b = ImageBuilder::new(Format::Oci).layer(different).build(&dir).expect("image");
    let on_b = push(&site_b, "team/app", "stable", image_b).await;
    assert_ne!(on_a.digest, on_b.digest);

    let a = site_a.url().to_string();
    let b = site_b.url().to_string();
    // Two frontends, two answers: a tie, so both fail, and the error lists both digests.
    let (code, stdout, _) = run_pullprobe(&["now", "-o", "json", "--frontend", &a, "--frontend", &b, &on_a.reference]);
    assert_eq!(code, 1, "{stdout}");
    let results = json_results(&stdout);
    for r in &results {
        assert_eq!(r.reason(), Some("frontend_inconsistent"), "{r}");
        assert_eq!(r.str_field("phase"), Some("consistency"));
        let error = r.error_message().unwrap_or_default();
        assert!(error.contains(&on_a.digest.hex()[..12]) && error.contains(&on_b.digest.hex()[..12]), "{error}");
        assert!(error.contains("no majority"), "{error}");
    }

    // Three frontends, two of them site A (directly and through a proxy): only site B fails.
    let proxy_a = Nginx::start_proxy(&site_a.host_port());
    let pa = proxy_a.url().to_string();
    let (code, stdout, _) =
        run_pullprobe(&["now", "-o", "json", "--frontend", &a, "--frontend", &pa, "--frontend", &b, &on_a.reference]);
    assert_eq!(code, 1, "{stdout}");
    let results = json_results(&stdout);
    assert!(result_for(&results, a.trim_end_matches('/')).is_ok());
    assert!(result_for(&results, pa.trim_end_matches('/')).is_ok());
    let minority = result_for(&results, b.trim_end_matches('/'));
    assert_eq!(minority.reason(), Some("frontend_inconsistent"), "{minority}");
    assert_eq!(minority.str_field("manifest_digest"), Some(on_b.digest.to_string().as_str()));
    let error = minority.error_message().unwrap_or_default();
    assert!(error.contains(&format!("majority sha256:{}", &on_a.digest.hex()[..12])), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frontend_that_is_down_fails_alone() {
    let registry = Registry::start();
    let pushed = push_small_image(&registry, "team/app", "1.0").await;
    let closed = common::process::free_port();
    let down = format!("http://127.0.0.1:{closed}");
    let up = registry.url().to_string();
    let (code, stdout, _) =
        run_pullprobe(&["now", "-o", "json", "--frontend", &up, "--frontend", &down, &pushed.reference]);
    assert_eq!(code, 1, "{stdout}");
    let results = json_results(&stdout);
    assert!(result_for(&results, up.trim_end_matches('/')).is_ok());
    let failed = result_for(&results, &down);
    assert_eq!(failed.reason(), Some("connect_error"), "{failed}");
    assert_eq!(failed.str_field("phase"), Some("connect"), "{failed}");
    assert_eq!(failed.u64_field("retries"), Some(1), "connect errors are retried once: {failed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_with_two_addresses_is_probed_once_per_address_with_its_host_header() {
    let registry = Registry::start();
    let pushed = push_small_image(&registry, "team/app", "1.0").await;
    let lb = Nginx::start_proxy_on(&registry.host_port(), &["127.0.0.2", "127.0.0.3"]);
    let name = "registry.pullprobe.test";
    let work = tempfile::tempdir().expect("temp dir");
    let hosts = work.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.2 {name}\n127.0.0.3 {name}\n")).expect("hosts");
    let config = work.path().join("probes.yaml");
    std::fs::write(
        &config,
        format!(
            "registries:\n  - name: lb\n    url: http://{name}:{port}\n    frontends: dns\n\
             probes:\n  - name: app\n    registry: lb\n    image: team/app:1.0\n",
            port = lb.port()
        ),
    )
    .expect("config");

    // A private mount namespace in which the name has two A records (the
    // machine's /etc/hosts is untouched).
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind {hosts} /etc/hosts && exec {bin} now -o json -c {config}",
            hosts = hosts.display(),
            bin = env!("CARGO_BIN_EXE_pullprobe"),
            config = config.display()
        ))
        .output()
        .expect("unshare (util-linux) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n(needs root for a private mount namespace)",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = json_results(&stdout);
    let frontends: Vec<&str> = results.iter().filter_map(|r| r.str_field("frontend")).collect();
    assert_eq!(frontends, vec!["127.0.0.2", "127.0.0.3"], "{stdout}");
    assert!(results.iter().all(|r| r.is_ok()), "{stdout}");
    assert_eq!(results[0].str_field("manifest_digest"), Some(pushed.digest.to_string().as_str()));

    // Each address was reached, each time with the registry's name in Host.
    let log = lb.access_log();
    let manifest_requests: Vec<&str> = log.lines().filter(|l| l.contains("/manifests/1.0")).collect();
    assert_eq!(manifest_requests.len(), 2, "{log}");
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let line = manifest_requests
            .iter()
            .find(|l| l.ends_with(&format!("server={ip}")))
            .unwrap_or_else(|| panic!("no manifest request arrived on {ip}:\n{log}"));
        assert!(line.contains(&format!("host={name} ")), "Host header not kept: {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_frontends_decompress_each_layer_once() {
    let registry = Registry::start();
    let dir = registry.scratch();
    let layers = [
        LayerBuilder::new().file("a.txt", GeneratedContent::text(1, 2 << 20)).write(&dir, LayerCompression::Gzip),
        LayerBuilder::new().file("b.bin", GeneratedContent::random(2, 1 << 20)).write(&dir, LayerCompression::Zstd),
        LayerBuilder::new().file("c.txt", "small").write(&dir, LayerCompression::None),
    ];
    let image = ImageBuilder::new(Format::Oci)
        .layers(layers.into_iter().map(|l| l.expect("layer")))
        .build(&dir)
        .expect("image");
    let pushed = push(&registry, "team/dedup", "1", image).await;
    let p1 = Nginx::start_proxy(&registry.host_port());
    let p2 = Nginx::start_proxy(&registry.host_port());
    let frontends = [registry.url().to_string(), p1.url().to_string(), p2.url().to_string()];
    let mut args = vec!["now", "-o", "json"];
    for f in &frontends {
        args.extend(["--frontend", f.as_str()]);
    }
    args.push(&pushed.reference);
    let (code, stdout, _) = run_pullprobe(&args);
    assert_eq!(code, 0, "{stdout}");
    let results = json_results(&stdout);
    assert_eq!(results.len(), 3);
    let mut checks: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &results {
        for layer in r.layers() {
            checks
                .entry(layer.str_field("digest").unwrap_or_default().to_string())
                .or_default()
                .push(layer.str_field("check").unwrap_or_default().to_string());
            assert_eq!(layer.u64_field("bytes"), layer.u64_field("size"), "every byte still read: {layer}");
        }
    }
    assert_eq!(checks.len(), 3);
    for (digest, kinds) in &checks {
        let full = kinds.iter().filter(|k| *k == "full").count();
        let digest_only = kinds.iter().filter(|k| *k == "digest_only").count();
        assert_eq!((full, digest_only), (1, 2), "layer {digest}: {kinds:?}");
    }
    // Only the full check reports uncompressed bytes.
    for r in &results {
        for layer in r.layers() {
            let full = layer.str_field("check") == Some("full");
            assert_eq!(layer.u64_field("uncompressed_bytes").is_some(), full, "{layer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_layer_found_on_one_frontend_fails_the_others_too() {
    // Valid gzip of a tar that does not match the config's diff_id: a property of
    // the bytes behind the digest, so every frontend serving them is broken, even
    // those that only checked the digest.
    let registry = Registry::start();
    let dir = registry.scratch();
    let layer = LayerBuilder::new().file("x", "x").write(&dir, LayerCompression::Gzip).expect("layer");
    let image = ImageBuilder::new(Format::Oci)
        .layer(layer)
        .lie_about_diff_id(0, Digest::of(b"another tar"))
        .build(&dir)
        .expect("image");
    let pushed = push(&registry, "team/broken", "1", image).await;
    let proxy = Nginx::start_proxy(&registry.host_port());
    let (a, b) = (registry.url().to_string(), proxy.url().to_string());
    let (code, stdout, _) =
        run_pullprobe(&["now", "-o", "json", "--frontend", &a, "--frontend", &b, &pushed.reference]);
    assert_eq!(code, 1, "{stdout}");
    for r in json_results(&stdout) {
        assert_eq!(r.reason(), Some("diff_id_mismatch"), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_round_budget_rotates_until_every_layer_is_read_through_every_frontend() {
    let registry = Registry::start();
    let dir = registry.scratch();
    let layers = (0..3).map(|i| {
        LayerBuilder::new()
            .file("blob.bin", GeneratedContent::random(40 + i, 256 * 1024))
            .write(&dir, LayerCompression::Gzip)
            .expect("layer")
    });
    let image = ImageBuilder::new(Format::Oci).layers(layers).build(&dir).expect("image");
    let total: u64 = image.layers.iter().map(|l| l.blob.size).sum();
    let pushed = push(&registry, "team/rotate", "1", image).await;
    let proxy = Nginx::start_proxy(&registry.host_port());
    let cache = Nginx::start_cache(&registry.host_port());
    let frontends = [registry.url().to_string(), proxy.url().to_string(), cache.url().to_string()];

    // Warm the cache with a full pull, then poison one layer in it.
    let (code, stdout, _) = run_pullprobe(&["now", "-o", "json", "--frontend", &frontends[2], &pushed.reference]);
    assert_eq!(code, 0, "{stdout}");
    let victim = layer_digests(&pushed)[2];
    cache.corrupt_cached_blob(&victim, 10);

    // One image through three frontends; the round may read 1.2 images' worth:
    // each pull gets 0.4 of the image, one layer, so a rotation takes 3 rounds.
    let work = tempfile::tempdir().expect("temp dir");
    let config = work.path().join("probes.yaml");
    std::fs::write(
        &config,
        format!(
            "limits:\n  max_pull_bytes: {total}\n  max_round_bytes: {}\n\
             registries:\n  - name: r\n    url: {}\n    frontends:\n{}\
             probes:\n  - name: rotate\n    registry: r\n    image: team/rotate:1\n",
            total * 12 / 10,
            frontends[0].trim_end_matches('/'),
            frontends
                .iter()
                .enumerate()
                .map(|(i, url)| format!("      - {{name: f{i}, url: {}}}\n", url.trim_end_matches('/')))
                .collect::<String>(),
        ),
    )
    .expect("config");

    let mut read: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut caught_in_round = Vec::new();
    for round in 0..3 {
        let round_arg = round.to_string();
        let config_arg = config.display().to_string();
        let (code, stdout, stderr) = run_pullprobe(&["now", "-o", "json", "-c", &config_arg, "--round", &round_arg]);
        let results = json_results(&stdout);
        assert_eq!(results.len(), 3, "{stdout}\n{stderr}");
        let mut round_bytes = 0;
        for r in &results {
            let frontend = r.str_field("frontend").unwrap_or_default().to_string();
            let mut read_here = 0;
            for layer in r.layers() {
                round_bytes += layer.u64_field("bytes").unwrap_or(0);
                if layer.str_field("check") != Some("skipped") {
                    read_here += 1;
                    *read
                        .entry((layer.str_field("digest").unwrap_or_default().to_string(), frontend.clone()))
                        .or_default() += 1;
                }
            }
            assert_eq!(read_here, 1, "one layer per frontend per round: {r}");
            if frontend == "f2" && r.reason() == Some("blob_digest_mismatch") {
                caught_in_round.push(round);
                assert!(r.error_message().unwrap_or_default().contains(&victim.to_string()), "{r}");
            } else {
                assert!(r.is_ok(), "round {round}: {r}");
            }
        }
        assert!(round_bytes <= total * 12 / 10, "round {round} read {round_bytes} bytes");
        assert_eq!(code, if caught_in_round.last() == Some(&round) { 1 } else { 0 }, "{stdout}");
    }
    assert_eq!(read.len(), 9, "every (layer, frontend) pair read within three rounds: {read:?}");
    assert!(read.values().all(|n| *n == 1), "{read:?}");
    assert_eq!(caught_in_round.len(), 1, "the poisoned cached layer is found exactly once per rotation");
}
