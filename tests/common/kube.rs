//! A Kubernetes API server stand-in (no API server is installable here): an
//! axum server on loopback, over HTTPS with a certificate of a test CA
//! ([`super::pki`]), that demands a bearer token and answers as the real API
//! does for what `kubernetes:` discovery asks:
//!
//! - list requests (`/api/v1[/namespaces/NS]/pods`, `/apis/apps/v1/…`,
//!   `/apis/batch/v1/…`) with `labelSelector` (equality requirements), `limit`
//!   and `continue`: `{"kind": "PodList", "apiVersion": "v1", "metadata":
//!   {"resourceVersion", "continue"}, "items": [...]}`, items without `kind`;
//! - `GET /api/v1/namespaces/NS/secrets/NAME`;
//! - refusals as `Status` objects (`401 Unauthorized`, `403 Forbidden` with the
//!   API's message naming the user, verb, resource and namespace, `404 NotFound`).
//!
//! The fixtures ([`pod`], [`deployment`], [`cronjob`], [`pull_secret`]) are
//! shaped as `kubectl get -o json` prints them, status and bookkeeping fields
//! included, so that discovery is shown to read only what it needs.
//! Faults: a page cap that forces pagination, 403 on chosen paths, a raw body
//! on chosen paths (garbage JSON), a stall.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use super::pki::TestCa;

/// The service account the stand-in says a 403 was for.
pub const SERVICE_ACCOUNT: &str = "system:serviceaccount:monitoring:pullprobe";

/// One request the stand-in answered.
#[derive(Debug, Clone)]
pub struct KubeRequest {
    pub path: String,
    /// Query parameters, decoded.
    pub query: Vec<(String, String)>,
    /// It carried `Authorization: Bearer <the token>`.
    pub authorized: bool,
}

impl KubeRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Objects {
    /// resource (`pods`, `deployments`, …) → objects, each with `metadata.namespace`.
    collections: BTreeMap<String, Vec<Value>>,
    /// (namespace, name) → Secret.
    secrets: BTreeMap<(String, String), Value>,
    /// Paths answered 403.
    forbidden: Vec<String>,
    /// Paths answered 200 with this body as is.
    raw: BTreeMap<String, String>,
    /// Paths that stall (no answer for a minute).
    stalled: Vec<String>,
    /// Most items per page, whatever `limit` asks (0: as asked).
    page_cap: usize,
}

struct KubeState {
    token: String,
    objects: Mutex<Objects>,
    requests: Mutex<Vec<KubeRequest>>,
}

/// A running API stand-in; it stops with the test's runtime.
pub struct KubeApi {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The CA that signed its certificate (`ca_file:`).
    pub ca_file: PathBuf,
    /// The bearer token it accepts (`token_file:`).
    pub token_file: PathBuf,
    pub token: String,
    state: Arc<KubeState>,
    _dir: TempDir,
}

impl KubeApi {
    pub async fn start() -> KubeApi {
        let dir = tempfile::Builder::new().prefix("pullprobe-kube-").tempdir().expect("temp dir");
        let ca = TestCa::new(dir.path(), "kube");
        let server = ca.server("kube-apiserver", &["127.0.0.1", "kubernetes.default.svc"], 30);
        let token = format!("kube-token-{}", std::process::id());
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).expect("writing the token");
        let state = Arc::new(KubeState { token: token.clone(), objects: Mutex::default(), requests: Mutex::default() });
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = tcp.local_addr().expect("address").port();
        let listener = TlsListener { tcp, acceptor: acceptor(&server.cert, &server.key) };
        let app = Router::new().fallback(answer).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        KubeApi {
            url: format!("https://127.0.0.1:{port}"),
            ca_file: ca.cert.clone(),
            token_file,
            token,
            state,
            _dir: dir,
        }
    }

    /// Add objects of `resource` (`pods`, `deployments`, `statefulsets`, `daemonsets`, `jobs`, `cronjobs`).
    pub fn add(&self, resource: &str, objects: impl IntoIterator<Item = Value>) {
        let mut o = self.state.objects.lock().unwrap();
        o.collections.entry(resource.to_string()).or_default().extend(objects);
    }

    pub fn add_secret(&self, secret: Value) {
        let ns = secret["metadata"]["namespace"].as_str().expect("secret namespace").to_string();
        let name = secret["metadata"]["name"].as_str().expect("secret name").to_string();
        self.state.objects.lock().unwrap().secrets.insert((ns, name), secret);
    }

    /// Answer at most `n` items per page (the API may send fewer than `limit`).
    pub fn cap_pages(&self, n: usize) {
        self.state.objects.lock().unwrap().page_cap = n;
    }

    /// Answer `path` with 403, as RBAC does.
    pub fn forbid(&self, path: &str) {
        self.state.objects.lock().unwrap().forbidden.push(path.to_string());
    }

    /// Answer `path` with 200 and `body` as is.
    pub fn answer_raw(&self, path: &str, body: &str) {
        self.state.objects.lock().unwrap().raw.insert(path.to_string(), body.to_string());
    }

    /// Never answer `path` (for a minute).
    pub fn stall(&self, path: &str) {
        self.state.objects.lock().unwrap().stalled.push(path.to_string());
    }

    pub fn requests(&self) -> Vec<KubeRequest> {
        self.state.requests.lock().unwrap().clone()
    }
}

