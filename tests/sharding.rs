//! Shards of one config against real servers: a distribution registry, a
//! Pushgateway and an Alertmanager, with `pullprobe now` started as the pods of
//! an Indexed Job or a StatefulSet would be (their environment and host name).
//!
//! - every image is probed by exactly one shard, whatever tells the pod its index;
//! - going from N to N+1 shards moves only the images the new shard takes;
//! - a broken image pages once, without a shard label, and a change of the shard
//!   count neither resolves and re-fires its alert nor loses its history;
//! - shards beyond a smaller count leave no group behind after one run;
//! - a catalog sample with `after: 2` pages an image failing in two samples
//!   (each run's push used to replace the probe's series with this sample's).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::images;
use common::monitoring::{Alertmanager, Pushgateway, Webhook};
use common::serve::Serve;
use common::{Pushed, Registry, json_results, push, run_pullprobe_with};
use image_builder::{Format, Image, ImageBuilder, LayerBuilder, LayerCompression};
use pullprobe::shard::owner;
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// `fleet/app-0` … `fleet/app-{count-1}`, each `:latest`, pushed: the standard
/// base layer (shared, as images share bases) and an application layer of its own.
async fn fleet(registry: &Registry, count: usize) -> Vec<Pushed<Image>> {
    let dir = registry.scratch();
    let base = images::base_layer().write(&dir, LayerCompression::Gzip).expect("base layer");
    let mut pushed = Vec::new();
    for i in 0..count {
        let app =
            LayerBuilder::new().file("srv/app/name", format!("app-{i}\n").as_str()).write(&dir, LayerCompression::Gzip);
        let image = ImageBuilder::new(Format::Oci).layer(base.clone()).layer(app.expect("app layer")).build(&dir);
        pushed.push(push(registry, &format!("fleet/app-{i}"), "latest", image.expect("image")).await);
    }
    pushed
}

/// probes.yaml: the registry, a catalog probe over the fleet (all of it, or a
/// rotating sample), a listed probe, and `alerting`.
fn write_config(dir: &Path, registry: &Registry, sample: usize, alerting: &str) -> PathBuf {
    let path = dir.join("probes.yaml");
    let text = format!(
        "defaults:\n  location: test-site\n\
         registries:\n  - name: local\n    url: {url}\n\
         probes:\n\
         \x20 - name: fleet\n    registry: local\n    catalog: {{match: '^fleet/', sample: {sample}, tag: latest}}\n\
         \x20 - name: pinned\n    registry: local\n    image: fleet/app-0:latest\n\
         {alerting}",
        url = registry.url()
    );
    std::fs::write(&path, text).expect("writing probes.yaml");
    path
}

/// `pullprobe now -c CONFIG -o json EXTRA…` with `env`: (exit code, stdout, stderr).
fn now(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut args = vec!["now", "-c", config.to_str().expect("UTF-8 path"), "-o", "json"];
    args.extend_from_slice(extra);
    run_pullprobe_with(&args, env, None, RUN_TIMEOUT)
}

/// The (probe, image) of every result of a run that exited 0 or 1.
fn probed(run: &(i32, String, String)) -> BTreeSet<(String, String)> {
    let (code, stdout, stderr) = run;
    assert!(*code == 0 || *code == 1, "exit {code}:\n{stdout}\n{stderr}");
    json_results(stdout)
        .iter()
        .map(|r| (r["probe"].as_str().unwrap().to_string(), r["image"].as_str().unwrap().to_string()))
        .collect()
}

/// How a pod learns its shard index.
#[derive(Debug, Clone, Copy)]
enum Pod {
    /// An Indexed Job: `JOB_COMPLETION_INDEX`, the count on the command line.
    IndexedJob,
    /// The chart's StatefulSet: `PULLPROBE_SHARD_INDEX` and `PULLPROBE_SHARDS`.
    Labelled,
    /// A StatefulSet without the chart: the host name's ordinal.
    HostName,
}

