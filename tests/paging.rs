//! Paging from `pullprobe now` (CronJob mode) through real servers: two
//! Alertmanager replicas (no clustering) with webhook receivers run by the
//! test, and a Pushgateway. Faults are injected into a real registry's storage.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::monitoring::{AM_PASSWORD, Alertmanager, Pushgateway, Webhook};
use common::*;
use serde_json::Value;

const PASSWORD_ENV: &str = "PULLPROBE_TEST_AM_PASSWORD";
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(20);

fn write_config(dir: &Path, image: &str, alerting: &str) -> PathBuf {
    let path = dir.join("probes.yaml");
    let text = format!(
        "defaults:\n  location: test-site\n\
         probes:\n  - name: golden\n    image: {image}\n    severity: warning\n\
         alerting:\n{alerting}"
    );
    std::fs::write(&path, text).expect("writing probes.yaml");
    path
}

/// `pullprobe now -c CONFIG -o json EXTRA…` with the Alertmanager password in the environment.
fn now(config: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["now", "-c", config.to_str().unwrap(), "-o", "json"];
    args.extend_from_slice(extra);
    run_pullprobe_with(&args, &[(PASSWORD_ENV, AM_PASSWORD)], None, RUN_TIMEOUT)
}

fn reason_of(stdout: &str) -> Option<String> {
    let results = json_results(stdout);
    assert_eq!(results.len(), 1, "{stdout}");
    results[0].reason().map(str::to_string)
}

fn label<'a>(alert: &'a Value, name: &str) -> &'a str {
    alert["labels"][name].as_str().unwrap_or_default()
}

fn annotation<'a>(alert: &'a Value, name: &str) -> &'a str {
    alert["annotations"][name].as_str().unwrap_or_default()
}

