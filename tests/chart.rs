//! The Helm chart (`charts/pullprobe`) and the container image, checked by the
//! real tools and the real binary:
//!
//! - `helm lint` and `helm template` for both modes and every example values
//!   file; every rendered manifest validated against the Kubernetes 1.31
//!   schemas by `kubernetes-validate`; the PrometheusRule by `promtool`.
//! - The rendered CronJob run the way a kubelet runs it (its volumes from the
//!   rendered ConfigMap, its command, args and env) against a real registry:
//!   it passes, and fails once a layer is corrupted — with direct alerting,
//!   the failure pages Alertmanager and the Job succeeds (`--no-fail`). The
//!   rendered Deployment's `serve` answers where its liveness and readiness
//!   probes ask.
//! - Bad values fail `helm template` with the schema's message.
//! - The engine-less image (`scripts/build-image`) pushed to a real registry
//!   and verified by `pullprobe now`, then unpacked by `umoci` and run in a
//!   chroot as the chart runs it: user 65532, read-only root filesystem.
//!
//! helm and kubernetes-validate come from `scripts/install-deps`; a missing
//! tool fails the test with that hint.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::chart::{
    KUBERNETES_VERSION, Rendered, Values, chart_dir, example_files, helm, repo_path, template, validate_manifests,
};
use common::monitoring::{Alertmanager, Webhook, promtool};
use common::process::{CommandOutput, require_binary, run_with_timeout};
use common::skopeo;
use common::{Registry, ResultJson, json_results, push_small_image, run_pullprobe, run_pullprobe_with};
use serde_json::{Value, json};

/// Where the chart runs the binary; the image puts it there.
const BINARY_IN_IMAGE: &str = "/usr/local/bin/pullprobe";
/// The user the chart runs as; the image's `User`.
const NONROOT: u64 = 65532;

