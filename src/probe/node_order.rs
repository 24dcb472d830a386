//! Pulls through frontends read from a node's mirror configuration: each pull
//! gets a fresh log of the order it walks, and its results say where in the
//! node's order the frontend stands (`mirror_position`), which host served
//! `node-order`'s manifest, which requests moved on to another host, and what
//! of the node's configuration pullprobe does not apply (`warnings`). Any
//! other frontend is pulled as it is.

use crate::frontend::Frontend;
use crate::probe::pull::{self, PullTarget, RoundContext};
use crate::redact::redact_text;
use crate::registry::transport::TransportOptions;
use crate::result::ProbeResult;

/// Pull `target` through `frontend` ([`pull::pull`]), with what the node's order did.
pub async fn pull(
    target: &PullTarget,
    frontend: &Frontend,
    transport: &TransportOptions,
    round: RoundContext,
) -> Vec<ProbeResult> {
    let frontend = frontend.for_one_pull();
    let mut results = pull::pull(target, &frontend, transport, round).await;
    annotate(&mut results, &frontend);
    results
}

/// Mirror position, fallbacks and notes onto every result of one pull through `frontend`.
fn annotate(results: &mut [ProbeResult], frontend: &Frontend) {
    let log = frontend.order.as_ref().map(|order| order.log());
    let position = frontend.mirror_position.or_else(|| log.as_ref()?.manifest_from.as_ref().map(|(_, p)| *p));
    for result in results.iter_mut() {
        result.mirror_position = position;
        result.warnings.extend(frontend.notes.iter().cloned());
        if let Some(log) = &log {
            result.warnings.extend(log.fallbacks.iter().map(|line| redact_text(&format!("moved on: {line}"))));
        }
    }
}
