//! Why a request to a registry failed, as a [`Reason`], decided where the
//! failure is seen and never from an error's text: an answer the registry gave
//! (its HTTP status, its error body `{"errors":[{"code":"BLOB_UNKNOWN",…}]}`,
//! the `Retry-After` a refusal may carry), or a request that got no answer (a
//! transport error: DNS, connect, TLS, timeout, a truncated body), read from
//! the types in the error's chain.
//!
//! It sends nothing and knows nothing of authentication; the transport and
//! the registry client call it with what they saw.

use std::error::Error as StdError;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::reason::{ProbeError, Reason};
use crate::registry::tls;

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

/// Longest `Retry-After` kept, in seconds (about 136 years): anything longer means
/// "not within any deadline" just as well, and adding it to an instant cannot overflow.
pub const MAX_RETRY_AFTER_SECONDS: u64 = u32::MAX as u64;

/// RFC 9110 IMF-fixdate: `Wed, 21 Oct 2026 07:28:00 GMT`.
const IMF_FIXDATE: &[BorrowedFormatItem<'static>] =
    format_description!("[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT");

/// The pause a `Retry-After` header asks for, in seconds from now: delta-seconds
/// (`120`) or an HTTP date (IMF-fixdate; a date already past is 0, retry now).
/// A value that is neither is ignored. Whether the pause fits in a probe's
/// deadline is the caller's decision.
pub fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    retry_after_at(value, OffsetDateTime::now_utc())
}

fn retry_after_at(value: &str, now: OffsetDateTime) -> Option<u64> {
    let value = value.trim();
    let seconds = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still "a very long time".
        value.parse::<u64>().unwrap_or(u64::MAX)
    } else {
        let until = PrimitiveDateTime::parse(value, IMF_FIXDATE).ok()?.assume_utc() - now;
        // Whole seconds, rounded up: never retry before the date.
        let rounded = until.whole_seconds() + i64::from(until.subsec_nanoseconds() > 0);
        u64::try_from(rounded).unwrap_or(0)
    };
    Some(seconds.min(MAX_RETRY_AFTER_SECONDS))
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

/// A failed DNS lookup, as the transport's resolver returns it: a typed error, so
/// that [`classify_transport`] finds it in the chain and says `dns_error`, not a
/// generic connect failure.
#[derive(Debug)]
pub struct DnsFailure {
    pub host: String,
    pub cause: std::io::Error,
}

impl std::fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot resolve {}: {}", self.host, self.cause)
    }
}

impl StdError for DnsFailure {}

/// The error and its causes on one line, e.g. "error sending request: connection refused".
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

fn chain_has<T: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
    find_in_chain::<T>(err).is_some()
}

/// The next cause: an `io::Error` wrapping another error leads to that error
/// itself (its `source()` would skip it: hyper-rustls wraps a rustls error in
/// two `io::Error`s).
fn next_cause<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(io) = err.downcast_ref::<std::io::Error>()
        && let Some(inner) = io.get_ref()
    {
        return Some(inner as &(dyn StdError + 'static));
    }
    err.source()
}

fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    let mut depth = 0;
    while let Some(e) = current
        && depth < 32
    {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = next_cause(e);
        depth += 1;
    }
    None
}

fn io_kind_in_chain(err: &(dyn StdError + 'static), kind: std::io::ErrorKind) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    let mut depth = 0;
    while let Some(e) = current
        && depth < 32
    {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == kind) {
            return true;
        }
        current = next_cause(e);
        depth += 1;
    }
    false
}

/// The reason for a failed request or body read: decided from the error's
/// types, never from its text. `what` says what was being fetched.
pub fn classify_transport(err: &reqwest::Error, what: &str) -> ProbeError {
    let chain = error_chain(err);
    let tls_failure = find_in_chain::<rustls::Error>(err);
    let reason = if err.is_timeout() || io_kind_in_chain(err, std::io::ErrorKind::TimedOut) {
        Reason::Timeout
    } else if err.is_redirect() {
        Reason::RedirectLoop
    } else if chain_has::<DnsFailure>(err) {
        Reason::DnsError
    } else if tls_failure.is_some() {
        Reason::TlsError
    } else if find_in_chain::<hyper::Error>(err).is_some_and(|h| h.is_parse_too_large()) {
        // hyper's cap on a response head (size and header count).
        Reason::TooLarge
    } else if err.is_connect() {
        Reason::ConnectError
    } else if err.is_body() || err.is_decode() {
        if io_kind_in_chain(err, std::io::ErrorKind::UnexpectedEof)
            || find_in_chain::<hyper::Error>(err).is_some_and(|h| h.is_incomplete_message())
        {
            Reason::BlobTruncated
        } else {
            Reason::ConnectError
        }
    } else {
        Reason::ConnectError
    };
    let verdict = match tls_failure {
        Some(tls) => format!("TLS: {}: ", tls::describe(tls)),
        None if reason == Reason::TooLarge => "response headers over the size or count limit: ".to_string(),
        None => String::new(),
    };
    ProbeError::new(reason, format!("{what}: {verdict}{}", crate::redact::redact_text(&chain)))
}

/// True for a body that ended before its Content-Length: the bytes are short, not the connection broken.
pub fn is_incomplete_body(err: &reqwest::Error) -> bool {
    io_kind_in_chain(err, std::io::ErrorKind::UnexpectedEof)
        || find_in_chain::<hyper::Error>(err).is_some_and(|h| h.is_incomplete_message())
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

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = time::macros::datetime!(2026-10-21 07:27:30.250 UTC);
        assert_eq!(retry_after_at("120", now), Some(120));
        assert_eq!(retry_after_at(" 0 ", now), Some(0));
        // 29.75 s away: rounded up, never early.
        assert_eq!(retry_after_at("Wed, 21 Oct 2026 07:28:00 GMT", now), Some(30));
        assert_eq!(retry_after_at("Thu, 22 Oct 2026 07:27:31 GMT", now), Some(86_401));
        // A date already past: retry now.
        assert_eq!(retry_after_at("Wed, 21 Oct 2026 07:27:00 GMT", now), Some(0));
        assert_eq!(retry_after_at("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(0));
        // Absurdly long pauses are kept, capped so no deadline arithmetic can overflow.
        assert_eq!(retry_after_at("99999999999999999999999", now), Some(MAX_RETRY_AFTER_SECONDS));
        assert_eq!(retry_after_at("Fri, 31 Dec 9999 23:59:59 GMT", now), Some(MAX_RETRY_AFTER_SECONDS));
    }

    #[test]
    fn retry_after_garbage_is_ignored() {
        let now = time::macros::datetime!(2026-10-21 07:27:30 UTC);
        for garbage in [
            "",
            "soon",
            "-5",
            "+5",
            "1.5",
            "12 s",
            "Wed, 21 Oct 2026 07:28:00",         // no zone
            "Wed, 21 Oct 2026 07:28:00 CET",     // not GMT
            "Wednesday, 21-Oct-26 07:28:00 GMT", // obsolete RFC 850 form
            "Wed, 32 Oct 2026 07:28:00 GMT",
            "Wed, 21 Foo 2026 07:28:00 GMT",
        ] {
            assert_eq!(retry_after_at(garbage, now), None, "{garbage:?}");
        }
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "not a number".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(7));
        headers.insert(RETRY_AFTER, "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(0), "a date in the past: retry now");
    }
}
