//! Amazon ECR: a registry's Basic credentials (`AWS` and a 12-hour password) from
//! ECR's `GetAuthorizationToken` (JSON 1.1 protocol), signed with SigV4 by AWS's
//! own signer (`aws-sigv4`) with the workload's AWS credentials
//! ([`super::aws_credentials`]).
//!
//! The region comes from the registry's host (`<account>.dkr.ecr.<region>.amazonaws.com`),
//! else from `AWS_REGION` / `AWS_DEFAULT_REGION`; the endpoint is
//! `https://api.ecr.<region>.amazonaws.com`, or `AWS_ENDPOINT_URL_ECR`, or `AWS_ENDPOINT_URL`.

use std::sync::LazyLock;
use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use url::Url;

use super::aws_credentials::{self, AwsKeys, is_region};
use super::cache::{Cache, Issued};
use super::endpoint::{self, Route, env, failed};
use crate::reason::ProbeError;
use crate::registry::credentials::{Credentials, Secret};

const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The signing name of ECR's API.
const SERVICE: &str = "ecr";

static TOKENS: LazyLock<Cache<Credentials>> = LazyLock::new(Cache::default);

/// The ECR credentials for the registry at `host`.
pub(super) async fn credentials(host: &str, max_body: u64) -> Result<Credentials, ProbeError> {
    let (region, url) = region_and_endpoint(host)?;
    let aws = aws_credentials::credentials(&region, max_body).await?;
    let key = format!("{url}|{}", aws.who);
    TOKENS.get(&key, || authorization_token(&url, &region, &aws.keys, &aws.who, max_body)).await
}

/// After the registry refused `refused`: a new authorization token (one per refusal, however many saw it).
pub(super) async fn renew(host: &str, refused: &Credentials, max_body: u64) -> Result<Credentials, ProbeError> {
    let (region, url) = region_and_endpoint(host)?;
    let aws = aws_credentials::credentials(&region, max_body).await?;
    let key = format!("{url}|{}", aws.who);
    TOKENS.renew(&key, |c| c == refused, || authorization_token(&url, &region, &aws.keys, &aws.who, max_body)).await
}

/// The region and API endpoint for the registry at `host`.
fn region_and_endpoint(host: &str) -> Result<(String, Url), ProbeError> {
    let step = || format!("ECR GetAuthorizationToken for {host}");
    let (region, fips, china) = match host_region(host) {
        Some(found) => found,
        None => {
            let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).ok_or_else(|| {
                failed(&step(), "the host names no region (<account>.dkr.ecr.<region>.amazonaws.com): set AWS_REGION")
            })?;
            (region, false, false)
        }
    };
    if !is_region(&region) {
        return Err(failed(&step(), format!("{region:?} is not an AWS region")));
    }
    let url = match endpoint::override_url(&["AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL"])? {
        Some(url) => url,
        None => default_endpoint(&region, fips, china).map_err(|e| failed(&step(), e))?,
    };
    Ok((region, url))
}

/// (region, FIPS, China) of an ECR host: `123456789012.dkr.ecr.eu-west-1.amazonaws.com`,
/// `….dkr.ecr-fips.us-gov-west-1.amazonaws.com`, `….dkr.ecr.cn-north-1.amazonaws.com.cn`.
fn host_region(host: &str) -> Option<(String, bool, bool)> {
    let name = host.split(':').next().unwrap_or_default().to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let ecr = labels.len() >= 6 && labels[1] == "dkr" && matches!(labels[2], "ecr" | "ecr-fips");
    ecr.then(|| (labels[3].to_string(), labels[2] == "ecr-fips", name.ends_with(".cn")))
}

