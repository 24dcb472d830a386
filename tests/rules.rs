//! The two paging paths against each other. A registry that refuses
//! connections makes a pull probe (severity `warning`) and a write-path canary
//! (severity `info`) fail; then:
//!
//! - direct alerting: `pullprobe now` pages a real Alertmanager, whose alerts
//!   are read back (`GET /api/v2/alerts`), and pushes to a real Pushgateway;
//! - the Prometheus rules of `contrib/prometheus/pullprobe.rules.yml`, run by
//!   `promtool test rules` on the series pullprobe itself exposed: `serve`'s
//!   `/metrics` (as a scrape labels them: `job`, `instance`) and the
//!   Pushgateway's `/metrics` (as `honor_labels: true` keeps them).
//!
//! On both series sets the rules must fire exactly the alerts Alertmanager
//! holds: the same names (`RegistryCanaryFailed` for the canary), severities,
//! identity labels and `reason` annotation. The rules' summary and description
//! are worded for Prometheus and checked by contrib's own promtool tests.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::monitoring::{Alertmanager, Pushgateway, Webhook, promtool};
use common::process::{free_port, run_with_timeout};
use common::{http_get, json_results, run_pullprobe};
use serde_json::{Value, json};

/// The alerts of the rule group that direct alerting replaces.
const ALERTS: [&str; 2] = ["RegistryPullFailed", "RegistryCanaryFailed"];
const SERVE_JOB: &str = "pullprobe";

/// probes.yaml for a registry at `registry` (nothing listens there) and the given `alerting:` block.
fn config(dir: &Path, name: &str, registry: &str, alerting: &str) -> PathBuf {
    let text = format!(
        "defaults:\n  interval: 2s\n  timeout: 5s\n  location: test-site\n\
         registries:\n  - name: down\n    url: http://{registry}\n\
         probes:\n\
         \x20 - name: golden\n    registry: down\n    image: team/app:1\n    severity: warning\n\
         \x20 - name: write-path\n    registry: down\n    canary: {{repository: pullprobe/canary}}\n    severity: info\n\
         {alerting}"
    );
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing probes.yaml");
    path
}

/// An alert reduced to what both paths must agree on: its labels without
/// `alertname` (promtool adds that itself), and the `reason` annotation.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    alertname: String,
    labels: BTreeMap<String, String>,
    reason: String,
}

fn direct_alerts(alertmanager: &Alertmanager) -> Vec<Expected> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alerts = alertmanager.alerts();
        if alerts.len() >= 2 {
            return alerts
                .iter()
                .map(|a| {
                    let mut labels: BTreeMap<String, String> =
                        serde_json::from_value(a["labels"].clone()).expect("alert labels");
                    let alertname = labels.remove("alertname").expect("alertname");
                    let reason = a["annotations"]["reason"].as_str().expect("reason annotation").to_string();
                    Expected { alertname, labels, reason }
                })
                .collect();
        }
        assert!(Instant::now() < deadline, "Alertmanager holds {alerts:#?}; log:\n{}", alertmanager.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One sample line of a text exposition: name, labels (empty values dropped,
/// as Prometheus ingests them), value.
fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let mut out = BTreeMap::new();
    let mut rest = labels;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        if !value.is_empty() {
            out.insert(key.to_string(), value);
        }
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some((name.to_string(), out, value))
}

/// promtool input series: every `pullprobe_` sample of `exposition`, with
/// `extra` labels (what a scrape adds), constant for an hour.
fn input_series(exposition: &str, extra: &[(&str, &str)]) -> Vec<Value> {
    let mut series = Vec::new();
    for line in exposition.lines().filter(|l| l.starts_with("pullprobe_")) {
        let (name, mut labels, value) = parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line}"));
        if value.is_nan() {
            continue;
        }
        for (k, v) in extra {
            labels.insert(k.to_string(), v.to_string());
        }
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={}", json!(v))).collect();
        series.push(json!({"series": format!("{name}{{{}}}", labels.join(",")), "values": format!("{value}x60")}));
    }
    assert!(!series.is_empty(), "no pullprobe_ series in:\n{exposition}");
    series
}

/// contrib's rules with the annotations both paths share (`reason`) only.
fn rules_for_comparison(dir: &Path) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus/pullprobe.rules.yml");
    let text = std::fs::read_to_string(&path).expect("contrib rules");
    let mut rules: Value = serde_saphyr::from_str(&text).expect("contrib rules parse");
    let mut found = Vec::new();
    for group in rules["groups"].as_array_mut().expect("groups") {
        for rule in group["rules"].as_array_mut().expect("rules") {
            if let Some(alert) = rule["alert"].as_str().filter(|a| ALERTS.contains(a)) {
                found.push(alert.to_string());
                let reason = rule["annotations"]["reason"].clone();
                rule["annotations"] = json!({"reason": reason});
            }
        }
    }
    assert_eq!(found, ALERTS, "contrib's rules have both failure alerts");
    let out = dir.join("pullprobe.rules.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&rules).expect("JSON")).expect("writing rules");
    out
}

