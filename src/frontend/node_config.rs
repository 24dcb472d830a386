//! Reading a node's mirror configuration, whichever runtime's it is: the
//! hosts for one reference from containerd's hosts.toml
//! ([`super::containerd`]) or from registries.conf ([`super::registries_conf`]),
//! the scheme of hosts that may fall back to plain HTTP settled, and the
//! frontends made of them ([`super::node`]). Read at every plan: nodes pick
//! up changes without a restart.

use std::time::Duration;

use url::Url;

use super::Frontend;
use super::node::{NodeHosts, as_frontends};
use crate::config::{Config, ConfigError, FrontendSet, NodeMirrors, ProbeKind};
use crate::reference::ImageReference;
use crate::registry::transport::{Transport, TransportOptions};

/// The frontends of a node's mirror configuration for `image`: read now, every plan.
/// `registry_url` is the registry's own URL, the upstream when the configuration does not name one.
pub async fn frontends(
    source: &NodeMirrors,
    registry_url: &Url,
    image: &ImageReference,
) -> Result<Vec<Frontend>, ConfigError> {
    let mut node = read(source, registry_url, image)?;
    for host in node.hosts.iter_mut().filter(|h| h.http_fallback) {
        if !answers_tls(&host.url).await {
            let _ = host.url.set_scheme("http");
        }
    }
    Ok(as_frontends(&node, image))
}

/// Read and check a node's configuration for `image`, without touching the network.
pub fn read(source: &NodeMirrors, registry_url: &Url, image: &ImageReference) -> Result<NodeHosts, ConfigError> {
    match source {
        NodeMirrors::Containerd(dir) => super::containerd::node_hosts(dir, registry_url, image),
        NodeMirrors::RegistriesConf(file) => super::registries_conf::node_hosts(file, registry_url, image),
    }
}

/// Check the node configuration files `config` points at, as `validate` does: each
/// must read and parse, and for every `image:` probe of such a registry, say where
/// the node would pull it from. The network is not touched.
pub fn check_files(config: &Config) -> Result<(), ConfigError> {
    for registry in &config.registries {
        if let FrontendSet::Node(source) = &registry.frontends {
            let placeholder = ImageReference::parse(&format!("{}/pullprobe/validate:latest", registry.host()))
                .map_err(|e| ConfigError::new(&config.file, None, e.to_string()))?;
            read(source, &registry.url, &placeholder)?;
        }
    }
    for probe in &config.probes {
        if !matches!(probe.kind, ProbeKind::Image { .. }) {
            continue;
        }
        if let Ok((image, Some(registry))) = config.resolve_image(probe)
            && let FrontendSet::Node(source) = &registry.frontends
        {
            read(source, &registry.url, &image)?;
        }
    }
    Ok(())
}

/// Whether a host answers HTTPS at all (any HTTP status), the way CRI-O pings an
/// `insecure` registry before falling back to plain HTTP.
async fn answers_tls(url: &Url) -> bool {
    let options = TransportOptions {
        insecure: true,
        connect_timeout: Some(Duration::from_secs(5)),
        ..TransportOptions::default()
    };
    let Ok(transport) = Transport::new(&options) else { return false };
    let mut ping = url.clone();
    let _ = ping.set_scheme("https");
    ping.set_path("/v2/");
    matches!(tokio::time::timeout(Duration::from_secs(5), transport.http.get(ping).send()).await, Ok(Ok(_)))
}
