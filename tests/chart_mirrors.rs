//! The chart's ways of giving pullprobe a node's mirror configuration, checked
//! by the real tools and the real binary:
//!
//! - `nodeMirrors.hostPath` (deployment mode): the node's directory mounted
//!   read-only at its own path; refused in cronjob mode;
//! - `nodeMirrors.files`: a ConfigMap whose items put each file at its path
//!   under `mountPath` — materialised the way a kubelet does and probed by
//!   `pullprobe now` against a real registry;
//! - every rendering validated by `kubernetes-validate` against Kubernetes
//!   1.31, bad values refused by the schema.
//!
//! helm and kubernetes-validate come from `scripts/install-deps`; a missing
//! tool fails the test with that hint.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::process::{CommandOutput, run_with_timeout};
use common::{Registry, ResultJson, json_results, push_small_image, result_for, run_pullprobe};
use serde_json::{Value, json};

const KUBERNETES_VERSION: &str = "1.31.0";
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// A tool from the directory `scripts/install-deps` installs into, else from PATH.
fn tool(name: &str) -> PathBuf {
    let cache = std::env::var_os("PULLPROBE_TOOLS").map(PathBuf::from).unwrap_or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        base.join("pullprobe-tools")
    });
    let on_path: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect()).unwrap_or_default();
    [cache.join("bin").join(name)].into_iter().chain(on_path).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("{name} is not installed (looked in {} and on PATH): run scripts/install-deps", cache.display())
    })
}

/// `helm template` of the chart with `values` (JSON is YAML), in a scratch helm home.
fn helm_template(dir: &Path, values: &Value) -> CommandOutput {
    let file = dir.join("values.yaml");
    std::fs::write(&file, serde_json::to_vec_pretty(values).expect("values JSON")).expect("writing values");
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/pullprobe");
    let home = dir.join("helm-home");
    let mut command = Command::new(tool("helm"));
    command
        .args(["template", "probe"])
        .arg(&chart)
        .args(["--namespace", "monitoring", "--kube-version", KUBERNETES_VERSION, "--values"])
        .arg(&file)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    run_with_timeout(&mut command, TOOL_TIMEOUT)
}

/// The rendered objects, after `kubernetes-validate --strict` passed every one.
fn render_valid(dir: &Path, values: &Value) -> Vec<Value> {
    let out = helm_template(dir, values);
    assert_eq!(out.code, 0, "helm template:\n{}", out.stderr);
    let rendered = dir.join("rendered.yaml");
    std::fs::write(&rendered, &out.stdout).expect("writing the rendered manifests");
    let mut command = Command::new(tool("kubernetes-validate"));
    command.args(["--strict", "--kubernetes-version", KUBERNETES_VERSION]).arg(&rendered);
    let check = run_with_timeout(&mut command, TOOL_TIMEOUT);
    assert_eq!(check.code, 0, "kubernetes-validate:\n{}{}", check.stdout, check.stderr);
    let objects: Vec<Value> = serde_saphyr::from_multiple::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("helm printed YAML that does not parse: {e}"))
        .into_iter()
        .filter(|o| !o.is_null())
        .collect();
    for object in &objects {
        let resource = format!(
            "{}/{}",
            object["kind"].as_str().unwrap_or_default().to_lowercase(),
            object["metadata"]["name"].as_str().unwrap_or_default()
        );
        assert!(check.stdout.contains(&format!("passed for resource {resource} ")), "{resource}:\n{}", check.stdout);
    }
    objects
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {} objects", objects.len()))
}

