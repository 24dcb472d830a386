//! `catalog: {match, sample, tag}`: a rotating sample of the registry's repositories.
//!
//! The candidates are the repositories of `/v2/_catalog` (listed by
//! [`crate::registry::catalog`]) that match, sorted and without duplicates.
//! Each run probes `sample` of them: run (slot) `s` takes the `sample`
//! candidates that start at position `s × sample` of the sorted list, wrapping
//! around at its end. While the list stays the same, any [`rounds_to_cover`]
//! consecutive slots probe every candidate at least once; a repository added
//! or removed shifts the window, and coverage is promised again from there.

use regex::Regex;
use url::Url;

use crate::probe::discover::tags::discovery_failed;
use crate::reason::{ProbeError, Reason};
use crate::registry::catalog::{MAX_CATALOG_ENTRIES, MAX_CATALOG_PAGES, is_catalog_refused, list_repositories};
use crate::registry::transport::Transport;

/// Every repository of the registry at `base` (`/v2/_catalog`, paginated) matching
/// `pattern`, sorted and without duplicates. A registry that does not serve the
/// catalog is `discovery_failed` saying so.
pub async fn repositories(
    transport: &Transport,
    base: &Url,
    pattern: Option<&Regex>,
) -> Result<Vec<String>, ProbeError> {
    let catalog = list_repositories(transport, base).await.map_err(|err| {
        if is_catalog_refused(&err) {
            ProbeError {
                reason: Reason::DiscoveryFailed,
                message: format!(
                    "the registry does not serve /v2/_catalog: {}; a catalog probe needs it, \
                     or list the repositories as `image:` probes",
                    err.message
                ),
                ..err
            }
        } else {
            discovery_failed(err, base)
        }
    })?;
    if catalog.truncated {
        tracing::warn!(
            registry = %crate::redact::redact_url(base),
            listed = catalog.repositories.len(),
            "the catalog is longer than pullprobe reads ({MAX_CATALOG_PAGES} pages, {MAX_CATALOG_ENTRIES} \
             repositories): the rest is not sampled"
        );
    }
    let mut matching: Vec<String> =
        catalog.repositories.into_iter().filter(|r| pattern.is_none_or(|p| p.is_match(r))).collect();
    matching.sort();
    matching.dedup();
    Ok(matching)
}

/// The `sample` candidates probed in rotation slot `slot` (slots count runs: the
/// serve round, or for a CronJob wall-clock time divided by the interval).
/// Consecutive slots cover every candidate within [`rounds_to_cover`] slots.
/// `candidates` is expected sorted (as [`repositories`] returns them); the sample
/// comes back sorted. A `sample` of 0 counts as 1.
pub fn rotating_sample(candidates: &[String], sample: usize, slot: u64) -> Vec<String> {
    let count = candidates.len();
    let sample = sample.max(1);
    if count <= sample {
        return candidates.to_vec();
    }
    // (slot × sample) mod count, without overflow for any slot.
    let start = ((slot as u128 % count as u128) * sample as u128 % count as u128) as usize;
    let mut chosen: Vec<String> = (0..sample).map(|i| candidates[(start + i) % count].clone()).collect();
    chosen.sort();
    chosen
}

/// Slots needed to probe every one of `candidates` at least once.
pub fn rounds_to_cover(candidates: usize, sample: usize) -> u64 {
    candidates.div_ceil(sample.max(1)) as u64
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("releng/repo-{i:02}")).collect()
    }

    #[test]
    fn consecutive_slots_cover_every_candidate_in_the_promised_rounds() {
        for count in 1..=23 {
            for sample in 1..=7 {
                let candidates = names(count);
                let rounds = rounds_to_cover(count, sample);
                for first_slot in [0, 1, 5, 1_000_003, u64::MAX - rounds] {
                    let mut seen = BTreeSet::new();
                    for slot in first_slot..first_slot + rounds {
                        let chosen = rotating_sample(&candidates, sample, slot);
                        assert_eq!(chosen.len(), sample.min(count), "count {count} sample {sample} slot {slot}");
                        assert_eq!(chosen.iter().collect::<BTreeSet<_>>().len(), chosen.len(), "no repeats");
                        seen.extend(chosen);
                    }
                    assert_eq!(seen.len(), count, "count {count} sample {sample} from slot {first_slot}");
                }
            }
        }
    }

    #[test]
    fn the_same_slot_gives_the_same_sample() {
        let candidates = names(10);
        assert_eq!(rotating_sample(&candidates, 3, 7), rotating_sample(&candidates, 3, 7));
        assert_eq!(rotating_sample(&candidates, 3, 0), names(3));
        assert_eq!(rotating_sample(&candidates, 3, 1), candidates[3..6].to_vec());
        // Slot 3 starts at 9 and wraps.
        assert_eq!(
            rotating_sample(&candidates, 3, 3),
            vec![candidates[0].clone(), candidates[1].clone(), candidates[9].clone()]
        );
    }

    #[test]
    fn small_lists_and_zero_samples() {
        assert!(rotating_sample(&[], 5, 3).is_empty());
        assert_eq!(rotating_sample(&names(2), 5, 3), names(2));
        assert_eq!(rotating_sample(&names(4), 0, 2).len(), 1);
        assert_eq!(rounds_to_cover(0, 5), 0);
        assert_eq!(rounds_to_cover(11, 5), 3);
        assert_eq!(rounds_to_cover(3, 0), 3);
    }
}
