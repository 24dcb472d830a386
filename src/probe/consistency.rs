//! Consistency across frontends: within one round, every frontend of a
//! registry must resolve a tag to the same manifest digest. Frontends outside
//! the majority digest fail with `frontend_inconsistent` (on a tie, all of
//! them), and the error lists what each frontend answered.
//!
//! A digest reference needs no such check: each frontend's manifest bytes are
//! already verified against the digest itself.
//!
//! With `signatures:`, the same for referrers: every frontend that served the same
//! manifest must serve the same set of referrer digests for it. Frontends outside
//! the majority set fail with `referrers_inconsistent` (on a tie, all of them); the
//! error says what each one lacks or has besides the majority.

use std::collections::{BTreeMap, BTreeSet};

use crate::reason::{Phase, Reason};
use crate::result::{Kind, ProbeResult};

/// Mark the results of frontends that disagree with the majority.
pub fn check_frontends(results: &mut [ProbeResult]) {
    let mut groups: BTreeMap<(String, String, String), Vec<usize>> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        if r.kind != Kind::Pull || r.image.contains('@') {
            continue;
        }
        groups.entry((r.probe.clone(), r.image.clone(), r.registry.clone())).or_default().push(i);
    }
    for indexes in groups.values() {
        // One digest per frontend (every platform result of a frontend carries the same top digest).
        let mut by_frontend: BTreeMap<&str, &str> = BTreeMap::new();
        for &i in indexes {
            if let Some(digest) = results[i].manifest_digest.as_deref() {
                by_frontend.entry(results[i].frontend.as_str()).or_insert(digest);
            }
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for digest in by_frontend.values() {
            *counts.entry(digest).or_default() += 1;
        }
        if counts.len() < 2 {
            continue;
        }
        let top = counts.values().copied().max().unwrap_or(0);
        let leaders: Vec<&str> = counts.iter().filter(|(_, n)| **n == top).map(|(d, _)| *d).collect();
        let majority = if leaders.len() == 1 { Some(leaders[0]) } else { None };
        let listing: Vec<String> =
            by_frontend.iter().map(|(frontend, digest)| format!("{frontend} → {}", short(digest))).collect();
        let verdict = match majority {
            Some(d) => format!("majority {}", short(d)),
            None => "no majority".to_string(),
        };
        let message =
            format!("frontends disagree on {}: {} ({verdict})", results[indexes[0]].image, listing.join(", "));
        let outside: Vec<String> = by_frontend
            .iter()
            .filter(|(_, digest)| majority != Some(**digest))
            .map(|(frontend, _)| frontend.to_string())
            .collect();
        for &i in indexes {
            let r = &mut results[i];
            if !outside.contains(&r.frontend) {
                continue;
            }
            if r.ok {
                r.ok = false;
                r.reason = Some(Reason::FrontendInconsistent);
                r.phase = Some(Phase::Consistency);
                r.error = Some(message.clone());
            } else {
                let previous = r.error.take().unwrap_or_default();
                r.error = Some(format!("{previous}; {message}"));
            }
        }
    }
}

/// Mark the results of frontends whose referrers disagree with the majority's.
/// Only frontends whose referrers were listed count (a failed pull or listing says
/// nothing about them).
pub fn check_referrers(results: &mut [ProbeResult]) {
    type Group = (String, String, String, String);
    let mut groups: BTreeMap<Group, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for r in results.iter() {
        let (Kind::Pull, Some(referrers), Some(digest)) = (r.kind, &r.referrers, &r.manifest_digest) else { continue };
        let group = (r.probe.clone(), r.image.clone(), r.registry.clone(), digest.clone());
        let set: BTreeSet<String> =
            referrers.iter().filter(|c| &c.subject == digest).map(|c| c.digest.clone()).collect();
        // One set per frontend: every platform result of a frontend carries the same top referrers.
        groups.entry(group).or_default().entry(r.frontend.clone()).or_insert(set);
    }
    for ((probe, image, registry, digest), by_frontend) in groups {
        let mut counts: BTreeMap<&BTreeSet<String>, usize> = BTreeMap::new();
        for set in by_frontend.values() {
            *counts.entry(set).or_default() += 1;
        }
        if counts.len() < 2 {
            continue;
        }
        let top = counts.values().copied().max().unwrap_or(0);
        let leaders: Vec<&BTreeSet<String>> = counts.iter().filter(|(_, n)| **n == top).map(|(s, _)| *s).collect();
        let majority = if leaders.len() == 1 { Some(leaders[0]) } else { None };
        let listing: Vec<String> =
            by_frontend.iter().map(|(frontend, set)| format!("{frontend} → {}", describe(set, majority))).collect();
        let verdict = if majority.is_some() { "majority shown as the reference" } else { "no majority" };
        let message = format!(
            "frontends disagree on the referrers of {image} ({}): {} ({verdict})",
            short(&digest),
            listing.join("; ")
        );
        let outside: Vec<&String> =
            by_frontend.iter().filter(|(_, set)| majority != Some(*set)).map(|(frontend, _)| frontend).collect();
        for r in results.iter_mut() {
            let same = r.probe == probe && r.image == image && r.registry == registry;
            if !same || r.manifest_digest.as_deref() != Some(digest.as_str()) || !outside.contains(&&r.frontend) {
                continue;
            }
            if r.ok {
                r.ok = false;
                r.reason = Some(Reason::ReferrersInconsistent);
                r.phase = Some(Phase::Consistency);
                r.error = Some(message.clone());
            } else {
                let previous = r.error.take().unwrap_or_default();
                r.error = Some(format!("{previous}; {message}"));
            }
        }
    }
}

