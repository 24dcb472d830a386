//! Failure reasons: the stable snake_case codes that appear in the JSON result,
//! as a metric label and in alerts.
//!
//! A reason is decided where the failure is born and travels with the error
//! ([`ProbeError`]); nothing downstream classifies errors by their text.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a probe failed. The names are part of the user-facing contract: add, never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ManifestUnknown,
    ManifestInvalid,
    ManifestDigestMismatch,
    PlatformMissing,
    BlobUnknown,
    BlobDigestMismatch,
    BlobSizeMismatch,
    BlobTruncated,
    DecompressError,
    TarError,
    DiffIdMismatch,
    UnsupportedMediaType,
    AuthFailed,
    RateLimited,
    TlsError,
    DnsError,
    ConnectError,
    HttpStatus,
    Timeout,
    TooLarge,
    FrontendInconsistent,
    UploadFailed,
    NotReplicated,
    ContentMissing,
    ContentMismatch,
    ImageStale,
    RedirectLoop,
    DiscoveryFailed,
    SignatureMissing,
    SignatureInvalid,
    ReferrersInconsistent,
}

impl Reason {
    /// Every reason, in the order of DESIGN.md.
    pub const ALL: [Reason; 31] = [
        Reason::ManifestUnknown,
        Reason::ManifestInvalid,
        Reason::ManifestDigestMismatch,
        Reason::PlatformMissing,
        Reason::BlobUnknown,
        Reason::BlobDigestMismatch,
        Reason::BlobSizeMismatch,
        Reason::BlobTruncated,
        Reason::DecompressError,
        Reason::TarError,
        Reason::DiffIdMismatch,
        Reason::UnsupportedMediaType,
        Reason::AuthFailed,
        Reason::RateLimited,
        Reason::TlsError,
        Reason::DnsError,
        Reason::ConnectError,
        Reason::HttpStatus,
        Reason::Timeout,
        Reason::TooLarge,
        Reason::FrontendInconsistent,
        Reason::UploadFailed,
        Reason::NotReplicated,
        Reason::ContentMissing,
        Reason::ContentMismatch,
        Reason::ImageStale,
        Reason::RedirectLoop,
        Reason::DiscoveryFailed,
        Reason::SignatureMissing,
        Reason::SignatureInvalid,
        Reason::ReferrersInconsistent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ManifestUnknown => "manifest_unknown",
            Reason::ManifestInvalid => "manifest_invalid",
            Reason::ManifestDigestMismatch => "manifest_digest_mismatch",
            Reason::PlatformMissing => "platform_missing",
            Reason::BlobUnknown => "blob_unknown",
            Reason::BlobDigestMismatch => "blob_digest_mismatch",
            Reason::BlobSizeMismatch => "blob_size_mismatch",
            Reason::BlobTruncated => "blob_truncated",
            Reason::DecompressError => "decompress_error",
            Reason::TarError => "tar_error",
            Reason::DiffIdMismatch => "diff_id_mismatch",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::AuthFailed => "auth_failed",
            Reason::RateLimited => "rate_limited",
            Reason::TlsError => "tls_error",
            Reason::DnsError => "dns_error",
            Reason::ConnectError => "connect_error",
            Reason::HttpStatus => "http_status",
            Reason::Timeout => "timeout",
            Reason::TooLarge => "too_large",
            Reason::FrontendInconsistent => "frontend_inconsistent",
            Reason::UploadFailed => "upload_failed",
            Reason::NotReplicated => "not_replicated",
            Reason::ContentMissing => "content_missing",
            Reason::ContentMismatch => "content_mismatch",
            Reason::ImageStale => "image_stale",
            Reason::RedirectLoop => "redirect_loop",
            Reason::DiscoveryFailed => "discovery_failed",
            Reason::SignatureMissing => "signature_missing",
            Reason::SignatureInvalid => "signature_invalid",
            Reason::ReferrersInconsistent => "referrers_inconsistent",
        }
    }

    /// The stored bytes are wrong: retrying cannot help and must not hide it.
    pub fn is_integrity(self) -> bool {
        matches!(
            self,
            Reason::ManifestDigestMismatch
                | Reason::BlobDigestMismatch
                | Reason::BlobSizeMismatch
                | Reason::BlobTruncated
                | Reason::DecompressError
                | Reason::TarError
                | Reason::DiffIdMismatch
                | Reason::ManifestInvalid
                | Reason::BlobUnknown
                | Reason::ManifestUnknown
                | Reason::FrontendInconsistent
                | Reason::ContentMissing
                | Reason::ContentMismatch
                | Reason::SignatureMissing
                | Reason::SignatureInvalid
                | Reason::ReferrersInconsistent
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The step of a pull in which a failure happened (the `phase` key of a result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Connect,
    Auth,
    Manifest,
    Config,
    Blob,
    Content,
    Consistency,
    Upload,
    Discovery,
    Referrers,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Auth => "auth",
            Phase::Manifest => "manifest",
            Phase::Config => "config",
            Phase::Blob => "blob",
            Phase::Content => "content",
            Phase::Consistency => "consistency",
            Phase::Upload => "upload",
            Phase::Discovery => "discovery",
            Phase::Referrers => "referrers",
        }
    }
}

/// A failure with its reason code, decided where it happened, and a message for the human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError {
    pub reason: Reason,
    pub message: String,
    /// The registry's own error code (`BLOB_UNKNOWN`, `BLOB_UPLOAD_UNKNOWN`, …), when it sent one.
    pub registry_error: Option<String>,
    /// `Retry-After` in seconds, for `rate_limited`.
    pub retry_after: Option<u64>,
    /// The HTTP status that caused the failure, when one did.
    pub status: Option<u16>,
}

impl ProbeError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ProbeError { reason, message: message.into(), registry_error: None, retry_after: None, status: None }
    }

    pub fn with_registry_error(mut self, code: Option<String>) -> Self {
        self.registry_error = code;
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Prefix the message with where it happened ("layer 2 sha256:…: ").
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Connection-level and server-side failures worth one retry within the run.
    pub fn is_transient(&self) -> bool {
        match self.reason {
            Reason::ConnectError | Reason::Timeout | Reason::DnsError => true,
            Reason::HttpStatus => self.status.is_some_and(|s| s >= 500),
            _ => false,
        }
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for ProbeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde() {
        for reason in Reason::ALL {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
            let back: Reason = serde_json::from_str(&json).unwrap();
            assert_eq!(back, reason);
        }
    }

    #[test]
    fn all_lists_every_variant_in_declaration_order() {
        use serde::de::IntoDeserializer;
        use serde::de::value::Error;
        // A unit variant also deserializes from its index in the declaration: walking
        // the indexes until one is refused finds every variant, including one added
        // to the enum and forgotten in `ALL`.
        let declared: Vec<Reason> =
            (0u32..).map_while(|i| Reason::deserialize(IntoDeserializer::<Error>::into_deserializer(i)).ok()).collect();
        assert_eq!(declared, Reason::ALL);
    }
}
