//! Frontends: the separate ways into one registry (addresses behind its name,
//! caches, mirrors). Each is probed on its own and labels its results.
//!
//! Most forms come straight from probes.yaml or the command line. A node's
//! mirror configuration is read here too, every time a probe is planned (a
//! node picks up changes without a restart): [`node_config`] reads the node's
//! file with [`containerd`] (hosts.toml) or [`registries_conf`] (CRI-O's and
//! podman's registries.conf), and [`node`] turns either into one frontend per
//! mirror plus `node-order`.

pub mod containerd;
pub mod node;
pub mod node_config;
pub mod registries_conf;
pub mod toml_file;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::config::{FrontendSet, FrontendSpec, RegistryConfig};
use crate::reason::ProbeError;
use crate::reference::ImageReference;
use crate::registry::client::RegistryClient;
use crate::registry::route::MirrorRoute;
use crate::registry::transport::{Transport, TransportOptions};

pub use node::{NODE_ORDER, NodeOrder};

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
    /// How a host of a node's mirror configuration is reached; the default for every other frontend.
    pub host: HostSettings,
    /// For a frontend read from a node's mirror configuration: its 1-based place in the node's order.
    pub mirror_position: Option<u32>,
    /// Requests go through these hosts instead, as a node walks them: `node-order`, and
    /// a mirror that may not resolve tags (the upstream resolves, the mirror serves).
    pub order: Option<NodeOrder>,
    /// What the node's configuration says that pullprobe does not apply: a warning on every result.
    pub notes: Vec<String>,
}

impl Frontend {
    /// A frontend with a label and a URL and nothing else.
    pub fn endpoint(label: impl Into<String>, url: Url) -> Frontend {
        Frontend {
            label: label.into(),
            url,
            pin: None,
            repository_prefix: None,
            ns: None,
            host: HostSettings::default(),
            mirror_position: None,
            order: None,
            notes: Vec::new(),
        }
    }

    /// A client that reaches the registry through this frontend: an address-pinned
    /// frontend connects to its address (Host and TLS SNI stay the registry's name,
    /// the port is the address's), a mirror gets its repository prefix and `?ns=`,
    /// a node's host its TLS settings, headers and API root, and an ordered
    /// frontend a client that walks its hosts.
    pub fn client(&self, options: &TransportOptions) -> Result<RegistryClient, ProbeError> {
        match &self.order {
            Some(order) => order.client(options),
            None => self.direct_client(options),
        }
    }

    /// A client for this frontend's own URL, whatever its order says.
    fn direct_client(&self, options: &TransportOptions) -> Result<RegistryClient, ProbeError> {
        let mut options = self.host.transport(options);
        let mut base = self.url.clone();
        if let (Some(addr), Some(host)) = (self.pin, self.url.host_str()) {
            options.pin = Some((host.to_string(), addr));
            // A port in the URL would win over the pinned address's port when connecting:
            // ask for the pinned port, so the connection goes where the frontend label says.
            if base.port().is_some_and(|port| port != addr.port()) {
                let _ = base.set_port(Some(addr.port()));
            }
        }
        let transport = Transport::new(&options)?;
        Ok(RegistryClient::new(transport, base)
            .with_mirror_routing(self.repository_prefix.clone(), self.ns.clone())
            .with_route(self.host.route()))
    }

    /// The same frontend with a fresh log for one pull through its order.
    pub fn for_one_pull(&self) -> Frontend {
        let mut frontend = self.clone();
        if let Some(order) = &mut frontend.order {
            *order = order.fresh();
        }
        frontend
    }
}

/// How one host of a node's mirror configuration is reached, beyond its URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// Do not verify the host's certificate (`skip_verify`, registries.conf `insecure`).
    pub skip_verify: bool,
    /// CA files trusted besides the system roots and the registry's `tls.ca_file`.
    pub ca_files: Vec<PathBuf>,
    /// Client certificate and key (the same file when it holds both).
    pub client_pair: Option<(PathBuf, PathBuf)>,
    /// Sent with every registry request, in order (a name may repeat).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The API root instead of `/v2` (`override_path`).
    pub api_root: Option<String>,
    /// A repository prefix replaced by another (registries.conf `prefix` → `location`).
    pub rewrite: Option<(String, String)>,
    /// The longest wait for a connection (`dial_timeout`).
    pub dial_timeout: Option<Duration>,
}

impl HostSettings {
    /// `base` with these settings applied.
    pub fn transport(&self, base: &TransportOptions) -> TransportOptions {
        let mut options = base.clone();
        options.insecure |= self.skip_verify;
        options.extra_ca_files.extend(self.ca_files.iter().cloned());
        if let Some((cert, key)) = &self.client_pair {
            options.client_cert = Some(cert.clone());
            options.client_key = Some(key.clone());
        }
        if let Some(timeout) = self.dial_timeout {
            options.connect_timeout = Some(timeout);
        }
        options
    }

    /// How requests to the host are formed.
    pub fn route(&self) -> MirrorRoute {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        MirrorRoute { api_root: self.api_root.clone(), rewrite: self.rewrite.clone(), headers }
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
    Ok(Frontend::endpoint(image.registry.clone(), url))
}

/// A frontend from the command line: a URL (`http://cache:8080`) goes to that
/// URL; an address (`10.0.0.1`, `10.0.0.2:8443`, `[::1]:5000`) pins the registry's name to it.
pub fn parse_frontend_arg(arg: &str, image: &ImageReference, plain_http: bool) -> Result<Frontend, String> {
    if arg.contains("://") {
        let url = Url::parse(arg).map_err(|e| format!("--frontend {arg:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("--frontend {arg:?}: want http:// or https:// with a host"));
        }
        return Ok(Frontend::endpoint(arg.trim_end_matches('/'), url));
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
    Ok(Frontend { pin: Some(addr), ..Frontend::endpoint(arg, registry.url) })
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
        FrontendSet::Single => Ok(vec![Frontend::endpoint(registry.host(), url)]),
        FrontendSet::Node(source) => node_config::frontends(source, &url, image).await.map_err(|e| e.to_string()),
        FrontendSet::Dns => {
            // A name that does not resolve is a registry outage, not a config error: probe
            // it once through the name, so the pull fails with `dns_error` and pages.
            let by_name = || vec![Frontend::endpoint(registry.host(), url.clone())];
            let Ok(addrs) = tokio::net::lookup_host((host.as_str(), default_port)).await else {
                return Ok(by_name());
            };
            let mut frontends: Vec<Frontend> = Vec::new();
            for addr in addrs.filter(|a| registry.ip_family.allows(a.ip())) {
                if frontends.iter().all(|f| f.pin != Some(addr)) {
                    frontends
                        .push(Frontend { pin: Some(addr), ..Frontend::endpoint(addr.ip().to_string(), url.clone()) });
                }
            }
            if frontends.is_empty() {
                // None of `ip_family`: probed through the name, whose lookup then
                // fails with `dns_error` (the transport keeps to the family) and pages.
                return Ok(by_name());
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
                    pin: Some(SocketAddr::new(*ip, port.unwrap_or(default_port))),
                    ..Frontend::endpoint(spec.label(), url.clone())
                },
                FrontendSpec::Endpoint { name, url: endpoint, repository_prefix, ns } => Frontend {
                    repository_prefix: repository_prefix.clone(),
                    ns: ns.clone(),
                    ..Frontend::endpoint(name.clone(), endpoint.clone())
                },
            })
            .collect()),
    }
}
