//! The metric families of write-path canaries, as functions of their results
//! (`kind: "canary"`, DESIGN.md "Metrics"): how long the push took (a gauge,
//! so serve and a Pushgateway push both carry it), and — serve only — each
//! frontend's time-to-visible and the canary failures by reason.
//!
//! The values come from the result: `phases.push` (seconds the whole push
//! took, the same on every frontend's result of a run) and `phases.visible`
//! (seconds from the end of the push until that frontend served everything).
//! Pull results are ignored here.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::output::gauge_family::{GaugeFamily, Labels, Sample};
use crate::result::{Kind, ProbeResult};

pub const PUSH_DURATION: &str = "canary_push_duration_seconds";
pub const VISIBLE: &str = "canary_visible_seconds";
pub const FAILURES: &str = "canary_failures";

/// Time-to-visible, seconds: the same instant on one site to minutes of replication lag.
const VISIBLE_BUCKETS: [f64; 12] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

fn probe_registry(result: &ProbeResult) -> Labels {
    vec![("probe".into(), result.probe.clone()), ("registry".into(), result.registry.clone())]
}

fn visible_histogram() -> Histogram {
    Histogram::new(VISIBLE_BUCKETS)
}

/// `canary_push_duration_seconds{probe, registry}`: the last push of each canary probe.
pub fn push_duration(results: &[ProbeResult]) -> GaugeFamily {
    let mut samples: Vec<Sample> = Vec::new();
    for result in results.iter().filter(|r| r.kind == Kind::Canary) {
        let Some(seconds) = result.phases.get("push") else { continue };
        let labels = probe_registry(result);
        if samples.iter().all(|s| s.labels != labels) {
            samples.push(Sample { labels, value: *seconds });
        }
    }
    GaugeFamily {
        name: PUSH_DURATION,
        help: "Seconds the last canary push took (every upload session and the manifest)",
        samples,
    }
}

/// What only serve counts for canaries. Cheap to clone: the clones share the counts.
#[derive(Clone)]
pub struct CanaryCounters {
    visible: Family<Labels, Histogram, fn() -> Histogram>,
    failures: Family<Labels, Counter>,
}

impl Default for CanaryCounters {
    fn default() -> Self {
        CanaryCounters { visible: Family::new_with_constructor(visible_histogram), failures: Family::default() }
    }
}

impl CanaryCounters {
    /// Count one run's results: every frontend's time-to-visible, and each
    /// distinct failure reason of the run once (a failed push fails every
    /// frontend's result, but it is one failure).
    pub fn observe(&self, results: &[ProbeResult]) {
        let mut counted: Vec<Labels> = Vec::new();
        for result in results.iter().filter(|r| r.kind == Kind::Canary) {
            if let Some(seconds) = result.phases.get("visible") {
                let mut labels = probe_registry(result);
                labels.push(("frontend".into(), result.frontend.clone()));
                self.visible.get_or_create(&labels).observe(*seconds);
            }
            if let Some(reason) = result.reason {
                let mut labels = probe_registry(result);
                labels.push(("reason".into(), reason.as_str().into()));
                if !counted.contains(&labels) {
                    self.failures.get_or_create(&labels).inc();
                    counted.push(labels);
                }
            }
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            VISIBLE,
            "Seconds from the end of a canary push until a frontend served the manifest and every blob",
            self.visible.clone(),
        );
        registry.register(FAILURES, "Canary runs that failed, by reason", self.failures.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::history::tests::result;
    use crate::reason::Reason;

    fn canary(frontend: &str, reason: Option<Reason>, visible: Option<f64>) -> ProbeResult {
        let mut r = result(frontend, reason, "2026-11-23T06:00:00Z");
        r.kind = Kind::Canary;
        r.phases.insert("push".into(), 0.5);
        if let Some(v) = visible {
            r.phases.insert("visible".into(), v);
        }
        r
    }

    #[test]
    fn one_push_gauge_per_probe() {
        let results = [canary("a", None, Some(0.1)), canary("b", Some(Reason::NotReplicated), None)];
        let family = push_duration(&results);
        assert_eq!(family.samples.len(), 1);
        assert_eq!(family.samples[0].value, 0.5);
        assert!(push_duration(&[result("a", None, "2026-11-23T06:00:00Z")]).samples.is_empty());
    }

    #[test]
    fn visible_per_frontend_and_failures_once_per_run() {
        let counters = CanaryCounters::default();
        counters
            .observe(&[canary("a", Some(Reason::UploadFailed), None), canary("b", Some(Reason::UploadFailed), None)]);
        counters.observe(&[canary("a", None, Some(0.2)), canary("b", Some(Reason::NotReplicated), None)]);
        let mut registry = Registry::with_prefix("pullprobe");
        counters.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains(r#"reason="upload_failed"} 1"#), "{text}");
        assert!(text.contains(r#"reason="not_replicated"} 1"#), "{text}");
        assert!(text.contains(r#"pullprobe_canary_visible_seconds_count{probe="#), "{text}");
        assert!(!text.contains(r#"frontend="b""#), "no time-to-visible for a frontend that never served it: {text}");
    }
}
