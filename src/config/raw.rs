//! probes.yaml exactly as written: serde shapes with `deny_unknown_fields` and
//! source positions ([`Spanned`]) on every value checked later. Values that need
//! parsing (durations, sizes, URLs, references) stay text here; `validate`
//! turns this into the typed [`Config`](super::Config).

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::{IpFamily, Severity};

pub(super) type Text = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub defaults: Option<RawDefaults>,
    pub limits: Option<RawLimits>,
    pub registries: Option<Vec<RawRegistry>>,
    pub probes: Option<Vec<RawProbe>>,
    pub alerting: Option<RawAlerting>,
    pub serve: Option<RawServe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub platforms: Option<Spanned<RawPlatforms>>,
    pub location: Option<Text>,
    pub concurrency: Option<Spanned<u64>>,
}

/// `all`, one platform, or a list of platforms.
pub(super) type RawPlatforms = ScalarOr<Vec<Text>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub max_manifest_bytes: Option<Text>,
    pub max_pull_bytes: Option<Text>,
    pub max_round_bytes: Option<Text>,
    pub max_uncompressed_ratio: Option<Spanned<f64>>,
    pub max_uncompressed_bytes: Option<Text>,
    pub max_redirects: Option<Spanned<u64>>,
    pub max_bytes_per_second: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub name: Text,
    pub url: Text,
    pub frontends: Option<Spanned<RawFrontends>>,
    pub ip_family: Option<IpFamily>,
    /// `auto`, or a map of one form.
    pub auth: Option<Spanned<ScalarOr<RawAuth>>>,
    pub tls: Option<Spanned<RawTls>>,
}

/// `dns`, `single`, a list of addresses and `{name, url, …}` maps, or a node's
/// mirror configuration (`{containerd: DIR}`, `{registries_conf: FILE}`).
pub(super) type RawFrontends = ScalarOr<RawFrontendForm>;

/// The structured forms of `frontends:`: a list, or a map naming a node's mirror configuration.
#[derive(Debug)]
pub(super) enum RawFrontendForm {
    List(Vec<Spanned<ScalarOr<RawFrontendEndpoint>>>),
    Node(RawNodeMirrors),
}

/// `{containerd: /etc/containerd/certs.d}` or `{registries_conf: /etc/containers/registries.conf}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNodeMirrors {
    pub containerd: Option<Text>,
    pub registries_conf: Option<Text>,
}

impl<'de> Deserialize<'de> for RawFrontendForm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FrontendFormVisitor)
    }
}

struct FrontendFormVisitor;

impl<'de> Visitor<'de> for FrontendFormVisitor {
    type Value = RawFrontendForm;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of frontends, or a map {containerd: DIR} or {registries_conf: FILE}")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Deserialize::deserialize(SeqAccessDeserializer::new(seq)).map(RawFrontendForm::List)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Deserialize::deserialize(MapAccessDeserializer::new(map)).map(RawFrontendForm::Node)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFrontendEndpoint {
    pub name: Text,
    pub url: Text,
    pub repository_prefix: Option<Text>,
    pub ns: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    /// `true`, `false` or a path.
    pub docker_config: Option<Spanned<Scalar>>,
    pub username: Option<Text>,
    pub password_file: Option<Text>,
    pub password_env: Option<Text>,
    pub ecr: Option<Spanned<RawCloudIdentity>>,
    pub gcp: Option<Spanned<RawCloudIdentity>>,
    pub acr: Option<Spanned<RawCloudIdentity>>,
    pub credential_provider: Option<Spanned<RawCredentialProvider>>,
}

