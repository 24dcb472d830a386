//! The metric families of DESIGN.md ("Metrics"), as functions of results and
//! their [`History`]: the same values for serve's `/metrics` and for a
//! Pushgateway push.
//!
//! [`gauge_families`] is the last-run state of every series (gauges only, what
//! a push may carry); [`RunCounters`] is what only a long-running `serve`
//! can count (counters and histograms). [`encode_text`] renders both with
//! `prometheus-client`; `pushgateway` encodes the gauges as protobuf.
//!
//! Labels are `probe, image, registry, frontend, platform` unless a family
//! says otherwise; never digests or error text. `image` is the reference the
//! probe names (a digest-pinned reference keeps its fixed digest; resolved
//! digests never appear).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::Severity;
use crate::output::canary_metrics::{self, CanaryCounters};
use crate::output::gauge_family::{GaugeFamily, Labels, Sample};
use crate::output::history::{History, SeriesKey, parse_rfc3339};
use crate::result::{Check, ProbeResult};
use crate::shard::Shard;

/// Every family name starts with `pullprobe_`.
pub const PREFIX: &str = "pullprobe";
/// The `Content-Type` of [`encode_text`]: the Prometheus text format, which
/// every scraper reads and `promtool check metrics` checks.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The `Content-Type` of [`encode_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

// Family names without the prefix; the read-back of a push looks for them too.
pub const PROBE_SUCCESS: &str = "probe_success";
pub const PROBE_DURATION: &str = "probe_duration_seconds";
pub const PHASE_DURATION: &str = "probe_phase_duration_seconds";
pub const LAST_SUCCESS: &str = "probe_last_success_timestamp_seconds";
pub const CONSECUTIVE_FAILURES: &str = "probe_consecutive_failures";
pub const FAILING_SINCE: &str = "probe_failing_since_timestamp_seconds";
pub const LAST_FAILURE_INFO: &str = "probe_last_failure_info";
pub const TLS_NOT_AFTER: &str = "tls_cert_not_after_timestamp_seconds";
pub const FRONTEND_CONSISTENT: &str = "frontend_consistent";
pub const BUILD_INFO: &str = "build_info";
pub const RATELIMIT_REMAINING: &str = "ratelimit_remaining";
pub const REFERRERS: &str = "referrers";
pub const SHARD_INFO: &str = "shard_info";
pub const SHARDS: &str = "shards";
pub const SHARD_IMAGES: &str = "shard_images";

/// `pullprobe_<name>`.
pub fn full_name(name: &str) -> String {
    format!("{PREFIX}_{name}")
}

