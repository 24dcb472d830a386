//! Listing a registry's repositories: `GET /v2/_catalog?n=…`, following
//! `Link: <…>; rel="next"` pages, authenticated with the `registry:catalog:*` scope.
//!
//! Memory is bounded: at most [`MAX_CATALOG_PAGES`] pages of at most 4 MiB each,
//! each read and dropped in turn, and at most [`MAX_CATALOG_ENTRIES`] names of at
//! most 255 bytes; past a cap the listing stops and says it was cut short. Like the rest of `registry/`, a refused request is a
//! [`ProbeError`] carrying the HTTP status and the registry's error code;
//! [`is_catalog_refused`] tells "this registry does not serve the catalog" apart.

use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

use crate::reason::{ProbeError, Reason};
use crate::redact::redact_url;
use crate::registry::errors::{RequestKind, classify_status};
use crate::registry::push::endpoint;
use crate::registry::scope::Scope;
use crate::registry::tags::{next_page, read_capped};
use crate::registry::transport::Transport;

/// Repositories asked for per page (`?n=`); distribution's default `maxentries`.
pub const PAGE_SIZE: usize = 1000;
/// Pages read at most.
pub const MAX_CATALOG_PAGES: usize = 100;
/// Repository names kept at most.
pub const MAX_CATALOG_ENTRIES: usize = 100_000;

/// The longest repository name kept.
const MAX_NAME_BYTES: usize = 255;
/// What distribution answers (400) when `n` is over its `catalog.maxentries`.
const PAGINATION_NUMBER_INVALID: &str = "PAGINATION_NUMBER_INVALID";

#[derive(Debug, Deserialize)]
struct CatalogPage {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

/// The repositories a registry listed, in the order it sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub repositories: Vec<String>,
    /// The listing stopped at [`MAX_CATALOG_PAGES`] or [`MAX_CATALOG_ENTRIES`] with more to come.
    pub truncated: bool,
}

/// Every repository of the registry at `base`, page by page. A registry whose
/// `catalog.maxentries` is below [`PAGE_SIZE`] refuses that `n`: the listing then
/// starts again without `n` and takes the page size the registry chooses.
pub async fn list_repositories(transport: &Transport, base: &Url) -> Result<Catalog, ProbeError> {
    let first = endpoint(base, "v2/_catalog")?;
    let mut url = first.clone();
    url.query_pairs_mut().append_pair("n", &PAGE_SIZE.to_string());
    let scope = Scope::catalog();
    let mut catalog = Catalog::default();
    let mut asked_without_n = false;
    let mut pages = 0;
    while pages < MAX_CATALOG_PAGES {
        let label = format!("GET {}", redact_url(&url));
        let response = transport.send(|c| c.get(url.clone()), &scope, &label).await?;
        let status = response.status();
        if !status.is_success() {
            let body = read_capped(response, &label).await.unwrap_or_default();
            let err = classify_status(status.as_u16(), &body, RequestKind::Other, None).context(&label);
            if status == StatusCode::BAD_REQUEST
                && err.registry_error.as_deref() == Some(PAGINATION_NUMBER_INVALID)
                && !asked_without_n
                && pages == 0
            {
                asked_without_n = true;
                url = first.clone();
                continue;
            }
            return Err(err);
        }
        pages += 1;
        let next = next_page(&url, response.headers(), &label)?;
        let body = read_capped(response, &label).await?;
        let page: CatalogPage = serde_json::from_slice(&body).map_err(|e| {
            ProbeError::new(Reason::HttpStatus, format!("{label}: the answer is not a repository list: {e}"))
        })?;
        // Longer names are not repository names (distribution allows 255 bytes); skipping them bounds memory.
        for repository in page.repositories.unwrap_or_default().into_iter().filter(|r| r.len() <= MAX_NAME_BYTES) {
            if catalog.repositories.len() >= MAX_CATALOG_ENTRIES {
                catalog.truncated = true;
                return Ok(catalog);
            }
            catalog.repositories.push(repository);
        }
        match next {
            Some(next) => url = next,
            None => return Ok(catalog),
        }
    }
    catalog.truncated = true;
    Ok(catalog)
}

/// Whether a failed listing means "this registry does not serve the catalog":
/// 404, 401/403 even after authenticating, 405, or the `UNSUPPORTED` error code.
pub fn is_catalog_refused(err: &ProbeError) -> bool {
    matches!(err.status, Some(401 | 403 | 404 | 405)) || err.registry_error.as_deref() == Some("UNSUPPORTED")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_missing_forbidden_or_unsupported() {
        for (status, body) in [
            (404, &b"<html>not found</html>"[..]),
            (401, br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#),
            (403, b""),
            (400, br#"{"errors":[{"code":"UNSUPPORTED","message":"catalog disabled"}]}"#),
        ] {
            assert!(is_catalog_refused(&classify_status(status, body, RequestKind::Other, None)), "{status}");
        }
        for status in [500, 502, 429] {
            assert!(!is_catalog_refused(&classify_status(status, b"", RequestKind::Other, None)), "{status}");
        }
    }
}
