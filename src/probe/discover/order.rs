//! The order of discovered tags: which ones are "the newest".
//!
//! The rule, applied to the tags that matched a probe's `tags.match`:
//!
//! 1. **Semantic version**, if *every* candidate is one: `MAJOR.MINOR[.PATCH]`,
//!    optionally with a leading `v`, a `-pre.release` and a `+build` suffix
//!    (`v1.2`, `1.10.0`, `2.0.0-rc.1+linux`). A missing PATCH is 0. Newest is
//!    the highest by semver precedence: numeric parts compare as numbers
//!    (`1.10` above `v1.9`), a pre-release orders below its release
//!    (`1.0.0-rc.2` below `1.0.0`, above `1.0.0-rc.1`), build metadata is
//!    ignored. A lone number (`42`, `20240105`) is not a version: it may be a
//!    build number or a date.
//! 2. Otherwise the image config's **`created` date**. Only the
//!    [`MAX_DATED_CANDIDATES`] lexically last candidates are looked at (one
//!    manifest and one config read each; for an index, the first image manifest
//!    that is not an attestation); the others count as undated. Candidates
//!    whose manifest or config cannot be read come first: a pull of them names
//!    the fault, and hiding a broken image behind healthy ones is what a prober
//!    must not do. Then the dated ones, latest `created` first. Undated ones
//!    (no `created`, not RFC 3339, or the epoch that reproducible builds
//!    write) come last.
//! 3. **Lexical**, descending (byte order), when no candidate has a date: the
//!    rule above then reduces to it, and it is how timestamped tags
//!    (`2026-11-23-0600-abc`) sort anyway.
//!
//! Ties (`1.2` and `v1.2.0`; the same `created`) are broken lexically,
//! descending, so the order is a function of the tags and their dates alone.
//! The comparisons ([`order`] and below) are pure functions; only
//! [`newest_first`] and the date reads under it ([`read_dates`], [`created`])
//! touch the network.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use futures_util::StreamExt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::manifest::{Manifest, parse_image_config, parse_manifest};
use crate::media_types::is_image_config;
use crate::reason::{ProbeError, Reason};
use crate::registry::client::RegistryClient;

/// Candidates whose `created` date is read, at most (the lexically last ones).
pub const MAX_DATED_CANDIDATES: usize = 50;
/// Dates read at the same time.
const DATE_READS_IN_FLIGHT: usize = 4;

/// Which step of the rule decided the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderRule {
    SemanticVersion,
    Created,
    Lexical,
}

impl fmt::Display for OrderRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OrderRule::SemanticVersion => "semantic version",
            OrderRule::Created => "config created date",
            OrderRule::Lexical => "lexical",
        })
    }
}

/// A tag read as a semantic version (see the module doc for what parses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    core: [u64; 3],
    pre_release: Vec<Identifier>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Identifier {
    Numeric(u64),
    Alphanumeric(String),
}

