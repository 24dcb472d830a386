//! Tag selection and catalog sampling against a real distribution registry
//! (2.8.2) holding a few dozen repositories and tags pushed through its upload
//! API, and against real nginx frontends:
//!
//! - `tags: {match, newest}` picks exactly the right tags under each step of the
//!   ordering rule: semantic versions, config `created` dates that disagree
//!   with lexical order (an index among them), and plain lexical order;
//! - `/v2/_catalog` is followed over its `Link` pages (a small `maxentries`
//!   makes the registry refuse our page size, and we take its own), sorted, and
//!   the rotating sample covers every matching repository within
//!   `rounds_to_cover` slots;
//! - a frontend that hides `/v2/_catalog` or has no upstream gives a
//!   `discovery_failed` that says so;
//! - end to end through `pullprobe now -c probes.yaml -o json`: a flipped byte
//!   in a layer of a build that only the `tags:` rule finds, or of a repository
//!   that only the `catalog:` rule finds, fails that discovered image, named
//!   under the rule's name, while the hand-listed image passes.
//!
//! distribution 2.8.2 answers `tags/list` whole and ignores `n` (checked below,
//! so a newer registry that pages tags makes that test fail and this note
//! stale); `Link` pages of tags are therefore served by a small in-test server.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use regex::Regex;
use time::OffsetDateTime;
use time::macros::datetime;
use url::Url;

use common::images::Pushed;
use common::{Nginx, Registry, RegistryOptions, ResultJson, http_get, json_results, push, run_pullprobe};
use image_builder::{
    Format, GeneratedContent, Image, ImageBuilder, Index, IndexBuilder, Layer, LayerBuilder, LayerCompression, Platform,
};
use pullprobe::config::TagRule;
use pullprobe::probe::discover::catalog::{repositories, rotating_sample, rounds_to_cover};
use pullprobe::probe::discover::tags::newest_tags;
use pullprobe::reason::Reason;
use pullprobe::registry::transport::{Transport, TransportOptions};

const MAX_MANIFEST_BYTES: u64 = 4 << 20;

fn transport() -> Transport {
    Transport::new(&TransportOptions { max_redirects: 5, ..TransportOptions::default() }).expect("transport")
}

fn rule(pattern: &str, newest: usize) -> TagRule {
    TagRule { pattern: Regex::new(pattern).expect("pattern"), newest }
}

async fn newest(base: &Url, repository: &str, pattern: &str, newest: usize) -> Vec<String> {
    newest_tags(&transport(), base, repository, &rule(pattern, newest), MAX_MANIFEST_BYTES)
        .await
        .unwrap_or_else(|e| panic!("tags of {repository} matching {pattern}: {e}"))
}

/// A small layer shared by the images of a test (the images differ by their config).
fn shared_layer(registry: &Registry) -> Layer {
    LayerBuilder::new()
        .file("srv/app.txt", "discovered\n")
        .write(&registry.scratch(), LayerCompression::Gzip)
        .expect("layer")
}

/// An image whose config says `created` (or has none), on `platform`.
fn image_created(registry: &Registry, layer: &Layer, created: Option<OffsetDateTime>, platform: Platform) -> Image {
    let builder = ImageBuilder::new(Format::Oci).platform(platform).layer(layer.clone());
    let builder = match created {
        Some(at) => builder.created(at),
        None => builder.no_created(),
    };
    builder.build(&registry.scratch()).expect("image")
}

