//! Where the referrers of one image are listed, in the order clients look:
//!
//! 1. the OCI 1.1 referrers API, once per artifactType wanted (`?artifactType=`),
//!    filtered here unless the registry says `OCI-Filters-Applied: artifactType`;
//! 2. if the API answers 404, the referrers tag schema: the index at tag
//!    `sha256-<hex>`, filtered here;
//! 3. with `cosign` required, cosign's legacy tag `sha256-<hex>.sig`.
//!
//! An index entry's `artifactType` is only a hint: entries without one are kept
//! (fallback indexes written by some tools omit it) and the manifest decides.
//! Each place looked in is remembered, so a missing signature can say where it
//! was looked for.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;

use super::{MAX_EXAMINED, MAX_LISTED, MAX_PAGES, Request};
use crate::config::RequiredReferrer;
use crate::digest::Digest;
use crate::reason::{ProbeError, Reason};
use crate::registry::client::RegistryClient;
use crate::result::ReferrerSource;
use crate::signature::{bundle, cosign};

/// A referrer found in a listing, not yet fetched.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub digest: Digest,
    /// The listing's size for it (none for the legacy tag).
    pub size: Option<u64>,
    /// The listing's artifactType for it: a hint.
    pub listed_type: Option<String>,
    pub source: ReferrerSource,
    /// The manifest, when the listing already read it (the legacy tag).
    pub manifest: Option<Bytes>,
}

/// Everything the listings found, and where they looked.
#[derive(Debug, Default)]
pub(super) struct Listed {
    pub candidates: BTreeMap<Digest, Candidate>,
    /// Each place looked in, and what it said: for messages.
    pub looked: Vec<String>,
    pub warnings: Vec<String>,
}

impl Listed {
    fn add(&mut self, candidate: Candidate) {
        if self.candidates.len() >= MAX_LISTED && !self.candidates.contains_key(&candidate.digest) {
            return;
        }
        self.candidates.entry(candidate.digest).or_insert(candidate);
    }

    /// At most [`MAX_EXAMINED`] candidates: those the listing says are of a wanted
    /// type first, then those it says nothing about; each group in digest order, so
    /// every frontend that lists the same referrers examines the same ones.
    pub fn for_examination(&self, warnings: &mut Vec<String>) -> Vec<Candidate> {
        let mut ordered: Vec<&Candidate> = self.candidates.values().collect();
        ordered.sort_by_key(|c| (c.listed_type.is_none(), c.digest));
        if ordered.len() > MAX_EXAMINED {
            warnings.push(format!(
                "{} referrers listed; the first {MAX_EXAMINED} were examined (the cap per image per frontend)",
                ordered.len()
            ));
        }
        ordered.into_iter().take(MAX_EXAMINED).cloned().collect()
    }
}

