//! The referrers phase (`signatures:`): the referrers of the manifest the reference
//! names, once per frontend before its platforms are pulled (one retry of a failed
//! listing, within the pull's deadline), their verdict carried to every platform's
//! result; with `platforms: true`, each platform manifest's own referrers too, after
//! its layers. A pull that fails for another reason keeps that reason: the image
//! cannot be run from this frontend whatever its signatures say.

use std::time::Instant;

use super::manifest::PlatformSource;
use super::{Clock, PullRun, PullState, SharedState, lock};
use crate::config::SignaturePolicy;
use crate::digest::Digest;
use crate::probe::referrers::{self, Request};
use crate::reason::{Phase, ProbeError};
use crate::registry::client::RegistryClient;

impl PullRun<'_> {
    /// The referrers of the top manifest, into the state every platform starts from.
    pub(super) async fn top_referrers(
        &self,
        base: PullState,
        digest: &Digest,
        clock: &Clock,
        retries: &mut u32,
    ) -> PullState {
        let Some(policy) = self.target.signatures.as_deref() else { return base };
        let step = |client: RegistryClient, state: SharedState| async move {
            self.referrers_of(&client, digest, policy, &state).await
        };
        let (mut state, outcome) = self.with_retry(&base, clock.started, retries, step).await;
        if let Err(err) = outcome {
            state.referrers_failure = Some(err);
        }
        state
    }

    /// With `platforms: true`, the referrers of one platform manifest of an index.
    pub(super) async fn platform_referrers(
        &self,
        client: &RegistryClient,
        source: &PlatformSource,
        state: &SharedState,
    ) -> Result<(), ProbeError> {
        let (Some(policy), PlatformSource::Index(entry)) = (self.target.signatures.as_deref(), source) else {
            return Ok(());
        };
        if !policy.platforms {
            return Ok(());
        }
        self.referrers_of(client, &entry.manifest.digest, policy, state).await
    }

    /// Find and verify the referrers of `digest`: the checks into the state, the verdict out.
    async fn referrers_of(
        &self,
        client: &RegistryClient,
        digest: &Digest,
        policy: &SignaturePolicy,
        state: &SharedState,
    ) -> Result<(), ProbeError> {
        lock(state).phase = Some(Phase::Referrers);
        let started = Instant::now();
        let request = Request {
            repository: &self.target.image.repository,
            image: digest,
            policy,
            max_manifest_bytes: self.target.limits.max_manifest_bytes,
        };
        let outcome = referrers::check(client, request).await;
        let mut s = lock(state);
        s.add_phase("referrers", started.elapsed());
        let outcome = outcome?;
        s.referrers.get_or_insert_with(Vec::new).extend(outcome.checks);
        s.warnings.extend(outcome.warnings);
        outcome.failure.map_or(Ok(()), Err)
    }
}
