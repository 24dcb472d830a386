//! `expect:` for one pulled image: the path verdict of [`crate::verify::content`] (decided
//! during the layer walks) joined with the checks of the image config — `labels` and
//! `max_age` — into one failure of phase `content`.
//!
//! Order of the verdict: a layer that fails its integrity checks fails the pull first (its
//! entries cannot be trusted); then every path assertion in the order written, then the
//! labels, then `max_age`. The result's reason is the first failure's; its error lists them
//! all. `max_age` skips, with a warning, an image whose `created` is absent or the epoch
//! (reproducible builds write it): its age is unknown, not old.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{Expectations, PathExpectation, format_duration};
use crate::digest::Digest;
use crate::manifest::ImageConfig;
use crate::reason::{ProbeError, Reason};
use crate::verify::content::ContentPlan;

/// `expect` plus `--expect-path PATH` (repeatable): each must exist in the final filesystem.
pub fn with_paths(expect: &Expectations, paths: &[String]) -> Result<Expectations, String> {
    let mut expect = expect.clone();
    for path in paths {
        if !path.starts_with('/') || path.chars().any(char::is_control) {
            return Err(format!("--expect-path {path:?}: expected an absolute path like /etc/app.conf"));
        }
        expect.paths.push(PathExpectation::exists(path));
    }
    Ok(expect)
}

/// The plan for the path assertions of one pull of an image, if it has any.
pub fn plan(expect: &Expectations, layers: Vec<Digest>) -> Option<Arc<ContentPlan>> {
    (!expect.paths.is_empty()).then(|| ContentPlan::new(&expect.paths, layers))
}

/// Path assertions and labels of an artifact (a config that is not an image config):
/// there is no filesystem and no label to check.
pub fn not_an_image(expect: &Expectations, config_media_type: &str) -> Vec<ProbeError> {
    let mut failures = Vec::new();
    let what = format!("the artifact's config is {config_media_type:?}, not an image config");
    for path in &expect.paths {
        if !path.absent {
            failures.push(ProbeError::new(Reason::ContentMissing, format!("{}: no filesystem: {what}", path.path)));
        }
    }
    for key in expect.labels.keys() {
        failures.push(ProbeError::new(Reason::ContentMissing, format!("label {key}: no labels: {what}")));
    }
    failures
}

/// `labels` and `max_age` against the image config; warnings for what cannot be judged.
pub fn check_config(
    expect: &Expectations,
    config: &ImageConfig,
    now: OffsetDateTime,
    warnings: &mut Vec<String>,
) -> Vec<ProbeError> {
    let mut failures = Vec::new();
    for (key, want) in &expect.labels {
        match config.labels.get(key) {
            None => failures.push(ProbeError::new(
                Reason::ContentMissing,
                format!("label {key}: not in the image config (want {want:?})"),
            )),
            Some(got) if got != want => failures
                .push(ProbeError::new(Reason::ContentMismatch, format!("label {key}: want {want:?}, found {got:?}"))),
            Some(_) => {}
        }
    }
    if let Some(max_age) = expect.max_age {
        match freshness(config.created.as_deref(), max_age, now) {
            Freshness::Fresh => {}
            Freshness::Unknown(why) => warnings.push(format!("max_age not checked: {why}")),
            Freshness::Stale(message) => failures.push(ProbeError::new(Reason::ImageStale, message)),
        }
    }
    failures
}

enum Freshness {
    Fresh,
    Unknown(String),
    Stale(String),
}

