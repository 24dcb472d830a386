//! AWS credentials for signing ECR calls, found the way the AWS SDKs find them in
//! a pod or on an instance, in this order:
//!
//! 1. web identity (EKS IRSA): `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE` →
//!    STS `AssumeRoleWithWebIdentity` (query protocol, unsigned);
//! 2. container credentials (EKS Pod Identity, ECS): `AWS_CONTAINER_CREDENTIALS_FULL_URI`
//!    with the token of `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`, or
//!    `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`;
//! 3. `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`);
//! 4. the instance profile through IMDSv2 (`AWS_EC2_METADATA_SERVICE_ENDPOINT`,
//!    off with `AWS_EC2_METADATA_DISABLED=true`).
//!
//! Temporary credentials are cached process-wide until shortly before they expire.
//! Failures name the source and the role, never a key or a token.

use std::fmt;
use std::sync::LazyLock;

use url::Url;

use super::cache::{Cache, Issued};
use super::endpoint::{self, Route, env, failed};
use crate::reason::ProbeError;

/// The session name STS records for a web identity, unless `AWS_ROLE_SESSION_NAME` says otherwise.
const SESSION_NAME: &str = "pullprobe";
const IMDS_DEFAULT: &str = "http://169.254.169.254";
/// The ECS agent's address for `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
const ECS_CREDENTIALS_HOST: &str = "http://169.254.170.2";
/// Hosts that container credentials may come from over plain HTTP (the SDKs' list).
const CONTAINER_HOSTS: [&str; 4] = ["169.254.170.2", "169.254.170.23", "[fd00:ec2::23]", "localhost"];

/// An access key, its secret and a session token. Prints without the secrets.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AwsKeys {{ access_key_id: {:?}, [redacted] }}", self.access_key_id)
    }
}

/// Keys and who they belong to, as failures name it ("role arn:… (web identity)").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AwsIdentity {
    pub keys: AwsKeys,
    pub who: String,
}