/// `promtool test rules` of `series` against `rules`: at 10m, exactly `expected` fire.
fn promtool_test(dir: &Path, name: &str, rules: &Path, series: Vec<Value>, expected: &[Expected]) {
    let mut checks = Vec::new();
    for alertname in ALERTS {
        let alerts: Vec<Value> = expected
            .iter()
            .filter(|e| e.alertname == alertname)
            .map(|e| json!({"exp_labels": e.labels, "exp_annotations": {"reason": e.reason}}))
            .collect();
        checks.push(json!({"eval_time": "10m", "alertname": alertname, "exp_alerts": alerts}));
    }
    let test = json!({
        "rule_files": [rules.display().to_string()],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}],
    });
    let file = dir.join(format!("{name}.test.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(&test).expect("JSON")).expect("writing the test");
    let out = run_with_timeout(
        Command::new(promtool()).arg("test").arg("rules").arg(&file).current_dir(dir),
        Duration::from_secs(60),
    );
    assert_eq!(
        out.code,
        0,
        "{name}: the rules do not fire what direct alerting sent:\n{}{}\n--- test file:\n{}",
        out.stdout,
        out.stderr,
        std::fs::read_to_string(&file).unwrap_or_default()
    );
}

/// A running `pullprobe serve`, stopped (by its handle) when dropped.
struct Serve {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Serve {
    fn start(config: &Path, dir: &Path) -> Serve {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pullprobe"))
            .args(["serve", "-c"])
            .arg(config)
            .args(["--listen", &addr])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("starting pullprobe serve");
        Serve { child, addr, log }
    }

    /// `/metrics` once every probe has a `probe_success` series.
    fn metrics_after_a_round(&self, probes: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http_get(&self.addr, "/metrics") {
                let text = String::from_utf8_lossy(&r.body).to_string();
                let done = probes.iter().all(|p| {
                    text.lines()
                        .any(|l| l.starts_with("pullprobe_probe_success{") && l.contains(&format!("probe=\"{p}\"")))
                });
                if r.status == 200 && done {
                    return text;
                }
            }
            assert!(
                Instant::now() < deadline,
                "serve has no results for {probes:?}; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        common::process::stop_child(&mut self.child);
    }
}

/// `promtool check metrics` of an exposition: no errors, no lint.
fn assert_promtool_clean(text: &str) {
    use std::io::Write;
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}\n--- input:\n{text}");
}

#[test]
fn rules_fire_what_direct_alerting_sends_on_serve_and_pushgateway_series() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = format!("127.0.0.1:{}", free_port());

    // Direct alerting, and the push of the same run.
    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&webhook, false);
    let pushgateway = Pushgateway::start();
    let alerting = format!(
        "alerting:\n  alertmanager: {{urls: [{}]}}\n  pushgateway: {{url: {}}}\n",
        alertmanager.url(),
        pushgateway.url()
    );
    let direct = config(dir.path(), "direct.yaml", &registry, &alerting);
    let (code, stdout, stderr) = run_pullprobe(&["now", "-c", &direct.display().to_string(), "-o", "json"]);
    assert_eq!(code, 1, "both probes fail:\n{stdout}{stderr}");
    let results = json_results(&stdout);
    let kinds: Vec<&str> = results.iter().map(|r| r["kind"].as_str().unwrap_or_default()).collect();
    assert_eq!(kinds.len(), 2, "{stdout}");
    assert!(kinds.contains(&"pull") && kinds.contains(&"canary"), "{stdout}");
    assert!(results.iter().all(|r| r["ok"] == false && r["reason"].is_string()), "{stdout}");

    let mut expected = direct_alerts(&alertmanager);
    expected.sort_by(|a, b| a.alertname.cmp(&b.alertname));
    assert_eq!(expected.len(), 2, "{expected:#?}");
    // What the rules have to match is not the rules' old constant answer.
    let by_name = |name: &str| expected.iter().find(|e| e.alertname == name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(by_name("RegistryPullFailed").labels["severity"], "warning", "{expected:#?}");
    assert_eq!(by_name("RegistryCanaryFailed").labels["severity"], "info", "{expected:#?}");
    for alert in &expected {
        assert_eq!(alert.labels["location"], "test-site", "{alert:?}");
        let result = results.iter().find(|r| r["probe"] == alert.labels["probe"]).expect("a result per alert");
        assert_eq!(result["reason"], alert.reason.as_str(), "{alert:?}");
    }
    let rules = rules_for_comparison(dir.path());

    // The Pushgateway's exposition, as Prometheus scrapes it with honor_labels.
    let pushed = pushgateway.metrics_text();
    assert!(pushed.contains("pullprobe_probe_info{"), "the push carries pullprobe_probe_info:\n{pushed}");
    promtool_test(dir.path(), "pushgateway", &rules, input_series(&pushed, &[]), &expected);

    // serve's /metrics, as a scrape labels it; no alerting: the rules page.
    let quiet = config(dir.path(), "serve.yaml", &registry, "");
    let serve = Serve::start(&quiet, dir.path());
    let scraped = serve.metrics_after_a_round(&["golden", "write-path"]);
    assert_promtool_clean(&scraped);
    let series = input_series(&scraped, &[("job", SERVE_JOB), ("instance", &serve.addr)]);
    promtool_test(dir.path(), "serve", &rules, series, &expected);
}

#[test]
fn sample_lines_parse_as_prometheus_ingests_them() {
    let (name, labels, value) =
        parse_sample(r#"pullprobe_x{a="1",instance="",b="q\"uote",c="back\\slash"} 2.5"#).expect("a sample");
    assert_eq!(name, "pullprobe_x");
    assert_eq!(value, 2.5);
    let expected: BTreeMap<String, String> = [("a", "1"), ("b", "q\"uote"), ("c", "back\\slash")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(labels, expected, "an empty label is no label");
    assert_eq!(parse_sample("pullprobe_build 1").map(|s| s.1.len()), Some(0));
}
