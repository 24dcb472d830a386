//! Listing a repository's tags and deleting manifests: what the canary's
//! cleanup needs from the Distribution API (`GET /v2/<repo>/tags/list`,
//! `HEAD` and `DELETE /v2/<repo>/manifests/<reference>`).
//!
//! Every request goes through the registry's [`Transport`], which answers
//! `401` challenges: reads ask for the repository's `pull` scope, a delete for
//! `pull,push` (a registry that wants more, such as distribution's `delete`
//! action, names it in its challenge, and the token is asked for both).
//!
//! Like the rest of `registry/`, a failed request becomes a [`ProbeError`]
//! carrying the HTTP status and the registry's error code (`UNSUPPORTED` when
//! deletes are disabled); what that means for a probe is decided by the caller.

use bytes::BytesMut;
use reqwest::header::{ACCEPT, HeaderMap, LINK};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use url::Url;

use crate::digest::Digest;
use crate::media_types::MANIFEST_ACCEPT;
use crate::reason::{ProbeError, Reason};
use crate::registry::errors::{RequestKind, classify_status, classify_transport, retry_after};
use crate::registry::push::endpoint;
use crate::registry::scope::Scope;
use crate::registry::transport::Transport;

/// Pages of `tags/list` read at most (each up to [`PAGE_SIZE`] tags).
pub const MAX_TAG_PAGES: usize = 20;
/// Tags asked for per page (`?n=`).
pub const PAGE_SIZE: usize = 1000;
/// Largest body read: a tag list page, a manifest, an error.
const MAX_BODY: usize = 4 << 20;
/// Characters of another host's origin named in an error.
const MAX_SHOWN_ORIGIN: usize = 200;

#[derive(Debug, Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// Every tag of `repo` (following `Link: <…>; rel="next"` for at most
/// [`MAX_TAG_PAGES`] pages). A repository the registry does not know has none.
pub async fn list_tags(transport: &Transport, base: &Url, repo: &str) -> Result<Vec<String>, ProbeError> {
    let mut url = endpoint(base, &format!("v2/{repo}/tags/list"))?;
    url.query_pairs_mut().append_pair("n", &PAGE_SIZE.to_string());
    let scope = Scope::pull(repo);
    let mut tags = Vec::new();
    for _ in 0..MAX_TAG_PAGES {
        let label = format!("GET tags of {repo}");
        let response = transport.send(|c| c.get(url.clone()), &scope, &label).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(tags);
        }
        let response = check(response, RequestKind::Other, &label).await?;
        let next = next_page(&url, response.headers(), &label)?;
        let body = read_capped(response, &label).await?;
        let page: TagList = serde_json::from_slice(&body)
            .map_err(|e| ProbeError::new(Reason::HttpStatus, format!("{label}: the answer is not a tag list: {e}")))?;
        tags.extend(page.tags.unwrap_or_default());
        match next {
            Some(next) => url = next,
            None => return Ok(tags),
        }
    }
    Ok(tags)
}

/// The digest a tag points to (`HEAD`, falling back to hashing a `GET` when the
/// registry sends no `Docker-Content-Digest`); `None` if the tag is gone.
pub async fn manifest_digest(
    transport: &Transport,
    base: &Url,
    repo: &str,
    tag: &str,
) -> Result<Option<Digest>, ProbeError> {
    let url = endpoint(base, &format!("v2/{repo}/manifests/{tag}"))?;
    let scope = Scope::pull(repo);
    let label = format!("HEAD manifest {repo}:{tag}");
    let response = transport.send(|c| c.head(url.clone()).header(ACCEPT, MANIFEST_ACCEPT), &scope, &label).await?;
    if response.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let response = check(response, RequestKind::Manifest, &label).await?;
    let header = response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok());
    if let Some(Ok(digest)) = header.map(str::parse::<Digest>) {
        return Ok(Some(digest));
    }
    let label = format!("GET manifest {repo}:{tag}");
    let response = transport.send(|c| c.get(url.clone()).header(ACCEPT, MANIFEST_ACCEPT), &scope, &label).await?;
    if response.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let response = check(response, RequestKind::Manifest, &label).await?;
    Ok(Some(Digest::of(&read_capped(response, &label).await?)))
}

/// What [`delete_manifest`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// 404: someone else deleted it first.
    AlreadyGone,
}

