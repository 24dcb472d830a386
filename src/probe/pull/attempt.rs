//! What every step of a pull runs inside: a fresh client through the frontend, what
//! is left of the pull's deadline (a timeout names the phase and the layers it hit),
//! one retry of a transient failure, and the [`ProbeResult`] the pull ends in.
//!
//! Retries follow DESIGN.md: `dns_error`, `connect_error`, `timeout` and 5xx get one
//! more try if the deadline leaves room; `rate_limited` only if its `Retry-After` fits;
//! integrity failures never.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Clock, PullRun, PullState, SharedState, lock};
use crate::platform::PlatformSelection;
use crate::reason::{Phase, ProbeError, Reason};
use crate::registry::client::RegistryClient;
use crate::registry::transport::response_deadline;
use crate::result::{Kind, ProbeResult};

impl PullRun<'_> {
    /// A client through the frontend whose every response must come within the pull's timeout.
    fn client(&self) -> Result<RegistryClient, ProbeError> {
        let mut options = self.options.clone();
        options.response_timeout = Some(response_deadline(self.target.timeout));
        self.frontend.client(&options)
    }

    /// Run `step` with a fresh client and state made from `base` until it succeeds or
    /// fails for good, within the deadline of a pull begun at `started` (a retry does not
    /// get a fresh one). Returns what the last try left behind and its outcome.
    pub(super) async fn with_retry<T, F, Fut>(
        &self,
        base: &PullState,
        started: Instant,
        retries: &mut u32,
        step: F,
    ) -> (PullState, Result<T, ProbeError>)
    where
        F: Fn(RegistryClient, SharedState) -> Fut,
        Fut: Future<Output = Result<T, ProbeError>>,
    {
        loop {
            let state: SharedState = Arc::new(Mutex::new(base.carried()));
            let attempt = async {
                let client = self.client()?;
                let outcome = step(client.clone(), state.clone()).await;
                record_connection(&client, &state);
                outcome
            };
            let outcome = self.within_deadline(attempt, &state, started).await;
            if let Err(err) = &outcome
                && *retries == 0
                && should_retry(err, started.elapsed(), self.target.timeout)
            {
                *retries += 1;
                wait_before_retry(err).await;
                continue;
            }
            return (std::mem::take(&mut *lock(&state)), outcome);
        }
    }

    /// Run a step in what is left of the deadline of a pull begun at `started`;
    /// a timeout names the phase it hit.
    async fn within_deadline<T>(
        &self,
        step: impl Future<Output = Result<T, ProbeError>>,
        state: &SharedState,
        started: Instant,
    ) -> Result<T, ProbeError> {
        let left = self.target.timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, step).await {
            Ok(result) => result,
            Err(_) => {
                let mut s = lock(state);
                let phase = s.phase.map(|p| p.as_str()).unwrap_or("connect");
                let stalled = s.stalled_layers();
                let reading =
                    if stalled.is_empty() { String::new() } else { format!("; still reading {}", stalled.join(", ")) };
                Err(ProbeError::new(
                    Reason::Timeout,
                    format!("no result within the timeout of {:?} (in phase {phase}{reading})", self.target.timeout),
                ))
            }
        }
    }

    /// The result of one (image, frontend, platform): what the pull left behind and how it ended.
    pub(super) fn result(
        &self,
        state: PullState,
        failure: Option<ProbeError>,
        retries: u32,
        clock: &Clock,
    ) -> ProbeResult {
        let platform = state.platform.clone().unwrap_or_else(|| match &self.target.platforms {
            PlatformSelection::List(list) if list.len() == 1 => list[0].to_string(),
            _ => "unknown".to_string(),
        });
        // The pull's own failure first; else what the referrers said (`signatures:`).
        let (failure, from_referrers) = match failure {
            Some(err) => (Some(err), false),
            None => (state.referrers_failure.clone(), true),
        };
        let (reason, phase, error, registry_error) = match failure {
            Some(err) => {
                let phase = if from_referrers { Phase::Referrers } else { failure_phase(&err, &state) };
                let mut message = crate::redact::redact_text(&err.message);
                if let Some(retry_after) = err.retry_after {
                    message.push_str(&format!(" (Retry-After {retry_after}s)"));
                }
                (Some(err.reason), Some(phase), Some(message), err.registry_error)
            }
            None => (None, None, None, None),
        };
        ProbeResult {
            probe: self.target.probe.clone(),
            kind: Kind::Pull,
            image: self.target.image.to_string(),
            registry: self.target.registry.clone(),
            frontend: self.frontend.label.clone(),
            location: self.target.location.clone(),
            platform,
            ok: reason.is_none(),
            reason,
            phase,
            error,
            registry_error,
            retries,
            manifest_digest: state.manifest_digest,
            started_at: clock.started_at,
            duration_seconds: clock.started.elapsed().as_secs_f64(),
            phases: state.phases,
            tls_not_after: state.tls_not_after,
            layers: state.layers,
            ratelimit_remaining: state.ratelimit_remaining,
            used_by: Vec::new(),
            mirror_position: None,
            referrers: state.referrers,
            warnings: state.warnings,
        }
    }
}

/// The phase a failure is reported in: failing to reach the frontend at all is the
/// connect phase, whichever request tried; a refused login is auth.
fn failure_phase(err: &ProbeError, state: &PullState) -> Phase {
    let unreachable = matches!(err.reason, Reason::ConnectError | Reason::DnsError | Reason::TlsError);
    if unreachable && state.manifest_digest.is_none() {
        Phase::Connect
    } else if err.reason == Reason::AuthFailed {
        Phase::Auth
    } else {
        state.phase.unwrap_or(Phase::Connect)
    }
}

/// The connection's phases (`dns`, `connect`, `tls`, `auth`) and the registry's rate limit,
/// into the state. The pull's first connection sets `dns`, `connect` and `tls`; later steps
/// (another platform, a retry) do not replace them. Plain HTTP has no `tls`.
fn record_connection(client: &RegistryClient, state: &SharedState) {
    let timings = client.timings();
    let mut s = lock(state);
    let steps = [("dns", timings.dns), ("connect", timings.connect), ("tls", timings.tls)];
    for (phase, took) in steps {
        if let Some(took) = took {
            s.phases.entry(phase.into()).or_insert(took.as_secs_f64());
        }
    }
    if let Some(auth) = client.transport().auth_time() {
        *s.phases.entry("auth".into()).or_default() += auth.as_secs_f64();
    }
    if let Some(remaining) = client.transport().ratelimit_remaining() {
        s.ratelimit_remaining = Some(remaining);
    }
}

/// Transient failures get one more try, if the deadline leaves room for it.
fn should_retry(err: &ProbeError, elapsed: Duration, timeout: Duration) -> bool {
    match err.reason {
        Reason::RateLimited => err.retry_after.is_some_and(|s| elapsed + Duration::from_secs(s) < timeout),
        _ => err.is_transient() && !err.reason.is_integrity() && elapsed < timeout,
    }
}

/// A rate-limited registry asked for a pause (`Retry-After`): honour it before the retry.
async fn wait_before_retry(err: &ProbeError) {
    if err.reason == Reason::RateLimited
        && let Some(seconds) = err.retry_after
    {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
    }
}
