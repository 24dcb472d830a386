//! The Bearer token flow of the Docker token spec: one token asked for at a
//! realm for a service and scopes, read under a size cap and a deadline, and
//! kept with its expiry (`expires_in`, default [`DEFAULT_TOKEN_LIFETIME`]).
//!
//! Which token to reuse and when to fetch anew is [`crate::registry::auth`]'s
//! decision. A token prints as `[redacted]` and its header value is marked
//! sensitive; a failure names the realm, service, scope, user and HTTP status.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Client, Response};
use serde::Deserialize;
use url::Url;

use crate::reason::{ProbeError, Reason};
use crate::redact::redact_url;
use crate::registry::challenge::Method;
use crate::registry::credentials::{Credentials, Secret};
use crate::registry::errors::{classify_transport, retry_after};
use crate::registry::scope::Scope;

/// Token lifetime when the token endpoint names none (the Docker token spec's default).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// What one cached token was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TokenKey {
    pub(crate) realm: String,
    pub(crate) service: String,
    /// Sorted, space-separated.
    pub(crate) scope: String,
    /// The user name the token was asked for with ("" when anonymous); never the secret.
    pub(crate) account: String,
}

/// A token as its `Authorization` value, and when to stop using it.
#[derive(Clone)]
pub(crate) struct CachedToken {
    header: HeaderValue,
    expires: Instant,
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CachedToken {{ [redacted], expires in {:?} }}",
            self.expires.saturating_duration_since(Instant::now())
        )
    }
}

impl CachedToken {
    pub(crate) fn fresh(&self) -> bool {
        Instant::now() < self.expires
    }

    /// `Authorization: Bearer …`, marked sensitive.
    pub(crate) fn header(&self) -> &HeaderValue {
        &self.header
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Ask the token endpoint of a Bearer `method` for a token for `scope` (merged
/// with the challenge's): `GET realm?service=…&scope=…` with Basic credentials
/// or anonymously, `POST` with an identity token. Credentials never go to a
/// token endpoint over plain HTTP, except on loopback; the body is read up to
/// `max_body_bytes`.
pub(crate) async fn fetch(
    http: &Client,
    method: &Method,
    scope: &Scope,
    credentials: Option<&Credentials>,
    deadline: Duration,
    max_body_bytes: u64,
) -> Result<CachedToken, ProbeError> {
    let Method::Bearer { realm, service, .. } = method else {
        return Err(ProbeError::new(Reason::AuthFailed, "no token realm"));
    };
    let scopes = method.scopes(scope);
    let shown = method.describe(scope);
    let what = format!("token endpoint {}", redact_url(realm));
    if credentials.is_some() && realm.scheme() == "http" && !is_loopback(realm) {
        return Err(ProbeError::new(
            Reason::AuthFailed,
            format!("{shown}: refusing to send credentials to a token endpoint over plain HTTP"),
        ));
    }
    let request = match credentials.map(|c| (c, c.secret())) {
        Some((_, Secret::IdentityToken(token))) => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", token)
                .append_pair("service", service)
                .append_pair("client_id", "pullprobe")
                .append_pair("access_type", "offline");
            for s in &scopes {
                form.append_pair("scope", s);
            }
            http.post(realm.clone()).header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(form.finish())
        }
        other => {
            let mut url = realm.clone();
            {
                let mut query = url.query_pairs_mut();
                if !service.is_empty() {
                    query.append_pair("service", service);
                }
                for s in &scopes {
                    query.append_pair("scope", s);
                }
                if let Some((creds, _)) = other.filter(|(c, _)| !c.username().is_empty()) {
                    query.append_pair("account", creds.username());
                }
            }
            let mut request = http.get(url);
            if let Some(header) = other.and_then(|(c, _)| c.basic_header()) {
                request = request.header(AUTHORIZATION, header);
            }
            request
        }
    };
    tracing::debug!(realm = %redact_url(realm), service, scope = scopes.join(" "), user = credentials.map(Credentials::username).unwrap_or(""), "requesting a registry token");
    let response = match tokio::time::timeout(deadline, request.send()).await {
        Ok(sent) => sent.map_err(|e| classify_transport(&e, &what))?,
        Err(_) => {
            return Err(ProbeError::new(
                Reason::Timeout,
                format!("{what}: no response headers within {deadline:?} ({shown})"),
            ));
        }
    };
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = read_body(response, max_body_bytes, &what).await?;
    if !status.is_success() {
        let who = credentials.map(Credentials::describe).unwrap_or_else(|| "no credentials (anonymous)".into());
        let reason = match status.as_u16() {
            401 | 403 => Reason::AuthFailed,
            429 => Reason::RateLimited,
            _ => Reason::HttpStatus,
        };
        let mut err = ProbeError::new(reason, format!("{shown} answered HTTP status {} to {who}", status.as_u16()))
            .with_status(status.as_u16());
        err.retry_after = retry_after;
        return Err(err);
    }
    let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
        ProbeError::new(Reason::AuthFailed, format!("{shown} answered HTTP 200 with a body that is not a token"))
    })?;
    let token = parsed.token.filter(|t| !t.is_empty()).or(parsed.access_token.filter(|t| !t.is_empty()));
    let Some(token) = token else {
        return Err(ProbeError::new(
            Reason::AuthFailed,
            format!("{shown} answered HTTP 200 without `token` or `access_token`"),
        ));
    };
    let mut header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        ProbeError::new(Reason::AuthFailed, format!("{shown} sent a token that is not a valid header value"))
    })?;
    header.set_sensitive(true);
    let lifetime = parsed.expires_in.map(Duration::from_secs).unwrap_or(DEFAULT_TOKEN_LIFETIME);
    // Renew a little early, so a token does not expire between the check and the request.
    let margin = (lifetime / 10).min(Duration::from_secs(10));
    tracing::debug!(realm = %redact_url(realm), service, lifetime_seconds = lifetime.as_secs(), "registry token received");
    Ok(CachedToken { header, expires: Instant::now() + lifetime - margin })
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A token body, at most `max_bytes`.
async fn read_body(mut response: Response, max_bytes: u64, what: &str) -> Result<BytesMut, ProbeError> {
    let too_large =
        || ProbeError::new(Reason::TooLarge, format!("{what}: body is over the limit of {max_bytes} bytes"));
    if response.content_length().is_some_and(|len| len > max_bytes) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify_transport(&e, what))? {
        if body.len() as u64 + chunk.len() as u64 > max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_do_not_print() {
        let creds = Credentials::new("alice", Secret::Password("hunter2".into()));
        let header = creds.basic_header().unwrap();
        let token = CachedToken { header, expires: Instant::now() };
        assert!(!format!("{token:?}").contains("Basic"));
    }
}
