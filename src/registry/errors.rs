//! The registry's error body (`{"errors":[{"code":"BLOB_UNKNOWN","message":…}]}`)
//! and the mapping from an HTTP status plus that body to a [`Reason`].

use serde::Deserialize;

use crate::reason::{ProbeError, Reason};

/// What we were asking for when the registry said no; a 404 means a different thing for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Manifest,
    Blob,
    Upload,
    Other,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Debug, Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The first error code and message from a registry error body, if the body is one.
/// Anything else (HTML from a proxy, invalid UTF-8, garbage) yields `None`.
pub fn parse_error_body(body: &[u8]) -> Option<(String, String)> {
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    let first = parsed.errors.into_iter().next()?;
    let code: String = first.code.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
    if code.is_empty() {
        return None;
    }
    Some((code, first.message.chars().take(200).collect()))
}

/// Decide the reason for a non-success answer.
pub fn classify_status(status: u16, body: &[u8], kind: RequestKind, retry_after: Option<u64>) -> ProbeError {
    let parsed = parse_error_body(body);
    let code = parsed.as_ref().map(|(c, _)| c.as_str());
    let reason = match (status, code, kind) {
        (_, Some("MANIFEST_UNKNOWN"), _) | (_, Some("NAME_UNKNOWN"), RequestKind::Manifest) => Reason::ManifestUnknown,
        (_, Some("BLOB_UNKNOWN"), _) => Reason::BlobUnknown,
        (_, Some("MANIFEST_INVALID") | Some("MANIFEST_BLOB_UNKNOWN"), RequestKind::Manifest) => Reason::ManifestInvalid,
        (_, Some("TOOMANYREQUESTS"), _) | (429, _, _) => Reason::RateLimited,
        (401 | 403, _, _) | (_, Some("UNAUTHORIZED") | Some("DENIED"), _) => Reason::AuthFailed,
        (404, _, RequestKind::Manifest) => Reason::ManifestUnknown,
        (404, _, RequestKind::Blob) => Reason::BlobUnknown,
        (_, _, RequestKind::Upload) => Reason::UploadFailed,
        _ => Reason::HttpStatus,
    };
    let detail = match &parsed {
        Some((code, message)) if !message.is_empty() => format!(" ({code}: {message})"),
        Some((code, _)) => format!(" ({code})"),
        None => String::new(),
    };
    let mut err = ProbeError::new(reason, format!("HTTP status {status}{detail}"))
        .with_registry_error(parsed.map(|(c, _)| c))
        .with_status(status);
    err.retry_after = retry_after;
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_codes_decide_the_reason() {
        let body = br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:ab"}]}"#;
        let e = classify_status(404, body, RequestKind::Blob, None);
        assert_eq!(e.reason, Reason::BlobUnknown);
        assert_eq!(e.registry_error.as_deref(), Some("BLOB_UNKNOWN"));
        let e = classify_status(404, br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#, RequestKind::Manifest, None);
        assert_eq!(e.reason, Reason::ManifestUnknown);
    }

    #[test]
    fn non_json_bodies_fall_back_to_the_status() {
        let e = classify_status(502, b"<html>bad gateway</html>", RequestKind::Blob, None);
        assert_eq!(e.reason, Reason::HttpStatus);
        assert!(e.is_transient());
        assert_eq!(e.registry_error, None);
        let e = classify_status(404, &[0xff, 0xfe, 0x00], RequestKind::Manifest, None);
        assert_eq!(e.reason, Reason::ManifestUnknown);
        let e = classify_status(429, b"", RequestKind::Manifest, Some(3));
        assert_eq!((e.reason, e.retry_after), (Reason::RateLimited, Some(3)));
    }
}
