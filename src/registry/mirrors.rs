//! A node's order of mirror hosts ([`MirrorOrder`]), as container runtimes
//! walk it: which host a request goes to first and where it goes when that
//! host does not answer. (How one host is asked is its client's
//! [`crate::registry::route::MirrorRoute`].)
//!
//! Two ways of walking an order, the two runtimes':
//! - [`Walk::EachRequest`] (containerd): a tag is resolved by the first host
//!   that may resolve and answers; then every request — the manifest by
//!   digest, each blob — goes to the hosts that may pull, in order, and moves
//!   on to the next whenever one fails before sending content (no answer, a
//!   404, a 5xx, a refusal).
//! - [`Walk::FirstSource`] (CRI-O, podman): the first host that serves the
//!   manifest serves the whole image; a blob it lacks fails the pull.
//!
//! Content is never a reason to move on: bytes that fail their digest come
//! back to the caller as they are, because a node would get them too.
//! Nothing here judges a pull; it only decides where requests go and keeps
//! a log of it ([`OrderLog`]) for the result.

use std::sync::{Arc, Mutex};

use crate::digest::Digest;
use crate::reason::{ProbeError, Reason};
use crate::registry::client::{Answer, BlobResponse, ManifestResponse, RegistryClient, RequestOrder};

/// How a node walks its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// containerd: resolve through the resolving hosts, then each request through the pulling hosts.
    EachRequest,
    /// CRI-O and podman: the first host that serves the manifest serves everything.
    FirstSource,
}

/// One host of an order.
#[derive(Clone)]
pub struct OrderedHost {
    /// The host's frontend label.
    pub label: String,
    /// Its 1-based place in the node's configuration (the upstream last).
    pub position: u32,
    pub client: RegistryClient,
    /// Asked to turn a tag into a digest (containerd: a host with `pull` and `resolve`).
    pub resolves: bool,
    /// Asked for content (containerd: a host with `pull`).
    pub fetches: bool,
}

/// What walking an order did during one pull: shared by every client of that pull.
#[derive(Debug, Default)]
pub struct OrderLog {
    state: Mutex<LogState>,
}

/// A copy of an [`OrderLog`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogState {
    /// [`Walk::FirstSource`]: the index of the host that served the first manifest.
    pub source: Option<usize>,
    /// Label and position of the host that served the first manifest.
    pub manifest_from: Option<(String, u32)>,
    /// One line per request that moved on to another host.
    pub fallbacks: Vec<String>,
}

impl OrderLog {
    pub fn snapshot(&self) -> LogState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A node's hosts in order, and the log of one pull through them.
pub struct MirrorOrder {
    hosts: Vec<OrderedHost>,
    walk: Walk,
    log: Arc<OrderLog>,
}

impl MirrorOrder {
    pub fn new(hosts: Vec<OrderedHost>, walk: Walk, log: Arc<OrderLog>) -> Self {
        MirrorOrder { hosts, walk, log }
    }

    async fn walk_manifest(
        &self,
        repository: &str,
        reference: &str,
        max_bytes: u64,
    ) -> Result<ManifestResponse, ProbeError> {
        let by_digest = reference.parse::<Digest>().ok();
        if let Some(source) = self.pinned_source() {
            return Box::pin(source.client.manifest(repository, reference, max_bytes)).await;
        }
        let what = format!("manifest {repository}:{reference}");
        let (response, host) = match (self.walk, by_digest) {
            (Walk::FirstSource, _) => {
                let candidates = self.indexes(|h| h.fetches && (h.resolves || by_digest.is_some()));
                let (index, response) = self
                    .first_answer(&candidates, &what, |host| {
                        Box::pin(host.client.manifest(repository, reference, max_bytes))
                    })
                    .await?;
                self.log.lock().source = Some(index);
                (response, index)
            }
            (Walk::EachRequest, Some(_)) => {
                let candidates = self.indexes(|h| h.fetches);
                let (index, response) = self
                    .first_answer(&candidates, &what, |host| {
                        Box::pin(host.client.manifest(repository, reference, max_bytes))
                    })
                    .await?;
                (response, index)
            }
            (Walk::EachRequest, None) => self.resolve_then_fetch(repository, reference, max_bytes).await?,
        };
        let mut log = self.log.lock();
        if log.manifest_from.is_none() {
            log.manifest_from = self.hosts.get(host).map(|h| (h.label.clone(), h.position));
        }
        Ok(response)
    }