/// `DELETE /v2/<repo>/manifests/<digest>`: the manifest and every tag pointing to it.
/// A registry with deletes disabled answers 405 (`UNSUPPORTED`): see [`is_delete_refused`].
pub async fn delete_manifest(
    transport: &Transport,
    base: &Url,
    repo: &str,
    digest: &Digest,
) -> Result<Deleted, ProbeError> {
    let url = endpoint(base, &format!("v2/{repo}/manifests/{digest}"))?;
    let label = format!("DELETE manifest {repo}@{}", digest.short());
    let response = transport.send(|c| c.delete(url.clone()), &Scope::push_pull(repo), &label).await?;
    if response.status() == StatusCode::NOT_FOUND {
        return Ok(Deleted::AlreadyGone);
    }
    check(response, RequestKind::Other, &label).await?;
    Ok(Deleted::Deleted)
}

/// Whether a failed delete means "this registry does not allow deletes" (405 or `UNSUPPORTED`).
pub fn is_delete_refused(err: &ProbeError) -> bool {
    err.status == Some(405) || err.registry_error.as_deref() == Some("UNSUPPORTED")
}

/// The `rel="next"` target of a `Link` header, resolved against the request URL.
fn link_next(request: &Url, headers: &HeaderMap) -> Option<Url> {
    let link = headers.get(LINK)?.to_str().ok()?;
    link.split(',').find(|part| part.contains("rel=\"next\"") || part.contains("rel=next")).and_then(|part| {
        let target = part.split(';').next()?.trim().strip_prefix('<')?.strip_suffix('>')?;
        request.join(target).ok()
    })
}

/// The next page of a paginated listing (`Link: <…>; rel="next"`), if there is
/// one to follow: `None` at the end, or for a page naming itself (it would loop);
/// an error for a page on another host, which never gets our credentials.
pub fn next_page(request: &Url, headers: &HeaderMap, label: &str) -> Result<Option<Url>, ProbeError> {
    match link_next(request, headers) {
        Some(next) if next.origin() != request.origin() => {
            // The host is the server's word: shown, but never at any length.
            let origin = next.origin().ascii_serialization();
            let shown: String = origin.chars().take(MAX_SHOWN_ORIGIN).collect();
            let cut = if shown.len() < origin.len() { "…" } else { "" };
            Err(ProbeError::new(
                Reason::HttpStatus,
                format!("{label}: the next page is on another host ({shown}{cut}); not followed"),
            ))
        }
        Some(next) if &next != request => Ok(Some(next)),
        _ => Ok(None),
    }
}

async fn check(response: Response, kind: RequestKind, label: &str) -> Result<Response, ProbeError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let body = read_capped(response, label).await.unwrap_or_default();
    Err(classify_status(status.as_u16(), &body, kind, retry_after).context(label))
}

/// The whole body of a small answer (a tag list page, a manifest, an error), at most 4 MiB.
pub(crate) async fn read_capped(mut response: Response, label: &str) -> Result<Vec<u8>, ProbeError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify_transport(&e, label))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ProbeError::new(Reason::TooLarge, format!("{label}: the answer is over {MAX_BODY} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_pages_come_from_the_link_header() {
        let request = Url::parse("http://127.0.0.1:5000/v2/a/tags/list?n=2").unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(next_page(&request, &headers, "GET tags of a").unwrap(), None);
        headers.insert(LINK, r#"</v2/a/tags/list?last=b&n=2>; rel="next""#.parse().unwrap());
        let next = next_page(&request, &headers, "GET tags of a").unwrap().expect("a next page");
        assert_eq!(next.as_str(), "http://127.0.0.1:5000/v2/a/tags/list?last=b&n=2");
        // A page naming itself ends the listing rather than looping.
        headers.insert(LINK, r#"</v2/a/tags/list?n=2>; rel="next""#.parse().unwrap());
        assert_eq!(next_page(&request, &headers, "GET tags of a").unwrap(), None);
        // Another host never gets the request (nor the credentials it carries).
        headers.insert(LINK, r#"<https://elsewhere.example.org/v2/a/tags/list?last=b>; rel="next""#.parse().unwrap());
        let err = next_page(&request, &headers, "GET tags of a").unwrap_err();
        assert!(err.message.contains("another host (https://elsewhere.example.org)"), "{}", err.message);
    }

    #[test]
    fn refusals_are_405_or_unsupported() {
        let refused = classify_status(405, br#"{"errors":[{"code":"UNSUPPORTED"}]}"#, RequestKind::Other, None);
        assert!(is_delete_refused(&refused));
        let other = classify_status(500, b"", RequestKind::Other, None);
        assert!(!is_delete_refused(&other));
    }
}
