//! One referrer fetched and verified: its manifest (digest and size as listed),
//! its `subject` (the image; the legacy `.sig` tag has none, its payload names the
//! image instead), every blob's digest and size, and for a signature its payload
//! and key. Signature blobs are read whole within `max_manifest_bytes`; any other
//! blob (an SBOM can be large) is streamed through the digest-only verifier.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::Deserialize;

use super::Request;
use super::listing::Candidate;
use crate::digest::Digest;
use crate::probe::blob;
use crate::reason::{ProbeError, Reason};
use crate::registry::client::RegistryClient;
use crate::result::{ReferrerCheck, ReferrerSource};
use crate::signature::{Outcome, bundle, cosign};
use crate::verify::{self, LayerSpec};

/// Referrers fetched at once.
const CONCURRENCY: usize = 4;

/// What kind of thing a referrer turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A cosign signature: simple signing layers, or a sigstore bundle.
    Signature,
    /// Anything else (an SBOM, an attestation): present and intact is all that is asked.
    Other,
}

/// One referrer, judged.
#[derive(Debug, Clone)]
pub(super) struct Finding {
    pub check: ReferrerCheck,
    pub kind: Kind,
    /// Set when the referrer is wrong whatever else is there (broken bytes, another
    /// image's signature, a subject naming another image); a signature that merely
    /// verifies with none of the keys is not, when another one does.
    pub broken: Option<ProbeError>,
}

/// A referrer manifest: what verifying it needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerManifest {
    #[serde(default)]
    artifact_type: Option<String>,
    config: Blob,
    #[serde(default)]
    layers: Vec<Blob>,
    #[serde(default)]
    subject: Option<Subject>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Blob {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Subject {
    digest: String,
}

/// Examine every candidate, a few at once, in their order.
pub(super) async fn all(client: &RegistryClient, request: Request<'_>, candidates: Vec<Candidate>) -> Vec<Finding> {
    futures_util::stream::iter(candidates)
        .map(|candidate| one(client, request, candidate))
        .buffered(CONCURRENCY)
        .collect()
        .await
}

async fn one(client: &RegistryClient, request: Request<'_>, candidate: Candidate) -> Finding {
    let mut check = ReferrerCheck {
        digest: candidate.digest.to_string(),
        artifact_type: candidate.listed_type.clone(),
        source: candidate.source,
        ok: true,
        reason: None,
        verified_with: None,
        subject: request.image.to_string(),
        error: None,
    };
    let mut kind = Kind::Other;
    match judge(client, request, &candidate, &mut check, &mut kind).await {
        Ok(None) => {}
        Ok(Some(unverified)) => {
            check.ok = false;
            check.reason = Some(unverified.reason);
            check.error = Some(crate::redact::redact_text(&unverified.message));
            return Finding { check, kind, broken: None };
        }
        Err(err) => {
            check.ok = false;
            check.reason = Some(err.reason);
            check.error = Some(crate::redact::redact_text(&err.message));
            return Finding { check, kind, broken: Some(err) };
        }
    }
    Finding { check, kind, broken: None }
}

/// `Err`: broken; `Ok(Some(_))`: a well-formed signature no key verifies; `Ok(None)`: fine.
async fn judge(
    client: &RegistryClient,
    request: Request<'_>,
    candidate: &Candidate,
    check: &mut ReferrerCheck,
    kind: &mut Kind,
) -> Result<Option<ProbeError>, ProbeError> {
    let short = candidate.digest.short();
    let body = fetch_manifest(client, request, candidate).await?;
    let manifest: ReferrerManifest = serde_json::from_slice(&body).map_err(|e| {
        ProbeError::new(
            Reason::ManifestInvalid,
            format!("referrer {short} is not an image manifest: {}", crate::redact::json_error(&e)),
        )
    })?;
    let signing_layers = manifest.layers.iter().any(|l| l.media_type == cosign::SIMPLE_SIGNING);
    let artifact_type = manifest
        .artifact_type
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| signing_layers.then(|| cosign::SIMPLE_SIGNING.to_string()))
        .unwrap_or_else(|| manifest.config.media_type.clone());
    let is_bundle = artifact_type == bundle::BUNDLE_V03;
    if signing_layers || is_bundle {
        *kind = Kind::Signature;
    }
    check.artifact_type = Some(artifact_type);
    check_subject(&manifest, candidate, request.image)?;

    let config = blob_ref(&manifest.config, &short)?;
    stream_blob(client, request, &config, &format!("referrer {short} config")).await?;
    let mut outcomes = Vec::new();
    for (index, layer) in manifest.layers.iter().enumerate() {
        let blob = blob_ref(layer, &short)?;
        let what = format!("referrer {short} layer {} {}", index + 1, blob.0.short());
        if layer.media_type == cosign::SIMPLE_SIGNING {
            let payload = read_blob(client, request, &blob, &what).await?;
            let signature = layer.annotations.get(cosign::SIGNATURE_ANNOTATION).map(String::as_str);
            let outcome = cosign::check(&payload, signature, request.image, &request.policy.keys)
                .map_err(|invalid| ProbeError::new(Reason::SignatureInvalid, format!("{what}: {invalid}")))?;
            outcomes.push(outcome);
        } else if is_bundle && layer.media_type == bundle::BUNDLE_V03 {
            let bytes = read_blob(client, request, &blob, &what).await?;
            let outcome = bundle::check(&bytes, request.image, &request.policy.keys)
                .map_err(|invalid| ProbeError::new(Reason::SignatureInvalid, format!("{what}: {invalid}")))?;
            outcomes.push(outcome);
        } else {
            stream_blob(client, request, &blob, &what).await?;
        }
    }
    if *kind == Kind::Signature && outcomes.is_empty() {
        return Err(ProbeError::new(
            Reason::SignatureInvalid,
            format!("referrer {short}: a bundle without a bundle layer"),
        ));
    }
    check.verified_with = verified_with(&outcomes);
    Ok(settle(&outcomes, &short, request))
}

