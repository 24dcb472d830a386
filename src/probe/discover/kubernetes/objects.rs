//! The parts of Kubernetes API objects that discovery reads, as the API server
//! writes them in JSON: list pages (`items`, `metadata.continue`), the pod specs
//! of Pods and of workload templates, image pull Secrets, and the `Status` of a
//! refused request. Every other field is ignored; every field read may be absent.

use serde::Deserialize;

/// The workload kinds listed, in the order they are listed: templates first, so
/// that `used_by` names the Deployment rather than one of its Pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
    CronJob,
    Job,
    Pod,
}

impl Kind {
    pub const ALL: [Kind; 6] =
        [Kind::Deployment, Kind::StatefulSet, Kind::DaemonSet, Kind::CronJob, Kind::Job, Kind::Pod];

    /// The API group (`""` for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Pod => "",
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet => "apps",
            Kind::Job | Kind::CronJob => "batch",
        }
    }

    /// The resource name in URLs and RBAC rules.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::DaemonSet => "daemonsets",
            Kind::Job => "jobs",
            Kind::CronJob => "cronjobs",
        }
    }

    /// Lowercase, as `kubectl get` names it: `prod/deployment/web`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::DaemonSet => "daemonset",
            Kind::Job => "job",
            Kind::CronJob => "cronjob",
        }
    }

    /// The `kind` of a page of this resource (`PodList`).
    pub fn list_kind(self) -> &'static str {
        match self {
            Kind::Pod => "PodList",
            Kind::Deployment => "DeploymentList",
            Kind::StatefulSet => "StatefulSetList",
            Kind::DaemonSet => "DaemonSetList",
            Kind::Job => "JobList",
            Kind::CronJob => "CronJobList",
        }
    }

    /// The collection path: `/api/v1/namespaces/prod/pods`, or `/apis/apps/v1/deployments` for every namespace.
    pub fn path(self, namespace: Option<&str>) -> String {
        let prefix = match self.group() {
            "" => "/api/v1".to_string(),
            group => format!("/apis/{group}/v1"),
        };
        match namespace {
            Some(ns) => format!("{prefix}/namespaces/{ns}/{}", self.resource()),
            None => format!("{prefix}/{}", self.resource()),
        }
    }

    /// The pod spec an object of this kind runs: a Pod's own, a workload's
    /// `spec.template.spec`, a CronJob's `spec.jobTemplate.spec.template.spec`.
    pub fn pod_spec(self, object: &Object) -> Option<&Spec> {
        let spec = object.spec.as_ref()?;
        match self {
            Kind::Pod => Some(spec),
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::Job => {
                spec.template.as_ref()?.spec.as_deref()
            }
            Kind::CronJob => spec.job_template.as_ref()?.spec.as_ref()?.template.as_ref()?.spec.as_deref(),
        }
    }
}

/// One page of a list (`PodList`, `DeploymentList`, …).
#[derive(Debug, Deserialize)]
pub struct List {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: Option<ListMeta>,
    #[serde(default)]
    pub items: Option<Vec<Object>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListMeta {
    /// Set when more pages follow; empty or absent on the last one.
    #[serde(rename = "continue", default)]
    pub continue_token: Option<String>,
}

/// A Pod or a workload: its name and the part of its spec that holds pod specs.
#[derive(Debug, Deserialize)]
pub struct Object {
    #[serde(default)]
    pub metadata: Option<ObjectMeta>,
    #[serde(default)]
    pub spec: Option<Spec>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// A PodSpec, a workload spec (`template`) or a CronJob spec (`jobTemplate`): one
/// shape for all three, since each reads only its own fields.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default)]
    pub containers: Option<Vec<Container>>,
    #[serde(default)]
    pub init_containers: Option<Vec<Container>>,
    #[serde(default)]
    pub ephemeral_containers: Option<Vec<Container>>,
    #[serde(default)]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    #[serde(default)]
    pub template: Option<PodTemplate>,
    #[serde(default)]
    pub job_template: Option<JobTemplate>,
}

impl Spec {
    /// Every container of the pod: `(container name, image)`.
    pub fn images(&self) -> impl Iterator<Item = (&str, &str)> {
        [&self.init_containers, &self.containers, &self.ephemeral_containers]
            .into_iter()
            .flat_map(|list| list.iter().flatten())
            .map(|c| (c.name.as_deref().unwrap_or("?"), c.image.as_deref().unwrap_or("")))
    }

    /// The names in `imagePullSecrets`, in order.
    pub fn pull_secrets(&self) -> Vec<String> {
        self.image_pull_secrets.iter().flatten().filter_map(|s| s.name.clone()).filter(|n| !n.is_empty()).collect()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Container {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LocalObjectReference {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PodTemplate {
    #[serde(default)]
    pub spec: Option<Box<Spec>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct JobTemplate {
    #[serde(default)]
    pub spec: Option<Box<Spec>>,
}

/// An image pull Secret: its type and the two payloads the kubelet reads (base64).
/// No `Debug`: the payload is a secret.
#[derive(Deserialize)]
pub struct Secret {
    #[serde(rename = "type", default)]
    pub secret_type: Option<String>,
    #[serde(default)]
    pub data: Option<SecretData>,
}

#[derive(Default, Deserialize)]
pub struct SecretData {
    #[serde(rename = ".dockerconfigjson", default)]
    pub docker_config_json: Option<String>,
    #[serde(rename = ".dockercfg", default)]
    pub docker_cfg: Option<String>,
}

/// The body of a refused request (`kind: Status`).
#[derive(Debug, Default, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}