/// An image index as a listing serves it: only what is needed of each entry.
#[derive(Debug, Deserialize)]
struct ListingIndex {
    #[serde(default)]
    manifests: Vec<ListingEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListingEntry {
    digest: String,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    artifact_type: Option<String>,
}

/// The artifactTypes the required kinds are stored under as referrers.
pub(super) fn wanted_types(request: Request<'_>) -> Vec<String> {
    let mut types: Vec<String> = Vec::new();
    for kind in &request.policy.require {
        let of_kind = match kind {
            RequiredReferrer::Cosign => vec![bundle::BUNDLE_V03, cosign::REFERRER_ARTIFACT_TYPE],
            RequiredReferrer::ArtifactType(t) => vec![t.as_str()],
        };
        for t in of_kind {
            if !types.iter().any(|known| known == t) {
                types.push(t.to_string());
            }
        }
    }
    types
}

/// Every place, as described above.
pub(super) async fn list(client: &RegistryClient, request: Request<'_>) -> Result<Listed, ProbeError> {
    let mut listed = Listed::default();
    let wanted = wanted_types(request);
    let api = referrers_api(client, request, &wanted, &mut listed).await?;
    if !api {
        tag_schema(client, request, &wanted, &mut listed).await?;
    }
    if request.policy.require.contains(&RequiredReferrer::Cosign) {
        cosign_tag(client, request, &mut listed).await?;
    }
    Ok(listed)
}

/// The referrers API, one query per wanted type; `false` if the registry has none (404).
async fn referrers_api(
    client: &RegistryClient,
    request: Request<'_>,
    wanted: &[String],
    listed: &mut Listed,
) -> Result<bool, ProbeError> {
    let limit = request.max_manifest_bytes;
    for artifact_type in wanted {
        let Some(mut page) = client.referrers(request.repository, request.image, Some(artifact_type), limit).await?
        else {
            listed.looked.push("the referrers API (404: this frontend has none)".to_string());
            return Ok(false);
        };
        let mut found = 0;
        for pages in 1.. {
            let index = parse_listing(&page.body, "the referrers API's index")?;
            for entry in index.manifests {
                let keep = page.filters_applied
                    || entry.artifact_type.as_deref().is_none_or(|t| t.is_empty() || t == artifact_type);
                if keep {
                    listed.add(candidate(entry, ReferrerSource::ReferrersApi)?);
                    found += 1;
                }
            }
            let Some(next) = page.next.take() else { break };
            if pages >= MAX_PAGES {
                listed.warnings.push(format!(
                    "the referrers API has more than {MAX_PAGES} pages of {artifact_type} referrers; the rest were not read"
                ));
                break;
            }
            match client.referrers_page(request.repository, next, limit).await? {
                Some(next_page) => page = next_page,
                None => break,
            }
        }
        let filtered = if page.filters_applied { "filtered by the registry" } else { "filtered by pullprobe" };
        listed.looked.push(format!("the referrers API for {artifact_type} ({found} found, {filtered})"));
    }
    Ok(true)
}

/// The referrers tag schema: the index at `sha256-<hex>`, if there is one.
async fn tag_schema(
    client: &RegistryClient,
    request: Request<'_>,
    wanted: &[String],
    listed: &mut Listed,
) -> Result<(), ProbeError> {
    let tag = format!("sha256-{}", request.image.hex());
    let Some(body) = optional_manifest(client, request, &tag).await? else {
        listed.looked.push(format!("tag {tag} (absent)"));
        return Ok(());
    };
    let index = parse_listing(&body, &format!("the referrers index at tag {tag}"))?;
    let mut found = 0;
    for entry in index.manifests {
        let keep = entry.artifact_type.as_deref().is_none_or(|t| t.is_empty() || wanted.iter().any(|w| w == t));
        if keep {
            listed.add(candidate(entry, ReferrerSource::TagSchema)?);
            found += 1;
        }
    }
    listed.looked.push(format!("tag {tag} ({found} of the wanted types)"));
    Ok(())
}

/// cosign's legacy signature tag `sha256-<hex>.sig`, if there is one.
async fn cosign_tag(client: &RegistryClient, request: Request<'_>, listed: &mut Listed) -> Result<(), ProbeError> {
    let tag = format!("sha256-{}.sig", request.image.hex());
    let Some(body) = optional_manifest(client, request, &tag).await? else {
        listed.looked.push(format!("tag {tag} (absent)"));
        return Ok(());
    };
    listed.looked.push(format!("tag {tag}"));
    let digest = Digest::of(&body);
    listed.add(Candidate {
        digest,
        size: Some(body.len() as u64),
        listed_type: Some(cosign::SIMPLE_SIGNING.to_string()),
        source: ReferrerSource::CosignTag,
        manifest: Some(body),
    });
    Ok(())
}

/// A manifest by tag; `None` when the frontend does not have it.
async fn optional_manifest(
    client: &RegistryClient,
    request: Request<'_>,
    tag: &str,
) -> Result<Option<Bytes>, ProbeError> {
    match client.manifest(request.repository, tag, request.max_manifest_bytes).await {
        Ok(response) => Ok(Some(response.body)),
        Err(e) if e.reason == Reason::ManifestUnknown => Ok(None),
        Err(e) => Err(e),
    }
}

fn parse_listing(body: &[u8], what: &str) -> Result<ListingIndex, ProbeError> {
    serde_json::from_slice(body).map_err(|e| {
        ProbeError::new(
            Reason::ManifestInvalid,
            format!("{what} is not an image index: {}", crate::redact::json_error(&e)),
        )
    })
}

fn candidate(entry: ListingEntry, source: ReferrerSource) -> Result<Candidate, ProbeError> {
    let digest: Digest = entry.digest.parse().map_err(|e| {
        ProbeError::new(Reason::ManifestInvalid, format!("a referrer listed by {}: {e}", source.as_str()))
    })?;
    Ok(Candidate {
        digest,
        size: u64::try_from(entry.size).ok(),
        listed_type: entry.artifact_type.filter(|t| !t.is_empty()),
        source,
        manifest: None,
    })
}
