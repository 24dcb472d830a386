//! Azure Container Registry: Entra workload identity → an Entra access token →
//! ACR's `POST /oauth2/exchange` → a refresh token, used as an identity token
//! with user `00000000-0000-0000-0000-000000000000` (the registry's token
//! endpoint then issues access tokens for it, as `docker login` to ACR does).
//!
//! The workload identity webhook sets `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and
//! `AZURE_FEDERATED_TOKEN_FILE`; the token comes from
//! `$AZURE_AUTHORITY_HOST/<tenant>/oauth2/v2.0/token` (default
//! `https://login.microsoftonline.com/`) for Azure Resource Manager's scope, the
//! audience ACR's exchange accepts by default.

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use url::Url;

use super::cache::{Cache, Issued};
use super::endpoint::{self, Route, env, failed};
use crate::reason::ProbeError;
use crate::registry::credentials::{Credentials, Secret};

/// The user name ACR takes a refresh token with.
const USER: &str = "00000000-0000-0000-0000-000000000000";
const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com/";
/// ACR refresh tokens live three hours; used when the token does not say.
const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(3 * 3600);

static ENTRA_TOKENS: LazyLock<Cache<EntraToken>> = LazyLock::new(Cache::default);
static REFRESH_TOKENS: LazyLock<Cache<Credentials>> = LazyLock::new(Cache::default);

/// The workload identity, from the environment the webhook sets.
struct Identity {
    client_id: String,
    tenant_id: String,
    token_file: String,
    authority: Url,
}

impl Identity {
    fn from_env() -> Result<Identity, ProbeError> {
        let missing = |var: &str| {
            failed(
                "Entra workload identity",
                format!("{var} is not set (is the pod labelled azure.workload.identity/use: \"true\"?)"),
            )
        };
        let client_id = env("AZURE_CLIENT_ID").ok_or_else(|| missing("AZURE_CLIENT_ID"))?;
        let tenant_id = env("AZURE_TENANT_ID").ok_or_else(|| missing("AZURE_TENANT_ID"))?;
        let token_file = env("AZURE_FEDERATED_TOKEN_FILE").ok_or_else(|| missing("AZURE_FEDERATED_TOKEN_FILE"))?;
        let authority = env("AZURE_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_AUTHORITY.to_string());
        let authority = Url::parse(&authority)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| failed("Entra workload identity", "AZURE_AUTHORITY_HOST: expected an https:// URL"))?;
        let valid =
            |id: &str| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
        if !valid(&tenant_id) {
            return Err(failed("Entra workload identity", "AZURE_TENANT_ID is not a tenant id"));
        }
        Ok(Identity { client_id, tenant_id, token_file, authority })
    }

    fn describe(&self) -> String {
        format!("Entra client id {} in tenant {}", self.client_id, self.tenant_id)
    }
}

/// The ACR credentials for the registry at `host`.
pub(super) async fn credentials(host: &str, max_body: u64) -> Result<Credentials, ProbeError> {
    let identity = Identity::from_env()?;
    let key = format!("{host}|{}|{}", identity.tenant_id, identity.client_id);
    REFRESH_TOKENS.get(&key, || refresh_token(host, &identity, max_body)).await
}

/// After the registry refused `refused`: a new refresh token (one per refusal, however many saw it).
pub(super) async fn renew(host: &str, refused: &Credentials, max_body: u64) -> Result<Credentials, ProbeError> {
    let identity = Identity::from_env()?;
    let key = format!("{host}|{}|{}", identity.tenant_id, identity.client_id);
    REFRESH_TOKENS.renew(&key, |c| c == refused, || refresh_token(host, &identity, max_body)).await
}

/// An Entra access token; it has no `Debug`, so it cannot be printed by accident.
#[derive(Clone, PartialEq, Eq)]
struct EntraToken(String);

#[derive(Deserialize)]
struct EntraAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ExchangeAnswer {
    refresh_token: String,
}

/// The exchange: the Entra token for the registry's refresh token. A refusal of a
/// cached Entra token (`401`) gets one new Entra token.
async fn refresh_token(host: &str, identity: &Identity, max_body: u64) -> Result<Issued<Credentials>, ProbeError> {
    let scope = arm_scope(host);
    let entra_key = format!("{}|{}|{}|{scope}", identity.authority, identity.tenant_id, identity.client_id);
    let entra = ENTRA_TOKENS.get(&entra_key, || entra_token(identity, scope, max_body)).await?;
    match exchange(host, identity, &entra, max_body).await {
        Err((Some(reqwest::StatusCode::UNAUTHORIZED), _)) => {
            let entra =
                ENTRA_TOKENS.renew(&entra_key, |t| *t == entra, || entra_token(identity, scope, max_body)).await?;
            exchange(host, identity, &entra, max_body).await.map_err(|(_, e)| e)
        }
        other => other.map_err(|(_, e)| e),
    }
}