/// The pod runs as the chart promises: non-root, read-only root filesystem,
/// no privilege escalation, no capabilities, RuntimeDefault seccomp, sized.
fn assert_secure_pod(rendered: &Rendered, name: &str) {
    let pod = rendered.pod_spec();
    let container = rendered.container();
    let pod_security = &pod["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true, "{name}");
    assert_eq!(pod_security["runAsUser"], NONROOT, "{name}");
    assert_eq!(pod_security["seccompProfile"]["type"], "RuntimeDefault", "{name}");
    // The service account token is mounted only for `kubernetes:` discovery, which reads the API with it.
    let discovery = rendered.find("ServiceAccount").is_some();
    assert_eq!(pod["automountServiceAccountToken"], discovery, "{name}");
    assert_eq!(pod["serviceAccountName"].is_string(), discovery, "{name}");
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
    let resources = &container["resources"];
    assert_eq!(resources["requests"], json!({"cpu": "100m", "memory": "64Mi"}), "{name}");
    assert_eq!(resources["limits"], json!({"cpu": "1", "memory": "256Mi"}), "{name}");
    assert_eq!(container["command"], json!([BINARY_IN_IMAGE]), "{name}");
    let template_annotations = match rendered.find("CronJob") {
        Some(c) => &c["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"],
        None => &rendered.get("Deployment")["spec"]["template"]["metadata"]["annotations"],
    };
    assert!(template_annotations["checksum/config"].as_str().is_some_and(|s| s.len() == 64), "{name}: checksum");
}

/// The rule groups of contrib/prometheus/pullprobe.rules.yml.
fn contrib_rule_groups() -> Vec<Value> {
    let text = std::fs::read_to_string(repo_path("contrib/prometheus/pullprobe.rules.yml")).expect("contrib rules");
    let rules: Value = serde_saphyr::from_str(&text).expect("contrib rules parse");
    rules["groups"].as_array().expect("groups").clone()
}

/// The PrometheusRule carries the project's rules, without the probe-failing
/// group where pullprobe pages directly, and `promtool check rules` accepts them.
fn check_prometheus_rule(rule: &Value, direct_alerting: bool, dir: &Path, name: &str) {
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    let expected: Vec<Value> = contrib_rule_groups()
        .into_iter()
        .filter(|g| !(direct_alerting && g["name"] == "pullprobe-without-direct-alerting"))
        .collect();
    assert_eq!(groups, &expected, "{name}: the PrometheusRule's groups differ from contrib/prometheus");
    let file = dir.join(format!("{name}.rules.json"));
    std::fs::write(&file, serde_json::to_vec(&json!({"groups": groups})).expect("JSON")).expect("writing rules");
    let mut command = Command::new(promtool());
    command.arg("check").arg("rules").arg(&file);
    let out = run_with_timeout(&mut command, Duration::from_secs(60));
    assert_eq!(out.code, 0, "{name}: promtool check rules:\n{}{}", out.stdout, out.stderr);
}

/// `helm lint --strict` with the values file at `path`, then its rendering:
/// every manifest validated, the pod secure, the mode's wiring, the
/// PrometheusRule checked, and the rendered probes.yaml accepted by
/// `pullprobe validate`. Returns the mode it rendered.
fn check_values_file(path: &Path, dir: &Path) -> &'static str {
    let name = path.file_stem().and_then(|s| s.to_str()).expect("values file name").to_string();
    let values = Values::file(path);
    let lint = lint(&values);
    assert_eq!(lint.code, 0, "helm lint {name}:\n{}{}", lint.stdout, lint.stderr);

    let rendered = Rendered::of(&values);
    let unchecked = validate_manifests(&rendered, dir, &name);
    assert_secure_pod(&rendered, &name);
    let config = rendered.config();
    let direct_alerting = !config["alerting"]["alertmanager"].is_null();

    let mode = if rendered.find("CronJob").is_some() { "cronjob" } else { "deployment" };
    if mode == "cronjob" {
        let cronjob = &rendered.get("CronJob")["spec"];
        assert_eq!(cronjob["concurrencyPolicy"], "Forbid", "{name}");
        assert!(cronjob["startingDeadlineSeconds"].as_u64().is_some_and(|s| s >= 10), "{name}");
        assert!(cronjob["successfulJobsHistoryLimit"].is_u64() && cronjob["failedJobsHistoryLimit"].is_u64());
        let job = &cronjob["jobTemplate"]["spec"];
        assert_eq!(job["backoffLimit"], 0, "{name}");
        assert_eq!(job["template"]["spec"]["restartPolicy"], "Never", "{name}");
        assert!(job["activeDeadlineSeconds"].as_u64().is_some_and(|s| s > 120), "{name}");
        assert_eq!(rendered.args().contains(&"--no-fail"), direct_alerting, "{name}: --no-fail iff direct alerting");
        assert_eq!(
            !config["alerting"]["alertmanager"]["resolve_timeout"].is_null(),
            direct_alerting,
            "{name}: resolve_timeout"
        );
        assert!(config["defaults"]["interval"].is_string(), "{name}: the schedule's interval");
        assert!(rendered.find("Service").is_none() && rendered.find("Deployment").is_none(), "{name}");
    } else {
        let container = rendered.container();
        let port = container["ports"][0]["containerPort"].as_u64().expect("container port");
        assert_eq!(rendered.args()[..2], ["serve", "--config"], "{name}");
        assert_eq!(rendered.args().last(), Some(&format!("0.0.0.0:{port}").as_str()), "{name}");
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(container[probe]["httpGet"], json!({"path": "/healthz", "port": "http"}), "{name} {probe}");
        }
        assert_eq!(container["ports"][0]["name"], "http");
        let service = rendered.get("Service");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "http", "{name}");
        assert_eq!(service["spec"]["selector"], rendered.get("Deployment")["spec"]["selector"]["matchLabels"]);
        if let Some(monitor) = rendered.find("ServiceMonitor") {
            assert_eq!(monitor["spec"]["endpoints"][0]["port"], service["spec"]["ports"][0]["name"]);
            assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
            assert_eq!(monitor["spec"]["selector"]["matchLabels"], service["spec"]["selector"]);
        }
    }
    for kind in &unchecked {
        match kind.as_str() {
            "PrometheusRule" => check_prometheus_rule(rendered.get("PrometheusRule"), direct_alerting, dir, &name),
            "ServiceMonitor" => {}
            other => panic!("{name}: {other} is validated by nothing"),
        }
    }
    check_credentials_wiring(&rendered, &name);

    // The binary accepts the probes.yaml the chart rendered.
    let file = dir.join(format!("{name}.probes.yaml"));
    std::fs::write(&file, rendered.probes_yaml()).expect("writing probes.yaml");
    let (code, stdout, stderr) = run_pullprobe(&["validate", "--no-files", "-c", &file.display().to_string()]);
    assert_eq!(code, 0, "pullprobe validate of {name}'s probes.yaml:\n{stdout}{stderr}\n{}", rendered.probes_yaml());
    mode
}

/// `helm lint --strict` of the chart with `values` (none: the chart's defaults).
fn lint(values: &Values) -> CommandOutput {
    let chart = chart_dir().display().to_string();
    let mut args = vec!["lint", &chart, "--strict", "--kube-version", KUBERNETES_VERSION];
    let extra = values.args();
    args.extend(extra.iter().map(String::as_str));
    helm(&args)
}

