//! Keeping canaries from filling the registry: each run tags its manifest
//! `pullprobe-canary-<location>-<unix time>`; after the read-back, the
//! manifests of this location's older runs are deleted through the API
//! (`DELETE /v2/<repo>/manifests/<digest>`), keeping the newest [`KEEP_TAGS`].
//! Other locations' canaries and every other tag are left alone.
//!
//! Deleting a manifest only unlinks it: the registry's garbage collection
//! frees the blobs (docs/operations.md, "Canary cleanup and garbage
//! collection"; the canary itself: docs/configuration.md, "Write-path
//! canary"). A registry that refuses deletes (405, `UNSUPPORTED`) or any
//! other cleanup trouble is a warning on the result, never a failure: the
//! write path itself worked.

use url::Url;

use crate::registry::tags::{self, Deleted};
use crate::registry::transport::Transport;

/// Canary tags of one location kept in the repository, this run's included.
pub const KEEP_TAGS: usize = 3;
/// Manifests deleted per run at most; a backlog goes over several runs.
pub const MAX_DELETES_PER_RUN: usize = 20;
/// Every canary tag starts with this.
pub const TAG_PREFIX: &str = "pullprobe-canary-";
/// Longest location part of a tag (a tag is at most 128 characters).
const MAX_LOCATION_CHARS: usize = 64;

/// The tag of the run at `unix` seconds from `location`.
pub fn tag_for(location: &str, unix: u64) -> String {
    format!("{TAG_PREFIX}{}-{unix}", tag_location(location))
}

/// `location` with every character a tag cannot hold replaced by `-`.
fn tag_location(location: &str) -> String {
    location
        .chars()
        .take(MAX_LOCATION_CHARS)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' { c } else { '-' })
        .collect()
}

/// The run time of one of `location`'s canary tags; `None` for any other tag.
pub fn run_time(tag: &str, location: &str) -> Option<u64> {
    let rest = tag.strip_prefix(TAG_PREFIX)?.strip_prefix(&tag_location(location))?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// `location`'s canary tags beyond the newest `keep`, oldest first.
pub fn tags_to_delete(tags: &[String], location: &str, keep: usize) -> Vec<String> {
    let mut ours: Vec<(u64, &String)> = tags.iter().filter_map(|t| Some((run_time(t, location)?, t))).collect();
    ours.sort();
    let excess = ours.len().saturating_sub(keep);
    ours.into_iter().take(excess).map(|(_, t)| t.clone()).collect()
}

/// Delete `location`'s old canaries in `repository`; returns warnings for the result.
pub async fn remove_old_canaries(transport: &Transport, base: &Url, repository: &str, location: &str) -> Vec<String> {
    let tags = match tags::list_tags(transport, base, repository).await {
        Ok(tags) => tags,
        Err(e) => return vec![format!("canary cleanup: cannot list the tags of {repository}: {}", e.message)],
    };
    let old = tags_to_delete(&tags, location, KEEP_TAGS);
    let mut warnings = Vec::new();
    for tag in old.iter().take(MAX_DELETES_PER_RUN) {
        let digest = match tags::manifest_digest(transport, base, repository, tag).await {
            Ok(Some(digest)) => digest,
            Ok(None) => continue,
            Err(e) => {
                warnings.push(format!("canary cleanup: cannot resolve {repository}:{tag}: {}", e.message));
                break;
            }
        };
        match tags::delete_manifest(transport, base, repository, &digest).await {
            Ok(Deleted::Deleted | Deleted::AlreadyGone) => {}
            Err(e) if tags::is_delete_refused(&e) => {
                warnings.push(format!(
                    "canary cleanup: the registry refuses to delete manifests ({}); {} old canary tags of this \
                     location stay in {repository}: allow deletes (distribution: storage.delete.enabled) \
                     or remove them another way",
                    e.message,
                    old.len()
                ));
                break;
            }
            Err(e) => {
                warnings.push(format!("canary cleanup: cannot delete {repository}:{tag}: {}", e.message));
                break;
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_location_and_time() {
        assert_eq!(tag_for("eqiad", 1_700_000_000), "pullprobe-canary-eqiad-1700000000");
        assert_eq!(tag_for("eu west/2", 5), "pullprobe-canary-eu-west-2-5");
        assert!(crate::reference::is_valid_tag(&tag_for(&"x".repeat(300), u64::MAX)));
        assert_eq!(run_time("pullprobe-canary-eqiad-1700000000", "eqiad"), Some(1_700_000_000));
        assert_eq!(run_time("pullprobe-canary-eu-west-1-5", "eu-west-1"), Some(5));
        assert_eq!(run_time("pullprobe-canary-eu-west-1-5", "eu"), None, "another location's tag");
        assert_eq!(run_time("pullprobe-canary-eqiad-", "eqiad"), None);
        assert_eq!(run_time("latest", "eqiad"), None);
    }

    #[test]
    fn only_this_locations_oldest_go() {
        let tags: Vec<String> = [
            "pullprobe-canary-a-30",
            "latest",
            "pullprobe-canary-a-5",
            "pullprobe-canary-b-1",
            "pullprobe-canary-a-100",
            "pullprobe-canary-a-20",
            "pullprobe-canary-a-x",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(tags_to_delete(&tags, "a", 3), vec!["pullprobe-canary-a-5".to_string()]);
        assert_eq!(tags_to_delete(&tags, "a", 1).len(), 3);
        assert!(tags_to_delete(&tags, "a", 10).is_empty());
        assert!(tags_to_delete(&tags, "b", 1).is_empty());
    }
}
