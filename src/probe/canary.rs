//! The write-path canary: each run builds a small image unique to the run
//! ([`image`]), pushes it through the registry URL its users push to — not a
//! pinned address, so a load balancer routes every request as it would a real
//! client's ([`upload`]) — then reads the manifest and every blob back through
//! every configured frontend until each serves all of it or the consistency
//! deadline passes ([`read_back`]), and finally deletes this location's older
//! canaries ([`cleanup`]).
//!
//! One [`ProbeResult`] per frontend, `kind: "canary"`. A failed push fails
//! every frontend's result (`upload_failed`, phase `upload`: nothing could be
//! read back; credentials refused for the push scope are `auth_failed`, phase
//! `auth`); a frontend that does not serve the image in time is
//! `not_replicated` (phase `consistency`). `phases` carries `push` (seconds
//! the whole push took) and, per frontend, `visible` (seconds from the end of
//! the push until that frontend served everything) and `auth` (seconds spent
//! getting tokens for the push and that frontend's read-back, if any).

pub mod cleanup;
pub mod image;
pub mod read_back;
pub mod upload;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use url::Url;

use self::image::CanaryImage;
use self::read_back::ReadBack;
use self::upload::{PushPlan, Step};
use crate::config::CanaryConfig;
use crate::frontend::Frontend;
use crate::reason::{Phase, ProbeError, Reason};
use crate::reference::ImageReference;
use crate::registry::transport::{Transport, TransportOptions};
use crate::result::{Kind, ProbeResult, now_utc_millis};

/// The platform of the canary image (its config says linux/amd64; its one file runs nowhere).
pub const PLATFORM: &str = "linux/amd64";
/// How long the cleanup after a run may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// One canary probe, planned: where to push, where to read back.
#[derive(Debug, Clone)]
pub struct CanaryJob {
    pub probe: String,
    /// The `registry` label.
    pub registry: String,
    /// `host/repository` of the canary repository (no tag): the `image` of every result.
    pub repository: ImageReference,
    pub location: String,
    pub canary: CanaryConfig,
    /// The registry URL users push to: the push is never pinned.
    pub push_url: Url,
    /// Every frontend the image must become visible through.
    pub frontends: Vec<Frontend>,
    pub transport: TransportOptions,
    /// The whole push (every upload session and the manifest).
    pub timeout: Duration,
    pub max_manifest_bytes: u64,
}

/// The canary's entry point, one run of one canary probe: one result per frontend.
pub async fn run(job: &CanaryJob) -> Vec<ProbeResult> {
    let run = Run { job, started_at: now_utc_millis(), started: Instant::now() };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let created = OffsetDateTime::from_unix_timestamp(now.as_secs() as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let tag = cleanup::tag_for(&job.location, now.as_secs());
    let image = match CanaryImage::build(job.canary.size, &tag, created) {
        Ok(image) => image,
        Err(e) => {
            let err = ProbeError::new(Reason::UploadFailed, format!("cannot build the canary image: {e}"));
            return run.push_failed(err, None, None, Vec::new());
        }
    };
    let transport = match Transport::new(&job.transport) {
        Ok(transport) => transport,
        Err(err) => return run.push_failed(err, None, None, Vec::new()),
    };
    let repository = job.repository.repository.as_str();
    let mut warnings = Vec::new();
    let step = Step::default();
    let plan = PushPlan {
        transport: &transport,
        base: &job.push_url,
        repository,
        sessions: job.canary.sessions.max(1),
        chunk_size: job.canary.chunk_size,
        step: step.clone(),
    };
    let push_started = Instant::now();
    let pushed = match tokio::time::timeout(job.timeout, upload::push_image(&plan, &image, &mut warnings)).await {
        Ok(pushed) => pushed,
        Err(_) => Err(ProbeError::new(
            Reason::Timeout,
            format!("the push did not finish within the timeout of {:?} (in {})", job.timeout, step.get()),
        )),
    };
    let push_seconds = push_started.elapsed();
    let push_auth = transport.auth_time();
    if let Err(err) = pushed {
        return run.push_failed(err, Some(push_seconds), push_auth, warnings);
    }

    let pushed_at = Instant::now();
    let deadline = pushed_at + job.canary.consistency_deadline;
    let reads = job.frontends.iter().map(|frontend| {
        read_back::read_back(frontend, &job.transport, repository, &image, job.max_manifest_bytes, pushed_at, deadline)
    });
    let reads: Vec<(ReadBack, Instant)> =
        futures_util::future::join_all(reads.map(|read| async { (read.await, Instant::now()) })).await;

    let cleaned = tokio::time::timeout(
        CLEANUP_TIMEOUT,
        cleanup::remove_old_canaries(&transport, &job.push_url, repository, &job.location),
    )
    .await;
    match cleaned {
        Ok(notes) => warnings.extend(notes),
        Err(_) => warnings.push(format!("canary cleanup: did not finish within {CLEANUP_TIMEOUT:?}")),
    }
    job.frontends
        .iter()
        .zip(reads)
        .map(|(frontend, (read, ended))| {
            let mut result = run.read_result(frontend, &image, read, ended, push_seconds, &warnings);
            add_auth_time(&mut result, push_auth);
            result
        })
        .collect()
}

struct Run<'a> {
    job: &'a CanaryJob,
    started_at: time::OffsetDateTime,
    started: Instant,
}