fn series_labels(key: &SeriesKey) -> Vec<(String, String)> {
    key.labels().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn with(mut labels: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    labels.push((key.to_string(), value.to_string()));
    labels
}

/// The gauges of the last run: one series per result (and per phase, per
/// registry frontend, per probe), with `history` already advanced past `results`
/// ([`crate::output::history::advance`]). Every family is listed, some maybe
/// without samples (no failure, no TLS).
pub fn gauge_families(results: &[ProbeResult], history: &History) -> Vec<GaugeFamily> {
    let mut success = GaugeFamily::new(PROBE_SUCCESS, "1 if the last pull passed every check, else 0");
    let mut duration = GaugeFamily::new(PROBE_DURATION, "Seconds the last pull took");
    let mut phases = GaugeFamily::new(PHASE_DURATION, "Seconds per phase of the last pull");
    let mut last_success =
        GaugeFamily::new(LAST_SUCCESS, "Unix time when a pull last passed; kept while the probe fails");
    let mut consecutive = GaugeFamily::new(CONSECUTIVE_FAILURES, "Pulls in a row that failed; 0 after a passing pull");
    let mut failing_since =
        GaugeFamily::new(FAILING_SINCE, "Unix time when the first pull of the current failing streak started");
    let mut failure_info = GaugeFamily::new(
        LAST_FAILURE_INFO,
        "1 with the reason of the current failure; 0 with the last reason once the probe passes again",
    );
    let mut tls = GaugeFamily::new(TLS_NOT_AFTER, "Unix time when the certificate a frontend presented expires");
    let mut consistent =
        GaugeFamily::new(FRONTEND_CONSISTENT, "1 if every frontend of a registry served the same manifests, else 0");
    let mut build = GaugeFamily::new(BUILD_INFO, "The running pullprobe version; always 1");
    let mut ratelimit =
        GaugeFamily::new(RATELIMIT_REMAINING, "Pulls the registry says are left (RateLimit-Remaining), lowest seen");
    let mut ratelimit_by_registry: BTreeMap<String, f64> = BTreeMap::new();
    let mut referrers = GaugeFamily::new(
        REFERRERS,
        "Valid referrers of the image on this frontend (signatures: set), by artifact type",
    );

    let mut tls_seen = BTreeSet::new();
    for result in results {
        let key = SeriesKey::of(result);
        let labels = series_labels(&key);
        let state = history.get(&key).cloned().unwrap_or_default();
        success.push(labels.clone(), if result.ok { 1.0 } else { 0.0 });
        duration.push(labels.clone(), result.duration_seconds);
        for (phase, seconds) in &result.phases {
            phases.push(with(labels.clone(), "phase", phase), *seconds);
        }
        if let Some(at) = state.last_success {
            last_success.push(labels.clone(), at);
        }
        consecutive.push(labels.clone(), f64::from(state.consecutive_failures));
        if let (false, Some(since)) = (result.ok, state.failing_since) {
            failing_since.push(labels.clone(), since);
        }
        match (result.ok, result.reason.or(state.last_reason)) {
            (false, Some(reason)) => failure_info.push(with(labels.clone(), "reason", reason.as_str()), 1.0),
            (true, Some(reason)) => failure_info.push(with(labels.clone(), "reason", reason.as_str()), 0.0),
            (_, None) => {}
        }
        for (artifact_type, count) in referrer_counts(result) {
            referrers.push(with(labels.clone(), "artifact_type", &artifact_type), count as f64);
        }
        if let Some(left) = result.ratelimit_remaining {
            let lowest = ratelimit_by_registry.entry(result.registry.clone()).or_insert(left as f64);
            *lowest = lowest.min(left as f64);
        }
        if let Some(not_after) = result.tls_not_after.as_deref().and_then(parse_rfc3339)
            && tls_seen.insert((result.registry.clone(), result.frontend.clone()))
        {
            let labels = vec![
                ("registry".to_string(), result.registry.clone()),
                ("frontend".to_string(), result.frontend.clone()),
            ];
            tls.push(labels, not_after);
        }
    }
    for ((probe, registry), ok) in frontend_consistency(results) {
        consistent.push(vec![("probe".into(), probe), ("registry".into(), registry)], if ok { 1.0 } else { 0.0 });
    }
    build.push(vec![("version".into(), env!("CARGO_PKG_VERSION").into())], 1.0);
    for (registry, left) in ratelimit_by_registry {
        ratelimit.push(vec![("registry".into(), registry)], left);
    }

    // Every family, even without samples: a push must name each family so that
    // the Pushgateway drops series that no longer exist (a streak that ended).
    let mut families = vec![
        success,
        duration,
        phases,
        last_success,
        consecutive,
        failing_since,
        failure_info,
        tls,
        consistent,
        ratelimit,
        referrers,
        build,
    ];
    families.push(canary_metrics::push_duration(results));
    families
}

/// `probe_info{probe, image, registry, frontend, platform, location, kind,
/// severity} 1`, one per series: what an alert of the series carries besides
/// the series labels — the prober's `location`, the `kind` (a canary pages as
/// `RegistryCanaryFailed`) and the probe's `severity` (by probe name from
/// `severities`, else `critical`) — so that the Prometheus rules page with the
/// same alert names, severities and identity labels as direct alerting. A
/// gauge family of its own, so the other families keep their labels.
pub fn probe_info(results: &[ProbeResult], severities: &BTreeMap<String, Severity>) -> GaugeFamily {
    let mut samples: Vec<Sample> = Vec::new();
    let mut seen = BTreeSet::new();
    for result in results {
        let key = SeriesKey::of(result);
        let severity = severities.get(&result.probe).copied().unwrap_or_default();
        let mut labels = series_labels(&key);
        if seen.insert(key) {
            labels.push(("location".into(), result.location.clone()));
            labels.push(("kind".into(), result.kind.as_str().into()));
            labels.push(("severity".into(), severity.as_str().into()));
            samples.push(Sample { labels, value: 1.0 });
        }
    }
    GaugeFamily {
        name: "probe_info",
        help: "How a failure of the series pages: the prober's location, the probe's kind and severity; always 1",
        samples,
    }
}

/// Which shard of how many this prober is, and how many units (images, canaries)
/// it owns: `shard_info{location, index, total} 1`, `shards{location, index}`
/// (the total as a value, for the rule that counts the shards reporting) and
/// `shard_images{location, index}`. One shard of one when nothing is split.
pub fn shard_families(shard: Shard, location: &str, owned: usize) -> Vec<GaugeFamily> {
    let labels =
        || vec![("location".to_string(), location.to_string()), ("index".to_string(), shard.index.to_string())];
    let sample = |labels, value| vec![Sample { labels, value }];
    vec![
        GaugeFamily {
            name: SHARD_INFO,
            help: "The shard of the images this prober probes (index of total, from --shard); always 1",
            samples: sample(with(labels(), "total", &shard.total.to_string()), 1.0),
        },
        GaugeFamily {
            name: SHARDS,
            help: "The number of shards the images are split into, as this prober was told",
            samples: sample(labels(), f64::from(shard.total)),
        },
        GaugeFamily {
            name: SHARD_IMAGES,
            help: "Images (and canaries) this shard owns, probed this run or not",
            samples: sample(labels(), owned as f64),
        },
    ]
}

/// Per (probe, registry): false if a result says `frontend_inconsistent`, or if
/// the frontends answered one image and platform with different manifest digests.
/// Distinct `artifact_type` values of one series, at most; the rest count as `other`.
const MAX_ARTIFACT_TYPES: usize = 16;

/// The valid referrers of a result by artifact type (none unless they were listed).
fn referrer_counts(result: &ProbeResult) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for check in result.referrers.iter().flatten().filter(|c| c.ok) {
        let artifact_type = check.artifact_type.clone().unwrap_or_else(|| "unknown".to_string());
        let label = if counts.len() < MAX_ARTIFACT_TYPES || counts.contains_key(&artifact_type) {
            artifact_type
        } else {
            "other".to_string()
        };
        *counts.entry(label).or_default() += 1;
    }
    counts
}