/// `POST $AZURE_AUTHORITY_HOST/<tenant>/oauth2/v2.0/token` with the federated token as client assertion.
async fn entra_token(identity: &Identity, scope: &str, max_body: u64) -> Result<Issued<EntraToken>, ProbeError> {
    let step = format!("Entra ID token for {}", identity.describe());
    let assertion = std::fs::read_to_string(&identity.token_file)
        .map_err(|e| failed(&step, format!("cannot read AZURE_FEDERATED_TOKEN_FILE {}: {e}", identity.token_file)))?;
    let url = identity
        .authority
        .join(&format!("{}/oauth2/v2.0/token", identity.tenant_id))
        .map_err(|_| failed(&step, "AZURE_AUTHORITY_HOST and the tenant make no URL"))?;
    endpoint::require_secure(&url, &step)?;
    let form = endpoint::form(&[
        ("client_id", &identity.client_id),
        ("scope", scope),
        ("grant_type", "client_credentials"),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", assertion.trim()),
    ]);
    tracing::debug!(client_id = identity.client_id, tenant = identity.tenant_id, "asking Entra ID for a token");
    let request = endpoint::client(Route::Public)?
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form);
    let answer: EntraAnswer = endpoint::send_json(request, &step, max_body, endpoint::oauth_error).await?;
    Ok(Issued::new(EntraToken(answer.access_token), answer.expires_in.map(Duration::from_secs)))
}

/// `POST https://<registry>/oauth2/exchange` (plain http for a loopback registry, as its pulls).
/// `Err` carries the status the exchange answered, if it answered.
async fn exchange(
    host: &str,
    identity: &Identity,
    entra: &EntraToken,
    max_body: u64,
) -> Result<Issued<Credentials>, (Option<reqwest::StatusCode>, ProbeError)> {
    let step = format!("ACR token exchange at {host} for {}", identity.describe());
    let url = endpoint::registry_url(host, "/oauth2/exchange").ok_or_else(|| (None, failed(&step, "not a host")))?;
    let form = endpoint::form(&[
        ("grant_type", "access_token"),
        ("service", host),
        ("tenant", &identity.tenant_id),
        ("access_token", &entra.0),
    ]);
    tracing::debug!(
        registry = host,
        tenant = identity.tenant_id,
        "exchanging the Entra token for an ACR refresh token"
    );
    let http = endpoint::client(Route::Public).map_err(|e| (None, e))?;
    let request = http.post(url).header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(form);
    let (status, body) = endpoint::send(request, &step, max_body).await.map_err(|e| (None, e))?;
    if !status.is_success() {
        let explanation = acr_error(&body).or_else(|| endpoint::oauth_error(&body));
        return Err((Some(status), endpoint::refused(&step, status, explanation)));
    }
    let (credentials, lifetime) = read_exchange_answer(&body, &step, &identity.describe()).map_err(|e| (None, e))?;
    Ok(Issued::new(credentials, Some(lifetime)))
}

/// The credentials in an `/oauth2/exchange` answer (the registry's refresh token as an
/// identity token, issued to `who`) and how long they live: the token's JWT `exp`,
/// else three hours. A refusal is `auth_failed` for `step`.
pub fn read_exchange_answer(body: &[u8], step: &str, who: &str) -> Result<(Credentials, Duration), ProbeError> {
    let answer: ExchangeAnswer = endpoint::parse_json(body, step)?;
    let lifetime = jwt_lifetime(&answer.refresh_token).unwrap_or(REFRESH_TOKEN_LIFETIME);
    let origin = format!("an ACR refresh token for {who}");
    let credentials = Credentials::new(USER, Secret::IdentityToken(answer.refresh_token)).with_origin(origin);
    Ok((credentials, lifetime))
}

/// Azure Resource Manager's scope in the registry's cloud (`azurecr.cn`, `azurecr.us` are sovereign).
fn arm_scope(host: &str) -> &'static str {
    let name = host.split(':').next().unwrap_or_default().to_ascii_lowercase();
    if name.ends_with(".azurecr.cn") {
        "https://management.chinacloudapi.cn/.default"
    } else if name.ends_with(".azurecr.us") {
        "https://management.usgovcloudapi.net/.default"
    } else {
        "https://management.azure.com/.default"
    }
}

/// The first `errors[].message` of a Distribution-style error body, as ACR sends them.
fn acr_error(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = value.get("errors")?.as_array()?.first()?;
    let code = first.get("code").and_then(|v| v.as_str()).unwrap_or_default();
    let message = first.get("message").and_then(|v| v.as_str()).unwrap_or_default();
    Some(format!("{code}: {message}").trim_matches([' ', ':']).to_string()).filter(|s| !s.is_empty())
}

/// The time until a JWT's `exp` claim, if it is a JWT with one (nothing is verified: it only times the cache).
fn jwt_lifetime(token: &str) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(endpoint::lifetime_until(claims.get("exp")?.as_f64()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_registry_cloud() {
        assert_eq!(arm_scope("myreg.azurecr.io"), "https://management.azure.com/.default");
        assert_eq!(arm_scope("myreg.azurecr.cn:443"), "https://management.chinacloudapi.cn/.default");
        assert_eq!(arm_scope("myreg.azurecr.us"), "https://management.usgovcloudapi.net/.default");
    }

    #[test]
    fn refresh_token_lifetimes_come_from_exp() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("{}.{}.sig", b64("{\"alg\":\"RS256\"}"), b64("{\"exp\":32503680000}"));
        assert!(jwt_lifetime(&token).is_some_and(|d| d > Duration::from_secs(1 << 30)));
        assert_eq!(jwt_lifetime("opaque-token"), None);
        assert_eq!(jwt_lifetime(&format!("a.{}.c", b64("{}"))), None);
    }

    #[test]
    fn exchange_errors() {
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        assert_eq!(acr_error(body).as_deref(), Some("UNAUTHORIZED: authentication required"));
        assert_eq!(acr_error(b"{}"), None);
    }
}