/// A frontend's referrers: what it lacks and has besides the majority, else how many.
fn describe(set: &BTreeSet<String>, majority: Option<&BTreeSet<String>>) -> String {
    let list = |digests: Vec<&String>| {
        let mut shown: Vec<&str> = digests.iter().take(3).map(|d| short(d)).collect();
        if digests.len() > 3 {
            shown.push("…");
        }
        shown.join(", ")
    };
    match majority {
        Some(majority) if majority == set => format!("{} referrers", set.len()),
        Some(majority) => {
            let lacks: Vec<&String> = majority.difference(set).collect();
            let extra: Vec<&String> = set.difference(majority).collect();
            let mut parts = Vec::new();
            if !lacks.is_empty() {
                parts.push(format!("lacks {}", list(lacks)));
            }
            if !extra.is_empty() {
                parts.push(format!("has besides {}", list(extra)));
            }
            parts.join(", ")
        }
        None if set.is_empty() => "no referrers".to_string(),
        None => format!("{} referrers ({})", set.len(), list(set.iter().collect())),
    }
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::ProbeResult;

    fn result(frontend: &str, digest: Option<&str>) -> ProbeResult {
        ProbeResult {
            probe: "p".into(),
            kind: Kind::Pull,
            image: "r.example.org/app:1".into(),
            registry: "prod".into(),
            frontend: frontend.into(),
            location: "default".into(),
            platform: "linux/amd64".into(),
            ok: true,
            reason: None,
            phase: None,
            error: None,
            registry_error: None,
            retries: 0,
            manifest_digest: digest.map(String::from),
            started_at: time::OffsetDateTime::UNIX_EPOCH,
            duration_seconds: 0.0,
            phases: Default::default(),
            tls_not_after: None,
            layers: vec![],
            ratelimit_remaining: None,
            used_by: Vec::new(),
            mirror_position: None,
            referrers: None,
            warnings: vec![],
        }
    }

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn the_minority_fails() {
        let mut results = vec![result("x", Some(A)), result("y", Some(A)), result("z", Some(B))];
        check_frontends(&mut results);
        assert!(results[0].ok && results[1].ok);
        assert_eq!(results[2].reason, Some(Reason::FrontendInconsistent));
        let error = results[2].error.as_deref().unwrap();
        assert!(error.contains("z → sha256:bbbbbbbbbbbb") && error.contains("x → sha256:aaaaaaaaaaaa"), "{error}");
    }

    #[test]
    fn a_tie_fails_everyone() {
        let mut results = vec![result("x", Some(A)), result("y", Some(B))];
        check_frontends(&mut results);
        assert!(results.iter().all(|r| r.reason == Some(Reason::FrontendInconsistent)));
    }

    fn with_referrers(frontend: &str, referrers: &[&str]) -> ProbeResult {
        let mut r = result(frontend, Some(A));
        r.referrers = Some(
            referrers
                .iter()
                .map(|d| crate::result::ReferrerCheck {
                    digest: d.to_string(),
                    artifact_type: None,
                    source: crate::result::ReferrerSource::CosignTag,
                    ok: true,
                    reason: None,
                    verified_with: None,
                    subject: A.to_string(),
                    error: None,
                })
                .collect(),
        );
        r
    }

    #[test]
    fn the_frontend_lacking_a_referrer_fails() {
        let mut results =
            vec![with_referrers("x", &[B]), with_referrers("y", &[B]), with_referrers("z", &[]), result("w", Some(A))];
        check_referrers(&mut results);
        assert!(results[0].ok && results[1].ok && results[3].ok, "{results:?}");
        assert_eq!(results[2].reason, Some(Reason::ReferrersInconsistent));
        let error = results[2].error.as_deref().unwrap();
        assert!(error.contains("z → lacks sha256:bbbbbbbbbbbb"), "{error}");
    }

    #[test]
    fn a_referrers_tie_fails_everyone() {
        let mut results = vec![with_referrers("x", &[B]), with_referrers("y", &[])];
        check_referrers(&mut results);
        assert!(results.iter().all(|r| r.reason == Some(Reason::ReferrersInconsistent)));
    }

    #[test]
    fn agreement_and_unknowns_pass() {
        let mut results = vec![result("x", Some(A)), result("y", Some(A)), result("z", None)];
        check_frontends(&mut results);
        assert!(results[0].ok && results[1].ok && results[2].ok);
    }
}
