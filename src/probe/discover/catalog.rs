//! `catalog: {match, sample, tag}`: a rotating sample of the registry's repositories.

use regex::Regex;
use url::Url;

use crate::reason::{ProbeError, Reason};
use crate::registry::transport::Transport;

/// Every repository of the registry at `base` (`/v2/_catalog`, paginated) matching
/// `pattern`, sorted and without duplicates. A registry that does not serve the
/// catalog is `discovery_failed` saying so.
pub async fn repositories(
    transport: &Transport,
    base: &Url,
    pattern: Option<&Regex>,
) -> Result<Vec<String>, ProbeError> {
    let _ = (transport, base, pattern);
    Err(ProbeError::new(Reason::DiscoveryFailed, "catalog discovery is not built yet"))
}

/// The `sample` candidates probed in rotation slot `slot` (slots count runs: the
/// serve round, or for a CronJob wall-clock time divided by the interval).
/// Consecutive slots cover every candidate within [`rounds_to_cover`] slots.
pub fn rotating_sample(candidates: &[String], sample: usize, slot: u64) -> Vec<String> {
    let _ = (candidates, sample, slot);
    Vec::new()
}

/// Slots needed to probe every one of `candidates` at least once.
pub fn rounds_to_cover(candidates: usize, sample: usize) -> u64 {
    candidates.div_ceil(sample.max(1)) as u64
}