fn acceptor(cert: &Path, key: &Path) -> TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert).expect("cert").collect::<Result<Vec<_>, _>>().expect("cert PEM");
    let key = PrivateKeyDer::from_pem_file(key).expect("key PEM");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
    TlsAcceptor::from(Arc::new(config))
}

/// TCP accept plus the TLS handshake; a failed handshake is dropped and the next accepted.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else { continue };
            let handshake = tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(stream));
            if let Ok(Ok(tls)) = handshake.await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn status(code: StatusCode, reason: &str, message: &str, details: Value) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": details, "code": code.as_u16(),
    });
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn answer(State(state): State<Arc<KubeState>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes()).into_owned().collect();
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", state.token));
    state.requests.lock().unwrap().push(KubeRequest { path: path.clone(), query: query.clone(), authorized });
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized", json!({}));
    }
    let stalled = state.objects.lock().unwrap().stalled.contains(&path);
    if stalled {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let objects = state.objects.lock().unwrap();
    let request = parse_path(&path);
    if objects.forbidden.contains(&path) {
        let (verb, resource, group, ns) = match &request {
            Some(Path_::List { group, resource, namespace }) => {
                ("list", resource.as_str(), group.as_str(), namespace.clone())
            }
            Some(Path_::Secret { namespace, .. }) => ("get", "secrets", "", Some(namespace.clone())),
            None => ("get", "unknown", "", None),
        };
        let scope = match &ns {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".to_string(),
        };
        let message = format!(
            "{resource} is forbidden: User \"{SERVICE_ACCOUNT}\" cannot {verb} resource \"{resource}\" in API group \"{group}\"{scope}"
        );
        return status(StatusCode::FORBIDDEN, "Forbidden", &message, json!({"kind": resource}));
    }
    if let Some(body) = objects.raw.get(&path) {
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.clone()).into_response();
    }
    match request {
        Some(Path_::Secret { namespace, name }) => match objects.secrets.get(&(namespace, name.clone())) {
            Some(secret) => ([(header::CONTENT_TYPE, "application/json")], secret.to_string()).into_response(),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("secrets \"{name}\" not found"),
                json!({"name": name, "kind": "secrets"}),
            ),
        },
        Some(Path_::List { group, resource, namespace }) => {
            let Some(list_kind) = list_kind(&group, &resource) else {
                return not_found();
            };
            let selector: Vec<(String, String)> = query
                .iter()
                .find(|(k, _)| k == "labelSelector")
                .map(|(_, s)| {
                    s.split(',')
                        .filter_map(|r| r.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
                        .collect()
                })
                .unwrap_or_default();
            let matching: Vec<&Value> = objects
                .collections
                .get(&resource)
                .into_iter()
                .flatten()
                .filter(|o| namespace.as_ref().is_none_or(|ns| o["metadata"]["namespace"] == ns.as_str()))
                .filter(|o| selector.iter().all(|(k, v)| o["metadata"]["labels"][k] == v.as_str()))
                .collect();
            let offset: usize = query
                .iter()
                .find(|(k, _)| k == "continue")
                .and_then(|(_, token)| base64::engine::general_purpose::STANDARD.decode(token).ok())
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| text.strip_prefix(&format!("{resource}:"))?.parse().ok())
                .unwrap_or(0);
            let mut limit: usize =
                query.iter().find(|(k, _)| k == "limit").and_then(|(_, l)| l.parse().ok()).unwrap_or(usize::MAX);
            if objects.page_cap > 0 {
                limit = limit.min(objects.page_cap);
            }
            let page: Vec<&Value> = matching.iter().skip(offset).take(limit).copied().collect();
            let mut metadata = json!({"resourceVersion": "48151623"});
            if offset + page.len() < matching.len() {
                let token = format!("{resource}:{}", offset + page.len());
                metadata["continue"] = json!(base64::engine::general_purpose::STANDARD.encode(token));
                metadata["remainingItemCount"] = json!(matching.len() - offset - page.len());
            }
            let api_version = if group.is_empty() { "v1".to_string() } else { format!("{group}/v1") };
            let body = json!({"kind": list_kind, "apiVersion": api_version, "metadata": metadata, "items": page});
            ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
        None => not_found(),
    }
}