    /// containerd's two steps for a tag: a resolving host names the digest, then
    /// the pulling hosts are asked for the manifest by that digest.
    async fn resolve_then_fetch(
        &self,
        repository: &str,
        tag: &str,
        max_bytes: u64,
    ) -> Result<(ManifestResponse, usize), ProbeError> {
        let resolvers = self.indexes(|h| h.resolves);
        if resolvers.is_empty() {
            return Err(ProbeError::new(
                Reason::ManifestUnknown,
                format!("manifest {repository}:{tag}: no host of the node's order may resolve a tag"),
            ));
        }
        let what = format!("manifest {repository}:{tag} (resolve)");
        let (resolver, resolved) = self
            .first_answer(&resolvers, &what, |host| Box::pin(host.client.manifest(repository, tag, max_bytes)))
            .await?;
        let digest = match resolved.docker_content_digest.as_deref().map(str::parse::<Digest>) {
            Some(Ok(digest)) => digest,
            _ => Digest::of(&resolved.body),
        };
        let fetchers = self.indexes(|h| h.fetches);
        let what = format!("manifest {repository}@{}", digest.short());
        let reference = digest.to_string();
        let (index, mut response) = self
            .first_answer(&fetchers, &what, |host| Box::pin(host.client.manifest(repository, &reference, max_bytes)))
            .await?;
        let served = Digest::of(&response.body);
        if served != digest {
            let label = |i: usize| self.hosts.get(i).map(|h| h.label.as_str()).unwrap_or("?");
            return Err(ProbeError::new(
                Reason::ManifestDigestMismatch,
                format!(
                    "manifest {repository}:{tag}: {} resolved it to {digest}, {} served bytes hashing to {served}",
                    label(resolver),
                    label(index)
                ),
            ));
        }
        response.docker_content_digest.get_or_insert_with(|| digest.to_string());
        Ok((response, index))
    }

    async fn walk_blob(&self, repository: &str, digest: &Digest) -> Result<BlobResponse, ProbeError> {
        if let Some(source) = self.pinned_source() {
            return Box::pin(source.client.blob(repository, digest)).await;
        }
        let candidates = self.indexes(|h| h.fetches);
        let what = format!("blob {}", digest.short());
        let (_, response) =
            self.first_answer(&candidates, &what, |host| Box::pin(host.client.blob(repository, digest))).await?;
        Ok(response)
    }

    fn pinned_source(&self) -> Option<&OrderedHost> {
        let index = self.log.lock().source?;
        self.hosts.get(index)
    }

    fn indexes(&self, wanted: impl Fn(&OrderedHost) -> bool) -> Vec<usize> {
        self.hosts.iter().enumerate().filter(|(_, h)| wanted(h)).map(|(i, _)| i).collect()
    }

    /// Ask `candidates` in order until one answers; every host passed over is
    /// logged. When none answers: the first host's error (containerd returns the
    /// first), its message listing what each host said.
    async fn first_answer<'a, T>(
        &'a self,
        candidates: &[usize],
        what: &str,
        ask: impl Fn(&'a OrderedHost) -> Answer<'a, T>,
    ) -> Result<(usize, T), ProbeError> {
        let mut failures: Vec<(usize, ProbeError)> = Vec::new();
        for &index in candidates {
            let Some(host) = self.hosts.get(index) else { continue };
            match ask(host).await {
                Ok(answer) => {
                    if !failures.is_empty() {
                        let passed: Vec<String> = failures.iter().map(|(i, e)| self.describe(*i, e)).collect();
                        self.log.lock().fallbacks.push(format!(
                            "{what}: {}; served by {} (position {})",
                            passed.join("; "),
                            host.label,
                            host.position
                        ));
                    }
                    return Ok((index, answer));
                }
                Err(err) if moves_on(&err) => failures.push((index, err)),
                Err(err) => return Err(err),
            }
        }
        let described: Vec<String> = failures.iter().map(|(i, e)| self.describe(*i, e)).collect();
        match failures.into_iter().next() {
            Some((_, mut first)) => {
                first.message = format!("{what}: no host of the node's order served it: {}", described.join("; "));
                Err(first)
            }
            None => Err(ProbeError::new(
                Reason::ConnectError,
                format!("{what}: the node's order has no host that may serve it"),
            )),
        }
    }

    fn describe(&self, index: usize, err: &ProbeError) -> String {
        match self.hosts.get(index) {
            Some(host) => format!("{} (position {}) {}: {}", host.label, host.position, err.reason, err.message),
            None => err.to_string(),
        }
    }
}

impl RequestOrder for MirrorOrder {
    fn manifest<'a>(&'a self, repository: &'a str, reference: &'a str, max_bytes: u64) -> Answer<'a, ManifestResponse> {
        Box::pin(self.walk_manifest(repository, reference, max_bytes))
    }

    fn blob<'a>(&'a self, repository: &'a str, digest: &'a Digest) -> Answer<'a, BlobResponse> {
        Box::pin(self.walk_blob(repository, digest))
    }
}

/// A runtime moves on to the next host when one fails before sending content
/// (no answer, a 404, a 5xx, a refusal); bytes that came and are wrong, short
/// or too many are the node's result.
fn moves_on(err: &ProbeError) -> bool {
    !matches!(
        err.reason,
        Reason::TooLarge
            | Reason::BlobTruncated
            | Reason::BlobSizeMismatch
            | Reason::BlobDigestMismatch
            | Reason::ManifestDigestMismatch
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_failures_never_move_on() {
        assert!(moves_on(&ProbeError::new(Reason::ConnectError, "refused")));
        assert!(moves_on(&ProbeError::new(Reason::BlobUnknown, "404")));
        assert!(moves_on(&ProbeError::new(Reason::ManifestUnknown, "404")));
        assert!(moves_on(&ProbeError::new(Reason::AuthFailed, "401")));
        assert!(moves_on(&ProbeError::new(Reason::HttpStatus, "503").with_status(503)));
        assert!(!moves_on(&ProbeError::new(Reason::BlobDigestMismatch, "bad bytes")));
        assert!(!moves_on(&ProbeError::new(Reason::TooLarge, "huge")));
    }
}
