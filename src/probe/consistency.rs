//! Consistency across frontends: within one round, every frontend of a
//! registry must resolve a tag to the same manifest digest. Frontends outside
//! the majority digest fail with `frontend_inconsistent` (on a tie, all of
//! them), and the error lists what each frontend answered.
//!
//! A digest reference needs no such check: each frontend's manifest bytes are
//! already verified against the digest itself.

use std::collections::BTreeMap;

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

    #[test]
    fn agreement_and_unknowns_pass() {
        let mut results = vec![result("x", Some(A)), result("y", Some(A)), result("z", None)];
        check_frontends(&mut results);
        assert!(results[0].ok && results[1].ok && results[2].ok);
    }
}