impl Run<'_> {
    /// The result shape every frontend shares.
    fn result(&self, frontend: &Frontend, warnings: &[String]) -> ProbeResult {
        ProbeResult {
            probe: self.job.probe.clone(),
            kind: Kind::Canary,
            image: self.job.repository.name(),
            registry: self.job.registry.clone(),
            frontend: frontend.label.clone(),
            location: self.job.location.clone(),
            platform: PLATFORM.to_string(),
            ok: true,
            reason: None,
            phase: None,
            error: None,
            registry_error: None,
            retries: 0,
            manifest_digest: None,
            started_at: self.started_at,
            duration_seconds: self.started.elapsed().as_secs_f64(),
            phases: Default::default(),
            tls_not_after: None,
            layers: Vec::new(),
            ratelimit_remaining: None,
            used_by: Vec::new(),
            mirror_position: None,
            referrers: None,
            warnings: warnings.iter().map(|w| crate::redact::redact_text(w)).collect(),
        }
    }

    /// Nothing could be read back: every frontend's result carries the push's failure.
    fn push_failed(
        &self,
        err: ProbeError,
        push: Option<Duration>,
        auth: Option<Duration>,
        warnings: Vec<String>,
    ) -> Vec<ProbeResult> {
        self.job
            .frontends
            .iter()
            .map(|frontend| {
                let mut result = self.result(frontend, &warnings);
                let phase = if err.reason == Reason::AuthFailed { Phase::Auth } else { Phase::Upload };
                fail(&mut result, &err, phase);
                if let Some(push) = push {
                    result.phases.insert("push".into(), push.as_secs_f64());
                }
                add_auth_time(&mut result, auth);
                result
            })
            .collect()
    }

    fn read_result(
        &self,
        frontend: &Frontend,
        image: &CanaryImage,
        read: ReadBack,
        ended: Instant,
        push: Duration,
        warnings: &[String],
    ) -> ProbeResult {
        let mut result = self.result(frontend, warnings);
        result.duration_seconds = ended.duration_since(self.started).as_secs_f64();
        result.manifest_digest = Some(image.manifest.digest.to_string());
        result.phases.insert("push".into(), push.as_secs_f64());
        for (name, seconds) in read.phases {
            result.phases.insert(name.into(), seconds);
        }
        if let Some(after) = read.visible_after {
            result.phases.insert("visible".into(), after.as_secs_f64());
        }
        result.layers = read.blobs;
        if let Some(err) = &read.failure {
            let phase = match err.reason {
                Reason::NotReplicated => Phase::Consistency,
                Reason::ConnectError | Reason::DnsError | Reason::TlsError if !read.manifest_served => Phase::Connect,
                _ if !read.manifest_served => Phase::Manifest,
                _ => Phase::Blob,
            };
            fail(&mut result, err, phase);
        }
        result
    }
}

/// `phases.auth`: seconds spent getting tokens, for the push and this frontend's read-back together.
fn add_auth_time(result: &mut ProbeResult, auth: Option<Duration>) {
    if let Some(auth) = auth {
        *result.phases.entry("auth".into()).or_default() += auth.as_secs_f64();
    }
}

fn fail(result: &mut ProbeResult, err: &ProbeError, phase: Phase) {
    result.ok = false;
    result.reason = Some(err.reason);
    result.phase = Some(phase);
    let mut message = crate::redact::redact_text(&err.message);
    if let Some(retry_after) = err.retry_after {
        message.push_str(&format!(" (Retry-After {retry_after}s)"));
    }
    result.error = Some(message);
    result.registry_error = err.registry_error.clone();
}
