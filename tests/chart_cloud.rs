//! The chart's cloud workload identities, checked by the real tools: every
//! example of `charts/pullprobe/examples/cloud/` passes `helm lint --strict`,
//! renders, validates against the Kubernetes schemas (`kubernetes-validate`),
//! carries its cloud's ServiceAccount annotations and labels (and Azure's pod
//! label), runs the pods as that account without mounting its API token, and
//! renders a probes.yaml that `pullprobe validate` accepts. The ServiceAccount
//! settings on their own, with discovery's RBAC, and bad identities refused by
//! the values schema.

mod common;

use std::path::Path;

use common::chart::{
    KUBERNETES_VERSION, Rendered, Values, chart_dir, example_files, helm, template, validate_manifests,
};
use common::run_pullprobe;
use serde_json::{Value, json};

/// The annotations and labels each cloud's workload identity reads.
const AWS_ROLE: &str = "eks.amazonaws.com/role-arn";
const GCP_ACCOUNT: &str = "iam.gke.io/gcp-service-account";
const AZURE_CLIENT: &str = "azure.workload.identity/client-id";
const AZURE_TENANT: &str = "azure.workload.identity/tenant-id";
const AZURE_USE: &str = "azure.workload.identity/use";

/// The pod template's labels (CronJob or Deployment).
fn pod_labels(rendered: &Rendered) -> &Value {
    match rendered.find("CronJob") {
        Some(c) => &c["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
        None => &rendered.get("Deployment")["spec"]["template"]["metadata"]["labels"],
    }
}

/// The rendered probes.yaml passes `pullprobe validate`.
fn assert_probes_yaml_validates(rendered: &Rendered, dir: &Path, name: &str) {
    let file = dir.join(format!("{name}.probes.yaml"));
    std::fs::write(&file, rendered.probes_yaml()).expect("writing probes.yaml");
    let (code, stdout, stderr) = run_pullprobe(&["validate", "--no-files", "-c", &file.display().to_string()]);
    assert_eq!(code, 0, "pullprobe validate of {name}:\n{stdout}{stderr}\n{}", rendered.probes_yaml());
}

#[test]
fn every_cloud_example_renders_validates_and_carries_its_identity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let examples = example_files("cloud");
    let mut clouds = Vec::new();
    for example in &examples {
        let name = example.file_stem().and_then(|s| s.to_str()).expect("example name").to_string();
        let values: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(example).expect("example")).expect("example YAML");
        let chart = chart_dir().display().to_string();
        let file = example.display().to_string();
        let lint = helm(&["lint", &chart, "--strict", "--kube-version", KUBERNETES_VERSION, "--values", &file]);
        assert_eq!(lint.code, 0, "helm lint {name}:\n{}{}", lint.stdout, lint.stderr);

        let rendered = Rendered::of(&Values::file(example));
        for kind in validate_manifests(&rendered, dir.path(), &name) {
            assert!(
                matches!(kind.as_str(), "ServiceMonitor" | "PrometheusRule"),
                "{name}: {kind} is validated by nothing"
            );
        }
        let account = rendered.get("ServiceAccount");
        let annotations = &account["metadata"]["annotations"];
        let pod = rendered.pod_spec();
        assert_eq!(pod["serviceAccountName"], account["metadata"]["name"], "{name}: the pods run as the account");
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}: the clouds project their own tokens");

        let identity = &values["workloadIdentity"];
        let cloud_auth = |registry: &Value| registry["auth"].clone();
        let auths: Vec<Value> =
            rendered.config()["registries"].as_array().expect("registries").iter().map(cloud_auth).collect();
        if let Some(role) = identity["aws"]["roleArn"].as_str() {
            clouds.push("aws");
            assert_eq!(annotations[AWS_ROLE], role, "{name}");
            assert!(auths.contains(&json!({"ecr": {}})), "{name}: {auths:?}");
        }
        if let Some(account_email) = identity["gcp"]["serviceAccount"].as_str() {
            clouds.push("gcp");
            assert_eq!(annotations[GCP_ACCOUNT], account_email, "{name}");
            assert!(auths.contains(&json!({"gcp": {}})) && auths.contains(&json!("auto")), "{name}: {auths:?}");
        }
        if let Some(client) = identity["azure"]["clientId"].as_str() {
            clouds.push("azure");
            assert_eq!(annotations[AZURE_CLIENT], client, "{name}");
            assert_eq!(annotations[AZURE_TENANT], identity["azure"]["tenantId"], "{name}");
            assert_eq!(account["metadata"]["labels"][AZURE_USE], "true", "{name}");
            assert_eq!(pod_labels(&rendered)[AZURE_USE], "true", "{name}: the webhook acts on labelled pods");
            assert!(auths.contains(&json!({"acr": {}})), "{name}: {auths:?}");
        } else {
            assert!(pod_labels(&rendered)[AZURE_USE].is_null(), "{name}");
        }
        // No secret of any kind in the chart's output: the identity is all annotations.
        assert!(rendered.find("Secret").is_none(), "{name}");
        assert_probes_yaml_validates(&rendered, dir.path(), &name);
    }
    clouds.sort();
    assert_eq!(clouds, ["aws", "azure", "gcp"], "one example per cloud: {examples:?}");
}

