//! What earlier runs left behind for each series: how many runs in a row
//! failed, when it last passed, since when it fails, and the last reason.
//!
//! Metrics and alerts are functions of this run's results *and* this history.
//! `serve` keeps it in memory between rounds; a `now` run (a CronJob pod, a
//! fresh process every time) reads it back from the Pushgateway and
//! Alertmanager. Either way the step from one run to the next is [`advance`].

use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::reason::Reason;
use crate::result::ProbeResult;

/// The labels that make one series (and one alert) of a result:
/// `probe, image, registry, frontend, platform`. `location` is the prober's, the same for all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub probe: String,
    pub image: String,
    pub registry: String,
    pub frontend: String,
    pub platform: String,
}

impl SeriesKey {
    pub fn of(result: &ProbeResult) -> SeriesKey {
        SeriesKey {
            probe: result.probe.clone(),
            image: result.image.clone(),
            registry: result.registry.clone(),
            frontend: result.frontend.clone(),
            platform: result.platform.clone(),
        }
    }

    /// The five labels in DESIGN.md order, as metric and alert labels.
    pub fn labels(&self) -> [(&'static str, &str); 5] {
        [
            ("probe", &self.probe),
            ("image", &self.image),
            ("registry", &self.registry),
            ("frontend", &self.frontend),
            ("platform", &self.platform),
        ]
    }

    /// The key from a label map (a read-back series or alert); `None` if a label is missing.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<SeriesKey> {
        let get = |k: &str| labels.get(k).cloned();
        Some(SeriesKey {
            probe: get("probe")?,
            image: get("image")?,
            registry: get("registry")?,
            frontend: get("frontend")?,
            platform: get("platform")?,
        })
    }
}

/// The state of one series after some run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesHistory {
    /// Runs in a row that failed; 0 after a passing run.
    pub consecutive_failures: u32,
    /// When the last passing run ended (Unix seconds); only passing runs set it.
    pub last_success: Option<f64>,
    /// When the first run of the current failing streak started (Unix seconds).
    pub failing_since: Option<f64>,
    /// The reason of the last failure, kept after recovery.
    pub last_reason: Option<Reason>,
}

impl SeriesHistory {
    /// The history after `result`, given the history before it.
    pub fn after(&self, result: &ProbeResult) -> SeriesHistory {
        let started = started_at(result);
        if result.ok {
            SeriesHistory {
                consecutive_failures: 0,
                last_success: Some(started + result.duration_seconds.max(0.0)),
                failing_since: None,
                last_reason: self.last_reason,
            }
        } else {
            SeriesHistory {
                consecutive_failures: self.consecutive_failures.saturating_add(1),
                last_success: self.last_success,
                failing_since: Some(match (self.consecutive_failures, self.failing_since) {
                    (n, Some(since)) if n > 0 => since.min(started),
                    _ => started,
                }),
                last_reason: result.reason.or(self.last_reason),
            }
        }
    }
}

/// Every series' history.
pub type History = BTreeMap<SeriesKey, SeriesHistory>;

/// The history after `results`: one entry per result (what `previous` knew of
/// series not in `results` is dropped, as their series disappear).
pub fn advance(previous: &History, results: &[ProbeResult]) -> History {
    results
        .iter()
        .map(|r| {
            let key = SeriesKey::of(r);
            let next = previous.get(&key).cloned().unwrap_or_default().after(r);
            (key, next)
        })
        .collect()
}

/// When a result's run started, in Unix seconds.
pub fn started_at(result: &ProbeResult) -> f64 {
    unix_seconds(result.started_at)
}

pub fn unix_seconds(at: OffsetDateTime) -> f64 {
    at.unix_timestamp_nanos() as f64 / 1e9
}

/// RFC 3339 (UTC, milliseconds) for Unix seconds.
pub fn rfc3339(unix: f64) -> String {
    let nanos = (unix * 1e3).round() as i128 * 1_000_000;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.format(&Rfc3339).unwrap_or_default()
}

/// Unix seconds of an RFC 3339 time.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    OffsetDateTime::parse(text, &Rfc3339).ok().map(unix_seconds)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A result for tests: `ok`, or failed with `reason`.
    pub(crate) fn result(frontend: &str, reason: Option<Reason>, started_at: &str) -> ProbeResult {
        ProbeResult {
            probe: "golden-base".into(),
            kind: crate::result::Kind::Pull,
            image: "registry.example.org/base/buster:latest".into(),
            registry: "prod".into(),
            frontend: frontend.into(),
            location: "eqiad".into(),
            platform: "linux/amd64".into(),
            ok: reason.is_none(),
            reason,
            phase: None,
            error: reason.map(|r| format!("{r} happened")),
            registry_error: None,
            retries: 0,
            manifest_digest: None,
            started_at: OffsetDateTime::parse(started_at, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH),
            duration_seconds: 2.0,
            phases: BTreeMap::from([("manifest".to_string(), 0.5), ("transfer".to_string(), 1.5)]),
            tls_not_after: None,
            layers: Vec::new(),
            ratelimit_remaining: None,
            used_by: Vec::new(),
            mirror_position: None,
            referrers: None,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn a_streak_counts_and_keeps_the_last_success() {
        let t0 = "2026-11-23T06:00:00Z";
        let ok = result("10.0.0.1", None, t0);
        let h1 = advance(&History::new(), std::slice::from_ref(&ok));
        let key = SeriesKey::of(&ok);
        let success = h1[&key].last_success.unwrap();
        assert_eq!(success, parse_rfc3339(t0).unwrap() + 2.0);
        assert_eq!(h1[&key].consecutive_failures, 0);

        let fail1 = result("10.0.0.1", Some(Reason::BlobUnknown), "2026-11-23T06:05:00Z");
        let h2 = advance(&h1, &[fail1]);
        let fail2 = result("10.0.0.1", Some(Reason::Timeout), "2026-11-23T06:10:00Z");
        let h3 = advance(&h2, &[fail2]);
        assert_eq!(h3[&key].consecutive_failures, 2);
        assert_eq!(h3[&key].last_success, Some(success), "a failure keeps the last success");
        assert_eq!(h3[&key].failing_since, parse_rfc3339("2026-11-23T06:05:00Z"), "since the first failure");
        assert_eq!(h3[&key].last_reason, Some(Reason::Timeout));

        let h4 = advance(&h3, &[result("10.0.0.1", None, "2026-11-23T06:15:00Z")]);
        assert_eq!(h4[&key].consecutive_failures, 0);
        assert_eq!(h4[&key].failing_since, None);
        assert_eq!(h4[&key].last_reason, Some(Reason::Timeout), "kept for last_failure_info");
    }

    #[test]
    fn times_round_trip() {
        let t = parse_rfc3339("2026-11-23T06:00:00.250Z").unwrap();
        assert_eq!(rfc3339(t), "2026-11-23T06:00:00.25Z");
    }
}