impl Ord for Identifier {
    /// Numeric identifiers compare as numbers and below alphanumeric ones, which compare in ASCII order.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Identifier::Numeric(a), Identifier::Numeric(b)) => a.cmp(b),
            (Identifier::Numeric(_), Identifier::Alphanumeric(_)) => Ordering::Less,
            (Identifier::Alphanumeric(_), Identifier::Numeric(_)) => Ordering::Greater,
            (Identifier::Alphanumeric(a), Identifier::Alphanumeric(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Identifier {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    /// Semver precedence: the numbers, then a release above any of its pre-releases,
    /// then the pre-release identifiers one by one (more of them is higher when the rest is equal).
    fn cmp(&self, other: &Self) -> Ordering {
        self.core.cmp(&other.core).then_with(|| match (self.pre_release.is_empty(), other.pre_release.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.pre_release.cmp(&other.pre_release),
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Version {
    /// `v?MAJOR.MINOR[.PATCH][-PRE][+BUILD]`, or `None`.
    pub fn parse(tag: &str) -> Option<Version> {
        let text = tag.strip_prefix('v').unwrap_or(tag);
        let (text, build) = match text.split_once('+') {
            Some((text, build)) => (text, Some(build)),
            None => (text, None),
        };
        if let Some(build) = build
            && !build.split('.').all(is_identifier)
        {
            return None;
        }
        let (core_text, pre_text) = match text.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (text, None),
        };
        let parts: Vec<&str> = core_text.split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return None;
        }
        let mut core = [0u64; 3];
        for (slot, part) in core.iter_mut().zip(&parts) {
            *slot = parse_number(part)?;
        }
        let pre_release = match pre_text {
            None => Vec::new(),
            Some(pre) => pre
                .split('.')
                .map(|id| match parse_number(id) {
                    Some(n) => Some(Identifier::Numeric(n)),
                    None if is_identifier(id) => Some(Identifier::Alphanumeric(id.to_string())),
                    None => None,
                })
                .collect::<Option<Vec<_>>>()?,
        };
        Some(Version { core, pre_release })
    }
}

/// Digits only, fitting in a u64 (leading zeros are accepted: `2024.01.05`).
fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Newest first by semantic version, if every tag is one; ties lexically descending.
pub fn by_version(tags: &[String]) -> Option<Vec<String>> {
    let mut versions: Vec<(Version, &String)> =
        tags.iter().map(|tag| Version::parse(tag).map(|v| (v, tag))).collect::<Option<_>>()?;
    versions.sort_by(|(va, ta), (vb, tb)| vb.cmp(va).then_with(|| tb.cmp(ta)));
    Some(versions.into_iter().map(|(_, tag)| tag.clone()).collect())
}

/// All tags, lexically descending.
pub fn lexical(tags: &[String]) -> Vec<String> {
    let mut sorted = tags.to_vec();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted
}

/// The candidates whose dates [`by_date`] uses: the [`MAX_DATED_CANDIDATES`] lexically last.
pub fn dated_candidates(tags: &[String]) -> Vec<String> {
    let mut sorted = lexical(tags);
    sorted.truncate(MAX_DATED_CANDIDATES);
    sorted
}

/// What reading a candidate's `created` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagDate {
    Created(OffsetDateTime),
    /// No usable date: absent, not RFC 3339, the epoch, or not an image.
    Undated,
    /// The manifest or config could not be read (the pull will say why).
    Unreadable(ProbeError),
}

impl TagDate {
    /// A config's `created` value as a date, if it is a usable one.
    pub fn from_created(created: Option<&str>) -> TagDate {
        match created.and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok()) {
            Some(at) if at.unix_timestamp() > 0 => TagDate::Created(at),
            _ => TagDate::Undated,
        }
    }
}

/// Newest first by date (see the module doc): unreadable, then dated (latest
/// first), then undated, each group lexically descending among equals. Tags
/// missing from `dates` are undated.
pub fn by_date(tags: &[String], dates: &HashMap<String, TagDate>) -> Vec<String> {
    // Lower rank sorts first; within a rank, later dates first, then tags descending.
    let rank = |tag: &String| match dates.get(tag) {
        Some(TagDate::Unreadable(_)) => (0, None),
        Some(TagDate::Created(at)) => (1, Some(*at)),
        Some(TagDate::Undated) | None => (2, None),
    };
    let mut sorted = tags.to_vec();
    sorted.sort_by(|a, b| {
        let (rank_a, at_a) = rank(a);
        let (rank_b, at_b) = rank(b);
        rank_a.cmp(&rank_b).then_with(|| at_b.cmp(&at_a)).then_with(|| b.cmp(a))
    });
    sorted
}

/// Order `tags` newest first by the module's rule, using `dates` only if they are not all versions.
/// Also says which rule decided.
pub fn order(tags: &[String], dates: &HashMap<String, TagDate>) -> (Vec<String>, OrderRule) {
    if let Some(sorted) = by_version(tags) {
        return (sorted, OrderRule::SemanticVersion);
    }
    if dates.values().any(|d| !matches!(d, TagDate::Undated)) {
        return (by_date(tags, dates), OrderRule::Created);
    }
    (lexical(tags), OrderRule::Lexical)
}

/// `tags` of `repository` newest first: versions need no requests; otherwise the
/// `created` dates of [`dated_candidates`] are read through `client`.
pub async fn newest_first(
    client: &RegistryClient,
    repository: &str,
    tags: &[String],
    max_manifest_bytes: u64,
) -> (Vec<String>, OrderRule) {
    if tags.len() <= 1 || by_version(tags).is_some() {
        return order(tags, &HashMap::new());
    }
    let dates = read_dates(client, repository, &dated_candidates(tags), max_manifest_bytes).await;
    order(tags, &dates)
}

/// The `created` date of each of `tags`, a few requests at a time.
pub async fn read_dates(
    client: &RegistryClient,
    repository: &str,
    tags: &[String],
    max_manifest_bytes: u64,
) -> HashMap<String, TagDate> {
    futures_util::stream::iter(tags.iter().cloned())
        .map(|tag| async move {
            let date = match created(client, repository, &tag, max_manifest_bytes).await {
                Ok(date) => date,
                Err(err) => {
                    tracing::warn!(repository, tag, error = %err, "cannot read the image's created date");
                    TagDate::Unreadable(err)
                }
            };
            (tag, date)
        })
        .buffer_unordered(DATE_READS_IN_FLIGHT)
        .collect()
        .await
}

/// The `created` date of `repository:tag`: its manifest, for an index the first
/// image manifest that is not an attestation, then the config blob.
pub async fn created(
    client: &RegistryClient,
    repository: &str,
    tag: &str,
    max_manifest_bytes: u64,
) -> Result<TagDate, ProbeError> {
    let response = client.manifest(repository, tag, max_manifest_bytes).await?;
    let image = match parse_manifest(&response.body, response.content_type.as_deref())? {
        Manifest::Image(image) => image,
        Manifest::Index(entries) => {
            let Some(first) = entries.iter().find(|e| !e.is_attestation) else { return Ok(TagDate::Undated) };
            let digest = first.manifest.digest.to_string();
            let child = client.manifest(repository, &digest, max_manifest_bytes).await?;
            match parse_manifest(&child.body, child.content_type.as_deref())? {
                Manifest::Image(image) => image,
                Manifest::Index(_) => {
                    return Err(ProbeError::new(
                        Reason::ManifestInvalid,
                        format!("index entry {} of {repository}:{tag} is another index", first.manifest.digest.short()),
                    ));
                }
            }
        }
    };
    if !is_image_config(&image.config.media_type) {
        return Ok(TagDate::Undated);
    }
    let (body, _) = client.small_blob(repository, &image.config.digest, max_manifest_bytes).await?;
    let config = parse_image_config(&body)?;
    Ok(TagDate::from_created(config.created.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    fn at(text: &str) -> TagDate {
        TagDate::Created(OffsetDateTime::parse(text, &Rfc3339).unwrap())
    }

    #[test]
    fn versions_parse_with_or_without_v_and_patch() {
        assert_eq!(Version::parse("v1.2"), Version::parse("1.2.0"));
        assert!(Version::parse("1.10").unwrap() > Version::parse("v1.9.9").unwrap());
        assert!(Version::parse("2.0.0-rc.1+build.5").is_some());
        assert!(Version::parse("2024.01.05").is_some());
        for not_a_version in
            ["latest", "42", "20240105", "2024-01-05-abc", "1.2.3.4", "v", "1..2", "1.2-", "1.2+", "1.x", "V1.2", ""]
        {
            assert_eq!(Version::parse(not_a_version), None, "{not_a_version}");
        }
        assert_eq!(Version::parse("99999999999999999999.1"), None, "too large for a number");
    }

    #[test]
    fn pre_releases_follow_semver_precedence() {
        let ordered =
            ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11"];
        let ordered = ordered.iter().chain(&["1.0.0-rc.1", "1.0.0", "1.0.1-0", "1.0.1"]);
        let versions: Vec<Version> = ordered.map(|t| Version::parse(t).unwrap()).collect();
        for pair in versions.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
        }
        assert_eq!(Version::parse("1.0.0+a").unwrap().cmp(&Version::parse("1.0.0+b").unwrap()), Ordering::Equal);
    }

    #[test]
    fn all_versions_order_by_precedence_with_mixed_forms() {
        let (sorted, rule) = order(&tags(&["v1.2", "1.10", "1.9.3", "v1.10.1-rc.1", "1.10.1", "0.9"]), &HashMap::new());
        assert_eq!(rule, OrderRule::SemanticVersion);
        assert_eq!(sorted, tags(&["1.10.1", "v1.10.1-rc.1", "1.10", "1.9.3", "v1.2", "0.9"]));
    }

    #[test]
    fn equal_versions_tie_break_lexically_descending() {
        let (sorted, _) = order(&tags(&["1.2.0", "v1.2", "1.2", "1.2.0+b"]), &HashMap::new());
        assert_eq!(sorted, tags(&["v1.2", "1.2.0+b", "1.2.0", "1.2"]));
    }

    #[test]
    fn one_tag_that_is_not_a_version_ignores_versions() {
        let candidates = tags(&["1.10", "1.9", "latest"]);
        assert_eq!(by_version(&candidates), None);
        let (sorted, rule) = order(&candidates, &HashMap::new());
        assert_eq!(rule, OrderRule::Lexical);
        assert_eq!(sorted, tags(&["latest", "1.9", "1.10"]));
    }

    #[test]
    fn created_dates_decide_when_not_all_are_versions() {
        let candidates = tags(&["build-a", "build-b", "build-c", "build-d"]);
        let dates = HashMap::from([
            ("build-a".to_string(), at("2026-11-20T10:00:00Z")),
            ("build-b".to_string(), at("2026-11-01T10:00:00Z")),
            ("build-c".to_string(), TagDate::Undated),
            ("build-d".to_string(), at("2026-11-22T10:00:00.5+02:00")),
        ]);
        let (sorted, rule) = order(&candidates, &dates);
        assert_eq!(rule, OrderRule::Created);
        assert_eq!(sorted, tags(&["build-d", "build-a", "build-b", "build-c"]));
    }

    #[test]
    fn equal_dates_tie_break_lexically_and_undated_and_unlooked_sort_last() {
        let candidates = tags(&["a", "b", "c", "d", "e"]);
        let dates = HashMap::from([
            ("a".to_string(), at("2026-01-01T00:00:00Z")),
            ("c".to_string(), at("2026-01-01T00:00:00Z")),
            ("e".to_string(), TagDate::Undated),
        ]);
        assert_eq!(by_date(&candidates, &dates), tags(&["c", "a", "e", "d", "b"]));
    }

    #[test]
    fn unreadable_candidates_come_first() {
        let candidates = tags(&["old", "new", "broken"]);
        let dates = HashMap::from([
            ("old".to_string(), at("2020-01-01T00:00:00Z")),
            ("new".to_string(), at("2026-01-01T00:00:00Z")),
            ("broken".to_string(), TagDate::Unreadable(ProbeError::new(Reason::BlobUnknown, "config gone"))),
        ]);
        let (sorted, rule) = order(&candidates, &dates);
        assert_eq!(rule, OrderRule::Created);
        assert_eq!(sorted, tags(&["broken", "new", "old"]));
    }

    #[test]
    fn no_dates_at_all_is_lexical() {
        let candidates = tags(&["2026-11-01-x", "2026-11-23-a", "2026-10-30-z"]);
        let dates = HashMap::from([
            ("2026-11-01-x".to_string(), TagDate::Undated),
            ("2026-11-23-a".to_string(), TagDate::Undated),
        ]);
        let (sorted, rule) = order(&candidates, &dates);
        assert_eq!(rule, OrderRule::Lexical);
        assert_eq!(sorted, tags(&["2026-11-23-a", "2026-11-01-x", "2026-10-30-z"]));
        assert_eq!(order(&candidates, &HashMap::new()).1, OrderRule::Lexical);
    }

    #[test]
    fn created_values_that_say_nothing_are_undated() {
        assert_eq!(TagDate::from_created(None), TagDate::Undated);
        assert_eq!(TagDate::from_created(Some("1970-01-01T00:00:00Z")), TagDate::Undated);
        assert_eq!(TagDate::from_created(Some("0001-01-01T00:00:00Z")), TagDate::Undated);
        assert_eq!(TagDate::from_created(Some("yesterday")), TagDate::Undated);
        assert_eq!(TagDate::from_created(Some("2026-11-23T06:00:00.123456789Z")), at("2026-11-23T06:00:00.123456789Z"));
    }

    #[test]
    fn only_the_lexically_last_candidates_are_dated() {
        let many: Vec<String> = (0..120).map(|i| format!("build-{i:03}")).collect();
        let dated = dated_candidates(&many);
        assert_eq!(dated.len(), MAX_DATED_CANDIDATES);
        assert_eq!(dated.first().map(String::as_str), Some("build-119"));
        assert_eq!(dated.last().map(String::as_str), Some("build-070"));
    }
}
