//! Calls to cloud endpoints (STS, ECR's API, a metadata server, Entra ID, an ACR
//! exchange): the two HTTP clients, the standard endpoint overrides from the
//! environment, bodies read under a cap, and every failure as `auth_failed`
//! naming the step — never a request or response body that could hold a secret.
//!
//! Link-local metadata services (IMDS, the GKE metadata server, the EKS Pod
//! Identity agent) are reached without a proxy; everything else honours
//! `HTTPS_PROXY`/`NO_PROXY` as registry requests do.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use reqwest::{RequestBuilder, StatusCode};
use url::Url;

use crate::reason::{ProbeError, Reason};
use crate::redact::{json_error_position, redact_text};

/// One request to a cloud endpoint, headers and body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Metadata services answer at once on the machine they serve; elsewhere they are not there.
const METADATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of a cloud's error text a message quotes.
const MAX_DETAIL_CHARS: usize = 300;

/// Which client a request goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// Public endpoints: system roots, proxies from the environment.
    Public,
    /// Link-local metadata services: never through a proxy.
    Metadata,
}

/// The client for `route`, built once per process.
pub(super) fn client(route: Route) -> Result<&'static reqwest::Client, ProbeError> {
    static PUBLIC: OnceLock<reqwest::Client> = OnceLock::new();
    static METADATA: OnceLock<reqwest::Client> = OnceLock::new();
    let slot = match route {
        Route::Public => &PUBLIC,
        Route::Metadata => &METADATA,
    };
    if let Some(client) = slot.get() {
        return Ok(client);
    }
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("pullprobe/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT);
    builder = match route {
        Route::Public => builder.connect_timeout(REQUEST_TIMEOUT),
        Route::Metadata => builder.no_proxy().connect_timeout(METADATA_CONNECT_TIMEOUT),
    };
    let built = builder.build().map_err(|e| {
        ProbeError::new(Reason::AuthFailed, format!("cannot build the HTTP client for cloud endpoints: {e}"))
    })?;
    Ok(slot.get_or_init(|| built))
}

/// A variable of the environment, when it is set and not empty.
pub(super) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// The first of `vars` that is set, as a base URL (`AWS_ENDPOINT_URL_ECR`, then `AWS_ENDPOINT_URL`).
pub(super) fn override_url(vars: &[&str]) -> Result<Option<Url>, ProbeError> {
    for var in vars {
        if let Some(value) = env(var) {
            let url = Url::parse(&value)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .ok_or_else(|| {
                    ProbeError::new(Reason::AuthFailed, format!("{var}: expected an http:// or https:// URL"))
                })?;
            return Ok(Some(url));
        }
    }
    Ok(None)
}

/// Secrets travel over https, or over plain http only to this machine (a local stand-in or proxy).
pub(super) fn require_secure(url: &Url, step: &str) -> Result<(), ProbeError> {
    if url.scheme() == "https" || is_loopback(url) {
        return Ok(());
    }
    Err(failed(step, format!("refusing to send credentials over plain HTTP to {}", crate::redact::redact_url(url))))
}

pub(super) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `path` on the registry at `host` (`host[:port]`): https, or plain http for a loopback
/// registry, as its pulls are made.
pub(super) fn registry_url(host: &str, path: &str) -> Option<Url> {
    let url = Url::parse(&format!("https://{host}{path}")).ok()?;
    if !is_loopback(&url) {
        return Some(url);
    }
    Url::parse(&format!("http://{host}{path}")).ok()
}

/// An `application/x-www-form-urlencoded` body.
pub(super) fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// `auth_failed` for `step` ("STS AssumeRoleWithWebIdentity for role arn:…").
pub(super) fn failed(step: &str, problem: impl std::fmt::Display) -> ProbeError {
    ProbeError::new(Reason::AuthFailed, format!("{step}: {problem}"))
}

/// A cloud's own words about a refusal (an error code, a message), shortened and redacted.
pub(super) fn detail(text: &str) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let shown = redact_text(flat.trim());
    match shown.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((cut, _)) => format!("{}…", &shown[..cut]),
        None => shown,
    }
}