fn frontend_consistency(results: &[ProbeResult]) -> BTreeMap<(String, String), bool> {
    let mut digests: BTreeMap<(String, String, String, String), BTreeSet<&str>> = BTreeMap::new();
    let mut out: BTreeMap<(String, String), bool> = BTreeMap::new();
    for r in results {
        let entry = out.entry((r.probe.clone(), r.registry.clone())).or_insert(true);
        if r.reason == Some(crate::reason::Reason::FrontendInconsistent) {
            *entry = false;
        }
        if let Some(d) = &r.manifest_digest {
            digests
                .entry((r.probe.clone(), r.registry.clone(), r.image.clone(), r.platform.clone()))
                .or_default()
                .insert(d);
        }
    }
    for ((probe, registry, _, _), seen) in digests {
        if seen.len() > 1 {
            out.insert((probe, registry), false);
        }
    }
    out
}

/// Layer download times, seconds: small layers on a LAN to multi-GiB layers far away.
const LAYER_DURATION_BUCKETS: [f64; 12] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

fn layer_histogram() -> Histogram {
    Histogram::new(LAYER_DURATION_BUCKETS)
}

/// What only a long-running process can count: failures by reason, retries,
/// bytes, layer durations (`serve`; a push carries gauges only). Cheap to
/// clone: the clones share the counts.
#[derive(Clone)]
pub struct RunCounters {
    failures: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    layer_duration: Family<Labels, Histogram, fn() -> Histogram>,
    canary: CanaryCounters,
}

impl Default for RunCounters {
    fn default() -> Self {
        RunCounters {
            failures: Family::default(),
            retries: Family::default(),
            bytes: Family::default(),
            layer_duration: Family::new_with_constructor(layer_histogram),
            canary: CanaryCounters::default(),
        }
    }
}

