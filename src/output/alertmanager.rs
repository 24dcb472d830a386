//! Alertmanager v2 (`POST /api/v2/alerts`): alert identity, annotations and
//! `endsAt` as DESIGN.md ("Alerts") fixes them, when a failure fires, and
//! delivery to every replica on its own.
//!
//! [`batch`] is a pure function of results, their [`History`] and what one
//! replica already holds; [`deliver`] runs it for every replica concurrently
//! (read back that replica's active alerts, then post, retried with backoff),
//! so a replica that is down or slow never blocks or delays another.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{AlertAfter, AlertmanagerConfig, Severity};
use crate::output::history::{History, SeriesHistory, SeriesKey, parse_rfc3339, rfc3339, started_at};
use crate::output::http::{DeliveryError, EndpointClient, RetryPolicy};
use crate::output::{human_bytes, one_line};
use crate::redact::{json_error, redact_text};
use crate::result::{Kind, ProbeResult};
use crate::shard::{self, Shard};

pub const PULL_ALERT: &str = "RegistryPullFailed";
pub const CANARY_ALERT: &str = "RegistryCanaryFailed";

/// Failed layers listed in a description, at most.
const MAX_LAYERS_DESCRIBED: usize = 10;

/// The alert name of a result's kind.
pub fn alertname(result: &ProbeResult) -> &'static str {
    if result.kind == Kind::Canary { CANARY_ALERT } else { PULL_ALERT }
}

/// An alert as `POST /api/v2/alerts` takes it (and `GET` returns it, with more fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
}

impl Alert {
    /// The labels that make an alert the same alert: alertname, the series labels, location.
    fn identity(&self) -> Option<(String, String, SeriesKey)> {
        let key = SeriesKey::from_labels(&self.labels)?;
        Some((self.labels.get("alertname")?.clone(), self.labels.get("location")?.clone(), key))
    }
}

/// What one run decides for one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Failing, and it pages (or already does): send with `endsAt` in the future.
    Fire,
    /// Failing, but fewer runs in a row than `alerting.after` wants: send nothing yet.
    Hold,
    /// Passing: send the same identity with `endsAt` = now.
    Resolve,
}

/// Fire, hold or resolve. `history` is the series' state after this run, `None`
/// when it cannot be known (no Pushgateway to read it back from, or the read-back
/// failed): then a failure fires at once, a page too early beats a page lost.
pub fn verdict(result: &ProbeResult, history: Option<&SeriesHistory>, after: AlertAfter, firing: bool) -> Verdict {
    if result.ok {
        return Verdict::Resolve;
    }
    let needed = result.reason.map_or(after.default, |r| after.for_reason(r));
    match history {
        _ if firing => Verdict::Fire,
        None => Verdict::Fire,
        Some(h) if h.consecutive_failures >= needed => Verdict::Fire,
        Some(_) => Verdict::Hold,
    }
}

/// Everything about alerting that is the same for every replica and every result.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Configured static labels (never identity labels).
    pub static_labels: BTreeMap<String, String>,
    pub runbook_url: Option<String>,
    pub after: AlertAfter,
    /// Severity per probe name; a probe not listed is `critical`.
    pub severities: BTreeMap<String, Severity>,
    /// Probes whose alerts this run owns: an active alert of one of them whose
    /// series is not among the results (a frontend that left DNS) is resolved.
    /// Empty when the command line narrowed frontends or platforms.
    pub owned_probes: BTreeSet<String>,
    /// (probe, image) of series a discovery rule still stands for but did not
    /// probe this run (the catalog probes a rotating sample): their firing alerts
    /// are kept firing, as the replica holds them, until a run probes them again.
    pub carried: BTreeSet<(String, String)>,
    /// The shard of the run: series of another shard's images are its to resolve.
    pub shard: Shard,
}

impl AlertSettings {
    pub fn from_config(config: &AlertmanagerConfig, after: AlertAfter) -> Self {
        AlertSettings {
            static_labels: config.labels.clone(),
            runbook_url: config.runbook_url.as_ref().map(|u| u.to_string()),
            after,
            severities: BTreeMap::new(),
            owned_probes: BTreeSet::new(),
            carried: BTreeSet::new(),
            shard: Shard::ALL,
        }
    }
}

