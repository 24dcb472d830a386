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

mod acr;
mod aws_credentials;
mod cache;
mod ecr;
mod endpoint;
mod gcp;
mod provider_plugin;

pub use provider_plugin::PLUGIN_TIMEOUT;

use crate::config::{Auth, CloudAuth};
use crate::reason::ProbeError;
use crate::registry::auth::{AuthOptions, Credentials};

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

/// The credentials of a cloud or plugin source (or of `auth: auto`) for the registry
/// and image of `options`.
pub async fn credentials(source: &Auth, options: &AuthOptions) -> Result<Option<Credentials>, ProbeError> {
    let (host, max_body) = (options.registry_host.as_str(), options.max_body_bytes);
    let Some(cloud) = resolve(source, host) else {
        return super::docker_config::lookup(None, host).await.map_err(|e| e.context(format_args!("auth: auto")));
    };
    match cloud {
        CloudAuth::Ecr => ecr::credentials(host, max_body).await.map(Some),
        CloudAuth::Gcp => gcp::credentials(max_body).await.map(Some),
        CloudAuth::Acr => acr::credentials(host, max_body).await.map(Some),
        CloudAuth::CredentialProvider(plugin) => {
            provider_plugin::credentials(&plugin, &plugin_target(options), max_body).await
        }
    }
}

/// After the registry refused `refused`: the cloud's or plugin's credentials fetched anew,
/// unless another probe of the registry already did. Other sources are not read again.
pub async fn renew(
    source: &Auth,
    options: &AuthOptions,
    refused: Option<&Credentials>,
) -> Result<Option<Credentials>, ProbeError> {
    let (host, max_body) = (options.registry_host.as_str(), options.max_body_bytes);
    let Some(cloud) = resolve(source, host) else { return Ok(refused.cloned()) };
    let Some(refused_credentials) = refused else { return credentials(source, options).await };
    match cloud {
        CloudAuth::Ecr => ecr::renew(host, refused_credentials, max_body).await.map(Some),
        CloudAuth::Gcp => gcp::renew(refused_credentials, max_body).await.map(Some),
        CloudAuth::Acr => acr::renew(host, refused_credentials, max_body).await.map(Some),
        CloudAuth::CredentialProvider(plugin) => {
            provider_plugin::renew(&plugin, &plugin_target(options), refused, max_body).await
        }
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

/// What a plugin is asked about: the image (`host/repo:tag`), else the registry alone.
fn plugin_target(options: &AuthOptions) -> provider_plugin::Target<'_> {
    provider_plugin::Target {
        image: options.image.as_ref().map(ToString::to_string).unwrap_or_else(|| options.registry_host.clone()),
        host: &options.registry_host,
        repository: options.image.as_ref().map(|i| i.repository.as_str()).unwrap_or_default(),
    }
}
