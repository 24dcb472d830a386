//! Frontends: the separate ways into one registry (addresses behind its name,
//! caches, mirrors). Each is probed on its own and labels its results.

use std::net::{IpAddr, SocketAddr};

use url::Url;

use crate::config::{FrontendSet, FrontendSpec, RegistryConfig};
use crate::reason::ProbeError;
use crate::reference::ImageReference;
use crate::registry::client::RegistryClient;
use crate::registry::transport::{Transport, TransportOptions};

/// One way into a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// The `frontend` label: a configured name, else the address or URL.
    pub label: String,
    /// Base URL requests go to: scheme, host (the registry's name for pinned frontends), port.
    pub url: Url,
    /// Connect to this address instead of resolving the host; Host header and SNI stay the name.
    pub pin: Option<SocketAddr>,
    /// Prepended to every repository (a proxy-cache project such as `dockerhub-proxy/`).
    pub repository_prefix: Option<String>,
    /// containerd-style `?ns=` naming the upstream registry (for mirrors).
    pub ns: Option<String>,
}

impl Frontend {
    /// A client that reaches the registry through this frontend: an address-pinned
    /// frontend connects to its address (Host and TLS SNI stay the registry's name,
    /// the port is the address's), a mirror gets its repository prefix and `?ns=`.
    pub fn client(&self, options: &TransportOptions) -> Result<RegistryClient, ProbeError> {
        let mut options = options.clone();
        let mut base = self.url.clone();
        if let (Some(addr), Some(host)) = (self.pin, self.url.host_str()) {
            options.pin = Some((host.to_string(), addr));
            if base.port().is_some_and(|port| port != addr.port()) {
                let _ = base.set_port(Some(addr.port()));
            }
        }
        let transport = Transport::new(&options)?;
        Ok(RegistryClient::new(transport, base).with_mirror_routing(self.repository_prefix.clone(), self.ns.clone()))
    }
}

/// Whether plain HTTP is used for a registry host: loopback by default (as Docker does), or when forced.
pub fn scheme_for(image: &ImageReference, plain_http: bool) -> &'static str {
    if plain_http || image.is_loopback() { "http" } else { "https" }
}

/// The frontend every client uses: the registry's own name.
pub fn default_frontend(image: &ImageReference, plain_http: bool) -> Result<Frontend, String> {
    let scheme = scheme_for(image, plain_http);
    let url = Url::parse(&format!("{scheme}://{}", image.api_host()))
        .map_err(|e| format!("registry host {:?} does not form a URL: {e}", image.api_host()))?;
    Ok(Frontend { label: image.registry.clone(), url, pin: None, repository_prefix: None, ns: None })
}

/// A frontend from the command line: a URL (`http://cache:8080`) goes to that
/// URL; an address (`10.0.0.1`, `10.0.0.2:8443`, `[::1]:5000`) pins the registry's name to it.
pub fn parse_frontend_arg(arg: &str, image: &ImageReference, plain_http: bool) -> Result<Frontend, String> {
    if arg.contains("://") {
        let url = Url::parse(arg).map_err(|e| format!("--frontend {arg:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("--frontend {arg:?}: want http:// or https:// with a host"));
        }
        return Ok(Frontend {
            label: arg.trim_end_matches('/').to_string(),
            url,
            pin: None,
            repository_prefix: None,
            ns: None,
        });
    }
    let registry = default_frontend(image, plain_http)?;
    let default_port = registry.url.port_or_known_default().unwrap_or(443);
    let addr = if let Ok(sa) = arg.parse::<SocketAddr>() {
        sa
    } else if let Ok(ip) = arg.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        SocketAddr::new(ip, default_port)
    } else {
        return Err(format!("--frontend {arg:?}: want an address (10.0.0.1, 10.0.0.2:8443, [::1]:5000) or a URL"));
    };
    Ok(Frontend { label: arg.to_string(), url: registry.url, pin: Some(addr), repository_prefix: None, ns: None })
}

/// The frontends configured for a registry (or the registry's own name for an ad-hoc image).
pub async fn configured_frontends(
    registry: Option<&RegistryConfig>,
    image: &ImageReference,
    plain_http: bool,
) -> Result<Vec<Frontend>, String> {
    let Some(registry) = registry else {
        return default_frontend(image, plain_http).map(|f| vec![f]);
    };
    let mut url = registry.url.clone();
    if plain_http {
        let _ = url.set_scheme("http");
    }
    let default_port = url.port_or_known_default().unwrap_or(443);
    let host = url.host_str().unwrap_or_default().to_string();
    match &registry.frontends {
        FrontendSet::Single => {
            Ok(vec![Frontend { label: registry.host(), url, pin: None, repository_prefix: None, ns: None }])
        }
        FrontendSet::Dns => {
            // A name that does not resolve is a registry outage, not a config error: probe
            // it once through the name, so the pull fails with `dns_error` and pages.
            let by_name = || {
                vec![Frontend {
                    label: registry.host(),
                    url: url.clone(),
                    pin: None,
                    repository_prefix: None,
                    ns: None,
                }]
            };
            let Ok(addrs) = tokio::net::lookup_host((host.as_str(), default_port)).await else {
                return Ok(by_name());
            };
            let mut frontends: Vec<Frontend> = Vec::new();
            for addr in addrs.filter(|a| registry.ip_family.allows(a.ip())) {
                if frontends.iter().all(|f| f.pin != Some(addr)) {
                    frontends.push(Frontend {
                        label: addr.ip().to_string(),
                        url: url.clone(),
                        pin: Some(addr),
                        repository_prefix: None,
                        ns: None,
                    });
                }
            }
            if frontends.is_empty() {
                return Err(format!("registry {:?}: {host} has no {:?} addresses", registry.name, registry.ip_family));
            }
            Ok(frontends)
        }
        FrontendSet::List(list) => Ok(list
            .iter()
            .filter(|spec| match spec {
                FrontendSpec::Address { ip, .. } => registry.ip_family.allows(*ip),
                FrontendSpec::Endpoint { .. } => true,
            })
            .map(|spec| match spec {
                FrontendSpec::Address { ip, port } => Frontend {
                    label: spec.label(),
                    url: url.clone(),
                    pin: Some(SocketAddr::new(*ip, port.unwrap_or(default_port))),
                    repository_prefix: None,
                    ns: None,
                },
                FrontendSpec::Endpoint { name, url: endpoint, repository_prefix, ns } => Frontend {
                    label: name.clone(),
                    url: endpoint.clone(),
                    pin: None,
                    repository_prefix: repository_prefix.clone(),
                    ns: ns.clone(),
                },
            })
            .collect()),
    }
}
