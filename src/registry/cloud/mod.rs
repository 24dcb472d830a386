//! Credentials that a cloud hands to the workload it runs — ECR, Artifact
//! Registry/GCR and ACR through their workload identities — and credentials
//! printed by kubelet credential provider plugins: the `auth:` forms
//! `{ecr: {}}`, `{gcp: {}}`, `{acr: {}}`, `{credential_provider: …}` and `auto`.
//! Each provider ends in the one [`Credentials`] type that a registry's challenge
//! is answered with ([`super::auth`]); nothing here speaks the Distribution API.
//!
//! What a cloud or plugin issues is cached for the whole process ([`cache`]) until
//! shortly before it expires, with one fetch in flight per registry: a hundred
//! probes of one registry cause one token fetch, in `now` and in `serve` alike.
//! Credentials a registry refuses are fetched anew once ([`renew`]), however many
//! probes saw the refusal.
//!
//! Every failure is `auth_failed` (phase `auth`) naming the identity (role ARN,
//! service account, tenant and client id, plugin) and the step (STS, metadata
//! server, exchange); never a token, a key or a password. Endpoints follow each
//! cloud's standard overrides (`AWS_ENDPOINT_URL*`, `GCE_METADATA_HOST`,
//! `AZURE_AUTHORITY_HOST`).

pub mod acr;
mod aws_credentials;
mod cache;
pub mod ecr;
mod endpoint;
pub mod gcp;
pub mod provider_plugin;

pub use provider_plugin::PLUGIN_TIMEOUT;

use crate::config::{Auth, CloudAuth};
use crate::reason::ProbeError;
use crate::reference::ImageReference;
use crate::registry::credentials::Credentials;

/// What credentials are wanted for: a registry (`host[:port]` as references write
/// it), the image when there is one, and the cap on what an endpoint may answer.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub host: &'a str,
    pub image: Option<&'a ImageReference>,
    /// `limits.max_manifest_bytes`, as for a registry's token bodies.
    pub max_body_bytes: u64,
}

/// The cloud or plugin that `source` means for the registry at `host`: the configured
/// one, or for `auth: auto` the one of the host ([`CloudAuth::for_host`]); `None` for
/// every other source, and for `auto` on a host of no cloud (the Docker config then).
pub fn resolve(source: &Auth, host: &str) -> Option<CloudAuth> {
    match source {
        Auth::Cloud(cloud) => Some(cloud.clone()),
        Auth::Auto => CloudAuth::for_host(host),
        Auth::DockerConfig(_) | Auth::Basic { .. } => None,
    }
}

/// The credentials of a cloud or plugin source (or of `auth: auto`) for `target`.
pub async fn credentials(source: &Auth, target: &Target<'_>) -> Result<Option<Credentials>, ProbeError> {
    let (host, max_body) = (target.host, target.max_body_bytes);
    let Some(cloud) = resolve(source, host) else {
        return super::docker_config::lookup(None, host).await.map_err(|e| e.context(format_args!("auth: auto")));
    };
    match cloud {
        CloudAuth::Ecr => ecr::credentials(host, max_body).await.map(Some),
        CloudAuth::Gcp => gcp::credentials(max_body).await.map(Some),
        CloudAuth::Acr => acr::credentials(host, max_body).await.map(Some),
        CloudAuth::CredentialProvider(plugin) => provider_plugin::credentials(&plugin, target).await,
    }
}

/// After the registry refused `refused`: the cloud's or plugin's credentials fetched anew,
/// unless another probe of the registry already did. Other sources are not read again.
pub async fn renew(
    source: &Auth,
    target: &Target<'_>,
    refused: Option<&Credentials>,
) -> Result<Option<Credentials>, ProbeError> {
    let (host, max_body) = (target.host, target.max_body_bytes);
    let Some(cloud) = resolve(source, host) else { return Ok(refused.cloned()) };
    let Some(refused_credentials) = refused else { return credentials(source, target).await };
    match cloud {
        CloudAuth::Ecr => ecr::renew(host, refused_credentials, max_body).await.map(Some),
        CloudAuth::Gcp => gcp::renew(refused_credentials, max_body).await.map(Some),
        CloudAuth::Acr => acr::renew(host, refused_credentials, max_body).await.map(Some),
        CloudAuth::CredentialProvider(plugin) => provider_plugin::renew(&plugin, target, refused).await,
    }
}

/// Why a cloud or plugin source (or `auth: auto`) has no credentials for `host`.
pub fn no_credentials_hint(source: &Auth, host: &str) -> String {
    match resolve(source, host) {
        None => format!(
            "`auth: auto` reads the Docker config for {host} (not an ECR, Artifact Registry/GCR or ACR host), \
             and {} has none",
            super::docker_config::default_path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "$DOCKER_CONFIG/config.json".into())
        ),
        Some(CloudAuth::CredentialProvider(plugin)) => format!(
            "credential provider {} gave none for {host}: no key of its auth map matches the image",
            plugin.command.display()
        ),
        Some(cloud) => format!("the `{}` identity gave none for {host}", cloud.key()),
    }
}
