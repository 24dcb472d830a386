//! Pushgateway (CronJob mode): the gauges of [`metrics::gauge_families`],
//! pushed with `POST` (which replaces only the metric names pushed) to the
//! group `job`/`probe`/`location`, in the protobuf delimited format so the
//! types survive; and the read-back of those groups (`GET /api/v1/metrics`)
//! that gives a fresh process the [`History`] that `serve` keeps in memory.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use prost::Message as _;
use serde::Deserialize;

use crate::config::PushgatewayConfig;
use crate::output::gauge_family::GaugeFamily;
use crate::output::history::{History, SeriesHistory, SeriesKey};
use crate::output::http::{DeliveryError, EndpointClient, RetryPolicy};
use crate::output::metrics;
use crate::reason::Reason;
use crate::redact::json_error;

/// The body type of a push: length-delimited `io.prometheus.client.MetricFamily` messages.
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The messages of Prometheus' `io/prometheus/client/metrics.proto` (proto2)
/// that a push of gauges needs; field numbers as there.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        Counter = 0,
        Gauge = 1,
        Summary = 2,
        Untyped = 3,
        Histogram = 4,
        GaugeHistogram = 5,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Gauge {
        #[prost(double, optional, tag = "1")]
        pub value: Option<f64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        #[prost(message, optional, tag = "2")]
        pub gauge: Option<Gauge>,
        #[prost(int64, optional, tag = "6")]
        pub timestamp_ms: Option<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricFamily {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub help: Option<String>,
        #[prost(enumeration = "MetricType", optional, tag = "3")]
        pub r#type: Option<i32>,
        #[prost(message, repeated, tag = "4")]
        pub metric: Vec<Metric>,
    }
}

/// Gauge families as length-delimited protobuf `MetricFamily` messages (HELP as in the text format).
pub fn encode_protobuf(families: &[GaugeFamily]) -> Vec<u8> {
    let mut out = Vec::new();
    for family in families {
        let message = proto::MetricFamily {
            name: Some(metrics::full_name(family.name)),
            help: Some(format!("{}.", family.help)),
            r#type: Some(proto::MetricType::Gauge as i32),
            metric: family
                .samples
                .iter()
                .map(|s| proto::Metric {
                    label: s
                        .labels
                        .iter()
                        .map(|(k, v)| proto::LabelPair { name: Some(k.clone()), value: Some(v.clone()) })
                        .collect(),
                    gauge: Some(proto::Gauge { value: Some(s.value) }),
                    timestamp_ms: None,
                })
                .collect(),
        };
        // Encoding into a Vec only fails for lack of capacity, which a Vec grows.
        let _ = message.encode_length_delimited(&mut out);
    }
    out
}

/// The read-back: 5 s per attempt, retried within 5 s.
const READ_BACK_POLICY: RetryPolicy = RetryPolicy {
    request_timeout: Duration::from_secs(5),
    budget: Duration::from_secs(5),
    first_backoff: Duration::from_millis(500),
};

/// A Pushgateway group: its grouping labels, `job` first.
///
/// Every image of a probe has a group of its own (`job`, `probe`, `location`,
/// `image`): a push replaces that image's series only, so a run that probes
/// some images of a probe (a catalog sample, one shard of the images) keeps the
/// series and history of the others, and two shards never write one group.
/// Each shard has a group for its own gauges (`job`, `location`, `index`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Group {
    labels: Vec<(String, String)>,
}

impl Group {
    /// The group of one image's series.
    pub fn image(job: &str, probe: &str, location: &str, image: &str) -> Group {
        Group::of([("job", job), ("probe", probe), ("location", location), ("image", image)])
    }

    /// The group of a shard's own gauges ([`metrics::shard_families`]).
    pub fn shard(job: &str, location: &str, index: u32) -> Group {
        Group::of([("job", job), ("location", location), ("index", &index.to_string())])
    }

    fn of<const N: usize>(labels: [(&str, &str); N]) -> Group {
        Group { labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    /// A group as the read-back shows it: `job` first, the others by name.
    fn from_labels(labels: &BTreeMap<String, String>) -> Group {
        let job = labels.get("job").cloned().unwrap_or_default();
        let others = labels.iter().filter(|(k, _)| k.as_str() != "job").map(|(k, v)| (k.clone(), v.clone()));
        Group { labels: std::iter::once(("job".to_string(), job)).chain(others).collect() }
    }

    /// The value of a grouping label.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `/metrics/job@base64/…/probe@base64/…`: base64url, so a value with `/`
    /// (an image reference) is one path segment; `=` for an empty value.
    pub fn path(&self) -> String {
        let b64 = |v: &str| match v {
            "" => "=".to_string(),
            v => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v),
        };
        let mut path = "/metrics".to_string();
        for (name, value) in &self.labels {
            path.push_str(&format!("/{name}@base64/{}", b64(value)));
        }
        path
    }
}

/// What the Pushgateway holds for one `job` and `location`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadBack {
    /// Every series' history, as the last pushes left it.
    pub history: History,
    /// Every group of the job and location.
    pub groups: Vec<Group>,
}