/// The identity labels of a result's alert, plus severity and the static labels.
pub fn labels(result: &ProbeResult, settings: &AlertSettings) -> BTreeMap<String, String> {
    let mut labels = settings.static_labels.clone();
    labels.insert("alertname".into(), alertname(result).into());
    for (k, v) in SeriesKey::of(result).labels() {
        labels.insert(k.into(), v.into());
    }
    labels.insert("location".into(), result.location.clone());
    let severity = settings.severities.get(&result.probe).copied().unwrap_or_default();
    labels.insert("severity".into(), severity.as_str().into());
    labels
}

/// The firing alert of a failed result. `failing_since` and `ends_at` are Unix seconds.
pub fn firing_alert(result: &ProbeResult, settings: &AlertSettings, failing_since: f64, ends_at: f64) -> Alert {
    let mut annotations = BTreeMap::new();
    if let Some(reason) = result.reason {
        annotations.insert("reason".into(), reason.as_str().into());
    }
    annotations.insert("summary".into(), redact_text(&one_line(result)));
    annotations.insert("description".into(), description(result));
    annotations.insert("failing_since".into(), rfc3339(failing_since));
    if let Some(url) = &settings.runbook_url {
        annotations.insert("runbook_url".into(), url.clone());
    }
    Alert {
        labels: labels(result, settings),
        annotations,
        starts_at: Some(rfc3339(failing_since.min(ends_at))),
        ends_at: Some(rfc3339(ends_at)),
    }
}

/// The resolving alert of a passing result: same labels, `endsAt` = now.
pub fn resolved_alert(
    result: &ProbeResult,
    settings: &AlertSettings,
    history: Option<&SeriesHistory>,
    now: f64,
) -> Alert {
    let mut annotations = BTreeMap::new();
    let was = history.and_then(|h| h.last_reason);
    if let Some(reason) = was {
        annotations.insert("reason".into(), reason.as_str().into());
    }
    let summary = match was {
        Some(reason) => format!("{} {}: passes again (was {reason})", result.probe, result.frontend),
        None => format!("{} {}: passes", result.probe, result.frontend),
    };
    annotations.insert("summary".into(), summary);
    annotations.insert("description".into(), description(result));
    if let Some(url) = &settings.runbook_url {
        annotations.insert("runbook_url".into(), url.clone());
    }
    Alert { labels: labels(result, settings), annotations, starts_at: None, ends_at: Some(rfc3339(now)) }
}

/// What a human needs to act: image, platform, frontend, the error, digests,
/// bytes, cache status, who served the bytes, and what the registry answered.
pub fn description(result: &ProbeResult) -> String {
    let mut lines = vec![format!(
        "image {} ({}) through frontend {} from {}",
        result.image, result.platform, result.frontend, result.location
    )];
    match (result.reason, result.phase) {
        (Some(reason), Some(phase)) => lines.push(format!("reason {reason} in phase {}", phase.as_str())),
        (Some(reason), None) => lines.push(format!("reason {reason}")),
        _ => lines.push(format!("passed in {:.2}s", result.duration_seconds)),
    }
    if let Some(error) = &result.error {
        lines.push(format!("error: {error}"));
    }
    if let Some(code) = &result.registry_error {
        lines.push(format!("registry error code: {code}"));
    }
    if let Some(digest) = &result.manifest_digest {
        lines.push(format!("manifest {digest}"));
    }
    let failed: Vec<_> = result.layers.iter().filter(|l| !l.ok && l.reason.is_some()).collect();
    for layer in failed.iter().take(MAX_LAYERS_DESCRIBED) {
        let mut line = format!(
            "layer {} ({}): {}, {} of {} received",
            layer.digest,
            layer.media_type,
            layer.reason.map(|r| r.as_str()).unwrap_or("failed"),
            human_bytes(layer.bytes),
            human_bytes(layer.size),
        );
        if let Some(cache) = &layer.cache_status {
            line.push_str(&format!(", cache {cache}"));
        }
        if let Some(host) = &layer.served_by {
            line.push_str(&format!(", served by {host}"));
        }
        if let Some(error) = &layer.error {
            line.push_str(&format!(": {error}"));
        }
        lines.push(line);
    }
    if failed.len() > MAX_LAYERS_DESCRIBED {
        lines.push(format!("… and {} more failed layers", failed.len() - MAX_LAYERS_DESCRIBED));
    }
    lines.extend(referrer_lines(result));
    if result.retries > 0 {
        lines.push(format!("retried {} time(s) within the run", result.retries));
    }
    // A line each (redact_text makes its text one line): a server's newline cannot add one.
    lines.iter().map(|line| redact_text(line)).collect::<Vec<_>>().join("\n")
}