#[test]
fn every_example_lints_renders_and_validates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let modes: Vec<&str> = example_files("").iter().map(|example| check_values_file(example, dir.path())).collect();
    assert!(modes.contains(&"cronjob") && modes.contains(&"deployment"), "examples cover both modes: {modes:?}");
}

/// `ci/*-values.yaml`: what chart-testing (`ct lint`, `ct install`) runs the chart with.
fn ci_values_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("charts/pullprobe/ci")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("-values.yaml")))
        .collect();
    files.sort();
    files
}

/// The chart-testing convention: the chart lints with its default values and
/// with each `ci/*-values.yaml`, and those render and validate like the
/// examples, in both modes. What the defaults lack, probes, stops a real
/// install (and `helm template`, which renders as one) with a message that
/// says what to set, not with a schema error.
#[test]
fn default_values_lint_and_ci_values_render_in_both_modes() {
    let lint = lint(&Values::default());
    assert_eq!(lint.code, 0, "helm lint with the default values:\n{}{}", lint.stdout, lint.stderr);
    assert!(lint.stdout.contains("1 chart(s) linted, 0 chart(s) failed"), "{}", lint.stdout);

    let dir = tempfile::tempdir().expect("temp dir");
    let ci = ci_values_files();
    let modes: Vec<&str> = ci.iter().map(|file| check_values_file(file, dir.path())).collect();
    assert!(modes.contains(&"cronjob") && modes.contains(&"deployment"), "ci/ covers both modes: {ci:?}");

    let error = template(&Values::default()).expect_err("an install without probes");
    assert!(!error.contains("schema"), "a message of the chart's own, not the schema's:\n{error}");
    for text in ["config.probes is empty", "at least one probe"] {
        assert!(error.contains(text), "the message lacks {text:?}:\n{error}");
    }
    let upgrade = helm(&["template", "probe", &chart_dir().display().to_string(), "--is-upgrade"]);
    assert_ne!(upgrade.code, 0, "an upgrade without probes renders:\n{}", upgrade.stdout);
    assert!(upgrade.stderr.contains("config.probes is empty"), "{}", upgrade.stderr);
}

/// The resource defaults cite the measured peak RSS of docs/performance.md
/// (its `pullprobe_now` row), in values.yaml and in the chart's README.
#[test]
fn resource_sizing_cites_the_measured_peak_rss() {
    let performance = std::fs::read_to_string(repo_path("docs/performance.md")).expect("docs/performance.md");
    let row = performance
        .lines()
        .find(|l| l.starts_with("| plain | `pullprobe_now` |"))
        .expect("the pullprobe_now row of docs/performance.md");
    let rss = row.trim_end_matches('|').rsplit('|').next().expect("the RSS cell").trim();
    assert!(rss.parse::<f64>().is_ok(), "RSS MiB is the last cell: {row}");
    let values = std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    assert!(values.contains(&format!("peak RSS {rss} MiB")), "values.yaml does not cite peak RSS {rss} MiB");
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).expect("README.md");
    assert!(readme.contains(&format!("peak RSS of {rss} MiB")), "the chart README does not cite peak RSS {rss} MiB");
}

/// Registry credentials and the CA bundle: each Secret mounted where the
/// rendered probes.yaml names its file.
fn check_credentials_wiring(rendered: &Rendered, name: &str) {
    let config = rendered.config();
    let pod = rendered.pod_spec();
    let mounts = rendered.container()["volumeMounts"].as_array().expect("volumeMounts");
    let mounted_file = |volume_name: &str| -> Option<String> {
        let volume = pod["volumes"].as_array()?.iter().find(|v| v["name"] == volume_name)?;
        let mount = mounts.iter().find(|m| m["name"] == volume_name)?;
        assert_eq!(mount["readOnly"], true, "{name}: {volume_name} is mounted read-only");
        let path = volume["secret"]["items"][0]["path"].as_str()?;
        Some(format!("{}/{path}", mount["mountPath"].as_str()?))
    };
    let registries = config["registries"].as_array().cloned().unwrap_or_default();
    match mounted_file("registry-credentials") {
        Some(file) => {
            assert!(file.ends_with("/.dockerconfigjson"), "{name}: {file}");
            for registry in &registries {
                assert_eq!(registry["auth"], json!({"docker_config": file}), "{name}: {}", registry["name"]);
            }
        }
        None => assert!(registries.iter().all(|r| r["auth"].is_null()), "{name}: auth without a Secret"),
    }
    match mounted_file("ca-bundle") {
        Some(file) => {
            for registry in &registries {
                assert_eq!(registry["tls"]["ca_file"], file.as_str(), "{name}: {}", registry["name"]);
            }
        }
        None => assert!(registries.iter().all(|r| r["tls"].is_null()), "{name}: ca_file without a Secret"),
    }
}