/// A Pushgateway to push to and read back from.
#[derive(Debug, Clone)]
pub struct Pushgateway {
    client: EndpointClient,
    pub job: String,
}

impl Pushgateway {
    pub fn new(config: &PushgatewayConfig, policy: RetryPolicy) -> Result<Self, DeliveryError> {
        Ok(Pushgateway { client: EndpointClient::new(&config.url, &config.access, policy)?, job: config.job.clone() })
    }

    pub fn name(&self) -> String {
        self.client.name()
    }

    /// Every group of this job at `location`, and the history of their series.
    /// Alerts wait for it, so it gets a few seconds, not the full retry budget.
    pub async fn read_back(&self, location: &str) -> Result<ReadBack, DeliveryError> {
        let url = self.client.url("/api/v1/metrics")?;
        let client = self.client.with_policy(READ_BACK_POLICY);
        let body = client.send(reqwest::Method::GET, &url, None).await?;
        parse_read_back(&body, &self.job, location).map_err(|message| DeliveryError {
            endpoint: self.name(),
            message,
            attempts: 1,
            retryable: false,
        })
    }

    /// `POST` the families to the group (replacing only these metric names in it).
    pub async fn push(&self, group: &Group, families: &[GaugeFamily]) -> Result<(), DeliveryError> {
        let url = self.client.url(&group.path())?;
        let body = encode_protobuf(families);
        self.client.send(reqwest::Method::POST, &url, Some((PROTOBUF_CONTENT_TYPE, body))).await.map(|_| ())
    }

    /// `DELETE` the group: its series are gone (an image no longer probed).
    pub async fn delete(&self, group: &Group) -> Result<(), DeliveryError> {
        let url = self.client.url(&group.path())?;
        self.client.send(reqwest::Method::DELETE, &url, None).await.map(|_| ())
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Vec<ReadBackGroup>,
}

/// One group of the answer: its labels and the families the history needs.
/// The other families (most of a group) are skipped unread, so a Pushgateway
/// holding thousands of images costs little more memory than its answer's bytes.
struct ReadBackGroup {
    labels: BTreeMap<String, String>,
    families: Vec<(String, serde_json::Value)>,
}

/// The full names of the families a read-back keeps.
fn is_history_family(name: &str) -> bool {
    let short = name.strip_prefix(metrics::PREFIX).and_then(|n| n.strip_prefix('_'));
    matches!(
        short,
        Some(
            metrics::CONSECUTIVE_FAILURES | metrics::LAST_SUCCESS | metrics::FAILING_SINCE | metrics::LAST_FAILURE_INFO
        )
    )
}

impl<'de> Deserialize<'de> for ReadBackGroup {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GroupVisitor;
        impl<'de> serde::de::Visitor<'de> for GroupVisitor {
            type Value = ReadBackGroup;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Pushgateway group (an object with `labels`)")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ReadBackGroup, A::Error> {
                let mut labels = None;
                let mut families = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "labels" {
                        labels = Some(map.next_value()?);
                    } else if is_history_family(&key) {
                        let family = map.next_value()?;
                        families.push((key, family));
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                let labels = labels.ok_or_else(|| serde::de::Error::missing_field("labels"))?;
                Ok(ReadBackGroup { labels, families })
            }
        }
        deserializer.deserialize_map(GroupVisitor)
    }
}

#[derive(Deserialize)]
struct ReadBackFamily {
    #[serde(default)]
    metrics: Vec<ReadBackMetric>,
}

#[derive(Deserialize)]
struct ReadBackMetric {
    labels: BTreeMap<String, String>,
    /// Values come as strings (`"1.7e+09"`).
    value: Option<String>,
}

