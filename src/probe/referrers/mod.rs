//! Referrers: the signatures, SBOMs and attestations that point at an image, as
//! one frontend serves them — what admission control (sigstore policy-controller,
//! Kyverno `verifyImages`) will look for when a Pod pulls the image from there.
//!
//! For one image digest on one frontend: [`listing`] finds the referrers of the
//! kinds `signatures.require` names, in the three places clients look (the OCI 1.1
//! referrers API, else the referrers tag schema; and cosign's legacy `.sig` tag);
//! [`examine`] fetches each one and verifies it (manifest digest, subject, every
//! blob's digest and size, and a signature's payload and key); [`verdict`] decides
//! whether each required kind is there and valid. Across frontends, the sets of
//! referrer digests are compared in [`crate::probe::consistency`].
//!
//! Bounded whatever the registry sends: listings are read like manifests
//! (`limits.max_manifest_bytes` per page, [`MAX_PAGES`] pages, [`MAX_LISTED`]
//! referrers), at most [`MAX_EXAMINED`] referrers are fetched per image per
//! frontend, signature blobs are read whole within `max_manifest_bytes`, and
//! other blobs are streamed through the digest-only verifier.

mod examine;
mod listing;
mod verdict;

use crate::config::SignaturePolicy;
use crate::digest::Digest;
use crate::reason::ProbeError;
use crate::registry::client::RegistryClient;
use crate::result::ReferrerCheck;

/// Pages of the referrers API followed per query, at most.
pub const MAX_PAGES: usize = 16;
/// Referrers kept from the listings of one image on one frontend, at most.
pub const MAX_LISTED: usize = 10_000;
/// Referrers fetched and verified per image per frontend, at most; the rest are
/// named in a warning.
pub const MAX_EXAMINED: usize = 1_000;

/// What to look for, for one image digest.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub repository: &'a str,
    /// The manifest the referrers must point at.
    pub image: &'a Digest,
    pub policy: &'a SignaturePolicy,
    pub max_manifest_bytes: u64,
}

/// What the referrers of one image on one frontend came to.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Every referrer examined, in digest order.
    pub checks: Vec<ReferrerCheck>,
    /// Why the image fails (`signature_missing`, `signature_invalid`, a blob's reason), if it does.
    pub failure: Option<ProbeError>,
    /// Not failures: referrers left unexamined by the caps, signatures no key verifies beside one that does.
    pub warnings: Vec<String>,
}

/// Find, fetch and verify the referrers of `request.image` through `client`. An
/// error is a listing that failed (the registry's reason: `http_status`,
/// `auth_failed`, `timeout`…); a verdict on what was found is in the outcome.
pub async fn check(client: &RegistryClient, request: Request<'_>) -> Result<Outcome, ProbeError> {
    let listed = listing::list(client, request).await?;
    let mut warnings = listed.warnings.clone();
    let candidates = listed.for_examination(&mut warnings);
    let findings = examine::all(client, request, candidates).await;
    let failure = verdict::decide(request, &findings, &listed.looked, &mut warnings);
    let checks = findings.into_iter().map(|f| f.check).collect();
    Ok(Outcome { checks, failure, warnings })
}