/// Send `request` for `step` and read the whole answer, at most `max_bytes`.
/// A transport failure or an oversized body is `auth_failed`; the status is the caller's to judge.
pub(super) async fn send(
    request: RequestBuilder,
    step: &str,
    max_bytes: u64,
) -> Result<(StatusCode, BytesMut), ProbeError> {
    let mut response =
        request.send().await.map_err(|e| failed(step, format!("no answer: {}", transport_problem(&e))))?;
    let status = response.status();
    let too_large = || failed(step, format!("the answer is over the limit of {max_bytes} bytes"));
    if response.content_length().is_some_and(|len| len > max_bytes) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) =
        response.chunk().await.map_err(|e| failed(step, format!("the answer broke off: {}", transport_problem(&e))))?
    {
        if body.len() as u64 + chunk.len() as u64 > max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// What went wrong on the wire: reqwest's summary and the innermost cause ("connection refused"), redacted.
fn transport_problem(err: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let summary = if err.is_timeout() { "timed out".to_string() } else { err.to_string() };
    redact_text(&format!("{summary} ({cause})"))
}

/// Send `request` and parse a JSON answer of type `T` from a 2xx response. A refusal is
/// `auth_failed` naming the step and the status, with what `explain` finds in the body.
pub(super) async fn send_json<T: serde::de::DeserializeOwned>(
    request: RequestBuilder,
    step: &str,
    max_bytes: u64,
    explain: fn(&[u8]) -> Option<String>,
) -> Result<T, ProbeError> {
    let body = send_ok(request, step, max_bytes, explain).await?;
    parse_json(&body, step)
}

/// Send `request` and read the body of a 2xx response, at most `max_bytes`. A refusal is
/// `auth_failed` naming the step and the status, with what `explain` finds in the body.
pub(super) async fn send_ok(
    request: RequestBuilder,
    step: &str,
    max_bytes: u64,
    explain: fn(&[u8]) -> Option<String>,
) -> Result<BytesMut, ProbeError> {
    let (status, body) = send(request, step, max_bytes).await?;
    if !status.is_success() {
        return Err(refused(step, status, explain(&body)));
    }
    Ok(body)
}

/// A JSON answer of type `T` for `step`; one of another shape is `auth_failed`.
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], step: &str) -> Result<T, ProbeError> {
    // serde_json's own message quotes the value it did not expect, which may be the
    // token itself: only the kind of problem and where.
    serde_json::from_slice(body)
        .map_err(|e| failed(step, format!("the answer is not the expected JSON ({})", json_error_position(&e))))
}

/// `auth_failed`: `step` answered `status`, with the cloud's explanation if it gave one.
pub(super) fn refused(step: &str, status: StatusCode, explanation: Option<String>) -> ProbeError {
    let explanation = explanation.map(|e| format!(": {}", detail(&e))).unwrap_or_default();
    failed(step, format!("HTTP status {}{explanation}", status.as_u16()))
}

/// `error` and `error_description` of an OAuth2 error body (Entra ID, an ACR exchange).
pub(super) fn oauth_error(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = value.get("error").and_then(|v| v.as_str());
    let description = value.get("error_description").and_then(|v| v.as_str());
    match (code, description) {
        (Some(code), Some(description)) => Some(format!("{code}: {description}")),
        (Some(code), None) => Some(code.to_string()),
        (None, Some(description)) => Some(description.to_string()),
        (None, None) => None,
    }
}

/// The lifetime of something that expires at `expires` (Unix seconds), from now.
pub(super) fn lifetime_until(expires: f64) -> Duration {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Duration::try_from_secs_f64(expires - now.as_secs_f64()).unwrap_or_default()
}

/// The lifetime of something that expires at an RFC 3339 time (`2026-11-23T06:00:00Z`).
pub(super) fn lifetime_until_rfc3339(expires: &str) -> Option<Duration> {
    let at = time::OffsetDateTime::parse(expires.trim(), &time::format_description::well_known::Rfc3339).ok()?;
    Some(lifetime_until(at.unix_timestamp() as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_flat_short_and_redacted() {
        assert_eq!(detail("AccessDenied:\nNot authorized"), "AccessDenied: Not authorized");
        let long = "x".repeat(1000);
        assert_eq!(detail(&long).chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(!detail("see https://u:secret@example.org/?token=abc").contains("secret"));
        assert_eq!(
            oauth_error(br#"{"error":"invalid_client","error_description":"AADSTS7000215"}"#).as_deref(),
            Some("invalid_client: AADSTS7000215")
        );
        assert_eq!(oauth_error(b"<html>"), None);
    }

    #[test]
    fn registry_urls() {
        let url = |host: &str| registry_url(host, "/oauth2/exchange").map(|u| u.to_string());
        assert_eq!(url("myreg.azurecr.io").as_deref(), Some("https://myreg.azurecr.io/oauth2/exchange"));
        assert_eq!(url("127.0.0.1:5000").as_deref(), Some("http://127.0.0.1:5000/oauth2/exchange"));
        assert_eq!(url("[::1]:5000").as_deref(), Some("http://[::1]:5000/oauth2/exchange"));
        assert_eq!(url("bad host"), None);
    }

    #[test]
    fn lifetimes() {
        assert_eq!(lifetime_until(0.0), Duration::ZERO);
        assert_eq!(lifetime_until_rfc3339("1970-01-01T00:00:00Z"), Some(Duration::ZERO));
        assert!(lifetime_until_rfc3339("2999-01-01T00:00:00Z").is_some_and(|d| d > Duration::from_secs(1 << 30)));
        assert_eq!(lifetime_until_rfc3339("tomorrow"), None);
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(require_secure(&url("https://sts.eu-west-1.amazonaws.com"), "STS").is_ok());
        assert!(require_secure(&url("http://127.0.0.1:4566"), "STS").is_ok());
        assert!(require_secure(&url("http://[::1]:4566"), "STS").is_ok());
        let err = require_secure(&url("http://sts.example.org"), "STS").unwrap_err();
        assert_eq!(err.reason, Reason::AuthFailed);
        assert!(err.message.starts_with("STS: refusing"), "{}", err.message);
    }
}