impl RunCounters {
    /// Count the results of one run.
    pub fn observe(&self, results: &[ProbeResult]) {
        self.canary.observe(results);
        for result in results {
            let labels = series_labels(&SeriesKey::of(result));
            if let Some(reason) = result.reason {
                self.failures.get_or_create(&with(labels.clone(), "reason", reason.as_str())).inc();
            }
            self.retries.get_or_create(&labels).inc_by(u64::from(result.retries));
            let compressed = result.bytes();
            let uncompressed: u64 = result.layers.iter().filter_map(|l| l.uncompressed_bytes).sum();
            self.bytes.get_or_create(&with(labels.clone(), "kind", "compressed")).inc_by(compressed);
            self.bytes.get_or_create(&with(labels, "kind", "uncompressed")).inc_by(uncompressed);
            let layer_labels = vec![
                ("probe".to_string(), result.probe.clone()),
                ("registry".to_string(), result.registry.clone()),
                ("frontend".to_string(), result.frontend.clone()),
            ];
            let histogram = self.layer_duration.get_or_create(&layer_labels);
            // A layer never reached (no check) or rotated out by the round
            // budget ("skipped") took no time: it is not an observation.
            for layer in result.layers.iter().filter(|l| l.check.is_some_and(|c| c != Check::Skipped)) {
                histogram.observe(layer.duration_seconds);
            }
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register("probe_failures", "Failed pulls by reason", self.failures.clone());
        registry.register("probe_retries", "Retries of transient failures within a pull", self.retries.clone());
        registry.register("bytes", "Bytes received, compressed and after decompression", self.bytes.clone());
        registry.register(
            "layer_duration_seconds",
            "Seconds to fetch and verify one layer",
            self.layer_duration.clone(),
        );
        self.canary.register(registry);
    }
}

/// The Prometheus text exposition (0.0.4) of `gauges` (and `counters`, in
/// `serve`), HELP and TYPE on every family. It is the OpenMetrics text of
/// `prometheus-client` with the two differences of the older format: a counter's
/// HELP and TYPE name its samples (`…_total`), and there is no `# EOF`.
pub fn encode_text(gauges: &[GaugeFamily], counters: Option<&RunCounters>) -> String {
    let openmetrics = encode_openmetrics(gauges, counters);
    let counter_names: BTreeSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "].into_iter().find_map(|p| Some((p, line.strip_prefix(p)?)));
        match descriptor {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counter_names.contains(name) { "_total" } else { "" };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The OpenMetrics text exposition of `gauges` (and `counters`), as `prometheus-client` writes it.
pub fn encode_openmetrics(gauges: &[GaugeFamily], counters: Option<&RunCounters>) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    for family in gauges {
        let metric: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
        for sample in &family.samples {
            metric.get_or_create(&sample.labels).set(sample.value);
        }
        registry.register(family.name, family.help, metric);
    }
    if let Some(counters) = counters {
        counters.register(&mut registry);
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::gauge_family::Sample;
    use crate::output::history::advance;
    use crate::output::history::tests::result;
    use crate::reason::Reason;
    use crate::result::LayerCheck;

    fn sample<'a>(families: &'a [GaugeFamily], name: &str, frontend: &str) -> Option<&'a Sample> {
        let family = families.iter().find(|f| f.name == name)?;
        family.samples.iter().find(|s| s.labels.iter().any(|(k, v)| k == "frontend" && v == frontend))
    }

    #[test]
    fn gauges_follow_results_and_history() {
        let mut ok = result("10.0.0.1", None, "2026-11-23T06:00:00Z");
        ok.ratelimit_remaining = Some(90);
        let mut bad = result("10.0.0.2", Some(Reason::BlobDigestMismatch), "2026-11-23T06:00:00Z");
        bad.tls_not_after = Some("2027-01-01T00:00:00Z".into());
        bad.ratelimit_remaining = Some(7);
        let results = [ok, bad];
        let history = advance(&History::new(), &results);
        let families = gauge_families(&results, &history);
        assert_eq!(sample(&families, PROBE_SUCCESS, "10.0.0.1").unwrap().value, 1.0);
        assert_eq!(sample(&families, PROBE_SUCCESS, "10.0.0.2").unwrap().value, 0.0);
        assert!(sample(&families, LAST_SUCCESS, "10.0.0.2").is_none(), "never passed: no last success");
        assert_eq!(sample(&families, CONSECUTIVE_FAILURES, "10.0.0.2").unwrap().value, 1.0);
        let info = sample(&families, LAST_FAILURE_INFO, "10.0.0.2").unwrap();
        assert!(info.labels.contains(&("reason".into(), "blob_digest_mismatch".into())));
        assert_eq!(sample(&families, TLS_NOT_AFTER, "10.0.0.2").unwrap().value, 1798761600.0);
        // One series per registry, labelled by registry only, with the lowest value seen.
        let ratelimit = families.iter().find(|f| f.name == RATELIMIT_REMAINING).expect("family");
        assert_eq!(ratelimit.samples.len(), 1);
        assert!(ratelimit.samples[0].labels.iter().all(|(k, _)| k == "registry"));
        assert_eq!(ratelimit.samples[0].value, 7.0);
        for family in &families {
            for s in &family.samples {
                for (_, v) in &s.labels {
                    assert!(!v.contains("sha256:") && !v.contains("happened"), "{}: {v}", family.name);
                }
            }
        }
    }

    #[test]
    fn each_phase_of_a_result_is_a_series_and_plain_http_has_no_tls_series() {
        let mut https = result("10.0.0.1", None, "2026-11-23T06:00:00Z");
        https.phases = BTreeMap::from([("connect".into(), 0.002), ("tls".into(), 0.01), ("manifest".into(), 0.02)]);
        let mut plain = result("10.0.0.2", None, "2026-11-23T06:00:00Z");
        plain.phases = BTreeMap::from([("connect".into(), 0.001), ("manifest".into(), 0.02)]);
        let results = [https, plain];
        let families = gauge_families(&results, &advance(&History::new(), &results));
        let phases = families.iter().find(|f| f.name == PHASE_DURATION).expect("the phase family");
        let phase_of = |frontend: &str, phase: &str| {
            phases
                .samples
                .iter()
                .find(|s| {
                    s.labels.contains(&("frontend".into(), frontend.into()))
                        && s.labels.contains(&("phase".into(), phase.into()))
                })
                .map(|s| s.value)
        };
        assert_eq!(phase_of("10.0.0.1", "tls"), Some(0.01));
        assert_eq!(phase_of("10.0.0.1", "connect"), Some(0.002));
        assert_eq!(phase_of("10.0.0.2", "tls"), None, "no handshake, no series (not a zero)");
        assert_eq!(phase_of("10.0.0.2", "connect"), Some(0.001));
    }

    #[test]
    fn referrers_count_the_valid_ones_by_artifact_type() {
        use crate::result::{ReferrerCheck, ReferrerSource};
        let referrer = |artifact_type: &str, ok: bool| ReferrerCheck {
            digest: format!("sha256:{}", "d".repeat(64)),
            artifact_type: Some(artifact_type.to_string()),
            source: ReferrerSource::TagSchema,
            ok,
            reason: (!ok).then_some(Reason::SignatureInvalid),
            verified_with: None,
            subject: format!("sha256:{}", "a".repeat(64)),
            error: None,
        };
        let mut signed = result("10.0.0.1", None, "2026-11-23T06:00:00Z");
        signed.referrers = Some(vec![referrer("a/sig", true), referrer("a/sig", true), referrer("a/sbom", false)]);
        let mut many = result("10.0.0.2", None, "2026-11-23T06:00:00Z");
        many.referrers = Some((0..20).map(|i| referrer(&format!("type/{i:02}"), true)).collect());
        let results = [signed, many];
        let families = gauge_families(&results, &advance(&History::new(), &results));
        let family = families.iter().find(|f| f.name == REFERRERS).expect("family");
        let of = |frontend: &str, artifact_type: &str| {
            family
                .samples
                .iter()
                .find(|s| {
                    s.labels.contains(&("frontend".into(), frontend.into()))
                        && s.labels.contains(&("artifact_type".into(), artifact_type.into()))
                })
                .map(|s| s.value)
        };
        assert_eq!(of("10.0.0.1", "a/sig"), Some(2.0));
        assert_eq!(of("10.0.0.1", "a/sbom"), None, "only valid referrers count");
        assert_eq!(of("10.0.0.2", "other"), Some(4.0), "16 types per series, the rest as other");
    }

    #[test]
    fn probe_info_carries_location_kind_and_severity() {
        let pull = result("10.0.0.1", Some(Reason::BlobDigestMismatch), "2026-11-23T06:00:00Z");
        let mut canary = result("10.0.0.1", Some(Reason::NotReplicated), "2026-11-23T06:00:00Z");
        canary.probe = "write-path".into();
        canary.kind = crate::result::Kind::Canary;
        let severities = BTreeMap::from([("golden-base".to_string(), Severity::Warning)]);
        let info = probe_info(&[pull.clone(), pull, canary], &severities);
        assert_eq!(info.samples.len(), 2, "one series each: {info:?}");
        let labels = |s: &Sample| -> BTreeMap<String, String> { s.labels.iter().cloned().collect() };
        let pull = labels(&info.samples[0]);
        assert_eq!(
            pull.keys().map(String::as_str).collect::<Vec<_>>(),
            ["frontend", "image", "kind", "location", "platform", "probe", "registry", "severity"]
        );
        assert_eq!(
            (pull["kind"].as_str(), pull["severity"].as_str(), pull["location"].as_str()),
            ("pull", "warning", "eqiad")
        );
        let canary = labels(&info.samples[1]);
        assert_eq!(
            (canary["kind"].as_str(), canary["severity"].as_str()),
            ("canary", "critical"),
            "not listed: critical"
        );
        assert!(info.samples.iter().all(|s| s.value == 1.0));
    }

    #[test]
    fn different_manifests_are_inconsistent() {
        let mut a = result("10.0.0.1", None, "2026-11-23T06:00:00Z");
        let mut b = result("10.0.0.2", None, "2026-11-23T06:00:00Z");
        a.manifest_digest = Some(format!("sha256:{}", "a".repeat(64)));
        b.manifest_digest = Some(format!("sha256:{}", "b".repeat(64)));
        let families = gauge_families(&[a.clone(), b], &History::new());
        let consistent = families.iter().find(|f| f.name == FRONTEND_CONSISTENT).unwrap();
        assert_eq!(consistent.samples[0].value, 0.0);
        let families = gauge_families(&[a], &History::new());
        let consistent = families.iter().find(|f| f.name == FRONTEND_CONSISTENT).unwrap();
        assert_eq!(consistent.samples[0].value, 1.0);
    }

    #[test]
    fn text_has_help_and_type_for_every_family() {
        let results = [result("10.0.0.1", Some(Reason::Timeout), "2026-11-23T06:00:00Z")];
        let families = gauge_families(&results, &advance(&History::new(), &results));
        let counters = RunCounters::default();
        counters.observe(&results);
        let text = encode_text(&families, Some(&counters));
        // prometheus-client writes no descriptor for a family without samples.
        for family in families.iter().filter(|f| !f.samples.is_empty()) {
            let name = full_name(family.name);
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
            assert!(text.contains(&format!("# TYPE {name} gauge")), "{name}:\n{text}");
        }
        assert!(text.contains("# TYPE pullprobe_probe_failures_total counter"), "{text}");
        assert!(text.contains("# HELP pullprobe_probe_failures_total Failed pulls by reason."), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("pullprobe_probe_failures_total{"), "{text}");
        assert!(text.contains("# TYPE pullprobe_layer_duration_seconds histogram"), "{text}");
    }

    /// The value of the one sample of `name` in `text`.
    fn value(text: &str, name: &str) -> f64 {
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert_eq!(values.len(), 1, "{name} in:\n{text}");
        values[0]
    }

    #[test]
    fn layer_durations_observe_read_layers_only() {
        let layer = |check: Option<Check>, bytes: u64, seconds: f64| LayerCheck {
            digest: format!("sha256:{}", "c".repeat(64)),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 100,
            ok: true,
            reason: None,
            check,
            bytes,
            uncompressed_bytes: None,
            duration_seconds: seconds,
            cache_status: None,
            served_by: None,
            error: None,
        };
        let mut read = result("10.0.0.1", None, "2026-11-23T06:00:00Z");
        // Read in full, read on another frontend already (digest only), rotated
        // out by the round budget, and never reached.
        read.layers = vec![
            layer(Some(Check::Full), 100, 0.4),
            layer(Some(Check::DigestOnly), 100, 0.2),
            layer(Some(Check::Skipped), 0, 0.0),
            layer(None, 0, 0.0),
        ];
        let counters = RunCounters::default();
        counters.observe(&[read]);
        let text = encode_text(&[], Some(&counters));
        assert_eq!(value(&text, "pullprobe_layer_duration_seconds_count"), 2.0, "{text}");
        assert!((value(&text, "pullprobe_layer_duration_seconds_sum") - 0.6).abs() < 1e-9, "{text}");
        let fastest = text.lines().find(|l| l.contains("_bucket{") && l.contains(r#"le="0.01""#)).expect("bucket");
        assert!(fastest.ends_with(" 0"), "no layer took 0 s: {fastest}");
    }
}