/// Run shard `index` of `total` as `pod` would.
fn run_shard(config: &Path, pod: Pod, index: u32, total: u32, extra: &[&str]) -> (i32, String, String) {
    let (index, total_text) = (index.to_string(), total.to_string());
    let host = format!("pullprobe-prod-{index}");
    let mut args = vec!["--shard", "auto"];
    let env: Vec<(&str, &str)> = match pod {
        Pod::IndexedJob => {
            args.extend(["--shards", &total_text]);
            vec![("JOB_COMPLETION_INDEX", &index), ("HOSTNAME", "pullprobe-abcde")]
        }
        Pod::Labelled => vec![("PULLPROBE_SHARD_INDEX", &index), ("PULLPROBE_SHARDS", &total_text)],
        Pod::HostName => {
            args.extend(["--shards", &total_text]);
            vec![("HOSTNAME", &host)]
        }
    };
    args.extend_from_slice(extra);
    now(config, &args, &env)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_image_is_probed_by_exactly_one_shard() {
    let registry = Registry::start();
    let images = fleet(&registry, 9).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &registry, 100, "");
    let everything = probed(&now(&config, &[], &[]));
    assert_eq!(everything.len(), images.len() + 1, "the catalog's images and the listed one: {everything:?}");

    let mut by_count: BTreeMap<u32, BTreeMap<(String, String), u32>> = BTreeMap::new();
    for (total, pod) in [(3, Pod::IndexedJob), (3, Pod::HostName), (4, Pod::Labelled)] {
        let mut owners: BTreeMap<(String, String), u32> = BTreeMap::new();
        for index in 0..total {
            for unit in probed(&run_shard(&config, pod, index, total, &[])) {
                let earlier = owners.insert(unit.clone(), index);
                assert_eq!(earlier, None, "{pod:?} {total} shards: {unit:?} probed by shards {earlier:?} and {index}");
            }
        }
        let covered: BTreeSet<_> = owners.keys().cloned().collect();
        assert_eq!(covered, everything, "{pod:?}, {total} shards: every image, once");
        if let Some(same_count) = by_count.get(&total) {
            assert_eq!(same_count, &owners, "{total} shards: the same split whatever told the pods their index");
        }
        by_count.insert(total, owners);
    }
    // One more shard moves only the images the new shard takes.
    let (three, four) = (&by_count[&3], &by_count[&4]);
    let moved: Vec<_> = three.keys().filter(|unit| three[*unit] != four[*unit]).collect();
    assert!(moved.iter().all(|unit| four[*unit] == 3), "moved only to the new shard: {moved:?}");
    // Which ones is the hash's to say (its spread over many names is a unit test of
    // src/shard.rs): ten images are too few to bound how many move without flaking.
    for (count, owners) in [(3, three), (4, four)] {
        for ((_, image), index) in owners {
            assert_eq!(*index, owner(image, count), "{count} shards: {image} probed by the shard its hash names");
        }
    }

    // A shard that owns none of the images has nothing to do, and says so by exiting 0.
    let units: Vec<String> = everything.iter().map(|(_, image)| image.clone()).collect();
    let idle = (0..64u32).find(|&i| units.iter().all(|u| owner(u, 64) != i)).expect("an idle shard of 64");
    let idle = format!("{idle}/64");
    let (code, stdout, stderr) = now(&config, &["--shard", &idle], &[]);
    assert_eq!((code, json_results(&stdout).len()), (0, 0), "{stdout}\n{stderr}");
    let config = config.to_str().unwrap();
    let check = ["check", "--probe", "pinned", "--config", config, "--shard", &idle];
    let (code, stdout, _) = run_pullprobe_with(&check, &[], None, RUN_TIMEOUT);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with(&format!("PULLPROBE OK - shard {idle} owns none of these images")), "{stdout}");
}