fn not_found() -> Response {
    status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource", json!({}))
}

fn list_kind(group: &str, resource: &str) -> Option<&'static str> {
    Some(match (group, resource) {
        ("", "pods") => "PodList",
        ("apps", "deployments") => "DeploymentList",
        ("apps", "statefulsets") => "StatefulSetList",
        ("apps", "daemonsets") => "DaemonSetList",
        ("batch", "jobs") => "JobList",
        ("batch", "cronjobs") => "CronJobList",
        _ => return None,
    })
}

/// What a path asks for.
enum Path_ {
    List { group: String, resource: String, namespace: Option<String> },
    Secret { namespace: String, name: String },
}

fn parse_path(path: &str) -> Option<Path_> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => return None,
    };
    match rest {
        ["namespaces", ns, "secrets", name] if group.is_empty() => {
            Some(Path_::Secret { namespace: ns.to_string(), name: name.to_string() })
        }
        ["namespaces", ns, resource] => {
            Some(Path_::List { group: group.into(), resource: resource.to_string(), namespace: Some(ns.to_string()) })
        }
        [resource] => Some(Path_::List { group: group.into(), resource: resource.to_string(), namespace: None }),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Fixtures in the API's JSON shape.

/// A container as the API returns it (defaults filled in by admission).
fn container(name: &str, image: &str) -> Value {
    json!({
        "name": name,
        "image": image,
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "10m", "memory": "64Mi"}},
        "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true,
                          "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent"
    })
}

/// What runs in a pod: containers, init containers, ephemeral containers and pull secrets.
#[derive(Debug, Clone, Default)]
pub struct PodSpec<'a> {
    pub containers: &'a [&'a str],
    pub init: &'a [&'a str],
    pub ephemeral: &'a [&'a str],
    pub pull_secrets: &'a [&'a str],
}

impl<'a> PodSpec<'a> {
    pub fn images(containers: &'a [&'a str]) -> Self {
        PodSpec { containers, ..PodSpec::default() }
    }

    pub fn with_pull_secrets(mut self, names: &'a [&'a str]) -> Self {
        self.pull_secrets = names;
        self
    }

    fn json(&self) -> Value {
        let named = |prefix: &str, images: &[&str]| -> Vec<Value> {
            images.iter().enumerate().map(|(i, image)| container(&format!("{prefix}{i}"), image)).collect()
        };
        let mut spec = json!({
            "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
            ], "defaultMode": 420}}],
            "containers": named("app-", self.containers),
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": 300}],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        });
        if !self.init.is_empty() {
            spec["initContainers"] = json!(named("init-", self.init));
        }
        if !self.ephemeral.is_empty() {
            let ephemeral: Vec<Value> = self
                .ephemeral
                .iter()
                .enumerate()
                .map(|(i, image)| {
                    json!({"name": format!("debugger-{i}"), "image": image, "resources": {},
                           "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent",
                           "stdin": true, "tty": true, "targetContainerName": "app-0"})
                })
                .collect();
            spec["ephemeralContainers"] = json!(ephemeral);
        }
        if !self.pull_secrets.is_empty() {
            let names: Vec<Value> = self.pull_secrets.iter().map(|n| json!({"name": n})).collect();
            spec["imagePullSecrets"] = json!(names);
        }
        spec
    }
}

fn metadata(namespace: &str, name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({
        "name": name,
        "namespace": namespace,
        "uid": format!("5f0c7a2e-{:04x}-4b1e-9a57-3c6d2b8e1f40", name.len() * 7919 % 65536),
        "resourceVersion": "48151602",
        "generation": 1,
        "creationTimestamp": "2026-11-20T08:14:03Z",
        "labels": labels,
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\"}\n"},
        "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
                           "time": "2026-11-20T08:14:03Z", "fieldsType": "FieldsV1",
                           "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}}]
    })
}