/// `https://api.ecr.<region>.amazonaws.com/` (`ecr-fips.…`, `….amazonaws.com.cn`).
fn default_endpoint(region: &str, fips: bool, china: bool) -> Result<Url, String> {
    let prefix = if fips { "ecr-fips" } else { "api.ecr" };
    let suffix = if china { "amazonaws.com.cn" } else { "amazonaws.com" };
    Url::parse(&format!("https://{prefix}.{region}.{suffix}/"))
        .map_err(|_| format!("region {region:?} makes no endpoint"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenAnswer {
    #[serde(default)]
    authorization_data: Vec<AuthorizationData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthorizationData {
    authorization_token: String,
    /// Unix seconds.
    #[serde(default)]
    expires_at: Option<f64>,
}

/// `GetAuthorizationToken`, signed: `AWS:<password>`, base64, valid for 12 hours.
async fn authorization_token(
    url: &Url,
    region: &str,
    keys: &AwsKeys,
    who: &str,
    max_body: u64,
) -> Result<Issued<Credentials>, ProbeError> {
    let step = format!("ECR GetAuthorizationToken in {region} for {who}");
    endpoint::require_secure(url, &step)?;
    let body = b"{}";
    let headers = [("content-type", CONTENT_TYPE), ("x-amz-target", TARGET)];
    let signed = sign_request("POST", url, &headers, body, keys, region, SERVICE, SystemTime::now())
        .map_err(|e| failed(&step, e))?;
    let mut request = endpoint::client(Route::Public)?.post(url.clone()).body(body.to_vec());
    for (name, value) in headers.into_iter().map(|(n, v)| (n.to_string(), HeaderValue::from_static(v))).chain(signed) {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| failed(&step, "a signed header name"))?;
        request = request.header(name, value);
    }
    tracing::debug!(region, who, endpoint = %url, "asking ECR for an authorization token");
    let body = endpoint::send_ok(request, &step, max_body, ecr_error).await?;
    let (credentials, expires_at) = read_token_answer(&body, &step, who)?;
    Ok(Issued::new(credentials, expires_at.map(endpoint::lifetime_until)))
}

/// The credentials in a `GetAuthorizationToken` answer (the user and password of
/// its first base64 `authorizationToken`, issued to `who`) and when they expire
/// (Unix seconds), if it says. A refusal is `auth_failed` for `step`.
pub fn read_token_answer(body: &[u8], step: &str, who: &str) -> Result<(Credentials, Option<f64>), ProbeError> {
    let answer: TokenAnswer = endpoint::parse_json(body, step)?;
    let Some(data) = answer.authorization_data.into_iter().next() else {
        return Err(failed(step, "the answer has no authorizationData"));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data.authorization_token.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| failed(step, "the authorization token is not base64 text"))?;
    let (user, password) =
        decoded.split_once(':').ok_or_else(|| failed(step, "the authorization token is not user:password"))?;
    let origin = format!("an ECR authorization token for {who}");
    let credentials = Credentials::new(user, Secret::Password(password.to_string())).with_origin(origin);
    Ok((credentials, data.expires_at))
}

/// The SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token`) for a
/// request with these `headers` and `body`, signed by AWS's signer; secret values are
/// marked sensitive.
#[allow(clippy::too_many_arguments)]
fn sign_request(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
    keys: &AwsKeys,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(String, HeaderValue)>, String> {
    let identity = aws_credential_types::Credentials::new(
        &keys.access_key_id,
        &keys.secret_access_key,
        keys.session_token.clone(),
        None,
        "pullprobe",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign the request: {e}"))?
        .into();
    let signable = SignableRequest::new(method, url.as_str(), headers.iter().copied(), SignableBody::Bytes(body))
        .map_err(|e| format!("cannot sign the request: {e}"))?;
    let (instructions, _signature) =
        sign(signable, &params).map_err(|e| format!("cannot sign the request: {e}"))?.into_parts();
    let (signed, _query) = instructions.into_parts();
    signed
        .into_iter()
        .map(|header| {
            let mut value = HeaderValue::from_str(header.value()).map_err(|_| "a signed header value".to_string())?;
            value.set_sensitive(header.sensitive() || header.name() == "authorization");
            Ok((header.name().to_string(), value))
        })
        .collect()
}

/// `__type` (after its `#`) and `message` of an ECR error body.
fn ecr_error(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let kind = value.get("__type").and_then(|v| v.as_str()).map(|t| t.rsplit('#').next().unwrap_or(t).to_string());
    let message = value.get("message").or_else(|| value.get("Message")).and_then(|v| v.as_str());
    match (kind, message) {
        (Some(kind), Some(message)) => Some(format!("{kind}: {message}")),
        (kind, message) => kind.or(message.map(str::to_string)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_keys(session_token: Option<&str>) -> AwsKeys {
        AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: session_token.map(str::to_string),
        }
    }

    fn header(signed: &[(String, HeaderValue)], name: &str) -> String {
        let value = signed.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_str().unwrap().to_string());
        value.unwrap_or_else(|| panic!("no {name} among {:?}", signed.iter().map(|(n, _)| n).collect::<Vec<_>>()))
    }

    /// AWS's published SigV4 test suite (aws-sig-v4-test-suite, as vendored in the
    /// aws-sigv4 crate under `aws-signing-test-suite/v4/`): `get-vanilla` and
    /// `get-vanilla-with-session-token`, credentials AKIDEXAMPLE, region us-east-1,
    /// service `service`, 2015-08-30T12:36:00Z.
    #[test]
    fn signer_matches_the_published_sigv4_test_vectors() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        let url = Url::parse("https://example.amazonaws.com/").unwrap();
        let signed = sign_request("GET", &url, &[], b"", &example_keys(None), "us-east-1", "service", time).unwrap();
        assert_eq!(header(&signed, "x-amz-date"), "20150830T123600Z");
        assert_eq!(
            header(&signed, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let keys = example_keys(Some(token));
        let signed = sign_request("GET", &url, &[], b"", &keys, "us-east-1", "service", time).unwrap();
        assert_eq!(header(&signed, "x-amz-security-token"), token);
        assert_eq!(
            header(&signed, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date;x-amz-security-token, \
             Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
        );
        // The signature and the session token never print.
        for (name, value) in &signed {
            if name != "x-amz-date" {
                assert!(value.is_sensitive(), "{name}");
            }
        }
    }

    #[test]
    fn regions_from_hosts() {
        let region = host_region;
        assert_eq!(region("123456789012.dkr.ecr.eu-west-1.amazonaws.com"), Some(("eu-west-1".into(), false, false)));
        assert_eq!(
            region("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com"),
            Some(("us-gov-west-1".into(), true, false))
        );
        assert_eq!(
            region("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn:443"),
            Some(("cn-north-1".into(), false, true))
        );
        assert_eq!(region("127.0.0.1:5000"), None);
        let url = |region: &str, fips, china| default_endpoint(region, fips, china).unwrap().to_string();
        assert_eq!(url("eu-west-1", false, false), "https://api.ecr.eu-west-1.amazonaws.com/");
        assert_eq!(url("us-gov-west-1", true, false), "https://ecr-fips.us-gov-west-1.amazonaws.com/");
        assert_eq!(url("cn-north-1", false, true), "https://api.ecr.cn-north-1.amazonaws.com.cn/");
    }

    #[test]
    fn ecr_errors_name_the_exception() {
        let body = br#"{"__type":"com.amazon.coral.service#InvalidSignatureException","message":"The request signature we calculated does not match"}"#;
        assert_eq!(
            ecr_error(body).as_deref(),
            Some("InvalidSignatureException: The request signature we calculated does not match")
        );
        assert_eq!(ecr_error(b"{}"), None);
    }
}
