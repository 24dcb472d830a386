//! A node's mirrors as frontends. Whichever runtime's file they came from
//! ([`super::node_config`]), a node's hosts for one reference become:
//!
//! - one frontend per host the node may pull from, labelled with its host and
//!   numbered with its place in the node's order (the upstream last), probed
//!   separately like any frontend — a host the node would only ask for content
//!   by digest (containerd without `resolve`, registries.conf `digest-only`)
//!   is probed the same way: the tag resolved where the node resolves it, the
//!   content from that host;
//! - one more, [`NODE_ORDER`], that pulls as the node does: the hosts in
//!   order, moving on where the runtime moves on ([`crate::registry::mirrors`]).

use std::collections::HashMap;
use std::sync::Arc;

use url::Url;

use super::{Frontend, HostSettings};
use crate::reason::{ProbeError, Reason};
use crate::reference::ImageReference;
use crate::registry::client::RegistryClient;
use crate::registry::mirrors::{LogState, MirrorOrder, OrderLog, OrderedHost, Walk};
use crate::registry::transport::TransportOptions;

/// The label of the result that pulls as the node does.
pub const NODE_ORDER: &str = "node-order";

/// One host of a node's configuration for one reference, as its runtime uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHost {
    /// `scheme://host[:port]`.
    pub url: Url,
    /// What follows the host in the configuration (a path), to tell two entries on one host apart.
    pub path: String,
    pub settings: HostSettings,
    /// The node may fetch content from it (containerd `pull`).
    pub pulls: bool,
    /// The node may turn a tag into a digest through it (containerd `resolve`).
    pub resolves: bool,
    /// The node asks it for this reference at all (registries.conf `pull-from-mirror`).
    pub used: bool,
    /// `https` first, plain HTTP if TLS does not answer (registries.conf `insecure`).
    pub http_fallback: bool,
    pub ns: Option<String>,
    /// What the configuration says about this host that pullprobe does not apply, or worth knowing.
    pub notes: Vec<String>,
}

impl NodeHost {
    /// The registry itself at `url`, as a node with nothing configured for it reaches it.
    pub fn registry(url: &Url) -> NodeHost {
        NodeHost {
            url: url.clone(),
            path: String::new(),
            settings: HostSettings::default(),
            pulls: true,
            resolves: true,
            used: true,
            http_fallback: false,
            ns: None,
            notes: Vec::new(),
        }
    }
}

/// A node's hosts for one reference, in the order it asks them (the upstream last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHosts {
    pub hosts: Vec<NodeHost>,
    pub walk: Walk,
}

/// One frontend per host the node pulls from, then [`NODE_ORDER`].
pub fn as_frontends(node: &NodeHosts, image: &ImageReference) -> Vec<Frontend> {
    let labels = labels(&node.hosts);
    let frontend = |index: usize| {
        let host = &node.hosts[index];
        Frontend {
            ns: host.ns.clone(),
            host: host.settings.clone(),
            mirror_position: Some(index as u32 + 1),
            notes: host.notes.clone(),
            ..Frontend::endpoint(labels[index].clone(), host.url.clone())
        }
    };
    let by_tag = image.digest.is_none();
    let mut frontends = Vec::new();
    for (index, host) in node.hosts.iter().enumerate().filter(|(_, h)| h.pulls) {
        let mut probed = frontend(index);
        if by_tag && !(host.resolves && host.used) {
            // The node never asks this host for a tag: resolve where the node resolves, fetch here.
            let mut hosts: Vec<OrderHost> = node
                .hosts
                .iter()
                .enumerate()
                .filter(|(i, h)| *i != index && h.pulls && h.resolves && h.used)
                .map(|(i, _)| OrderHost { frontend: frontend(i), resolves: true, fetches: false })
                .collect();
            hosts.push(OrderHost { frontend: frontend(index), resolves: false, fetches: true });
            probed.order = Some(NodeOrder::new(hosts, Walk::EachRequest));
        }
        frontends.push(probed);
    }
    let ordered: Vec<OrderHost> = node
        .hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.pulls && h.used)
        .map(|(i, h)| OrderHost { frontend: frontend(i), resolves: h.resolves, fetches: true })
        .collect();
    if let Some(first) = ordered.first() {
        let url = first.frontend.url.clone();
        frontends
            .push(Frontend { order: Some(NodeOrder::new(ordered, node.walk)), ..Frontend::endpoint(NODE_ORDER, url) });
    }
    frontends
}

/// Each host's label: its `host[:port]`, with its path where two entries share a
/// host, with its position where even that is not enough.
fn labels(hosts: &[NodeHost]) -> Vec<String> {
    let host_port = |h: &NodeHost| match (h.url.host_str(), h.url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => h.url.to_string(),
    };
    let mut labels: Vec<String> = hosts.iter().map(host_port).collect();
    let count = |labels: &[String]| {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for label in labels {
            *seen.entry(label.clone()).or_default() += 1;
        }
        seen
    };
    let seen = count(&labels);
    for (label, host) in labels.iter_mut().zip(hosts) {
        if seen.get(label.as_str()).copied().unwrap_or(0) > 1 && !host.path.is_empty() {
            label.push_str(&host.path);
        }
    }
    let seen = count(&labels);
    for (index, label) in labels.iter_mut().enumerate() {
        if seen.get(label.as_str()).copied().unwrap_or(0) > 1 || label == NODE_ORDER {
            label.push_str(&format!("#{}", index + 1));
        }
    }
    labels
}