/// With `signatures:`: what was found where, and each referrer that failed.
fn referrer_lines(result: &ProbeResult) -> Vec<String> {
    let Some(referrers) = &result.referrers else { return Vec::new() };
    let mut lines = Vec::new();
    let valid: Vec<String> = referrers
        .iter()
        .filter(|r| r.ok)
        .take(MAX_LAYERS_DESCRIBED)
        .map(|r| {
            let kind = r.artifact_type.as_deref().unwrap_or("unknown type");
            match &r.verified_with {
                Some(key) => format!("{} ({kind}, {}, verified with {key})", r.digest, r.source.as_str()),
                None => format!("{} ({kind}, {})", r.digest, r.source.as_str()),
            }
        })
        .collect();
    lines.push(if valid.is_empty() {
        "valid referrers on this frontend: none".to_string()
    } else {
        format!("valid referrers on this frontend: {}", valid.join(", "))
    });
    for r in referrers.iter().filter(|r| !r.ok).take(MAX_LAYERS_DESCRIBED) {
        lines.push(format!(
            "referrer {} ({}, from {}): {}: {}",
            r.digest,
            r.artifact_type.as_deref().unwrap_or("unknown type"),
            r.source.as_str(),
            r.reason.map(|x| x.as_str()).unwrap_or("failed"),
            r.error.as_deref().unwrap_or("")
        ));
    }
    lines
}

/// What to send to one replica, and what it means for each failed series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub alerts: Vec<Alert>,
    /// Failing series sent as firing.
    pub fired: BTreeSet<SeriesKey>,
    /// Failing series held back below `alerting.after`.
    pub held: BTreeSet<SeriesKey>,
}

/// The alerts for one replica. `history` is after this run (`None`: unknown);
/// `active` is what that replica holds now (`None`: could not be read), used
/// to keep `failing_since` and to keep firing what already fires.
/// `firing_ends_at` and `now` are Unix seconds.
pub fn batch(
    results: &[ProbeResult],
    history: Option<&History>,
    active: Option<&[Alert]>,
    settings: &AlertSettings,
    firing_ends_at: f64,
    now: f64,
) -> Batch {
    let mut held_by_replica: BTreeMap<(String, String, SeriesKey), &Alert> = BTreeMap::new();
    for alert in active.unwrap_or_default() {
        if let Some(identity) = alert.identity() {
            held_by_replica.insert(identity, alert);
        }
    }
    let mut out = Batch::default();
    let mut seen = BTreeSet::new();
    for result in results {
        let key = SeriesKey::of(result);
        let identity = (alertname(result).to_string(), result.location.clone(), key.clone());
        seen.insert(identity.clone());
        let existing = held_by_replica.get(&identity);
        let series = history.and_then(|h| h.get(&key));
        match verdict(result, series, settings.after, existing.is_some()) {
            Verdict::Fire => {
                let since = [
                    series.and_then(|s| s.failing_since),
                    existing.and_then(|a| a.annotations.get("failing_since")).and_then(|t| parse_rfc3339(t)),
                    Some(started_at(result)),
                ]
                .into_iter()
                .flatten()
                .fold(f64::INFINITY, f64::min);
                out.alerts.push(firing_alert(result, settings, since, firing_ends_at));
                out.fired.insert(key);
            }
            Verdict::Hold => {
                out.held.insert(key);
            }
            Verdict::Resolve => out.alerts.push(resolved_alert(result, settings, series, now)),
        }
    }
    // Series of this run's probes that the replica still has firing but that no
    // result covers any more (a `dns` frontend that left DNS): resolve them, unless
    // a discovery rule still stands for them and only did not sample them this run.
    let location = results.first().map(|r| r.location.as_str());
    for (identity, alert) in &held_by_replica {
        let series = &identity.2;
        let unit = shard::unit(identity.0 == CANARY_ALERT, &series.probe, &series.image);
        let ours = Some(identity.1.as_str()) == location
            && settings.owned_probes.contains(&series.probe)
            && settings.shard.owns(unit);
        if !ours || seen.contains(identity) {
            continue;
        }
        if settings.carried.contains(&(identity.2.probe.clone(), identity.2.image.clone())) {
            // Not probed this run, still a candidate: its last verdict stands.
            let mut kept = (*alert).clone();
            kept.ends_at = Some(rfc3339(firing_ends_at));
            out.alerts.push(kept);
            out.fired.insert(identity.2.clone());
        } else {
            let mut gone = (*alert).clone();
            gone.starts_at = None;
            gone.ends_at = Some(rfc3339(now));
            gone.annotations
                .insert("summary".into(), format!("{} {}: no longer probed", identity.2.probe, identity.2.frontend));
            out.alerts.push(gone);
        }
    }
    out
}

