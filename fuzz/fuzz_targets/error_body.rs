//! A refused request: its status (first two input bytes), what was asked for
//! (third byte) and the registry's error body (the rest), as a registry, a proxy
//! or an object store sends it. The reason is one a refusal can have, the
//! registry's error code is a short `[A-Z0-9_]` word, and the message is bounded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pullprobe::reason::Reason;
use pullprobe::registry::errors::{RequestKind, classify_status, parse_error_body};
use pullprobe_fuzz::check_error;

const KINDS: [RequestKind; 4] = [RequestKind::Manifest, RequestKind::Blob, RequestKind::Upload, RequestKind::Other];

/// Every reason a refusal maps to.
const REFUSALS: [Reason; 7] = [
    Reason::ManifestUnknown,
    Reason::BlobUnknown,
    Reason::ManifestInvalid,
    Reason::RateLimited,
    Reason::AuthFailed,
    Reason::UploadFailed,
    Reason::HttpStatus,
];

fuzz_target!(|data: &[u8]| {
    let [a, b, kind, body @ ..] = data else { return };
    let status = 100 + u16::from_le_bytes([*a, *b]) % 500;
    let kind = KINDS[usize::from(*kind) % KINDS.len()];
    if let Some((code, message)) = parse_error_body(body) {
        assert!(!code.is_empty() && code.len() <= 64, "{code:?}");
        assert!(code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{code:?}");
        assert!(message.chars().count() <= 200, "{message:?}");
    }
    let refused = classify_status(status, body, kind, Some(7));
    check_error("refusal", &refused, &REFUSALS);
    assert_eq!(refused.status, Some(status));
    assert_eq!(refused.retry_after, Some(7));
    assert_eq!(refused.registry_error, parse_error_body(body).map(|(code, _)| code));
    if refused.registry_error.is_none() {
        // Without a registry code, the status alone decides.
        match status {
            429 => assert_eq!(refused.reason, Reason::RateLimited),
            401 | 403 => assert_eq!(refused.reason, Reason::AuthFailed),
            _ => {}
        }
    }
});
