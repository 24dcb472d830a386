//! The manifest phase: the manifest the reference names, its bytes checked against the
//! reference digest (else `Docker-Content-Digest`); for an index, the platforms the probe
//! selects — each pulled on its own, a requested one that is absent `platform_missing` —
//! and each platform's manifest, checked against the index's descriptor.

use super::{Clock, PullRun, PullState, SharedState, lock};
use crate::digest::Digest;
use crate::manifest::{self, ImageManifest, IndexEntry, Manifest};
use crate::platform::{Platform, PlatformSelection};
use crate::reason::{Phase, ProbeError, Reason};
use crate::registry::client::{ManifestResponse, RegistryClient};
use crate::result::ProbeResult;

/// The manifest named by the reference, verified.
pub(super) struct TopManifest {
    pub digest: Digest,
    pub manifest: Manifest,
}

/// Where one platform's image manifest comes from.
pub(super) enum PlatformSource {
    /// The reference named an image: already fetched.
    Single(ImageManifest),
    /// An entry of the index the reference named: fetched by its digest.
    Index(IndexEntry),
}

impl PullRun<'_> {
    /// The manifest the reference names, its digest checked.
    pub(super) async fn fetch_top(
        &self,
        client: &RegistryClient,
        state: &SharedState,
    ) -> Result<TopManifest, ProbeError> {
        lock(state).phase = Some(Phase::Manifest);
        let image = &self.target.image;
        let response =
            client.manifest(&image.repository, &image.reference_str(), self.target.limits.max_manifest_bytes).await?;
        let computed = Digest::of(&response.body);
        {
            let mut s = lock(state);
            s.add_phase("manifest", response.took);
            s.manifest_digest = Some(computed.to_string());
            s.tls_not_after = response.tls_not_after.clone();
        }
        self.check_top_digest(&response, &computed, state)?;
        let manifest = manifest::parse_manifest(&response.body, response.content_type.as_deref())?;
        Ok(TopManifest { digest: computed, manifest })
    }

    /// The bytes served against the reference's digest, else against `Docker-Content-Digest`
    /// (a missing or unusable header is a warning: the computed digest is recorded).
    fn check_top_digest(
        &self,
        response: &ManifestResponse,
        computed: &Digest,
        state: &SharedState,
    ) -> Result<(), ProbeError> {
        let image = &self.target.image;
        if let Some(wanted) = &image.digest {
            if wanted == computed {
                return Ok(());
            }
            return Err(ProbeError::new(
                Reason::ManifestDigestMismatch,
                format!("manifest for {image}: reference digest is {wanted}, the bytes served hash to {computed}"),
            ));
        }
        let warning = match response.docker_content_digest.as_deref().map(str::parse::<Digest>) {
            Some(Ok(header)) if header != *computed => {
                return Err(ProbeError::new(
                    Reason::ManifestDigestMismatch,
                    format!(
                        "manifest for {image}: Docker-Content-Digest says {header}, the bytes served hash to {computed}"
                    ),
                ));
            }
            Some(Ok(_)) => return Ok(()),
            Some(Err(e)) => format!("unusable Docker-Content-Digest header: {e}"),
            None => "no Docker-Content-Digest header; the computed manifest digest is recorded".to_string(),
        };
        lock(state).warnings.push(warning);
        Ok(())
    }

    /// Every selected platform of an index, one after another: one result each.
    pub(super) async fn pull_index(
        &self,
        entries: Vec<IndexEntry>,
        index_digest: &Digest,
        base: PullState,
        retries: u32,
    ) -> Vec<ProbeResult> {
        let runnable: Vec<&IndexEntry> = entries.iter().filter(|e| !e.is_attestation).collect();
        let mut results = Vec::new();
        for (platform, entry) in self.wanted_platforms(&runnable) {
            let mut state = base.carried();
            state.platform = platform.as_ref().map(|p| p.to_string());
            let result = match entry {
                Some(entry) => {
                    let source = PlatformSource::Index(entry.clone());
                    self.pull_platform(source, index_digest, state, retries, Clock::start()).await
                }
                None => self.platform_missing(state, platform, &runnable, index_digest, retries),
            };
            results.push(result);
        }
        results
    }

    /// The platforms to pull, each with its index entry (`None`: the index lacks it).
    /// Attestation manifests were already left out of `runnable`.
    fn wanted_platforms<'e>(&self, runnable: &[&'e IndexEntry]) -> Vec<(Option<Platform>, Option<&'e IndexEntry>)> {
        match &self.target.platforms {
            PlatformSelection::All => runnable.iter().map(|entry| (entry.platform.clone(), Some(*entry))).collect(),
            PlatformSelection::List(list) => list
                .iter()
                .map(|platform| {
                    let found =
                        runnable.iter().find(|e| e.platform.as_ref().is_some_and(|p| platform.matches(p))).copied();
                    (Some(platform.clone()), found)
                })
                .collect(),
        }
    }

    /// The result for a requested platform the index does not have.
    fn platform_missing(
        &self,
        mut state: PullState,
        platform: Option<Platform>,
        runnable: &[&IndexEntry],
        index_digest: &Digest,
        retries: u32,
    ) -> ProbeResult {
        let available: Vec<String> =
            runnable.iter().filter_map(|e| e.platform.as_ref().map(|p| p.to_string())).collect();
        state.phase = Some(Phase::Manifest);
        let err = ProbeError::new(
            Reason::PlatformMissing,
            format!(
                "index {} has no {} image (it has: {})",
                index_digest.short(),
                platform.map(|p| p.to_string()).unwrap_or_default(),
                if available.is_empty() { "none".to_string() } else { available.join(", ") }
            ),
        );
        self.result(state, Some(err), retries, &Clock::start())
    }

    /// The image manifest of one platform: as fetched, or fetched by the index entry's
    /// digest and checked against its descriptor.
    pub(super) async fn platform_manifest(
        &self,
        client: &RegistryClient,
        source: &PlatformSource,
        top_digest: &Digest,
        state: &SharedState,
    ) -> Result<ImageManifest, ProbeError> {
        let entry = match source {
            PlatformSource::Single(image) => return Ok(image.clone()),
            PlatformSource::Index(entry) => entry,
        };
        lock(state).phase = Some(Phase::Manifest);
        let digest = entry.manifest.digest;
        let limit = self.target.limits.max_manifest_bytes;
        let response = client.manifest(&self.target.image.repository, &digest.to_string(), limit).await?;
        lock(state).add_phase("manifest", response.took);
        let computed = Digest::of(&response.body);
        if computed != digest || response.body.len() as u64 != entry.manifest.size {
            return Err(ProbeError::new(
                Reason::ManifestDigestMismatch,
                format!(
                    "platform manifest {digest} (index {}): served {} bytes hashing to {computed}, index says {} bytes",
                    top_digest.short(),
                    response.body.len(),
                    entry.manifest.size
                ),
            ));
        }
        match manifest::parse_manifest(&response.body, response.content_type.as_deref())? {
            Manifest::Image(image) => Ok(image),
            Manifest::Index(_) => Err(ProbeError::new(
                Reason::ManifestInvalid,
                format!("index entry {digest} is itself an index; nested indexes are not pulled by runtimes"),
            )),
        }
    }
}