#[test]
fn service_account_settings_render_and_validate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let probes = json!({"probes": [{"name": "app", "image": "registry.example.org/team/app:1"}]});
    let render = |name: &str, extra: Value| {
        let mut values = json!({"config": probes});
        values.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
        let rendered = Rendered::of(&Values::json(dir.path(), name, &values));
        validate_manifests(&rendered, dir.path(), name);
        rendered
    };

    // Nothing asked for: no account, the namespace's default one, no token.
    let plain = render("plain", json!({}));
    assert!(plain.find("ServiceAccount").is_none());
    assert!(plain.pod_spec()["serviceAccountName"].is_null());

    // An account of the chart's with extra annotations and labels (EKS Pod Identity associates a role with it).
    let created = render(
        "created",
        json!({"serviceAccount": {"create": true, "name": "prober", "annotations": {"team": "sre"}, "labels": {"tier": "ops"}}}),
    );
    let account = created.get("ServiceAccount");
    assert_eq!(account["metadata"]["name"], "prober");
    assert_eq!(account["metadata"]["annotations"], json!({"team": "sre"}));
    assert_eq!(account["metadata"]["labels"]["tier"], "ops");
    assert_eq!(created.pod_spec()["serviceAccountName"], "prober");
    assert_eq!(created.pod_spec()["automountServiceAccountToken"], false);

    // An account that exists already: used, not created.
    let existing = render("existing", json!({"serviceAccount": {"name": "made-by-eksctl"}}));
    assert!(existing.find("ServiceAccount").is_none());
    assert_eq!(existing.pod_spec()["serviceAccountName"], "made-by-eksctl");

    // Discovery and a cloud identity share one account: annotated, bound by the RBAC, its token mounted.
    let both = render(
        "discovery-and-ecr",
        json!({"mode": "deployment", "discovery": {"kubernetes": {"enabled": true}},
               "workloadIdentity": {"aws": {"roleArn": "arn:aws:iam::123456789012:role/pullprobe"}}}),
    );
    let accounts: Vec<&Value> = both.objects.iter().filter(|o| o["kind"] == "ServiceAccount").collect();
    assert_eq!(accounts.len(), 1, "{:?}", both.kinds());
    let name = &accounts[0]["metadata"]["name"];
    assert_eq!(accounts[0]["metadata"]["annotations"][AWS_ROLE], "arn:aws:iam::123456789012:role/pullprobe");
    assert_eq!(both.get("ClusterRoleBinding")["subjects"][0]["name"], *name);
    assert_eq!(both.pod_spec()["serviceAccountName"], *name);
    assert_eq!(both.pod_spec()["automountServiceAccountToken"], true);
}

#[test]
fn bad_identities_fail_with_the_schema_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        ("role", json!({"workloadIdentity": {"aws": {"roleArn": "pullprobe"}}}), "roleArn"),
        ("gsa", json!({"workloadIdentity": {"gcp": {"serviceAccount": "pullprobe@example.org"}}}), "serviceAccount"),
        ("client", json!({"workloadIdentity": {"azure": {"clientId": "my-app"}}}), "clientId"),
        ("typo", json!({"workloadIdentity": {"aws": {"role": "x"}}}), "role"),
        ("account", json!({"serviceAccount": {"create": "yes"}}), "create"),
    ];
    for (name, extra, needle) in cases {
        let mut values = json!({"config": {"probes": [{"name": "app", "image": "registry.example.org/a:1"}]}});
        values.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
        let error = template(&Values::json(dir.path(), name, &values)).expect_err(name);
        assert!(error.contains("values don't meet the specifications of the schema"), "{name}: {error}");
        assert!(error.contains(needle), "{name}: the error names {needle:?}: {error}");
    }
    // Two cloud forms in one `auth:` are refused before they reach the binary.
    let values = json!({"config": {
        "registries": [{"name": "r", "url": "https://r.example.org", "auth": {"ecr": {}, "gcp": {}}}],
        "probes": [{"name": "app", "registry": "r", "image": "a:1"}]}});
    let error = template(&Values::json(dir.path(), "two-forms", &values)).expect_err("two auth forms");
    assert!(error.contains("auth"), "{error}");
}