/// The read-only rules `kubernetes:` discovery needs: (API group, resources, verbs).
fn discovery_rules(pull_secrets: bool) -> Value {
    let mut rules = vec![
        json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}),
        json!({"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"], "verbs": ["get", "list"]}),
        json!({"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["get", "list"]}),
    ];
    if pull_secrets {
        rules.push(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}));
    }
    Value::Array(rules)
}

/// `kubernetes:` discovery's RBAC in both modes, validated: a ClusterRole bound to the
/// chart's ServiceAccount, or a Role and RoleBinding in each probed namespace; the pod
/// runs as that account with its token mounted; without pullSecrets no access to
/// Secrets and `pull_secrets: false` in probes.yaml, which the binary accepts.
#[test]
fn discovery_rbac_renders_and_validates_cluster_wide_and_per_namespace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster_wide = json!({
        "mode": "deployment",
        "discovery": {"kubernetes": {"enabled": true}},
        "config": {"probes": [{"name": "cluster", "kubernetes": {"label_selector": "app=web"}}]},
    });
    let rendered = Rendered::of(&Values::json(dir.path(), "rbac-cluster", &cluster_wide));
    validate_manifests(&rendered, dir.path(), "rbac-cluster");
    assert_secure_pod(&rendered, "rbac-cluster");
    let account = rendered.get("ServiceAccount");
    let account_name = account["metadata"]["name"].as_str().expect("ServiceAccount name");
    assert_eq!(rendered.pod_spec()["serviceAccountName"], account_name);
    assert_eq!(rendered.pod_spec()["automountServiceAccountToken"], true);
    let role = rendered.get("ClusterRole");
    assert_eq!(role["rules"], discovery_rules(true), "read-only, secrets by name only");
    let binding = rendered.get("ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                          "name": role["metadata"]["name"]})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": account_name, "namespace": "monitoring"}])
    );
    assert!(rendered.find("Role").is_none() && rendered.find("RoleBinding").is_none(), "{:?}", rendered.kinds());
    assert!(rendered.config()["probes"][0]["kubernetes"].get("pull_secrets").is_none(), "pull secrets stay on");

    let per_namespace = json!({
        "mode": "cronjob",
        "discovery": {"kubernetes": {"enabled": true, "clusterWide": false, "pullSecrets": false}},
        "config": {"probes": [
            {"name": "shop", "kubernetes": {"namespaces": ["shop", "tools"]}},
            {"name": "tools", "kubernetes": {"namespaces": ["tools", "payments"], "pull_secrets": true}},
            {"name": "base", "image": "registry.example.org/base:1"},
        ]},
    });
    let rendered = Rendered::of(&Values::json(dir.path(), "rbac-namespaced", &per_namespace));
    validate_manifests(&rendered, dir.path(), "rbac-namespaced");
    assert_secure_pod(&rendered, "rbac-namespaced");
    assert!(rendered.find("ClusterRole").is_none() && rendered.find("ClusterRoleBinding").is_none());
    let in_namespaces = |kind: &str| -> Vec<&Value> { rendered.objects.iter().filter(|o| o["kind"] == kind).collect() };
    let namespaces = |objects: &[&Value]| -> Vec<String> {
        objects.iter().map(|o| o["metadata"]["namespace"].as_str().unwrap_or("?").to_string()).collect()
    };
    let roles = in_namespaces("Role");
    let bindings = in_namespaces("RoleBinding");
    assert_eq!(namespaces(&roles), ["shop", "tools", "payments"], "each probed namespace once");
    assert_eq!(namespaces(&bindings), ["shop", "tools", "payments"]);
    let account_name = rendered.get("ServiceAccount")["metadata"]["name"].clone();
    for (role, binding) in roles.iter().zip(&bindings) {
        assert_eq!(role["rules"], discovery_rules(false), "no access to Secrets without pullSecrets");
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": account_name, "namespace": "monitoring"}])
        );
    }
    let config = rendered.config();
    assert_eq!(config["probes"][0]["kubernetes"]["pull_secrets"], false, "the chart turns pull secrets off");
    assert_eq!(config["probes"][1]["kubernetes"]["pull_secrets"], true, "what the values set wins");
    let file = dir.path().join("rbac-namespaced.probes.yaml");
    std::fs::write(&file, rendered.probes_yaml()).expect("writing probes.yaml");
    let (code, stdout, stderr) = run_pullprobe(&["validate", "--no-files", "-c", &file.display().to_string()]);
    assert_eq!(code, 0, "pullprobe validate:\n{stdout}{stderr}\n{}", rendered.probes_yaml());

    // Named namespaces win over the probes'; a probe of every namespace needs clusterWide.
    let named = Values::json(dir.path(), "rbac-named", &per_namespace).set("discovery.kubernetes.namespaces={prod}");
    let rendered = Rendered::of(&named);
    assert_eq!(rendered.objects.iter().filter(|o| o["kind"] == "Role").count(), 1);
    assert_eq!(rendered.get("Role")["metadata"]["namespace"], "prod");
    let mut every = per_namespace.clone();
    every["config"]["probes"][0]["kubernetes"] = json!({});
    let error =
        template(&Values::json(dir.path(), "rbac-every", &every)).expect_err("every namespace, namespaced RBAC");
    assert!(error.contains("probe shop lists every namespace: set discovery.kubernetes.clusterWide: true"), "{error}");

    // Off (the default): no account, no RBAC, no token.
    let mut off = cluster_wide.clone();
    off["discovery"]["kubernetes"]["enabled"] = json!(false);
    let rendered = Rendered::of(&Values::json(dir.path(), "rbac-off", &off));
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(rendered.find(kind).is_none(), "{kind} without discovery");
    }
    assert_eq!(rendered.pod_spec()["automountServiceAccountToken"], false);
}

