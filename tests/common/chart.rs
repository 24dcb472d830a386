//! The Helm chart as the real tools see it: `helm` (the pinned helm 3 that
//! `scripts/install-deps` installs) with its own empty home, values files and
//! `--set`s, `helm template` parsed into objects, and `kubernetes-validate` of
//! every rendered object against the Kubernetes version the chart supports.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::process::{CommandOutput, run_with_timeout};

/// The Kubernetes version the manifests are validated against.
pub const KUBERNETES_VERSION: &str = "1.31.0";
pub const HELM_TIMEOUT: Duration = Duration::from_secs(60);

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn chart_dir() -> PathBuf {
    repo_path("charts/pullprobe")
}

/// A tool from the cache directory `scripts/install-deps` installs into (the
/// versions it pins), else from PATH.
pub fn tool(name: &str) -> PathBuf {
    let cache = std::env::var_os("PULLPROBE_TOOLS").map(PathBuf::from).unwrap_or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        base.join("pullprobe-tools")
    });
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|dir| dir.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    [cache.join("bin").join(name)].into_iter().chain(on_path).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "{name} is not installed (looked in {} and on PATH): run scripts/install-deps, \
             which installs helm and kubernetes-validate there",
            cache.join("bin").display()
        )
    })
}

/// helm 3: the schema messages the tests expect are helm 3's.
pub fn helm_binary() -> PathBuf {
    let helm = tool("helm");
    let out = run_with_timeout(Command::new(&helm).args(["version", "--short"]), HELM_TIMEOUT);
    assert!(
        out.stdout.starts_with("v3."),
        "{} is not helm 3 ({}{}): run scripts/install-deps for the pinned helm 3",
        helm.display(),
        out.stdout.trim(),
        out.stderr.trim()
    );
    helm
}

/// `helm ARGS…` with its own empty config, cache and data directories.
pub fn helm(args: &[&str]) -> CommandOutput {
    let home = tempfile::Builder::new().prefix("pullprobe-helm-").tempdir().expect("temp dir");
    static HELM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let mut command = Command::new(HELM.get_or_init(helm_binary));
    command
        .args(args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"));
    run_with_timeout(&mut command, HELM_TIMEOUT)
}

/// Values files plus `--set`/`--set-string` style arguments, as helm takes them.
#[derive(Default, Clone)]
pub struct Values {
    pub files: Vec<PathBuf>,
    pub sets: Vec<String>,
}

impl Values {
    pub fn file(path: impl Into<PathBuf>) -> Values {
        Values { files: vec![path.into()], sets: Vec::new() }
    }

    /// A values document written to a temporary file (kept alive by `dir`).
    pub fn json(dir: &Path, name: &str, values: &Value) -> Values {
        let path = dir.join(format!("{name}.yaml"));
        // JSON is YAML: helm reads it as is.
        std::fs::write(&path, serde_json::to_vec_pretty(values).expect("values JSON")).expect("writing values");
        Values::file(path)
    }

    pub fn set(mut self, assignment: &str) -> Values {
        self.sets.push(assignment.to_string());
        self
    }

    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for file in &self.files {
            args.push("--values".to_string());
            args.push(file.display().to_string());
        }
        for set in &self.sets {
            args.push("--set".to_string());
            args.push(set.clone());
        }
        args
    }
}

/// The values files (`*.yaml`) of `examples/<under>` in the chart, sorted (`""`: the top level).
pub fn example_files(under: &str) -> Vec<PathBuf> {
    let dir = chart_dir().join("examples").join(under);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// `helm template` output, or helm's stderr.
pub fn template(values: &Values) -> Result<String, String> {
    let chart = chart_dir().display().to_string();
    let mut args = vec!["template", "probe", &chart, "--namespace", "monitoring", "--kube-version", KUBERNETES_VERSION];
    let extra = values.args();
    args.extend(extra.iter().map(String::as_str));
    let out = helm(&args);
    if out.code == 0 { Ok(out.stdout) } else { Err(out.stderr) }
}

/// The rendered manifests, parsed.
pub struct Rendered {
    pub text: String,
    pub objects: Vec<Value>,
}

impl Rendered {
    pub fn of(values: &Values) -> Rendered {
        let text = template(values).unwrap_or_else(|e| panic!("helm template failed:\n{e}"));
        let objects: Vec<Value> = serde_saphyr::from_multiple::<Value>(&text)
            .unwrap_or_else(|e| panic!("helm template printed YAML that does not parse: {e}\n{text}"))
            .into_iter()
            .filter(|o| !o.is_null())
            .collect();
        Rendered { text, objects }
    }

    pub fn kinds(&self) -> Vec<&str> {
        self.objects.iter().map(|o| o["kind"].as_str().unwrap_or("?")).collect()
    }

    pub fn find(&self, kind: &str) -> Option<&Value> {
        self.objects.iter().find(|o| o["kind"] == kind)
    }

    pub fn get(&self, kind: &str) -> &Value {
        self.find(kind).unwrap_or_else(|| panic!("no {kind} among {:?}", self.kinds()))
    }

    /// The probes.yaml of the ConfigMap.
    pub fn probes_yaml(&self) -> &str {
        self.get("ConfigMap")["data"]["probes.yaml"].as_str().expect("the ConfigMap has probes.yaml")
    }

    pub fn config(&self) -> Value {
        serde_saphyr::from_str::<Value>(self.probes_yaml()).expect("probes.yaml parses")
    }

    /// The pod spec of the CronJob's Job, of the Deployment, or of the StatefulSet (shards).
    pub fn pod_spec(&self) -> &Value {
        match self.find("CronJob") {
            Some(cronjob) => &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            None => &self.find("StatefulSet").unwrap_or_else(|| self.get("Deployment"))["spec"]["template"]["spec"],
        }
    }

    pub fn container(&self) -> &Value {
        &self.pod_spec()["containers"][0]
    }

    pub fn args(&self) -> Vec<&str> {
        self.container()["args"].as_array().expect("container args").iter().filter_map(Value::as_str).collect()
    }
}

/// `kubernetes-validate --strict` of one rendered file against Kubernetes 1.31:
/// every object of a built-in kind must pass. It has no schemas for the
/// Prometheus Operator's kinds; those are returned for checks of their own.
pub fn validate_manifests(rendered: &Rendered, dir: &Path, name: &str) -> Vec<String> {
    let file = dir.join(format!("{name}.rendered.yaml"));
    std::fs::write(&file, &rendered.text).expect("writing the rendered manifests");
    let mut command = Command::new(tool("kubernetes-validate"));
    command.args(["--strict", "--kubernetes-version", KUBERNETES_VERSION]).arg(&file);
    let out = run_with_timeout(&mut command, Duration::from_secs(120));
    assert_eq!(out.code, 0, "kubernetes-validate {name}:\n{}{}", out.stdout, out.stderr);
    let mut unchecked = Vec::new();
    for object in &rendered.objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let resource = format!("{}/{}", kind.to_lowercase(), object["metadata"]["name"].as_str().unwrap_or_default());
        if object["apiVersion"] == "monitoring.coreos.com/v1" {
            unchecked.push(kind.to_string());
        } else {
            let passed = format!("passed for resource {resource} against version 1.31");
            assert!(out.stdout.contains(&passed), "{name}: {resource} was not validated:\n{}", out.stdout);
        }
    }
    unchecked
}