/// One Alertmanager replica.
#[derive(Debug, Clone)]
pub struct Alertmanager {
    client: EndpointClient,
}

impl Alertmanager {
    /// One client per configured URL.
    pub fn replicas(config: &AlertmanagerConfig, policy: RetryPolicy) -> Result<Vec<Alertmanager>, DeliveryError> {
        config
            .urls
            .iter()
            .map(|url| Ok(Alertmanager { client: EndpointClient::new(url, &config.access, policy)? }))
            .collect()
    }

    pub fn name(&self) -> String {
        self.client.name()
    }

    /// The active alerts of pullprobe at `location` (`GET /api/v2/alerts?filter=…`), one attempt.
    pub async fn active_alerts(&self, location: &str) -> Result<Vec<Alert>, DeliveryError> {
        let mut url = self.client.url("/api/v2/alerts")?;
        let quoted = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
        url.query_pairs_mut()
            .append_pair("filter", &format!("alertname=~\"{PULL_ALERT}|{CANARY_ALERT}\""))
            .append_pair("filter", &format!("location={}", quoted(location)))
            .append_pair("active", "true")
            .append_pair("silenced", "true")
            .append_pair("inhibited", "true")
            .append_pair("unprocessed", "true");
        let body = self.client.send_once(reqwest::Method::GET, &url, None).await?;
        parse_alerts(&body).map_err(|message| DeliveryError {
            endpoint: self.name(),
            message,
            attempts: 1,
            retryable: false,
        })
    }

    /// `POST /api/v2/alerts`, retried with backoff within the policy's budget.
    pub async fn post(&self, alerts: &[Alert]) -> Result<(), DeliveryError> {
        let url = self.client.url("/api/v2/alerts")?;
        let body = serde_json::to_vec(alerts).unwrap_or_default();
        self.client.send(reqwest::Method::POST, &url, Some(("application/json", body))).await.map(|_| ())
    }
}

/// The alerts of a `GET /api/v2/alerts` answer.
pub fn parse_alerts(body: &[u8]) -> Result<Vec<Alert>, String> {
    serde_json::from_slice(body).map_err(|e| format!("GET /api/v2/alerts: not a list of alerts: {}", json_error(&e)))
}

/// How delivery to one replica went.
#[derive(Debug, Clone)]
pub struct ReplicaOutcome {
    pub endpoint: String,
    /// What was sent (or meant to be).
    pub batch: Batch,
    /// The replica answered the read-back or accepted the post.
    pub reachable: bool,
    /// `Ok` if the replica accepted the batch (or had nothing to take and answered).
    pub delivered: Result<(), DeliveryError>,
}