#[test]
fn bad_values_fail_with_the_schema_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let probe = json!({"config": {"probes": [{"name": "app", "image": "registry.example.org/app:1"}]}});
    let good = Values::json(dir.path(), "good", &probe);
    assert!(template(&good).is_ok(), "{:?}", template(&good).err());

    let cases: Vec<(&str, Values, &[&str])> = vec![
        ("unknown mode", good.clone().set("mode=daemonset"), &["mode", "cronjob", "deployment"]),
        (
            "negative interval",
            good.clone().set("config.defaults.interval=-5m"),
            &["config.defaults.interval", "Does not match pattern"],
        ),
        ("negative probe timeout", good.clone().set("config.probes[0].timeout=-1s"), &["config.probes.0.timeout"]),
        (
            "a password in values",
            good.clone()
                .set("config.alerting.pushgateway.url=http://pg:9091")
                .set("config.alerting.pushgateway.auth.password=hunter2"),
            &["password", "Additional property"],
        ),
    ];
    for (what, values, expected) in cases {
        let error = template(&values).expect_err(what);
        assert!(error.contains("values don't meet the specifications of the schema"), "{what}: {error}");
        for text in expected {
            assert!(error.contains(text), "{what}: the message lacks {text:?}:\n{error}");
        }
    }

    let unreadable = template(&good.clone().set("cronjob.schedule=0 9 * * 1-5")).expect_err("weekday schedule");
    assert!(unreadable.contains("set cronjob.interval"), "{unreadable}");
    let monitor = template(&good.clone().set("serviceMonitor.enabled=true")).expect_err("ServiceMonitor of a CronJob");
    assert!(monitor.contains("serviceMonitor.enabled needs mode: deployment"), "{monitor}");
}

