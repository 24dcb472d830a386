//! The OCI 1.1 referrers API, `GET /v2/<name>/referrers/<digest>[?artifactType=…]`:
//! one page of the image index that lists a manifest's referrers, capped like a
//! manifest, with whether the registry applied the filter (`OCI-Filters-Applied`)
//! and where the next page is (`Link: <…>; rel="next"`). A 404 means the registry
//! has no referrers API (distribution 2.8 does not): clients then read the
//! referrers tag schema, which is a plain manifest request.

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use url::Url;

use super::client::{RegistryClient, check_status, header_str, read_capped};
use super::errors::RequestKind;
use crate::digest::Digest;
use crate::media_types::OCI_INDEX;
use crate::reason::ProbeError;

/// One page of the referrers API's answer.
#[derive(Debug, Clone)]
pub struct ReferrersPage {
    /// The image index, as sent.
    pub body: Bytes,
    /// The registry says it applied the `artifactType` filter itself.
    pub filters_applied: bool,
    /// The next page, from `Link: <…>; rel="next"`.
    pub next: Option<Url>,
}

impl RegistryClient {
    /// The first page of `digest`'s referrers (of `artifact_type` if given); `None`
    /// when the registry answers 404: it has no referrers API.
    pub async fn referrers(
        &self,
        repository: &str,
        digest: &Digest,
        artifact_type: Option<&str>,
        max_bytes: u64,
    ) -> Result<Option<ReferrersPage>, ProbeError> {
        let mut url = self.url(repository, &format!("referrers/{digest}"))?;
        if let Some(artifact_type) = artifact_type {
            url.query_pairs_mut().append_pair("artifactType", artifact_type);
        }
        self.referrers_page(repository, url, max_bytes).await
    }

    /// A page of referrers at `url` (the first, or one a `Link` header named).
    pub async fn referrers_page(
        &self,
        repository: &str,
        url: Url,
        max_bytes: u64,
    ) -> Result<Option<ReferrersPage>, ProbeError> {
        let what = format!("referrers of {repository}");
        let headers = self.route_headers().clone();
        let response = self
            .transport()
            .send(
                |http| http.get(url.clone()).headers(headers.clone()).header(ACCEPT, OCI_INDEX),
                &self.pull_scope(repository),
                &what,
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = check_status(response, RequestKind::Other, &what).await?;
        let filters_applied = header_str(response.headers(), "oci-filters-applied")
            .is_some_and(|v| v.split(',').any(|f| f.trim().eq_ignore_ascii_case("artifactType")));
        let next = header_str(response.headers(), "link").and_then(|link| next_link(&link, response.url()));
        let body = read_capped(response, max_bytes, &what).await?;
        Ok(Some(ReferrersPage { body, filters_applied, next }))
    }
}

/// The `rel="next"` target of a `Link` header, resolved against the request's URL.
fn next_link(link: &str, base: &Url) -> Option<Url> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| base.join(target).ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_is_resolved_against_the_request() {
        let base = Url::parse("http://127.0.0.1:5000/v2/app/referrers/sha256:aa?artifactType=x").unwrap();
        let next = next_link(r#"</v2/app/referrers/sha256:aa?last=b&n=2>; rel="next""#, &base).unwrap();
        assert_eq!(next.as_str(), "http://127.0.0.1:5000/v2/app/referrers/sha256:aa?last=b&n=2");
        assert_eq!(next_link(r#"</x>; rel="prev""#, &base), None);
    }
}
