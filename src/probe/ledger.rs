//! Decompress once per digest per round: equal digest means equal bytes, so a
//! layer whose content was fully verified through one frontend needs only
//! sha256 and size through the others.
//!
//! The first pull to reach a layer digest claims it and checks it in full; the
//! others check digest and size only. A claim whose pull did not get the real
//! bytes (wrong digest, short body, connection failure) is released, so a later
//! pull in the round checks the content in full instead. A content verdict
//! (decompression, tar, diff_id) holds for every frontend that served the same
//! digest; [`BlobLedger::content_failure`] lets the round carry it to them.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::digest::Digest;
use crate::reason::{ProbeError, Reason};
use crate::verify::CheckMode;

#[derive(Debug, Clone)]
enum Claim {
    /// A pull is checking it in full right now (its frontend label).
    InProgress(String),
    /// Fully verified through this frontend.
    Verified,
    /// The content itself is bad (same verdict for every frontend): frontend and error.
    ContentFailed(String, ProbeError),
}

/// Per-round record of which layer digests have been (or are being) checked in full.
#[derive(Debug, Default)]
pub struct BlobLedger {
    claims: Mutex<HashMap<Digest, Claim>>,
}

impl BlobLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// How `frontend` should check `digest`: in full if nobody has, else digest only.
    pub fn claim(&self, digest: &Digest, frontend: &str) -> CheckMode {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        match claims.get(digest) {
            None => {
                claims.insert(*digest, Claim::InProgress(frontend.to_string()));
                CheckMode::Full
            }
            Some(_) => CheckMode::DigestOnly,
        }
    }

    /// Record the outcome of a full check claimed by `frontend`.
    pub fn settle(&self, digest: &Digest, frontend: &str, outcome: Option<&ProbeError>) {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        let owned = matches!(claims.get(digest), Some(Claim::InProgress(f)) if f == frontend);
        if !owned {
            return;
        }
        match outcome {
            None => {
                claims.insert(*digest, Claim::Verified);
            }
            Some(err) if is_content_verdict(err.reason) => {
                claims.insert(*digest, Claim::ContentFailed(frontend.to_string(), err.clone()));
            }
            Some(_) => {
                claims.remove(digest);
            }
        }
    }

    /// The content failure found for `digest` this round, with the frontend that found it.
    pub fn content_failure(&self, digest: &Digest) -> Option<(String, ProbeError)> {
        let claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        match claims.get(digest) {
            Some(Claim::ContentFailed(frontend, err)) => Some((frontend.clone(), err.clone())),
            _ => None,
        }
    }
}

/// Failures that are properties of the bytes behind a digest, not of how they were served.
pub fn is_content_verdict(reason: Reason) -> bool {
    matches!(reason, Reason::DecompressError | Reason::TarError | Reason::DiffIdMismatch | Reason::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_claim_is_full_then_digest_only() {
        let ledger = BlobLedger::new();
        let d = Digest::of(b"layer");
        assert_eq!(ledger.claim(&d, "a"), CheckMode::Full);
        assert_eq!(ledger.claim(&d, "b"), CheckMode::DigestOnly);
        ledger.settle(&d, "a", None);
        assert_eq!(ledger.claim(&d, "c"), CheckMode::DigestOnly);
    }

    #[test]
    fn a_claim_without_the_real_bytes_is_released() {
        let ledger = BlobLedger::new();
        let d = Digest::of(b"layer");
        assert_eq!(ledger.claim(&d, "cache"), CheckMode::Full);
        ledger.settle(&d, "cache", Some(&ProbeError::new(Reason::BlobDigestMismatch, "poisoned")));
        assert_eq!(ledger.claim(&d, "origin"), CheckMode::Full);
    }

    #[test]
    fn content_failures_are_remembered() {
        let ledger = BlobLedger::new();
        let d = Digest::of(b"layer");
        ledger.claim(&d, "a");
        ledger.settle(&d, "a", Some(&ProbeError::new(Reason::DiffIdMismatch, "wrong tar")));
        let (frontend, err) = ledger.content_failure(&d).unwrap();
        assert_eq!((frontend.as_str(), err.reason), ("a", Reason::DiffIdMismatch));
        assert_eq!(ledger.claim(&d, "b"), CheckMode::DigestOnly);
    }
}