/// The identities (label sets) of the firing alerts a webhook was notified of.
fn firing_identities(hook: &Webhook) -> BTreeSet<String> {
    hook.alerts().iter().filter(|a| a["status"] == "firing").map(|a| a["labels"].to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn alertmanager_replicas_fire_update_survive_a_down_replica_and_resolve() {
    let registry = Registry::start();
    let image = push_small_image(&registry, "golden/base", "v1").await;
    let layer = image.content.layers[1].digest();
    let blob_path = registry.blob_data_path(&layer);
    let original = std::fs::read(&blob_path).unwrap();

    let hooks = [Webhook::start(), Webhook::start()];
    // Replica 0 wants basic auth; replica 1 takes anything.
    let mut replicas = [Alertmanager::start(&hooks[0], true), Alertmanager::start(&hooks[1], false)];
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &image.reference,
        &format!(
            "  alertmanager:\n    urls: [{}, {}]\n    labels: {{team: sre}}\n\
             \x20   runbook_url: https://wiki.example.org/pullprobe\n    resolve_timeout: 10m\n\
             \x20   auth: {{username: pullprobe, password_env: {PASSWORD_ENV}}}\n",
            replicas[0].url(),
            replicas[1].url()
        ),
    );

    // Healthy: exit 0, nothing fires.
    let (code, stdout, stderr) = now(&config, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(replicas.iter().all(|r| r.alerts().is_empty()));

    // A blob fault: both replicas' webhooks get one firing alert, labels and annotations as DESIGN.md.
    registry.flip_byte(&layer, 100);
    let (code, stdout, stderr) = now(&config, &[]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert_eq!(reason_of(&stdout).as_deref(), Some("blob_digest_mismatch"));
    let mut failing_since = String::new();
    for hook in &hooks {
        let alert = hook.wait_for_alert("firing alert", NOTIFY_TIMEOUT, |a| a["status"] == "firing");
        let keys: Vec<&str> = alert["labels"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["alertname", "frontend", "image", "location", "platform", "probe", "registry", "severity", "team"],
            "identity labels, severity and static labels only (no reason): {alert:#}"
        );
        assert_eq!(label(&alert, "alertname"), "RegistryPullFailed");
        assert_eq!(label(&alert, "probe"), "golden");
        assert_eq!(label(&alert, "image"), image.reference);
        assert_eq!(label(&alert, "registry"), registry.host_port());
        assert_eq!(label(&alert, "frontend"), registry.host_port());
        assert_eq!(label(&alert, "platform"), "linux/amd64");
        assert_eq!(label(&alert, "location"), "test-site");
        assert_eq!(label(&alert, "severity"), "warning");
        assert_eq!(label(&alert, "team"), "sre");
        assert_eq!(annotation(&alert, "reason"), "blob_digest_mismatch");
        assert_eq!(
            annotation(&alert, "summary"),
            format!("golden {}: blob_digest_mismatch layer {layer}", registry.host_port())
        );
        let description = annotation(&alert, "description");
        assert!(description.contains(&layer.to_string()) && description.contains("blob_digest_mismatch"));
        assert_eq!(annotation(&alert, "runbook_url"), "https://wiki.example.org/pullprobe");
        failing_since = annotation(&alert, "failing_since").to_string();
        assert!(failing_since.starts_with("20") && failing_since.ends_with('Z'), "{failing_since}");
        assert_eq!(firing_identities(hook).len(), 1);
    }

    // Another fault, another reason: still one alert per replica, its reason updated,
    // failing_since carried over from the first failing run (read back from Alertmanager).
    registry.flip_byte(&layer, 100);
    registry.delete_blob(&layer);
    let (code, stdout, stderr) = now(&config, &[]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let second = reason_of(&stdout).expect("a failure");
    assert_ne!(second, "blob_digest_mismatch");
    for (replica, hook) in replicas.iter().zip(&hooks) {
        let alerts = replica.alerts();
        assert_eq!(alerts.len(), 1, "one alert for one identity: {alerts:#?}");
        assert_eq!(annotation(&alerts[0], "reason"), second);
        assert_eq!(annotation(&alerts[0], "failing_since"), failing_since);
        let updated = hook.wait_for_alert("the updated reason", NOTIFY_TIMEOUT, |a| {
            a["status"] == "firing" && a["annotations"]["reason"] == second.as_str()
        });
        assert_eq!(annotation(&updated, "failing_since"), failing_since);
        assert_eq!(firing_identities(hook).len(), 1, "still one alert");
    }

    // --no-fail: the failure is in Alertmanager, so the CronJob does not fail.
    let (code, stdout, stderr) = now(&config, &["--no-fail"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");

    // One replica down: the other still gets the alert, at once; `now` exits 3.
    replicas[1].stop();
    let ends_before = replicas[0].alerts()[0]["endsAt"].as_str().unwrap().to_string();
    let started = Instant::now();
    let run = {
        let config = config.clone();
        std::thread::spawn(move || {
            let out = now(&config, &["--no-fail"]);
            (out, started.elapsed())
        })
    };
    let seen_after = loop {
        let alerts = replicas[0].alerts();
        if alerts.len() == 1 && alerts[0]["endsAt"].as_str().unwrap() != ends_before {
            break started.elapsed();
        }
        assert!(started.elapsed() < RUN_TIMEOUT, "replica 0 never got the update");
        std::thread::sleep(Duration::from_millis(50));
    };
    let ((code, stdout, stderr), finished_after) = run.join().unwrap();
    assert_eq!(code, 3, "delivered to one replica only:\n{stdout}\n{stderr}");
    assert!(stderr.contains(&replicas[1].url()), "the failed replica is named: {stderr}");
    assert!(
        seen_after + Duration::from_secs(3) < finished_after,
        "the live replica got the alert ({seen_after:?}) while the run still retried the dead one ({finished_after:?})"
    );
    // Without --no-fail a failed probe is exit 1, whatever the delivery.
    let (code, _, _) = now(&config, &[]);
    assert_eq!(code, 1);

    // Repaired: a resolved notification arrives; the probe passes, the dead replica makes it exit 3.
    std::fs::write(&blob_path, &original).unwrap();
    let (code, stdout, stderr) = now(&config, &[]);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert_eq!(reason_of(&stdout), None);
    let resolved = hooks[0].wait_for_alert("resolved alert", NOTIFY_TIMEOUT, |a| a["status"] == "resolved");
    assert_eq!(label(&resolved, "probe"), "golden");
    assert_eq!(label(&resolved, "frontend"), registry.host_port());
    assert!(replicas[0].alerts().is_empty(), "no active alert after the resolve");

    // Secrets never reach an alert.
    for hook in &hooks {
        let all = serde_json::to_string(&hook.notifications()).unwrap();
        assert!(!all.contains(AM_PASSWORD), "the Alertmanager password leaked into a notification");
    }
}

/// The value of the single series of `family` in a Pushgateway group, and the family's type.
fn series(group: &Value, family: &str) -> Option<(String, f64, Value)> {
    let f = group.get(format!("pullprobe_{family}"))?;
    let metric = f["metrics"].as_array()?.first()?.clone();
    let value = metric["value"].as_str()?.parse().ok()?;
    Some((f["type"].as_str()?.to_string(), value, metric["labels"].clone()))
}

#[tokio::test(flavor = "multi_thread")]
async fn pushgateway_keeps_last_success_counts_failures_and_drives_after() {
    let registry = Registry::start();
    let image = push_small_image(&registry, "golden/pushed", "v1").await;
    let layer = image.content.layers[1].digest();
    let pushgateway = Pushgateway::start();
    let hook = Webhook::start();
    let alertmanager = Alertmanager::start(&hook, true);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &image.reference,
        &format!(
            "  pushgateway: {{url: {}, job: pullprobe-test}}\n\
             \x20 alertmanager:\n    urls: [{}]\n    resolve_timeout: 10m\n\
             \x20   auth: {{username: pullprobe, password_env: {PASSWORD_ENV}}}\n\
             \x20 after: 2\n",
            pushgateway.url(),
            alertmanager.url()
        ),
    );
    // One group for the image's series, one for the prober's own (its shard).
    let group = || {
        let groups = pushgateway.groups();
        let ours: Vec<&Value> = groups.iter().filter(|g| g["labels"]["job"] == "pullprobe-test").collect();
        assert_eq!(ours.len(), 2, "two groups: {groups:#?}");
        let shard = ours.iter().find(|g| g["labels"].get("probe").is_none()).expect("the shard's group");
        assert_eq!(shard["labels"]["index"], "0");
        let (_, value, labels) = series(shard, "shard_info").expect("shard_info");
        assert_eq!((value, &labels["total"]), (1.0, &Value::from("1")));
        let images: Vec<&&Value> = ours.iter().filter(|g| g["labels"].get("probe").is_some()).collect();
        assert_eq!(images[0]["labels"]["probe"], "golden");
        assert_eq!(images[0]["labels"]["image"], image.reference.as_str());
        assert_eq!(images[0]["labels"]["location"], "test-site");
        (*images[0]).clone()
    };

    // A passing run sets the last success.
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let (code, stdout, stderr) = now(&config, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let g = group();
    let (kind, success, labels) = series(&g, "probe_success").expect("probe_success");
    assert_eq!((kind.as_str(), success), ("GAUGE", 1.0));
    for (k, v) in [("probe", "golden"), ("platform", "linux/amd64"), ("location", "test-site")] {
        assert_eq!(labels[k], v, "{labels}");
    }
    assert_eq!(labels["image"], image.reference.as_str());
    assert_eq!(labels["frontend"], registry.host_port().as_str());
    let (_, last_success, _) = series(&g, "probe_last_success_timestamp_seconds").expect("last success");
    assert!(last_success >= before - 2.0 && last_success < before + 60.0, "{last_success} vs {before}");
    assert_eq!(series(&g, "probe_consecutive_failures").unwrap().1, 0.0);
    for (name, family) in g.as_object().unwrap() {
        if name.starts_with("pullprobe_") {
            assert_eq!(family["type"], "GAUGE", "{name} is pushed as a gauge");
        }
    }
    assert!(series(&g, "build_info").is_some());

    // A failing run: success 0, the earlier last success kept, one failure counted.
    // alerting.after is 2, so nothing pages yet; with --no-fail that is not a job failure.
    registry.flip_byte(&layer, 100);
    let (code, stdout, stderr) = now(&config, &["--no-fail"]);
    assert_eq!(code, 0, "held below alerting.after with Alertmanager reachable:\n{stdout}\n{stderr}");
    let g = group();
    assert_eq!(series(&g, "probe_success").unwrap().1, 0.0);
    assert_eq!(series(&g, "probe_last_success_timestamp_seconds").unwrap().1, last_success, "kept");
    assert_eq!(series(&g, "probe_consecutive_failures").unwrap().1, 1.0);
    let (kind, value, labels) = series(&g, "probe_last_failure_info").expect("failure info");
    assert_eq!((kind.as_str(), value), ("GAUGE", 1.0));
    assert_eq!(labels["reason"], "blob_digest_mismatch");
    let (_, first_failure, _) = series(&g, "probe_failing_since_timestamp_seconds").expect("failing since");
    assert!(alertmanager.alerts().is_empty(), "one failure does not page with after: 2");

    // The second failing run in a row pages, failing since the first (read back from the Pushgateway).
    let (code, stdout, stderr) = now(&config, &[]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let g = group();
    assert_eq!(series(&g, "probe_consecutive_failures").unwrap().1, 2.0);
    assert_eq!(series(&g, "probe_last_success_timestamp_seconds").unwrap().1, last_success, "still kept");
    assert_eq!(series(&g, "probe_failing_since_timestamp_seconds").unwrap().1, first_failure);
    let alerts = alertmanager.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let since = time::OffsetDateTime::parse(
        annotation(&alerts[0], "failing_since"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!((since.unix_timestamp() as f64 - first_failure).abs() < 1.0, "{since} vs {first_failure}");
    hook.wait_for_alert("firing alert", NOTIFY_TIMEOUT, |a| a["status"] == "firing");

    // Passing again: the count resets, the last success moves on, the alert resolves.
    registry.flip_byte(&layer, 100);
    let (code, stdout, stderr) = now(&config, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let g = group();
    assert_eq!(series(&g, "probe_consecutive_failures").unwrap().1, 0.0);
    assert!(series(&g, "probe_last_success_timestamp_seconds").unwrap().1 > last_success);
    assert!(series(&g, "probe_failing_since_timestamp_seconds").is_none(), "no streak, no series");
    let (_, value, labels) = series(&g, "probe_last_failure_info").unwrap();
    assert_eq!((value, labels["reason"].as_str()), (0.0, Some("blob_digest_mismatch")));
    hook.wait_for_alert("resolved alert", NOTIFY_TIMEOUT, |a| a["status"] == "resolved");

    // What Prometheus scrapes keeps the types; secrets never reach a pushed metric.
    let text = pushgateway.metrics_text();
    assert!(text.contains("# TYPE pullprobe_probe_success gauge"), "{text}");
    assert!(text.contains("# TYPE pullprobe_probe_consecutive_failures gauge"), "{text}");
    assert!(!text.contains(AM_PASSWORD));
    assert!(!serde_json::to_string(&pushgateway.groups()).unwrap().contains(AM_PASSWORD));

    // The Pushgateway down: the run still pages (as the count is unknown) and exits 3 with --no-fail.
    drop(pushgateway);
    registry.flip_byte(&layer, 100);
    let (code, stdout, stderr) = now(&config, &["--no-fail"]);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(stderr.contains("read back"), "{stderr}");
    let alerts = alertmanager.alerts();
    assert_eq!(alerts.len(), 1, "a failure with an unknown count pages at once: {alerts:#?}");
}
