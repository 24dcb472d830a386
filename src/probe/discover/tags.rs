//! `tags: {match, newest}`: the newest N tags of a repository that match.

use url::Url;

use crate::config::TagRule;
use crate::reason::{ProbeError, Reason};
use crate::registry::transport::Transport;

/// Tags of `repository` (a path like `team/app`) matching `rule`, newest first,
/// at most `rule.newest` of them. `base` is the registry's URL.
/// Errors are `discovery_failed` naming what could not be listed.
pub async fn newest_tags(
    transport: &Transport,
    base: &Url,
    repository: &str,
    rule: &TagRule,
    max_manifest_bytes: u64,
) -> Result<Vec<String>, ProbeError> {
    let _ = (transport, base, repository, rule, max_manifest_bytes);
    Err(ProbeError::new(Reason::DiscoveryFailed, "tag discovery is not built yet"))
}