#[test]
fn cronjob_timings_follow_schedule_and_timeouts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let values = Values::json(
        dir.path(),
        "timings",
        &json!({"config": {
            "defaults": {"timeout": "1m"},
            "probes": [{"name": "a", "image": "registry.example.org/a:1"},
                       {"name": "b", "image": "registry.example.org/b:1", "timeout": "3m", "platforms": "all"}],
            "alerting": {"alertmanager": {"urls": ["http://am:9093"]}}}}),
    );
    // (schedule, interval, resolve_timeout, startingDeadlineSeconds)
    for (schedule, interval, resolve, starting) in [
        ("*/5 * * * *", "5m", "20m", 150),
        ("* * * * *", "1m", "4m", 30),
        ("0,20,40 * * * *", "20m", "80m", 600),
        ("10,50 * * * *", "40m", "160m", 1200),
        ("7 * * * *", "1h", "4h", 1800),
        ("15 */6 * * *", "6h", "24h", 10800),
        ("30 2 * * *", "24h", "96h", 43200),
        ("@hourly", "1h", "4h", 1800),
    ] {
        // helm's --set splits at commas unless escaped.
        let rendered = Rendered::of(&values.clone().set(&format!("cronjob.schedule={}", schedule.replace(',', "\\,"))));
        let config = rendered.config();
        assert_eq!(config["defaults"]["interval"], interval, "{schedule}");
        assert_eq!(config["alerting"]["alertmanager"]["resolve_timeout"], resolve, "{schedule}");
        assert_eq!(rendered.get("CronJob")["spec"]["startingDeadlineSeconds"], starting, "{schedule}");
    }
    // Pulls: a 60 s + b 180 s × 4 platforms = 780 s; 4 at once: 195 s, plus the
    // longest pull (720 s) and 120 s for start-up and delivery.
    let rendered = Rendered::of(&values);
    assert_eq!(rendered.get("CronJob")["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"], 195 + 720 + 120);
    // What the values set wins.
    let rendered = Rendered::of(
        &values
            .clone()
            .set("cronjob.schedule=0 9 * * 1-5")
            .set("cronjob.interval=1d")
            .set("cronjob.activeDeadlineSeconds=600")
            .set("config.defaults.interval=10m")
            .set("config.alerting.alertmanager.resolve_timeout=3d"),
    );
    assert_eq!(rendered.config()["defaults"]["interval"], "10m");
    assert_eq!(rendered.config()["alerting"]["alertmanager"]["resolve_timeout"], "3d");
    assert_eq!(rendered.get("CronJob")["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"], 600);
    assert_eq!(rendered.get("CronJob")["spec"]["startingDeadlineSeconds"], 43200);
}

/// What a kubelet would run for the rendered CronJob: every volume as a
/// directory (a ConfigMap's keys as files), the container's args with each
/// mount path pointing there, and its env.
struct PodRun {
    _volumes: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl PodRun {
    fn of(rendered: &Rendered) -> PodRun {
        let volumes = tempfile::Builder::new().prefix("pullprobe-pod-").tempdir().expect("temp dir");
        let pod = rendered.pod_spec();
        let container = rendered.container();
        assert_eq!(container["command"], json!([BINARY_IN_IMAGE]));
        let mut directories = BTreeMap::new();
        for volume in pod["volumes"].as_array().expect("volumes") {
            let name = volume["name"].as_str().expect("volume name");
            let dir = volumes.path().join(name);
            std::fs::create_dir_all(&dir).expect("volume dir");
            if let Some(config_map) = volume["configMap"]["name"].as_str() {
                let object = rendered
                    .objects
                    .iter()
                    .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == config_map)
                    .unwrap_or_else(|| panic!("volume {name} names ConfigMap {config_map}, which is not rendered"));
                for (key, value) in object["data"].as_object().expect("ConfigMap data") {
                    std::fs::write(dir.join(key), value.as_str().expect("string data")).expect("writing key");
                }
            } else {
                assert!(volume["emptyDir"].is_object(), "volume {name}: only ConfigMaps and emptyDirs here: {volume}");
            }
            directories.insert(name.to_string(), dir);
        }
        let mut mounts: Vec<(String, PathBuf)> = container["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .map(|m| {
                let name = m["name"].as_str().expect("mount name");
                let dir = directories.get(name).unwrap_or_else(|| panic!("mount of undeclared volume {name}"));
                (m["mountPath"].as_str().expect("mountPath").to_string(), dir.clone())
            })
            .collect();
        // The longest mount path first, as nested mounts shadow their parents.
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let args = rendered
            .args()
            .iter()
            .map(|arg| match mounts.iter().find(|(path, _)| arg.starts_with(&format!("{path}/"))) {
                Some((path, dir)) => format!("{}{}", dir.display(), &arg[path.len()..]),
                None => arg.to_string(),
            })
            .collect();
        let env = container["env"]
            .as_array()
            .map(|vars| {
                vars.iter()
                    .map(|v| {
                        (v["name"].as_str().unwrap_or_default().into(), v["value"].as_str().unwrap_or_default().into())
                    })
                    .collect()
            })
            .unwrap_or_default();
        PodRun { _volumes: volumes, args, env }
    }

    fn run(&self) -> (i32, String, String) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_pullprobe_with(&args, &env, None, Duration::from_secs(120))
    }
}

