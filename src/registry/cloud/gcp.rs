//! Artifact Registry and Container Registry (GCP): user `oauth2accesstoken` with
//! the access token of the workload's service account from the metadata server
//! (GKE Workload Identity, or a VM's service account):
//! `GET http://$GCE_METADATA_HOST/computeMetadata/v1/instance/service-accounts/default/token`
//! with `Metadata-Flavor: Google`. The token is good for every registry, so one is
//! cached for the process until shortly before its `expires_in`.

use std::sync::LazyLock;
use std::time::Duration;

use serde::Deserialize;

use super::cache::{Cache, Issued};
use super::endpoint::{self, Route, env, failed};
use crate::reason::ProbeError;
use crate::registry::credentials::{Credentials, Secret};

/// The user name GCP registries take an access token with.
const USER: &str = "oauth2accesstoken";
const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
const ACCOUNT_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default";

static TOKENS: LazyLock<Cache<Credentials>> = LazyLock::new(Cache::default);

/// The access token of the workload's service account.
pub(super) async fn credentials(max_body: u64) -> Result<Credentials, ProbeError> {
    let host = metadata_host();
    TOKENS.get(&host, || access_token(&host, max_body)).await
}

/// After a registry refused `refused`: a new token (one per refusal, however many saw it).
pub(super) async fn renew(refused: &Credentials, max_body: u64) -> Result<Credentials, ProbeError> {
    let host = metadata_host();
    TOKENS.renew(&host, |c| c == refused, || access_token(&host, max_body)).await
}

/// `GCE_METADATA_HOST` (`host[:port]`), else `metadata.google.internal`.
fn metadata_host() -> String {
    env("GCE_METADATA_HOST").unwrap_or_else(|| DEFAULT_METADATA_HOST.to_string())
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

async fn access_token(host: &str, max_body: u64) -> Result<Issued<Credentials>, ProbeError> {
    let base = format!("http://{host}{ACCOUNT_PATH}");
    let step = format!("GCP metadata server {host}: access token of the default service account");
    let http = endpoint::client(Route::Metadata)?;
    let request = |path: &str| http.get(format!("{base}/{path}")).header("Metadata-Flavor", "Google");
    tracing::debug!(metadata_server = host, "asking the metadata server for an access token");
    let (token, email) = tokio::join!(
        endpoint::send_ok(request("token"), &step, max_body, metadata_error),
        endpoint::send(request("email"), &step, 1024)
    );
    // The account's email names the identity in messages; a server without it is no failure.
    let account = email
        .ok()
        .filter(|(status, _)| status.is_success())
        .map(|(_, body)| String::from_utf8_lossy(&body).trim().to_string())
        .filter(|e| !e.is_empty() && e.len() < 256 && !e.chars().any(char::is_control))
        .unwrap_or_else(|| "default".to_string());
    let body = token.map_err(|e| e.context(format_args!("service account {account}")))?;
    let (credentials, lifetime) = read_token_answer(&body, &step, &account, host)?;
    Ok(Issued::new(credentials, lifetime))
}

/// The credentials in the metadata server `host`'s token answer for service account
/// `account` (user `oauth2accesstoken` and the `access_token`) and their lifetime
/// (`expires_in`), if it says. A refusal is `auth_failed` for `step`.
pub fn read_token_answer(
    body: &[u8],
    step: &str,
    account: &str,
    host: &str,
) -> Result<(Credentials, Option<Duration>), ProbeError> {
    let token: TokenAnswer =
        endpoint::parse_json(body, step).map_err(|e| e.context(format_args!("service account {account}")))?;
    if token.access_token.is_empty() {
        return Err(failed(step, "the answer has an empty access_token"));
    }
    let origin = format!("a GCP access token of service account {account} from the metadata server {host}");
    let credentials = Credentials::new(USER, Secret::Password(token.access_token)).with_origin(origin);
    Ok((credentials, token.expires_in.map(Duration::from_secs)))
}

/// The metadata server's error text (plain text, one line).
fn metadata_error(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next()?.trim();
    (!line.is_empty() && !line.starts_with('<')).then(|| line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_errors_are_one_line_of_text() {
        assert_eq!(metadata_error(b"service account not found\nmore").as_deref(), Some("service account not found"));
        assert_eq!(metadata_error(b"<html><body>403</body></html>"), None);
        assert_eq!(metadata_error(b""), None);
    }
}
