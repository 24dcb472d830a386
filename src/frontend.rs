//! Frontends: the separate ways into one registry (addresses behind its name,
//! caches, mirrors). Each is probed on its own and labels its results.

use std::net::{IpAddr, SocketAddr};

use url::Url;

use crate::reference::ImageReference;

/// One way into a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// The `frontend` label: a configured name, else the address or URL.
    pub label: String,
    /// Base URL requests go to: scheme, host (the registry's name for pinned frontends), port.
    pub url: Url,
    /// Connect to this address instead of resolving the host; Host header and SNI stay the name.
    pub pin: Option<SocketAddr>,
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
    Ok(Frontend { label: image.registry.clone(), url, pin: None })
}

/// A frontend from the command line: a URL (`http://cache:8080`) goes to that
/// URL; an address (`10.0.0.1`, `10.0.0.2:8443`, `[::1]:5000`) pins the registry's name to it.
pub fn parse_frontend_arg(arg: &str, image: &ImageReference, plain_http: bool) -> Result<Frontend, String> {
    if arg.contains("://") {
        let url = Url::parse(arg).map_err(|e| format!("--frontend {arg:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("--frontend {arg:?}: want http:// or https:// with a host"));
        }
        return Ok(Frontend { label: arg.trim_end_matches('/').to_string(), url, pin: None });
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
    Ok(Frontend { label: arg.to_string(), url: registry.url, pin: Some(addr) })
}