#[tokio::test]
async fn rendered_cronjob_passes_against_a_registry_and_fails_on_a_corrupt_layer() {
    let registry = Registry::start();
    let image = push_small_image(&registry, "chart/app", "stable").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = json!({
        "defaults": {"timeout": "60s", "location": "ci"},
        "registries": [{"name": "local", "url": registry.url().as_str()}],
        "probes": [{"name": "app", "registry": "local", "image": "chart/app:stable", "severity": "warning"}],
    });
    let values = Values::json(dir.path(), "e2e", &json!({"mode": "cronjob", "config": config}));
    let rendered = Rendered::of(&values);
    let pod = PodRun::of(&rendered);
    assert!(!pod.args.iter().any(|a| a == "--no-fail"), "no direct alerting: a failure fails the Job");

    let (code, stdout, stderr) = pod.run();
    assert_eq!(code, 0, "healthy run of {:?}:\n{stdout}{stderr}", pod.args);
    let results = json_results(&stdout);
    assert_eq!(results.len(), 1, "{stdout}");
    assert!(results[0].is_ok() && results[0]["probe"] == "app" && results[0]["location"] == "ci", "{stdout}");

    let layer = image.content.layers[1].digest();
    registry.flip_byte(&layer, 100);
    let (code, stdout, stderr) = pod.run();
    assert_eq!(code, 1, "the corrupted layer fails the run:\n{stdout}{stderr}");
    let results = json_results(&stdout);
    assert_eq!(results[0].reason(), Some("blob_digest_mismatch"), "{stdout}");
    let failed: Vec<&str> =
        results[0].layers().iter().filter(|l| !l.is_ok()).filter_map(|l| l.str_field("digest")).collect();
    assert_eq!(failed, [layer.to_string()], "{stdout}");

    // With direct alerting the same failure pages Alertmanager, and the Job
    // succeeds: its args carry --no-fail, its probes.yaml the derived
    // resolve_timeout (4 × the 5 minute schedule).
    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&webhook, false);
    let mut paging = config.clone();
    paging["alerting"] = json!({"alertmanager": {"urls": [alertmanager.url()]}});
    let values = Values::json(dir.path(), "e2e-paging", &json!({"mode": "cronjob", "config": paging}));
    let rendered = Rendered::of(&values);
    assert_eq!(rendered.config()["alerting"]["alertmanager"]["resolve_timeout"], "20m");
    let pod = PodRun::of(&rendered);
    assert!(pod.args.iter().any(|a| a == "--no-fail"), "{:?}", pod.args);
    let started = time::OffsetDateTime::now_utc();
    let (code, stdout, stderr) = pod.run();
    assert_eq!(code, 0, "a failure Alertmanager has does not fail the Job:\n{stdout}{stderr}");
    assert_eq!(json_results(&stdout)[0].reason(), Some("blob_digest_mismatch"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let alert = loop {
        let alerts = alertmanager.alerts();
        if let Some(alert) = alerts.into_iter().find(|a| a["labels"]["probe"] == "app") {
            break alert;
        }
        assert!(Instant::now() < deadline, "no alert in Alertmanager; log:\n{}", alertmanager.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(alert["labels"]["alertname"], "RegistryPullFailed");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["annotations"]["reason"], "blob_digest_mismatch");
    let ends_at = alert["endsAt"].as_str().expect("endsAt");
    let ends_at =
        time::OffsetDateTime::parse(ends_at, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
    let lead = ends_at - started;
    assert!(
        lead > time::Duration::minutes(19) && lead < time::Duration::minutes(21),
        "endsAt {ends_at} is not 20 minutes after the run ({started})"
    );
}

#[tokio::test]
async fn rendered_deployment_serves_healthz_where_its_probes_ask() {
    let registry = Registry::start();
    push_small_image(&registry, "chart/app", "stable").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = common::process::free_port();
    let values = json!({
        "mode": "deployment",
        "deployment": {"listenHost": "127.0.0.1", "port": port},
        "config": {
            "defaults": {"interval": "1m", "timeout": "60s"},
            "registries": [{"name": "local", "url": registry.url().as_str()}],
            "probes": [{"name": "app", "registry": "local", "image": "chart/app:stable"}],
        },
    });
    let rendered = Rendered::of(&Values::json(dir.path(), "serve", &values));
    let pod = PodRun::of(&rendered);
    assert_eq!(pod.args[0], "serve");
    let container = rendered.container();
    assert_eq!(container["ports"][0]["containerPort"], port);
    let mut command = Command::new(env!("CARGO_BIN_EXE_pullprobe"));
    command.args(&pod.args).current_dir(dir.path()).stdout(std::process::Stdio::null());
    command.stderr(std::fs::File::create(dir.path().join("serve.log")).expect("log file"));
    let mut serve = ServeProcess(command.spawn().expect("starting pullprobe serve"));
    let address = format!("127.0.0.1:{port}");
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().expect("probe path");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match common::http_get(&address, path) {
                Ok(r) if r.status == 200 => break,
                _ if Instant::now() < deadline => {
                    assert!(serve.0.try_wait().ok().flatten().is_none(), "serve exited: {}", serve.log(dir.path()));
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => panic!("{probe} {path}: {other:?}; log:\n{}", serve.log(dir.path())),
            }
        }
    }
    let metrics = common::http_get(&address, "/metrics").expect("GET /metrics");
    assert_eq!(metrics.status, 200);
}

/// A `pullprobe serve` started by a test, stopped (by its handle) when dropped.
struct ServeProcess(std::process::Child);

impl ServeProcess {
    fn log(&self, dir: &Path) -> String {
        std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        common::process::stop_child(&mut self.0);
    }
}

#[tokio::test]
async fn engine_less_image_is_verified_by_pullprobe_and_runs_as_the_chart_runs_it() {
    // The image packages this test's own (debug) build of the binary, debug
    // info stripped: a release build here would take minutes. The Containerfile
    // and `scripts/build-image` without --binary package the release build.
    let registry = Registry::start();
    let work = tempfile::Builder::new().prefix("pullprobe-image-").tempdir().expect("temp dir");
    let layout = work.path().join("layout");
    let mut build = Command::new(repo_path("scripts/build-image"));
    build.arg("--binary").arg(env!("CARGO_BIN_EXE_pullprobe")).arg("--out").arg(&layout).args(["--tag", "test"]);
    let out = run_with_timeout(&mut build, Duration::from_secs(900));
    assert_eq!(out.code, 0, "scripts/build-image:\n{}{}", out.stdout, out.stderr);
    assert!(layout.join("oci-layout").is_file() && layout.join("index.json").is_file());

    // Pushed by an independent client, then verified end to end by pullprobe.
    let reference = registry.reference("tools/pullprobe", "test");
    let copy = skopeo::run(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:test", layout.display()),
        &format!("docker://{reference}"),
    ]);
    assert_eq!(copy.code, 0, "skopeo copy:\n{}{}", copy.stdout, copy.stderr);
    let (code, stdout, stderr) = run_pullprobe(&["now", "-o", "json", &reference]);
    assert_eq!(code, 0, "pullprobe now {reference}:\n{stdout}{stderr}");
    let results = json_results(&stdout);
    assert!(results[0].is_ok(), "{stdout}");
    assert_eq!(results[0].layers().len(), 2, "a base layer and the binary: {stdout}");

    // Unpacked as a runtime would, and run as the chart runs it.
    let bundle = work.path().join("bundle");
    let mut unpack = Command::new(require_binary("/usr/bin/umoci", "umoci"));
    unpack.arg("unpack").arg("--image").arg(format!("{}:test", layout.display())).arg(&bundle);
    let out = run_with_timeout(&mut unpack, Duration::from_secs(120));
    assert_eq!(out.code, 0, "umoci unpack (needs root):\n{}{}", out.stdout, out.stderr);
    let runtime: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).expect("config.json")).expect("JSON");
    assert_eq!(runtime["process"]["user"]["uid"], NONROOT);
    assert_eq!(runtime["process"]["args"][0], BINARY_IN_IMAGE, "the chart's command is the image's entrypoint");
    let rootfs = bundle.join("rootfs");
    let user = format!("--userspec={NONROOT}:{NONROOT}");
    let mut version = Command::new("chroot");
    version.arg(&user).arg(&rootfs).args([BINARY_IN_IMAGE, "--version"]);
    let out = run_with_timeout(&mut version, Duration::from_secs(30));
    assert_eq!(out.code, 0, "chroot {} {BINARY_IN_IMAGE} --version:\n{}", rootfs.display(), out.stderr);
    assert_eq!(out.stdout.trim(), format!("pullprobe {}", env!("CARGO_PKG_VERSION")));

    // Inside the image, on a read-only root filesystem, as user 65532: the
    // image pulls and verifies itself (the registry is on loopback).
    let script = format!(
        "mount --bind \"$0\" \"$0\" && mount -o remount,bind,ro \"$0\" && \
         exec chroot {user} \"$0\" {BINARY_IN_IMAGE} now -o json {reference}"
    );
    let mut inside = Command::new("unshare");
    inside.args(["--mount", "--propagation", "private", "sh", "-c", &script]).arg(&rootfs);
    let out = run_with_timeout(&mut inside, Duration::from_secs(120));
    assert_eq!(
        out.code, 0,
        "pullprobe inside its image (read-only root, user {NONROOT}):\n{}{}",
        out.stdout, out.stderr
    );
    assert!(json_results(&out.stdout)[0].is_ok(), "{}", out.stdout);
}