#[tokio::test(flavor = "multi_thread")]
async fn semantic_versions_pick_the_highest_by_precedence() {
    let registry = Registry::start();
    let layer = shared_layer(&registry);
    // Lexical order would put 1.9.3 above 1.10.1 and v1.2 above everything.
    for tag in ["v1.2", "1.10", "1.9.3", "1.10.1", "v2.0.0-rc.1", "2.0.0-rc.2", "0.9", "latest", "nightly-2026"] {
        let image = image_created(&registry, &layer, None, Platform::linux_amd64());
        push(&registry, "team/versions", tag, image).await;
    }
    let base = registry.url();
    assert_eq!(newest(&base, "team/versions", r"^v?[0-9]", 3).await, ["2.0.0-rc.2", "v2.0.0-rc.1", "1.10.1"]);
    assert_eq!(newest(&base, "team/versions", r"^v?1\.", 2).await, ["1.10.1", "1.10"]);
    assert_eq!(newest(&base, "team/versions", r"^v?1\.", 10).await, ["1.10.1", "1.10", "1.9.3", "v1.2"]);
    // `latest` is not a version: the whole set falls back to dates (none here), then lexical.
    assert_eq!(newest(&base, "team/versions", r"^(latest|1\.)", 2).await, ["latest", "1.9.3"]);
    // No match, and a repository the registry does not know: nothing to probe (the caller reports it).
    assert!(newest(&base, "team/versions", r"^does-not-match$", 2).await.is_empty());
    assert!(newest(&base, "team/unknown", r".", 2).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn created_dates_decide_when_lexical_order_disagrees() {
    let registry = Registry::start();
    let layer = shared_layer(&registry);
    let amd64 = Platform::linux_amd64();
    let dated = [
        ("build-a", Some(datetime!(2026-11-20 10:00 UTC))),
        ("build-b", Some(datetime!(2026-11-01 10:00 UTC))),
        ("build-c", Some(datetime!(2026-11-22 10:00 UTC))),
        ("build-d", None),                             // no `created`: last
        ("build-f", Some(OffsetDateTime::UNIX_EPOCH)), // a reproducible build: last
        ("other-z", Some(datetime!(2026-11-23 10:00 UTC))),
    ];
    for (tag, created) in dated {
        push(&registry, "team/builds", tag, image_created(&registry, &layer, created, amd64.clone())).await;
    }
    // An index: its first image manifest's config dates it (21 Nov); the second entry would say 23 Nov.
    let first = image_created(&registry, &layer, Some(datetime!(2026-11-21 10:00 UTC)), amd64.clone());
    let second = image_created(&registry, &layer, Some(datetime!(2026-11-23 12:00 UTC)), Platform::linux_arm64_v8());
    let index: Index = IndexBuilder::new(Format::Oci).image(first).image(second).build();
    let _: Pushed<Index> = push(&registry, "team/builds", "build-e", index).await;

    let base = registry.url();
    // Lexical order would give build-f, build-e, build-d.
    assert_eq!(newest(&base, "team/builds", "^build-", 3).await, ["build-c", "build-e", "build-a"]);
    assert_eq!(
        newest(&base, "team/builds", "^build-", 10).await,
        ["build-c", "build-e", "build-a", "build-b", "build-f", "build-d"]
    );
    assert_eq!(newest(&base, "team/builds", "", 1).await, ["other-z"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn timestamped_tags_without_dates_order_lexically() {
    let registry = Registry::start();
    let layer = shared_layer(&registry);
    for tag in ["2026-11-01-0600-aaa", "2026-11-23-0600-bbb", "2026-10-30-2300-zzz", "2026-11-23-0559-ccc", "nightly"] {
        // Epoch `created` (the image builder's default): no dates to go by.
        let image = ImageBuilder::new(Format::Oci).layer(layer.clone()).build(&registry.scratch()).expect("image");
        push(&registry, "releng/mediawiki", tag, image).await;
    }
    let base = registry.url();
    let pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}-";
    assert_eq!(newest(&base, "releng/mediawiki", pattern, 2).await, ["2026-11-23-0600-bbb", "2026-11-23-0559-ccc"]);
    assert_eq!(newest(&base, "releng/mediawiki", pattern, 1).await, ["2026-11-23-0600-bbb"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn distribution_2_8_answers_tag_lists_whole_and_ignores_n() {
    let registry = Registry::start();
    let layer = shared_layer(&registry);
    for tag in ["a", "b", "c", "d", "e"] {
        let image = ImageBuilder::new(Format::Oci).layer(layer.clone()).build(&registry.scratch()).expect("image");
        push(&registry, "team/paged", tag, image).await;
    }
    let answer = http_get(&registry.host_port(), "/v2/team/paged/tags/list?n=2").expect("tags/list");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("link"), None, "this registry pages tag lists now: test that against it");
    let list: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON");
    assert_eq!(list["tags"].as_array().map(Vec::len), Some(5), "{list}");
}

/// Tag list pages as a registry that pages them serves them: `?n=` is ignored,
/// `?last=` picks the page, `Link` points to the next.
#[derive(Default)]
struct TagPages {
    pages: Vec<Vec<&'static str>>,
    asked: Mutex<Vec<String>>,
}

async fn tag_page(State(pages): State<Arc<TagPages>>, RawQuery(query): RawQuery) -> impl IntoResponse {
    let query = query.unwrap_or_default();
    pages.asked.lock().expect("lock").push(query.clone());
    let page: usize =
        query.split('&').find_map(|kv| kv.strip_prefix("last=page")).and_then(|n| n.parse().ok()).unwrap_or(0);
    let tags = pages.pages.get(page).cloned().unwrap_or_default();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if page + 1 < pages.pages.len() {
        let link = format!("</v2/team/app/tags/list?last=page{}&n=2>; rel=\"next\"", page + 1);
        headers.insert(header::LINK, HeaderValue::from_str(&link).expect("header"));
    }
    (headers, serde_json::json!({"name": "team/app", "tags": tags}).to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_list_pages_are_followed_over_link() {
    let pages = Arc::new(TagPages {
        pages: vec![vec!["1.0", "1.1"], vec!["1.2", "0.9", "latest"], vec!["3.0.0"]],
        asked: Mutex::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = Router::new().route("/v2/team/app/tags/list", axum::routing::get(tag_page)).with_state(pages.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let base = Url::parse(&format!("http://{addr}")).expect("URL");
    // The newest is on the last page: only a listing that follows every page finds it.
    assert_eq!(newest(&base, "team/app", r"^[0-9]+\.", 2).await, ["3.0.0", "1.2"]);
    let asked = pages.asked.lock().expect("lock").clone();
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert!(asked[1].contains("last=page1") && asked[2].contains("last=page2"), "{asked:?}");
    server.abort();
}

/// A registry with `maxentries` `page` and 30 repositories: 20 under `releng/`, 10 under `team/`.
async fn catalog_registry(page: usize) -> (Registry, Vec<String>) {
    let registry =
        Registry::start_with(RegistryOptions { catalog_max_entries: Some(page), ..RegistryOptions::default() });
    let layer = shared_layer(&registry);
    let mut releng = Vec::new();
    for i in 0..30 {
        let repository = if i % 3 == 2 { format!("team/service-{i:02}") } else { format!("releng/image-{i:02}") };
        let image = ImageBuilder::new(Format::Oci).layer(layer.clone()).build(&registry.scratch()).expect("image");
        push(&registry, &repository, "latest", image).await;
        if repository.starts_with("releng/") {
            releng.push(repository);
        }
    }
    releng.sort();
    (registry, releng)
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_pages_are_followed_sorted_and_filtered() {
    let (registry, releng) = catalog_registry(4).await;
    assert_eq!(releng.len(), 20);
    // The registry pages its catalog (and refuses our page size of 1000 as over its maxentries).
    let first = http_get(&registry.host_port(), "/v2/_catalog").expect("catalog");
    assert!(first.header("link").is_some_and(|l| l.contains("rel=\"next\"")), "{:?}", first.headers);
    assert_eq!(http_get(&registry.host_port(), "/v2/_catalog?n=1000").expect("catalog").status, 400);

    let base = registry.url();
    let pattern = Regex::new("^releng/").expect("pattern");
    let listed = repositories(&transport(), &base, Some(&pattern)).await.expect("catalog");
    assert_eq!(listed, releng);
    let everything = repositories(&transport(), &base, None).await.expect("catalog");
    assert_eq!(everything.len(), 30, "{everything:?}");
    assert!(everything.windows(2).all(|w| w[0] < w[1]), "sorted without duplicates: {everything:?}");
    let none = Regex::new("^nothing/").expect("pattern");
    assert!(repositories(&transport(), &base, Some(&none)).await.expect("catalog").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_samples_cover_every_matching_repository_in_the_promised_rounds() {
    let (registry, releng) = catalog_registry(7).await;
    let pattern = Regex::new("^releng/").expect("pattern");
    let candidates = repositories(&transport(), &registry.url(), Some(&pattern)).await.expect("catalog");
    assert_eq!(candidates, releng);
    let sample = 3;
    let rounds = rounds_to_cover(candidates.len(), sample);
    assert_eq!(rounds, 7);
    // From any starting slot (a serve round, or wall-clock time / interval for a CronJob).
    for first_slot in [0, 1, 29_000_123] {
        let mut seen = BTreeSet::new();
        for slot in first_slot..first_slot + rounds {
            let chosen = rotating_sample(&candidates, sample, slot);
            assert_eq!(chosen.len(), sample);
            assert!(chosen.iter().all(|r| r.starts_with("releng/")), "{chosen:?}");
            seen.extend(chosen);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), releng, "slots {first_slot}..+{rounds}");
        // One round fewer cannot have covered them (6 × 3 < 20): the bound is the promise, not slack.
        let fewer: BTreeSet<String> =
            (first_slot..first_slot + rounds - 1).flat_map(|slot| rotating_sample(&candidates, sample, slot)).collect();
        assert!(fewer.len() < releng.len());
    }
    // Another listing of the same catalog gives the same samples.
    let again = repositories(&transport(), &registry.url(), Some(&pattern)).await.expect("catalog");
    assert_eq!(rotating_sample(&again, sample, 5), rotating_sample(&candidates, sample, 5));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frontend_hiding_the_catalog_is_a_clear_discovery_failure() {
    let registry = Registry::start();
    let layer = shared_layer(&registry);
    let image = ImageBuilder::new(Format::Oci).layer(layer).build(&registry.scratch()).expect("image");
    push(&registry, "team/app", "1.0", image).await;
    let proxy = Nginx::start_proxy_hiding_catalog(&registry.host_port());

    let err = repositories(&transport(), &proxy.url(), None).await.expect_err("the catalog is hidden");
    assert_eq!(err.reason, Reason::DiscoveryFailed, "{err}");
    assert_eq!(err.status, Some(404), "{err}");
    assert!(err.message.starts_with("the registry does not serve /v2/_catalog: "), "{}", err.message);
    assert!(err.message.contains(&format!("{}/v2/_catalog", proxy.host_port())), "{}", err.message);
    assert!(err.message.contains("HTTP status 404"), "{}", err.message);
    // The same frontend serves tags: only the catalog is hidden.
    assert_eq!(newest(&proxy.url(), "team/app", ".", 1).await, ["1.0"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frontend_without_its_registry_is_discovery_failed_with_the_status() {
    // nginx in front of a port nothing listens on answers 502.
    let port = common::process::free_port();
    let proxy = Nginx::start_proxy(&format!("127.0.0.1:{port}"));
    let err = newest_tags(&transport(), &proxy.url(), "team/app", &rule(".", 1), MAX_MANIFEST_BYTES)
        .await
        .expect_err("no registry behind the frontend");
    assert_eq!(err.reason, Reason::DiscoveryFailed, "{err}");
    assert_eq!(err.status, Some(502), "{err}");
    assert!(err.message.contains(&proxy.host_port()) && err.message.contains("team/app"), "{}", err.message);
    assert!(err.message.contains("http_status") && err.message.contains("502"), "{}", err.message);

    let err = repositories(&transport(), &proxy.url(), None).await.expect_err("no registry behind the frontend");
    assert_eq!((err.reason, err.status), (Reason::DiscoveryFailed, Some(502)), "{err}");
    assert!(!err.message.contains("does not serve"), "a 502 is an outage, not a disabled catalog: {}", err.message);
}

/// An image no other image of the test shares a blob with, created at `created`.
fn distinct_image(registry: &Registry, seed: u64, created: OffsetDateTime) -> Image {
    let dir = registry.scratch();
    let layers = (0..2).map(|part| {
        LayerBuilder::new()
            .file("srv/data.bin", GeneratedContent::random(seed * 10 + part, 40_000))
            .file("srv/seed", format!("{seed}/{part}").as_str())
            .write(&dir, LayerCompression::Gzip)
            .expect("layer")
    });
    ImageBuilder::new(Format::Oci).layers(layers).created(created).build(&dir).expect("image")
}

/// `pullprobe now -c probes.yaml -o json` with `probes` (YAML list entries) against `registry` named `local`:
/// the exit code, the results, and the whole output for messages.
fn now_with_probes(registry: &Registry, probes: &str) -> (i32, Vec<serde_json::Value>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("probes.yaml");
    let text = format!("registries:\n  - name: local\n    url: {}\nprobes:\n{probes}", registry.url());
    std::fs::write(&config, text).expect("writing probes.yaml");
    let (code, stdout, stderr) = run_pullprobe(&["now", "-c", config.to_str().expect("path"), "-o", "json"]);
    let output = format!("exit code {code}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.trim_start().starts_with('{'), "no JSON result\n{output}");
    (code, json_results(&stdout), output)
}

fn results_of<'a>(results: &'a [serde_json::Value], probe: &str) -> Vec<&'a serde_json::Value> {
    results.iter().filter(|r| r.str_field("probe") == Some(probe)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_in_a_tag_only_discovery_finds_is_caught_and_named() {
    let registry = Registry::start();
    // The release an operator listed by hand, and the builds after it that nobody listed.
    let stable = distinct_image(&registry, 1, datetime!(2026-11-01 6:00 UTC));
    let listed = push(&registry, "releng/mediawiki", "stable", stable.clone()).await;
    push(&registry, "releng/mediawiki", "2026-11-01-0600-a1", stable).await;
    let healthy = distinct_image(&registry, 2, datetime!(2026-11-22 6:00 UTC));
    let healthy = push(&registry, "releng/mediawiki", "2026-11-22-0600-b2", healthy).await;
    let broken = distinct_image(&registry, 3, datetime!(2026-11-23 6:00 UTC));
    let broken = push(&registry, "releng/mediawiki", "2026-11-23-0600-c3", broken).await;
    let victim = &broken.content.layers[1];
    registry.flip_byte(&victim.digest(), victim.blob.size / 2);

    let probes = format!(
        "  - name: listed\n    image: {}\n\
         \x20 - name: releases\n    registry: local\n    image: releng/mediawiki\n    \
         tags: {{match: '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}-', newest: 2}}\n",
        listed.reference
    );
    let (code, results, output) = now_with_probes(&registry, &probes);
    assert_eq!(code, 1, "a probe failed\n{output}");

    // The hand-listed image is fine: a fixed list misses the fault.
    let listed_results = results_of(&results, "listed");
    assert_eq!(listed_results.len(), 1, "{output}");
    assert!(listed_results[0].is_ok(), "{}", listed_results[0]);

    // The tags rule probes the two newest builds, each under the rule's name and its own image.
    let releases = results_of(&results, "releases");
    assert_eq!(releases.len(), 2, "{output}");
    let images: BTreeSet<&str> = releases.iter().filter_map(|r| r.str_field("image")).collect();
    assert_eq!(images, BTreeSet::from([healthy.reference.as_str(), broken.reference.as_str()]), "{output}");
    let failed = releases.iter().find(|r| r.str_field("image") == Some(broken.reference.as_str())).expect("result");
    assert_eq!(failed.reason(), Some("blob_digest_mismatch"), "{failed}");
    assert_eq!(failed.str_field("phase"), Some("blob"), "{failed}");
    assert!(failed.error_message().unwrap_or_default().contains(&victim.digest().to_string()), "{failed}");
    let ok = releases.iter().find(|r| r.str_field("image") == Some(healthy.reference.as_str())).expect("result");
    assert!(ok.is_ok(), "{ok}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_in_a_repository_only_the_catalog_finds_is_caught_and_named() {
    let registry = Registry::start();
    let listed = distinct_image(&registry, 11, datetime!(2026-11-20 6:00 UTC));
    let listed = push(&registry, "releng/base", "latest", listed).await;
    let tools = distinct_image(&registry, 12, datetime!(2026-11-21 6:00 UTC));
    let broken = push(&registry, "releng/tools", "latest", tools).await;
    let other = distinct_image(&registry, 13, datetime!(2026-11-21 6:00 UTC));
    push(&registry, "team/other", "latest", other).await;
    let victim = &broken.content.layers[0];
    registry.flip_byte(&victim.digest(), victim.blob.size / 2);

    let probes = format!(
        "  - name: listed\n    image: {}\n\
         \x20 - name: releng-images\n    registry: local\n    catalog: {{match: '^releng/', sample: 5}}\n",
        listed.reference
    );
    let (code, results, output) = now_with_probes(&registry, &probes);
    assert_eq!(code, 1, "a probe failed\n{output}");
    assert!(results_of(&results, "listed").iter().all(|r| r.is_ok()), "{output}");

    // Both releng repositories (2 ≤ sample 5), not team/other, under the rule's name.
    let sampled = results_of(&results, "releng-images");
    let images: BTreeSet<&str> = sampled.iter().filter_map(|r| r.str_field("image")).collect();
    assert_eq!(images, BTreeSet::from([listed.reference.as_str(), broken.reference.as_str()]), "{output}");
    for result in sampled {
        if result.str_field("image") == Some(broken.reference.as_str()) {
            assert_eq!(result.reason(), Some("blob_digest_mismatch"), "{result}");
            assert!(result.error_message().unwrap_or_default().contains(&victim.digest().to_string()), "{result}");
        } else {
            assert!(result.is_ok(), "{result}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_probe_through_a_frontend_hiding_the_catalog_is_discovery_failed() {
    let registry = Registry::start();
    let image = distinct_image(&registry, 21, datetime!(2026-11-20 6:00 UTC));
    push(&registry, "releng/base", "latest", image).await;
    let proxy = Nginx::start_proxy_hiding_catalog(&registry.host_port());

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("probes.yaml");
    let text = format!(
        "registries:\n  - name: behind-proxy\n    url: {}\n\
         probes:\n  - name: releng-images\n    registry: behind-proxy\n    catalog: {{match: '^releng/', sample: 5}}\n",
        proxy.url()
    );
    std::fs::write(&config, text).expect("writing probes.yaml");
    let (code, stdout, stderr) = run_pullprobe(&["now", "-c", config.to_str().expect("path"), "-o", "json"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let results = json_results(&stdout);
    assert_eq!(results.len(), 1, "{stdout}");
    let failed = &results[0];
    assert_eq!(failed.str_field("probe"), Some("releng-images"), "{failed}");
    assert_eq!(failed.reason(), Some("discovery_failed"), "{failed}");
    assert_eq!(failed.str_field("phase"), Some("discovery"), "{failed}");
    let error = failed.error_message().unwrap_or_default();
    assert!(error.contains("the registry does not serve /v2/_catalog") && error.contains("404"), "{error}");
}