/// The groups of `job` at `location` in an `/api/v1/metrics` answer, and the
/// history of their series.
pub fn parse_read_back(body: &[u8], job: &str, location: &str) -> Result<ReadBack, String> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("/api/v1/metrics is not the expected JSON: {}", json_error(&e)))?;
    if answer.status != "success" {
        return Err(format!("/api/v1/metrics answered status {:?}", answer.status));
    }
    let mut read = ReadBack::default();
    let history = &mut read.history;
    for group in answer.data {
        let this = Group::from_labels(&group.labels);
        if this.get("job") != Some(job) || this.get("location").unwrap_or_default() != location {
            continue;
        }
        read.groups.push(this);
        for (name, raw) in &group.families {
            let Some(short) = name.strip_prefix(&format!("{}_", metrics::PREFIX)) else { continue };
            let Ok(family) = ReadBackFamily::deserialize(raw) else { continue };
            for metric in family.metrics {
                let Some(key) = SeriesKey::from_labels(&metric.labels) else { continue };
                let Some(value) = metric.value.as_deref().and_then(|v| v.parse::<f64>().ok()) else { continue };
                if !value.is_finite() {
                    continue;
                }
                let entry: &mut SeriesHistory = history.entry(key).or_default();
                match short {
                    metrics::CONSECUTIVE_FAILURES => entry.consecutive_failures = value.max(0.0) as u32,
                    metrics::LAST_SUCCESS => entry.last_success = Some(value),
                    metrics::FAILING_SINCE => entry.failing_since = Some(value),
                    metrics::LAST_FAILURE_INFO => {
                        let reason = metric.labels.get("reason").and_then(|r| reason_named(r));
                        if reason.is_some() {
                            entry.last_reason = reason;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    read.groups.sort();
    read.groups.dedup();
    Ok(read)
}

fn reason_named(name: &str) -> Option<Reason> {
    Reason::ALL.into_iter().find(|r| r.as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_paths_are_base64url() {
        let group = Group::image("pullprobe", "p", "eqiad", "127.0.0.1:5000/a:b");
        assert_eq!(
            group.path(),
            "/metrics/job@base64/cHVsbHByb2Jl/probe@base64/cA/location@base64/ZXFpYWQ/image@base64/MTI3LjAuMC4xOjUwMDAvYTpi"
        );
        assert_eq!(
            Group::shard("pullprobe", "", 3).path(),
            "/metrics/job@base64/cHVsbHByb2Jl/location@base64/=/index@base64/Mw"
        );
    }

    #[test]
    fn protobuf_round_trips() {
        let families = vec![GaugeFamily {
            name: "probe_success",
            help: "1 if it passed",
            samples: vec![crate::output::gauge_family::Sample {
                labels: vec![("probe".into(), "p".into())],
                value: 0.0,
            }],
        }];
        let bytes = encode_protobuf(&families);
        let decoded = proto::MetricFamily::decode_length_delimited(&bytes[..]).unwrap();
        assert_eq!(decoded.name.as_deref(), Some("pullprobe_probe_success"));
        assert_eq!(decoded.r#type, Some(proto::MetricType::Gauge as i32));
        assert_eq!(decoded.metric[0].gauge.as_ref().unwrap().value, Some(0.0));
    }

    #[test]
    fn read_back_keeps_only_our_groups() {
        let body = br#"{"status":"success","data":[
          {"labels":{"job":"pullprobe","probe":"p","location":"eqiad"},
           "pullprobe_probe_consecutive_failures":{"type":"GAUGE","metrics":[
             {"labels":{"job":"pullprobe","probe":"p","location":"eqiad","image":"r/i:1","registry":"r","frontend":"f","platform":"linux/amd64"},"value":"3"}]},
           "pullprobe_probe_last_failure_info":{"type":"GAUGE","metrics":[
             {"labels":{"probe":"p","image":"r/i:1","registry":"r","frontend":"f","platform":"linux/amd64","reason":"blob_unknown"},"value":"1"}]},
           "pullprobe_probe_last_success_timestamp_seconds":{"type":"GAUGE","metrics":[
             {"labels":{"probe":"p","image":"r/i:1","registry":"r","frontend":"f","platform":"linux/amd64"},"value":"1.7e+09"}]},
           "push_time_seconds":{"type":"GAUGE","metrics":[{"labels":{},"value":"1"}]}},
          {"labels":{"job":"pullprobe","probe":"other","location":"eqiad"},
           "pullprobe_probe_consecutive_failures":{"type":"GAUGE","metrics":[
             {"labels":{"probe":"other","image":"r/i:1","registry":"r","frontend":"f","platform":"linux/amd64"},"value":"9"}]}},
          {"labels":{"job":"someone-else","probe":"p","location":"eqiad","image":"r/i:1"},
           "pullprobe_probe_consecutive_failures":{"type":"GAUGE","metrics":[
             {"labels":{"probe":"p","image":"r/i:1","registry":"r","frontend":"g","platform":"linux/amd64"},"value":"7"}]}},
          {"labels":{"job":"pullprobe","location":"codfw","index":"0"},
           "pullprobe_shard_info":{"type":"GAUGE","metrics":[{"labels":{"index":"0","total":"2"},"value":"1"}]}}]}"#;
        let read = parse_read_back(body, "pullprobe", "eqiad").unwrap();
        let legacy = |probe: &str| {
            let labels = [("job", "pullprobe"), ("probe", probe), ("location", "eqiad")];
            Group::from_labels(&labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        assert_eq!(read.groups, [legacy("other"), legacy("p")]);
        let history: History = read.history.into_iter().filter(|(k, _)| k.probe == "p").collect();
        assert_eq!(history.len(), 1);
        let state = history.values().next().unwrap();
        assert_eq!(state.consecutive_failures, 3);
        assert_eq!(state.last_success, Some(1.7e9));
        assert_eq!(state.last_reason, Some(Reason::BlobUnknown));
    }
}
