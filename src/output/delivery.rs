//! Delivery of one `now` run (CronJob mode) to the outputs of `alerting:`:
//! read the history back from the Pushgateway, then push the gauges and send
//! the alerts, concurrently. The caller decides the exit code from the
//! [`DeliveryReport`].

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use crate::config::{AlertingConfig, Severity};
use crate::output::alertmanager::{self, AlertSettings, Alertmanager};
use crate::output::history::{self, History, SeriesKey, unix_seconds};
use crate::output::http::{DeliveryError, RetryPolicy};
use crate::output::metrics;
use crate::output::pushgateway::{Group, Pushgateway};
use crate::result::ProbeResult;

/// What the run knows about its probes besides the results.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    /// Severity per probe name (from probes.yaml; ad-hoc images are `critical`).
    pub severities: BTreeMap<String, Severity>,
    /// Probes whose vanished series may be resolved (see [`AlertSettings::owned_probes`]).
    pub owned_probes: BTreeSet<String>,
    /// (probe, image) series a discovery rule still stands for but did not probe
    /// this run (see [`AlertSettings::carried`]).
    pub carried: BTreeSet<(String, String)>,
}

/// How delivery went.
#[derive(Debug, Default)]
pub struct DeliveryReport {
    /// Every output (endpoint) that did not take what it was sent.
    pub failures: Vec<DeliveryError>,
    /// Failed series that Alertmanager has: sent as firing and accepted by at
    /// least one replica, or held back below `alerting.after` while a replica answered.
    pub paged: BTreeSet<SeriesKey>,
    pub alertmanager_configured: bool,
}

impl DeliveryReport {
    /// Whether every failed result reached Alertmanager (what `--no-fail` needs).
    pub fn every_failure_paged(&self, results: &[ProbeResult]) -> bool {
        self.alertmanager_configured && results.iter().filter(|r| !r.ok).all(|r| self.paged.contains(&SeriesKey::of(r)))
    }
}

/// Deliver `results` to the configured Alertmanager replicas and Pushgateway.
pub async fn deliver_now(
    results: &[ProbeResult],
    alerting: &AlertingConfig,
    context: &RunContext,
    policy: RetryPolicy,
) -> DeliveryReport {
    let mut report =
        DeliveryReport { alertmanager_configured: alerting.alertmanager.is_some(), ..DeliveryReport::default() };
    if results.is_empty() || (alerting.alertmanager.is_none() && alerting.pushgateway.is_none()) {
        return report;
    }

    // The history: only a Pushgateway keeps it between CronJob runs.
    let mut pushgateway = None;
    let mut history: Option<History> = None;
    if let Some(config) = &alerting.pushgateway {
        match Pushgateway::new(config, policy) {
            Ok(pg) => {
                let groups = groups(&pg, results);
                match pg.read_back(&groups).await {
                    Ok(previous) => {
                        history = Some(history::advance(&previous, results));
                        pushgateway = Some((pg, groups));
                    }
                    Err(e) => {
                        // Pushing without the history would reset the last success and the
                        // failure count of every failing series: push nothing this run.
                        tracing::error!(pushgateway = %e.endpoint, error = %e.message, "cannot read back the pushed groups; not pushing");
                        report.failures.push(e);
                    }
                }
            }
            Err(e) => {
                tracing::error!(pushgateway = %e.endpoint, error = %e.message, "cannot set up the Pushgateway client");
                report.failures.push(e);
            }
        }
    }

    let now = unix_seconds(OffsetDateTime::now_utc());
    let push = async {
        let Some((pg, groups)) = &pushgateway else { return Vec::new() };
        let Some(history) = &history else { return Vec::new() };
        let pushes = groups.iter().map(|group| async move {
            let mine: Vec<ProbeResult> =
                results.iter().filter(|r| r.probe == group.probe && r.location == group.location).cloned().collect();
            let mut families = metrics::gauge_families(&mine, history);
            families.push(metrics::probe_info(&mine, &context.severities));
            pg.push(group, &families).await
        });
        futures_util::future::join_all(pushes).await
    };
    let alert = async {
        let Some(config) = &alerting.alertmanager else { return Ok(Vec::new()) };
        let replicas = Alertmanager::replicas(config, policy)?;
        let mut settings = AlertSettings::from_config(config, alerting.after);
        settings.severities = context.severities.clone();
        settings.owned_probes = context.owned_probes.clone();
        settings.carried = context.carried.clone();
        let ends_at = now + config.resolve_timeout.as_secs_f64();
        Ok::<_, DeliveryError>(
            alertmanager::deliver(&replicas, results, history.as_ref(), &settings, ends_at, now).await,
        )
    };
    let (pushed, alerted) = tokio::join!(push, alert);

    for outcome in pushed {
        if let Err(e) = outcome {
            tracing::error!(pushgateway = %e.endpoint, attempts = e.attempts, error = %e.message, "push failed");
            report.failures.push(e);
        }
    }
    match alerted {
        Ok(outcomes) => {
            for outcome in outcomes {
                if outcome.delivered.is_ok() {
                    report.paged.extend(outcome.batch.fired.iter().cloned());
                }
                if outcome.reachable {
                    report.paged.extend(outcome.batch.held.iter().cloned());
                }
                if let Err(e) = outcome.delivered {
                    report.failures.push(e);
                }
            }
        }
        Err(e) => {
            tracing::error!(alertmanager = %e.endpoint, error = %e.message, "cannot set up the Alertmanager client");
            report.failures.push(e);
        }
    }
    report
}

/// The Pushgateway groups of the results: one per (probe, location).
fn groups(pg: &Pushgateway, results: &[ProbeResult]) -> Vec<Group> {
    let set: BTreeSet<Group> = results.iter().map(|r| pg.group(&r.probe, &r.location)).collect();
    set.into_iter().collect()
}