/// Deliver to every replica concurrently, each on its own: read back its
/// active alerts, compute its [`batch`], post it. Failures are logged with the replica.
pub async fn deliver(
    replicas: &[Alertmanager],
    results: &[ProbeResult],
    history: Option<&History>,
    settings: &AlertSettings,
    firing_ends_at: f64,
    now: f64,
) -> Vec<ReplicaOutcome> {
    let location = results.first().map(|r| r.location.clone()).unwrap_or_default();
    let tasks = replicas.iter().map(|replica| {
        let location = location.clone();
        async move {
            let active = match replica.active_alerts(&location).await {
                Ok(active) => Some(active),
                Err(e) => {
                    tracing::warn!(alertmanager = %e.endpoint, error = %e.message, "cannot read back active alerts");
                    None
                }
            };
            let batch = batch(results, history, active.as_deref(), settings, firing_ends_at, now);
            let delivered = if batch.alerts.is_empty() {
                match &active {
                    Some(_) => Ok(()),
                    None => Err(DeliveryError {
                        endpoint: replica.name(),
                        message: "not reachable (nothing to send, and the read-back failed)".into(),
                        attempts: 1,
                        retryable: false,
                    }),
                }
            } else {
                replica.post(&batch.alerts).await
            };
            if let Err(e) = &delivered {
                tracing::error!(alertmanager = %e.endpoint, attempts = e.attempts, error = %e.message, "alert delivery failed");
            }
            ReplicaOutcome {
                endpoint: replica.name(),
                reachable: active.is_some() || delivered.is_ok(),
                batch,
                delivered,
            }
        }
    });
    futures_util::future::join_all(tasks).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::history::advance;
    use crate::output::history::tests::result;
    use crate::reason::Reason;
    use crate::result::LayerCheck;

    fn settings(after: u32) -> AlertSettings {
        AlertSettings {
            static_labels: BTreeMap::from([("team".to_string(), "sre".to_string())]),
            runbook_url: Some("https://wiki.example.org/pullprobe".into()),
            after: AlertAfter { default: after, integrity: after },
            severities: BTreeMap::from([("golden-base".to_string(), Severity::Warning)]),
            owned_probes: BTreeSet::from(["golden-base".to_string()]),
            carried: BTreeSet::new(),
            shard: Shard::ALL,
        }
    }

    fn failed(reason: Reason) -> ProbeResult {
        let mut r = result("10.0.0.1", Some(reason), "2026-11-23T06:00:00Z");
        r.layers.push(LayerCheck {
            digest: format!("sha256:{}", "ab".repeat(32)),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 412,
            ok: false,
            reason: Some(reason),
            check: Some(crate::result::Check::Full),
            bytes: 412,
            uncompressed_bytes: None,
            duration_seconds: 0.1,
            cache_status: Some("HIT".into()),
            served_by: Some("swift.example.org".into()),
            error: Some("got sha256:cd… via https://s3.example.org/x?X-Amz-Signature=sekrit".into()),
        });
        r
    }

    #[test]
    fn a_missing_signature_says_what_is_missing_and_where_it_was_looked_for() {
        let mut r = result("10.0.0.1", Some(Reason::SignatureMissing), "2026-11-23T06:00:00Z");
        r.error =
            Some("no cosign signature for sha256:aa… on this frontend; looked in tag sha256-aa….sig (absent)".into());
        r.referrers = Some(vec![crate::result::ReferrerCheck {
            digest: format!("sha256:{}", "5".repeat(64)),
            artifact_type: Some("application/spdx+json".into()),
            source: crate::result::ReferrerSource::TagSchema,
            ok: true,
            reason: None,
            verified_with: None,
            subject: format!("sha256:{}", "a".repeat(64)),
            error: None,
        }]);
        let alert = firing_alert(&r, &settings(1), 0.0, 60.0);
        let description = &alert.annotations["description"];
        assert!(description.contains("no cosign signature") && description.contains(".sig (absent)"), "{description}");
        assert!(description.contains("valid referrers on this frontend: sha256:5555"), "{description}");
        assert_eq!(
            alert.annotations["summary"],
            "golden-base 10.0.0.1: signature_missing: no cosign signature for sha256:aa… on this frontend"
        );
    }

    #[test]
    fn identity_and_annotations() {
        let r = failed(Reason::BlobDigestMismatch);
        let history = advance(&History::new(), std::slice::from_ref(&r));
        let b = batch(std::slice::from_ref(&r), Some(&history), None, &settings(1), 2e9, 1.9e9);
        assert_eq!(b.alerts.len(), 1);
        let alert = &b.alerts[0];
        let keys: Vec<&str> = alert.labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["alertname", "frontend", "image", "location", "platform", "probe", "registry", "severity", "team"]
        );
        assert_eq!(alert.labels["alertname"], "RegistryPullFailed");
        assert_eq!(alert.labels["severity"], "warning");
        assert_eq!(alert.annotations["reason"], "blob_digest_mismatch");
        assert_eq!(alert.annotations["failing_since"], "2026-11-23T06:00:00Z");
        assert!(
            alert.annotations["summary"].starts_with("golden-base 10.0.0.1: blob_digest_mismatch layer sha256:abab")
        );
        let description = &alert.annotations["description"];
        assert!(description.contains("cache HIT") && description.contains("served by swift.example.org"));
        assert!(!description.contains("sekrit"), "{description}");
        assert_eq!(alert.ends_at.as_deref(), Some("2033-05-18T03:33:20Z"));
    }

    #[test]
    fn after_holds_then_fires_and_firing_keeps_firing() {
        let r = failed(Reason::ConnectError);
        let once = advance(&History::new(), std::slice::from_ref(&r));
        let b = batch(std::slice::from_ref(&r), Some(&once), None, &settings(2), 2e9, 1.9e9);
        assert!(b.alerts.is_empty() && b.held.len() == 1);
        let twice = advance(&once, std::slice::from_ref(&r));
        let b = batch(std::slice::from_ref(&r), Some(&twice), None, &settings(2), 2e9, 1.9e9);
        assert_eq!(b.fired.len(), 1);
        // Unknown history: fire at once.
        let b = batch(std::slice::from_ref(&r), None, None, &settings(2), 2e9, 1.9e9);
        assert_eq!(b.fired.len(), 1);
        // Already firing on the replica (the count was lost): keep firing, keep failing_since.
        let mut active = firing_alert(&r, &settings(2), 1.5e9, 1.6e9);
        active.labels.insert("severity".into(), "critical".into());
        let b = batch(std::slice::from_ref(&r), Some(&once), Some(&[active]), &settings(2), 2e9, 1.9e9);
        assert_eq!(b.fired.len(), 1);
        assert_eq!(b.alerts[0].annotations["failing_since"], rfc3339(1.5e9));
    }

    #[test]
    fn passing_resolves_and_vanished_series_resolve() {
        let ok = result("10.0.0.1", None, "2026-11-23T06:00:00Z");
        let gone = failed(Reason::BlobUnknown);
        let mut gone = gone.clone();
        gone.frontend = "10.0.0.9".into();
        let active = firing_alert(&gone, &settings(1), 1.5e9, 2e9);
        let b = batch(std::slice::from_ref(&ok), None, Some(std::slice::from_ref(&active)), &settings(1), 2e9, 1.9e9);
        assert_eq!(b.alerts.len(), 2);
        assert!(b.alerts.iter().all(|a| a.ends_at.as_deref() == Some(rfc3339(1.9e9).as_str())));
        assert!(b.alerts.iter().any(|a| a.labels["frontend"] == "10.0.0.9"));
        let mut narrowed = settings(1);
        narrowed.owned_probes.clear();
        let b = batch(&[ok], None, Some(&[active]), &narrowed, 2e9, 1.9e9);
        assert_eq!(b.alerts.len(), 1, "a narrowed run resolves only what it probed");
    }

    #[test]
    fn a_shard_leaves_the_alerts_of_images_it_does_not_own_alone() {
        let ok = result("10.0.0.1", None, "2026-11-23T06:00:00Z");
        // Another image of the same probe, firing on the replica; not in this run's results.
        let mut elsewhere = failed(Reason::BlobUnknown);
        elsewhere.image = "registry.example.org/releng/other:latest".into();
        let active = firing_alert(&elsewhere, &settings(1), 1.5e9, 1.95e9);
        let owner = crate::shard::owner(&elsewhere.image, 2);
        for index in 0..2 {
            let mut sharded = settings(1);
            sharded.shard = Shard { index, total: 2 };
            let b = batch(std::slice::from_ref(&ok), None, Some(std::slice::from_ref(&active)), &sharded, 2e9, 1.9e9);
            let resolved = b.alerts.iter().any(|a| a.labels["image"] == elsewhere.image);
            assert_eq!(resolved, index == owner, "shard {index} of 2; the image is shard {owner}'s");
        }
    }

    #[test]
    fn unsampled_candidate_keeps_firing_until_probed_again() {
        let ok = result("10.0.0.1", None, "2026-11-23T06:00:00Z");
        let mut unsampled = failed(Reason::BlobUnknown);
        unsampled.image = "registry.example.org/releng/other:latest".into();
        let active = firing_alert(&unsampled, &settings(1), 1.5e9, 1.95e9);
        let mut carrying = settings(1);
        carrying.carried.insert((unsampled.probe.clone(), unsampled.image.clone()));
        let b = batch(std::slice::from_ref(&ok), None, Some(std::slice::from_ref(&active)), &carrying, 2e9, 1.9e9);
        let kept = b.alerts.iter().find(|a| a.labels["image"] == unsampled.image).expect("the carried alert");
        assert_eq!(kept.ends_at.as_deref(), Some(rfc3339(2e9).as_str()), "re-asserted until the next probe");
        assert_eq!(kept.annotations["reason"], "blob_unknown");
        // No longer a candidate (the repository was deleted): resolved.
        let b = batch(&[ok], None, Some(&[active]), &settings(1), 2e9, 1.9e9);
        assert!(b.alerts.iter().all(|a| a.ends_at.as_deref() == Some(rfc3339(1.9e9).as_str())));
    }
}
