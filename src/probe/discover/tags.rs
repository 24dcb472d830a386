//! `tags: {match, newest}`: the newest N tags of a repository that match.
//!
//! The tags come from `GET /v2/<repo>/tags/list` (followed over `Link` pages by
//! [`crate::registry::tags::list_tags`]); which are "the newest" is the rule of
//! [`super::order`]. A repository with no matching tag yields none: the caller
//! reports that.

use url::Url;

use crate::config::TagRule;
use crate::probe::discover::order;
use crate::reason::{ProbeError, Reason};
use crate::registry::client::RegistryClient;
use crate::registry::tags::list_tags;
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
    let listed = list_tags(transport, base, repository).await.map_err(|err| discovery_failed(err, base))?;
    let mut candidates: Vec<String> = listed.into_iter().filter(|tag| rule.pattern.is_match(tag)).collect();
    candidates.sort();
    candidates.dedup();
    let client = RegistryClient::new(transport.clone(), base.clone());
    let (mut newest, rule_used) = order::newest_first(&client, repository, &candidates, max_manifest_bytes).await;
    newest.truncate(rule.newest.max(1));
    tracing::debug!(repository, candidates = candidates.len(), order = %rule_used, ?newest, "tags selected");
    Ok(newest)
}

/// A failed listing as `discovery_failed`, keeping what answered: the original
/// reason in the message, the HTTP status and the registry's error code as fields.
pub(crate) fn discovery_failed(err: ProbeError, base: &Url) -> ProbeError {
    let registry = match (base.host_str(), base.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => base.to_string(),
    };
    ProbeError {
        reason: Reason::DiscoveryFailed,
        message: format!("{} from {registry}: {}", err.reason, err.message),
        ..err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_failures_keep_status_code_and_cause() {
        let cause = crate::registry::errors::classify_status(
            500,
            br#"{"errors":[{"code":"UNKNOWN","message":"storage down"}]}"#,
            crate::registry::errors::RequestKind::Other,
            None,
        )
        .context("GET tags of team/app");
        let err = discovery_failed(cause, &Url::parse("https://registry.example.org").unwrap());
        assert_eq!(err.reason, Reason::DiscoveryFailed);
        assert_eq!((err.status, err.registry_error.as_deref()), (Some(500), Some("UNKNOWN")));
        assert_eq!(
            err.message,
            "http_status from registry.example.org: GET tags of team/app: HTTP status 500 (UNKNOWN: storage down)"
        );
    }
}