/// The `image` labels of `family`'s series in a `/metrics` text.
fn images_in_metrics(text: &str, family: &str) -> BTreeSet<String> {
    let prefix = format!("{family}{{");
    text.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|labels| labels.split("image=\"").nth(1)?.split('"').next().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_shards_export_disjoint_series_and_their_shard() {
    let registry = Registry::start();
    let images = fleet(&registry, 6).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &registry, 100, "");
    let text = std::fs::read_to_string(&config).unwrap().replace("defaults:\n", "defaults:\n  interval: 2s\n");
    std::fs::write(&config, text).unwrap();

    // Two pods of a StatefulSet: the index from the host name, the count from the environment.
    let pods: Vec<Serve> = (0..2)
        .map(|index| {
            let env = [("HOSTNAME".to_string(), format!("pullprobe-{index}")), ("PULLPROBE_SHARDS".into(), "2".into())];
            Serve::start_with_args(&config, &["--shard", "auto"], &env)
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut owned = 0.0;
    for (index, pod) in pods.iter().enumerate() {
        let info = format!("pullprobe_shard_info{{location=\"test-site\",index=\"{index}\",total=\"2\"}} 1");
        let mine: BTreeSet<String> =
            images.iter().map(|i| i.reference.clone()).filter(|image| owner(image, 2) == index as u32).collect();
        // The listed probe's image is `fleet/app-0`: its shard owns it twice, once per probe.
        let units = mine.len() + usize::from(mine.contains(&images[0].reference));
        let series = |text: &str| text.lines().filter(|l| l.starts_with("pullprobe_probe_success{")).count();
        // Every unit this shard owns has a result, and nothing else does. Both probes of
        // `fleet/app-0` are waited for: the catalog's result alone names every image.
        let metrics = pod.wait_for(
            "/metrics",
            |text| {
                text.contains(&info)
                    && images_in_metrics(text, "pullprobe_probe_success") == mine
                    && series(text) == units
            },
            Duration::from_secs(30),
        );
        let images_line = metrics.lines().find(|l| l.starts_with("pullprobe_shard_images{")).expect("shard_images");
        let shard_images = images_line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
        assert_eq!(shard_images, units as f64, "shard {index}: {images_line}");
        owned += shard_images;
        assert!(seen.is_disjoint(&mine), "shard {index} probes images of another shard");
        seen.extend(mine);
    }
    assert_eq!(seen.len(), images.len(), "every image has a shard");
    // The catalog's images and the listed one: 7 units, split between the two.
    assert_eq!(owned, (images.len() + 1) as f64);
}

#[test]
fn a_shard_that_cannot_be_resolved_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probes.yaml");
    std::fs::write(&config, "probes:\n  - {name: p, image: 127.0.0.1:9/a:b}\n").unwrap();
    let config = config.to_str().unwrap();
    for (args, env, says) in [
        (vec!["--shard", "3/3"], vec![], "index 3 is not below the count 3"),
        (vec!["--shard", "auto"], vec![("HOSTNAME", "pullprobe-0")], "--shards N or PULLPROBE_SHARDS"),
        (vec!["--shard", "auto", "--shards", "2"], vec![("HOSTNAME", "laptop")], "does not end in -<ordinal>"),
        (vec!["--shard", "auto", "--shards", "2"], vec![("JOB_COMPLETION_INDEX", "two")], "JOB_COMPLETION_INDEX"),
        (vec!["--shards", "2"], vec![], "--shards needs --shard auto"),
    ] {
        let mut now_args = vec!["now", "-c", config];
        now_args.extend(&args);
        let (code, stdout, stderr) = run_pullprobe_with(&now_args, &env, None, RUN_TIMEOUT);
        assert_eq!(code, 2, "now {args:?}: {stdout}{stderr}");
        assert!(stderr.contains(says), "now {args:?}: {stderr}");

        let mut check_args = vec!["check", "--probe", "p", "--config", config];
        check_args.extend(&args);
        let (code, stdout, _) = run_pullprobe_with(&check_args, &env, None, RUN_TIMEOUT);
        assert_eq!(code, 3, "check {args:?}: {stdout}");
        assert!(stdout.starts_with("PULLPROBE UNKNOWN") && stdout.contains(says), "check {args:?}: {stdout}");
    }
    let (code, _, stderr) = run_pullprobe_with(&["serve", "-c", config, "--shard", "1/1"], &[], None, RUN_TIMEOUT);
    assert_eq!(code, 2, "serve: {stderr}");
    assert!(stderr.contains("not below the count"), "{stderr}");
}

/// Our Pushgateway groups, by kind: the images' groups (probe, image) and the shards' indexes.
fn groups(pushgateway: &Pushgateway) -> (Vec<(String, String)>, BTreeSet<String>) {
    let all = pushgateway.groups();
    let ours = all.iter().filter(|g| g["labels"]["job"] == "pullprobe-test");
    let (mut images, mut shards) = (Vec::new(), BTreeSet::new());
    for group in ours {
        let label = |name: &str| group["labels"][name].as_str().map(str::to_string);
        match (label("probe"), label("image"), label("index")) {
            (Some(probe), Some(image), None) => images.push((probe, image)),
            (None, None, Some(index)) => {
                shards.insert(index);
            }
            _ => panic!("an unexpected group: {group:#}"),
        }
    }
    images.sort();
    (images, shards)
}

/// The value of `family` for the series of `image` (any frontend) in the Pushgateway.
fn pushed_value(pushgateway: &Pushgateway, family: &str, image: &str) -> Option<f64> {
    let all = pushgateway.groups();
    let group = all.iter().find(|g| g["labels"]["probe"] == "fleet" && g["labels"]["image"] == image)?;
    let metric = group[format!("pullprobe_{family}")]["metrics"].as_array()?.first()?.clone();
    metric["value"].as_str()?.parse().ok()
}

/// A Pushgateway, an Alertmanager (notifying a webhook) and the `alerting:` block for them.
struct Paging {
    pushgateway: Pushgateway,
    hook: Webhook,
    alertmanager: Alertmanager,
    alerting: String,
}

impl Paging {
    /// Paging after `after` failed runs.
    fn start(after: u32) -> Paging {
        let pushgateway = Pushgateway::start();
        let hook = Webhook::start();
        let alertmanager = Alertmanager::start(&hook, false);
        let alerting = format!(
            "alerting:\n  pushgateway: {{url: {}, job: pullprobe-test}}\n\
             \x20 alertmanager: {{urls: [{}], resolve_timeout: 10m}}\n  after: {after}\n",
            pushgateway.url(),
            alertmanager.url()
        );
        Paging { pushgateway, hook, alertmanager, alerting }
    }
}

fn firing(alertmanager: &Alertmanager) -> Vec<Value> {
    alertmanager.alerts().into_iter().filter(|a| a["status"]["state"] == "active").collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_image_pages_once_and_resharding_neither_resolves_it_nor_loses_its_history() {
    let registry = Registry::start();
    // An image that changes hands between 3 and 4 shards, and is not the listed one. Which
    // images move depends on the registry's port, part of every name: the fleet grows to
    // at least eight until one of them does (each moves with a chance of one in four).
    let moves = |i: usize| {
        let reference = registry.reference(&format!("fleet/app-{i}"), "latest");
        owner(&reference, 3) != owner(&reference, 4)
    };
    let count = (1..).find(|&i| moves(i)).expect("an image that moves from 3 to 4 shards").max(7) + 1;
    let images = fleet(&registry, count).await;
    let broken = images[1..].iter().find(|i| owner(&i.reference, 3) != owner(&i.reference, 4)).unwrap();
    registry.flip_byte(&broken.content.layers[1].digest(), 10);
    let Paging { pushgateway, hook, alertmanager, alerting } = Paging::start(1);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &registry, 100, &alerting);

    // Three shards, as an Indexed Job runs them.
    let mut failed_on = Vec::new();
    for index in 0..3 {
        let run = run_shard(&config, Pod::IndexedJob, index, 3, &["--no-fail"]);
        let failures = json_results(&run.1).iter().filter(|r| r["ok"] == false).count();
        if failures > 0 {
            failed_on.push(index);
        }
        assert_eq!(run.0, 0, "shard {index}: a failure Alertmanager has exits 0 with --no-fail:\n{}\n{}", run.1, run.2);
    }
    assert_eq!(failed_on, [owner(&broken.reference, 3)], "only the owner probes the broken image");
    let alerts = firing(&alertmanager);
    assert_eq!(alerts.len(), 1, "one page: {alerts:#?}");
    let alert = &alerts[0];
    assert_eq!(alert["labels"]["image"], broken.reference.as_str());
    for label in ["shard", "index", "total"] {
        assert!(alert["labels"].get(label).is_none(), "no {label} label: the identity does not depend on the split");
    }
    let started = alert["startsAt"].clone();
    let (image_groups, shard_groups) = groups(&pushgateway);
    assert_eq!(image_groups.len(), images.len() + 1, "one group per image: {image_groups:?}");
    assert_eq!(shard_groups, BTreeSet::from(["0".into(), "1".into(), "2".into()]));
    assert_eq!(pushed_value(&pushgateway, "probe_consecutive_failures", &broken.reference), Some(1.0));

    // Four shards: the image has a new owner. Whichever shard runs first, the alert stays
    // firing from the same start, and the history carries over.
    for index in 0..4 {
        let run = run_shard(&config, Pod::Labelled, index, 4, &["--no-fail"]);
        assert_eq!(run.0, 0, "shard {index} of 4:\n{}\n{}", run.1, run.2);
        let alerts = firing(&alertmanager);
        assert_eq!(alerts.len(), 1, "after shard {index} of 4: {alerts:#?}");
        assert_eq!(alerts[0]["startsAt"], started, "after shard {index} of 4: not resolved and fired again");
    }
    assert_eq!(pushed_value(&pushgateway, "probe_consecutive_failures", &broken.reference), Some(2.0));
    let (image_groups, shard_groups) = groups(&pushgateway);
    assert_eq!(image_groups.len(), images.len() + 1, "still one group per image");
    assert_eq!(shard_groups.len(), 4);

    // Back to two shards: after one run of each, no group of shards 2 and 3 is left.
    for index in 0..2 {
        let run = run_shard(&config, Pod::HostName, index, 2, &["--no-fail"]);
        assert_eq!(run.0, 0, "shard {index} of 2:\n{}\n{}", run.1, run.2);
    }
    assert_eq!(groups(&pushgateway).1, BTreeSet::from(["0".into(), "1".into()]));
    assert_eq!(firing(&alertmanager)[0]["startsAt"], started);
    std::thread::sleep(Duration::from_secs(2));
    let resolved: Vec<Value> = hook.alerts().into_iter().filter(|a| a["status"] == "resolved").collect();
    assert!(resolved.is_empty(), "nothing was resolved on the way: {resolved:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_sample_pages_an_image_failing_in_two_samples() {
    let registry = Registry::start();
    let images = fleet(&registry, 3).await;
    let broken = &images[2];
    registry.flip_byte(&broken.content.layers[1].digest(), 10);
    let Paging { pushgateway, alertmanager, alerting, .. } = Paging::start(2);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &registry, 1, &alerting);

    // One of three repositories per run: the broken one in rounds 2 and 5.
    let mut samples_of_broken = 0;
    for round in 0..6 {
        let run = now(&config, &["--probe", "fleet", "--round", &round.to_string()], &[]);
        let sampled = probed(&run);
        assert_eq!(sampled.len(), 1, "round {round}: {sampled:?}");
        let paged = firing(&alertmanager).iter().any(|a| a["labels"]["image"] == broken.reference.as_str());
        if sampled.contains(&("fleet".to_string(), broken.reference.clone())) {
            samples_of_broken += 1;
        }
        assert_eq!(paged, samples_of_broken >= 2, "round {round}, {samples_of_broken} failing sample(s): {sampled:?}");
    }
    assert_eq!(samples_of_broken, 2);
    let firing = firing(&alertmanager);
    assert_eq!(firing.len(), 1, "{firing:#?}");
    // Every repository keeps its own series between samples.
    assert_eq!(groups(&pushgateway).0.len(), 3);
    assert_eq!(pushed_value(&pushgateway, "probe_consecutive_failures", &broken.reference), Some(2.0));
}