fn freshness(created: Option<&str>, max_age: Duration, now: OffsetDateTime) -> Freshness {
    let Some(text) = created else {
        return Freshness::Unknown("the image config has no `created`".into());
    };
    let Ok(created) = OffsetDateTime::parse(text, &Rfc3339) else {
        return Freshness::Stale(format!(
            "`created` is {text:?}, not an RFC 3339 time: the image's age is unknown (max_age {})",
            format_duration(max_age)
        ));
    };
    if created.unix_timestamp() == 0 {
        return Freshness::Unknown(format!("`created` is the epoch ({text}), as reproducible builds write it"));
    }
    let age = now - created;
    if age <= max_age {
        return Freshness::Fresh;
    }
    let age = Duration::from_secs(age.whole_seconds().max(0).unsigned_abs());
    Freshness::Stale(format!(
        "created {text}, {} ago: older than max_age {}",
        format_duration(whole_units(age)),
        format_duration(max_age)
    ))
}

/// An age in days, hours or minutes (whichever is the largest whole unit), for humans.
fn whole_units(age: Duration) -> Duration {
    let secs = age.as_secs();
    let unit = [86_400, 3_600, 60, 1].into_iter().find(|u| secs >= *u).unwrap_or(1);
    Duration::from_secs(secs / unit * unit)
}

/// One failure for the result: the first one's reason, every message.
pub fn verdict(failures: Vec<ProbeError>) -> Option<ProbeError> {
    let first = failures.first()?.reason;
    let count = failures.len();
    let messages: Vec<String> = failures.into_iter().map(|f| f.message).collect();
    let message =
        if count == 1 { messages.join("") } else { format!("{count} expectations failed: {}", messages.join("; ")) };
    Some(ProbeError::new(first, message))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use time::macros::datetime;

    use super::*;

    fn config(created: Option<&str>, labels: &[(&str, &str)]) -> ImageConfig {
        ImageConfig {
            platform: None,
            diff_ids: Vec::new(),
            created: created.map(str::to_string),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn max_age(days: u64) -> Expectations {
        Expectations { max_age: Some(Duration::from_secs(days * 86_400)), ..Expectations::default() }
    }

    const NOW: OffsetDateTime = datetime!(2026-11-23 06:00:00 UTC);

    #[test]
    fn stale_fresh_and_unknown_ages() {
        let mut warnings = Vec::new();
        let fresh = config(Some("2026-11-01T00:00:00.123456789Z"), &[]);
        assert!(check_config(&max_age(30), &fresh, NOW, &mut warnings).is_empty());
        let stale = config(Some("2026-01-01T00:00:00Z"), &[]);
        let failures = check_config(&max_age(30), &stale, NOW, &mut warnings);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].reason, Reason::ImageStale);
        assert!(failures[0].message.contains("created 2026-01-01T00:00:00Z, 326d ago"), "{}", failures[0].message);
        assert!(warnings.is_empty());

        for created in [None, Some("1970-01-01T00:00:00Z")] {
            assert!(check_config(&max_age(30), &config(created, &[]), NOW, &mut warnings).is_empty());
        }
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[1].contains("the epoch"), "{warnings:?}");

        let garbled = check_config(&max_age(30), &config(Some("last tuesday"), &[]), NOW, &mut warnings);
        assert_eq!(garbled[0].reason, Reason::ImageStale);
    }

    #[test]
    fn labels_missing_and_mismatched() {
        let expect = Expectations {
            labels: BTreeMap::from([
                ("org.opencontainers.image.vendor".to_string(), "Example".to_string()),
                ("team".to_string(), "sre".to_string()),
                ("tier".to_string(), "gold".to_string()),
            ]),
            ..Expectations::default()
        };
        let image = config(None, &[("org.opencontainers.image.vendor", "Example"), ("team", "web")]);
        let failures = check_config(&expect, &image, NOW, &mut Vec::new());
        let reasons: Vec<Reason> = failures.iter().map(|f| f.reason).collect();
        assert_eq!(reasons, [Reason::ContentMismatch, Reason::ContentMissing]);
        let one = verdict(failures).unwrap();
        assert_eq!(one.reason, Reason::ContentMismatch);
        assert_eq!(
            one.message,
            "2 expectations failed: label team: want \"sre\", found \"web\"; label tier: not in the image config (want \"gold\")"
        );
    }
}