/// Where the credentials come from, decided from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    WebIdentity { role_arn: String, token_file: String, session_name: String },
    Container { url: Url, token: ContainerToken },
    Environment(AwsKeys),
    InstanceProfile { endpoint: Url },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ContainerToken {
    None,
    File(String),
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`: read from the environment when used, never kept here.
    Env,
}

static CACHE: LazyLock<Cache<AwsIdentity>> = LazyLock::new(Cache::default);

/// The credentials of this workload, for calls in `region` (STS is regional).
pub(super) async fn credentials(region: &str, max_body: u64) -> Result<AwsIdentity, ProbeError> {
    let source = source()?;
    let key = match &source {
        Source::WebIdentity { role_arn, token_file, .. } => format!("web-identity|{role_arn}|{token_file}|{region}"),
        Source::Container { url, .. } => format!("container|{url}"),
        Source::Environment(keys) => {
            let who = format!("access key {} (environment)", keys.access_key_id);
            return Ok(AwsIdentity { keys: keys.clone(), who });
        }
        Source::InstanceProfile { endpoint } => format!("imds|{endpoint}"),
    };
    CACHE.get(&key, || fetch(source, region, max_body)).await
}

fn source() -> Result<Source, ProbeError> {
    if let Some(role_arn) = env("AWS_ROLE_ARN") {
        let token_file = env("AWS_WEB_IDENTITY_TOKEN_FILE").ok_or_else(|| {
            failed(
                &format!("AWS web identity for role {role_arn}"),
                "AWS_ROLE_ARN is set, AWS_WEB_IDENTITY_TOKEN_FILE is not",
            )
        })?;
        let session_name = env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| SESSION_NAME.to_string());
        return Ok(Source::WebIdentity { role_arn, token_file, session_name });
    }
    let token = match (env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"), env("AWS_CONTAINER_AUTHORIZATION_TOKEN")) {
        (Some(file), _) => ContainerToken::File(file),
        (None, Some(_)) => ContainerToken::Env,
        (None, None) => ContainerToken::None,
    };
    if let Some(full) = env("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        let step = "AWS container credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI)";
        let url = Url::parse(&full).map_err(|_| failed(step, "not a URL"))?;
        let host = url.host_str().unwrap_or_default();
        let allowed = url.scheme() == "https"
            || (url.scheme() == "http" && (CONTAINER_HOSTS.contains(&host) || endpoint::is_loopback(&url)));
        if !allowed {
            return Err(failed(step, "expected https, or http to the EKS Pod Identity or ECS agent or this machine"));
        }
        return Ok(Source::Container { url, token });
    }
    if let Some(relative) = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        let url = Url::parse(&format!("{ECS_CREDENTIALS_HOST}{relative}"))
            .map_err(|_| failed("AWS container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)", "not a path"))?;
        return Ok(Source::Container { url, token });
    }
    if let Some(access_key_id) = env("AWS_ACCESS_KEY_ID") {
        let secret_access_key = env("AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
            failed(&format!("AWS access key {access_key_id} (environment)"), "AWS_SECRET_ACCESS_KEY is not set")
        })?;
        let session_token = env("AWS_SESSION_TOKEN");
        return Ok(Source::Environment(AwsKeys { access_key_id, secret_access_key, session_token }));
    }
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(failed(
            "AWS credentials",
            "none found: no AWS_ROLE_ARN (web identity), AWS_CONTAINER_CREDENTIALS_FULL_URI (Pod Identity) or \
             AWS_ACCESS_KEY_ID, and AWS_EC2_METADATA_DISABLED is true",
        ));
    }
    let endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| IMDS_DEFAULT.to_string());
    let endpoint = Url::parse(&endpoint)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| failed("AWS instance metadata (AWS_EC2_METADATA_SERVICE_ENDPOINT)", "not an http URL"))?;
    Ok(Source::InstanceProfile { endpoint })
}

async fn fetch(source: Source, region: &str, max_body: u64) -> Result<Issued<AwsIdentity>, ProbeError> {
    match source {
        Source::WebIdentity { role_arn, token_file, session_name } => {
            assume_role_with_web_identity(&role_arn, &token_file, &session_name, region, max_body).await
        }
        Source::Container { url, token } => container_credentials(&url, &token, max_body).await,
        Source::Environment(keys) => {
            let who = format!("access key {} (environment)", keys.access_key_id);
            Ok(Issued::new(AwsIdentity { keys, who }, None))
        }
        Source::InstanceProfile { endpoint } => instance_profile(&endpoint, max_body).await,
    }
}

/// STS `AssumeRoleWithWebIdentity`: the projected service account token for the role's keys.
async fn assume_role_with_web_identity(
    role_arn: &str,
    token_file: &str,
    session_name: &str,
    region: &str,
    max_body: u64,
) -> Result<Issued<AwsIdentity>, ProbeError> {
    let step = format!("STS AssumeRoleWithWebIdentity for role {role_arn}");
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| failed(&step, format!("cannot read AWS_WEB_IDENTITY_TOKEN_FILE {token_file}: {e}")))?;
    let url = sts_endpoint(region)?;
    endpoint::require_secure(&url, &step)?;
    let form = endpoint::form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("WebIdentityToken", token.trim()),
    ]);
    tracing::debug!(role = role_arn, endpoint = %url, "asking STS for web identity credentials");
    let request = endpoint::client(Route::Public)?
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form);
    let (status, body) = endpoint::send(request, &step, max_body).await?;
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        let explanation = match (xml_text(&text, "Code"), xml_text(&text, "Message")) {
            (Some(code), Some(message)) => Some(format!("{code}: {message}")),
            (code, message) => code.or(message),
        };
        return Err(endpoint::refused(&step, status, explanation));
    }
    let field = |name: &str| xml_text(&text, name).ok_or_else(|| failed(&step, format!("the answer has no {name}")));
    let keys = AwsKeys {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: Some(field("SessionToken")?),
    };
    let lifetime = xml_text(&text, "Expiration").and_then(|e| endpoint::lifetime_until_rfc3339(&e));
    Ok(Issued::new(AwsIdentity { keys, who: format!("role {role_arn} (web identity)") }, lifetime))
}

/// `https://sts.<region>.amazonaws.com`, or `AWS_ENDPOINT_URL_STS`, or `AWS_ENDPOINT_URL`.
fn sts_endpoint(region: &str) -> Result<Url, ProbeError> {
    match endpoint::override_url(&["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"])? {
        Some(url) => Ok(url),
        None => regional_sts_endpoint(region),
    }
}

fn regional_sts_endpoint(region: &str) -> Result<Url, ProbeError> {
    if !is_region(region) {
        return Err(failed("STS", format!("{region:?} is not an AWS region")));
    }
    let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    Url::parse(&format!("https://sts.{region}.{suffix}/"))
        .map_err(|_| failed("STS", format!("region {region:?} makes no endpoint")))
}

/// `eu-west-1`, `us-gov-west-1`, `cn-north-1`: lowercase letters, digits and dashes.
pub(super) fn is_region(region: &str) -> bool {
    !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What the container credentials endpoint and IMDS answer.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeysAnswer {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
    #[serde(default)]
    role_arn: Option<String>,
}

impl KeysAnswer {
    fn into_issued(self, who: String) -> Issued<AwsIdentity> {
        let lifetime = self.expiration.as_deref().and_then(endpoint::lifetime_until_rfc3339);
        let keys = AwsKeys {
            access_key_id: self.access_key_id,
            secret_access_key: self.secret_access_key,
            session_token: self.token.filter(|t| !t.is_empty()),
        };
        Issued::new(AwsIdentity { keys, who }, lifetime)
    }
}

/// EKS Pod Identity or ECS: `GET` the agent's URL with its authorization token.
async fn container_credentials(
    url: &Url,
    token: &ContainerToken,
    max_body: u64,
) -> Result<Issued<AwsIdentity>, ProbeError> {
    let step = format!("AWS container credentials from {}", crate::redact::redact_url(url));
    let mut request = endpoint::client(Route::Metadata)?.get(url.clone());
    let authorization =
        match token {
            ContainerToken::None => None,
            ContainerToken::File(file) => Some(std::fs::read_to_string(file).map_err(|e| {
                failed(&step, format!("cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {file}: {e}"))
            })?),
            ContainerToken::Env => env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        };
    if let Some(value) = authorization {
        let mut value = reqwest::header::HeaderValue::from_str(value.trim())
            .map_err(|_| failed(&step, "the authorization token is not a valid header value"))?;
        value.set_sensitive(true);
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    tracing::debug!(endpoint = %crate::redact::redact_url(url), "asking for container credentials");
    let answer: KeysAnswer = endpoint::send_json(request, &step, max_body, aws_message).await?;
    let who = match &answer.role_arn {
        Some(role) => format!("role {role} (container credentials)"),
        None => format!("the container credentials of {}", crate::redact::redact_url(url)),
    };
    Ok(answer.into_issued(who))
}

/// IMDSv2: a session token, the instance profile's role, then its credentials.
async fn instance_profile(endpoint_url: &Url, max_body: u64) -> Result<Issued<AwsIdentity>, ProbeError> {
    let base = endpoint_url.as_str().trim_end_matches('/');
    let step = format!("AWS instance metadata {base}");
    let http = endpoint::client(Route::Metadata)?;
    let request = http.put(format!("{base}/latest/api/token")).header("x-aws-ec2-metadata-token-ttl-seconds", "300");
    let (status, body) = endpoint::send(request, &format!("{step} (IMDSv2 session token)"), max_body).await?;
    if !status.is_success() {
        return Err(endpoint::refused(&format!("{step} (IMDSv2 session token)"), status, None));
    }
    let mut session = reqwest::header::HeaderValue::from_bytes(body.trim_ascii())
        .map_err(|_| failed(&step, "the IMDSv2 session token is not a valid header value"))?;
    session.set_sensitive(true);
    let roles_url = format!("{base}/latest/meta-data/iam/security-credentials/");
    let request = http.get(&roles_url).header("x-aws-ec2-metadata-token", session.clone());
    let (status, body) = endpoint::send(request, &format!("{step} (instance profile role)"), max_body).await?;
    if !status.is_success() {
        let hint = (status == reqwest::StatusCode::NOT_FOUND).then(|| "the instance has no instance profile".into());
        return Err(endpoint::refused(&format!("{step} (instance profile role)"), status, hint));
    }
    let role = String::from_utf8_lossy(&body).lines().next().unwrap_or_default().trim().to_string();
    if role.is_empty() || role.contains('/') {
        return Err(failed(&step, "the instance profile role name is missing"));
    }
    let step = format!("{step} (credentials of instance profile role {role})");
    let request = http.get(format!("{roles_url}{role}")).header("x-aws-ec2-metadata-token", session);
    tracing::debug!(role, "asking instance metadata for the instance profile's credentials");
    let answer: KeysAnswer = endpoint::send_json(request, &step, max_body, aws_message).await?;
    Ok(answer.into_issued(format!("instance profile role {role}")))
}

/// `Code` and `Message` of an AWS JSON error body.
fn aws_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
    match (field("Code"), field("Message").or_else(|| field("message"))) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (code, message) => code.or(message),
    }
}

/// The text of the first `<tag>…</tag>` of an XML document, entities decoded.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    let raw = xml[start..end].trim();
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_answers_parse() {
        let answer = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
      <SecretAccessKey>wJalr&amp;secret</SecretAccessKey>
      <SessionToken>FwoGZXIvYXdzE&lt;x&gt;</SessionToken>
      <Expiration>2030-01-01T00:00:00Z</Expiration>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;
        assert_eq!(xml_text(answer, "AccessKeyId").as_deref(), Some("ASIAEXAMPLE"));
        assert_eq!(xml_text(answer, "SecretAccessKey").as_deref(), Some("wJalr&secret"));
        assert_eq!(xml_text(answer, "SessionToken").as_deref(), Some("FwoGZXIvYXdzE<x>"));
        assert_eq!(xml_text(answer, "Missing"), None);
        assert_eq!(xml_text("<Code>AccessDenied", "Code"), None, "unterminated");
        let error = br#"{"Code":"InvalidToken","Message":"Token is expired"}"#;
        assert_eq!(aws_message(error).as_deref(), Some("InvalidToken: Token is expired"));
    }

    #[test]
    fn keys_never_print() {
        let keys = AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: Some("FwoGZX".into()),
        };
        let shown = format!("{:?}", AwsIdentity { keys, who: "role r".into() });
        assert!(shown.contains("AKIDEXAMPLE") && !shown.contains("wJalr") && !shown.contains("FwoGZX"), "{shown}");
    }

    #[test]
    fn regional_sts_endpoints() {
        let url = |region: &str| regional_sts_endpoint(region).unwrap().to_string();
        assert_eq!(url("eu-west-1"), "https://sts.eu-west-1.amazonaws.com/");
        assert_eq!(url("cn-north-1"), "https://sts.cn-north-1.amazonaws.com.cn/");
        assert!(regional_sts_endpoint("no/such region").is_err());
    }
}