/// `{}`: a cloud identity takes everything from the workload's environment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCloudIdentity {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentialProvider {
    pub command: Text,
    pub args: Option<Vec<Text>>,
    pub env: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub ca_file: Option<Text>,
    pub client_cert: Option<Text>,
    pub client_key: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    pub name: Text,
    pub registry: Option<Text>,
    pub image: Option<Text>,
    pub tags: Option<Spanned<RawTags>>,
    pub catalog: Option<Spanned<RawCatalog>>,
    pub kubernetes: Option<Spanned<RawKubernetes>>,
    pub canary: Option<Spanned<RawCanary>>,
    pub severity: Option<Severity>,
    pub expect: Option<Spanned<RawExpect>>,
    pub signatures: Option<Spanned<RawSignatures>>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub platforms: Option<Spanned<RawPlatforms>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTags {
    #[serde(rename = "match")]
    pub pattern: Text,
    pub newest: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCatalog {
    #[serde(rename = "match")]
    pub pattern: Option<Text>,
    pub sample: Option<Spanned<u64>>,
    pub tag: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKubernetes {
    pub namespaces: Option<Vec<Text>>,
    pub label_selector: Option<Text>,
    pub api_server: Option<Text>,
    pub token_file: Option<Text>,
    pub ca_file: Option<Text>,
    pub pull_secrets: Option<bool>,
    pub max_images: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCanary {
    pub repository: Text,
    pub consistency_deadline: Option<Text>,
    pub size: Option<Text>,
    pub chunk_size: Option<Text>,
    pub sessions: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    pub paths: Option<Vec<Spanned<ScalarOr<RawPathExpect>>>>,
    pub max_age: Option<Text>,
    pub labels: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignatures {
    pub require: Option<Spanned<Vec<Text>>>,
    pub keys: Option<Vec<Text>>,
    pub platforms: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPathExpect {
    pub path: Text,
    #[serde(default)]
    pub absent: bool,
    #[serde(rename = "type")]
    pub kind: Option<Text>,
    pub min_size: Option<Text>,
    /// Octal as written (`"0755"`, `0755`, `4755`); kept as text so YAML's integer rules never reinterpret it.
    pub mode: Option<Text>,
    pub sha256: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerting {
    pub alertmanager: Option<Spanned<RawAlertmanager>>,
    pub pushgateway: Option<RawPushgateway>,
    /// A number of runs, or `{default: N, integrity: N}`.
    pub after: Option<Spanned<ScalarOr<RawAfter>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlertmanager {
    pub urls: Vec<Text>,
    pub labels: Option<Spanned<BTreeMap<String, String>>>,
    pub runbook_url: Option<Text>,
    pub resolve_timeout: Option<Text>,
    pub auth: Option<Spanned<RawEndpointAuth>>,
    pub tls: Option<Spanned<RawTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPushgateway {
    pub url: Text,
    pub job: Option<Text>,
    pub auth: Option<Spanned<RawEndpointAuth>>,
    pub tls: Option<Spanned<RawTls>>,
}

/// Credentials for Alertmanager or the Pushgateway: basic or bearer, secrets from a file or the environment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpointAuth {
    pub username: Option<Text>,
    pub password_file: Option<Text>,
    pub password_env: Option<Text>,
    pub bearer_token_file: Option<Text>,
    pub bearer_token_env: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAfter {
    pub default: Option<Spanned<u64>>,
    pub integrity: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServe {
    pub allow_targets: Option<Vec<Text>>,
}

/// A YAML scalar of any type, kept for a message that names what was written.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar {
    Text(String),
    Bool(bool),
    Integer(i128),
    Float(f64),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Text(s) => write!(f, "{s:?}"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Integer(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
        }
    }
}

/// A scalar or a structured value (a map or a list) of type `T`: for keys
/// with a short and a long form, such as `frontends: dns` or `frontends: [...]`.
#[derive(Debug)]
pub(super) enum ScalarOr<T> {
    Scalar(Scalar),
    Structured(T),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match ScalarOr::<Never>::deserialize(deserializer)? {
            ScalarOr::Scalar(scalar) => Ok(scalar),
            ScalarOr::Structured(never) => match never {},
        }
    }
}

/// Refuses every map and list, for [`Scalar`].
#[derive(Debug)]
pub(super) enum Never {}

impl<'de> Deserialize<'de> for Never {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(de::Error::custom("expected a single value, not a map or a list"))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ScalarOr<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarOrVisitor(PhantomData))
    }
}

struct ScalarOrVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ScalarOrVisitor<T> {
    type Value = ScalarOr<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value, a map or a list")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(ScalarOr::Scalar(Scalar::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(ScalarOr::Scalar(Scalar::Integer(v.into())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(ScalarOr::Scalar(Scalar::Integer(v.into())))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        Ok(ScalarOr::Scalar(Scalar::Integer(v)))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        Ok(ScalarOr::Scalar(Scalar::Integer(i128::try_from(v).unwrap_or(i128::MAX))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(ScalarOr::Scalar(Scalar::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(ScalarOr::Scalar(Scalar::Text(v.to_string())))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(ScalarOr::Structured)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        T::deserialize(SeqAccessDeserializer::new(seq)).map(ScalarOr::Structured)
    }
}
