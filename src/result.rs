//! The result of one probe of one image through one frontend for one platform:
//! a plain value that every output (table, JSON, metrics, alerts) is a function of.
//!
//! Its JSON form is a user-facing contract (DESIGN.md, "Result"): keys are
//! added, never renamed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::reason::{Phase, Reason};

/// The JSON document printed by `now -o json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub results: Vec<ProbeResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeResult {
    pub probe: String,
    /// `pull` for image probes, `canary` for write-path probes.
    pub kind: Kind,
    /// The full reference probed, e.g. `registry.example.org/team/app:1.2`.
    pub image: String,
    pub registry: String,
    pub frontend: String,
    pub location: String,
    /// The platform of the image checked (`linux/amd64`); `unknown` when it could not be learnt.
    pub platform: String,
    pub ok: bool,
    pub reason: Option<Reason>,
    pub phase: Option<Phase>,
    pub error: Option<String>,
    pub registry_error: Option<String>,
    pub retries: u32,
    pub manifest_digest: Option<String>,
    /// When the run began (RFC 3339, UTC, milliseconds in JSON).
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub duration_seconds: f64,
    /// Seconds per phase: dns, connect, tls, auth, manifest, config, first_byte, transfer.
    pub phases: BTreeMap<String, f64>,
    pub tls_not_after: Option<String>,
    pub layers: Vec<LayerCheck>,
    /// The registry's `RateLimit-Remaining` (Docker Hub: pulls left in its window), when it sent one.
    #[serde(default)]
    pub ratelimit_remaining: Option<u64>,
    /// For an image found by `kubernetes:` discovery: a few `namespace/kind/name`
    /// of the workloads that use it (who is hurt when it fails).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
    /// For a frontend read from a node's mirror configuration: its 1-based place in the
    /// node's order (the upstream last); for `node-order`, the place of the host that served the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_position: Option<u32>,
    /// Things worth knowing that are not failures (e.g. no `Docker-Content-Digest` header).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// With `signatures:`: the referrers examined on this frontend; `None` when they
    /// were not listed (no `signatures:`, or the pull or the listing failed first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrers: Option<Vec<ReferrerCheck>>,
}

/// One referrer of the image (a signature, an SBOM, an attestation) as one frontend served it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferrerCheck {
    /// The referrer's manifest digest.
    pub digest: String,
    /// The manifest's `artifactType` (else its config media type; for a simple signing
    /// signature, the layer type `application/vnd.dev.cosign.simplesigning.v1+json`).
    pub artifact_type: Option<String>,
    /// Where it was found.
    pub source: ReferrerSource,
    pub ok: bool,
    pub reason: Option<Reason>,
    /// The configured key (as written in probes.yaml) a signature verified with; null otherwise.
    pub verified_with: Option<String>,
    /// The image digest it refers to: the manifest probed, or with `platforms: true` a platform's.
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a referrer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferrerSource {
    /// `GET /v2/<name>/referrers/<digest>` (OCI 1.1).
    ReferrersApi,
    /// The referrers tag schema: the index at tag `sha256-<hex>`.
    TagSchema,
    /// cosign's legacy tag `sha256-<hex>.sig`.
    CosignTag,
}

impl ReferrerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ReferrerSource::ReferrersApi => "referrers_api",
            ReferrerSource::TagSchema => "tag_schema",
            ReferrerSource::CosignTag => "cosign_tag",
        }
    }
}

/// What happened to one blob of the image (layers; for artifacts, every blob).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerCheck {
    pub digest: String,
    pub media_type: String,
    /// Size from the descriptor.
    pub size: u64,
    pub ok: bool,
    pub reason: Option<Reason>,
    /// How the blob was checked; null if it was not reached.
    pub check: Option<Check>,
    /// Compressed bytes actually received.
    pub bytes: u64,
    pub uncompressed_bytes: Option<u64>,
    pub duration_seconds: f64,
    pub cache_status: Option<String>,
    pub served_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ProbeResult {
    /// Compressed bytes received across every layer.
    pub fn bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.bytes).sum()
    }

    /// `started_at` as the JSON writes it (RFC 3339, UTC).
    pub fn started_at_rfc3339(&self) -> String {
        self.started_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
    }
}

/// What kind of probe produced a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Pull and verify an image.
    Pull,
    /// Push a canary image, then read it back.
    Canary,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pull => "pull",
            Kind::Canary => "canary",
        }
    }
}

/// How one blob was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Digest, size, decompression, diff_id and the tar walk.
    Full,
    /// sha256 and size only (verified in full elsewhere this round, or not an image layer).
    DigestOnly,
    /// Not read this run: rotated out by the round's byte budget.
    Skipped,
}

/// Now, UTC, truncated to milliseconds: the precision of `started_at`.
/// Run times derived from it (last success) must order runs a second apart.
pub fn now_utc_millis() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_millisecond(now.millisecond()).unwrap_or(now)
}