/// The verdict of a referrer's signatures: the key one verified with, else (keys
/// configured, none verifies) why it does not count.
fn settle(outcomes: &[Outcome], short: &str, request: Request<'_>) -> Option<ProbeError> {
    if outcomes.is_empty() || outcomes.contains(&Outcome::Unkeyed) {
        return None;
    }
    if outcomes.iter().any(|o| matches!(o, Outcome::VerifiedWith(_))) {
        return None;
    }
    let keys: Vec<&str> = request.policy.keys.iter().map(|k| k.name.as_str()).collect();
    Some(ProbeError::new(
        Reason::SignatureInvalid,
        format!("referrer {short}: the signature verifies with none of the configured keys ({})", keys.join(", ")),
    ))
}

/// The key a referrer's signatures verified with, if one did.
fn verified_with(outcomes: &[Outcome]) -> Option<String> {
    outcomes.iter().find_map(|o| match o {
        Outcome::VerifiedWith(key) => Some(key.clone()),
        _ => None,
    })
}

/// The referrer's manifest, checked against its digest and listed size.
async fn fetch_manifest(
    client: &RegistryClient,
    request: Request<'_>,
    candidate: &Candidate,
) -> Result<Bytes, ProbeError> {
    let digest = candidate.digest;
    let body = match &candidate.manifest {
        Some(body) => body.clone(),
        None => {
            let response = client
                .manifest(request.repository, &digest.to_string(), request.max_manifest_bytes)
                .await
                .map_err(|e| e.context(format!("referrer {}", digest.short())))?;
            response.body
        }
    };
    let computed = Digest::of(&body);
    let size_differs = candidate.size.is_some_and(|size| size != body.len() as u64);
    if computed != digest || size_differs {
        return Err(ProbeError::new(
            Reason::ManifestDigestMismatch,
            format!(
                "referrer {digest}: served {} bytes hashing to {computed}, listed as {} bytes",
                body.len(),
                candidate.size.map_or("?".to_string(), |s| s.to_string())
            ),
        ));
    }
    Ok(body)
}

/// A referrer found through the API or the tag schema must name the image as its
/// `subject`; the legacy tag's manifest has none (its payload names the image).
fn check_subject(manifest: &ReferrerManifest, candidate: &Candidate, image: &Digest) -> Result<(), ProbeError> {
    let short = candidate.digest.short();
    match (&manifest.subject, candidate.source) {
        (None, ReferrerSource::CosignTag) => Ok(()),
        (None, source) => Err(ProbeError::new(
            Reason::SignatureInvalid,
            format!("referrer {short} (from the {}) has no subject; it must name {image}", source.as_str()),
        )),
        (Some(subject), _) if subject.digest == image.to_string() => Ok(()),
        (Some(subject), _) => Err(ProbeError::new(
            Reason::SignatureInvalid,
            format!(
                "referrer {short}'s subject is {}, not this image {image}",
                crate::redact::quoted(&subject.digest, 80)
            ),
        )),
    }
}

fn blob_ref(blob: &Blob, short: &str) -> Result<(Digest, u64), ProbeError> {
    let digest: Digest = blob
        .digest
        .parse()
        .map_err(|e| ProbeError::new(Reason::ManifestInvalid, format!("referrer {short}: a blob's digest: {e}")))?;
    let size = u64::try_from(blob.size).map_err(|_| {
        ProbeError::new(Reason::ManifestInvalid, format!("referrer {short}: negative size {}", blob.size))
    })?;
    Ok((digest, size))
}

/// A signature blob read whole (within `max_manifest_bytes`), digest and size checked.
async fn read_blob(
    client: &RegistryClient,
    request: Request<'_>,
    (digest, size): &(Digest, u64),
    what: &str,
) -> Result<Bytes, ProbeError> {
    let limit = request.max_manifest_bytes;
    if *size > limit {
        return Err(ProbeError::new(Reason::TooLarge, format!("{what} is {size} bytes, over the limit of {limit}")));
    }
    let (body, source) = client.small_blob(request.repository, digest, limit).await.map_err(|e| e.context(what))?;
    let report = verify::verify_layer(&body[..], &LayerSpec::digest_only(*digest, *size), None);
    match report.error {
        Some(err) => Err(blob::with_cache(err.context(what), &source)),
        None => Ok(body),
    }
}

/// Any other blob streamed through the digest-only verifier: memory flat whatever its size.
async fn stream_blob(
    client: &RegistryClient,
    request: Request<'_>,
    (digest, size): &(Digest, u64),
    what: &str,
) -> Result<(), ProbeError> {
    let response = client.blob(request.repository, digest).await.map_err(|e| e.context(what))?;
    let spec = LayerSpec::digest_only(*digest, *size);
    let report =
        blob::verify_body(response.response, |_| {}, None, move |reader| verify::verify_layer(reader, &spec, None))
            .await?;
    match report.error {
        Some(err) => Err(blob::with_cache(err.context(what), &response.source)),
        None => Ok(()),
    }
}