/// Hosts asked in a node's order, and what one pull through them did.
#[derive(Debug, Clone)]
pub struct NodeOrder {
    pub hosts: Vec<OrderHost>,
    pub walk: Walk,
    log: Arc<OrderLog>,
}

/// One host of an order and what it is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderHost {
    pub frontend: Frontend,
    /// Asked to turn a tag into a digest.
    pub resolves: bool,
    /// Asked for content.
    pub fetches: bool,
}

impl PartialEq for NodeOrder {
    fn eq(&self, other: &Self) -> bool {
        self.hosts == other.hosts && self.walk == other.walk
    }
}

impl Eq for NodeOrder {}

impl NodeOrder {
    pub fn new(hosts: Vec<OrderHost>, walk: Walk) -> Self {
        NodeOrder { hosts, walk, log: Arc::default() }
    }

    /// The same order with an empty log.
    pub fn fresh(&self) -> NodeOrder {
        NodeOrder { log: Arc::default(), ..self.clone() }
    }

    /// What pulls through this order did so far.
    pub fn log(&self) -> LogState {
        self.log.snapshot()
    }

    /// A client that walks the hosts; its own transport (timings, tokens) is the first host's.
    pub fn client(&self, options: &TransportOptions) -> Result<RegistryClient, ProbeError> {
        let mut hosts = Vec::with_capacity(self.hosts.len());
        for host in &self.hosts {
            hosts.push(OrderedHost {
                label: host.frontend.label.clone(),
                position: host.frontend.mirror_position.unwrap_or(0),
                client: host.frontend.direct_client(options)?,
                resolves: host.resolves,
                fetches: host.fetches,
            });
        }
        let Some(first) = hosts.iter().find(|h| h.fetches).or(hosts.first()).map(|h| h.client.clone()) else {
            return Err(ProbeError::new(Reason::ConnectError, "the node's order has no host to ask"));
        };
        Ok(first.with_order(Arc::new(MirrorOrder::new(hosts, self.walk, self.log.clone()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(url: &str, path: &str, pulls: bool, resolves: bool) -> NodeHost {
        NodeHost { path: path.to_string(), pulls, resolves, ..NodeHost::registry(&Url::parse(url).unwrap()) }
    }

    fn labels_of(frontends: &[Frontend]) -> Vec<&str> {
        frontends.iter().map(|f| f.label.as_str()).collect()
    }

    #[test]
    fn every_pulling_host_then_node_order() {
        let node = NodeHosts {
            hosts: vec![
                host("https://public-mirror.example.com", "", true, false),
                host("https://docker-mirror.internal", "", true, true),
                host("https://push-only.example.com", "", false, false),
                host("https://registry-1.docker.io", "", true, true),
            ],
            walk: Walk::EachRequest,
        };
        let tag = ImageReference::parse("docker.io/library/alpine:3").unwrap();
        let frontends = as_frontends(&node, &tag);
        assert_eq!(
            labels_of(&frontends),
            ["public-mirror.example.com", "docker-mirror.internal", "registry-1.docker.io", NODE_ORDER]
        );
        let positions: Vec<_> = frontends.iter().map(|f| f.mirror_position).collect();
        assert_eq!(positions, [Some(1), Some(2), Some(4), None]);

        // The resolve-less mirror: the resolving hosts resolve, it serves.
        let order = frontends[0].order.as_ref().expect("ordered");
        let roles: Vec<_> = order.hosts.iter().map(|h| (h.frontend.label.as_str(), h.resolves, h.fetches)).collect();
        assert_eq!(
            roles,
            [
                ("docker-mirror.internal", true, false),
                ("registry-1.docker.io", true, false),
                ("public-mirror.example.com", false, true)
            ]
        );
        assert!(frontends[1].order.is_none() && frontends[2].order.is_none());

        // node-order: every pulling host, resolving where it may.
        let order = frontends[3].order.as_ref().expect("node-order");
        let roles: Vec<_> = order.hosts.iter().map(|h| (h.frontend.label.as_str(), h.resolves)).collect();
        assert_eq!(
            roles,
            [("public-mirror.example.com", false), ("docker-mirror.internal", true), ("registry-1.docker.io", true)]
        );

        // By digest, nothing needs resolving: the resolve-less mirror is pulled directly.
        let digest = tag.with_digest(crate::digest::Digest::of(b"x"));
        assert!(as_frontends(&node, &digest)[0].order.is_none());
    }

    #[test]
    fn labels_are_hosts_told_apart_by_path_then_position() {
        let node = NodeHosts {
            hosts: vec![
                host("https://harbor.example.org", "/v2/proxy-a", true, true),
                host("https://harbor.example.org", "/v2/proxy-b", true, true),
                host("http://127.0.0.1:5000", "", true, true),
                host("http://127.0.0.1:5000", "", true, true),
            ],
            walk: Walk::EachRequest,
        };
        let image = ImageReference::parse("127.0.0.1:5000/a:1").unwrap();
        assert_eq!(
            labels_of(&as_frontends(&node, &image)),
            [
                "harbor.example.org/v2/proxy-a",
                "harbor.example.org/v2/proxy-b",
                "127.0.0.1:5000#3",
                "127.0.0.1:5000#4",
                NODE_ORDER
            ]
        );
    }
}
