//! The chart's `shards: N`, checked by the real tools: `helm lint --strict`,
//! `helm template` and `kubernetes-validate` (Kubernetes 1.31) for both modes.
//!
//! - cronjob: an Indexed Job of N pods (`completionMode: Indexed`,
//!   `completions` = `parallelism` = N), each `pullprobe now … --shard auto
//!   --shards N` (its index from `JOB_COMPLETION_INDEX`);
//! - deployment: a StatefulSet of N replicas behind a headless Service, each pod
//!   `pullprobe serve … --shard auto --shards N` with `PULLPROBE_SHARD_INDEX`
//!   from its `apps.kubernetes.io/pod-index` label; the ServiceMonitor selects
//!   every pod; the PrometheusRule has `PullprobeShardsMissing`;
//! - `shards: 1` renders what it rendered before sharding existed (a CronJob of
//!   one pod, a Deployment), and a bad count is refused by the values schema.

mod common;

use common::chart::{KUBERNETES_VERSION, Rendered, Values, chart_dir, helm, template, validate_manifests};
use serde_json::{Value, json};

fn example(name: &str) -> Values {
    Values::file(chart_dir().join("examples").join(name))
}

fn lint(values: &Values, name: &str) {
    let chart = chart_dir().display().to_string();
    let mut args = vec!["lint", &chart, "--strict", "--kube-version", KUBERNETES_VERSION];
    let extra = values.args();
    args.extend(extra.iter().map(String::as_str));
    let out = helm(&args);
    assert_eq!(out.code, 0, "helm lint {name}:\n{}{}", out.stdout, out.stderr);
}

/// The container's arguments end with the shard arguments of `shards`.
fn assert_shard_args(rendered: &Rendered, shards: &str) {
    let args = rendered.args();
    assert_eq!(args[args.len() - 4..], ["--shard", "auto", "--shards", shards], "{args:?}");
}

fn alert_names(rendered: &Rendered) -> Vec<String> {
    let groups = rendered.get("PrometheusRule")["spec"]["groups"].as_array().expect("rule groups").clone();
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn three_shards_render_an_indexed_job_of_three_pods() {
    let dir = tempfile::tempdir().expect("temp dir");
    let values = example("cronjob-alertmanager.yaml").set("shards=3");
    lint(&values, "cronjob, 3 shards");
    let rendered = Rendered::of(&values);
    validate_manifests(&rendered, dir.path(), "cronjob-shards");
    let job = &rendered.get("CronJob")["spec"]["jobTemplate"]["spec"];
    assert_eq!(job["completionMode"], "Indexed");
    assert_eq!((&job["completions"], &job["parallelism"]), (&json!(3), &json!(3)));
    assert_eq!(job["backoffLimit"], 0, "a failed probe is not retried by the Job");
    assert_shard_args(&rendered, "3");
    assert!(rendered.args().contains(&"--no-fail"), "direct alerting: every shard exits 0 when paged");
    assert!(alert_names(&rendered).contains(&"PullprobeShardsMissing".to_string()));
}

#[test]
fn three_shards_render_a_statefulset_behind_a_headless_service() {
    let dir = tempfile::tempdir().expect("temp dir");
    let values = example("deployment.yaml").set("shards=3");
    lint(&values, "deployment, 3 shards");
    let rendered = Rendered::of(&values);
    let unchecked = validate_manifests(&rendered, dir.path(), "deployment-shards");
    assert!(rendered.find("Deployment").is_none(), "{:?}", rendered.kinds());
    let set = &rendered.get("StatefulSet")["spec"];
    let service = rendered.get("Service");
    assert_eq!(set["replicas"], 3);
    assert_eq!(set["podManagementPolicy"], "Parallel", "all shards start at once");
    assert_eq!(set["serviceName"], service["metadata"]["name"]);
    assert_eq!(service["spec"]["clusterIP"], "None", "headless");
    let pod_labels = &set["template"]["metadata"]["labels"];
    assert_eq!(set["selector"]["matchLabels"], service["spec"]["selector"]);
    for (label, value) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod_labels[label], value, "the Service selects every pod");
    }
    assert_eq!(rendered.args()[0], "serve");
    assert_shard_args(&rendered, "3");
    let env = rendered.container()["env"].as_array().expect("env").clone();
    let index = env.iter().find(|e| e["name"] == "PULLPROBE_SHARD_INDEX").expect("PULLPROBE_SHARD_INDEX");
    assert_eq!(index["valueFrom"]["fieldRef"]["fieldPath"], "metadata.labels['apps.kubernetes.io/pod-index']");
    assert!(unchecked.contains(&"ServiceMonitor".to_string()), "the example scrapes with a ServiceMonitor");
    let monitor = &rendered.get("ServiceMonitor")["spec"];
    assert_eq!(monitor["selector"]["matchLabels"], service["spec"]["selector"], "every pod's endpoint");
    assert!(alert_names(&rendered).contains(&"PullprobeShardsMissing".to_string()));
}

#[test]
fn one_shard_renders_as_without_sharding_and_bad_counts_are_refused() {
    for (name, kind) in [("cronjob-alertmanager.yaml", "CronJob"), ("deployment.yaml", "Deployment")] {
        let rendered = Rendered::of(&example(name));
        assert!(rendered.find(kind).is_some() && rendered.find("StatefulSet").is_none(), "{name}");
        assert!(!rendered.args().contains(&"--shard"), "{name}: {:?}", rendered.args());
        if let Some(cronjob) = rendered.find("CronJob") {
            assert_eq!(cronjob["spec"]["jobTemplate"]["spec"].get("completionMode"), None::<&Value>);
        }
        if let Some(service) = rendered.find("Service") {
            assert_eq!(service["spec"]["type"], "ClusterIP", "{name}");
        }
    }
    for bad in ["shards=0", "shards=5000", "shards=two"] {
        let error = template(&example("deployment.yaml").set(bad)).expect_err(bad);
        assert!(error.contains("shards"), "{bad}: {error}");
    }
}