fn pod_spec(objects: &[Value]) -> &Value {
    match objects.iter().find(|o| o["kind"] == "CronJob") {
        Some(cronjob) => &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        None => &object(objects, "Deployment", "probe-pullprobe")["spec"]["template"]["spec"],
    }
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|items| items.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

fn values(mode: &str, frontends: Value, node_mirrors: Value) -> Value {
    json!({
        "mode": mode,
        "config": {
            "registries": [{"name": "hub", "url": "https://registry-1.docker.io", "frontends": frontends}],
            "probes": [{"name": "base", "registry": "hub", "image": "library/alpine:3"}],
        },
        "nodeMirrors": node_mirrors,
    })
}

#[test]
fn the_nodes_directory_is_mounted_read_only_in_deployment_mode() {
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = render_valid(
        dir.path(),
        &values("deployment", json!({"containerd": "/etc/containerd/certs.d"}), json!({"hostPath": {"enabled": true}})),
    );
    let pod = pod_spec(&objects);
    let volume = named(&pod["volumes"], "node-mirrors-host");
    assert_eq!(volume["hostPath"], json!({"path": "/etc/containerd/certs.d", "type": "Directory"}));
    let mount = named(&pod["containers"][0]["volumeMounts"], "node-mirrors-host");
    assert_eq!(mount, &json!({"name": "node-mirrors-host", "mountPath": "/etc/containerd/certs.d", "readOnly": true}));
    // Off by default: no hostPath at all.
    let objects = render_valid(dir.path(), &values("deployment", json!("single"), json!({})));
    let rendered = serde_json::to_string(&objects).expect("JSON");
    assert!(!rendered.contains("hostPath") && !rendered.contains("node-mirrors"), "{rendered}");

    // CRI-O's directory, with the registries.conf in it.
    let objects = render_valid(
        dir.path(),
        &values(
            "deployment",
            json!({"registries_conf": "/etc/containers/registries.conf"}),
            json!({"hostPath": {"enabled": true, "path": "/etc/containers"}}),
        ),
    );
    let mount = named(&pod_spec(&objects)["containers"][0]["volumeMounts"], "node-mirrors-host");
    assert_eq!(mount["mountPath"], "/etc/containers");
    let config = &object(&objects, "ConfigMap", "probe-pullprobe")["data"]["probes.yaml"];
    assert!(
        config.as_str().is_some_and(|c| c.contains("registries_conf: /etc/containers/registries.conf")),
        "{config}"
    );
}

#[test]
fn bad_node_mirror_values_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let refused = |values: Value, wanted: &str| {
        let out = helm_template(dir.path(), &values);
        assert_ne!(out.code, 0, "{values} rendered");
        assert!(out.stderr.contains(wanted), "{values}: {}", out.stderr);
    };
    refused(
        values("cronjob", json!("single"), json!({"hostPath": {"enabled": true}})),
        "nodeMirrors.hostPath is for mode: deployment",
    );
    refused(
        values("deployment", json!("single"), json!({"hostPath": {"path": "etc/containerd"}})),
        "nodeMirrors.hostPath.path",
    );
    refused(values("cronjob", json!("single"), json!({"files": {"../hosts.toml": "x"}})), "nodeMirrors.files");
    refused(values("cronjob", json!({"containerd": "certs.d"}), json!({})), "config.registries.0.frontends");
    refused(values("cronjob", json!({"containerd": "/a", "registries_conf": "/b"}), json!({})), "frontends");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_in_the_configmap_reach_pullprobe_as_a_kubelet_mounts_them() {
    let registry = Registry::start();
    let pushed = push_small_image(&registry, "team/app", "1.0").await;
    let mount = "/etc/pullprobe/node-mirrors";
    let host_dir = format!("127.0.0.1_{}_", registry.port());
    let hosts_toml = format!("server = \"{}\"\n", registry.url().as_str().trim_end_matches('/'));
    let dir = tempfile::tempdir().expect("temp dir");
    for mode in ["cronjob", "deployment"] {
        let mut values = json!({
            "mode": mode,
            "config": {
                "registries": [{"name": "local", "url": registry.url().as_str(), "frontends": {"containerd": mount}}],
                "probes": [{"name": "app", "registry": "local", "image": "team/app:1.0"}],
            },
            "nodeMirrors": {"files": {format!("{host_dir}/hosts.toml"): hosts_toml}},
        });
        if mode == "cronjob" {
            values["cronjob"] = json!({"schedule": "*/5 * * * *"});
        }
        let objects = render_valid(dir.path(), &values);
        let pod = pod_spec(&objects);
        let mounted = named(&pod["containers"][0]["volumeMounts"], "node-mirrors");
        assert_eq!(mounted, &json!({"name": "node-mirrors", "mountPath": mount, "readOnly": true}), "{mode}");

        // Materialise the volume as a kubelet does: each item's key at its path under the mount.
        let root = dir.path().join(format!("{mode}-node-mirrors"));
        let volume = named(&pod["volumes"], "node-mirrors");
        let data = &object(&objects, "ConfigMap", "probe-pullprobe-node-mirrors")["data"];
        assert_eq!(volume["configMap"]["name"], "probe-pullprobe-node-mirrors");
        for item in volume["configMap"]["items"].as_array().expect("items") {
            let key = item["key"].as_str().expect("key");
            let path = root.join(item["path"].as_str().expect("path"));
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            std::fs::write(&path, data[key].as_str().expect("a file for every item")).expect("writing the file");
        }
        // The rendered probes.yaml, with the mount where the materialised volume is.
        let probes =
            object(&objects, "ConfigMap", "probe-pullprobe")["data"]["probes.yaml"].as_str().expect("probes.yaml");
        let config = dir.path().join(format!("{mode}-probes.yaml"));
        std::fs::write(&config, probes.replace(mount, &root.display().to_string())).expect("writing probes.yaml");
        let config = config.display().to_string();

        let (code, stdout, stderr) = run_pullprobe(&["validate", "-c", &config]);
        assert_eq!(code, 0, "{mode}: {stdout}{stderr}");
        let (code, stdout, stderr) = run_pullprobe(&["now", "-c", &config, "-o", "json", "--no-push"]);
        assert_eq!(code, 0, "{mode}: {stdout}{stderr}");
        let results = json_results(&stdout);
        assert_eq!(results.len(), 2, "the server and node-order: {results:?}");
        for frontend in [registry.host_port().as_str(), "node-order"] {
            let result = result_for(&results, frontend);
            assert!(result.is_ok(), "{mode}: {result}");
            assert_eq!(result.u64_field("mirror_position"), Some(1), "{result}");
            assert_eq!(result.str_field("manifest_digest"), Some(pushed.digest.to_string().as_str()));
        }
    }
}
