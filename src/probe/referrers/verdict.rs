//! Whether an image's referrers on one frontend satisfy `signatures.require`:
//!
//! - a referrer that is broken whatever else is there (a blob that is corrupt or
//!   missing keeps its blob reason; a signature for another image, a subject that
//!   names another image, a malformed signature: `signature_invalid`) fails the image;
//! - each required kind needs one valid referrer: for `cosign` a signature (with
//!   `keys`, one that verifies with one of them), for an artifactType a referrer of
//!   that type whose blobs are intact. A kind whose only referrers do not verify is
//!   `signature_invalid`; a kind with none at all is `signature_missing`, and the
//!   message says where it was looked for.
//!
//! A signature no key verifies beside one that does (another team's signer) is a
//! warning, not a failure: admission control admits with one.

use super::Request;
use super::examine::{Finding, Kind};
use crate::config::RequiredReferrer;
use crate::reason::{ProbeError, Reason};

/// The failure of the image on this frontend, if any.
pub(super) fn decide(
    request: Request<'_>,
    findings: &[Finding],
    looked: &[String],
    warnings: &mut Vec<String>,
) -> Option<ProbeError> {
    if let Some(broken) = findings.iter().find_map(|f| f.broken.clone()) {
        return Some(broken);
    }
    for kind in &request.policy.require {
        let of_kind: Vec<&Finding> = findings.iter().filter(|f| is_of_kind(f, kind)).collect();
        if of_kind.iter().any(|f| f.check.ok) {
            for f in of_kind.iter().filter(|f| !f.check.ok) {
                warnings.push(f.check.error.clone().unwrap_or_default());
            }
            continue;
        }
        if let Some(unverified) = of_kind.first() {
            let message = unverified.check.error.clone().unwrap_or_default();
            return Some(ProbeError::new(unverified.check.reason.unwrap_or(Reason::SignatureInvalid), message));
        }
        return Some(ProbeError::new(
            Reason::SignatureMissing,
            format!(
                "no {kind} for {} on this frontend; looked in {}",
                request.image,
                if looked.is_empty() { "nothing".to_string() } else { looked.join(", ") }
            ),
        ));
    }
    None
}

fn is_of_kind(finding: &Finding, kind: &RequiredReferrer) -> bool {
    match kind {
        RequiredReferrer::Cosign => finding.kind == Kind::Signature,
        RequiredReferrer::ArtifactType(t) => finding.check.artifact_type.as_deref() == Some(t.as_str()),
    }
}