/// A running Pod, as `kubectl get pods -o json` lists it.
pub fn pod(namespace: &str, name: &str, labels: &[(&str, &str)], spec: &PodSpec) -> Value {
    let statuses: Vec<Value> = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, image)| {
            json!({"name": format!("app-{i}"), "state": {"running": {"startedAt": "2026-11-20T08:14:09Z"}},
                   "lastState": {}, "ready": true, "restartCount": 0, "image": image,
                   "imageID": "docker-pullable://example@sha256:3d2f6c0b8a4e5f1c9d7b2a6e8f0c4d1b3a5e7f9c2d4b6a8e0f1c3d5b7a9e2f4c",
                   "containerID": "containerd://9b1e4f", "started": true})
        })
        .collect();
    let mut meta = metadata(namespace, name, labels);
    meta["generateName"] = json!(format!("{name}-"));
    let mut pod_spec = spec.json();
    pod_spec["nodeName"] = json!("worker-3");
    json!({
        "metadata": meta,
        "spec": pod_spec,
        "status": {"phase": "Running", "hostIP": "10.64.0.12", "podIP": "10.67.1.23",
                   "podIPs": [{"ip": "10.67.1.23"}], "startTime": "2026-11-20T08:14:03Z",
                   "qosClass": "Burstable", "containerStatuses": statuses,
                   "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null,
                                   "lastTransitionTime": "2026-11-20T08:14:10Z"}]}
    })
}

fn template(labels: &[(&str, &str)], spec: &PodSpec) -> Value {
    let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let mut pod_spec = spec.json();
    pod_spec.as_object_mut().expect("spec").remove("volumes");
    json!({"metadata": {"creationTimestamp": null, "labels": labels}, "spec": pod_spec})
}

/// A Deployment (also the shape of a StatefulSet's and a DaemonSet's `spec.template`).
pub fn deployment(namespace: &str, name: &str, labels: &[(&str, &str)], spec: &PodSpec) -> Value {
    json!({
        "metadata": metadata(namespace, name, labels),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": template(&[("app", name)], spec),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600
        },
        "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
                   "availableReplicas": 3,
                   "conditions": [{"type": "Available", "status": "True", "lastUpdateTime": "2026-11-20T08:14:12Z",
                                   "lastTransitionTime": "2026-11-20T08:14:12Z", "reason": "MinimumReplicasAvailable",
                                   "message": "Deployment has minimum availability."}]}
    })
}

/// A CronJob: its pod spec at `spec.jobTemplate.spec.template.spec`.
pub fn cronjob(namespace: &str, name: &str, labels: &[(&str, &str)], spec: &PodSpec) -> Value {
    let mut template = template(&[], spec);
    template["spec"]["restartPolicy"] = json!("OnFailure");
    json!({
        "metadata": metadata(namespace, name, labels),
        "spec": {
            "schedule": "*/15 * * * *",
            "concurrencyPolicy": "Forbid",
            "suspend": false,
            "jobTemplate": {"metadata": {"creationTimestamp": null},
                            "spec": {"backoffLimit": 0, "template": template}},
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 1
        },
        "status": {"lastScheduleTime": "2026-11-23T06:00:00Z", "lastSuccessfulTime": "2026-11-23T06:00:41Z"}
    })
}

/// A Job (`spec.template`), as a CronJob's run or on its own.
pub fn job(namespace: &str, name: &str, labels: &[(&str, &str)], spec: &PodSpec) -> Value {
    let mut template = template(&[], spec);
    template["spec"]["restartPolicy"] = json!("Never");
    json!({
        "metadata": metadata(namespace, name, labels),
        "spec": {"parallelism": 1, "completions": 1, "backoffLimit": 0, "completionMode": "NonIndexed",
                 "suspend": false, "template": template},
        "status": {"startTime": "2026-11-23T06:00:02Z", "completionTime": "2026-11-23T06:00:41Z", "succeeded": 1}
    })
}

/// An image pull Secret: `kubectl create secret docker-registry` (type
/// `kubernetes.io/dockerconfigjson`) or the legacy `kubernetes.io/dockercfg`.
/// `entries` are (registry key, user, password).
pub fn pull_secret(namespace: &str, name: &str, legacy: bool, entries: &[(&str, &str, &str)]) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let auths: serde_json::Map<String, Value> = entries
        .iter()
        .map(|(key, user, password)| {
            (
                key.to_string(),
                json!({"username": user, "password": password, "auth": b64(&format!("{user}:{password}"))}),
            )
        })
        .collect();
    let (secret_type, key, payload) = if legacy {
        ("kubernetes.io/dockercfg", ".dockercfg", Value::Object(auths))
    } else {
        ("kubernetes.io/dockerconfigjson", ".dockerconfigjson", json!({"auths": auths}))
    };
    let mut meta = metadata(namespace, name, &[]);
    meta.as_object_mut().expect("metadata").remove("generation");
    json!({
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": meta,
        "data": {key: b64(&payload.to_string())},
        "type": secret_type
    })
}

/// A Secret of another type (an Opaque one).
pub fn opaque_secret(namespace: &str, name: &str) -> Value {
    json!({"kind": "Secret", "apiVersion": "v1", "metadata": metadata(namespace, name, &[]),
           "data": {"password": "aHVudGVyMg=="}, "type": "Opaque"})
}
